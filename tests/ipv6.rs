//! IPv6 across a handover, in the lab with router advertisements (SLAAC)
//! and stateful DHCPv6 from dnsmasq: the backup takes the wired link's IPv6
//! addresses, both of them, and TCP sessions over each survive the pull and
//! the re-plug; the IPv4 address is kept as before.
//!
//! Needs root (network namespaces); as non-root every test says why it skips.

mod support;

use std::time::Duration;

use support::*;

fn ipv6_case(test: &str, cfg: LabConfig) {
    let profiles_before_pair = std::cell::RefCell::new(Vec::new());
    let wait_for_ipv6 = |lab: &Lab| {
        wait_for_wired_ipv6(lab);
        *profiles_before_pair.borrow_mut() = keyfile_bytes(lab);
    };
    let Some(p) = paired_with(test, cfg.with_ipv6(), &[], wait_for_ipv6) else { return };
    let lab = &p.lab;
    let backup = p.backup_iface;
    let diag = |what: &str| format!("{test}: {what}\nwired0: {:?}\n{backup}: {:?}\n{}", lab.ipv6_usable("wired0"), lab.ipv6_usable(backup), lab.diagnostics());
    let mut wired6 = lab.ipv6_usable("wired0");
    wired6.sort();
    assert_eq!(wired6.len(), 2, "{}", diag("one address from SLAAC and one from DHCPv6 expected"));
    measured(test, "IPv6 addresses of the wired link", format!("{wired6:?}"));
    let sessions: Vec<TcpSession> = wired6.iter().map(|a| TcpSession::open_v6_from(lab, *a)).collect();
    for s in &sessions {
        assert!(s.wait_for_traffic(5, Duration::from_secs(5)), "{}", diag("no TCP traffic over IPv6 before the pull"));
    }

    lab.pull_cable();
    let took = lab
        .wait_until("the backup to hold the wired link's IPv6 addresses", IPV6_UP, || holds_all(lab, backup, &wired6))
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    measured(test, "pull -> backup holds the same IPv6 addresses (usable)", ms(took));
    assert_eq!(lab.ipv4(backup), Some(p.addr), "{}", diag("the backup must hold the wired IPv4 address too"));
    assert!(took <= IPV6_HANDOVER_BOUND, "{}", diag(&format!("the pull took {took:?} for IPv6, more than {IPV6_HANDOVER_BOUND:?}")));
    for (s, addr) in sessions.iter().zip(&wired6) {
        assert!(s.wait_for_traffic(10, Duration::from_secs(10)), "{}", diag(&format!("TCP over IPv6 from {addr} after the pull: {:?}", s.report())));
        measured(test, &format!("pull: longest TCP stall over IPv6 from {addr}"), ms(s.report().longest_stall));
        s.reset_stall();
    }

    lab.plug_cable();
    let back = lab
        .wait_until("the wired link to hold its IPv6 addresses again", IPV6_UP, || holds_all(lab, "wired0", &wired6))
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    measured(test, "re-plug -> wired holds the same IPv6 addresses (usable)", ms(back));
    lab.wait_until("the backup to give up its IPv6 addresses", Duration::from_secs(15), || lab.ipv6_usable(backup).is_empty())
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    assert!(back <= IPV6_HANDOVER_BOUND, "{}", diag(&format!("the re-plug took {back:?} for IPv6, more than {IPV6_HANDOVER_BOUND:?}")));
    assert_eq!(lab.ipv4("wired0"), Some(p.addr), "{}", diag("the wired IPv4 address must be kept"));
    for (s, addr) in sessions.into_iter().zip(&wired6) {
        assert!(s.wait_for_traffic(10, Duration::from_secs(10)), "{}", diag(&format!("TCP over IPv6 from {addr} after the re-plug: {:?}", s.report())));
        let report = s.close();
        measured(test, &format!("re-plug: longest TCP stall over IPv6 from {addr}"), ms(report.longest_stall));
        assert!(report.survived(), "{}", diag(&format!("the TCP session over IPv6 from {addr} must survive: {report:?}")));
    }
    if lab.cfg.companion_dirs.contains(&"link-up.d") {
        handed_back_at_link_up(lab, 1);
    }
    // `unpair` puts back the backup's IPv6 settings: both keyfiles as before `pair`.
    lab.companion(&["unpair", "Office LAN"]);
    assert!(keyfile_bytes(lab) == *profiles_before_pair.borrow(), "{}", diag("unpair must leave both keyfiles as they were before pair"));
}

/// The control: the backup with its IPv6 settings as they were before
/// `pair` gave it the wired link's identity takes other addresses.
#[test]
fn control_without_the_ipv6_identity_the_backup_takes_other_addresses() {
    let test = "ipv6/control";
    let Some(p) = paired_with(test, LabConfig::new(DhcpServer::Dnsmasq, DhcpClient::Internal).with_ipv6(), &[], wait_for_wired_ipv6) else { return };
    let lab = &p.lab;
    let wired6 = lab.ipv6_usable("wired0");
    lab.nmcli(&["connection", "modify", p.backup_profile, "ipv6.addr-gen-mode", "stable-privacy", "ipv6.token", "", "ipv6.dhcp-iaid", ""])
        .expect("undo the IPv6 identity");
    lab.pull_cable();
    lab.expect_until("the backup's IPv6 addresses", IPV6_UP, || lab.ipv6_usable(p.backup_iface).len() >= 2);
    let backup6 = lab.ipv6_usable(p.backup_iface);
    measured(test, "IPv6 addresses: wired before the pull / backup after it", format!("{wired6:?} / {backup6:?}"));
    assert!(backup6.iter().all(|a| !wired6.contains(a)), "the control must show other addresses: {wired6:?} / {backup6:?}");
    assert_eq!(lab.ipv4(p.backup_iface), Some(p.addr), "IPv4 is not what this control is about");
}

#[test]
fn ipv6_addresses_and_sessions_survive_internal_client() {
    ipv6_case("ipv6/dnsmasq/internal", LabConfig::new(DhcpServer::Dnsmasq, DhcpClient::Internal));
}

#[test]
fn ipv6_addresses_and_sessions_survive_patched_nm() {
    let test = "ipv6/patched/dnsmasq/internal";
    let Some(cfg) = patched_or_skip(test, DhcpServer::Dnsmasq) else { return };
    ipv6_case(test, cfg);
}
