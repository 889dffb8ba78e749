//! Everything that talks to C: libnm (through bindgen), rtnetlink, flock.
//!
//! This is the only module allowed to use `unsafe`. What it exports is a small
//! safe API; pointers never leave it.

pub mod libnm;
pub mod lock;
pub mod netlink;
pub mod paths;
pub mod settings;

/// CLOCK_BOOTTIME in ms: NetworkManager's clock for the times it reports (a Wi-Fi device's last scan).
pub fn boottime_ms() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill; CLOCK_BOOTTIME exists on every Linux NetworkManager runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// Whether this process runs with root's effective user id.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
