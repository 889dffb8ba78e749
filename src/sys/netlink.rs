//! The two rtnetlink requests the companion makes itself: set a link down,
//! and set its MAC address. Used where NetworkManager is waiting for us
//! (`link-up`), so asking NM to do it would deadlock on nm-dispatcher's queue.

use std::ffi::CString;
use std::io;
use std::mem::size_of;

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

fn if_index(iface: &str) -> io::Result<i32> {
    let name = CString::new(iface).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index as i32)
    }
}

/// Sets `iface` down (it stops answering ARP and sending on the LAN), then,
/// if given, gives it `mac` (drivers refuse MAC changes on a running link).
pub fn take_link_down(iface: &str, mac: Option<[u8; 6]>) -> io::Result<()> {
    let index = if_index(iface)?;
    let sock = RouteSocket::open()?;
    sock.set_link(1, index, 0, libc::IFF_UP as u32, None)?;
    if let Some(mac) = mac {
        sock.set_link(2, index, 0, 0, Some(mac))?;
    }
    Ok(())
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
}
