//! What nm-handover remembers about the pair's links between dispatcher
//! events, as files named by interface index under `/run/nm-handover`
//! (tmpfs): a re-plug under way, a wired port that found no DHCP, and a
//! backup that nm-handover itself deactivated.
//!
//! The wired port: on stock NetworkManager no dispatcher event says that a
//! wired activation failed: the supervisor sees the re-plug overdue (no
//! address within the profile's DHCP timeout and a margin) and brings the
//! backup back. On patched NetworkManager the failure's `down` does. Either
//! way the port is then marked as failed, and NetworkManager's retries on it
//! (one per autoconnect retry, each as long as the DHCP timeout) leave the
//! backup holding the address: without the mark, each retry's `link-up` took
//! the backup off the LAN and the laptop was offline for most of the time the
//! port stayed dead. Both wired marks are dropped once the wired link holds
//! the address or loses carrier (a new plug is a new re-plug).
//!
//! The backup: NetworkManager gives the same state reason (a user's request)
//! to a deactivation nm-handover asks for at a hand-back as to a user's own
//! disconnect; the mark tells them apart, so that a reconcile leaves a backup
//! the user disconnected, and brings back one nm-handover handed back from.
//! It is dropped when the backup is active again.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::lease::write_atomically;
use crate::sys::lock::{create_parent_dir, touch};
use crate::sys::paths::link_mark_path;

/// Added to the wired profile's DHCP timeout before a re-plug counts as failed.
pub const REPLUG_MARGIN: Duration = Duration::from_secs(5);

/// NetworkManager's `ipv4.dhcp-timeout` when the profile leaves it at 0.
pub const NM_DEFAULT_DHCP_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The backup was taken off the LAN for a re-plug of this wired link.
    ReplugPending,
    /// A wired activation on this port found no DHCP.
    PortFailed,
    /// nm-handover deactivated this backup link (a hand-back).
    HandedBack,
    /// The pair's warm standby on this backup link holds the wired link's
    /// address since the cable went out (see `crate::standby`).
    StandbyServing,
    /// The supervisor (the process holding its lock, whose PID the mark
    /// holds) watches this wired link
    /// docked, so it sees the next pull happen and hands it over itself once
    /// NetworkManager has taken the link down (see `crate::supervise`): the
    /// dispatcher's `down` of a pull (no carrier) has nothing to do, and the
    /// dispatcher's entry does not start the companion for it (in the Wi-Fi
    /// VM its start took the CPU from the Wi-Fi's key handshake, which then
    /// failed, and its activation raced the supervisor's). Consumed by that
    /// `down`. A mark of a supervisor that is gone (stopped, restarted) is
    /// void: its successor did not see the cable in and cannot tell the pull.
    PullWatched,
    /// The supervisor's fast path took the address off the LAN (the warm
    /// standby's, or the backup's link: see `crate::standby::Guard`) the
    /// moment this wired link's carrier returned:
    /// the `link-up` of that re-plug (patched NetworkManager, which waits for
    /// it before its DHCP client starts) has nothing left to do, and the
    /// dispatcher's entry answers it at once instead of starting the
    /// companion (1.5 s of the re-plug in the Wi-Fi VM). Consumed by that `link-up`.
    ReplugHandled,
}

impl Mark {
    /// `wired_index` is the backup's index for [`Mark::HandedBack`].
    fn path(self, wired_index: i32) -> PathBuf {
        let kind = match self {
            Mark::ReplugPending => "replug",
            Mark::PortFailed => "port-failed",
            Mark::HandedBack => "handed-back",
            Mark::StandbyServing => "standby-serving",
            Mark::PullWatched => "pull-watched",
            Mark::ReplugHandled => "replug-handled",
        };
        link_mark_path(kind, wired_index)
    }

    /// Sets the mark (its time is the file's modification time).
    pub fn set(self, wired_index: i32) -> io::Result<()> {
        touch(&self.path(wired_index))
    }

    /// When the mark was set, if it is.
    pub fn since(self, wired_index: i32) -> Option<SystemTime> {
        fs::symlink_metadata(self.path(wired_index)).ok().filter(|m| m.is_file()).and_then(|m| m.modified().ok())
    }

    /// Sets the mark as this process's (see [`Mark::setter`]).
    pub fn set_as_this_process(self, wired_index: i32) -> io::Result<()> {
        let path = self.path(wired_index);
        create_parent_dir(&path)?;
        write_atomically(&path, format!("{}\n", std::process::id()).as_bytes()).map_err(io::Error::other)
    }

    /// The PID of the process that set the mark with [`Mark::set_as_this_process`].
    pub fn setter(self, wired_index: i32) -> Option<u32> {
        crate::sys::lock::read_no_follow(&self.path(wired_index)).ok()?.trim().parse().ok()
    }

    pub fn clear(self, wired_index: i32) -> io::Result<()> {
        match fs::remove_file(self.path(wired_index)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// How long after the supervisor's fast path handled a re-plug its
/// `link-up` may come (0.3-0.7 s after the carrier in the Wi-Fi VM): an
/// older mark, which that `link-up` never took (the cable out again before
/// it), must not answer a later one; a `link-up` that comes later still runs
/// the companion, which does the same.
pub const HANDLED_FOR: Duration = Duration::from_secs(5);

/// Whether the dispatcher's event of the wired link `index` is left to the
/// supervisor: a pull's `down` ([`Mark::PullWatched`]: the link has no
/// carrier now, a `down` with the carrier in being a failed activation; the
/// supervisor that set it is the one running now, `supervisor`) or a
/// re-plug's `link-up` the supervisor's fast path handled
/// ([`Mark::ReplugHandled`]: the link has carrier; set at most
/// [`HANDLED_FOR`] ago). Consumes the mark.
pub fn handled_already(mark: Mark, index: i32, carrier: Option<bool>, supervisor: Option<u32>, now: SystemTime) -> bool {
    let Some(since) = mark.since(index) else { return false };
    let set_by_running_supervisor = supervisor.is_some() && mark.setter(index) == supervisor;
    let _ = mark.clear(index);
    event_was_handled(mark, since, carrier, set_by_running_supervisor, now)
}

/// Pure: [`handled_already`] for a mark set at `since`.
fn event_was_handled(mark: Mark, since: SystemTime, carrier: Option<bool>, set_by_running_supervisor: bool, now: SystemTime) -> bool {
    match mark {
        Mark::ReplugHandled => carrier == Some(true) && now.duration_since(since).is_ok_and(|age| age <= HANDLED_FOR),
        _ => carrier != Some(true) && set_by_running_supervisor,
    }
}

/// The wired profile's DHCP timeout (`ipv4.dhcp-timeout` in seconds; 0 is
/// NetworkManager's default).
pub fn dhcp_timeout(seconds: Option<i32>) -> Duration {
    match seconds {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => NM_DEFAULT_DHCP_TIMEOUT,
    }
}

/// How long NetworkManager has, after the wired carrier came back, to start
/// an activation on the wired device (it starts 0.3-0.7 s after the carrier
/// in the Wi-Fi VM, milliseconds on veth) before a re-plug the backup left
/// the LAN for counts as one it will not make: the device's autoconnect
/// turned off, no profile that connects by itself, a retry limit reached.
/// Plain NetworkManager would have left the Wi-Fi up; the backup comes back
/// then, not after the DHCP timeout (45 s by default, or never where it is
/// infinite).
pub const ACTIVATION_START_WITHIN: Duration = Duration::from_secs(5);

/// How long until a re-plug begun at `since` is overdue (zero: it is):
/// while the wired device is `activating` the pair's wired profile, its DHCP
/// `timeout` and a margin; while nothing activates on it,
/// [`ACTIVATION_START_WITHIN`].
pub fn replug_overdue_in(since: SystemTime, now: SystemTime, activating: bool, timeout: Duration) -> Duration {
    let waited = now.duration_since(since).unwrap_or_default();
    let allowed = if activating { timeout + REPLUG_MARGIN } else { ACTIVATION_START_WITHIN };
    allowed.saturating_sub(waited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_left_to_the_supervisor_only_while_fresh_and_with_the_carrier_it_handled() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let soon = t0 + Duration::from_secs(2);
        let hours = t0 + Duration::from_secs(3 * 3600);
        assert!(event_was_handled(Mark::PullWatched, t0, Some(false), true, hours), "docked for hours, then pulled");
        assert!(event_was_handled(Mark::PullWatched, t0, None, true, soon), "the link gone (an undock) is a pull");
        assert!(!event_was_handled(Mark::PullWatched, t0, Some(true), true, soon), "a down with the carrier in: a failed activation");
        assert!(!event_was_handled(Mark::PullWatched, t0, Some(false), false, soon), "its supervisor is gone, or another one runs");
        assert!(event_was_handled(Mark::ReplugHandled, t0, Some(true), true, soon));
        assert!(!event_was_handled(Mark::ReplugHandled, t0, Some(false), true, soon), "pulled again since");
        assert!(!event_was_handled(Mark::ReplugHandled, t0, Some(true), true, t0 + HANDLED_FOR + Duration::from_secs(1)), "stale");
        assert!(!event_was_handled(Mark::ReplugHandled, t0, Some(true), true, t0 - Duration::from_secs(1)), "a clock gone back");
    }

    #[test]
    fn a_replug_is_overdue_after_the_dhcp_timeout_and_the_margin() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let timeout = dhcp_timeout(Some(10));
        assert_eq!(replug_overdue_in(t0, t0, true, timeout), Duration::from_secs(15));
        assert_eq!(replug_overdue_in(t0, t0 + Duration::from_secs(14), true, timeout), Duration::from_secs(1));
        assert_eq!(replug_overdue_in(t0, t0 + Duration::from_secs(15), true, timeout), Duration::ZERO);
        // A clock that went back counts as no time waited.
        assert_eq!(replug_overdue_in(t0, t0 - Duration::from_secs(5), true, timeout), Duration::from_secs(15));
        assert_eq!(dhcp_timeout(Some(0)), NM_DEFAULT_DHCP_TIMEOUT);
        assert_eq!(dhcp_timeout(None), NM_DEFAULT_DHCP_TIMEOUT);
    }

    #[test]
    fn a_replug_nothing_activates_for_is_overdue_soon_whatever_the_dhcp_timeout() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let infinite = dhcp_timeout(Some(i32::MAX));
        assert_eq!(replug_overdue_in(t0, t0, false, infinite), ACTIVATION_START_WITHIN);
        assert_eq!(replug_overdue_in(t0, t0 + Duration::from_secs(2), false, infinite), ACTIVATION_START_WITHIN - Duration::from_secs(2));
        assert_eq!(replug_overdue_in(t0, t0 + ACTIVATION_START_WITHIN, false, infinite), Duration::ZERO);
        // An activation that started, failed and is not retried (yet): overdue at once.
        assert_eq!(replug_overdue_in(t0, t0 + Duration::from_secs(45), false, infinite), Duration::ZERO);
        assert!(replug_overdue_in(t0, t0 + Duration::from_secs(45), true, infinite) > Duration::from_secs(3600));
    }
}
