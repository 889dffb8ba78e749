//! The companion on NetworkManager built with nm-patch's series: the
//! blocking `link-up` action lets it take the backup off the LAN before the
//! returning wired link sends its first DHCP packet.
//!
//! Needs root and the patched build (`nm-patch/build`, which `tests/run.sh`
//! runs); without them every test says why it skips (under CI they fail).

mod support;

use std::time::Duration;

use nm_handover::handover::sends_dhcp_release;
use support::*;

fn patched_or_skip(test: &str, server: DhcpServer) -> Option<LabConfig> {
    match LabConfig::patched(server) {
        Ok(cfg) => Some(cfg),
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: {why}");
            }
            eprintln!("SKIPPED: {test}: {why}");
            None
        }
    }
}

fn pull_and_replug_case(test: &str, server: DhcpServer) {
    let Some(cfg) = patched_or_skip(test, server) else { return };
    let Some(p) = paired(test, cfg, &[]) else { return };
    let status = p.lab.companion(&["status"]);
    assert!(status.contains("patched") && status.contains("mode: link-up"), "{status}");
    for cycle in 1..=2 {
        let window = pull_and_replug(&format!("{test} (cycle {cycle})"), &p);
        assert_eq!(window, Duration::ZERO, "both links held the address on the LAN\n{}", p.lab.diagnostics());
    }
    let log = p.lab.dispatcher_log();
    assert!(log.contains("nm-handover{iface=wired0 action=link-up}"), "the companion never saw link-up:\n{log}");
}

#[test]
fn patched_pull_and_replug_isc_dhcpd() {
    pull_and_replug_case("patched/isc-dhcpd", DhcpServer::IscDhcpd);
}

#[test]
fn patched_pull_and_replug_dnsmasq() {
    pull_and_replug_case("patched/dnsmasq", DhcpServer::Dnsmasq);
}

/// `ipv4.dhcp-send-release` exists since NM 1.48: the 1.42 backport cannot
/// run the cases that need it (tests/run.sh leaves them out there).
fn send_release_or_skip(test: &str) -> bool {
    let version = patched_version_under_test();
    let supported = sends_dhcp_release(&version);
    if !supported {
        // tests/run.sh leaves these cases out on 1.42 (--skip send_release): under CI a skip is a failure.
        assert!(std::env::var_os("CI").is_none(), "{test}: NetworkManager {version} has no ipv4.dhcp-send-release (added in 1.48)");
        eprintln!("SKIPPED: {test}: NetworkManager {version} has no ipv4.dhcp-send-release (added in 1.48)");
    }
    supported
}

/// The adverse case with lease carrying off: the wired lease file is missing
/// and the server's lease was released, so the wired client DISCOVERs and
/// dhcpd pings the address. The backup must be off the LAN before the
/// first DHCP packet of the wired link, as the capture in `lan` shows.
fn backup_leaves_first_case(test: &str, server: DhcpServer, release: Release) {
    let Some(cfg) = patched_or_skip(test, server) else { return };
    let Some(r) = released_lease_case(test, cfg, &["--no-lease-carry"], release) else { return };
    if release == Release::ByBackup {
        assert!(!r.released_at_replug, "the backup's DHCPRELEASE reached the server\n{r:?}");
    }
    let (off, (first, packet)) = (r.backup_off.expect("the backup never left the LAN"), r.first_wired_dhcp.clone().expect("no DHCP packet from the wired link"));
    let lead = first.duration_since(off).unwrap_or_else(|e| panic!("the wired link sent DHCP {:?} BEFORE the backup left the LAN: {packet}\n{r:?}", e.duration()));
    measured(test, "backup off the LAN before the first wired DHCP packet by", ms(lead));
    measured(test, "first wired DHCP packet", &packet);
    assert!(!r.abandoned, "{r:?}");
    assert_eq!(r.after, Some(r.before), "{r:?}");
    assert_eq!(r.window, Some(Duration::ZERO), "{r:?}");
}

#[test]
fn patched_backup_leaves_before_first_wired_dhcp_packet_isc_dhcpd() {
    backup_leaves_first_case("patched/released/isc-dhcpd, --no-lease-carry", DhcpServer::IscDhcpd, Release::Crafted);
}

#[test]
fn patched_backup_leaves_before_first_wired_dhcp_packet_dnsmasq() {
    backup_leaves_first_case("patched/released/dnsmasq, --no-lease-carry", DhcpServer::Dnsmasq, Release::Crafted);
}

/// The same with the backup profile set to send a DHCPRELEASE when it goes
/// down (`ipv4.dhcp-send-release`, NM >= 1.48). The backup shares the wired
/// link's DHCP identity: the release must not reach the server, or it would
/// free the lease the returning wired link asks for (the crafted cases above
/// cover a server that forgot the lease anyway).
#[test]
fn patched_send_release_backup_leaves_before_first_wired_dhcp_packet_isc_dhcpd() {
    let test = "patched/dhcp-send-release/isc-dhcpd, --no-lease-carry";
    if send_release_or_skip(test) {
        backup_leaves_first_case(test, DhcpServer::IscDhcpd, Release::ByBackup);
    }
}

#[test]
fn patched_send_release_backup_leaves_before_first_wired_dhcp_packet_dnsmasq() {
    let test = "patched/dhcp-send-release/dnsmasq, --no-lease-carry";
    if send_release_or_skip(test) {
        backup_leaves_first_case(test, DhcpServer::Dnsmasq, Release::ByBackup);
    }
}

/// On the stock path (no companion in `link-up.d`, as on an unpatched NM >=
/// 1.48 such as Debian 13's) the hand-back happens once the wired link holds
/// the address again: NM deactivating a backup still on the LAN would send
/// the shared identity's DHCPRELEASE and free the wired link's lease.
#[test]
fn patched_send_release_hand_back_after_wired_address_sends_no_release() {
    let test = "patched/dhcp-send-release/isc-dhcpd, companion not in link-up.d";
    if !send_release_or_skip(test) {
        return;
    }
    let Some(mut cfg) = patched_or_skip(test, DhcpServer::IscDhcpd) else { return };
    cfg.companion_dirs.retain(|dir| *dir != "link-up.d");
    let Some(r) = released_lease_case(test, cfg, &[], Release::ByBackup) else { return };
    assert!(!r.released_at_replug, "the backup's DHCPRELEASE reached the server after the wired link got the address\n{r:?}");
    assert!(!r.abandoned, "{r:?}");
    assert_eq!(r.after, Some(r.before), "{r:?}");
}

/// `pair` and `unpair` change only their own properties, also when the
/// daemon is newer than the libnm the companion links (the lab's libnm is
/// Debian 12's 1.42): a property only the daemon knows survives both.
#[test]
fn patched_send_release_pair_and_unpair_keep_properties_libnm_does_not_know() {
    let test = "patched/pair keeps unknown properties";
    if !send_release_or_skip(test) {
        return;
    }
    let Some(cfg) = patched_or_skip(test, DhcpServer::IscDhcpd) else { return };
    let (section, key, value) = SEND_RELEASE;
    let Some(p) = paired_with(test, cfg, &[], |lab| lab.edit_keyfile("Backup link", section, key, value)) else { return };
    let keyfile = || std::fs::read_to_string(p.lab.keyfile_of("Backup link")).unwrap();
    let paired = keyfile();
    assert!(paired.contains(&format!("{key}={value}")), "pair dropped {section}.{key}:\n{paired}");
    assert!(paired.contains("[user]"), "pair stored no user data:\n{paired}");
    let said = p.lab.companion(&["unpair", "Office LAN"]);
    let unpaired = keyfile();
    assert!(unpaired.contains(&format!("{key}={value}")), "unpair dropped {section}.{key}:\n{said}\n{unpaired}");
    assert!(!unpaired.contains("nm-handover"), "unpair left user data behind:\n{unpaired}");
    assert!(!unpaired.contains("cloned-mac-address"), "unpair left the cloned MAC:\n{unpaired}");
}

/// Without any script in `link-up.d` the action costs one nm-dispatcher
/// round trip per activation, and activation proceeds.
#[test]
fn patched_link_up_without_scripts_is_one_round_trip() {
    let test = "patched/link-up without scripts";
    let Some(cfg) = patched_or_skip(test, DhcpServer::IscDhcpd) else { return };
    let Some(lab) = start_or_skip(test, cfg) else { return };
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.expect_until("the wired address", Duration::from_secs(30), || lab.ipv4("wired0").is_some());
    let link_up = lab
        .dispatcher_requests()
        .into_iter()
        .find(|r| r.iface.as_deref() == Some("wired0") && r.action == "link-up")
        .unwrap_or_else(|| panic!("NM never dispatched link-up for wired0\n{}", lab.diagnostics()));
    let outcome = link_up.outcome.unwrap_or_else(|| panic!("the link-up request never completed\n{}", lab.diagnostics()));
    measured(test, "link-up dispatch with no script", format!("{} ms, {}", outcome.took.as_millis(), outcome.detail));
    let done = outcome.detail;
    assert!(done.contains("0 scripts invoked"), "{done}");
}
