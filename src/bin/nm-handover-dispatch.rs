//! The script nm-dispatcher runs for every event: `nm-handover-dispatch IFACE ACTION`.
//!
//! Most events on a laptop concern no pair, so this entry uses only the
//! standard library: it decides from the event's environment (and at most
//! one keyfile read) and exits, without loading libnm, GLib or D-Bus. Events
//! that may concern a pair are handed to `nm-handover` (next to this binary)
//! by exec, with the same arguments and environment.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use nm_handover::event::DispatcherAction;
use nm_handover::event::DispatcherEvent;
use nm_handover::marks::Mark;
use nm_handover::prefilter::{prefilter, record_link_up_seen, Verdict};
use nm_handover::sys::paths::NM_CONF_DIR;
use nm_handover::sys::stderr::error_prefix;

const FULL_PROGRAM: &str = "nm-handover";

fn full_program() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find my own path: {e}"))?;
    let full = me.with_file_name(FULL_PROGRAM);
    if full.is_file() {
        Ok(full)
    } else {
        Err(format!("{} is missing (it is installed next to {})", full.display(), me.display()))
    }
}

/// Whether the supervisor handled the pull or re-plug this event is of
/// (see `nm_handover::marks::handled_already`).
fn handled_by_supervisor(mark: Mark, args: &[OsString]) -> bool {
    let Some(iface) = args.first().and_then(|a| a.to_str()) else { return false };
    let Ok(index) = nm_handover::sys::netlink::if_index(iface) else { return false };
    let carrier = nm_handover::sys::netlink::carrier(iface);
    let supervisor = nm_handover::sys::lock::running_holder(&nm_handover::sys::paths::supervisor_lock_path(), nm_handover::sys::lock::SUPERVISOR_PROGRAM);
    nm_handover::marks::handled_already(mark, index, carrier, supervisor.ok().flatten(), std::time::SystemTime::now())
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let event = match DispatcherEvent::from_parts(args.clone(), std::env::vars_os()) {
        Ok(event) => event,
        Err(err) => {
            eprintln!("{}nm-handover: {err} (usage: nm-handover-dispatch IFACE ACTION, as nm-dispatcher runs it)", error_prefix());
            return ExitCode::FAILURE;
        }
    };
    if event.action == DispatcherAction::LinkUp {
        record_link_up_seen(Path::new(nm_handover::sys::paths::LINK_UP_SEEN_PATH));
    }
    let verdict = prefilter(&event, Path::new(NM_CONF_DIR));
    if let Verdict::Ignore(_) = verdict {
        return ExitCode::SUCCESS;
    }
    let handled = match event.action {
        DispatcherAction::Down => Some((Mark::PullWatched, "down: the supervisor, which watched this pull, hands it over")),
        DispatcherAction::LinkUp => Some((Mark::ReplugHandled, "link-up: the supervisor took the backup off the LAN when the carrier returned")),
        _ => None,
    };
    if let Some((_, said)) = handled.filter(|(mark, _)| handled_by_supervisor(*mark, &args)) {
        eprintln!("{}nm-handover: {said}", nm_handover::sys::stderr::line_prefix(tracing::Level::INFO));
        return ExitCode::SUCCESS;
    }
    let full = match full_program() {
        Ok(path) => path,
        Err(why) => {
            eprintln!("{}nm-handover: {why}", error_prefix());
            return ExitCode::FAILURE;
        }
    };
    if verdict == Verdict::Reconcile {
        // The supervisor (it reconciles first, then watches NM between
        // events), started, not waited for: nm-dispatcher runs waiting
        // requests one at a time, and NM dispatches `connectivity-change` on
        // many state changes; it must not hold up the events queued behind it
        // (a `link-up` NM waits for, a handover). The handover lock orders its
        // reconciles with them; its log lines reach nm-dispatcher's journal.
        // Where one runs already, the new one exits at once.
        return match Command::new(&full)
            .arg0(FULL_PROGRAM)
            .args(["supervise", "--wait-for-nm-secs", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
        {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{}nm-handover: cannot run {} supervise: {err}", error_prefix(), full.display());
                ExitCode::FAILURE
            }
        };
    }
    // exec only returns on failure.
    let err = Command::new(&full).arg0(FULL_PROGRAM).args(&args).exec();
    eprintln!("{}nm-handover: cannot run {}: {err}", error_prefix(), full.display());
    ExitCode::FAILURE
}
