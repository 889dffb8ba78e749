//! The companion on stock NetworkManager, in a lab of real parts: cable pull
//! and re-plug keep one IPv4 address and a live TCP session, with ISC dhcpd
//! and dnsmasq, NM's internal DHCP client and dhclient.
//!
//! Needs root (network namespaces); as non-root every test says why it skips.

mod support;

use std::time::Duration;

use support::*;

fn pull_replug_case(test: &str, server: DhcpServer, client: DhcpClient) {
    let Some(p) = paired(test, LabConfig::new(server, client), &[]) else { return };
    pull_and_replug(test, &p);
    // And once more: the second cycle starts from a handed-back state.
    pull_and_replug(&format!("{test} (second cycle)"), &p);
}

#[test]
fn pull_and_replug_isc_dhcpd_internal_client() {
    pull_replug_case("isc-dhcpd/internal", DhcpServer::IscDhcpd, DhcpClient::Internal);
}

#[test]
fn pull_and_replug_isc_dhcpd_dhclient() {
    pull_replug_case("isc-dhcpd/dhclient", DhcpServer::IscDhcpd, DhcpClient::Dhclient);
}

#[test]
fn pull_and_replug_dnsmasq_internal_client() {
    pull_replug_case("dnsmasq/internal", DhcpServer::Dnsmasq, DhcpClient::Internal);
}

#[test]
fn pull_and_replug_dnsmasq_dhclient() {
    pull_replug_case("dnsmasq/dhclient", DhcpServer::Dnsmasq, DhcpClient::Dhclient);
}

/// The hand-back on stock NM takes the backup's link down (the carrier
/// watcher), and NM leaves a link it deactivates as it finds it. Left down,
/// the backup device turns `unavailable` when NM's carrier-wait (6 s) ends,
/// and a pull after that found no device for the backup.
#[test]
fn a_pull_long_after_a_replug_hands_over_again() {
    let test = "pull after a while";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::Dnsmasq, DhcpClient::Internal), &[]) else { return };
    pull_and_replug(test, &p);
    std::thread::sleep(Duration::from_secs(8));
    pull_and_replug(&format!("{test} (8 s after the re-plug)"), &p);
}

/// A wired profile with `cloned-mac-address=stable`: NM generates the
/// address from the profile's stable-id and the interface name, the same at
/// every activation, and `pair` clones the one the wired link has.
#[test]
fn a_stable_generated_wired_mac_is_cloned() {
    let test = "stable wired MAC";
    let own_mac = std::cell::RefCell::new(String::new());
    let generate_stable_mac = |lab: &Lab| {
        *own_mac.borrow_mut() = lab.mac("wired0");
        lab.nmcli(&["connection", "modify", "Office LAN", "802-3-ethernet.cloned-mac-address", "stable"]).expect("stable MAC");
        lab.nmcli(&["connection", "up", "Office LAN"]).expect("activate with the stable MAC");
    };
    let Some(p) = paired_with(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[], generate_stable_mac) else { return };
    let stable_mac = p.lab.mac("wired0");
    assert_ne!(stable_mac, *own_mac.borrow(), "NM must have generated another MAC for the wired link");
    pull_and_replug(test, &p);
    assert_eq!(p.lab.mac("wired0"), stable_mac, "the wired link gets the same stable MAC at its next activation");
}

#[test]
fn released_lease_is_carried_back_isc_dhcpd_internal_client() {
    // The carrier watcher off: it alone also keeps the address (the test
    // below), and this one is about the carried lease.
    let Some(r) = released_lease_case(
        "released/isc-dhcpd/internal, --no-carrier-watch",
        LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal),
        &["--no-carrier-watch"],
        Release::Crafted,
    ) else {
        return;
    };
    assert!(!r.abandoned, "dhcpd abandoned the address: {r:?}");
    assert_eq!(r.after, Some(r.before), "{r:?}");
}

#[test]
fn released_lease_is_carried_back_isc_dhcpd_dhclient() {
    // The carrier watcher off: it alone also keeps the address (the test
    // below), and this one is about the carried lease.
    let Some(r) = released_lease_case(
        "released/isc-dhcpd/dhclient, --no-carrier-watch",
        LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Dhclient),
        &["--no-carrier-watch"],
        Release::Crafted,
    ) else {
        return;
    };
    assert!(!r.abandoned, "dhcpd abandoned the address: {r:?}");
    assert_eq!(r.after, Some(r.before), "{r:?}");
}

#[test]
fn released_lease_is_carried_back_dnsmasq_internal_client() {
    let Some(r) = released_lease_case("released/dnsmasq/internal", LabConfig::new(DhcpServer::Dnsmasq, DhcpClient::Internal), &[], Release::Crafted) else {
        return;
    };
    assert_eq!(r.after, Some(r.before), "{r:?}");
    assert_init_reboot(&r);
}

/// dnsmasq re-offers a client its address with or without a carried lease:
/// what the carried lease changes is that the wired client asks for it
/// straight away (INIT-REBOOT: a REQUEST for the address, no DISCOVER).
fn assert_init_reboot(r: &ReleasedOutcome) {
    let requested = format!("DHCPREQUEST(br0) {}", r.before);
    assert!(r.replug_messages.iter().any(|m| m.contains(&requested)), "no REQUEST for {}: {r:?}", r.before);
    assert!(!r.replug_messages.iter().any(|m| m.contains("DHCPDISCOVER")), "a DISCOVER after the re-plug: {r:?}");
}

#[test]
fn released_lease_is_carried_back_dnsmasq_dhclient() {
    let Some(r) = released_lease_case("released/dnsmasq/dhclient", LabConfig::new(DhcpServer::Dnsmasq, DhcpClient::Dhclient), &[], Release::Crafted) else {
        return;
    };
    assert_eq!(r.after, Some(r.before), "{r:?}");
    assert_init_reboot(&r);
}

/// The control for the case above: the same events with lease carrying and
/// the carrier watcher off make dhcpd abandon the address, so the test above
/// can fail.
#[test]
fn control_released_lease_without_carrying_is_abandoned() {
    let test = "control: released/isc-dhcpd/internal, --no-lease-carry --no-carrier-watch";
    let cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal);
    let Some(r) = released_lease_case(test, cfg, &["--no-lease-carry", "--no-carrier-watch"], Release::Crafted) else { return };
    assert!(r.abandoned, "without the carried lease dhcpd should have pinged and abandoned {}: {r:?}", r.before);
    assert_ne!(r.after, Some(r.before), "{r:?}");
}

/// The carrier watcher alone also prevents it: the backup is off the LAN
/// before the wired client's DISCOVER, so dhcpd's ping goes unanswered and
/// the address is offered again (found when the control above, then
/// without `--no-carrier-watch`, stopped failing).
#[test]
fn released_lease_without_carrying_is_kept_by_the_carrier_watcher() {
    let test = "released/isc-dhcpd/internal, --no-lease-carry, carrier watcher";
    let cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal);
    let Some(r) = released_lease_case(test, cfg, &["--no-lease-carry"], Release::Crafted) else { return };
    assert!(!r.abandoned && r.after == Some(r.before), "{r:?}");
    let (off, first) = (r.backup_off.expect("backup off seen"), r.first_wired_dhcp.as_ref().expect("first wired DHCP packet").0);
    assert!(off <= first, "the backup left the LAN after the wired client's first packet: {r:?}");
}

/// The control without the companion: the backup has its own MAC and
/// address, the pull leaves the TCP session without a path.
#[test]
fn control_without_companion_loses_address_and_session() {
    let test = "control: no companion";
    let Some(lab) = start_or_skip(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal)) else { return };
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.add_ethernet_profile("Backup link", "backup0", true);
    lab.expect_until("both links' addresses", Duration::from_secs(30), || lab.ipv4("wired0").is_some() && lab.ipv4("backup0").is_some());
    let addr = lab.ipv4("wired0").unwrap();
    let tcp = TcpSession::open(&lab);
    assert!(tcp.wait_for_traffic(5, Duration::from_secs(5)));
    lab.pull_cable();
    lab.expect_until("NM to drop the wired address", Duration::from_secs(20), || lab.ipv4("wired0").is_none());
    let progressed = tcp.wait_for_traffic(1, Duration::from_secs(8));
    let report = tcp.close();
    measured(test, "after the pull the backup has", format!("{:?} (the wired link had {addr})", lab.ipv4("backup0")));
    assert_ne!(lab.ipv4("backup0"), Some(addr));
    assert!(!progressed, "without the companion the session should have no path after the pull: {report:?}");
}

#[test]
fn boot_with_cable_out_brings_up_the_backup() {
    let test = "boot with the cable out";
    let Some(mut p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    p.lab.reboot_nm(|lab| lab.pull_cable());
    let lab = &p.lab;
    let took = lab.expect_until("the backup to come up with the wired address", Duration::from_secs(30), || lab.ipv4("backup0") == Some(p.addr));
    measured(test, "NM start -> backup holds the address", ms(took));
    assert!(lab.ipv4("wired0").is_none());
}

#[test]
fn boot_with_cable_in_brings_up_only_the_wired_link() {
    let test = "boot with the cable in";
    let Some(mut p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    p.lab.reboot_nm(|_| {});
    let lab = &p.lab;
    lab.expect_until("the wired address", Duration::from_secs(30), || lab.ipv4("wired0") == Some(p.addr));
    // NM's start-up events (hostname, connectivity-change) have run the companion by now; give it time to misbehave.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.ipv4("backup0"), None, "{}", lab.diagnostics());
    assert_eq!(nm_state(lab, "Backup link"), "");
}

#[test]
fn pair_then_unpair_restores_the_profiles() {
    let test = "pair/unpair";
    let Some(lab) = start_or_skip(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_companion()) else { return };
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.add_ethernet_profile("Backup link", "backup0", true);
    let show = |name: &str| {
        lab.nmcli(&["-g", "802-3-ethernet.cloned-mac-address,ipv4.dhcp-client-id,connection.autoconnect", "connection", "show", name])
            .unwrap()
            .replace('\\', "")
    };
    let before = (show("Office LAN"), show("Backup link"));
    let said = lab.companion(&["pair", "Office LAN", "Backup link"]);
    let wired_mac = lab.mac("wired0");
    let backup = show("Backup link");
    assert!(backup.to_lowercase().contains(&wired_mac.to_lowercase()), "cloned MAC not set: {backup}\n{said}");
    assert!(backup.lines().last() == Some("no"), "autoconnect not switched off: {backup}");
    let conf_dir = lab.nm_conf_dir().join("conf.d");
    assert_eq!(std::fs::read_dir(&conf_dir).unwrap().count(), 1, "the carrier-wait snippet");
    let status = lab.companion(&["status"]);
    assert!(status.contains("stock") && status.contains("Office LAN") && status.contains("Backup link"), "{status}");
    let said_unpair = lab.companion(&["unpair", "Backup link"]);
    assert_eq!((show("Office LAN"), show("Backup link")), before, "unpair must restore both profiles\n{said_unpair}");
    assert_eq!(std::fs::read_dir(&conf_dir).unwrap().count(), 0, "unpair must remove the snippet");
    assert!(lab.companion(&["status"]).contains("no pairs"));
}

/// Every `ipv4.dhcp-client-id` mode NM computes per interface: the backup
/// presents the client-id the wired link presented, so the server sees one
/// client (one lease in its database) and the address is kept.
fn client_id_case(mode: Option<&str>, global_default: Option<&str>) {
    let test = format!("client-id {} (global default {})", mode.unwrap_or("unset"), global_default.unwrap_or("none"));
    let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal);
    if let Some(default) = global_default {
        cfg.extra_nm_conf = format!("[connection]\nipv4.dhcp-client-id={default}\n");
    }
    let Some(p) = paired_with(&test, cfg, &[], |lab| {
        if let Some(mode) = mode {
            lab.nmcli(&["connection", "modify", "Office LAN", "ipv4.dhcp-client-id", mode]).expect("set the client-id mode");
        }
        // The mode applies from the next activation; pair reads what the wired link sent.
        lab.nmcli(&["connection", "up", "Office LAN"]).expect("activate the wired profile");
    }) else {
        return;
    };
    pull_and_replug(&test, &p);
    let leases = std::fs::read_to_string(p.lab.dir.join("server/dhcpd.leases")).unwrap();
    let mut addresses: Vec<&str> = leases.lines().filter_map(|l| l.strip_prefix("lease ")?.split_whitespace().next()).collect();
    addresses.sort();
    addresses.dedup();
    measured(&test, "addresses in dhcpd's lease database", addresses.join(" "));
    assert_eq!(addresses, [p.addr.to_string()], "{test}: the server saw more than one client\n{}", p.lab.diagnostics());
}

#[test]
fn client_id_stable_is_mirrored() {
    client_id_case(Some("stable"), None);
}

#[test]
fn client_id_duid_is_mirrored() {
    client_id_case(Some("duid"), None);
}

#[test]
fn client_id_perm_mac_is_mirrored() {
    client_id_case(Some("perm-mac"), None);
}

#[test]
fn client_id_unset_with_a_global_default_of_stable_is_mirrored() {
    client_id_case(None, Some("stable"));
}

/// The hostname the wired link sends goes with the address: the backup sends
/// it too (every request the server logs carries one client name, so DNS
/// updates keyed on it follow), though the backup profile had a name of its
/// own; `unpair` gives that name back, every keyfile byte for byte as before
/// `pair`. (dhcpd's lease database is no witness here: a request within its
/// `dhcp-cache-threshold` of the lease time rewrites no lease block.)
#[test]
fn the_backup_sends_the_hostname_the_wired_link_sends() {
    let test = "hostname mirrored";
    let mut keyfiles_before = Vec::new();
    let Some(p) = paired_with(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[], |lab| {
        lab.nmcli(&["connection", "modify", "Office LAN", "ipv4.dhcp-hostname", "laptop-office"]).expect("set the wired hostname");
        lab.nmcli(&["connection", "modify", "Backup link", "ipv4.dhcp-hostname", "backup-own-name"]).expect("set the backup's hostname");
        // Sent from the next activation on; pair also needs the wired link connected.
        lab.nmcli(&["connection", "up", "Office LAN"]).expect("activate the wired profile");
        keyfiles_before = keyfile_bytes(lab);
    }) else {
        return;
    };
    let lab = &p.lab;
    assert_eq!(lab.nmcli(&["-g", "ipv4.dhcp-hostname", "connection", "show", "Backup link"]).unwrap().trim(), "laptop-office");
    let log_mark = lab.server_log().lines().count();
    pull_and_replug(test, &p);
    let wired_mac = lab.mac("wired0");
    // dhcpd names the client in each line: a request by the name its lease
    // had, the ACK by the name the request carried. Every one must be the
    // wired hostname, the backup's ACK after the pull included.
    let messages = server_requests(lab, log_mark);
    measured(test, "DHCP messages at the server across pull and re-plug", messages.join(" | "));
    let acks = messages.iter().filter(|l| l.contains("DHCPACK")).count();
    assert!(acks >= 2, "{test}: expected the backup's and the wired link's ACK\n{}", lab.diagnostics());
    assert!(messages.iter().all(|l| l.contains(&wired_mac) && l.contains("(laptop-office)")), "{test}: a client sent another name\n{}", lab.diagnostics());
    lab.companion(&["unpair", "Office LAN"]);
    assert_eq!(lab.nmcli(&["-g", "ipv4.dhcp-hostname", "connection", "show", "Backup link"]).unwrap().trim(), "backup-own-name");
    let after = keyfile_bytes(lab);
    assert_eq!(after.len(), keyfiles_before.len(), "{test}: keyfiles added or removed");
    for ((name, old), (_, new)) in keyfiles_before.iter().zip(&after) {
        assert_eq!(String::from_utf8_lossy(new), String::from_utf8_lossy(old), "{test}: keyfile {name} changed by pair + unpair");
    }
}
