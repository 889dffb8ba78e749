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

fn pull_and_replug_case(test: &str, server: DhcpServer) {
    let Some(cfg) = patched_or_skip(test, server) else { return };
    let Some(p) = paired(test, cfg, &[]) else { return };
    let status = p.lab.companion(&["status"]);
    assert!(status.contains("patched") && status.contains("mode: link-up"), "{status}");
    for cycle in 1..=2 {
        let window = pull_and_replug(&format!("{test} (cycle {cycle})"), &p);
        assert_eq!(window, Duration::ZERO, "both links held the address on the LAN\n{}", p.lab.diagnostics());
    }
    handed_back_at_link_up(&p.lab, 2);
}

/// Every re-plug was handed back at `link-up` and no carrier watcher ran:
/// with the companion's `link-up` handling broken, the watcher would still
/// win most races on this daemon, and the tests above would pass through it.
#[test]
fn patched_pull_and_replug_isc_dhcpd() {
    pull_and_replug_case("patched/isc-dhcpd", DhcpServer::IscDhcpd);
}

#[test]
fn patched_pull_and_replug_dnsmasq() {
    pull_and_replug_case("patched/dnsmasq", DhcpServer::Dnsmasq);
}

/// 10 re-plugs with a 5 ms ping and a TCP session running through the
/// backup: `link-up` takes the backup off the LAN before NM lets the wired
/// DHCP client send, so the backup's last frame precedes the wired link's
/// first DHCP packet every time (no race to lose, unlike the watcher on
/// stock NM), and no re-plug comes near the 500 ms of a missed ACK.
#[test]
fn patched_with_traffic_the_backup_leaves_before_the_wired_dhcp_client_speaks() {
    let test = "patched/traffic";
    let Some(cfg) = patched_or_skip(test, DhcpServer::IscDhcpd) else { return };
    let Some(p) = paired(test, cfg, &[]) else { return };
    let lab = &p.lab;
    let diag = |what: String| format!("{test}: {what}\n{}", lab.diagnostics());
    let (samples, tcp) = replugs_under_traffic(&p, 10, |cycle, s| measured(test, &format!("cycle {cycle}"), format!("{s:?}")));
    for (cycle, s) in samples.iter().enumerate() {
        assert!(s.note.is_none() && s.ip_kept, "{}", diag(format!("cycle {cycle}: {s:?}")));
        let replug = s.replug.unwrap_or_else(|| panic!("{}", diag(format!("cycle {cycle}: wired address not seen: {s:?}"))));
        assert!(replug < SLOW_REPLUG, "{}", diag(format!("cycle {cycle}: re-plug took {replug:?}: {s:?}")));
        let lead = s.lead_ms.unwrap_or_else(|| panic!("{}", diag(format!("cycle {cycle}: backup off or first DHCP packet not seen: {s:?}"))));
        assert!(lead > 0.0, "{}", diag(format!("cycle {cycle}: the backup sent {:.1} ms after the wired client's first DHCP packet", -lead)));
        let stall = s.stall.unwrap_or_else(|| panic!("{}", diag(format!("cycle {cycle}: no traffic after the re-plug: {s:?}"))));
        assert!(stall <= SLOW_REPLUG * 3, "{}", diag(format!("cycle {cycle}: the TCP session stalled {stall:?} at the re-plug: {s:?}")));
    }
    let leads: Vec<f64> = samples.iter().filter_map(|s| s.lead_ms).collect();
    measured(test, "backup's last frame before the first wired DHCP packet, median lead (ms)", format!("{:.1}", median(leads)));
    assert!(tcp.survived(), "{}", diag(format!("TCP: {tcp:?}")));
    handed_back_at_link_up(lab, 10);
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
    let (off, (first, packet)) =
        (r.backup_off.expect("the backup never left the LAN"), r.first_wired_dhcp.clone().expect("no DHCP packet from the wired link"));
    let lead =
        first.duration_since(off).unwrap_or_else(|e| panic!("the wired link sent DHCP {:?} BEFORE the backup left the LAN: {packet}\n{r:?}", e.duration()));
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
    // The carrier watcher off: it would set the backup down at the carrier,
    // and this test is about the hand-back's own order (link down, then deactivate).
    let Some(r) = released_lease_case(test, cfg, &["--no-carrier-watch"], Release::ByBackup) else { return };
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

/// Without any script in `link-up.d` NM dispatches nothing and nothing
/// waits (series v2; v1 made one nm-dispatcher round trip per activation).
#[test]
fn patched_link_up_without_scripts_is_not_dispatched() {
    let test = "patched/link-up without scripts";
    let Some(cfg) = patched_or_skip(test, DhcpServer::IscDhcpd) else { return };
    let Some(lab) = start_or_skip(test, cfg) else { return };
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.expect_until("the wired address", Duration::from_secs(30), || lab.ipv4("wired0").is_some());
    let requests = lab.dispatcher_requests();
    assert!(!requests.iter().any(|r| r.action == "link-up"), "link-up was dispatched without a script: {requests:?}\n{}", lab.diagnostics());
    assert!(!lab.nm_log().contains("waits for \"link-up\""), "{}", lab.diagnostics());
    // The same daemon with a script: link-up is dispatched, so the test
    // above can tell a daemon that never dispatches it (an unpatched one).
    let (rel, text) = link_up_script(0.0);
    let script = lab.dir.join("etc/dispatcher.d").join(rel);
    std::fs::create_dir_all(script.parent().unwrap()).expect("link-up.d");
    std::fs::write(&script, text).expect("write the link-up script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("make it executable");
    lab.nmcli(&["connection", "up", "Office LAN"]).expect("activate the wired profile again");
    lab.expect_until("link-up dispatched with a script", Duration::from_secs(10), || lab.dispatcher_requests().iter().any(|r| r.action == "link-up"));
}

/// A `link-up.d` script of the test: records when it starts and ends under
/// the lab's /run, sleeps `secs`.
fn link_up_script(secs: f64) -> (String, String) {
    link_up_script_of(None, secs)
}

/// [`link_up_script`], acting only for `iface` when one is given.
fn link_up_script_of(iface: Option<&str>, secs: f64) -> (String, String) {
    let only = iface.map(|i| format!("[ \"$1\" = {i} ] || exit 0\n")).unwrap_or_default();
    (
        "link-up.d/50-test".into(),
        format!("#!/bin/sh\n{only}[ \"$2\" = link-up ] || exit 0\ndate +%s.%N >> /run/link-up-started\nsleep {secs}\ndate +%s.%N >> /run/link-up-ended\n"),
    )
}

/// Seconds since the epoch the script wrote into `file` under the lab's /run.
fn script_stamps(lab: &Lab, file: &str) -> Vec<std::time::SystemTime> {
    std::fs::read_to_string(lab.dir.join("run").join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .map(|secs| std::time::UNIX_EPOCH + Duration::from_secs_f64(secs))
        .collect()
}

/// A lab on the patched NM with one `link-up.d` script and no companion,
/// the wired profile added but not yet activated.
fn link_up_lab(test: &str, script_secs: f64) -> Option<(Lab, Capture)> {
    let mut cfg = patched_or_skip(test, DhcpServer::IscDhcpd)?;
    cfg.scripts.push(link_up_script(script_secs));
    let lab = start_or_skip(test, cfg)?;
    let capture = Capture::start(&lab, "p-wired0");
    lab.add_ethernet_profile("Office LAN", "wired0", false);
    Some((lab, capture))
}

/// The wired link's first DHCP packet after `since`, waiting up to `timeout` for it.
fn first_wired_dhcp(lab: &Lab, capture: &Capture, since: std::time::SystemTime, timeout: Duration) -> Option<std::time::SystemTime> {
    let mac = lab.mac("wired0");
    let mut first = None;
    let _ = lab.wait_until("the wired link's first DHCP packet", timeout, || {
        first = capture.first_dhcp_from(&mac, since).map(|(t, _)| t);
        first.is_some()
    });
    first
}

/// Activates the wired profile and waits for its first DHCP packet; returns
/// it and when the script started, and records the time between them.
fn dhcp_after_script_start(test: &str, lab: &Lab, capture: &Capture, timeout: Duration) -> (std::time::SystemTime, std::time::SystemTime) {
    let since = std::time::SystemTime::now();
    lab.nmcli(&["connection", "up", "Office LAN"]).expect("activate the wired profile");
    let first = first_wired_dhcp(lab, capture, since, timeout).unwrap_or_else(|| panic!("no DHCP\n{}", lab.diagnostics()));
    let started = script_stamps(lab, "link-up-started");
    assert_eq!(started.len(), 1, "{}", lab.diagnostics());
    measured(test, "script start -> first DHCP packet", ms(first.duration_since(started[0]).unwrap_or_default()));
    (first, started[0])
}

/// NM holds IP configuration until the script returns: the first DHCP
/// packet comes after the script's end, not before.
#[test]
fn patched_link_up_holds_dhcp_until_the_script_returns() {
    let test = "patched/link-up holds DHCP";
    let Some((lab, capture)) = link_up_lab(test, 1.0) else { return };
    let (first, _) = dhcp_after_script_start(test, &lab, &capture, Duration::from_secs(10));
    let ended = script_stamps(&lab, "link-up-ended");
    assert_eq!(ended.len(), 1, "{}", lab.diagnostics());
    assert!(first >= ended[0], "DHCP started {:?} before the script returned\n{}", ended[0].duration_since(first).unwrap_or_default(), lab.diagnostics());
    // ... and soon after it (a daemon that always waited out its timeout would not be).
    let after_end = first.duration_since(ended[0]).unwrap_or_default();
    measured(test, "script end -> first DHCP packet", ms(after_end));
    assert!(after_end < Duration::from_secs(1), "DHCP came {after_end:?} after the script returned\n{}", lab.diagnostics());
    assert!(
        lab.nm_log().contains("IP configuration waits for \"link-up\" dispatcher scripts"),
        "no log line says IP configuration is held\n{}",
        lab.diagnostics()
    );
}

/// A script that does not return in time: NM logs a warning and starts
/// IP configuration after its 5 s limit.
#[test]
fn patched_link_up_wait_ends_at_its_timeout() {
    let test = "patched/link-up timeout";
    let Some((lab, capture)) = link_up_lab(test, 30.0) else { return };
    let (first, started) = dhcp_after_script_start(test, &lab, &capture, Duration::from_secs(15));
    let held = first.duration_since(started).unwrap_or_default();
    // NM's 5 s count starts at the dispatch, a little before the script's own stamp.
    assert!(held >= Duration::from_millis(4500) && held <= Duration::from_millis(6000), "held {held:?}\n{}", lab.diagnostics());
    assert!(lab.nm_log().contains("did not complete within 5000 ms"), "{}", lab.diagnostics());
}

/// A disconnect while the script runs cancels the activation: no DHCP from
/// the wired link, and scripts get `down` after the `link-up`.
#[test]
fn patched_link_up_wait_is_cancelled_by_a_disconnect() {
    let test = "patched/link-up cancelled";
    let Some((lab, capture)) = link_up_lab(test, 3.0) else { return };
    let since = std::time::SystemTime::now();
    lab.nmcli(&["--wait", "0", "connection", "up", "Office LAN"]).expect("activate the wired profile");
    lab.expect_until("the script to start", Duration::from_secs(10), || !script_stamps(&lab, "link-up-started").is_empty());
    lab.nmcli(&["device", "disconnect", "wired0"]).expect("disconnect");
    assert!(first_wired_dhcp(&lab, &capture, since, Duration::from_secs(5)).is_none(), "DHCP after the disconnect\n{}", lab.diagnostics());
    let actions: Vec<String> = lab.dispatcher_requests().into_iter().filter(|r| r.iface.as_deref() == Some("wired0")).map(|r| r.action).collect();
    let link_up = actions.iter().position(|a| a == "link-up").unwrap_or_else(|| panic!("{actions:?}"));
    assert!(actions[link_up..].iter().any(|a| a == "down"), "no down after link-up: {actions:?}\n{}", lab.diagnostics());
}

/// An activation that fails after `link-up` (no DHCP server) ends with
/// `down`, so a script that acted on `link-up` is told.
#[test]
fn patched_link_up_then_failure_dispatches_down() {
    let test = "patched/link-up then failure";
    let Some((mut lab, _capture)) = link_up_lab(test, 0.0) else { return };
    lab.stop_dhcp_server();
    lab.nmcli(&["connection", "modify", "Office LAN", "ipv4.dhcp-timeout", "3", "connection.autoconnect-retries", "1"]).expect("modify");
    lab.nmcli(&["--wait", "0", "connection", "up", "Office LAN"]).expect("activate the wired profile");
    lab.expect_until("the activation to fail", Duration::from_secs(20), || lab.nm_log().contains("(wired0): state change: ip-config -> failed"));
    lab.expect_until("down dispatched for wired0", Duration::from_secs(5), || {
        let actions: Vec<String> = lab.dispatcher_requests().into_iter().filter(|r| r.iface.as_deref() == Some("wired0")).map(|r| r.action).collect();
        actions.iter().position(|a| a == "link-up").is_some_and(|i| actions[i..].iter().any(|a| a == "down"))
    });
}

/// The companion uses the `down` that ends a failed activation: the cable
/// comes back on a port where DHCP gets no answer; `link-up` took the backup
/// off the LAN, the wired activation fails, and the backup comes back with
/// the same address instead of leaving the laptop offline.
#[test]
fn patched_failed_wired_activation_brings_the_backup_back() {
    let test = "patched/failed wired activation";
    let Some(cfg) = patched_or_skip(test, DhcpServer::IscDhcpd) else { return };
    let Some(p) = paired(test, cfg, &[]) else { return };
    let lab = &p.lab;
    lab.nmcli(&["connection", "modify", "Office LAN", "ipv4.dhcp-timeout", "3", "connection.autoconnect-retries", "1"]).expect("modify");
    lab.pull_cable();
    lab.expect_until("the backup to hold the address", Duration::from_secs(20), || lab.ipv4("backup0") == Some(p.addr));
    // The cable comes back on a port that is not on the LAN (another VLAN, a dead port).
    let out = lab.run_in_lan(&["ip", "link", "set", "p-wired0", "nomaster"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lab.plug_cable();
    lab.expect_until("link-up to take the backup off the LAN", Duration::from_secs(10), || lab.ipv4("backup0").is_none());
    let back = lab.expect_until("the backup to hold the address again", Duration::from_secs(30), || lab.ipv4("backup0") == Some(p.addr));
    measured(test, "plug -> backup holds the address again (wired DHCP timeout 3 s)", ms(back));
    assert!(
        lab.dispatcher_log().contains("wired activation failed with carrier present"),
        "the companion did not act on the down of the failed activation\n{}",
        lab.diagnostics()
    );
}

/// The `link-up` requests NM dispatched for `iface`.
fn link_ups_of(lab: &Lab, iface: &str) -> usize {
    lab.dispatcher_requests().iter().filter(|r| r.action == "link-up" && r.iface.as_deref() == Some(iface)).count()
}

/// Reapply runs stage 3 again (also once the device is activated); it
/// dispatches no second `link-up`.
#[test]
fn patched_link_up_not_dispatched_again_on_reapply() {
    let test = "patched/link-up and reapply";
    let Some((lab, _capture)) = link_up_lab(test, 0.0) else { return };
    lab.nmcli(&["connection", "up", "Office LAN"]).expect("activate the wired profile");
    lab.expect_until("the wired address", Duration::from_secs(20), || lab.ipv4("wired0").is_some());
    assert_eq!(link_ups_of(&lab, "wired0"), 1, "{}", lab.diagnostics());
    lab.nmcli(&["device", "reapply", "wired0"]).expect("reapply");
    lab.expect_until("reapply to complete", Duration::from_secs(10), || lab.nm_log().contains("(wired0): reapply"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(link_ups_of(&lab, "wired0"), 1, "reapply dispatched link-up again\n{}", lab.diagnostics());
    assert_eq!(script_stamps(&lab, "link-up-started").len(), 1, "{}", lab.diagnostics());
}

/// A device that does not require carrier (ignore-carrier) and has none
/// when IP configuration starts gets no `link-up` in that activation: its
/// static address is configured at once. When the carrier comes and a
/// reapply runs stage 3 again during IP configuration (here: the address's
/// conflict detection still runs), `link-up` must not come now, after the
/// address (review of v2, F2).
#[test]
fn patched_link_up_never_after_ip_configuration_started_without_carrier() {
    let test = "patched/link-up and ignore-carrier";
    let Some(mut cfg) = patched_or_skip(test, DhcpServer::IscDhcpd) else { return };
    cfg.scripts.push(link_up_script(0.0));
    cfg.extra_nm_conf.push_str("\n[device-wired0-ignore-carrier]\nmatch-device=interface-name:wired0\nignore-carrier=yes\n");
    let Some(lab) = start_or_skip(test, cfg) else { return };
    lab.add_profile(
        "ethernet",
        "Office LAN",
        "wired0",
        &["connection.autoconnect", "no", "ipv4.method", "manual", "ipv4.addresses", "198.18.0.50/24", "ipv4.dad-timeout", "8000", "ipv6.method", "disabled"],
    )
    .expect("add a static profile");
    lab.set_cable("wired0", false);
    lab.nmcli(&["--wait", "0", "connection", "up", "Office LAN"]).expect("activate without carrier");
    lab.expect_until("IP configuration without carrier", Duration::from_secs(15), || lab.nm_log().contains("(wired0): state change: config -> ip-config"));
    lab.set_cable("wired0", true);
    std::thread::sleep(Duration::from_secs(1));
    lab.nmcli(&["device", "reapply", "wired0"]).expect("reapply during IP configuration");
    lab.expect_until("reapply to run", Duration::from_secs(10), || lab.nm_log().contains("(wired0): reapply"));
    // v2 dispatched link-up from the reapply's stage 3 at once; give it time.
    let dispatched = lab.wait_until("a link-up after the reapply", Duration::from_secs(4), || link_ups_of(&lab, "wired0") > 0);
    assert!(dispatched.is_err(), "link-up after IP configuration had started\n{}", lab.diagnostics());
    assert!(script_stamps(&lab, "link-up-started").is_empty(), "{}", lab.diagnostics());
}

/// A bridge (a controller: the host kernel has no bonding) with a static
/// IPv6 address and DHCPv4: the static address is configured before the
/// bridge has carrier and can complete the activation while the `link-up`
/// script runs; DHCP still waits for the script (F1).
#[test]
fn patched_link_up_holds_a_controllers_dhcp_when_static_addresses_complete() {
    let test = "patched/link-up on a bridge";
    let Some((lab, capture)) = link_up_lab(test, 3.0) else { return };
    let ipv6 = format!("{PREFIX6}::10/64");
    let bridge = [
        "bridge.stp",
        "no",
        "connection.autoconnect",
        "no",
        "connection.autoconnect-slaves",
        "yes",
        "ipv4.method",
        "auto",
        "ipv6.method",
        "manual",
        "ipv6.addresses",
        &ipv6,
    ];
    lab.add_profile("bridge", "Bridge", "bridge0", &bridge).expect("add the bridge profile");
    lab.add_profile("ethernet", "Bridge port", "wired0", &["master", "bridge0", "slave-type", "bridge", "connection.autoconnect", "no"])
        .expect("add the bridge's port");
    let since = std::time::SystemTime::now();
    lab.nmcli(&["--wait", "0", "connection", "up", "Bridge"]).expect("activate the bridge");
    let mut first = None;
    lab.expect_until("the bridge's first DHCP packet", Duration::from_secs(20), || {
        let exists = lab.run_in_host(&["ip", "link", "show", "dev", "bridge0"]).status.success();
        first = exists.then(|| capture.first_dhcp_from(&lab.mac("bridge0"), since)).flatten().map(|(t, _)| t);
        first.is_some()
    });
    let first = first.expect("a DHCP packet");
    lab.expect_until("the link-up script to return", Duration::from_secs(10), || !script_stamps(&lab, "link-up-ended").is_empty());
    let ended = script_stamps(&lab, "link-up-ended");
    assert_eq!(ended.len(), 1, "the link-up script did not run once for the bridge\n{}", lab.diagnostics());
    assert_eq!(link_ups_of(&lab, "bridge0"), 1, "{}", lab.diagnostics());
    assert!(
        lab.nm_log().contains("(bridge0): state change: ip-config -> ip-check"),
        "the static address did not complete the activation during the wait\n{}",
        lab.diagnostics()
    );
    assert!(
        first >= ended[0],
        "the bridge's DHCP started {:?} before its link-up script returned\n{}",
        ended[0].duration_since(first).unwrap_or_default(),
        lab.diagnostics()
    );
    measured(test, "script end -> first DHCP packet of the bridge", ms(first.duration_since(ended[0]).unwrap_or_default()));
}

/// A `link-up.d` script that waits in nm-dispatcher's queue behind a slow
/// script of another device: NM stops waiting after 5 s and starts DHCP; the
/// script still runs afterwards (the man page says so).
#[test]
fn patched_link_up_queued_behind_a_slow_script_times_out() {
    let test = "patched/link-up queued";
    let (lab, capture) = match queue_lab(test, false) {
        Some(lab) => lab,
        None => return,
    };
    let (first, started) = activate_behind_the_slow_script(test, &lab, &capture);
    let held = first.duration_since(started).unwrap_or_default();
    assert!(held >= Duration::from_millis(4500) && held <= Duration::from_millis(6000), "DHCP held {held:?}\n{}", lab.diagnostics());
    assert!(lab.nm_log().contains("did not complete within 5000 ms"), "{}", lab.diagnostics());
    let script = lab.expect_until("the queued script to run after all", Duration::from_secs(15), || !script_stamps(&lab, "link-up-started").is_empty());
    let script_start = script_stamps(&lab, "link-up-started")[0];
    assert!(script_start > first, "the queued script started before DHCP\n{}", lab.diagnostics());
    measured(test, "activation -> queued script start", ms(script));
}

/// The same, with the `link-up.d` entry a symlink into `no-wait.d`: it starts
/// at once, and NM waits for it as for any `link-up` script.
#[test]
fn patched_link_up_no_wait_script_is_not_queued() {
    let test = "patched/link-up no-wait";
    let Some((lab, capture)) = queue_lab(test, true) else { return };
    let (first, started) = activate_behind_the_slow_script(test, &lab, &capture);
    let script_start = script_stamps(&lab, "link-up-started");
    let script_end = script_stamps(&lab, "link-up-ended");
    assert_eq!((script_start.len(), script_end.len()), (1, 1), "{}", lab.diagnostics());
    let queued = script_start[0].duration_since(started).unwrap_or_default();
    measured(test, "activation -> no-wait script start", ms(queued));
    assert!(queued < Duration::from_secs(2), "the no-wait script waited {queued:?} in the queue\n{}", lab.diagnostics());
    assert!(first >= script_end[0], "DHCP started before the no-wait script returned\n{}", lab.diagnostics());
    assert!(!lab.nm_log().contains("did not complete within"), "{}", lab.diagnostics());
}

/// A lab whose dispatcher.d holds a script that takes 8 s on `up` of
/// backup0, and a `link-up` script of 1 s (through no-wait.d if `no_wait`).
fn queue_lab(test: &str, no_wait: bool) -> Option<(Lab, Capture)> {
    let mut cfg = patched_or_skip(test, DhcpServer::IscDhcpd)?;
    cfg.scripts.push(("10-slow-up".into(), "#!/bin/sh\n[ \"$1\" = backup0 ] && [ \"$2\" = up ] && sleep 8\nexit 0\n".into()));
    // Only for the wired link: backup0's own activation dispatches link-up too.
    let (rel, text) = link_up_script_of(Some("wired0"), 1.0);
    if no_wait {
        cfg.scripts.push(("no-wait.d/50-test".into(), text));
    } else {
        cfg.scripts.push((rel, text));
    }
    let lab = start_or_skip(test, cfg)?;
    if no_wait {
        let dir = lab.dir.join("etc/dispatcher.d/link-up.d");
        std::fs::create_dir_all(&dir).expect("link-up.d");
        std::os::unix::fs::symlink("../no-wait.d/50-test", dir.join("50-test")).expect("link the script into link-up.d");
    }
    let capture = Capture::start(&lab, "p-wired0");
    lab.add_ethernet_profile("Office LAN", "wired0", false);
    lab.add_ethernet_profile("Other LAN", "backup0", false);
    Some((lab, capture))
}

/// Activates backup0 (its `up` occupies nm-dispatcher for 8 s), then the
/// wired profile; returns the wired link's first DHCP packet and when the
/// wired activation was asked for.
fn activate_behind_the_slow_script(test: &str, lab: &Lab, capture: &Capture) -> (std::time::SystemTime, std::time::SystemTime) {
    lab.nmcli(&["connection", "up", "Other LAN"]).expect("activate backup0");
    lab.expect_until("the slow up script to run", Duration::from_secs(10), || {
        lab.dispatcher_requests().iter().any(|r| r.action == "up" && r.iface.as_deref() == Some("backup0"))
    });
    let started = std::time::SystemTime::now();
    lab.nmcli(&["--wait", "0", "connection", "up", "Office LAN"]).expect("activate the wired profile");
    let first = first_wired_dhcp(lab, capture, started, Duration::from_secs(15)).unwrap_or_else(|| panic!("no DHCP\n{}", lab.diagnostics()));
    measured(test, "activation -> first DHCP packet", ms(first.duration_since(started).unwrap_or_default()));
    (first, started)
}

/// A foreign dispatcher script that takes 3 s on every event, and an event
/// of the backup just before the re-plug (here a reapply; in life a DHCP
/// renewal, a VPN): with the companion's `link-up.d` entry a waiting script,
/// the re-plug's `link-up` queues behind it and DHCP waits; linked into
/// no-wait.d (as meson-compat installs it) it starts at once.
fn replug_behind_a_slow_foreign_script(test: &str, companion_waits: bool) -> Option<Duration> {
    let mut cfg = patched_or_skip(test, DhcpServer::IscDhcpd)?;
    cfg.companion_waits = companion_waits;
    cfg.scripts.push(("50-slow-vpn-check".into(), "#!/bin/sh\nsleep 3\nexit 0\n".into()));
    let p = paired(test, cfg, &[])?;
    let lab = &p.lab;
    lab.pull_cable();
    lab.expect_until("the backup to hold the address", Duration::from_secs(30), || lab.ipv4("backup0") == Some(p.addr));
    // The slow script's queue from the pull settles first.
    std::thread::sleep(Duration::from_secs(10));
    lab.nmcli(&["device", "reapply", "backup0"]).expect("an event of the backup");
    lab.expect_until("the reapply event", Duration::from_secs(5), || lab.dispatcher_requests().iter().any(|r| r.action == "reapply"));
    let plug = std::time::Instant::now();
    lab.plug_cable();
    lab.expect_until("the wired link to hold the address", Duration::from_secs(30), || lab.ipv4("wired0") == Some(p.addr));
    let took = plug.elapsed();
    measured(test, "re-plug -> wired holds the address, behind a 3 s script's request", ms(took));
    if !companion_waits {
        handed_back_at_link_up(lab, 1);
    }
    Some(took)
}

#[test]
fn patched_a_slow_foreign_script_does_not_delay_link_up() {
    let Some(no_wait) = replug_behind_a_slow_foreign_script("patched/slow foreign script, link-up no-wait", false) else { return };
    assert!(no_wait <= replug_bound(false), "the re-plug took {no_wait:?} behind a slow foreign script");
    // The control: a waiting link-up.d entry queues behind the slow request.
    let waiting = replug_behind_a_slow_foreign_script("patched/slow foreign script, link-up waiting (control)", true).expect("the lab ran above");
    assert!(waiting > no_wait + Duration::from_secs(1), "control: the waiting layout took {waiting:?}, no-wait {no_wait:?}: the slow script delayed neither");
}
