//! The trust boundary in the real-NM lab: pairing keys in profiles root did
//! not record (a user's private profiles, or system profiles whose pair has
//! no record written by `nm-handover pair` as root) make the companion, which
//! nm-dispatcher runs as root, change nothing: no link goes down, no MAC
//! changes, nothing is activated, and a warning says why.
//!
//! Needs root; as non-root every test says why it skips.

mod support;

use nm_handover::names::Uuid;
use nm_handover::trust::record_path;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::*;

/// Appends the pairing keys to a profile's keyfile and has NM load it: what
/// a user with `settings.modify.own` can do through NM's D-Bus API.
fn add_pairing_keys(lab: &Lab, profile: &str, role: &str, peer: &str, device: &str) {
    let path = lab.keyfile_of(profile);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[user]\nnm-handover.role={role}\nnm-handover.peer={peer}\nnm-handover.device={device}\n")).unwrap();
    let seen_by_nm = PathBuf::from("/etc/NetworkManager/system-connections").join(path.file_name().unwrap());
    lab.nmcli(&["connection", "load", &seen_by_nm.to_string_lossy()]).expect("nmcli connection load");
}

fn uuid_of(lab: &Lab, profile: &str) -> String {
    lab.nmcli(&["-g", "connection.uuid", "connection", "show", profile]).expect("profile uuid").trim().to_owned()
}

/// The companion's warnings about ignored pairs, one line each.
fn ignored_warnings(lab: &Lab) -> Vec<String> {
    lab.dispatcher_log().lines().filter(|l| l.contains("ignored:") && l.contains("WARN")).map(str::to_owned).collect()
}

/// Link state changes of `iface` (administrative or carrier) since `since`.
fn link_changes(monitor: &NetMonitor, since: Instant, iface: &str) -> Vec<NetEvent> {
    monitor
        .events_since(since)
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| matches!(e, NetEvent::LinkAdmin { iface: i, .. } | NetEvent::Carrier { iface: i, .. } if i == iface))
        .collect()
}

/// Pulls `cable` for long enough that NM (6 s carrier wait by default)
/// deactivates its profile and dispatches `down`, then plugs it back and
/// waits for `up` of `profile` again (activated by hand where it does not
/// connect by itself: NM autoconnects a private profile only for a user
/// with a session, which the lab has not).
fn pull_and_replug(lab: &Lab, cable: &str, profile: &str, by_hand: bool) {
    lab.set_cable(cable, false);
    lab.expect_until(&format!("'{profile}' deactivated after the pull"), Duration::from_secs(20), || nm_state(lab, profile).is_empty());
    // The dispatcher's `down` runs after the deactivation: give it time to act, if it would.
    std::thread::sleep(Duration::from_secs(3));
    lab.set_cable(cable, true);
    if by_hand {
        lab.nmcli(&["connection", "up", profile]).expect("activate again");
    }
    lab.expect_until(&format!("'{profile}' active again after the re-plug"), Duration::from_secs(40), || nm_state(lab, profile) == "activated");
    std::thread::sleep(Duration::from_secs(3));
}

/// Root's record of the pair whose wired profile is `wired_uuid`, in the lab's configuration.
fn recorded_pair(lab: &Lab, wired_uuid: &str) -> PathBuf {
    record_path(&lab.nm_conf_dir().join("nm-handover"), &Uuid::parse(wired_uuid).expect("the wired profile's UUID"))
}

#[test]
fn private_profiles_with_pairing_keys_make_root_change_nothing() {
    let test = "trust/private profiles";
    let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_companion();
    cfg.links = vec!["wired0", "backup0", "third0"];
    let Some(lab) = start_or_skip(test, cfg) else { return };
    // A system profile holds backup0.
    lab.add_ethernet_profile("Backup link", "backup0", true);
    lab.expect_until("backup0 held by its system profile", Duration::from_secs(30), || lab.ipv4("backup0").is_some());
    let third_mac = lab.mac("third0");
    let backup_mac = lab.mac("backup0");
    // Two profiles a user may create without a password, pointing at each other; the "backup"
    // clones the "wired" link's MAC, as `pair` would set it.
    for (name, iface) in [("Private wired", "third0"), ("Private backup", "backup0")] {
        lab.add_profile("ethernet", name, iface, &["autoconnect", "no", "connection.permissions", "user:nobody", "ipv6.method", "disabled"])
            .expect("add a private profile");
    }
    lab.nmcli(&["connection", "modify", "Private backup", "ethernet.cloned-mac-address", &third_mac]).expect("clone the MAC");
    let (wired_uuid, backup_uuid) = (uuid_of(&lab, "Private wired"), uuid_of(&lab, "Private backup"));
    add_pairing_keys(&lab, "Private wired", "wired", &backup_uuid, "third0");
    add_pairing_keys(&lab, "Private backup", "backup", &wired_uuid, "backup0");
    lab.nmcli(&["connection", "up", "Private wired"]).expect("activate the private wired profile");
    lab.expect_until("third0's address", Duration::from_secs(30), || lab.ipv4("third0").is_some());

    let monitor = NetMonitor::start(&lab);
    let since = Instant::now();
    let warnings_before = ignored_warnings(&lab).len();
    pull_and_replug(&lab, "third0", "Private wired", true);

    assert_eq!(link_changes(&monitor, since, "backup0"), vec![], "backup0 changed state\n{}", lab.diagnostics());
    assert_eq!(lab.mac("backup0"), backup_mac, "backup0's MAC changed\n{}", lab.diagnostics());
    assert_eq!(nm_state(&lab, "Backup link"), "activated", "{}", lab.diagnostics());
    assert!(!lab.nm_log().contains("starting connection 'Private backup'"), "the private backup was activated\n{}", lab.diagnostics());
    assert!(processes_named(&lab, "nm-handover-watch").is_empty(), "a watcher runs");
    let warnings = ignored_warnings(&lab)[warnings_before..].to_vec();
    assert!(!warnings.is_empty(), "no warning logged\n{}", lab.dispatcher_log());
    assert!(warnings.iter().all(|w| w.contains("private profile")), "{warnings:#?}");
    // At most one per event: the pull's `down` and the re-plug's `up` (and `pre-up`, `connectivity-change`).
    assert!(warnings.len() <= 4, "more than one warning per event: {warnings:#?}");
    measured(test, "warnings logged over a pull and a re-plug", warnings.len());

    // `pair` refuses a private profile, saying why, and changes nothing.
    let keyfile = std::fs::read(lab.keyfile_of("Backup link")).unwrap();
    let out = lab.run_in_host(&[env!("CARGO_BIN_EXE_nm-handover"), "pair", "Private wired", "Backup link"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("private profile"), "{said}");
    assert_eq!(std::fs::read(lab.keyfile_of("Backup link")).unwrap(), keyfile);
    // `status` lists no pair; `check` names the problem and the fix.
    let status = lab.companion(&["status"]);
    assert!(!status.lines().any(|l| l.starts_with("pair ")) && status.contains("not handled: pair 'Private wired'"), "{status}");
    let out = lab.run_in_host(&[env!("CARGO_BIN_EXE_nm-handover"), "check"]);
    let check = String::from_utf8_lossy(&out.stdout);
    assert!(check.contains("trust") && check.contains("nm-handover unpair 'Private wired'"), "{check}");
}

#[test]
fn system_profiles_with_pairing_keys_but_no_record_make_root_change_nothing() {
    let test = "trust/no record";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let lab = &p.lab;
    let record = recorded_pair(lab, &p.wired_uuid);
    assert!(record.is_file(), "pair wrote no record at {}", record.display());
    // As if the pairing keys had been written by someone allowed to edit system profiles, not root's `pair`.
    std::fs::remove_file(&record).unwrap();
    let backup_mac = lab.mac("backup0");
    let monitor = NetMonitor::start(lab);
    let since = Instant::now();
    pull_and_replug(lab, "wired0", "Office LAN", false);
    assert_eq!(link_changes(&monitor, since, "backup0"), vec![], "backup0 changed state\n{}", lab.diagnostics());
    assert_eq!(lab.mac("backup0"), backup_mac, "backup0's MAC changed\n{}", lab.diagnostics());
    assert!(!lab.nm_log().contains("starting connection 'Backup link'"), "the backup was activated\n{}", lab.diagnostics());
    let warnings = ignored_warnings(lab);
    assert!(warnings.iter().any(|w| w.contains("no record of this pair written by root")), "{warnings:#?}\n{}", lab.dispatcher_log());
    let out = lab.run_in_host(&[env!("CARGO_BIN_EXE_nm-handover"), "check"]);
    let check = String::from_utf8_lossy(&out.stdout);
    assert!(check.contains("nm-handover pair 'Office LAN' 'Backup link'"), "{check}");

    // The fix `check` gives restores the handover.
    lab.companion(&["pair", "Office LAN", "Backup link"]);
    assert!(record.is_file());
    lab.pull_cable();
    let took = lab.expect_until("the backup to hold the address again", Duration::from_secs(20), || lab.ipv4("backup0") == Some(p.addr));
    measured(test, "pull after pairing again", ms(took));
}

/// A pair root recorded, whose backup profile someone allowed to edit
/// system profiles then bound to another link (`connection.interface-name`
/// of a link a system profile holds): NetworkManager no longer binds the
/// profile to the recorded link, so the companion refuses to act on it, and
/// on the other link too: nothing changes on either, a warning names the
/// link and why, `check` reports it.
#[test]
fn a_recorded_pair_whose_backup_is_bound_elsewhere_makes_root_change_nothing() {
    let test = "trust/backup bound elsewhere";
    let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal);
    cfg.links = vec!["wired0", "backup0", "third0"];
    let Some(p) = paired(test, cfg, &[]) else { return };
    let lab = &p.lab;
    lab.add_ethernet_profile("Other LAN", "third0", true);
    lab.expect_until("third0 held by its system profile", Duration::from_secs(30), || lab.ipv4("third0").is_some());
    lab.nmcli(&["connection", "modify", "Backup link", "connection.interface-name", "third0"]).expect("bind the backup profile to third0");
    let macs = [("backup0", lab.mac("backup0")), ("third0", lab.mac("third0"))];
    let monitor = NetMonitor::start(lab);
    let since = Instant::now();
    pull_and_replug(lab, "wired0", "Office LAN", false);
    for (iface, mac) in &macs {
        assert_eq!(link_changes(&monitor, since, iface), vec![], "{iface} changed state\n{}", lab.diagnostics());
        assert_eq!(&lab.mac(iface), mac, "{iface}'s MAC changed\n{}", lab.diagnostics());
    }
    assert_eq!(nm_state(lab, "Other LAN"), "activated", "{}", lab.diagnostics());
    assert!(!lab.nm_log().contains("starting connection 'Backup link'"), "the backup was activated\n{}", lab.diagnostics());
    assert!(processes_named(lab, "nm-handover-watch").is_empty(), "a watcher runs\n{}", lab.diagnostics());
    let log = lab.dispatcher_log();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("not acting on backup0 for 'Backup link'")).collect();
    assert!(!refusals.is_empty() && refusals.iter().all(|l| l.contains("does not bind the profile to it")), "{log}");
    measured(test, "refusals logged over a pull and a re-plug", refusals.len());
    let out = lab.run_in_host(&[env!("CARGO_BIN_EXE_nm-handover"), "check"]);
    let check = String::from_utf8_lossy(&out.stdout);
    assert!(check.contains("backup0 of 'Backup link'") && check.contains("does not bind the profile to it"), "{check}");
}

#[test]
fn unpair_of_a_copy_of_a_paired_profile_leaves_the_pair_intact() {
    let test = "trust/unpair of a clone";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let lab = &p.lab;
    lab.nmcli(&["connection", "clone", "Office LAN", "Office LAN copy"]).expect("clone");
    lab.nmcli(&["connection", "clone", "Backup link", "Backup link copy"]).expect("clone");
    let backup_keyfile = std::fs::read(lab.keyfile_of("Backup link")).unwrap();
    for copy in ["Office LAN copy", "Backup link copy"] {
        let said = lab.companion(&["unpair", copy]);
        assert!(said.contains(&format!("only '{copy}' was unpaired")), "{said}");
    }
    assert_eq!(std::fs::read(lab.keyfile_of("Backup link")).unwrap(), backup_keyfile, "the original backup changed");
    let status = lab.companion(&["status"]);
    assert!(status.contains("pair 'Office LAN' (wired0) <-> 'Backup link' (backup0)"), "{status}");
    lab.pull_cable();
    let took = lab.expect_until("the backup to hold the address", Duration::from_secs(20), || lab.ipv4("backup0") == Some(p.addr));
    measured(test, "pull after unpairing the copies", ms(took));
}

/// `pair` changes the profiles first and records the pair last, under the
/// handover lock: while it waits for a running handover, the half-paired
/// profiles have no record, so no handover acts on them; and it holds the
/// lock only for its few file writes.
#[test]
fn pair_records_the_pair_last_under_the_handover_lock() {
    let test = "trust/pair's commit";
    let Some(lab) = start_or_skip(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_companion()) else { return };
    let wired_uuid = lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.add_ethernet_profile("Backup link", "backup0", false);
    lab.expect_until("the wired link's address", Duration::from_secs(30), || lab.ipv4("wired0").is_some());
    let record = recorded_pair(&lab, &wired_uuid);
    // A handover holding the lock for 4 s.
    lab.run_in_host(&["mkdir", "-p", "/run/nm-handover"]);
    let mut holder = lab.host_command(&["flock", "/run/nm-handover/handover.lock", "sleep", "4"]).spawn().expect("flock");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut pair =
        lab.host_command(&[env!("CARGO_BIN_EXE_nm-handover"), "pair", "Office LAN", "Backup link"]).stdout(std::process::Stdio::null()).spawn().expect("pair");
    lab.expect_until("pair to write the backup's pairing data", Duration::from_secs(3), || {
        std::fs::read_to_string(lab.keyfile_of("Backup link")).is_ok_and(|t| t.contains("nm-handover.role=backup"))
    });
    assert!(!record.exists(), "the record was written while a handover held the lock");
    assert!(pair.try_wait().unwrap().is_none(), "pair did not wait for the handover lock");
    let status = holder.wait().expect("flock");
    let released = Instant::now();
    assert!(status.success());
    let pair_status = pair.wait().expect("pair");
    let after_release = released.elapsed();
    assert!(pair_status.success());
    assert!(record.is_file(), "no record after pair");
    measured(test, "pair: start -> done / lock released -> done", format!("{} / {}", ms(started.elapsed()), ms(after_release)));
    // Its commit (two files and NM's configuration reload) is short: a `link-up` NM waits for is never held long.
    assert!(after_release < Duration::from_secs(1), "pair took {after_release:?} after the lock was free");
}

/// `unpair` removes root's record first, under the handover lock, and
/// changes the profiles only once no record names them: a handover that
/// holds the lock finishes on the pair as it was, and the next one sees no pair.
#[test]
fn unpair_withdraws_the_record_first_under_the_handover_lock() {
    let test = "trust/unpair's withdrawal";
    let Some(p) = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]) else { return };
    let lab = &p.lab;
    let record = recorded_pair(lab, &p.wired_uuid);
    assert!(record.is_file());
    let paired_data = |profile: &str| std::fs::read_to_string(lab.keyfile_of(profile)).is_ok_and(|t| t.contains("nm-handover.role="));
    let mut holder = lab.host_command(&["flock", "/run/nm-handover/handover.lock", "sleep", "3"]).spawn().expect("flock");
    std::thread::sleep(Duration::from_millis(300));
    let mut unpair =
        lab.host_command(&[env!("CARGO_BIN_EXE_nm-handover"), "unpair", "Office LAN"]).stdout(std::process::Stdio::null()).spawn().expect("unpair");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(unpair.try_wait().unwrap().is_none(), "unpair did not wait for the handover lock");
    assert!(record.is_file(), "the record was removed while a handover held the lock");
    assert!(paired_data("Office LAN") && paired_data(p.backup_profile), "a profile changed while a handover held the lock");
    assert!(holder.wait().expect("flock").success());
    let released = Instant::now();
    lab.expect_until("the record gone", Duration::from_secs(5), || !record.exists());
    let withdrawn = released.elapsed();
    assert!(unpair.wait().expect("unpair").success());
    assert!(!paired_data("Office LAN") && !paired_data(p.backup_profile), "unpair left pairing data");
    measured(test, "lock released -> record gone", ms(withdrawn));
    assert!(withdrawn < Duration::from_secs(1), "unpair took {withdrawn:?} to withdraw the record after the lock was free");
}
