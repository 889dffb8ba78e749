//! Every file nm-handover reads or writes outside NetworkManager's profiles,
//! in one place: its runtime state under [`RUN_DIR`] (tmpfs: none of it
//! outlives a boot; files of links are named by interface index, which the
//! kernel never reuses for another link while the system runs), the records
//! only root may write, and NetworkManager's own directories it touches.

use std::path::{Path, PathBuf};

/// nm-handover's runtime directory (created 0755 by the first writer).
pub const RUN_DIR: &str = "/run/nm-handover";

/// The handover lock: one handover at a time on this machine.
pub const LOCK_PATH: &str = "/run/nm-handover/handover.lock";

/// Written by `nm-handover-dispatch` the first time it is run for a
/// `link-up` event after boot: the proof that this NetworkManager
/// dispatches the action. No `VersionInfo` capability bit is read: upstream
/// has not allocated one, and a backport that set one could collide with a
/// later upstream meaning of the same bit.
pub const LINK_UP_SEEN_PATH: &str = "/run/nm-handover/link-up-seen";

/// The lock a pair's carrier watcher holds while it runs (it names its PID).
pub fn watcher_lock_path(wired_uuid: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("watch-{wired_uuid}.pid"))
}

/// The PID of the pair's carrier watcher as its starter wrote it, before the
/// watcher holds [`watcher_lock_path`].
pub fn watcher_started_path(wired_uuid: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("watch-{wired_uuid}.started"))
}

/// The lock the supervisor holds while it runs (one per machine).
pub fn supervisor_lock_path() -> PathBuf {
    Path::new(RUN_DIR).join("supervise.pid")
}

/// The lock the supervisor takes once it watches NetworkManager (its first
/// reconcile done), and holds until it exits: `pair` waits for it.
pub fn supervisor_ready_path() -> PathBuf {
    Path::new(RUN_DIR).join("supervise.ready")
}

/// A backup link nm-handover set down itself (see `crate::offlan`).
pub fn off_lan_path(index: i32) -> PathBuf {
    Path::new(RUN_DIR).join(format!("off-lan-{index}"))
}

/// One of `crate::marks`' marks of a link: `kind` names the mark.
pub fn link_mark_path(kind: &str, index: i32) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{kind}-{index}"))
}

/// A per-link kernel setting (`family`: ipv4 or ipv6).
pub fn link_sysctl_path(family: &str, iface: &str, key: &str) -> PathBuf {
    Path::new("/proc/sys/net").join(family).join("conf").join(iface).join(key)
}

/// A per-link kernel setting's value before the warm standby changed it.
pub fn saved_sysctl_path(family: &str, iface: &str, key: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("sysctl-{family}-{iface}-{key}"))
}

/// How the names of [`wired_lan_path`]'s files begin.
pub const WIRED_LAN_PREFIX: &str = "lan-";

/// The network the pair's wired link last had its DHCPv4 lease from (see `crate::lan`).
pub fn wired_lan_path(wired_uuid: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{WIRED_LAN_PREFIX}{wired_uuid}"))
}

/// Where `pair` records the pairs root made: under /etc/NetworkManager,
/// whose tree only root can write (see `crate::trust`).
pub const RECORD_DIR: &str = "/etc/NetworkManager/nm-handover";

/// NetworkManager's configuration snippets (the carrier-wait `pair` writes).
pub const NM_CONF_DIR: &str = "/etc/NetworkManager/conf.d";

/// NetworkManager's state directory, where both DHCP clients' lease files live.
pub const NM_STATE_DIR: &str = "/var/lib/NetworkManager";
