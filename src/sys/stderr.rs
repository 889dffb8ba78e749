//! Where this process's stderr goes, which decides how its lines are written.
//!
//! Under systemd, nm-dispatcher's stderr (which its scripts inherit) and the
//! supervisor's (through `systemd-cat`) are journal streams: sockets whose
//! reader takes a leading `<N>` as the line's syslog priority and strips it
//! (`SyslogLevelPrefix=`, on by default; `systemd-cat --level-prefix`, on by
//! default). Without it every line would be logged at the stream's default,
//! info, warnings and errors included.

use std::fs::{File, FileType};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::sync::OnceLock;

/// A duplicate of stderr and its file type; `None` when it is closed.
fn stderr_dup() -> Option<(File, FileType)> {
    let file = File::from(std::io::stderr().as_fd().try_clone_to_owned().ok()?);
    let kind = file.metadata().ok()?.file_type();
    Some((file, kind))
}

/// Whether stderr is a journal stream (a socket: a terminal, a pipe or a
/// file is something else). Decided once per process.
pub fn is_journal_stream() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| stderr_dup().is_some_and(|(_, kind)| kind.is_socket()))
}

/// What starts a line of `level` on stderr: on a journal stream its syslog
/// priority as `<N>` (3 error, 4 warning, 6 info, 7 debug), nothing elsewhere.
pub fn line_prefix(level: tracing::Level) -> &'static str {
    prefix_on(level, is_journal_stream())
}

/// Pure: [`line_prefix`] where stderr is a journal stream or not.
fn prefix_on(level: tracing::Level, journal: bool) -> &'static str {
    match (journal, level) {
        (false, _) => "",
        (true, tracing::Level::ERROR) => "<3>",
        (true, tracing::Level::WARN) => "<4>",
        (true, tracing::Level::INFO) => "<6>",
        (true, _) => "<7>",
    }
}

/// [`line_prefix`] of an error line, for messages printed without `tracing`.
pub fn error_prefix() -> &'static str {
    line_prefix(tracing::Level::ERROR)
}

/// Stderr for a child that outlives this process, where stderr is a log
/// file (a script's, a lab's); never a terminal, where the child's lines
/// would come after the prompt, or a pipe, which it would hold open long
/// after this process returned (`out=$(nm-handover pair ...)` would hang).
pub fn for_a_child_that_outlives_us() -> std::process::Stdio {
    match stderr_dup() {
        Some((file, kind)) if kind.is_file() => file.into(),
        _ => std::process::Stdio::null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// journald's priorities (syslog's): an error 3, a warning 4, info 6, debug 7.
    #[test]
    fn each_level_is_logged_at_its_syslog_priority_on_a_journal_stream() {
        use tracing::Level;
        let on_journal: Vec<&str> = [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE].into_iter().map(|l| prefix_on(l, true)).collect();
        assert_eq!(on_journal, ["<3>", "<4>", "<6>", "<7>", "<7>"]);
        assert!([Level::ERROR, Level::WARN, Level::INFO].into_iter().all(|l| prefix_on(l, false).is_empty()), "a terminal, a pipe or a file");
    }
}
