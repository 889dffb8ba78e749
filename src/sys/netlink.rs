//! The rtnetlink requests the companion makes itself: set a link down (and
//! give it a MAC address) or up again, and watch links. Used where
//! NetworkManager is waiting for us (`link-up`), so asking NM to do it would
//! deadlock on nm-dispatcher's queue, and by the carrier watcher, which races
//! NM and must not wait for D-Bus.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;

/// What rtnetlink says about one link (a reply to a request, or a change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkReport {
    /// `name`: the interface name, NUL-padded (IFNAMSIZ). `ethernet`: a
    /// link with no software kind (a NIC) or a veth; not a dummy, bridge,
    /// bond, tunnel or other link a user could have NetworkManager create.
    Present {
        index: i32,
        carrier: bool,
        mac: Option<[u8; 6]>,
        name: [u8; 16],
        ethernet: bool,
    },
    Removed {
        index: i32,
    },
}

impl LinkReport {
    /// An interface name as [`LinkReport::Present`] carries it (longer ones are cut).
    pub fn name_bytes(name: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        let len = name.len().min(15);
        out[..len].copy_from_slice(&name.as_bytes()[..len]);
        out
    }
}

const NLMSG_HDRLEN: usize = 16;
const IFINFO_LEN: usize = 16;
const RTA_HDRLEN: usize = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A NETLINK_ROUTE socket, closed on drop.
struct RouteSocket(libc::c_int);

impl Drop for RouteSocket {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

impl RouteSocket {
    fn open() -> io::Result<RouteSocket> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = RouteSocket(fd);
        // A bounded wait for the kernel's answer.
        let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
        // SAFETY: valid fd and option buffer.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const _ as *const libc::c_void,
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn send_to_kernel(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: zeroed sockaddr_nl addressed to the kernel (pid 0).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: valid fd, buffer and address.
        let sent = unsafe {
            libc::sendto(
                self.0,
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &kernel as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one request (`kind`, `flags` besides REQUEST|ACK, the fixed
    /// header, then attributes) and waits for the kernel's ACK.
    fn request(&self, seq: u32, kind: u16, flags: u16, header: &[u8], attrs: &[(u16, &[u8])]) -> io::Result<()> {
        let mut msg = Vec::with_capacity(128);
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16 | flags).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(header);
        for (attr, value) in attrs {
            msg.extend_from_slice(&((RTA_HDRLEN + value.len()) as u16).to_ne_bytes());
            msg.extend_from_slice(&attr.to_ne_bytes());
            msg.extend_from_slice(value);
            msg.resize(align4(msg.len()), 0);
        }
        let total = msg.len() as u32;
        msg[0..4].copy_from_slice(&total.to_ne_bytes());
        self.send_to_kernel(&msg)?;
        self.wait_ack(seq)
    }

    fn wait_ack(&self, seq: u32) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: valid fd and buffer.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(outcome) = ack_of(&buf[..n as usize], seq)? {
                return outcome;
            }
        }
    }

    /// Sends one RTM_NEWLINK request and waits for the kernel's ACK.
    fn set_link(&self, seq: u32, index: i32, flags: u32, change: u32, mac: Option<[u8; 6]>) -> io::Result<()> {
        let attr_len = mac.map_or(0, |_| align4(RTA_HDRLEN + 6));
        let total = NLMSG_HDRLEN + IFINFO_LEN + attr_len;
        let mut msg = Vec::with_capacity(total);
        msg.extend_from_slice(&(total as u32).to_ne_bytes());
        msg.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        // struct ifinfomsg
        msg.push(libc::AF_UNSPEC as u8);
        msg.push(0);
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&index.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&change.to_ne_bytes());
        if let Some(mac) = mac {
            msg.extend_from_slice(&((RTA_HDRLEN + 6) as u16).to_ne_bytes());
            msg.extend_from_slice(&libc::IFLA_ADDRESS.to_ne_bytes());
            msg.extend_from_slice(&mac);
            msg.resize(total, 0);
        }
        self.send_to_kernel(&msg)?;
        self.wait_ack(seq)
    }
}

/// The answer to request `seq` in one datagram of replies: `Ok(None)` when
/// it holds none (messages of other requests), an error when a message's
/// length does not fit the datagram.
fn ack_of(mut datagram: &[u8], seq: u32) -> io::Result<Option<io::Result<()>>> {
    let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed netlink reply: {what}"));
    while !datagram.is_empty() {
        let header = datagram.get(..NLMSG_HDRLEN).ok_or_else(|| malformed("truncated header"))?;
        let len = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > datagram.len() {
            return Err(malformed("message length out of bounds"));
        }
        let kind = u16::from_ne_bytes(header[4..6].try_into().expect("2 bytes"));
        let reply_seq = u32::from_ne_bytes(header[8..12].try_into().expect("4 bytes"));
        if reply_seq == seq && kind == libc::NLMSG_ERROR as u16 {
            let errno = datagram.get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4).filter(|_| len >= NLMSG_HDRLEN + 4).ok_or_else(|| malformed("short error message"))?;
            let errno = i32::from_ne_bytes(errno.try_into().expect("4 bytes"));
            return Ok(Some(if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-errno)) }));
        }
        datagram = datagram.get(align4(len)..).unwrap_or_default();
    }
    Ok(None)
}

pub fn if_index(iface: &str) -> io::Result<i32> {
    let name = CString::new(iface).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index as i32)
    }
}

/// Sets the link down (it stops answering ARP and sending on the LAN), then,
/// if given, gives it `mac` (drivers refuse MAC changes on a running link).
pub fn take_index_down(index: i32, mac: Option<[u8; 6]>) -> io::Result<()> {
    let sock = RouteSocket::open()?;
    sock.set_link(1, index, 0, libc::IFF_UP as u32, None)?;
    if let Some(mac) = mac {
        sock.set_link(2, index, 0, 0, Some(mac))?;
    }
    Ok(())
}

/// Whether the kernel reports carrier on `iface` now (sysfs; `None` where
/// the link is gone; a link that is administratively down reads no carrier).
pub fn carrier(iface: &str) -> Option<bool> {
    match std::fs::read_to_string(std::path::Path::new("/sys/class/net").join(iface).join("carrier")) {
        Ok(c) => Some(c.trim() == "1"),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Some(false),
        Err(_) => None,
    }
}

/// Sets the link up (administratively; the carrier is the driver's).
pub fn set_index_up(index: i32) -> io::Result<()> {
    RouteSocket::open()?.set_link(1, index, libc::IFF_UP as u32, libc::IFF_UP as u32, None)
}

/// An IPv4 address as NetworkManager configures it: the prefix route is
/// added separately ([`add_ipv4_route`]), with the link's metric.
const IFA_F_NOPREFIXROUTE: u32 = 0x200;

fn ifaddr_header(index: i32, prefix: u8) -> [u8; 8] {
    let mut header = [0u8; 8];
    header[0] = libc::AF_INET as u8;
    header[1] = prefix;
    header[3] = libc::RT_SCOPE_UNIVERSE;
    header[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    header
}

/// Adds `address/prefix` to link `index` (no prefix route; an address that
/// is there already is replaced, not an error).
pub fn add_ipv4_address(index: i32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let broadcast = Ipv4Addr::from(u32::from(address) | (u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0)));
    let attrs: [(u16, &[u8]); 4] = [
        (libc::IFA_LOCAL, &address.octets()),
        (libc::IFA_ADDRESS, &address.octets()),
        (libc::IFA_BROADCAST, &broadcast.octets()),
        (libc::IFA_FLAGS, &IFA_F_NOPREFIXROUTE.to_ne_bytes()),
    ];
    RouteSocket::open()?.request(1, libc::RTM_NEWADDR, (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16, &ifaddr_header(index, prefix), &attrs)
}

/// Removes `address/prefix` from link `index`; the kernel removes the routes
/// that use it as their source with it. Gone already is no error.
pub fn del_ipv4_address(index: i32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let attrs: [(u16, &[u8]); 2] = [(libc::IFA_LOCAL, &address.octets()), (libc::IFA_ADDRESS, &address.octets())];
    match RouteSocket::open()?.request(1, libc::RTM_DELADDR, 0, &ifaddr_header(index, prefix), &attrs) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other,
    }
}

/// Adds a main-table route to `destination/prefix` through link `index`,
/// via `gateway` if given, with source `source` and `metric`, in front of
/// any other with the same destination and metric (never replacing one of
/// another link's: IPv4 routes are keyed without their link).
pub fn add_ipv4_route(index: i32, destination: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>, source: Ipv4Addr, metric: u32) -> io::Result<()> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
    let mut header = [0u8; 12];
    header[0] = libc::AF_INET as u8;
    header[1] = prefix;
    header[4] = libc::RT_TABLE_MAIN;
    header[5] = libc::RTPROT_BOOT;
    header[6] = if gateway.is_some() { libc::RT_SCOPE_UNIVERSE } else { libc::RT_SCOPE_LINK };
    header[7] = libc::RTN_UNICAST;
    let index_bytes = (index as u32).to_ne_bytes();
    let metric_bytes = metric.to_ne_bytes();
    let destination_bytes = destination.octets();
    let source_bytes = source.octets();
    let gateway_bytes = gateway.map(|g| g.octets());
    let mut attrs: Vec<(u16, &[u8])> = vec![(libc::RTA_OIF, &index_bytes), (libc::RTA_PRIORITY, &metric_bytes), (libc::RTA_PREFSRC, &source_bytes)];
    if prefix > 0 {
        attrs.push((libc::RTA_DST, &destination_bytes));
    }
    if let Some(gateway) = &gateway_bytes {
        attrs.push((libc::RTA_GATEWAY, gateway));
    }
    match RouteSocket::open()?.request(1, libc::RTM_NEWROUTE, libc::NLM_F_CREATE as u16, &header, &attrs) {
        // The very same route is there already.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Link changes of this network namespace, as they happen (RTMGRP_LINK),
/// and the current state of the links asked for.
pub struct LinkMonitor {
    sock: RouteSocket,
}

impl LinkMonitor {
    pub fn open() -> io::Result<LinkMonitor> {
        let sock = RouteSocket::open()?;
        // SAFETY: zeroed sockaddr_nl, then the fields bind(2) reads.
        let mut local: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        local.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        local.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: valid fd and address.
        let rc = unsafe { libc::bind(sock.0, &local as *const _ as *const libc::sockaddr, size_of::<libc::sockaddr_nl>() as libc::socklen_t) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkMonitor { sock })
    }

    /// Asks for the state of link `index`; the answer arrives through
    /// [`LinkMonitor::next`] like a change (or as `Removed` if it is gone).
    pub fn request(&self, index: i32) -> io::Result<()> {
        let total = NLMSG_HDRLEN + IFINFO_LEN;
        let mut msg = Vec::with_capacity(total);
        msg.extend_from_slice(&(total as u32).to_ne_bytes());
        msg.extend_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
        msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
        // The sequence number is the index, so an error reply names its link.
        msg.extend_from_slice(&(index as u32).to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        msg.extend_from_slice(&index.to_ne_bytes());
        msg.extend_from_slice(&[0u8; 8]);
        self.sock.send_to_kernel(&msg)
    }

    /// The link reports of the next datagram, waiting at most `timeout`
    /// (`Ok(empty)` when none came). `ErrorKind::Other` with ENOBUFS means
    /// changes were lost: ask for the links' state again.
    pub fn next(&self, timeout: std::time::Duration) -> io::Result<Vec<LinkReport>> {
        let mut pfd = libc::pollfd { fd: self.sock.0, events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted { Ok(Vec::new()) } else { Err(err) };
        }
        if ready == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; 32 * 1024];
        // SAFETY: valid fd and buffer.
        let n = unsafe { libc::recv(self.sock.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::WouldBlock { Ok(Vec::new()) } else { Err(err) };
        }
        link_reports(&buf[..n as usize])
    }
}

/// The link messages of one datagram: new or changed links, removed links,
/// and errors answering [`LinkMonitor::request`] (the link does not exist).
fn link_reports(mut datagram: &[u8]) -> io::Result<Vec<LinkReport>> {
    let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed netlink message: {what}"));
    let read_u32 = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let mut reports = Vec::new();
    while !datagram.is_empty() {
        let header = datagram.get(..NLMSG_HDRLEN).ok_or_else(|| malformed("truncated header"))?;
        let len = read_u32(header, 0) as usize;
        if len < NLMSG_HDRLEN || len > datagram.len() {
            return Err(malformed("message length out of bounds"));
        }
        let kind = u16::from_ne_bytes(header[4..6].try_into().expect("2 bytes"));
        let message = &datagram[..len];
        match kind {
            libc::RTM_NEWLINK | libc::RTM_DELLINK => {
                let info = message.get(NLMSG_HDRLEN..NLMSG_HDRLEN + IFINFO_LEN).ok_or_else(|| malformed("short link message"))?;
                let index = read_u32(info, 4) as i32;
                let flags = read_u32(info, 8);
                if kind == libc::RTM_DELLINK {
                    reports.push(LinkReport::Removed { index });
                } else {
                    let mut mac = None;
                    let mut name = [0u8; 16];
                    let mut kind: Option<&[u8]> = None;
                    let mut attrs = &message[NLMSG_HDRLEN + IFINFO_LEN..];
                    while attrs.len() >= RTA_HDRLEN {
                        let attr_len = u16::from_ne_bytes(attrs[0..2].try_into().expect("2 bytes")) as usize;
                        let attr_kind = u16::from_ne_bytes(attrs[2..4].try_into().expect("2 bytes"));
                        if attr_len < RTA_HDRLEN || attr_len > attrs.len() {
                            return Err(malformed("attribute length out of bounds"));
                        }
                        if attr_kind == libc::IFLA_ADDRESS && attr_len == RTA_HDRLEN + 6 {
                            mac = attrs[RTA_HDRLEN..RTA_HDRLEN + 6].try_into().ok();
                        }
                        if attr_kind == libc::IFLA_LINKINFO {
                            let mut nested = &attrs[RTA_HDRLEN..attr_len];
                            while nested.len() >= RTA_HDRLEN {
                                let len = u16::from_ne_bytes(nested[0..2].try_into().expect("2 bytes")) as usize;
                                if len < RTA_HDRLEN || len > nested.len() {
                                    return Err(malformed("nested attribute length out of bounds"));
                                }
                                if u16::from_ne_bytes(nested[2..4].try_into().expect("2 bytes")) == libc::IFLA_INFO_KIND {
                                    kind = nested[RTA_HDRLEN..len].split(|b| *b == 0).next();
                                }
                                nested = nested.get(align4(len)..).unwrap_or_default();
                            }
                        }
                        if attr_kind == libc::IFLA_IFNAME {
                            let value = &attrs[RTA_HDRLEN..attr_len];
                            let value = value.split(|b| *b == 0).next().unwrap_or_default();
                            let len = value.len().min(15);
                            name[..len].copy_from_slice(&value[..len]);
                        }
                        attrs = attrs.get(align4(attr_len)..).unwrap_or_default();
                    }
                    let carrier = flags & libc::IFF_LOWER_UP as u32 != 0;
                    let ethernet = matches!(kind, None | Some(b"veth"));
                    reports.push(LinkReport::Present { index, carrier, mac, name, ethernet });
                }
            }
            k if k == libc::NLMSG_ERROR as u16 => {
                let errno = message.get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4).ok_or_else(|| malformed("short error message"))?;
                let errno = i32::from_ne_bytes(errno.try_into().expect("4 bytes"));
                if errno == -libc::ENODEV {
                    // The sequence number of a request is the link's index.
                    reports.push(LinkReport::Removed { index: read_u32(header, 8) as i32 });
                } else if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
            _ => {}
        }
        datagram = datagram.get(align4(len)..).unwrap_or_default();
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(len), 0);
        m
    }

    const ERROR: u16 = libc::NLMSG_ERROR as u16;

    #[test]
    fn the_ack_of_this_request_is_found_behind_other_messages() {
        let mut datagram = message(libc::RTM_NEWLINK, 7, &[1, 2, 3]);
        datagram.extend(message(ERROR, 1, &(-libc::EPERM).to_ne_bytes()));
        datagram.extend(message(ERROR, 2, &0i32.to_ne_bytes()));
        assert!(ack_of(&datagram, 2).unwrap().unwrap().is_ok());
        let err = ack_of(&datagram, 1).unwrap().unwrap().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert!(ack_of(&datagram, 3).unwrap().is_none());
    }

    #[test]
    fn lengths_that_do_not_fit_are_errors_not_reads_out_of_bounds() {
        let mut too_long = message(ERROR, 1, &0i32.to_ne_bytes());
        too_long[0..4].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(ack_of(&too_long, 1).is_err());
        let mut too_short = message(ERROR, 1, &0i32.to_ne_bytes());
        too_short[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(ack_of(&too_short, 1).is_err());
        assert!(ack_of(&[0u8; 10], 1).is_err());
        let short_error = message(ERROR, 1, &[]);
        assert!(ack_of(&short_error, 1).is_err());
    }
    fn link_message(kind: u16, index: i32, flags: u32, mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut payload = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
        payload.extend_from_slice(&index.to_ne_bytes());
        payload.extend_from_slice(&flags.to_ne_bytes());
        payload.extend_from_slice(&0u32.to_ne_bytes());
        // An attribute before the address, as the kernel sends (IFLA_IFNAME).
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&libc::IFLA_IFNAME.to_ne_bytes());
        payload.extend_from_slice(b"eth\0");
        if let Some(mac) = mac {
            payload.extend_from_slice(&10u16.to_ne_bytes());
            payload.extend_from_slice(&libc::IFLA_ADDRESS.to_ne_bytes());
            payload.extend_from_slice(&mac);
            payload.extend_from_slice(&[0, 0]);
        }
        message(kind, 0, &payload)
    }

    #[test]
    fn link_reports_carry_carrier_mac_and_removals() {
        let mac = [2, 0, 0, 0, 0, 7];
        let mut datagram = link_message(libc::RTM_NEWLINK, 3, (libc::IFF_UP | libc::IFF_LOWER_UP) as u32, Some(mac));
        datagram.extend(link_message(libc::RTM_NEWLINK, 4, libc::IFF_UP as u32, None));
        datagram.extend(link_message(libc::RTM_DELLINK, 5, 0, None));
        datagram.extend(message(ERROR, 6, &(-libc::ENODEV).to_ne_bytes()));
        assert_eq!(
            link_reports(&datagram).unwrap(),
            [
                LinkReport::Present { index: 3, carrier: true, mac: Some(mac), name: LinkReport::name_bytes("eth"), ethernet: true },
                LinkReport::Present { index: 4, carrier: false, mac: None, name: LinkReport::name_bytes("eth"), ethernet: true },
                LinkReport::Removed { index: 5 },
                LinkReport::Removed { index: 6 },
            ]
        );
        let mut bad_attr = link_message(libc::RTM_NEWLINK, 3, 0, Some(mac));
        bad_attr[NLMSG_HDRLEN + IFINFO_LEN..NLMSG_HDRLEN + IFINFO_LEN + 2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(link_reports(&bad_attr).is_err());
        assert!(link_reports(&link_message(libc::RTM_NEWLINK, 3, 0, None)[..20]).is_err());
        assert_eq!(link_reports(&message(ERROR, 6, &(-libc::EPERM).to_ne_bytes())).unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}
