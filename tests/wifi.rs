//! The backup on real 802.11: each test boots the Wi-Fi VM (`support/vm.rs`)
//! and runs inside it with two mac80211_hwsim radios, an access point
//! (hostapd, WPA2-PSK) bridged onto the LAN beside the wired veth, and
//! NetworkManager + wpa_supplicant managing the station `wlan0`. Stock
//! NetworkManager 1.42 and the patched 1.42 backport.
//!
//! Needs root and what tests/setup-debian.sh installs; otherwise every test
//! says why it skips (and fails under CI, which must skip nothing).

mod support;

use std::time::Duration;

use support::*;

/// Runs `scenario` in the VM (the test named `name` of this binary).
fn on_wifi(name: &str, scenario: impl FnOnce()) {
    if in_vm() {
        scenario();
    } else {
        run_in_vm(name);
    }
}

fn pull_and_replug_twice(test: &str, cfg: LabConfig) {
    let stock = !cfg.companion_dirs.contains(&"link-up.d");
    let Some(p) = paired(test, cfg.with_wifi(), &[]) else { return };
    pull_and_replug(test, &p);
    pull_and_replug(&format!("{test} (second cycle)"), &p);
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
    on_wifi("pull_and_replug_on_wifi_stock_nm_1_42", || {
        pull_and_replug_twice("wifi/stock 1.42", LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal));
    });
}

/// The patched NetworkManager built by nm-patch/build (handed into the VM).
fn pull_and_replug_on_patched(name: &str, version: &str) {
    on_wifi(name, || {
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

#[test]
fn boot_with_the_cable_out_brings_up_the_wifi() {
    on_wifi("boot_with_the_cable_out_brings_up_the_wifi", || {
        let test = "wifi/boot with the cable out";
        // The control: the same profiles unpaired, the Wi-Fi connecting automatically.
        let Some(mut control) = start_or_skip(&format!("{test} (control)"), LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi()) else {
            return;
        };
        control.add_ethernet_profile("Office LAN", "wired0", true);
        control.add_wifi_profile("Office Wi-Fi", "wlan0");
        control.nmcli(&["connection", "modify", "Office Wi-Fi", "connection.autoconnect", "yes"]).expect("autoconnect the control's Wi-Fi");
        control.expect_until("the control's Wi-Fi", Duration::from_secs(90), || control.ipv4("wlan0").is_some());
        control.reboot_nm(|lab| lab.pull_cable());
        let control_took = control.expect_until("the control's Wi-Fi after the boot", Duration::from_secs(90), || control.ipv4("wlan0").is_some());
        drop(control);
        let Some(mut p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi(), &[]) else { return };
        p.lab.reboot_nm(|lab| lab.pull_cable());
        let lab = &p.lab;
        let took = lab.expect_until("the Wi-Fi to come up with the wired address", Duration::from_secs(60), || lab.ipv4("wlan0") == Some(p.addr));
        measured(test, "NM start -> Wi-Fi holds the address: control / paired", format!("{} / {}", ms(control_took), ms(took)));
        assert!(took <= control_took + Duration::from_secs(2), "{test}: paired {took:?}, control {control_took:?}\n{}", lab.diagnostics());
        let wired_mac = lab.mac("wired0");
        assert_eq!(lab.ap_stations(), std::slice::from_ref(&wired_mac), "{}", lab.diagnostics());
        assert!(lab.ipv4("wired0").is_none());
        let server_log = lab.server_log();
        let acks: Vec<&str> = server_log.lines().filter(|l| l.contains("DHCPACK")).collect();
        assert!(!acks.is_empty() && acks.iter().all(|l| l.contains(&wired_mac)), "{test}: DHCP server saw {acks:?}, not only {wired_mac}");
        // The cable plugged in after such a boot: the wired link takes the address back and the station leaves.
        lab.plug_cable();
        let took = lab.expect_until("the wired link back with the address", Duration::from_secs(60), || lab.ipv4("wired0") == Some(p.addr));
        measured(test, "re-plug after the boot -> wired holds the address", ms(took));
        lab.expect_until("the station to leave the access point", Duration::from_secs(30), || lab.ap_stations().is_empty());
        assert!(!lab.server_log().contains("Abandoning IP address"), "{}", lab.diagnostics());
    });
}

/// The access point is off the air when the cable is pulled: the activation
/// fails with a clear line, the companion does not retry in a loop, the
/// re-plug still brings the wired link back with its address, and once the
/// access point is back the next pull hands over.
#[test]
fn access_point_unavailable_at_the_pull_then_replug() {
    on_wifi("access_point_unavailable_at_the_pull_then_replug", || {
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
    on_wifi("mac_randomisation_never_reaches_the_dhcp_server", || {
        for mode in ["random", "stable"] {
            let test = format!("wifi/cloned-mac-address {mode}, scan-rand-mac-address on");
            let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi();
            cfg.extra_nm_conf = "[device-wifi]\nmatch-device=interface-name:wlan0\nwifi.scan-rand-mac-address=yes\n".into();
            let Some(p) = paired_with(&test, cfg, &[], |lab| {
                lab.nmcli(&["connection", "modify", "Office Wi-Fi", "wifi.cloned-mac-address", mode]).expect("set the profile's MAC mode");
            }) else {
                return;
            };
            pull_and_replug(&test, &p);
            let wired_mac = p.lab.mac("wired0");
            let server_log = p.lab.server_log();
            let macs: Vec<&str> = server_log
                .lines()
                .filter(|l| l.contains("DHCP"))
                .filter_map(|l| l.split(" from ").nth(1).or_else(|| l.split(" to ").nth(1)))
                .filter_map(|rest| rest.split_whitespace().next())
                .collect();
            assert!(macs.iter().all(|m| *m == wired_mac), "{test}: the DHCP server saw {macs:?}, not only {wired_mac}");
            p.lab.companion(&["unpair", "Office LAN"]);
            let restored = p.lab.nmcli(&["-g", "802-11-wireless.cloned-mac-address", "connection", "show", "Office Wi-Fi"]).unwrap();
            assert_eq!(restored.trim(), mode, "{test}: unpair must restore the profile's MAC mode");
        }
    });
}
