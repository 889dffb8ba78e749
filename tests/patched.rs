//! The companion on NetworkManager built with nm-patch's series: the
//! blocking `link-up` action lets it take the backup off the LAN before the
//! returning wired link sends its first DHCP packet.
//!
//! Needs root and the patched build (`nm-patch/build`, which `tests/run.sh`
//! runs); without them every test says why it skips (under CI they fail).

mod support;

use std::time::Duration;

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

/// The adverse case with lease carrying off: the wired lease file is missing
/// and the server's lease was released, so the wired client DISCOVERs and
/// dhcpd pings the address. The backup must be off the LAN before the
/// first DHCP packet of the wired link, as the capture in `lan` shows.
fn backup_leaves_first_case(test: &str, server: DhcpServer) {
    let Some(cfg) = patched_or_skip(test, server) else { return };
    let Some(r) = released_lease_case(test, cfg, &["--no-lease-carry"]) else { return };
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
    backup_leaves_first_case("patched/released/isc-dhcpd, --no-lease-carry", DhcpServer::IscDhcpd);
}

#[test]
fn patched_backup_leaves_before_first_wired_dhcp_packet_dnsmasq() {
    backup_leaves_first_case("patched/released/dnsmasq, --no-lease-carry", DhcpServer::Dnsmasq);
}

/// Without any script in `link-up.d` the action costs one nm-dispatcher
/// round trip per activation, and activation proceeds.
#[test]
fn patched_link_up_without_scripts_is_one_round_trip() {
    let test = "patched/link-up without scripts";
    let Some(cfg) = patched_or_skip(test, DhcpServer::IscDhcpd) else { return };
    let Some(lab) = start_or_skip(test, cfg) else { return };
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.wait_until("the wired address", Duration::from_secs(30), || lab.ipv4("wired0").is_some())
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.diagnostics()));
    let log = lab.nm_log();
    let request = log
        .lines()
        .find(|l| l.contains("(wired0) dispatching action 'link-up'"))
        .and_then(|l| l.split("dispatcher: (").nth(1)?.split(')').next().map(str::to_owned))
        .unwrap_or_else(|| panic!("NM never dispatched link-up for wired0\n{}", lab.diagnostics()));
    let done = log
        .lines()
        .find(|l| l.contains(&format!("dispatcher: ({request}) succeeded (after")))
        .unwrap_or_else(|| panic!("link-up request {request} never completed\n{}", lab.diagnostics()));
    measured(test, "link-up dispatch with no script", done.split("succeeded ").nth(1).unwrap_or(done));
    assert!(done.contains("0 scripts invoked"), "{done}");
}
