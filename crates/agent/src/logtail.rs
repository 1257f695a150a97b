//! The last lines the agent logged, kept in memory so a `collect_diagnostics`
//! command can return them (the agent logs to stderr, which systemd keeps in
//! the journal; the agent cannot read that back). The binary installs
//! [`LogTail::writer`] as its log writer: every line still goes to stderr.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Lines kept.
pub const LINES: usize = 200;
/// Longest line kept (bytes; longer ones are cut).
const MAX_LINE: usize = 2_048;

/// A bounded buffer of recent log lines.
#[derive(Clone, Default)]
pub struct LogTail {
    lines: Arc<Mutex<VecDeque<String>>>,
}

static GLOBAL: OnceLock<LogTail> = OnceLock::new();

impl LogTail {
    /// The process's tail (what the binary's logger writes into).
    pub fn global() -> &'static LogTail {
        GLOBAL.get_or_init(LogTail::default)
    }

    /// The kept lines, oldest first; `None` when nothing was logged through
    /// [`LogTail::writer`] (e.g. the agent runs as a library).
    pub fn snapshot(&self) -> Option<Vec<String>> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        (!lines.is_empty()).then(|| lines.iter().cloned().collect())
    }

    fn push(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines().filter(|l| !l.is_empty()) {
            if lines.len() >= LINES {
                lines.pop_front();
            }
            let mut end = line.len().min(MAX_LINE);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            lines.push_back(line[..end].to_owned());
        }
    }

    /// A `tracing_subscriber` writer: stderr, and a copy kept here.
    pub fn writer(&'static self) -> impl Fn() -> TeeWriter + Send + Sync + 'static {
        move || TeeWriter { tail: self }
    }
}

/// Writes to stderr and keeps a copy (see [`LogTail::writer`]).
pub struct TeeWriter {
    tail: &'static LogTail,
}

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tail.push(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines() {
        let tail = LogTail::default();
        assert!(tail.snapshot().is_none());
        for i in 0..(LINES + 5) {
            tail.push(format!("line {i}\n").as_bytes());
        }
        let lines = tail.snapshot().expect("lines");
        assert_eq!(lines.len(), LINES);
        assert_eq!(lines[0], "line 5");
    }
}
