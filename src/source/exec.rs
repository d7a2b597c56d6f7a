//! `Exec`: one event per line a command writes to its standard output, as Flume's exec source.
//!
//! Like Flume's, it cannot acknowledge its input: lines the command wrote before a crash of the
//! agent are lost to it. Prefer `Taildir` or `SpoolDir` for files.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::conn_limits::Held;
use super::lines::{read_batch, to_events, LineBuffer, PutsItself, ReadEnd};
use super::{SourceContext, SourceError};
use crate::config::duration;

/// `Exec(command: "tail -F /var/log/app.log", shell: Some("/bin/sh -c"), restart: true)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The command. Without `shell` it is split on white space (no quoting); with `shell` it is
    /// passed whole as the shell's last argument.
    pub command: String,
    /// A shell and its flags, e.g. `"/bin/sh -c"` (Flume's `shell`). Default none.
    #[serde(default)]
    pub shell: Option<String>,
    /// Run the command again when it exits (Flume's `restart`). Default `false`: the source has
    /// then reached its end.
    #[serde(default)]
    pub restart: bool,
    /// Wait before a restart (Flume's `restartThrottle`); doubles while the command keeps exiting
    /// within a minute, up to ten times this. Default `"10s"`.
    #[serde(default = "default_restart_throttle", with = "duration")]
    pub restart_throttle: Duration,
    /// Log the command's standard error lines (Flume's `logStdErr`), each cut to
    /// `max_line_length` bytes (a cut line is logged with `truncated=true` and its length) and
    /// with invalid UTF-8 replaced by U+FFFD. Default `false`.
    #[serde(default)]
    pub log_stderr: bool,
    /// Longest body in bytes; longer lines are cut, flagged and counted. Default 65536.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// The command's working directory, relative to the topology file's folder (as every path in
    /// a topology). Default: the topology file's folder, so that `cat data/app.log` reads the file
    /// beside the topology wherever the agent was started.
    #[serde(default)]
    pub working_directory: Option<PathBuf>,
}

fn default_restart_throttle() -> Duration {
    Duration::from_secs(10)
}
fn default_max_line_length() -> usize {
    65536
}

impl ExecConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.command.trim().is_empty() {
            problems.push("command is empty".into());
        }
        if matches!(&self.shell, Some(s) if s.trim().is_empty()) {
            problems.push("shell is empty".into());
        }
        if self.max_line_length == 0 {
            problems.push("max_line_length must be positive".into());
        }
        if let Some(dir) = &self.working_directory {
            if !dir.is_dir() {
                problems.push(format!("working_directory {} is not a directory", dir.display()));
            }
        }
        problems
    }

    /// Resolves `working_directory` against `base` (the topology file's folder), which is also
    /// its default.
    pub fn resolve_paths(&mut self, base: &Path) {
        let dir = self.working_directory.take().unwrap_or_default();
        self.working_directory = Some(crate::config::resolve(base, &dir));
    }

    fn command(&self) -> Command {
        let mut words: Vec<String> = match &self.shell {
            Some(shell) => {
                let mut w: Vec<String> = shell.split_whitespace().map(str::to_string).collect();
                w.push(self.command.clone());
                w
            }
            None => self.command.split_whitespace().map(str::to_string).collect(),
        };
        let program = words.remove(0);
        let mut cmd = Command::new(program);
        cmd.args(words).stdin(Stdio::null()).stdout(Stdio::piped()).kill_on_drop(true);
        if let Some(dir) = &self.working_directory {
            cmd.current_dir(dir);
        }
        cmd.stderr(if self.log_stderr { Stdio::piped() } else { Stdio::null() });
        cmd
    }
}

/// Runs the command (again and again with `restart`) and puts its output lines.
///
/// # Errors
/// When the command cannot be started or a put fails for good.
pub async fn run(config: ExecConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let mut quick_exits = 0u32;
    loop {
        let started = Instant::now();
        let mut child = config.command().spawn().map_err(SourceError::io(format!("start {:?}", config.command)))?;
        tracing::info!(source = %ctx.name, command = %config.command, pid = child.id(), "command started");
        if let Some(stderr) = child.stderr.take() {
            actix_rt::spawn(log_stderr(ctx.name.clone(), stderr, config.max_line_length));
        }
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut lb = LineBuffer::new(config.max_line_length);
        loop {
            let mut held = Held::new(None);
            let (lines, end) = read_batch(&mut lb, &mut stdout, ctx.batch_size, &PutsItself, &mut held, &ctx)
                .await
                .map_err(SourceError::io("read the command's output"))?;
            if !lines.is_empty() {
                ctx.put(to_events(lines, &ctx)).await?;
            }
            match end {
                ReadEnd::More if ctx.is_stopping() => return Ok(()),
                ReadEnd::More => {}
                ReadEnd::Stopping => return Ok(()),
                ReadEnd::Eof => break,
            }
        }
        let status = child.wait().await.map_err(SourceError::io("wait for the command"))?;
        tracing::info!(source = %ctx.name, %status, "command exited");
        if !config.restart {
            return Ok(());
        }
        quick_exits = if started.elapsed() < Duration::from_secs(60) { quick_exits + 1 } else { 0 };
        let delay = (config.restart_throttle * 2u32.saturating_pow(quick_exits.saturating_sub(1)))
            .min(config.restart_throttle * 10);
        tokio::select! {
            _ = actix_rt::time::sleep(delay) => {}
            _ = ctx.stopping() => return Ok(()),
        }
    }
}

/// Logs the lines of a command's standard error until it closes: each cut to `max` bytes (the
/// rest of a long line is read and dropped, never held; the line is logged `truncated` with its
/// full length), invalid UTF-8 replaced (U+FFFD), so that no line stops the logging and no line
/// grows memory.
async fn log_stderr(name: String, stderr: impl tokio::io::AsyncRead + Unpin, max: usize) {
    let mut reader = BufReader::new(stderr);
    let mut line: Vec<u8> = Vec::new();
    let mut len = 0usize;
    let emit = |line: &mut Vec<u8>, len: &mut usize| {
        let text = String::from_utf8_lossy(line);
        if *len > line.len() {
            tracing::warn!(source = %name, stderr = %text, truncated = true, bytes = *len, "stderr line cut at max_line_length");
        } else {
            tracing::info!(source = %name, stderr = %text);
        }
        line.clear();
        *len = 0;
    };
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let (part, newline) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (&chunk[..i], Some(i)),
            None => (chunk, None),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&part[..part.len().min(room)]);
        len += part.len();
        let used = newline.map_or(part.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            if line.last() == Some(&b'\r') && len == line.len() {
                line.pop();
                len -= 1;
            }
            emit(&mut line, &mut len);
        }
    }
    if len > 0 {
        emit(&mut line, &mut len);
    }
}
