//! The backup on real 802.11: the tests share one boot of the Wi-Fi VM
//! (`support/vm.rs`) and each runs inside it with two mac80211_hwsim radios, an access point
//! (hostapd, WPA2-PSK) bridged onto the LAN beside the wired veth, and
//! NetworkManager + wpa_supplicant managing the station `wlan0`. Stock
//! NetworkManager 1.42 and the patched 1.42 backport.
//!
//! Needs root and what tests/setup-debian.sh installs; otherwise every test
//! says why it skips (and fails under CI, which must skip nothing).

mod support;

use std::time::{Duration, Instant};

use support::*;

/// How long a re-plug's `link-up` may hold NetworkManager's DHCP client in
/// the Wi-Fi VM: 3x the longest answer on the supervisor's word (0.85 s).
const LINK_UP_HOLD: Duration = Duration::from_millis(2500);

/// How long each `link-up` of `iface` held its activation, from NM's log.
fn link_up_holds(lab: &Lab, iface: &str) -> Vec<Duration> {
    let prefix = format!("({iface}): Activation: \"link-up\" dispatcher scripts completed after ");
    lab.nm_log().lines().filter_map(|l| l.split_once(&prefix)?.1.strip_suffix(" ms")?.trim().parse().ok()).map(Duration::from_millis).collect()
}

fn pull_and_replug_twice(test: &str, cfg: LabConfig) {
    let stock = !cfg.companion_dirs.contains(&"link-up.d");
    let Some(p) = paired(test, cfg.with_wifi(), &[]) else { return };
    pull_and_replug(test, &p);
    pull_and_replug(&format!("{test} (second cycle)"), &p);
    if !stock {
        handed_back_at_link_up(&p.lab, 2);
        // NetworkManager holds DHCP for `link-up` (5 s at most): the companion
        // started by nm-dispatcher held it 2.9-4.8 s here beside the backup's
        // own events; answered on the supervisor's fast path, 0.3-0.9 s.
        let held = link_up_holds(&p.lab, "wired0");
        measured(test, "re-plug: NetworkManager held DHCP for link-up, longest", ms(held.iter().copied().max().unwrap_or_default()));
        assert!(held.len() >= 2 && held.iter().all(|&h| h <= LINK_UP_HOLD), "{test}: link-up held {held:?}, bound {LINK_UP_HOLD:?}\n{}", p.lab.diagnostics());
    }
    if stock {
        // The carrier watcher took the station off the LAN at each re-plug
        // (it once gave up while NM changed the station's MAC during association).
        let log = p.lab.dispatcher_log();
        let acted = log.matches("nm-handover-watch: stopped: wired0 has carrier again: took wlan0 off the LAN").count();
        assert_eq!(acted, 2, "{test}: the carrier watcher acted {acted} times in 2 re-plugs\n{}", p.lab.diagnostics());
    }
}

#[test]
fn pull_and_replug_on_wifi_stock_nm_1_42() {
    in_shared_vm("pull_and_replug_on_wifi_stock_nm_1_42", || {
        pull_and_replug_twice("wifi/stock 1.42", LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal));
    });
}

/// The patched NetworkManager built by nm-patch/build (handed into the VM).
fn pull_and_replug_on_patched(name: &str, version: &str) {
    in_shared_vm(name, || {
        let cfg = LabConfig::patched_version(DhcpServer::IscDhcpd, DhcpClient::Internal, version)
            .unwrap_or_else(|why| panic!("the patched {version} is part of the Wi-Fi lab: {why}"));
        pull_and_replug_twice(&format!("wifi/patched {version}"), cfg);
    });
}

#[test]
fn pull_and_replug_on_wifi_patched_nm_1_42() {
    pull_and_replug_on_patched("pull_and_replug_on_wifi_patched_nm_1_42", "1.42.4");
}

#[test]
fn pull_and_replug_on_wifi_patched_nm_1_58() {
    pull_and_replug_on_patched("pull_and_replug_on_wifi_patched_nm_1_58", "1.58.1");
}

/// Two boots of NetworkManager in the VM differ by seconds in when
/// wpa_supplicant is ready and when its first scan lists the network, with
/// or without nm-handover: the paired laptop is judged from that scan on
/// (see [`judge_return`]: asked for the Wi-Fi within 1 s of it, once,
/// associated within 8 s, its IP configuration no slower than the
/// control's plus 2 s), and the whole boot only loosely against the
/// control's (twice it).
#[test]
fn boot_with_the_cable_out_brings_up_the_wifi() {
    in_shared_vm("boot_with_the_cable_out_brings_up_the_wifi", || {
        let test = "wifi/boot with the cable out";
        // The control: the same profiles unpaired, the Wi-Fi connecting automatically.
        let Some(mut control) = start_or_skip(&format!("{test} (control)"), LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi()) else {
            return;
        };
        control.add_ethernet_profile("Office LAN", "wired0", true);
        control.add_wifi_profile("Office Wi-Fi", "wlan0");
        control.nmcli(&["connection", "modify", "Office Wi-Fi", "connection.autoconnect", "yes"]).expect("autoconnect the control's Wi-Fi");
        control.expect_until("the control's Wi-Fi", Duration::from_secs(90), || control.ipv4("wlan0").is_some());
        let since = control.nm_log().lines().count();
        control.reboot_nm(|lab| lab.pull_cable());
        let control_took = control.expect_until("the control's Wi-Fi after the boot", Duration::from_secs(90), || control.ipv4("wlan0").is_some());
        let control_boot = wifi_return(&control, test, since);
        let control_late = boot_with_the_wifi_late(&mut control, None);
        drop(control);
        let Some(mut p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi(), &[]) else { return };
        let since = p.lab.nm_log().lines().count();
        p.lab.reboot_nm(|lab| lab.pull_cable());
        let lab = &p.lab;
        let took = lab.expect_until("the Wi-Fi to come up with the wired address", Duration::from_secs(60), || lab.ipv4("wlan0") == Some(p.addr));
        measured(test, "NM start -> Wi-Fi holds the address: control / paired", format!("{} / {}", ms(control_took), ms(took)));
        judge_return(lab, test, "boot", &control_boot, &wifi_return(lab, test, since));
        assert!(took <= control_took * 2, "{test}: paired {took:?}, control {control_took:?}\n{}", lab.diagnostics());
        let wired_mac = lab.mac("wired0");
        assert_eq!(lab.ap_stations(), std::slice::from_ref(&wired_mac), "{}", lab.diagnostics());
        assert!(lab.ipv4("wired0").is_none());
        connected(lab, test);
        let server_log = lab.server_log();
        let acks: Vec<&str> = server_log.lines().filter(|l| l.contains("DHCPACK")).collect();
        assert!(!acks.is_empty() && acks.iter().all(|l| l.contains(&wired_mac)), "{test}: DHCP server saw {acks:?}, not only {wired_mac}");
        // The cable plugged in after such a boot: the wired link takes the address back and the station leaves.
        lab.plug_cable();
        let took = lab.expect_until("the wired link back with the address", Duration::from_secs(60), || lab.ipv4("wired0") == Some(p.addr));
        measured(test, "re-plug after the boot -> wired holds the address", ms(took));
        lab.expect_until("the station to leave the access point", Duration::from_secs(30), || lab.ap_stations().is_empty());
        assert!(!lab.server_log().contains("Abandoning IP address"), "{}", lab.diagnostics());
        // A boot where the Wi-Fi device appears only after NetworkManager started.
        let late = boot_with_the_wifi_late(&mut p.lab, Some(p.addr));
        measured(
            test,
            "Wi-Fi device ready late: device appears -> Wi-Fi holds the address: control / paired",
            format!("{} / {}", ms(control_late.0), ms(late.0)),
        );
        judge_return(&p.lab, test, "Wi-Fi device ready late", &control_late.1, &late.1);
        assert!(late.0 <= control_late.0 * 2, "{test}: device late: paired {late:?}, control {control_late:?}\n{}", p.lab.diagnostics());
        assert_eq!(p.lab.ap_stations(), [p.lab.mac("wired0")], "{}", p.lab.diagnostics());
        connected(&p.lab, test);
        assert!(!p.lab.server_log().contains("Abandoning IP address"), "{}", p.lab.diagnostics());
    });
}

/// NetworkManager restarted with the cable out and the Wi-Fi device not
/// there yet, which appears 5 s later: the time from its appearance until
/// the Wi-Fi holds an address (`addr`, where given), and the network's
/// return as NetworkManager's log tells it from the restart on.
fn boot_with_the_wifi_late(lab: &mut Lab, addr: Option<std::net::Ipv4Addr>) -> (Duration, Return) {
    let since = lab.nm_log().lines().count();
    lab.reboot_nm(|lab| {
        lab.pull_cable();
        lab.set_station_radio_present(false);
    });
    std::thread::sleep(Duration::from_secs(5));
    lab.set_station_radio_present(true);
    let took = lab.expect_until("the Wi-Fi to come up once its device appeared", Duration::from_secs(90), || match addr {
        Some(addr) => lab.ipv4("wlan0") == Some(addr),
        None => lab.ipv4("wlan0").is_some(),
    });
    (took, wifi_return(lab, "wifi/boot with the Wi-Fi late", since))
}

/// The access point is off the air when the cable is pulled: the activation
/// fails with a clear line, the companion does not retry in a loop, the
/// re-plug still brings the wired link back with its address, and once the
/// access point is back the next pull hands over.
#[test]
fn access_point_unavailable_at_the_pull_then_replug() {
    in_shared_vm("access_point_unavailable_at_the_pull_then_replug", || {
        let test = "wifi/access point unavailable";
        let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi(), &[]) else { return };
        let lab = &p.lab;
        lab.set_access_point(false);
        lab.pull_cable();
        // NM gives up on an SSID it cannot find after its scan rounds.
        lab.expect_until("the Wi-Fi activation to fail", Duration::from_secs(120), || {
            lab.nm_log().contains("Activation: failed for connection 'Office Wi-Fi'")
        });
        std::thread::sleep(Duration::from_secs(10));
        let attempts = lab.nm_log().matches("Activation: starting connection 'Office Wi-Fi'").count();
        measured(test, "activations of the Wi-Fi while the AP was off", attempts);
        assert!(attempts <= 2, "{test}: a retry storm: {attempts} activations\n{}", lab.diagnostics());
        let log = lab.dispatcher_log();
        assert!(!log.contains("panicked"), "{log}");
        assert!(lab.ipv4("wlan0").is_none());
        lab.plug_cable();
        lab.expect_until("the wired link back", Duration::from_secs(60), || lab.ipv4("wired0") == Some(p.addr));
        // Back on the air, the next pull hands over as if nothing had happened.
        lab.set_access_point(true);
        // NM may still list the AP from before it went off: wait for a scan from after it came back.
        lab.expect_until("a fresh scan to see the access point", Duration::from_secs(90), || {
            lab.nmcli(&["-t", "-f", "SSID", "device", "wifi", "list", "--rescan", "yes"]).is_ok_and(|list| list.lines().any(|l| l == WIFI_SSID))
        });
        lab.pull_cable();
        let took = lab.expect_until("the Wi-Fi to hold the address once the AP is back", Duration::from_secs(60), || lab.ipv4("wlan0") == Some(p.addr));
        measured(test, "pull with the AP back -> Wi-Fi holds the address", ms(took));
        assert_eq!(lab.ap_stations(), [lab.mac("wired0")], "{}", lab.diagnostics());
    });
}

/// MAC randomisation on the Wi-Fi (random scanning MACs, a profile's own
/// `cloned-mac-address` of `random` or `stable`) never puts any MAC but the
/// wired one in front of the DHCP server or the access point; `unpair` gives
/// the profile its own setting back.
#[test]
fn mac_randomisation_never_reaches_the_dhcp_server() {
    in_shared_vm("mac_randomisation_never_reaches_the_dhcp_server", || {
        let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi();
        cfg.extra_nm_conf = "[device-wifi]\nmatch-device=interface-name:wlan0\nwifi.scan-rand-mac-address=yes\n".into();
        let set_mode = |lab: &Lab, mode: &str| {
            lab.nmcli(&["connection", "modify", "Office Wi-Fi", "wifi.cloned-mac-address", mode]).expect("set the profile's MAC mode");
        };
        let Some(p) = paired_with("wifi/cloned-mac-address random, scan-rand-mac-address on", cfg, &[], |lab| set_mode(lab, "random")) else {
            return;
        };
        // One lab, both modes: paired again after `unpair` gave the first back.
        for mode in ["random", "stable"] {
            let test = format!("wifi/cloned-mac-address {mode}, scan-rand-mac-address on");
            let since = p.lab.server_log().lines().count();
            if mode != "random" {
                set_mode(&p.lab, mode);
                p.lab.companion_logging_to("dispatcher.log", &["pair", "Office LAN", "Office Wi-Fi"]);
            }
            pull_and_replug(&test, &p);
            let wired_mac = p.lab.mac("wired0");
            let server_log = p.lab.server_log();
            let macs: Vec<&str> = server_log
                .lines()
                .skip(since)
                .filter(|l| l.contains("DHCP"))
                .filter_map(|l| l.split(" from ").nth(1).or_else(|| l.split(" to ").nth(1)))
                .filter_map(|rest| rest.split_whitespace().next())
                .collect();
            assert!(!macs.is_empty() && macs.iter().all(|m| *m == wired_mac), "{test}: the DHCP server saw {macs:?}, not only {wired_mac}");
            p.lab.companion(&["unpair", "Office LAN"]);
            let restored = p.lab.nmcli(&["-g", "802-11-wireless.cloned-mac-address", "connection", "show", "Office Wi-Fi"]).unwrap();
            assert_eq!(restored.trim(), mode, "{test}: unpair must restore the profile's MAC mode");
        }
    });
}

/// The standby profile `pair --standby` keeps up on the Wi-Fi (see `src/standby.rs`).
const STANDBY: &str = "Office Wi-Fi (nm-handover standby)";

fn host_sysctl(lab: &Lab, path: &str) -> String {
    String::from_utf8_lossy(&lab.run_in_host(&["cat", path]).stdout).trim().to_owned()
}

/// Waits for the warm standby to be up, associated with the wired MAC and
/// silent: no IPv4 or IPv6 on the link, no ARP replies for other links' addresses.
fn standby_ready(test: &str, p: &Paired) {
    let lab = &p.lab;
    let diag = |what: &str| format!("{test}: {what}\n{}", lab.diagnostics());
    lab.wait_until("the warm standby to be activated", Duration::from_secs(60), || nm_state(lab, STANDBY) == "activated")
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    let wired_mac = lab.mac("wired0");
    assert_eq!(lab.ap_stations(), std::slice::from_ref(&wired_mac), "{}", diag("the standby associates with the wired MAC"));
    assert_eq!(lab.ipv4("wlan0"), None, "{}", diag("a standby with an IPv4 address"));
    assert_eq!(host_sysctl(lab, "/proc/sys/net/ipv6/conf/wlan0/disable_ipv6"), "1", "{}", diag("IPv6 on the standby's link"));
    assert_eq!(host_sysctl(lab, "/proc/sys/net/ipv4/conf/wlan0/arp_ignore"), "1", "{}", diag("the standby's link answers ARP for the wired address"));
    assert_eq!(host_sysctl(lab, "/proc/sys/net/ipv4/conf/wired0/ignore_routes_with_linkdown"), "1", "{}", diag("the wired link's routes outlive its carrier"));
    assert!(nm_state(lab, p.backup_profile).is_empty(), "{}", diag("the backup profile itself is up beside its standby"));
}

/// One pull and re-plug with the warm standby: the address moves to the
/// associated Wi-Fi link at the pull and back at the re-plug, the standby
/// stays associated throughout; returns the 100 Hz ping's longest gap at each.
fn standby_cycle(test: &str, p: &Paired) -> (Duration, Duration) {
    let lab = &p.lab;
    let diag = |what: &str| format!("{test}: {what}\n{}", lab.diagnostics());
    standby_ready(test, p);
    let monitor = NetMonitor::start(lab);
    let probe = Probe::start(lab);
    let tcp = TcpSession::open(lab);
    assert!(tcp.wait_for_traffic(5, Duration::from_secs(5)), "{}", diag("no TCP traffic before the pull"));
    let log_mark = lab.server_log().lines().count();

    let (pull, pulled_at) = (Instant::now(), std::time::SystemTime::now());
    lab.pull_cable();
    lab.wait_until("the standby to hold the wired address", Duration::from_secs(10), || lab.ipv4("wlan0") == Some(p.addr))
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    let took = monitor.address_added_at(pull, "wlan0", p.addr).map_or(pull.elapsed(), |t| t - pull);
    measured(test, "pull -> the standby holds the same address", ms(took));
    assert!(tcp.wait_for_traffic(10, Duration::from_secs(10)), "{}", diag(&format!("TCP after the pull: {:?}", tcp.report())));
    // NetworkManager adopts the address (the standby reapplied with the backup's IP settings) and its DHCP client renews the lease.
    lab.wait_until("NetworkManager to hold the address on the standby", Duration::from_secs(15), || {
        lab.nmcli(&["-g", "IP4.ADDRESS", "device", "show", "wlan0"]).is_ok_and(|a| a.contains(&p.addr.to_string()))
    })
    .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    std::thread::sleep(Duration::from_secs(2));
    let pull_gap = probe.longest_gap(pulled_at, std::time::SystemTime::now()).unwrap_or_else(|| panic!("{}", diag("no ping reply around the pull")));
    measured(test, "pull: longest gap of a 100 Hz ping", ms(pull_gap));
    assert_eq!(nm_state(lab, STANDBY), "activated", "{}", diag("the standby went down at the pull"));
    assert!(nm_state(lab, p.backup_profile).is_empty(), "{}", diag("the dispatcher's down activated the backup over its serving standby"));
    assert!(lab.ipv4("wired0").is_none());
    let pull_dhcp = server_requests(lab, log_mark);
    measured(test, "pull: DHCP messages at the server", pull_dhcp.join(" | "));
    assert!(pull_dhcp.iter().all(|l| !l.contains("DISCOVER")), "{}", diag("the standby's DHCP client started over instead of renewing"));
    tcp.reset_stall();

    let log_mark = lab.server_log().lines().count();
    let (plug, plugged_at) = (Instant::now(), std::time::SystemTime::now());
    lab.plug_cable();
    lab.wait_until("the wired link to hold the address again", Duration::from_secs(30), || lab.ipv4("wired0") == Some(p.addr))
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    let wired_back = monitor.address_added_at(plug, "wired0", p.addr).map_or(plug.elapsed(), |t| t - plug);
    measured(test, "re-plug -> wired holds the address", ms(wired_back));
    let window = monitor.double_address_window(plug, p.addr, "wired0", "wlan0").expect("wired address event");
    measured(test, "re-plug: both links held the address", ms(window));
    assert_eq!(window, Duration::ZERO, "{}", diag("the standby still held the address when the wired link got it"));
    assert!(tcp.wait_for_traffic(10, Duration::from_secs(10)), "{}", diag(&format!("TCP after the re-plug: {:?}", tcp.report())));
    // NetworkManager's own DHCP exchange on the wired link confirms the address (adopting it where the fast path put it there first).
    lab.wait_until("NetworkManager to hold the address on the wired link", Duration::from_secs(30), || {
        lab.nmcli(&["-g", "IP4.ADDRESS", "device", "show", "wired0"]).is_ok_and(|a| a.contains(&p.addr.to_string()))
            && nm_state(lab, "Office LAN") == "activated"
    })
    .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    let replug_dhcp = server_requests(lab, log_mark);
    measured(test, "re-plug: DHCP messages at the server", replug_dhcp.join(" | "));
    assert!(replug_dhcp.iter().any(|l| l.contains("DHCPACK")) && replug_dhcp.iter().all(|l| !l.contains("DISCOVER")), "{}", diag("the wired DHCP exchange"));
    std::thread::sleep(Duration::from_secs(2));
    let replug_gap = probe.longest_gap(plugged_at, std::time::SystemTime::now()).unwrap_or_else(|| panic!("{}", diag("no ping reply around the re-plug")));
    measured(test, "re-plug: longest gap of a 100 Hz ping", ms(replug_gap));
    let report = tcp.close();
    assert!(report.survived(), "{}", diag(&format!("the TCP session must survive: {report:?}")));
    // Warm for the next pull: still associated, silent again in NetworkManager's view too.
    lab.wait_until("the standby silent again", Duration::from_secs(15), || {
        lab.nmcli(&["-g", "IP4.ADDRESS", "device", "show", "wlan0"]).is_ok_and(|a| a.trim().is_empty()) && lab.ipv4("wlan0").is_none()
    })
    .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    assert_eq!(nm_state(lab, STANDBY), "activated", "{}", diag("the standby went down at the re-plug"));
    assert!(!lab.server_log().contains("Abandoning IP address"), "{}", diag("the server abandoned the address"));
    (pull_gap, replug_gap)
}

/// The user's radio switch while docked takes the standby down with the
/// radio; the radio back on brings it back (the next cycle hands over warm).
fn radio_switch_while_docked(test: &str, p: &Paired) {
    let lab = &p.lab;
    standby_ready(test, p);
    lab.nmcli(&["radio", "wifi", "off"]).expect("radio off");
    lab.expect_until("the standby down with the radio", Duration::from_secs(30), || nm_state(lab, STANDBY).is_empty());
    assert!(lab.ap_stations().is_empty(), "{test}: the station stayed associated with the radio off\n{}", lab.diagnostics());
    assert_eq!(lab.ipv4("wired0"), Some(p.addr), "{test}: the wired link lost its address");
    // Past the supervisor's looks: nothing brings the Wi-Fi up with the radio off.
    std::thread::sleep(Duration::from_secs(5));
    assert!(nm_state(lab, STANDBY).is_empty() && nm_state(lab, p.backup_profile).is_empty(), "{test}: {}", lab.diagnostics());
    lab.nmcli(&["radio", "wifi", "on"]).expect("radio on");
    // rfkill is not per network namespace: the access point went off the air too.
    lab.restart_access_point();
}

/// Two pulls and re-plugs with the warm standby, `between` them, then `unpair`.
fn warm_standby_twice(test: &str, cfg: LabConfig, between: impl FnOnce(&str, &Paired)) {
    let patched = cfg.companion_dirs.contains(&"link-up.d");
    let Some(p) = paired(test, cfg.with_wifi(), &["--standby"]) else { return };
    let mut between = Some(between);
    for cycle in 1..=2 {
        let (pull, _replug) = standby_cycle(&format!("{test} (cycle {cycle})"), &p);
        // The goal is the bond's outage (bench-results/wifi-anchors.md); this bounds a regression.
        assert!(pull <= Duration::from_millis(600), "{test}: the pull's outage was {pull:?}\n{}", p.lab.diagnostics());
        if let Some(between) = between.take() {
            between(test, &p);
        }
    }
    if patched {
        // Each re-plug's link-up, which NetworkManager waits for, was answered at once.
        let answered = p.lab.dispatcher_log().matches("link-up: the supervisor took the backup off the LAN when the carrier returned").count();
        assert_eq!(answered, 2, "{test}: {answered} of 2 link-ups answered without the companion\n{}", p.lab.diagnostics());
    }
    let said = p.lab.companion(&["unpair", "Office LAN"]);
    assert!(said.contains("took the warm standby on wlan0 down"), "{said}");
    p.lab.expect_until("the standby to be gone", Duration::from_secs(15), || nm_state(&p.lab, STANDBY).is_empty());
    assert!(p.lab.nmcli(&["-g", "NAME", "connection", "show"]).is_ok_and(|names| !names.contains(STANDBY)), "the volatile standby profile outlived unpair");
    assert_eq!(host_sysctl(&p.lab, "/proc/sys/net/ipv4/conf/wlan0/arp_ignore"), "0", "{test}: unpair left arp_ignore changed");
}

/// With the warm standby and a wired profile the user connects by hand
/// (`autoconnect=no`): the standby leaves the address at the re-plug as
/// always (nothing tells it NetworkManager will not connect the wired link),
/// and the supervisor, seeing nothing activate on the wired device, brings
/// the backup up with the address within seconds; the user's connect then
/// hands back.
#[test]
fn warm_standby_with_a_wired_profile_connected_by_hand_on_stock_nm_1_42() {
    in_shared_vm("warm_standby_with_a_wired_profile_connected_by_hand_on_stock_nm_1_42", || {
        let test = "wifi/warm standby, wired profile connected by hand";
        let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi(), &["--standby"]) else { return };
        let lab = &p.lab;
        lab.nmcli(&["connection", "modify", "Office LAN", "connection.autoconnect", "no"]).expect("the wired profile connected by hand");
        standby_ready(test, &p);
        lab.pull_cable();
        lab.expect_until("the standby to hold the wired address", Duration::from_secs(10), || lab.ipv4("wlan0") == Some(p.addr));
        // NetworkManager adopts it on the standby before the re-plug.
        lab.expect_until("NetworkManager to hold the address on the standby", Duration::from_secs(15), || {
            lab.nmcli(&["-g", "IP4.ADDRESS", "device", "show", "wlan0"]).is_ok_and(|a| a.contains(&p.addr.to_string()))
        });
        let since = lab.server_log().lines().count();
        let plug = Instant::now();
        lab.plug_cable();
        // NetworkManager's activation of the backup then (a scan, the handshake: 5-9 s here) is not the companion's.
        lab.expect_until("the Wi-Fi to hold the address again", Duration::from_secs(60), || {
            nm_state(lab, p.backup_profile) == "activated" && lab.ipv4("wlan0") == Some(p.addr)
        });
        measured(test, "plug -> the backup holds the address again", ms(plug.elapsed()));
        let log = lab.dispatcher_log();
        let silenced =
            logged_at(&log, "wired carrier back: wlan0 left the LAN's address").unwrap_or_else(|| panic!("{test}: no re-plug logged\n{}", lab.diagnostics()));
        let asked =
            logged_at(&log, "asked NetworkManager to activate 'Office Wi-Fi'").unwrap_or_else(|| panic!("{test}: no activation asked\n{}", lab.diagnostics()));
        let reaction = Duration::from_secs_f64(asked - silenced);
        measured(test, "the standby silenced -> the backup's activation asked", ms(reaction));
        // 5 s for an activation to start on the wired device (ACTIVATION_START_WITHIN), then the supervisor's look.
        assert!(reaction <= Duration::from_secs(8), "{test}: the backup was asked for {reaction:?} after the re-plug\n{}", lab.diagnostics());
        assert!(nm_state(lab, "Office LAN").is_empty(), "{test}: NetworkManager connected the wired link by itself\n{}", lab.diagnostics());
        lab.nmcli(&["connection", "up", "Office LAN"]).expect("the wired profile up by hand");
        lab.expect_until("the wired link to hold the address, the Wi-Fi without it", Duration::from_secs(30), || {
            lab.ipv4("wired0") == Some(p.addr) && lab.ipv4("wlan0").is_none()
        });
        assert!(!lab.server_log().contains("Abandoning IP address"), "{test}: the server abandoned the address\n{}", lab.diagnostics());
        only_acks_for(lab, since, p.addr);
    });
}

/// A re-plug while the standby's DHCP client is between the lease it asked
/// for at the pull and taking it (the access point's frames to the station
/// delayed 400 ms, so that the re-plug, made as soon as the supervisor
/// logs its request, comes before the server's answer reaches the
/// station): the standby keeps the address until its client has taken the
/// lease, so NetworkManager keeps the standby up (on 1.42 its client fails
/// the device when the address is gone at that moment, and the supervisor's
/// new association puts the shared MAC on the access point's port while
/// docked); the wired link's exchange is a request for its lease, which
/// the server confirms.
#[test]
fn warm_standby_replug_while_its_dhcp_client_takes_the_lease_on_stock_nm_1_42() {
    in_shared_vm("warm_standby_replug_while_its_dhcp_client_takes_the_lease_on_stock_nm_1_42", || {
        let test = "wifi/warm standby, re-plug before its lease is taken";
        let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi(), &["--standby"]) else { return };
        let lab = &p.lab;
        let diag = |what: &str| format!("{test}: {what}\n{}", lab.diagnostics());
        standby_ready(test, &p);
        let wired_mac = lab.mac("wired0");
        let fdb = FdbMonitor::start(lab);
        let (server_mark, companion_mark, nm_mark) = (lab.server_log().lines().count(), lab.dispatcher_log().len(), lab.nm_log().len());
        lab.delay_frames_to_stations(Some(Duration::from_millis(400)));
        lab.pull_cable();
        lab.expect_until("the supervisor to ask the standby's DHCP client for the lease", Duration::from_secs(20), || {
            lab.dispatcher_log().get(companion_mark..).is_some_and(|l| l.contains("reapplied the standby of 'Office Wi-Fi' with the backup's IP settings"))
        });
        lab.plug_cable();
        lab.wait_until("the wired link to hold the address again", Duration::from_secs(30), || lab.ipv4("wired0") == Some(p.addr))
            .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
        lab.wait_until("the standby silent again", Duration::from_secs(15), || {
            lab.nmcli(&["-g", "IP4.ADDRESS", "device", "show", "wlan0"]).is_ok_and(|a| a.trim().is_empty()) && lab.ipv4("wlan0").is_none()
        })
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
        lab.delay_frames_to_stations(None);
        let companion = lab.dispatcher_log().get(companion_mark..).unwrap_or_default().to_owned();
        let held = companion.lines().find(|l| l.contains("until NetworkManager's DHCP client took its lease") || l.contains("has not taken the lease"));
        measured(test, "re-plug: the standby kept the address for its DHCP client", held.unwrap_or("(no hold logged)"));
        // Past the supervisor's look, FREE_FOR and an association: a standby NetworkManager failed would be associating again.
        let docked = fdb.mark();
        std::thread::sleep(Duration::from_secs(12));
        let moves = fdb.moves(&wired_mac, docked, fdb.mark());
        measured(test, "docked after the re-plug: the shared MAC's moves between bridge ports", moves);
        let nm_log = lab.nm_log().get(nm_mark..).unwrap_or_default().to_owned();
        let failed = nm_log.lines().filter(|l| l.contains("wlan0") && l.contains("-> failed")).collect::<Vec<_>>();
        assert!(failed.is_empty(), "{}", diag(&format!("NetworkManager failed the standby: {failed:#?}")));
        assert_eq!(nm_state(lab, STANDBY), "activated", "{}", diag("the standby went down at the re-plug"));
        assert_eq!(lab.ap_stations(), std::slice::from_ref(&wired_mac), "{}", diag("the standby's association"));
        assert_eq!(moves, 0, "{}", diag("the shared MAC moved to the access point's port while docked"));
        let dhcp = server_requests(lab, server_mark);
        measured(test, "pull and re-plug: DHCP messages at the server", dhcp.join(" | "));
        assert!(dhcp.iter().all(|l| !l.contains("DISCOVER") && !l.contains("Abandoning")), "{}", diag("a DHCP exchange that started over"));
        only_acks_for(lab, server_mark, p.addr);
        assert_eq!(lab.ipv4("wired0"), Some(p.addr));
        // (Last: what the outcomes above owe to, and that the re-plug came in time to test it:
        // the thread held the address from before the standby's client took its lease until it
        // had, or until the wired link's client had taken its own (the address then the host's
        // still, which is all the standby's bind needs; the two sockets look alike).)
        let held =
            held.filter(|l| l.contains("took its lease")).unwrap_or_else(|| panic!("{}", diag("the re-plug did not wait for the standby's DHCP client")));
        let held_until = log_stamp(held).expect("the hold's log stamp");
        let held_for = held.split("held_us=").nth(1).and_then(|n| n.split_whitespace().next()?.parse::<f64>().ok()).expect("held_us") / 1e6;
        let accepted = |iface: &str| logged_at(&nm_log, &format!("dhcp4 ({iface}): accept lease"));
        let standby_took = accepted("wlan0").unwrap_or_else(|| panic!("{}", diag("the standby's client took no lease")));
        measured(test, "re-plug: the hold's start -> the standby's client took its lease", ms(stamp_span(standby_took - (held_until - held_for))));
        assert!(
            standby_took >= held_until - held_for,
            "{}",
            diag(&format!("the standby's client took its lease at {standby_took}, before the hold ({held_for} s until {held_until})"))
        );
        let first_taken = accepted("wired0").map_or(standby_took, |wired_took| wired_took.min(standby_took));
        assert!(
            first_taken <= held_until + 0.05,
            "{}",
            diag(&format!("the hold ({held_for} s until {held_until}) ended before either client took its lease (the standby's at {standby_took})"))
        );
        assert!(!nm_log.contains("accept failed"), "{}", diag("NetworkManager's client failed to take a lease"));
    });
}

/// Between the two cycles the user switches the radio off and on while docked.
#[test]
fn warm_standby_pull_and_replug_on_wifi_stock_nm_1_42() {
    in_shared_vm("warm_standby_pull_and_replug_on_wifi_stock_nm_1_42", || {
        warm_standby_twice("wifi/warm standby, stock 1.42", LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), radio_switch_while_docked);
    });
}

/// On patched NetworkManager the wired link's `link-up` finds the standby silent already.
#[test]
fn warm_standby_pull_and_replug_on_wifi_patched_nm_1_42() {
    in_shared_vm("warm_standby_pull_and_replug_on_wifi_patched_nm_1_42", || {
        let cfg = LabConfig::patched_version(DhcpServer::IscDhcpd, DhcpClient::Internal, "1.42.4")
            .unwrap_or_else(|why| panic!("the patched 1.42.4 is part of the Wi-Fi lab: {why}"));
        warm_standby_twice("wifi/warm standby, patched 1.42", cfg, |_, _| {});
    });
}
