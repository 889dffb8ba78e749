//! The backup on real 802.11: each test boots the Wi-Fi VM (`support/vm.rs`)
//! and runs inside it with two mac80211_hwsim radios, an access point
//! (hostapd, WPA2-PSK) bridged onto the LAN beside the wired veth, and
//! NetworkManager + wpa_supplicant managing the station `wlan0`. Stock
//! NetworkManager 1.42 and the patched 1.42 backport.
//!
//! Needs root and what tests/setup-debian.sh installs; otherwise every test
//! says why it skips (and fails under CI, which must skip nothing).

mod support;

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
    let Some(p) = paired(test, cfg.with_wifi(), &[]) else { return };
    pull_and_replug(test, &p);
    pull_and_replug(&format!("{test} (second cycle)"), &p);
}

#[test]
fn pull_and_replug_on_wifi_stock_nm_1_42() {
    on_wifi("pull_and_replug_on_wifi_stock_nm_1_42", || {
        pull_and_replug_twice("wifi/stock 1.42", LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal));
    });
}
