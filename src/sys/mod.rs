//! Everything that talks to C: libnm (through bindgen), rtnetlink, flock.
//!
//! This is the only module allowed to use `unsafe`. What it exports is a small
//! safe API; pointers never leave it.

pub mod libnm;
pub mod lock;
pub mod netlink;
pub mod paths;
pub mod settings;
pub mod stderr;

/// CLOCK_BOOTTIME in ms: NetworkManager's clock for the times it reports (a Wi-Fi device's last scan).
pub fn boottime_ms() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill; CLOCK_BOOTTIME exists on every Linux NetworkManager runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// The nice value of what runs between events (the supervisor) while it starts.
pub const BACKGROUND_NICE: i32 = 10;

/// Gives this process [`BACKGROUND_NICE`]: the supervisor starts when
/// NetworkManager and wpa_supplicant are busiest (a boot), and loading its
/// libnm client must not take the CPU from them (in the Wi-Fi VM, at nice 0,
/// a boot without the cable reached the Wi-Fi's address 1.9 s after plain
/// NetworkManager, most of it wpa_supplicant starting later). A failure
/// leaves the priority as it was.
pub fn lower_priority() -> std::io::Result<()> {
    set_thread_nice(BACKGROUND_NICE)
}

fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority on this thread (Linux's nice is per thread); no memory is involved.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives every thread of this process at a lower priority NetworkManager's
/// own (nice 0): the supervisor's once it has started (see
/// `crate::supervise::supervise`), GLib's D-Bus thread, which reads what
/// NetworkManager reports, included. Threads ahead of it (the racing ones)
/// keep theirs.
pub fn normal_priority() -> std::io::Result<()> {
    for task in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = task?.file_name().to_str().and_then(|t| t.parse::<libc::id_t>().ok()) else { continue };
        // SAFETY: getpriority/setpriority on a thread of this process; no memory is involved.
        // (An error returns -1, not above 0: a thread gone meanwhile is skipped.)
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        if nice > 0 && unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 0) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// The nice value of what races NetworkManager's DHCP client at a re-plug.
pub const RACING_NICE: i32 = -10;

/// Gives this thread [`RACING_NICE`]: the carrier watcher (which the
/// supervisor may start, and which would inherit its [`BACKGROUND_NICE`])
/// and the standby's fast path must take the backup off the LAN within the
/// ~4 ms between the carrier's return and the wired DHCP client's first
/// packet; ahead of NetworkManager (nice 0) when they share a CPU, a busy
/// machine does not make them lose. They sleep on a netlink socket between
/// two reports and act in well under a millisecond.
pub fn racing_priority() -> std::io::Result<()> {
    set_thread_nice(RACING_NICE)
}

/// Whether this process runs with root's effective user id.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
