//! `flumen import-flume`: turns an Apache Flume agent's `.properties` configuration into a flumen
//! topology (RON).
//!
//! The input is read as Java properties ([`properties`]), the agent's entries are picked by their
//! first key segment (`a1.sources = r1` belongs to agent `a1`), and every source, channel, sink,
//! sink group, channel selector and interceptor is mapped onto flumen's kind of the same role, with
//! Flume's property names and defaults (Flume 1.10's user guide) turned into flumen's options.
//! Where Flume's default differs from flumen's, Flume's value is written out, so that the imported
//! agent behaves as the Flume one did. Every property that cannot be carried over becomes a
//! [`Note`] (`FILE:LINE: key: why`); a component kind without counterpart is replaced by a stand-in
//! that keeps the topology valid and counted in [`Import::missing_kinds`] (the command then exits
//! 2).

mod convert;
pub mod properties;
mod ron_text;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// `flumen import-flume` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The Flume configuration (Java properties, e.g. `conf/flume.conf`).
    pub properties: PathBuf,
    /// The agent to convert (Flume's `--name`); required when the file holds several.
    #[arg(long)]
    pub agent: Option<String>,
    /// Where to write the topology (RON); default: standard output.
    #[arg(short = 'o', long = "output", value_name = "OUT.ron")]
    pub output: Option<PathBuf>,
}

/// A property that was not carried over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The line (1-based) of the property.
    pub line: usize,
    /// The property's full key, e.g. `a1.sources.r1.threads`.
    pub key: String,
    /// Why: `no counterpart`, `flumen does it differently: ...` or `value not understood: ...`.
    pub why: String,
}

/// A problem that stops the import (the Flume configuration is malformed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line (1-based) the problem is about; 0 when no line is (a list that is missing).
    pub line: usize,
    /// The property's key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// A successful import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The agent converted.
    pub agent: String,
    /// The topology, RON text with comments.
    pub ron: String,
    /// The properties not carried over, in line order.
    pub notes: Vec<Note>,
    /// How many of the agent's properties were carried over.
    pub carried: usize,
    /// How many component kinds (sources, channels, sinks, interceptors, selectors, processors)
    /// have no counterpart and were replaced by stand-ins.
    pub missing_kinds: usize,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file as given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A malformed `\uXXXX` escape.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file as given.
        file: String,
        /// The line of the entry.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No key of the form `AGENT.sources`, `AGENT.channels`, `AGENT.sinks` was found.
    #[error("{file}: no Flume agent found (no key like a1.sources, a1.channels or a1.sinks)")]
    NoAgent {
        /// The file as given.
        file: String,
    },
    /// Several agents and no `--agent`.
    #[error("{file}: the file holds several agents ({}); choose one with --agent", agents.join(", "))]
    AgentRequired {
        /// The file as given.
        file: String,
        /// The agents it holds, in order of appearance.
        agents: Vec<String>,
    },
    /// `--agent` names an agent the file does not hold.
    #[error("{file}: no agent \"{agent}\" (the file holds: {})", agents.join(", "))]
    UnknownAgent {
        /// The file as given.
        file: String,
        /// The agent asked for.
        agent: String,
        /// The agents it holds.
        agents: Vec<String>,
    },
    /// The configuration is malformed: each problem as `FILE:LINE: key: message`.
    #[error("{}", problems.iter().map(|p| format!("{file}:{}: {}: {}", p.line, p.key, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file as given.
        file: String,
        /// Every problem, in the order found.
        problems: Vec<Problem>,
    },
}

/// What became of a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unused,
    Carried,
    Listed,
}

#[derive(Debug)]
struct Prop {
    value: String,
    line: usize,
    state: Cell<State>,
}

/// The properties of one agent, with what became of each.
#[derive(Debug, Default)]
struct Props {
    map: BTreeMap<String, Prop>,
    notes: RefCell<Vec<Note>>,
    problems: RefCell<Vec<Problem>>,
    missing: Cell<usize>,
}

impl Props {
    /// The value and line of `key`, marking it carried over.
    fn get(&self, key: &str) -> Option<(&str, usize)> {
        let p = self.map.get(key)?;
        if p.state.get() == State::Unused {
            p.state.set(State::Carried);
        }
        Some((p.value.trim(), p.line))
    }

    /// The value and line of `key`, without marking it.
    fn peek(&self, key: &str) -> Option<(&str, usize)> {
        self.map.get(key).map(|p| (p.value.trim(), p.line))
    }

    fn is_unused(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|p| p.state.get() == State::Unused)
    }

    fn line(&self, key: &str) -> usize {
        self.map.get(key).map_or(0, |p| p.line)
    }

    /// Lists `key` as not carried over (once), when it is present.
    fn list(&self, key: &str, why: impl Into<String>) {
        if let Some(p) = self.map.get(key) {
            if p.state.get() != State::Listed {
                p.state.set(State::Listed);
                self.notes.borrow_mut().push(Note { line: p.line, key: key.to_string(), why: why.into() });
            }
        }
    }

    /// Every present key starting with `prefix`, in line order.
    fn under(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<&String> =
            self.map.range(prefix.to_string()..).map(|(k, _)| k).take_while(|k| k.starts_with(prefix)).collect();
        keys.sort_by_key(|k| self.map[k.as_str()].line);
        keys.into_iter().cloned().collect()
    }

    fn problem(&self, line: usize, key: &str, message: impl Into<String>) {
        self.problems.borrow_mut().push(Problem { line, key: key.to_string(), message: message.into() });
    }

    fn missing_kind(&self) {
        self.missing.set(self.missing.get() + 1);
    }
}

/// The agents of a configuration: the first segment of every key whose second one is `sources`,
/// `channels`, `sinks` or `sinkgroups`, in order of appearance.
fn agents(entries: &[properties::Entry]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for e in entries {
        let mut parts = e.key.splitn(3, '.');
        let (Some(agent), Some(section)) = (parts.next(), parts.next()) else { continue };
        if matches!(section, "sources" | "channels" | "sinks" | "sinkgroups") && !found.iter().any(|a| a == agent) {
            found.push(agent.to_string());
        }
    }
    found
}

/// Converts the Flume configuration `text` (read from `file`, named so in notes and problems).
///
/// Errors: a malformed escape, no agent, several agents without `agent`, an unknown `agent`, or a
/// malformed configuration (every problem, with its line).
pub fn import(text: &str, file: &str, agent: Option<&str>) -> Result<Import, ImportError> {
    let entries = properties::parse(text).map_err(|e| ImportError::Syntax {
        file: file.to_string(),
        line: e.line,
        message: e.message,
    })?;
    let all = agents(&entries);
    let agent = match (agent, all.as_slice()) {
        (_, []) => return Err(ImportError::NoAgent { file: file.to_string() }),
        (Some(a), _) if all.iter().any(|x| x == a) => a.to_string(),
        (Some(a), _) => {
            return Err(ImportError::UnknownAgent { file: file.to_string(), agent: a.to_string(), agents: all })
        }
        (None, [only]) => only.clone(),
        (None, _) => return Err(ImportError::AgentRequired { file: file.to_string(), agents: all }),
    };
    let prefix = format!("{agent}.");
    let mut props = Props::default();
    let mut overridden = Vec::new();
    for e in entries.into_iter().filter(|e| e.key.starts_with(&prefix)) {
        let prop = Prop { value: e.value, line: e.line, state: Cell::new(State::Unused) };
        if let Some(old) = props.map.insert(e.key.clone(), prop) {
            overridden.push(Note {
                line: old.line,
                key: e.key.clone(),
                why: format!("given again on line {}, whose value counts (as in Flume)", e.line),
            });
        }
    }
    let ron = convert::convert(&props, &agent, file);
    let problems = props.problems.take();
    if !problems.is_empty() {
        return Err(ImportError::Invalid { file: file.to_string(), problems });
    }
    // What nothing looked at is listed too, so that every property is accounted for.
    for (key, p) in &props.map {
        if p.state.get() == State::Unused {
            props.list(key, convert::unused_reason(&props, &agent, key));
        }
    }
    let mut notes = props.notes.take();
    let carried = props.map.values().filter(|p| p.state.get() == State::Carried).count();
    notes.extend(overridden);
    notes.sort_by(|a, b| a.line.cmp(&b.line).then_with(|| a.key.cmp(&b.key)));
    Ok(Import { agent, ron, notes, carried, missing_kinds: props.missing.get() })
}

/// Runs `flumen import-flume`: writes the topology to `-o` (or stdout), lists what was not
/// carried over on stderr as `FILE:LINE: key: why`, then a summary line. Exit 0; 2 when a
/// component kind has no counterpart (the rest converted); 1 when the input cannot be read or is
/// malformed (nothing written).
pub fn run(args: &ImportArgs) -> ExitCode {
    let file = args.properties.display().to_string();
    let result = std::fs::read(&args.properties)
        .map_err(|source| ImportError::Read { path: file.clone(), source })
        .and_then(|bytes| import(&String::from_utf8_lossy(&bytes), &file, args.agent.as_deref()));
    let imported = match result {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(out) = &args.output {
        if let Err(e) = std::fs::write(out, &imported.ron) {
            eprintln!("cannot write {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
    } else {
        print!("{}", imported.ron);
    }
    for n in &imported.notes {
        eprintln!("{file}:{}: {}: {}", n.line, n.key, n.why);
    }
    eprintln!(
        "{file}: agent \"{}\": {} properties carried over, {} not carried{}",
        imported.agent,
        imported.carried,
        imported.notes.len(),
        if imported.missing_kinds > 0 {
            format!(
                "; {} component kinds have no counterpart (stand-ins written, see the comments)",
                imported.missing_kinds
            )
        } else {
            String::new()
        }
    );
    if imported.missing_kinds > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
