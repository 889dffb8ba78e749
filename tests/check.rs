//! `nm-handover check` and the `--json` outputs, in the real-NM lab: each
//! problem it detects is seeded, found, fixed, and seen to clear. (The
//! nm-dispatcher unit states are the host's, not the lab's: the unit tests
//! in src/check.rs cover those; on a host with systemd they are a baseline.)
//!
//! Needs root; as non-root every test says why it skips.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use support::*;

fn run_check(lab: &Lab, extra: &[&str]) -> (Option<i32>, String) {
    let mut argv = vec![env!("CARGO_BIN_EXE_nm-handover"), "check"];
    argv.extend_from_slice(extra);
    let out: Output = lab.run_in_host(&argv);
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The check ids `check --json` reports at `level` or worse than ok.
fn not_ok(lab: &Lab) -> Vec<(String, String)> {
    let (_, text) = run_check(lab, &["--json"]);
    let findings: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("check --json: {e}: {text}"));
    findings
        .as_array()
        .expect("an array of findings")
        .iter()
        .filter(|f| f["level"] != "ok")
        .map(|f| (f["check"].as_str().unwrap().to_owned(), f["level"].as_str().unwrap().to_owned()))
        .collect()
}

/// The findings that depend on the host rather than the lab: its systemd and
/// /usr/lib/NetworkManager (the lab has its own /etc/NetworkManager only).
/// Under CI (a fresh Debian without systemd as PID 1) there are none.
fn host_findings(lab: &Lab) -> Vec<(String, String)> {
    let found: Vec<_> = not_ok(lab).into_iter().filter(|(check, _)| check == "dispatcher-service" || check == "other-scripts").collect();
    assert!(std::env::var_os("CI").is_none() || found.is_empty(), "on a CI machine the correct setup is clean: {found:?}");
    found
}

/// Seeds a problem, sees `check` find it (and its exit status), undoes it, sees it clear.
fn seeded(lab: &Lab, check: &str, level: &str, seed: impl FnOnce(), fix: impl FnOnce()) {
    seeded_with(lab, check, level, &[], seed, fix)
}

/// [`seeded`], where the seeded problem also shows as the `also` findings.
fn seeded_with(lab: &Lab, check: &str, level: &str, also: &[&str], seed: impl FnOnce(), fix: impl FnOnce()) {
    let baseline = host_findings(lab);
    seed();
    let mut expected = vec![(check.to_owned(), level.to_owned())];
    expected.extend(also.iter().map(|c| ((*c).to_owned(), "problem".to_owned())));
    let found: Vec<_> = not_ok(lab).into_iter().filter(|f| !baseline.contains(f)).collect();
    assert_eq!(found, expected, "seeded {check}");
    let (status, text) = run_check(lab, &[]);
    let host_problem = baseline.iter().any(|(_, level)| level == "problem");
    assert_eq!(status, Some(if level == "problem" || host_problem { 1 } else { 0 }), "{text}");
    assert!(text.contains(check) && text.contains("fix:"), "{text}");
    fix();
    assert_eq!(not_ok(lab), baseline, "{check} fixed");
}

#[test]
fn check_finds_each_seeded_problem_and_is_clean_when_fixed() {
    let test = "check";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let lab = &p.lab;
    let baseline = host_findings(lab);
    let (status, text) = run_check(lab, &[]);
    if baseline.is_empty() {
        assert_eq!(status, Some(0), "a correct setup:\n{text}");
    }
    assert_eq!(not_ok(lab), baseline, "{text}");

    seeded(
        lab,
        "backup-autoconnect",
        "problem",
        || {
            lab.nmcli(&["connection", "modify", "Backup link", "connection.autoconnect", "yes"]).unwrap();
        },
        || {
            lab.nmcli(&["connection", "modify", "Backup link", "connection.autoconnect", "no"]).unwrap();
        },
    );

    let wired_mac = lab.mac("wired0");
    // A random MAC also makes the (mac-based) client-id another one.
    seeded_with(
        lab,
        "backup-mac",
        "problem",
        &["client-id"],
        || {
            lab.nmcli(&["connection", "modify", "Backup link", "802-3-ethernet.cloned-mac-address", "random"]).unwrap();
        },
        || {
            lab.nmcli(&["connection", "modify", "Backup link", "802-3-ethernet.cloned-mac-address", &wired_mac]).unwrap();
        },
    );

    let client_id = lab.nmcli(&["-g", "ipv4.dhcp-client-id", "connection", "show", "Backup link"]).unwrap().trim().replace('\\', "");
    seeded(
        lab,
        "client-id",
        "problem",
        || {
            lab.nmcli(&["connection", "modify", "Backup link", "ipv4.dhcp-client-id", "stable"]).unwrap();
        },
        || {
            lab.nmcli(&["connection", "modify", "Backup link", "ipv4.dhcp-client-id", &client_id]).unwrap();
        },
    );

    seeded(
        lab,
        "hostname",
        "warning",
        || {
            lab.nmcli(&["connection", "modify", "Backup link", "ipv4.dhcp-hostname", "backup-own-name"]).unwrap();
        },
        || {
            lab.nmcli(&["connection", "modify", "Backup link", "ipv4.dhcp-hostname", ""]).unwrap();
        },
    );

    let conf = std::fs::read_dir(lab.nm_conf_dir().join("conf.d"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("90-nm-handover-"))
        .unwrap();
    let snippet = std::fs::read(&conf).unwrap();
    seeded(lab, "carrier-wait", "warning", || std::fs::remove_file(&conf).unwrap(), || std::fs::write(&conf, &snippet).unwrap());

    let iwd = lab.nm_conf_dir().join("conf.d/50-iwd.conf");
    seeded(lab, "wifi-backend", "problem", || std::fs::write(&iwd, "[device]\nwifi.backend=iwd\n").unwrap(), || std::fs::remove_file(&iwd).unwrap());

    let slow = lab.nm_conf_dir().join("dispatcher.d/50-vpn-check");
    // On stock NM another package's waiting script delays no handover (the
    // companion's entry is in no-wait.d, tests/faults.rs): named, at level ok.
    // (On patched NM it delays link-up: a warning, in src/check.rs's tests.)
    let baseline = not_ok(lab);
    std::fs::write(&slow, "#!/bin/sh\nsleep 3\n").unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, text) = run_check(lab, &["--json"]);
    let findings: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("check --json: {e}: {text}"));
    let named = findings.as_array().unwrap().iter().find(|f| f["check"] == "other-scripts").unwrap_or_else(|| panic!("no other-scripts finding: {text}"));
    assert_eq!(named["level"], "ok", "{text}");
    assert!(named["message"].as_str().unwrap().contains("50-vpn-check"), "{text}");
    assert_eq!(not_ok(lab), baseline);
    std::fs::remove_file(&slow).unwrap();

    // The companion's own link, pointing at a copy nm-dispatcher refuses (writable by the group).
    let link = lab.nm_conf_dir().join("dispatcher.d/90-nm-handover");
    let target = std::fs::read_link(&link).unwrap();
    let writable = lab.dir.join("nm-handover-dispatch-copy");
    std::fs::copy(std::fs::canonicalize(&link).unwrap(), &writable).unwrap();
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o775)).unwrap();
    seeded(
        lab,
        "dispatcher-link",
        "problem",
        || {
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(&writable, &link).unwrap();
        },
        || {
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(&target, &link).unwrap();
        },
    );
}

#[test]
fn status_and_check_json_parse() {
    let test = "status --json";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let text = p.lab.companion(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(status["networkmanager"]["mode"], "lease-carrying", "{text}");
    let pair = &status["pairs"][0];
    assert_eq!(pair["active_side"], "wired", "{text}");
    assert_eq!(pair["wired"]["profile"], "Office LAN");
    assert_eq!(pair["wired"]["ipv4"][0], p.addr.to_string());
    assert_eq!(pair["wired"]["link"], "carrier");
    assert_eq!(pair["backup"]["state"], "inactive");
    assert_eq!(pair["lease_carrying"], true);
    assert!(pair["wired"]["dhcp_client_id"].as_str().is_some_and(|id| id.starts_with("01:")), "{text}");
    assert!(pair["carrier_wait_conf"].as_str().is_some_and(|c| c.contains("90-nm-handover-")), "{text}");
    // On stock NM the watcher is on, and runs only during a handover.
    assert_eq!(pair["carrier_watch"], true, "{text}");
    assert!(pair["carrier_watcher_pid"].is_null(), "{text}");
    // `pair` returned once its supervisor watched.
    assert_eq!(status["supervisor_pid"].as_u64().map(|pid| pid as u32), ready_supervisor_pid(&p.lab), "{text}");
    assert_eq!(status["supervisor_watching"], true, "{text}");
    // `check PAIR` names the pair in each pair finding.
    let text = p.lab.companion(&["check", "Backup link", "--json"]);
    let findings: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(findings.as_array().unwrap().iter().any(|f| f["check"] == "pair" && f["pair"] == "Office LAN" && f["level"] == "ok"), "{text}");
}
