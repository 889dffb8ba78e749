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

/// When (CLOCK_BOOTTIME ms) the process `pid` started: `/proc/PID/stat`'s
/// start time, counted since boot with the time suspended (the kernel's
/// `start_boottime`).
pub fn process_started_boottime_ms(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: plain getter.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    start_ticks(&stat).filter(|_| ticks_per_second > 0).map(|ticks| (ticks as i64).saturating_mul(1000) / ticks_per_second as i64)
}

/// Pure: the start time field (22nd) of a `/proc/PID/stat` line, in clock
/// ticks; counted after the command's closing parenthesis, which the
/// command itself may contain.
fn start_ticks(stat: &str) -> Option<u64> {
    let (_, after_command) = stat.rsplit_once(')')?;
    // Fields 3 on follow the command (field 2): the start time is the 20th of them.
    after_command.split_whitespace().nth(19)?.parse().ok()
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

/// Whether a UDP socket of this network namespace is bound to
/// `address`:`port` and connected to a peer's `peer_port` (`/proc/net/udp`).
pub fn udp_socket_connected(address: std::net::Ipv4Addr, port: u16, peer_port: u16) -> std::io::Result<bool> {
    Ok(udp_table_has(&std::fs::read_to_string("/proc/net/udp")?, address, port, peer_port))
}

/// Pure: whether a `/proc/net/udp` table lists a socket bound to
/// `address`:`port` and connected to `peer_port` (the kernel prints an
/// address as the u32 it stores, in network byte order, in hex).
fn udp_table_has(table: &str, address: std::net::Ipv4Addr, port: u16, peer_port: u16) -> bool {
    let local = format!("{:08X}:{port:04X}", u32::from_ne_bytes(address.octets()));
    let peer_suffix = format!(":{peer_port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next().is_some_and(|l| l.eq_ignore_ascii_case(&local)) && fields.next().is_some_and(|r| r.ends_with(&peer_suffix) && !r.starts_with("00000000:"))
    })
}

/// Whether this process runs with root's effective user id.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_udp_socket_is_found_by_its_bound_address_and_its_peer() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     \x20 131: 960012C6:0044 010012C6:0043 01 00000000:00000000 00:00000000 00000000     0        0 23891 2 0000000000000000 0\n\
                     \x20 132: 970012C6:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 23892 2 0000000000000000 0\n\
                     \x20 140: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 23001 2 0000000000000000 0\n";
        let leased: std::net::Ipv4Addr = "198.18.0.150".parse().unwrap();
        let found = |address: std::net::Ipv4Addr, port, peer| udp_table_has(table, address, port, peer);
        assert_eq!(found(leased, 68, 67), cfg!(target_endian = "little"), "the leased address's client socket, connected to the server");
        assert!(!found(leased, 67, 67), "another port");
        assert!(!found(leased, 68, 68), "another peer port");
        assert!(!found("198.18.0.151".parse().unwrap(), 68, 67), "bound, not yet connected");
        assert!(!found("198.18.0.152".parse().unwrap(), 68, 67), "another address");
        assert!(!found(std::net::Ipv4Addr::UNSPECIFIED, 68, 67), "bound to any address, connected to none");
        assert!(!udp_table_has("  sl  local_address\n", leased, 68, 67), "an empty table");
        assert!(udp_socket_connected(leased, 68, 67).is_ok(), "this namespace's table is readable");
    }

    #[test]
    fn the_start_time_is_read_after_the_command_whatever_it_holds() {
        let line = "812 (Network) Man) S 1 812 812 0 -1 4194560 2345 0 12 0 30 12 0 0 20 0 4 0 123456 300000000 4000 18446744073709551615\n";
        assert_eq!(start_ticks(line), Some(123456));
        assert_eq!(start_ticks("812 (nm) S 1 2"), None, "cut short");
        assert_eq!(start_ticks("no parenthesis"), None);
        let own = process_started_boottime_ms(std::process::id()).expect("this process's start");
        assert!((0..=boottime_ms()).contains(&own), "{own}");
    }
}
