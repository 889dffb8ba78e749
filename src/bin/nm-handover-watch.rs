//! `nm-handover-watch`: while a pair's backup link carries the wired MAC
//! (a handover on stock NetworkManager), takes the backup off the LAN the
//! moment the wired carrier returns, before NM's wired DHCP client sends
//! anything. rtnetlink only: no libnm, GLib or D-Bus.
//!
//! `nm-handover` starts it when it activates the backup; it stops by itself
//! when the backup loses the wired MAC (the handover ended), when either link
//! goes away, when the backup never takes the wired MAC, or at its lifetime
//! limit. One per pair: a second one for the same pair exits at once.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nm_handover::marks::Mark;
use nm_handover::offlan::take_off_lan;
use nm_handover::pairing::{mac_bytes, parse_mac};
use nm_handover::sys::lock::FileLock;
use nm_handover::sys::netlink::{if_index, LinkMonitor};
use nm_handover::sys::paths::watcher_lock_path;
use nm_handover::watch::{Limits, Step, Watch};

const USAGE: &str = "usage: nm-handover-watch --pair WIRED-UUID --wired IFACE --backup IFACE --wired-mac MAC [--backup-mac MAC] \
[--activation-secs N] [--ended-secs N] [--lifetime-secs N]\n\n\
--backup-mac is the backup's own MAC, given back to it when it is taken off the LAN (without it, NM\n\
restores it when it deactivates the profile).\n\n\
Started by nm-handover when it hands over to the backup on stock NetworkManager; see nm-handover(1).";

#[derive(Debug)]
struct Args {
    pair: String,
    wired: String,
    backup: String,
    wired_mac: [u8; 6],
    backup_mac: Option<[u8; 6]>,
    limits: Limits,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut pair, mut wired, mut backup, mut wired_mac, mut backup_mac) = (None, None, None, None, None);
    let mut limits = Limits::default();
    let mac = |value: String| parse_mac(&value).ok().and_then(|m| mac_bytes(&m)).ok_or(format!("not a MAC address: {value:?}"));
    let secs = |value: String| value.parse::<u64>().map(Duration::from_secs).map_err(|_| format!("not a number of seconds: {value:?}"));
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pair" => pair = Some(value),
            "--wired" => wired = Some(value),
            "--backup" => backup = Some(value),
            "--wired-mac" => wired_mac = Some(mac(value)?),
            "--backup-mac" => backup_mac = Some(mac(value)?),
            "--activation-secs" => limits.activation = secs(value)?,
            "--lifetime-secs" => limits.lifetime = secs(value)?,
            "--ended-secs" => limits.ended = secs(value)?,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    let missing = |what: &str| format!("{what} is required");
    let pair = pair.ok_or(missing("--pair"))?;
    if pair.is_empty() || !pair.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("--pair must be the wired profile's UUID, not {pair:?}"));
    }
    Ok(Args {
        pair,
        wired: wired.ok_or(missing("--wired"))?,
        backup: backup.ok_or(missing("--backup"))?,
        wired_mac: wired_mac.ok_or(missing("--wired-mac"))?,
        backup_mac,
        limits,
    })
}

/// A line to standard error: nm-dispatcher's journal stream, or a pipe that
/// may close when nm-dispatcher exits while the watcher still runs, so a
/// failed write is not an error.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "nm-handover-watch: {line}");
}

fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn run(args: Args) -> Result<String, String> {
    let lock_path = watcher_lock_path(&args.pair);
    // A watcher of the previous handover of this pair may still be on its
    // way out; one that is still watching keeps the lock, and this one leaves.
    let _lock = match FileLock::acquire_naming_this_process(&lock_path, Duration::from_secs(2)) {
        Ok(lock) => lock,
        Err(nm_handover::sys::lock::LockError::Busy { .. }) => return Ok("this pair is already watched".into()),
        Err(e) => return Err(e.to_string()),
    };
    let backup = if_index(&args.backup).map_err(|e| format!("{}: {e}", args.backup))?;
    // The wired link may be gone already (an undock was the pull): a link
    // with its name or MAC that appears later is the re-dock.
    let monitor = LinkMonitor::open().map_err(|e| format!("rtnetlink: {e}"))?;
    let wired = if_index(&args.wired).ok();
    let resync = |monitor: &LinkMonitor, wired: Option<i32>| -> Result<(), String> {
        // The backup first: a carrier already back is judged with its MAC known.
        monitor.request(backup).and_then(|()| wired.map_or(Ok(()), |w| monitor.request(w))).map_err(|e| format!("rtnetlink: {e}"))
    };
    resync(&monitor, wired)?;
    say(format_args!("watching {} for carrier while {} carries {} (pid {})", args.wired, args.backup, fmt_mac(args.wired_mac), std::process::id()));
    let mut watch = Watch::new(wired, &args.wired, backup, args.wired_mac, args.limits);
    let started = Instant::now();
    loop {
        let reports = match monitor.next(watch.next_deadline(started.elapsed())) {
            Ok(reports) => reports,
            // Changes were lost while we were not reading: ask again.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                resync(&monitor, watch.wired().or_else(|| if_index(&args.wired).ok()))?;
                continue;
            }
            Err(e) => return Err(format!("rtnetlink: {e}")),
        };
        let mut step = watch.on_time(started.elapsed());
        for report in reports {
            if step != Step::Wait {
                break;
            }
            step = watch.on_link(report, started.elapsed());
        }
        match step {
            Step::Wait => {}
            Step::Stop(why) => return Ok(why.into()),
            Step::TakeBackupOff => {
                take_off_lan(backup, args.backup_mac).map_err(|e| format!("{}: cannot take it off the LAN: {e}", args.backup))?;
                // A re-plug under way: if the wired link finds no DHCP on this
                // port, the supervisor brings the backup back.
                if let Some(Err(e)) = watch.wired().map(|wired| Mark::ReplugPending.set(wired)) {
                    say(format_args!("cannot record the re-plug: {e}"));
                }
                return Ok(format!(
                    "{} has carrier again: took {} off the LAN (link down, {})",
                    args.wired,
                    args.backup,
                    args.backup_mac.map_or("MAC left to NM".into(), |mac| format!("own MAC {}", fmt_mac(mac)))
                ));
            }
        }
    }
}

fn main() -> ExitCode {
    if let Err(e) = nm_handover::sys::racing_priority() {
        eprintln!("{}nm-handover-watch: cannot restore its CPU priority: {e}", nm_handover::sys::stderr::line_prefix(tracing::Level::WARN));
    }
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(why) if why.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            say(format_args!("{why}\n{USAGE}"));
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(why) => {
            say(format_args!("stopped: {why}"));
            ExitCode::SUCCESS
        }
        Err(why) => {
            say(format_args!("{why}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    const GOOD: &[&str] = &[
        "--pair",
        "0b9f4c3e-1111-2222-3333-444455556666",
        "--wired",
        "wired0",
        "--backup",
        "wlan0",
        "--wired-mac",
        "02:00:00:00:00:01",
        "--backup-mac",
        "02:00:00:00:00:02",
    ];

    #[test]
    fn arguments_are_checked() {
        let a = args(GOOD).unwrap();
        assert_eq!((a.wired_mac, a.backup_mac, a.limits), ([2, 0, 0, 0, 0, 1], Some([2, 0, 0, 0, 0, 2]), Limits::default()));
        assert_eq!(args(&GOOD[..8]).unwrap().backup_mac, None);
        let mut with_limits = GOOD.to_vec();
        with_limits.extend(["--activation-secs", "3", "--lifetime-secs", "9"]);
        assert_eq!(args(&with_limits).unwrap().limits, Limits { activation: Duration::from_secs(3), lifetime: Duration::from_secs(9), ..Limits::default() });
        assert!(args(&GOOD[..6]).unwrap_err().contains("--wired-mac is required"));
        assert!(args(&[&GOOD[..6], &["--wired-mac", "nope"]].concat()).unwrap_err().contains("not a MAC"));
        assert!(args(&[&["--pair", "../etc"], &GOOD[2..]].concat()).unwrap_err().contains("UUID"));
        assert!(args(&["--wired"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--bogus", "1"]).unwrap_err().contains("unknown"));
        assert_eq!(args(&["--help"]).err(), Some(String::new()));
    }
}
