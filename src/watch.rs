//! The carrier watcher's policy, for stock NetworkManager: while the backup
//! link carries the wired MAC, the moment the wired link's carrier returns,
//! the backup leaves the LAN. Pure: link reports and elapsed time in, a step
//! out; `nm-handover-watch` does the netlink I/O.
//!
//! Why: on re-plug, stock NM starts the wired DHCP client within tens of
//! milliseconds of the carrier, while the backup still sends from the same
//! MAC. The server's reply goes to that MAC, and the bridge (a switch plus an
//! access point alike) delivers it to the port that last sent from it: the
//! backup's. The wired client misses its ACK and retries 2 s later or falls
//! back to DISCOVER. Patched NM dispatches `link-up` and waits for it
//! instead; this watcher races NM for the same moment.

use std::time::Duration;

pub use crate::sys::netlink::LinkReport;

/// What the watcher does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Wait,
    /// Set the backup link down and give it its own MAC back, then stop.
    TakeBackupOff,
    /// Stop watching, for this reason.
    Stop(&'static str),
}

/// How long the watcher waits for the backup to take the wired MAC (NM's
/// activation of the backup: a Wi-Fi scan, association, the handshake), how
/// long the backup must be without it before the handover counts as ended,
/// and how long the watcher may live at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub activation: Duration,
    pub ended: Duration,
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        // NM gives up on a Wi-Fi activation after 45-90 s. While it
        // associates, NM and wpa_supplicant change a Wi-Fi station's MAC more
        // than once (measured in the Wi-Fi VM: the wired MAC, then another,
        // then the wired MAC again), so one change does not end the watch.
        // A handover longer than a working day falls back to the hand-back
        // without the watcher.
        Limits { activation: Duration::from_secs(120), ended: Duration::from_secs(15), lifetime: Duration::from_secs(24 * 3600) }
    }
}

#[derive(Debug)]
pub struct Watch {
    /// The wired link's index; none while it is gone (undocked): an Ethernet
    /// link that appears with its name or the wired MAC is the wired link again.
    wired: Option<i32>,
    wired_name: [u8; 16],
    backup: i32,
    wired_mac: [u8; 6],
    limits: Limits,
    wired_carrier: bool,
    backup_has_wired_mac: bool,
    backup_had_wired_mac: bool,
    /// Since when (elapsed) the backup is without the wired MAC it had.
    without_wired_mac_since: Option<Duration>,
}

impl Watch {
    pub fn new(wired: Option<i32>, wired_name: &str, backup: i32, wired_mac: [u8; 6], limits: Limits) -> Watch {
        Watch {
            wired,
            wired_name: LinkReport::name_bytes(wired_name),
            backup,
            wired_mac,
            limits,
            wired_carrier: false,
            backup_has_wired_mac: false,
            backup_had_wired_mac: false,
            without_wired_mac_since: None,
        }
    }

    /// The wired link's index now, if it is there.
    pub fn wired(&self) -> Option<i32> {
        self.wired
    }

    /// A report, `elapsed` since the start.
    pub fn on_link(&mut self, report: LinkReport, elapsed: Duration) -> Step {
        match report {
            LinkReport::Removed { index } if index == self.backup => return Step::Stop("the backup link was removed"),
            // Undocked: the re-dock creates it anew, and is a re-plug.
            LinkReport::Removed { index } if Some(index) == self.wired => {
                self.wired = None;
                self.wired_carrier = false;
                return Step::Wait;
            }
            LinkReport::Removed { .. } => return Step::Wait,
            // By its name, as the pair records the wired device, or by the
            // wired MAC (a dock's NIC that comes back under another name, its
            // profile bound by MAC, which the handover follows too), and only
            // an Ethernet link, never one a user could have NetworkManager
            // create under that name (a dummy, a bridge).
            LinkReport::Present { index, name, mac, ethernet: true, .. }
                if self.wired.is_none() && index != self.backup && (name == self.wired_name || mac == Some(self.wired_mac)) =>
            {
                self.wired = Some(index);
                return self.on_link(report, elapsed);
            }
            LinkReport::Present { index, mac, .. } if index == self.backup => {
                self.backup_has_wired_mac = mac == Some(self.wired_mac);
                self.backup_had_wired_mac |= self.backup_has_wired_mac;
                self.without_wired_mac_since = match (self.backup_has_wired_mac, self.without_wired_mac_since) {
                    (true, _) => None,
                    (false, Some(since)) => Some(since),
                    (false, None) => self.backup_had_wired_mac.then_some(elapsed),
                };
            }
            LinkReport::Present { index, carrier, .. } if Some(index) == self.wired => self.wired_carrier = carrier,
            LinkReport::Present { .. } => return Step::Wait,
        }
        // The backup may still be activating when the carrier returns; it is
        // taken off as soon as it carries the wired MAC, as NM's own
        // hand-back would do moments later.
        if self.wired_carrier && self.backup_has_wired_mac {
            Step::TakeBackupOff
        } else {
            Step::Wait
        }
    }

    /// Called when no report came for a while; `elapsed` since the start.
    pub fn on_time(&self, elapsed: Duration) -> Step {
        if elapsed >= self.limits.lifetime {
            Step::Stop("lifetime limit reached; the hand-back runs without the watcher")
        } else if self.without_wired_mac_since.is_some_and(|since| elapsed >= since + self.limits.ended) {
            Step::Stop("the backup no longer carries the wired MAC: the handover ended")
        } else if !self.backup_had_wired_mac && elapsed >= self.limits.activation {
            Step::Stop("the backup never carried the wired MAC (its activation did not happen)")
        } else {
            Step::Wait
        }
    }

    /// How long to wait for the next report before [`Watch::on_time`] is due.
    pub fn next_deadline(&self, elapsed: Duration) -> Duration {
        let mut until = if self.backup_had_wired_mac { self.limits.lifetime } else { self.limits.activation.min(self.limits.lifetime) };
        if let Some(since) = self.without_wired_mac_since {
            until = until.min(since + self.limits.ended);
        }
        until.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIRED: i32 = 2;
    const BACKUP: i32 = 3;
    const WIRED_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OWN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const LIMITS: Limits = Limits { activation: Duration::from_secs(10), ended: Duration::from_secs(5), lifetime: Duration::from_secs(100) };
    const T0: Duration = Duration::ZERO;

    fn link(index: i32, carrier: bool, mac: [u8; 6], name: &str) -> LinkReport {
        LinkReport::Present { index, carrier, mac: Some(mac), name: LinkReport::name_bytes(name), ethernet: true }
    }

    fn wired(carrier: bool) -> LinkReport {
        link(WIRED, carrier, WIRED_MAC, "eth0")
    }

    fn backup(mac: [u8; 6]) -> LinkReport {
        link(BACKUP, true, mac, "wlan0")
    }

    fn watch() -> Watch {
        Watch::new(Some(WIRED), "eth0", BACKUP, WIRED_MAC, LIMITS)
    }

    #[test]
    fn carrier_return_takes_the_backup_off_once_it_carries_the_wired_mac() {
        let mut w = watch();
        assert_eq!(w.on_link(backup(OWN_MAC), T0), Step::Wait);
        assert_eq!(w.on_link(wired(false), T0), Step::Wait);
        assert_eq!(w.on_link(backup(WIRED_MAC), T0), Step::Wait);
        assert_eq!(w.on_link(wired(false), T0), Step::Wait);
        assert_eq!(w.on_link(wired(true), T0), Step::TakeBackupOff);
    }

    #[test]
    fn a_backup_cloning_the_mac_after_the_carrier_returned_is_taken_off_too() {
        let mut w = watch();
        assert_eq!(w.on_link(backup(OWN_MAC), T0), Step::Wait);
        assert_eq!(w.on_link(wired(true), T0), Step::Wait);
        assert_eq!(w.on_link(backup(WIRED_MAC), T0), Step::TakeBackupOff);
    }

    #[test]
    fn the_watch_ends_with_the_handover_or_either_link() {
        // The handover ends when the backup has been without the wired MAC
        // for `ended`; a shorter change (a Wi-Fi association) does not end it.
        let mut w = watch();
        let at = Duration::from_secs;
        w.on_link(backup(WIRED_MAC), at(1));
        assert_eq!(w.on_link(backup(OWN_MAC), at(2)), Step::Wait);
        assert_eq!(w.next_deadline(at(3)), at(4));
        assert_eq!(w.on_time(at(6)), Step::Wait);
        assert_eq!(w.on_link(backup(WIRED_MAC), at(6)), Step::Wait);
        assert_eq!(w.on_time(at(8)), Step::Wait);
        assert_eq!(w.on_link(backup(OWN_MAC), at(9)), Step::Wait);
        assert!(matches!(w.on_time(at(14)), Step::Stop(why) if why.contains("handover ended")));
        let mut w = watch();
        assert!(matches!(w.on_link(LinkReport::Removed { index: BACKUP }, T0), Step::Stop(why) if why.contains("backup")));
        // Other links are none of its business while the wired link is there.
        let mut w = watch();
        assert_eq!(w.on_link(LinkReport::Removed { index: 9 }, T0), Step::Wait);
        assert_eq!(w.on_link(link(9, true, WIRED_MAC, "eth9"), T0), Step::Wait);
    }

    #[test]
    fn a_wired_link_removed_and_created_again_is_a_replug() {
        // Undock, then re-dock: the link under its name, at another index.
        let mut w = watch();
        w.on_link(backup(WIRED_MAC), T0);
        assert_eq!(w.on_link(LinkReport::Removed { index: WIRED }, T0), Step::Wait);
        // Other links are not taken for it: another name with another MAC,
        // or a software link given its name.
        assert_eq!(w.on_link(link(6, true, OWN_MAC, "enx020000000002"), T0), Step::Wait);
        let dummy = LinkReport::Present { index: 8, carrier: true, mac: Some(WIRED_MAC), name: LinkReport::name_bytes("eth0"), ethernet: false };
        assert_eq!(w.on_link(dummy, T0), Step::Wait);
        assert_eq!(w.on_link(link(7, false, [2, 0, 0, 0, 0, 9], "eth0"), T0), Step::Wait);
        assert_eq!(w.on_link(link(7, true, [2, 0, 0, 0, 0, 9], "eth0"), T0), Step::TakeBackupOff);
        // Re-docked under another name (the profile bound by MAC): the wired MAC tells.
        let mut w = watch();
        w.on_link(backup(WIRED_MAC), T0);
        w.on_link(LinkReport::Removed { index: WIRED }, T0);
        assert_eq!(w.on_link(link(6, false, WIRED_MAC, "enx020000000001"), T0), Step::Wait);
        assert_eq!(w.wired(), Some(6));
        assert_eq!(w.on_link(link(6, true, WIRED_MAC, "enx020000000001"), T0), Step::TakeBackupOff);
        // The watcher started while the wired link was already gone (the undock was the pull).
        let mut w = Watch::new(None, "eth0", BACKUP, WIRED_MAC, LIMITS);
        w.on_link(backup(WIRED_MAC), T0);
        assert_eq!(w.on_link(link(7, true, [2, 0, 0, 0, 0, 9], "eth0"), T0), Step::TakeBackupOff);
    }

    #[test]
    fn the_lifetime_is_bounded_before_and_after_the_activation() {
        let w = watch();
        assert_eq!(w.on_time(Duration::from_secs(9)), Step::Wait);
        assert_eq!(w.next_deadline(Duration::from_secs(4)), Duration::from_secs(6));
        assert!(matches!(w.on_time(Duration::from_secs(10)), Step::Stop(why) if why.contains("never carried")));
        let mut w = watch();
        w.on_link(backup(WIRED_MAC), T0);
        assert_eq!(w.on_time(Duration::from_secs(50)), Step::Wait);
        assert_eq!(w.next_deadline(Duration::from_secs(50)), Duration::from_secs(50));
        assert!(matches!(w.on_time(Duration::from_secs(100)), Step::Stop(why) if why.contains("lifetime")));
    }

    /// Every sequence of up to five reports: the backup is taken off exactly
    /// when the wired carrier is up and the backup carries the wired MAC;
    /// only the backup's removal stops the watch at once (the wired link's
    /// is an undock: the link may come back).
    #[test]
    fn every_short_sequence_of_reports() {
        let reports =
            [wired(false), wired(true), backup(OWN_MAC), backup(WIRED_MAC), LinkReport::Removed { index: WIRED }, LinkReport::Removed { index: BACKUP }];
        let n = reports.len();
        for len in 1..=5u32 {
            for code in 0..n.pow(len) {
                let seq: Vec<LinkReport> = (0..len).map(|i| reports[code / n.pow(i) % n]).collect();
                let mut w = watch();
                let (mut carrier, mut has) = (false, false);
                for report in &seq {
                    let step = w.on_link(*report, T0);
                    match *report {
                        LinkReport::Removed { index } if index == BACKUP => assert!(matches!(step, Step::Stop(_)), "{seq:?}"),
                        LinkReport::Removed { .. } => {
                            carrier = false;
                            assert_eq!(step, Step::Wait, "{seq:?}");
                        }
                        LinkReport::Present { index, carrier: c, mac, .. } => {
                            if index == WIRED {
                                carrier = c;
                            } else {
                                has = mac == Some(WIRED_MAC);
                            }
                            // A MAC change alone never stops the watch (only time does).
                            assert!(!matches!(step, Step::Stop(_)), "{seq:?}");
                            assert_eq!(step == Step::TakeBackupOff, carrier && has, "{seq:?}");
                        }
                    }
                    if step != Step::Wait {
                        break;
                    }
                }
            }
        }
    }
}
