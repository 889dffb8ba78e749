//! Observing the lab from the outside: a live TCP session, address and link
//! changes with timestamps, and a DHCPRELEASE sent on a client's behalf.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::lab::{epoch_secs, log_stamp, Lab, MPTCP_PORT, SERVER, SERVER6, TCP_PORT};

/// Moves the calling thread into a network namespace (only this thread).
fn enter_netns(ns: &str) -> std::io::Result<()> {
    let file = File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns on a valid namespace fd affects only the calling thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What a TCP session saw.
#[derive(Debug, Clone, Default)]
pub struct TcpReport {
    pub round_trips: u64,
    /// The longest time without a completed round trip.
    pub longest_stall: Duration,
    /// A reset, EOF or other error ended the session.
    pub error: Option<String>,
    /// The local address the session was opened from.
    pub local: Option<SocketAddrV4>,
    /// `round_trips` when the stall was last reset (the start of a handover).
    pub round_trips_at_reset: u64,
}

impl TcpReport {
    /// No error, and round trips completed since the last handover began.
    pub fn survived(&self) -> bool {
        self.error.is_none() && self.round_trips > self.round_trips_at_reset
    }
}

/// A steady request/response stream from the host namespace to the LAN's echo
/// peer: 32 bytes every 20 ms, each answered before the next is sent.
pub struct TcpSession {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<(TcpReport, Instant)>>,
    thread: Option<JoinHandle<()>>,
}

/// A TCP connection to the LAN's IPv6 echo peer from `local` (the kernel
/// would pick the source address by its own rules; the tests need each of
/// the link's addresses to carry a session).
fn connect_v6_from(local: Ipv6Addr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: Ipv6Addr, port: u16| libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: ip.octets() },
        sin6_scope_id: 0,
    };
    let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: plain socket(2); the descriptor is owned by the TcpStream from here on.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (from, to) = (sockaddr(local, 0), sockaddr(SERVER6, TCP_PORT));
    // SAFETY: valid descriptor and addresses of the stated length.
    if unsafe { libc::bind(fd, &from as *const _ as *const libc::sockaddr, len) } != 0
        || unsafe { libc::connect(fd, &to as *const _ as *const libc::sockaddr, len) } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// An MPTCP connection to the LAN's MPTCP echo peer: a TCP stream to the
/// program, subflows over every address the kernel's path manager has an
/// endpoint for.
fn connect_mptcp() -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: MPTCP_PORT.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(SERVER).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: plain socket(2); the descriptor is owned by the TcpStream from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, libc::IPPROTO_MPTCP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid descriptor and an address of the stated length.
    if unsafe { libc::connect(fd, &to as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

impl TcpSession {
    /// An MPTCP session to the LAN's MPTCP echo peer ([`LabConfig::mptcp_peer`]).
    pub fn open_mptcp(lab: &Lab) -> TcpSession {
        Self::start(lab, connect_mptcp)
    }

    /// A session to the IPv4 echo peer.
    pub fn open(lab: &Lab) -> TcpSession {
        Self::start(lab, || TcpStream::connect_timeout(&SocketAddrV4::new(SERVER, TCP_PORT).into(), Duration::from_secs(5)))
    }

    /// A session to the IPv6 echo peer from the host's address `local`.
    pub fn open_v6_from(lab: &Lab, local: Ipv6Addr) -> TcpSession {
        Self::start(lab, move || connect_v6_from(local))
    }

    fn start(lab: &Lab, connect: impl FnOnce() -> std::io::Result<TcpStream> + Send + 'static) -> TcpSession {
        let host = lab.host.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new((TcpReport::default(), Instant::now())));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, state) = (stop.clone(), state.clone());
            thread::spawn(move || {
                let opened = enter_netns(&host).and_then(|()| {
                    let stream = connect()?;
                    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
                    stream.set_nodelay(true)?;
                    Ok(stream)
                });
                let mut stream = match opened {
                    Ok(stream) => {
                        let local = match stream.local_addr() {
                            Ok(std::net::SocketAddr::V4(a)) => Some(a),
                            _ => None,
                        };
                        state.lock().unwrap().0.local = local;
                        let _ = ready_tx.send(Ok(()));
                        stream
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let mut seq: u64 = 0;
                // The last completed round trip, or the last reset (`state.1`):
                // a stall is measured from the later of the two.
                let since_last_ok = |state: &(TcpReport, Instant)| state.1.elapsed();
                let fail = |why: String| state.lock().unwrap().0.error = Some(why);
                'session: while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    let request = format!("{seq:031}\n");
                    if let Err(e) = stream.write_all(request.as_bytes()) {
                        fail(format!("write: {e}"));
                        break;
                    }
                    let mut answer = [0u8; 32];
                    let mut got = 0;
                    while got < answer.len() {
                        match stream.read(&mut answer[got..]) {
                            Ok(0) => {
                                fail("the peer closed the connection".into());
                                break 'session;
                            }
                            Ok(n) => got += n,
                            // EINTR: a signal reached this thread (the bench's children exit), not the connection.
                            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {
                                let mut s = state.lock().unwrap();
                                s.0.longest_stall = s.0.longest_stall.max(since_last_ok(&s));
                                if stop.load(Ordering::SeqCst) {
                                    break 'session;
                                }
                            }
                            Err(e) => {
                                fail(format!("read: {e}"));
                                break 'session;
                            }
                        }
                    }
                    if answer != request.as_bytes() {
                        fail(format!("echo mismatch at request {seq}"));
                        break;
                    }
                    let mut s = state.lock().unwrap();
                    s.0.longest_stall = s.0.longest_stall.max(since_last_ok(&s));
                    s.0.round_trips += 1;
                    s.1 = Instant::now();
                    drop(s);
                    thread::sleep(Duration::from_millis(20));
                }
            })
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("TCP session to the echo peer (port {TCP_PORT}) failed to open: {e}"),
            Err(_) => panic!("TCP session to the echo peer (port {TCP_PORT}) did not open within 10 s"),
        }
        TcpSession { stop, state, thread: Some(thread) }
    }

    pub fn report(&self) -> TcpReport {
        self.state.lock().unwrap().0.clone()
    }

    pub fn round_trips(&self) -> u64 {
        self.state.lock().unwrap().0.round_trips
    }

    /// Waits until `n` more round trips completed after now (or the session failed).
    pub fn wait_for_traffic(&self, n: u64, timeout: Duration) -> bool {
        let start = self.round_trips();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let r = self.report();
            if r.error.is_some() {
                return false;
            }
            if r.round_trips >= start + n {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Starts measuring one handover: the longest stall from now on, and
    /// whether traffic flows again after it (a stall that began earlier
    /// counts from now, so a dead session does not add up across handovers).
    pub fn reset_stall(&self) {
        let mut s = self.state.lock().unwrap();
        s.0.longest_stall = Duration::ZERO;
        s.0.round_trips_at_reset = s.0.round_trips;
        s.1 = Instant::now();
    }

    pub fn close(mut self) -> TcpReport {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.report()
    }
}

impl Drop for TcpSession {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    AddressAdded {
        iface: String,
        addr: Ipv4Addr,
    },
    AddressRemoved {
        iface: String,
        addr: Ipv4Addr,
    },
    /// The administrative state (IFF_UP) of a link changed.
    LinkAdmin {
        iface: String,
        up: bool,
    },
    /// The carrier (IFF_LOWER_UP) of a link changed.
    Carrier {
        iface: String,
        up: bool,
    },
}

/// How long after a poll saw a change its event may still be on its way
/// through `ip monitor` and the reader thread.
const MONITOR_LAG: Duration = Duration::from_secs(2);

/// `ip monitor address link` in the host namespace, each line stamped when read.
pub struct NetMonitor {
    /// One instant on both clocks, to put monitor events on the wall clock of packet captures.
    epoch: (Instant, SystemTime),
    child: Child,
    events: Arc<Mutex<Vec<(Instant, NetEvent)>>>,
    reader: Option<JoinHandle<()>>,
}

impl NetMonitor {
    pub fn start(lab: &Lab) -> NetMonitor {
        let mut child = Command::new("ip")
            .args(["-n", &lab.host, "-o", "-4", "monitor", "address", "link"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor");
        let stdout = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let events = events.clone();
            thread::spawn(move || {
                let mut flags = Default::default();
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let now = Instant::now();
                    let parsed = parse_monitor_line(&line, &mut flags);
                    events.lock().unwrap().extend(parsed.into_iter().map(|ev| (now, ev)));
                }
            })
        };
        // ip monitor subscribes before printing anything; give it a moment.
        thread::sleep(Duration::from_millis(100));
        NetMonitor { epoch: (Instant::now(), SystemTime::now()), child, events, reader: Some(reader) }
    }

    pub fn events_since(&self, since: Instant) -> Vec<(Instant, NetEvent)> {
        self.events.lock().unwrap().iter().filter(|(t, _)| *t >= since).cloned().collect()
    }

    /// After a re-plug at `plug`: how long `addr` was on the LAN through both
    /// links at once, from the moment `wired` got it until `backup` lost it or
    /// went down. Zero when the backup was off the LAN before the wired link
    /// had the address; `None` when the wired link never got it.
    pub fn double_address_window(&self, plug: Instant, addr: Ipv4Addr, wired: &str, backup: &str) -> Option<Duration> {
        let events = self.events_since(plug);
        let wired_got = events.iter().find_map(|(t, e)| match e {
            NetEvent::AddressAdded { iface, addr: a } if iface == wired && *a == addr => Some(*t),
            _ => None,
        })?;
        let backup_off = self.backup_off_at(plug, addr, backup);
        match backup_off {
            Some(off) => Some(off.saturating_duration_since(wired_got)),
            // Never taken off the LAN: the window is still open.
            None => Some(Instant::now().saturating_duration_since(wired_got)),
        }
    }

    pub fn wall_clock(&self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.epoch.0) {
            Some(after) => self.epoch.1 + after,
            None => self.epoch.1 - self.epoch.0.duration_since(t),
        }
    }

    /// When `backup` first went off the LAN after `since`: link set down or `addr` removed.
    pub fn backup_off_at(&self, since: Instant, addr: Ipv4Addr, backup: &str) -> Option<Instant> {
        self.events_since(since).into_iter().find_map(|(t, e)| match e {
            NetEvent::AddressRemoved { iface, addr: a } if iface == backup && a == addr => Some(t),
            NetEvent::LinkAdmin { iface, up: false } if iface == backup => Some(t),
            _ => None,
        })
    }

    /// When `iface` first reported carrier after `since`.
    pub fn carrier_up_at(&self, since: Instant, iface: &str) -> Option<Instant> {
        self.events_since(since).into_iter().find_map(|(t, e)| match e {
            NetEvent::Carrier { iface: i, up: true } if i == iface => Some(t),
            _ => None,
        })
    }

    /// When `iface` first got `addr` after `since`. Callers ask once a poll
    /// of the namespace has seen the address, which can be before this
    /// monitor's reader has read the event (CI saw it once): so it waits up
    /// to [`MONITOR_LAG`] for the event before saying there was none.
    pub fn address_added_at(&self, since: Instant, iface: &str, addr: Ipv4Addr) -> Option<Instant> {
        let find = || {
            self.events_since(since).into_iter().find_map(|(t, e)| match e {
                NetEvent::AddressAdded { iface: i, addr: a } if i == iface && a == addr => Some(t),
                _ => None,
            })
        };
        let deadline = Instant::now() + MONITOR_LAG;
        loop {
            match find() {
                Some(t) => return Some(t),
                None if Instant::now() >= deadline => return None,
                None => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    pub fn dump(&self, since: Instant) -> String {
        self.events_since(since).iter().map(|(t, e)| format!("{:>8.3}s {e:?}", t.saturating_duration_since(since).as_secs_f64())).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for NetMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Each link's last (IFF_UP, IFF_LOWER_UP), to report changes only.
type LinkFlags = std::collections::HashMap<String, (bool, bool)>;

/// Parses one line of `ip -o -4 monitor address link`.
fn parse_monitor_line(line: &str, seen: &mut LinkFlags) -> Vec<NetEvent> {
    parse_monitor_event(line, seen).unwrap_or_default()
}

fn parse_monitor_event(line: &str, seen: &mut LinkFlags) -> Option<Vec<NetEvent>> {
    let (deleted, rest) = match line.strip_prefix("Deleted ") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let mut words = rest.split_whitespace();
    let _index = words.next()?.strip_suffix(':')?;
    let iface = words.next()?.trim_end_matches(':');
    let iface = iface.split('@').next()?.to_owned();
    let next = words.next()?;
    if next == "inet" {
        let addr = words.next()?.split('/').next()?.parse().ok()?;
        return Some(vec![if deleted { NetEvent::AddressRemoved { iface, addr } } else { NetEvent::AddressAdded { iface, addr } }]);
    }
    let flags = next.strip_prefix('<').and_then(|f| f.strip_suffix('>'))?;
    if deleted {
        return None;
    }
    let up = flags.split(',').any(|f| f == "UP");
    let carrier = flags.split(',').any(|f| f == "LOWER_UP");
    let before = seen.insert(iface.clone(), (up, carrier));
    let mut events = Vec::new();
    if before.map(|b| b.0) != Some(up) {
        events.push(NetEvent::LinkAdmin { iface: iface.clone(), up });
    }
    if before.map(|b| b.1) != Some(carrier) {
        events.push(NetEvent::Carrier { iface, up: carrier });
    }
    Some(events)
}

/// A ping every 5 ms from the host to the server, through whichever link
/// holds the route: the traffic of a busy user (a call, a sync client) that
/// keeps the LAN's bridge learning the backup's port for the shared MAC.
pub struct Pinger {
    child: Child,
}

impl Pinger {
    pub fn start(lab: &Lab) -> Pinger {
        let server = SERVER.to_string();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.host, "ping", "-q", "-n", "-i", "0.005", &server])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        Pinger { child }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ping every 10 ms (100 Hz) from the host to the LAN's server through
/// whichever link holds the route, each reply stamped by ping (`-D`): the
/// outage of a handover is the longest gap between replies around it, one
/// measure for every mechanism (the companion, a bond, a script).
pub struct Probe {
    child: Child,
    path: std::path::PathBuf,
}

impl Probe {
    pub fn start(lab: &Lab) -> Probe {
        let path = lab.dir.join("probe-100hz.txt");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.host, "ping", "-D", "-n", "-i", "0.01", &SERVER.to_string()])
            .stdin(Stdio::null())
            .stdout(File::create(&path).expect("probe file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        let probe = Probe { child, path };
        // Measured from its first reply on: a handover before it has no "before".
        let started = Instant::now();
        while !std::fs::read_to_string(&probe.path).unwrap_or_default().contains(" bytes from ") && started.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(20));
        }
        probe
    }

    /// Every reply so far: when it came (wall clock, s) and its round trip (ms).
    pub fn replies(&self) -> Vec<(f64, f64)> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains(" bytes from "))
            .filter_map(|l| {
                let at = log_stamp(l)?;
                let rtt = l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()?;
                Some((at, rtt))
            })
            .collect()
    }

    /// The longest time without a reply from `from` to `to`, counting from
    /// the last reply before `from`; `None` without a reply before the window
    /// and one in its last 100 ms, where the outage was not measured whole.
    pub fn longest_gap(&self, from: SystemTime, to: SystemTime) -> Option<Duration> {
        let (from, to) = (epoch_secs(from), epoch_secs(to));
        let text = std::fs::read_to_string(&self.path).ok()?;
        // "[1796479176.560123] 64 bytes from 198.18.0.1: icmp_seq=7 ttl=64 time=0.05 ms"
        let replies: Vec<f64> = text.lines().filter(|l| l.contains(" bytes from ")).filter_map(log_stamp).collect();
        let before = replies.iter().copied().rev().find(|t| *t < from)?;
        let within: Vec<f64> = std::iter::once(before).chain(replies.iter().copied().filter(|t| *t >= from && *t <= to)).collect();
        // The outage must be over by `to`: a reply in its last 100 ms.
        if within.len() < 2 || to - within[within.len() - 1] > 0.1 {
            return None;
        }
        let gap = within.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        Some(Duration::from_secs_f64(gap))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The LAN bridge's forwarding table as it changes (`bridge monitor fdb` in
/// `lan`): where the switch believes each MAC address is. A MAC moving
/// between the wired port and the access point's is what a wireless
/// controller that flags one MAC seen wired and wireless would see.
pub struct FdbMonitor {
    child: Child,
    path: std::path::PathBuf,
}

impl FdbMonitor {
    pub fn start(lab: &Lab) -> FdbMonitor {
        // (A `.log`, which a lab keeps with its logs; each change after a `Timestamp:` line.)
        let path = lab.dir.join("fdb-monitor.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.lan, "bridge", "-timestamp", "monitor", "fdb"])
            .stdin(Stdio::null())
            .stdout(File::create(&path).expect("fdb monitor file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("bridge monitor");
        FdbMonitor { child, path }
    }

    /// Where the log is now: a window's start or end for [`FdbMonitor::moves`].
    pub fn mark(&self) -> usize {
        std::fs::read_to_string(&self.path).map_or(0, |t| t.len())
    }

    /// How often `mac`'s port changed between two marks (a deletion and a
    /// learning on another port count as one move).
    pub fn moves(&self, mac: &str, from: usize, to: usize) -> usize {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mac = mac.to_ascii_lowercase();
        let port_of = |line: &str| -> Option<String> {
            let line = line.trim();
            if line.starts_with("Deleted") || !line.to_ascii_lowercase().starts_with(&mac) {
                return None;
            }
            let mut words = line.split_whitespace();
            words.find(|w| *w == "dev")?;
            words.next().map(str::to_owned)
        };
        let (before, window) = text.split_at(from.min(text.len()));
        let window = &window[..to.saturating_sub(from).min(window.len())];
        let mut port = before.lines().rev().find_map(port_of);
        let mut moves = 0;
        for now in window.lines().filter_map(port_of) {
            if port.as_ref().is_some_and(|p| *p != now) {
                moves += 1;
            }
            port = Some(now);
        }
        moves
    }
}

impl Drop for FdbMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// DHCP packets on one bridge port of the `lan` namespace (tcpdump, kernel
/// timestamps on the wall clock). Captures on "any", so that a port that is
/// down (cable pulled) is seen from the moment it comes up.
pub struct Capture {
    child: Child,
    path: std::path::PathBuf,
    port: String,
    /// Captured on the port itself (its frames only, as received), not on "any".
    on_port: bool,
}

impl Capture {
    pub fn start(lab: &Lab, port: &str) -> Capture {
        Capture::start_with(lab, port, false, "dhcp", "udp port 67 or udp port 68")
    }

    /// Every frame `mac` sends into `port` (captured on the port: "any"
    /// cannot filter on Ethernet addresses; it must be up when this starts).
    pub fn frames_from(lab: &Lab, port: &str, mac: &str) -> Capture {
        Capture::start_with(lab, port, true, "frames", &format!("ether src {mac}"))
    }

    fn start_with(lab: &Lab, port: &str, on_port: bool, what: &str, filter: &str) -> Capture {
        let path = lab.dir.join(format!("capture-{what}-{port}.txt"));
        let err_path = lab.dir.join(format!("capture-{what}-{port}.err"));
        let child = Command::new("ip")
            // --immediate-mode: each packet is written as it arrives, not when the capture buffer's timeout expires.
            .args(["netns", "exec", &lab.lan, "tcpdump", "--immediate-mode", "-i", if on_port { port } else { "any" }])
            .args(if on_port { &["-Q", "in"][..] } else { &[][..] })
            .args(["-n", "-tt", "-e", "-l", filter])
            .stdin(Stdio::null())
            .stdout(File::create(&path).expect("capture file"))
            .stderr(File::create(&err_path).expect("capture log"))
            .spawn()
            .expect("tcpdump");
        let started = Instant::now();
        while !std::fs::read_to_string(&err_path).unwrap_or_default().contains("listening on") {
            assert!(started.elapsed() < Duration::from_secs(10), "tcpdump did not start in {}", lab.lan);
            thread::sleep(Duration::from_millis(20));
        }
        Capture { child, path, port: port.to_owned(), on_port }
    }

    /// The packets `mac` sent into the port at or after `since`, with their timestamps.
    fn received_from(&self, mac: &str, since: SystemTime) -> Vec<(SystemTime, String)> {
        let since = epoch_secs(since);
        let mac = mac.to_lowercase();
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let stamp: f64 = fields.first()?.parse().ok()?;
                let matches = if self.on_port {
                    // "<stamp> <source MAC> > <destination MAC>, ethertype ..." (received only: -Q in)
                    fields.get(1).map(|m| m.to_lowercase()) == Some(mac.clone())
                } else {
                    // "<stamp> <iface> <direction> ifindex <n> <source MAC> ethertype IPv4 ..."
                    fields.get(1) == Some(&self.port.as_str())
                        // Received on the port: unicast ("In"), broadcast ("B") or multicast ("M").
                        && matches!(fields.get(2), Some(&"In" | &"B" | &"M"))
                        && fields.get(5).map(|m| m.to_lowercase()) == Some(mac.clone())
                };
                (stamp >= since && matches).then(|| (UNIX_EPOCH + Duration::from_secs_f64(stamp), line.to_owned()))
            })
            .collect()
    }

    /// The first DHCP packet that `mac` sent into the port at or after `since`, with its timestamp.
    pub fn first_dhcp_from(&self, mac: &str, since: SystemTime) -> Option<(SystemTime, String)> {
        self.received_from(mac, since).into_iter().next()
    }

    /// The last frame `mac` sent into the port between `since` and `until`.
    pub fn last_from_between(&self, mac: &str, since: SystemTime, until: SystemTime) -> Option<SystemTime> {
        self.received_from(mac, since).into_iter().map(|(t, _)| t).take_while(|t| *t <= until).last()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (ip netns exec execs tcpdump) so it flushes.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// Sends a DHCPRELEASE for `addr` as the client `mac` (with client-id
/// `01:mac` when the client sends one), from the host namespace: what NM ≥ 1.48
/// does with `ipv4.dhcp-send-release=yes`, and what a server-side lease expiry
/// amounts to. The server then considers the address free.
pub fn release_lease_at_server(lab: &Lab, addr: Ipv4Addr, mac: &str, with_client_id: bool) {
    let mac: Vec<u8> = mac.split(':').map(|b| u8::from_str_radix(b, 16).expect("MAC")).collect();
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&0x4e4d_4848u32.to_be_bytes());
    p[12..16].copy_from_slice(&addr.octets()); // ciaddr
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, 7]);
    p.extend_from_slice(&[54, 4]);
    p.extend_from_slice(&SERVER.octets());
    if with_client_id {
        p.extend_from_slice(&[61, 7, 1]);
        p.extend_from_slice(&mac);
    }
    p.push(255);
    let host = lab.host.clone();
    thread::spawn(move || {
        enter_netns(&host).expect("enter the lab's host namespace");
        let socket = UdpSocket::bind(SocketAddrV4::new(addr, 0)).expect("bind to the leased address");
        socket.send_to(&p, SocketAddrV4::new(SERVER, 67)).expect("send DHCPRELEASE");
    })
    .join()
    .expect("DHCPRELEASE thread");
}

/// Lines of a log that mention a DHCP message, for reports.
pub fn dhcp_lines(log: &str) -> Vec<String> {
    log.lines().filter(|l| l.contains("DHCP")).map(str::to_owned).collect()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let mut lines: VecDeque<&str> = VecDeque::new();
    for l in text.lines() {
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(l);
    }
    lines.into_iter().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_monitor_lines() {
        let mut seen = Default::default();
        assert_eq!(
            parse_monitor_line(
                "3: wired0    inet 198.18.0.100/24 brd 198.18.0.255 scope global dynamic noprefixroute wired0\\       valid_lft 600sec preferred_lft 600sec",
                &mut seen
            ),
            [NetEvent::AddressAdded { iface: "wired0".into(), addr: Ipv4Addr::new(198, 18, 0, 100) }]
        );
        assert_eq!(
            parse_monitor_line("Deleted 4: backup0    inet 198.18.0.100/24 scope global backup0", &mut seen),
            [NetEvent::AddressRemoved { iface: "backup0".into(), addr: Ipv4Addr::new(198, 18, 0, 100) }]
        );
        let up = "4: backup0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP";
        let no_carrier = "4: backup0@if5: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN";
        let down = "4: backup0@if5: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN";
        let backup = || "backup0".to_owned();
        assert_eq!(parse_monitor_line(up, &mut seen), [NetEvent::LinkAdmin { iface: backup(), up: true }, NetEvent::Carrier { iface: backup(), up: true }]);
        assert_eq!(parse_monitor_line(up, &mut seen), []);
        assert_eq!(parse_monitor_line(no_carrier, &mut seen), [NetEvent::Carrier { iface: backup(), up: false }]);
        assert_eq!(parse_monitor_line(down, &mut seen), [NetEvent::LinkAdmin { iface: backup(), up: false }]);
    }
}
