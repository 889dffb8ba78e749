//! nm-handover: keep one IPv4 address across a wired <-> backup (Wi-Fi)
//! handover with NetworkManager.
//!
//! Two binaries share this library: `nm-handover-dispatch`, the small entry
//! nm-dispatcher runs for every event (std only: it decides from the
//! environment whether the event concerns a pair), and `nm-handover`, which
//! talks to NetworkManager through libnm (the commands, and the events that
//! concern a pair).

#![deny(unsafe_code)]

pub mod check;
pub mod commands;
pub mod dispatch;
pub mod error;
pub mod event;
pub mod handover;
pub mod lan;
pub mod lease;
pub mod marks;
pub mod names;
pub mod offlan;
pub mod pairing;
pub mod policy;
pub mod prefilter;
pub mod standby;
pub mod supervise;
#[allow(unsafe_code)]
pub mod sys;
pub mod trust;
pub mod watch;

/// The dispatcher action patched NetworkManager sends when a device's link is
/// ready and before IP configuration starts (see nm-patch/).
pub const LINK_UP_ACTION: &str = "link-up";

/// Dependencies point downward: `sys` (all the C and the kernel) uses no
/// module above it, and the dispatcher's entry no user-facing command.
#[cfg(test)]
mod layering {
    use std::path::Path;

    /// The `crate::` modules `file` uses in code (comments aside).
    fn uses(file: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(file).unwrap();
        let mut found: Vec<String> = text
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .flat_map(|code| code.match_indices("crate::").map(move |(at, _)| &code[at + "crate::".len()..]))
            .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
            .collect();
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn sys_uses_no_module_above_it() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sys");
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let above: Vec<String> = uses(&entry.path()).into_iter().filter(|m| m != "sys").collect();
            assert!(above.is_empty(), "{} uses {above:?}", entry.path().display());
        }
    }

    #[test]
    fn the_dispatcher_entry_uses_no_command() {
        let used = uses(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dispatch.rs"));
        assert!(!used.iter().any(|m| m == "commands"), "{used:?}");
    }
}
