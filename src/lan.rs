//! Whether the backup is on the wired link's LAN: the subnet of a DHCPv4
//! lease (and its server identifier, which is only reported: DHCP failover
//! pairs and relays that rewrite it serve one subnet under two identifiers).
//!
//! The handover keeps the address only where both links reach the same DHCP
//! server on the same subnet. Elsewhere (Wi-Fi on its own subnet, as in many
//! companies) the backup gets an address of its own network: nm-handover
//! then does what plain NetworkManager does (the backup connects) and
//! changes nothing else; the wired lease file keeps the wired LAN's address
//! for the re-plug, and `status` and `check` say "not the same LAN" instead
//! of claiming the address was kept.
//!
//! The wired link's LAN is known only since NetworkManager last woke (the
//! supervisor forgets it when NetworkManager sleeps; /run is gone at boot):
//! a laptop that slept on a cable at home and woke at the office must not
//! compare the office with home. Unknown is "the same", as before.

use std::fmt;
use std::net::Ipv4Addr;

/// The network a DHCPv4 lease came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lan {
    pub server: Ipv4Addr,
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Lan {
    /// From a lease's options as NetworkManager reports them
    /// (`dhcp_server_identifier`, `ip_address`, `subnet_mask`).
    pub fn from_lease(server: &str, address: &str, mask: &str) -> Option<Lan> {
        let (server, address, mask): (Ipv4Addr, Ipv4Addr, Ipv4Addr) = (server.parse().ok()?, address.parse().ok()?, mask.parse().ok()?);
        let mask = u32::from(mask);
        // A contiguous mask only (`leading_ones` of it is its prefix).
        let prefix = mask.leading_ones();
        if mask.checked_shl(prefix).unwrap_or(0) != 0 {
            return None;
        }
        Some(Lan { server, network: Ipv4Addr::from(u32::from(address) & mask), prefix: prefix as u8 })
    }

    /// The record's form: `SERVER NETWORK/PREFIX`.
    pub fn render(&self) -> String {
        format!("{} {}/{}\n", self.server, self.network, self.prefix)
    }

    pub fn parse(text: &str) -> Option<Lan> {
        let mut words = text.split_whitespace();
        let server = words.next()?.parse().ok()?;
        let (network, prefix) = words.next()?.split_once('/')?;
        let (network, prefix): (Ipv4Addr, u8) = (network.parse().ok()?, prefix.parse().ok()?);
        if words.next().is_some() || prefix > 32 || u32::from(network) & !u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0) != 0 {
            return None;
        }
        Some(Lan { server, network, prefix })
    }
}

impl fmt::Display for Lan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} (DHCP server {})", self.network, self.prefix, self.server)
    }
}

/// The backup holds a lease of another subnet than the one the wired link
/// last had its lease of (both known).
pub fn other_lan(wired: Option<Lan>, backup: Option<Lan>) -> Option<(Lan, Lan)> {
    match (wired, backup) {
        (Some(w), Some(b)) if (w.network, w.prefix) != (b.network, b.prefix) => Some((w, b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_names_its_network() {
        let lan = Lan::from_lease("198.18.0.1", "198.18.0.150", "255.255.255.0").unwrap();
        assert_eq!(lan, Lan { server: Ipv4Addr::new(198, 18, 0, 1), network: Ipv4Addr::new(198, 18, 0, 0), prefix: 24 });
        assert_eq!(lan.to_string(), "198.18.0.0/24 (DHCP server 198.18.0.1)");
        assert_eq!(Lan::parse(&lan.render()), Some(lan));
        assert_eq!(Lan::from_lease("198.18.0.1", "198.18.0.150", "255.255.255.255").map(|l| l.prefix), Some(32));
        assert_eq!(Lan::from_lease("198.18.0.1", "198.18.0.150", "0.0.0.0").map(|l| l.prefix), Some(0));
    }

    #[test]
    fn what_is_not_a_lease_or_a_record_is_none() {
        for (server, address, mask) in [("", "198.18.0.2", "255.255.255.0"), ("198.18.0.1", "x", "255.255.255.0"), ("198.18.0.1", "198.18.0.2", "255.0.255.0")]
        {
            assert_eq!(Lan::from_lease(server, address, mask), None, "{server} {address} {mask}");
        }
        for text in ["", "198.18.0.1", "198.18.0.1 198.18.0.0", "198.18.0.1 198.18.0.0/33", "198.18.0.1 198.18.0.5/24", "198.18.0.1 198.18.0.0/24 x"] {
            assert_eq!(Lan::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn another_subnet_is_another_lan() {
        let office = Lan::from_lease("198.18.0.1", "198.18.0.150", "255.255.255.0");
        let same = Lan::from_lease("198.18.0.1", "198.18.0.151", "255.255.255.0");
        let wifi_subnet = Lan::from_lease("198.19.0.1", "198.19.0.150", "255.255.255.0");
        let other_server = Lan::from_lease("198.18.0.2", "198.18.0.150", "255.255.255.0");
        assert_eq!(other_lan(office, same), None);
        assert!(other_lan(office, wifi_subnet).is_some());
        assert_eq!(other_lan(office, other_server), None, "a failover partner or a relay: the same subnet");
        assert_eq!(other_lan(None, wifi_subnet), None, "unknown is not another LAN");
        assert_eq!(other_lan(office, None), None);
    }
}
