//! `pair` and `unpair` never lose or misplace what the user configured.
//!
//! No secret and no property is lost by `pair` and `unpair`: the keyfiles of
//! both profiles are byte for byte what they were before `pair`, and the
//! secrets NetworkManager stores are still there, for every kind of secret a
//! backup (or an 802.1X wired profile) carries. On stock NM 1.42 and on the
//! patched 1.58 (the same settings code as stock 1.58).
//!
//! The profiles need no radio: NetworkManager stores a Wi-Fi profile bound to
//! an interface that does not exist, and `pair --backup-device` names it.
//!
//! Needs root (network namespaces); as non-root every test says why it skips.

mod support;

use support::*;

struct Secrets {
    /// `nmcli connection add` arguments of the backup profile after its name.
    backup: &'static [&'static str],
    /// Secrets NM must still return for the backup (`nmcli -s -g`), as (property, value).
    backup_secrets: &'static [(&'static str, &'static str)],
    /// Extra `nmcli connection add` arguments for the wired profile (an 802.1X wired LAN).
    wired: &'static [&'static str],
    wired_secrets: &'static [(&'static str, &'static str)],
    /// Restart NetworkManager between `pair` and `unpair`.
    restart_between: bool,
}

const WIFI: &[&str] = &["type", "wifi", "ifname", "wlan0", "ssid", "Office", "autoconnect", "no", "ipv6.method", "disabled"];

fn keyfiles_before_pair_equal_keyfiles_after_unpair(test: &str, cfg: Result<LabConfig, String>, case: Secrets) {
    let Some(cfg) = built_or_skip(test, cfg) else { return };
    let Some(mut lab) = start_or_skip(test, cfg.with_companion()) else { return };
    let mut wired = vec!["connection", "add", "type", "ethernet", "con-name", "Office LAN", "ifname", "wired0", "ipv6.method", "disabled"];
    wired.extend_from_slice(case.wired);
    lab.nmcli(&wired).expect("add the wired profile");
    let mut backup = vec!["connection", "add", "con-name", "Office Wi-Fi"];
    backup.extend_from_slice(WIFI);
    backup.extend_from_slice(case.backup);
    lab.nmcli(&backup).expect("add the backup profile");
    // An activated profile has a timestamp in NM's memory that its keyfile
    // does not have: the wired link must be up before `pair`, as on a laptop.
    if case.wired.is_empty() {
        lab.expect_until("the wired link's address", std::time::Duration::from_secs(30), || lab.ipv4("wired0").is_some());
    }
    let before = keyfile_bytes(&lab);

    let said = lab.companion(&["pair", "Office LAN", "Office Wi-Fi", "--backup-device", "wlan0"]);
    assert!(said.contains("cloned-mac-address"), "{said}");
    assert_secrets(&lab, test, "after pair", &case);
    if case.restart_between {
        lab.reboot_nm(|_| {});
    }
    lab.companion(&["unpair", "Office LAN"]);
    assert_secrets(&lab, test, "after unpair", &case);

    let after = keyfile_bytes(&lab);
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(String::from_utf8_lossy(new), String::from_utf8_lossy(old), "{test}: keyfile {name} changed by pair + unpair");
    }
    assert_eq!(after.len(), before.len(), "{test}: keyfiles added or removed");
    measured(test, "keyfiles identical after pair + unpair", before.len());
}

fn assert_secrets(lab: &Lab, test: &str, when: &str, case: &Secrets) {
    for (profile, secrets) in [("Office Wi-Fi", case.backup_secrets), ("Office LAN", case.wired_secrets)] {
        for (property, value) in secrets {
            let got = lab.nmcli(&["-s", "-g", property, "connection", "show", profile]).unwrap_or_default();
            assert_eq!(got.trim(), *value, "{test}: {profile}: {property} {when}\n{}", lab.diagnostics());
        }
    }
}

const PSK: Secrets = Secrets {
    backup: &["wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk", "correct horse battery"],
    backup_secrets: &[("802-11-wireless-security.psk", "correct horse battery")],
    wired: &[],
    wired_secrets: &[],
    restart_between: false,
};

const SAE: Secrets = Secrets {
    backup: &["wifi-sec.key-mgmt", "sae", "wifi-sec.psk", "staple battery horse"],
    backup_secrets: &[("802-11-wireless-security.psk", "staple battery horse")],
    wired: &[],
    wired_secrets: &[],
    restart_between: false,
};

const PEAP: Secrets = Secrets {
    backup: &[
        "wifi-sec.key-mgmt",
        "wpa-eap",
        "802-1x.eap",
        "peap",
        "802-1x.phase2-auth",
        "mschapv2",
        "802-1x.identity",
        "alice",
        "802-1x.password",
        "peap secret",
    ],
    backup_secrets: &[("802-1x.password", "peap secret")],
    wired: &[],
    wired_secrets: &[],
    restart_between: false,
};

/// An agent-owned secret lives in the user's agent, not in NM: what must
/// survive is the flag (and the keyfile holds no secret to lose).
const AGENT_OWNED: Secrets = Secrets {
    backup: &["wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk-flags", "1"],
    backup_secrets: &[("802-11-wireless-security.psk-flags", "1")],
    wired: &[],
    wired_secrets: &[],
    restart_between: false,
};

/// A wired LAN with 802.1X (no authenticator in the lab: it never activates)
/// and a PSK backup, with NetworkManager restarted between pair and unpair.
const WIRED_8021X_AND_RESTART: Secrets = Secrets {
    backup: &["wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk", "correct horse battery"],
    backup_secrets: &[("802-11-wireless-security.psk", "correct horse battery")],
    wired: &["autoconnect", "no", "802-1x.eap", "md5", "802-1x.identity", "bob", "802-1x.password", "wired secret"],
    wired_secrets: &[("802-1x.password", "wired secret")],
    restart_between: true,
};

fn stock() -> Result<LabConfig, String> {
    Ok(LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal))
}

fn nm_1_58() -> Result<LabConfig, String> {
    LabConfig::patched_version(DhcpServer::IscDhcpd, DhcpClient::Internal, "1.58.1")
}

#[test]
fn wpa_psk_survives_pair_and_unpair_nm_1_42() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/wpa-psk/1.42", stock(), PSK);
}

#[test]
fn wpa_psk_survives_pair_and_unpair_nm_1_58() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/wpa-psk/1.58", nm_1_58(), PSK);
}

#[test]
fn sae_survives_pair_and_unpair_nm_1_42() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/sae/1.42", stock(), SAE);
}

#[test]
fn sae_survives_pair_and_unpair_nm_1_58() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/sae/1.58", nm_1_58(), SAE);
}

#[test]
fn peap_password_survives_pair_and_unpair_nm_1_42() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/peap/1.42", stock(), PEAP);
}

#[test]
fn peap_password_survives_pair_and_unpair_nm_1_58() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/peap/1.58", nm_1_58(), PEAP);
}

#[test]
fn agent_owned_secret_flags_survive_pair_and_unpair_nm_1_42() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/agent-owned/1.42", stock(), AGENT_OWNED);
}

#[test]
fn agent_owned_secret_flags_survive_pair_and_unpair_nm_1_58() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/agent-owned/1.58", nm_1_58(), AGENT_OWNED);
}

#[test]
fn wired_8021x_password_survives_pair_and_unpair_across_a_restart_nm_1_42() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/wired-8021x/1.42", stock(), WIRED_8021X_AND_RESTART);
}

#[test]
fn wired_8021x_password_survives_pair_and_unpair_across_a_restart_nm_1_58() {
    keyfiles_before_pair_equal_keyfiles_after_unpair("secrets/wired-8021x/1.58", nm_1_58(), WIRED_8021X_AND_RESTART);
}

/// `pair BACKUP WIRED` with two Ethernet profiles would turn the user's wired
/// profile into the backup: refused, and nothing changes, until --force.
#[test]
fn a_swapped_argument_order_is_refused_and_changes_nothing() {
    let test = "pair/swapped-order";
    let Some(lab) = start_or_skip(test, stock().unwrap().with_companion()) else { return };
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.add_ethernet_profile("Backup link", "backup0", false);
    lab.expect_until("the wired link's address", std::time::Duration::from_secs(30), || lab.ipv4("wired0").is_some());
    let before = keyfile_bytes(&lab);
    let out = lab.run_in_host(&[env!("CARGO_BIN_EXE_nm-handover"), "pair", "Backup link", "Office LAN"]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("'Office LAN' looks like the wired profile") && text.contains("--force"), "{text}");
    assert_eq!(keyfile_bytes(&lab), before, "{test}: a refused pair changed a profile");
    assert!(!lab.nm_conf_dir().join("conf.d").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false), "{test}: carrier-wait snippet written");

    // Forced, it does as told, and says so.
    let said = lab.companion(&["pair", "Backup link", "Office LAN", "--force"]);
    assert!(said.contains("'Office LAN': connection.autoconnect: yes -> no"), "{said}");
}

/// A profile NetworkManager keeps only in memory (as the "Wired connection 1"
/// it creates by itself) is stored in /etc by `pair`: said, not done silently.
#[test]
fn pair_says_when_it_stores_an_in_memory_profile() {
    let test = "pair/in-memory-profile";
    let Some(lab) = start_or_skip(test, stock().unwrap().with_companion()) else { return };
    lab.nmcli(&["connection", "add", "save", "no", "type", "ethernet", "con-name", "Wired connection 1", "ifname", "wired0", "ipv6.method", "disabled"])
        .expect("add an in-memory profile");
    lab.add_ethernet_profile("Backup link", "backup0", false);
    let said = lab.companion(&["pair", "Wired connection 1", "Backup link"]);
    assert!(said.contains("'Wired connection 1': was kept only in NetworkManager's memory"), "{said}");
    // Panics if the lab's /etc/NetworkManager/system-connections has no keyfile of it.
    lab.keyfile_of("Wired connection 1");
}
