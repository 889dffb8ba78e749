//! The binaries' own behaviour that needs no NetworkManager: help, argument
//! errors, and the dispatcher fast path for profiles that are in no pair, for
//! both dispatcher entries (`nm-handover-dispatch`, which nm-dispatcher runs,
//! and `nm-handover IFACE ACTION`).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn command(path: &str) -> Command {
    let mut cmd = Command::new(path);
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    // No system bus: anything that tries to reach NM fails fast and visibly.
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/nm-handover-test-bus");
    cmd
}

fn bin() -> Command {
    command(env!("CARGO_BIN_EXE_nm-handover"))
}

/// Both ways an event reaches the companion.
fn dispatch_entries() -> [Command; 2] {
    [command(env!("CARGO_BIN_EXE_nm-handover-dispatch")), bin()]
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nm-handover-cli-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_is_available_for_every_command() {
    for args in [
        &["--help"][..],
        &["pair", "--help"],
        &["unpair", "--help"],
        &["status", "--help"],
        &["reconcile", "--help"],
        &["check", "--help"],
        &["completions", "--help"],
    ] {
        let out = bin().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("Usage: nm-handover"), "{args:?}: {}", text(&out));
    }
    // What --help tells a person to type works as typed.
    let help = text(&bin().arg("--help").output().unwrap());
    assert!(help.contains("`nm-handover dispatch IFACE ACTION`"), "{help}");
    let out = bin().args(["dispatch", "--help"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = bin().arg("--version").output().unwrap();
    assert!(text(&out).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_arguments_are_plain_errors() {
    let out = bin().args(["pair", "only-one"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("required"), "{}", text(&out));
    let out = bin().args(["pair", "a", "b", "--carrier-wait-ms", "-5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn without_networkmanager_commands_fail_cleanly() {
    let out = bin().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("nm-handover: cannot connect to NetworkManager: the system D-Bus (unix:path=/nonexistent/nm-handover-test-bus) is not reachable"),
        "{msg}"
    );
    assert!(msg.contains("Is dbus running"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
}

#[test]
fn unpaired_profile_event_exits_quickly_without_nm() {
    let dir = scratch("unpaired");
    let keyfile = dir.join("Office.nmconnection");
    fs::write(&keyfile, "[connection]\nid=Office\ntype=ethernet\n\n[ipv4]\nmethod=auto\n").unwrap();
    for mut entry in dispatch_entries() {
        let start = Instant::now();
        let out = entry
            .args(["eth0", "up"])
            .env("NM_DISPATCHER_ACTION", "up")
            .env("DEVICE_IFACE", "eth0")
            .env("CONNECTION_UUID", "11111111-1111-4111-8111-111111111111")
            .env("CONNECTION_FILENAME", &keyfile)
            .env("NM_HANDOVER_LOG", "debug")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        // It decided from the keyfile: had it tried the (absent) bus, it would have failed.
        assert!(!text(&out).contains("cannot connect"), "{}", text(&out));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn paired_profile_event_needs_nm_and_says_so() {
    let dir = scratch("paired");
    let keyfile = dir.join("Wired.nmconnection");
    fs::write(&keyfile, "[connection]\nid=Wired\n\n[user]\nnm-handover.role=wired\n").unwrap();
    for mut entry in dispatch_entries() {
        let out = entry
            .args(["wired0", "down"])
            .env("NM_DISPATCHER_ACTION", "down")
            .env("DEVICE_IFACE", "wired0")
            .env("CONNECTION_UUID", "11111111-1111-4111-8111-111111111111")
            .env("CONNECTION_FILENAME", &keyfile)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        // The small entry handed the event to nm-handover, which tried NM.
        assert!(text(&out).contains("cannot connect to NetworkManager"), "{}", text(&out));
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// Arguments and environment of one dispatcher call.
type Call<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

#[test]
fn hostile_dispatcher_input_is_rejected_without_panic() {
    let cases: &[Call] = &[
        (&["../../etc", "down"], &[]),
        (&["wired0", "down"], &[("CONNECTION_UUID", "../../../../etc/shadow")]),
        (&["wired0", "down"], &[("DEVICE_IFACE", "a/b")]),
        (&["eth0 x", "up"], &[]),
    ];
    for ((args, env), mut cmd) in cases.iter().flat_map(|case| dispatch_entries().map(|cmd| (case, cmd))) {
        cmd.args(*args).env("NM_DISPATCHER_ACTION", args[1]);
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {}", text(&out));
        assert!(!text(&out).contains("panicked"), "{}", text(&out));
        assert!(text(&out).contains("ERROR") || text(&out).contains("nm-handover: "), "{}", text(&out));
    }
}

#[test]
fn unrelated_actions_are_ignored() {
    for (iface, action) in [("none", "hostname"), ("", "connectivity-change"), ("tun0", "vpn-up"), ("eth0", "pre-down")] {
        for mut entry in dispatch_entries() {
            let out = entry.args([iface, action]).env("NM_DISPATCHER_ACTION", action).output().unwrap();
            assert!(out.status.success(), "{action}: {}", text(&out));
        }
    }
}

/// The entry nm-dispatcher runs for every event, and the carrier watcher
/// (rtnetlink only), load no libnm, GLib or D-Bus.
#[test]
fn the_dispatcher_entry_and_the_watcher_link_no_glib() {
    for binary in [env!("CARGO_BIN_EXE_nm-handover-dispatch"), env!("CARGO_BIN_EXE_nm-handover-watch")] {
        let Ok(out) = Command::new("ldd").arg(binary).output() else {
            assert!(std::env::var_os("CI").is_none(), "ldd is not available (libc-bin), and CI must skip nothing");
            eprintln!("SKIPPED: ldd is not available");
            return;
        };
        assert!(out.status.success(), "ldd failed: {}", String::from_utf8_lossy(&out.stderr));
        let libs = String::from_utf8_lossy(&out.stdout);
        for heavy in ["libnm", "libglib", "libgio", "libgobject", "libdbus", "libsystemd"] {
            assert!(!libs.contains(heavy), "{binary} links {heavy}:\n{libs}");
        }
    }
}

/// The watcher's arguments are checked before it touches anything.
#[test]
fn the_watcher_refuses_bad_arguments_plainly() {
    let watch = env!("CARGO_BIN_EXE_nm-handover-watch");
    let out = Command::new(watch).arg("--help").output().unwrap();
    assert!(out.status.success() && text(&out).contains("usage: nm-handover-watch"), "{}", text(&out));
    let out = Command::new(watch).args(["--pair", "x", "--wired"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--wired needs a value"), "{}", text(&out));
}

/// Runs `cmd` with its stderr on one end of a socket pair, as systemd's
/// journal stream is; returns its exit code and what it wrote there.
fn on_a_journal_stream(mut cmd: Command) -> (Option<i32>, String) {
    use std::io::Read;
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let status = cmd.stdout(std::process::Stdio::null()).stderr(std::os::fd::OwnedFd::from(theirs)).status().unwrap();
    // (The command, and with it our copy of the other end, is gone: EOF comes.)
    drop(cmd);
    let mut text = String::new();
    ours.read_to_string(&mut text).unwrap();
    (status.code(), text)
}

/// journald reads a leading `<N>` as a line's priority: an error must not be logged as info.
#[test]
fn on_a_journal_stream_each_line_carries_its_priority() {
    let mut status = bin();
    status.arg("status");
    let (code, said) = on_a_journal_stream(status);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.starts_with("<3>nm-handover: cannot connect to NetworkManager"), "{said}");

    let dir = scratch("journal");
    let keyfile = dir.join("Wired.nmconnection");
    fs::write(&keyfile, "[connection]\nid=Wired\n\n[user]\nnm-handover.role=wired\n").unwrap();
    for mut entry in dispatch_entries() {
        entry
            .args(["wired0", "down"])
            .env("NM_DISPATCHER_ACTION", "down")
            .env("DEVICE_IFACE", "wired0")
            .env("CONNECTION_UUID", "11111111-1111-4111-8111-111111111111")
            .env("CONNECTION_FILENAME", &keyfile)
            .env("NM_HANDOVER_LOG", "debug");
        let (code, said) = on_a_journal_stream(entry);
        assert_eq!(code, Some(1), "{said}");
        let lines: Vec<&str> = said.lines().collect();
        let error = lines.iter().find(|l| l.contains("cannot connect to NetworkManager")).unwrap_or_else(|| panic!("{said}"));
        assert!(error.starts_with("<3>") && error.contains("ERROR"), "{said}");
        assert!(lines.iter().all(|l| l.starts_with('<')), "a line without its priority: {said}");
    }
    fs::remove_dir_all(&dir).unwrap();

    // Elsewhere (a terminal, a pipe, a file) lines are as a person reads them.
    let out = bin().arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("nm-handover: "), "{}", text(&out));
}
