//! Writing the imported topology as readable RON text, with comments naming where each option
//! came from.

use std::fmt::Write;

/// A RON string literal for `s` (quotes and escapes as the `ron` crate writes them).
pub fn q(s: &str) -> String {
    ron::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// `Some("...")`.
pub fn some_q(s: &str) -> String {
    format!("Some({})", q(s))
}

/// A duration of `ms` milliseconds as flumen writes durations (`"250ms"`, `"30s"`, `"5m"`, `"2h"`).
pub fn dur_ms(ms: u64) -> String {
    let text = if ms == 0 {
        "0s".to_string()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    };
    q(&text)
}

/// `["a", "b"]`.
pub fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "))
}

/// One option of a kind: its name, its RON value and the comment saying where it came from.
#[derive(Debug, Clone)]
pub struct Opt {
    pub name: String,
    pub value: String,
    pub from: String,
}

/// A kind with options, e.g. `Netcat(bind: "0.0.0.0:6666")`.
#[derive(Debug, Clone, Default)]
pub struct Kind {
    pub name: String,
    pub opts: Vec<Opt>,
}

impl Kind {
    pub fn new(name: &str) -> Kind {
        Kind { name: name.to_string(), opts: Vec::new() }
    }

    /// Adds an option (replacing an earlier one of that name).
    pub fn set(&mut self, name: &str, value: String, from: impl Into<String>) {
        let from = from.into();
        if let Some(o) = self.opts.iter_mut().find(|o| o.name == name) {
            o.value = value;
            o.from = from;
        } else {
            self.opts.push(Opt { name: name.to_string(), value, from });
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.opts.iter().any(|o| o.name == name)
    }

    /// The kind as RON, its options one a line at `indent` + 4 spaces.
    pub fn render(&self, indent: usize) -> String {
        if self.opts.is_empty() {
            return format!("{}()", self.name);
        }
        let pad = " ".repeat(indent + 4);
        let mut out = format!("{}(\n", self.name);
        for o in &self.opts {
            let value = o.value.replace('\n', &format!("\n{pad}"));
            let _ = write!(out, "{pad}{}: {},", o.name, value);
            if !o.from.is_empty() {
                let _ = write!(out, " // {}", o.from);
            }
            out.push('\n');
        }
        let _ = write!(out, "{})", " ".repeat(indent));
        out
    }
}

/// Comment lines (`// ...`) at `indent`.
pub fn comments(lines: &[String], indent: usize) -> String {
    let pad = " ".repeat(indent);
    lines.iter().map(|l| format!("{pad}// {l}\n")).collect()
}
