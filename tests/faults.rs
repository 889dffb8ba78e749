//! Faults in the real-NM lab: a flapping cable, NetworkManager killed in the
//! middle of a handover, the DHCP server down during one, broken pairs, two
//! pairs on one host. Each asserts the end state; all report how long the
//! companion's dispatcher calls took (nm-dispatcher's timeout is 600 s).
//!
//! Needs root; as non-root every test says why it skips.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use nm_handover::lease::{parse_dhclient, parse_internal};
use support::*;

fn report_dispatcher_time(test: &str, lab: &Lab) {
    let durations = lab.dispatcher_durations();
    assert!(!durations.is_empty(), "{test}: NM's log shows no dispatcher request\n{}", lab.diagnostics());
    let max = durations.iter().max().copied().unwrap_or_default();
    measured(test, "longest dispatcher request (all scripts)", format!("{} ms over {} requests", max.as_millis(), durations.len()));
    assert!(max < Duration::from_secs(30), "a dispatcher request took {max:?}\n{}", lab.diagnostics());
}

fn no_panic(lab: &Lab) {
    let log = lab.dispatcher_log();
    assert!(!log.contains("panicked"), "the companion panicked:\n{log}");
}

/// The end state of a pair once things settled.
fn settled(lab: &Lab, plugged: bool, addr: Ipv4Addr) -> bool {
    if plugged {
        lab.ipv4("wired0") == Some(addr) && lab.ipv4("backup0").is_none() && nm_state(lab, "Backup link").is_empty()
    } else {
        lab.ipv4("backup0") == Some(addr) && lab.ipv4("wired0").is_none() && nm_state(lab, "Backup link") == "activated"
    }
}

fn flapping_case(test: &str, toggles: usize, seed: u64) {
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let lab = &p.lab;
    let mut rng = Rng(seed);
    let mut plugged = true;
    for i in 0..toggles {
        plugged = !plugged;
        lab.set_cable("wired0", plugged);
        if i + 1 < toggles {
            // From within the 300 ms carrier-wait (NM never sees the pull)
            // to past a whole handover (~0.35 s): each toggle lands on
            // another stage of the previous one's handling.
            std::thread::sleep(Duration::from_millis(150 + rng.next() % 1100));
        }
    }
    // Measured from the last toggle.
    let took = lab.wait_until("the pair to settle", Duration::from_secs(60), || settled(lab, plugged, p.addr)).unwrap_or_else(|e| {
        panic!(
            "{test} (seed {seed:#x}): {e}: wired {:?}, backup {:?} ({})\n{}",
            lab.ipv4("wired0"),
            lab.ipv4("backup0"),
            nm_state(lab, "Backup link"),
            lab.diagnostics()
        )
    });
    // Stable, not passing through: still right a while later.
    std::thread::sleep(Duration::from_secs(3));
    assert!(settled(lab, plugged, p.addr), "{test}: did not stay settled\n{}", lab.diagnostics());
    measured(test, "settle time after the last toggle", format!("{} ms (seed {seed:#x}, cable {})", took.as_millis(), if plugged { "in" } else { "out" }));
    assert!(!lab.server_log().contains("Abandoning"), "{}", lab.diagnostics());
    no_panic(lab);
    report_dispatcher_time(test, lab);
}

#[test]
fn flapping_cable_ends_plugged_with_the_wired_link_holding_the_address() {
    flapping_case("faults/flapping, 50 toggles, ends plugged", 50, 0x0f1a_99e5);
}

#[test]
fn flapping_cable_ends_pulled_with_the_backup_holding_the_address() {
    flapping_case("faults/flapping, 51 toggles, ends pulled", 51, 0x5eed_cab1);
}

#[test]
fn networkmanager_killed_during_a_handover_recovers() {
    let test = "faults/NM killed during a handover";
    let Some(mut p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    p.lab.pull_cable();
    // The companion asked for the backup (after the carrier wait): kill NM mid-activation.
    p.lab
        .wait_until("the backup activation to start", Duration::from_secs(10), || !nm_state(&p.lab, "Backup link").is_empty())
        .unwrap_or_else(|e| panic!("{e}\n{}", p.lab.diagnostics()));
    p.lab.kill_nm();
    p.lab.start_nm().unwrap_or_else(|e| panic!("{e}\n{}", p.lab.diagnostics()));
    let lab = &p.lab;
    let took = lab.expect_until("the backup to hold the address after the restart", Duration::from_secs(40), || settled(lab, false, p.addr));
    measured(test, "NM restart -> backup holds the address", ms(took));
    lab.plug_cable();
    lab.expect_until("the wired link back", Duration::from_secs(40), || settled(lab, true, p.addr));
    no_panic(lab);
    report_dispatcher_time(test, lab);
}

#[test]
fn dhcp_server_down_during_a_handover_then_back() {
    let test = "faults/DHCP server down during a handover";
    let Some(mut p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    p.lab.stop_dhcp_server();
    p.lab.pull_cable();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(p.lab.ipv4("backup0"), None, "the backup got an address without a server?");
    p.lab.restart_dhcp_server();
    let lab = &p.lab;
    let took = lab.expect_until("the backup to get the address once the server is back", Duration::from_secs(60), || lab.ipv4("backup0") == Some(p.addr));
    measured(test, "server back -> backup holds the address", ms(took));
    // No lease file was damaged: each parses, with the address.
    for entry in std::fs::read_dir(lab.nm_state_dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".lease") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let parsed = if name.starts_with("internal-") { parse_internal(&text) } else { parse_dhclient(&text).map(|(a, _)| a) };
        assert_eq!(parsed, Ok(p.addr), "{name} damaged: {text:?}");
    }
    lab.plug_cable();
    lab.expect_until("the wired link back", Duration::from_secs(40), || settled(lab, true, p.addr));
    no_panic(lab);
    report_dispatcher_time(test, lab);
}

#[test]
fn deleted_backup_profile_is_a_logged_error_and_the_wired_link_still_works() {
    let test = "faults/backup profile deleted";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let lab = &p.lab;
    lab.nmcli(&["connection", "delete", "Backup link"]).unwrap();
    lab.pull_cable();
    lab.expect_until("the companion to report the broken pair", Duration::from_secs(15), || lab.dispatcher_log().contains("ERROR"));
    let error_line = lab.dispatcher_log().lines().find(|l| l.contains("ERROR")).unwrap().to_owned();
    measured(test, "logged", &error_line);
    assert!(error_line.contains("Backup link") || error_line.contains(&p.backup_uuid), "unclear error: {error_line}");
    assert_eq!(lab.ipv4("backup0"), None, "a device was touched");
    lab.plug_cable();
    lab.expect_until("the wired link back", Duration::from_secs(30), || lab.ipv4("wired0") == Some(p.addr));
    let status = lab.companion(&["status"]);
    assert!(status.contains("broken pair"), "{status}");
    no_panic(lab);
    report_dispatcher_time(test, lab);
}

#[test]
fn missing_backup_device_is_a_logged_skip() {
    let test = "faults/backup device missing";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let lab = &p.lab;
    let out = std::process::Command::new("ip").args(["-n", &lab.host, "link", "del", "backup0"]).output().unwrap();
    assert!(out.status.success());
    lab.pull_cable();
    lab.expect_until("the companion to log why it does nothing", Duration::from_secs(15), || lab.dispatcher_log().contains("no device is ready"));
    lab.plug_cable();
    lab.expect_until("the wired link back", Duration::from_secs(30), || lab.ipv4("wired0") == Some(p.addr));
    no_panic(lab);
    report_dispatcher_time(test, lab);
}

#[test]
fn malformed_pairing_data_is_reported_and_nothing_is_touched() {
    let test = "faults/malformed pairing data";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let lab = &p.lab;
    // The user (or a tool) edits the keyfile by hand and reloads it.
    let keyfile = lab.nm_conf_dir().join("system-connections/Office LAN.nmconnection");
    let text = std::fs::read_to_string(&keyfile).unwrap();
    let broken = text.replace(&format!("nm-handover.peer={}", p.backup_uuid), "nm-handover.peer=../../etc/passwd");
    assert_ne!(text, broken);
    std::fs::write(&keyfile, broken).unwrap();
    lab.nmcli(&["connection", "reload"]).unwrap();
    lab.pull_cable();
    lab.expect_until("the companion to report the bad record", Duration::from_secs(15), || lab.dispatcher_log().contains("ERROR"));
    let error_line = lab.dispatcher_log().lines().find(|l| l.contains("ERROR")).unwrap().to_owned();
    measured(test, "logged", &error_line);
    assert!(error_line.contains("nm-handover.peer"), "unclear error: {error_line}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.ipv4("backup0"), None, "a device was touched");
    let status = lab.companion(&["status"]);
    assert!(status.contains("broken pair"), "{status}");
    no_panic(lab);
    report_dispatcher_time(test, lab);
}

#[test]
fn two_pairs_on_one_host_hand_over_independently() {
    let test = "faults/two pairs";
    let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_companion();
    cfg.links = vec!["wired0", "backup0", "wired1", "backup1"];
    let Some(lab) = start_or_skip(test, cfg) else { return };
    for i in 0..2 {
        lab.add_ethernet_profile(&format!("Office LAN {i}"), &format!("wired{i}"), true);
        lab.add_ethernet_profile(&format!("Backup {i}"), &format!("backup{i}"), false);
        lab.companion(&["pair", &format!("Office LAN {i}"), &format!("Backup {i}")]);
    }
    lab.expect_until("both wired addresses", Duration::from_secs(30), || lab.ipv4("wired0").is_some() && lab.ipv4("wired1").is_some());
    let (a0, a1) = (lab.ipv4("wired0").unwrap(), lab.ipv4("wired1").unwrap());
    assert_ne!(a0, a1);
    lab.set_cable("wired1", false);
    lab.expect_until("pair 1's backup to hold its address", Duration::from_secs(20), || lab.ipv4("backup1") == Some(a1));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.ipv4("wired0"), Some(a0), "pair 0 was touched");
    assert_eq!(lab.ipv4("backup0"), None, "pair 0's backup was touched");
    lab.set_cable("wired1", true);
    lab.expect_until("pair 1 handed back", Duration::from_secs(30), || lab.ipv4("wired1") == Some(a1) && lab.ipv4("backup1").is_none());
    assert_eq!(lab.ipv4("wired0"), Some(a0));
    no_panic(&lab);
    report_dispatcher_time(test, &lab);
}

/// One broken pair (its backup profile deleted) beside a healthy one: at
/// NetworkManager's start with the healthy pair's cable out, the supervisor
/// reports the broken pair and still brings the healthy pair's backup up.
#[test]
fn a_broken_pair_is_reported_and_the_others_are_reconciled() {
    let test = "faults/a broken pair beside a healthy one";
    let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_companion();
    cfg.links = vec!["wired0", "backup0", "wired1", "backup1"];
    let Some(mut lab) = start_or_skip(test, cfg) else { return };
    for i in 0..2 {
        lab.add_ethernet_profile(&format!("Office LAN {i}"), &format!("wired{i}"), true);
        lab.add_ethernet_profile(&format!("Backup {i}"), &format!("backup{i}"), false);
        lab.companion(&["pair", &format!("Office LAN {i}"), &format!("Backup {i}")]);
    }
    lab.expect_until("both wired addresses", Duration::from_secs(30), || lab.ipv4("wired0").is_some() && lab.ipv4("wired1").is_some());
    // The pair the companion looks at first breaks (a loop that stopped at it would never reach the other).
    let status = lab.companion(&["status"]);
    let at = |i: usize| status.find(&format!("pair 'Office LAN {i}'")).unwrap_or_else(|| panic!("pair {i} not listed: {status}"));
    let (broken, healthy) = if at(0) < at(1) { (0, 1) } else { (1, 0) };
    let addr = lab.ipv4(&format!("wired{healthy}")).unwrap();
    lab.nmcli(&["connection", "delete", &format!("Backup {broken}")]).unwrap();
    lab.reboot_nm(|lab| lab.set_cable(&format!("wired{healthy}"), false));
    let took = lab.expect_until("the healthy pair's backup after NetworkManager's start", Duration::from_secs(30), || {
        lab.ipv4(&format!("backup{healthy}")) == Some(addr)
    });
    measured(test, "NM start -> the healthy pair's backup holds its address", ms(took));
    let status = lab.companion(&["status"]);
    assert!(status.contains("broken pair"), "{status}");
    let log = lab.dispatcher_log();
    let names_broken = |l: &str| l.contains(&format!("Backup {broken}")) || l.contains(&format!("Office LAN {broken}"));
    assert!(log.lines().any(|l| l.contains("ERROR") && names_broken(l)), "the broken pair was not reported\n{log}");
    assert_eq!(lab.ipv4(&format!("backup{broken}")), None, "the broken pair's backup link was touched");
    no_panic(&lab);
}

/// Two events race: one waits for the handover lock while NM's state changes
/// under it (as when it queues behind another handover). It must decide on
/// what NM looks like after the wait, not on what it looked like before.
#[test]
fn an_event_waiting_for_the_lock_decides_on_the_state_after_the_wait() {
    use nm_handover::sys::lock::FileLock;
    let test = "faults/event waits for the lock while the cable is pulled";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let lab = &p.lab;
    // The lab's /run is the companion's /run.
    let held = FileLock::acquire(&lab.dir.join("run/nm-handover/handover.lock"), Duration::from_secs(5)).expect("take the handover lock");
    let keyfile = std::path::Path::new("/etc/NetworkManager/system-connections").join(lab.keyfile_of("Office LAN").file_name().unwrap());
    let event = lab
        .host_command(&[env!("CARGO_BIN_EXE_nm-handover"), "wired0", "dhcp4-change"])
        .env("NM_DISPATCHER_ACTION", "dhcp4-change")
        .env("DEVICE_IFACE", "wired0")
        .env("CONNECTION_UUID", &p.wired_uuid)
        .env("CONNECTION_ID", "Office LAN")
        .env("CONNECTION_FILENAME", &keyfile)
        .env("NM_HANDOVER_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the event");
    // Time to connect to NM and reach the lock, with the cable still in.
    std::thread::sleep(Duration::from_millis(1500));
    lab.pull_cable();
    lab.expect_until("NM to see the carrier gone", Duration::from_secs(5), || nm_state(lab, "Office LAN").is_empty());
    drop(held);
    let out = event.wait_with_output().expect("the event's output");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("wired_carrier: false"), "{test}: decided on NM's state from before the wait:\n{log}");
    lab.expect_until("the backup to hold the address", Duration::from_secs(30), || settled(lab, false, p.addr));
    no_panic(lab);
}

/// Another dispatcher script that takes 3 s on every event (a VPN check, a
/// sync hook): nm-dispatcher runs waiting requests one at a time, so with the
/// companion as a waiting script the pull queued behind it. Installed as a
/// no-wait script (the layout meson-compat installs) it starts at once; the
/// handover lock and the state read after it keep it correct.
fn pull_with_a_slow_foreign_script(test: &str, companion_waits: bool) -> std::time::Duration {
    let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal);
    cfg.companion_waits = companion_waits;
    cfg.scripts.push(("50-slow-vpn-check".into(), "#!/bin/sh\nsleep 3\nexit 0\n".into()));
    let Some(p) = paired(test, cfg, &[]) else { return std::time::Duration::ZERO };
    let lab = &p.lab;
    // The slow script's own queue from the activation settles first.
    std::thread::sleep(Duration::from_secs(8));
    if companion_waits {
        // The supervisor hands over a pull it watched on NM's own signals,
        // outside nm-dispatcher's queue: the control shows the queue with the
        // dispatcher path alone. Stopped just before the pull (one that
        // NetworkManager's events start again meanwhile would watch it); the
        // one the pull's events start did not see the cable in.
        assert!(stop_supervisor(lab).is_some(), "no supervisor runs");
    }
    lab.pull_cable();
    let took = lab.expect_until("the backup to hold the address", Duration::from_secs(40), || lab.ipv4("backup0") == Some(p.addr));
    measured(test, "pull -> backup holds the address, with a 3 s script on every event", ms(took));
    lab.plug_cable();
    lab.expect_until("the wired link back", Duration::from_secs(60), || settled(lab, true, p.addr));
    took
}

#[test]
fn a_slow_foreign_dispatcher_script_does_not_delay_the_pull() {
    let no_wait = pull_with_a_slow_foreign_script("faults/slow foreign script, companion no-wait", false);
    if no_wait.is_zero() {
        return;
    }
    assert!(no_wait <= pull_bound(false), "the pull took {no_wait:?} with a slow foreign script");
    // The control: the companion as a waiting script queues behind the slow one.
    let waiting = pull_with_a_slow_foreign_script("faults/slow foreign script, companion waiting (control)", true);
    assert!(waiting > Duration::from_secs(3), "control: the waiting layout took only {waiting:?}; the slow script did not delay it");
}
