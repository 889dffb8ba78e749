//! The user-facing commands: pair, unpair, status, check.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use serde::Serialize;
use tracing::warn;

use crate::check::{judge, DispatchLink, DispatcherUnit, Facts, Finding, PairFacts};
use crate::error::{Error, Result};
use crate::handover::{nm_has_link_up, profile_membership, Pair, System};
use crate::lease::write_atomically;
use crate::names::{Iface, Uuid};
use crate::pairing::PairingError;
use crate::pairing::{
    carrier_wait_conf, carrier_wait_conf_name, check_order, order_is_a_guess, plan_pair, plan_unpair, storage_note, token_of, wired_lan_mac, Ipv6Settings,
    Plan, ProfileSnapshot, WiredIdentity, HOSTNAME_PROPERTIES, MIRRORED, SETTING_IPV6, SETTING_WIRELESS,
};
use crate::policy::{LinkState, Options, Role};
use crate::sys::libnm::{ActiveState, Device, IpFamily, Nm, NmError, Profile, SavedProfile};
use crate::sys::lock::{running_holder, running_watcher, stop_holder, stop_watcher, FileLock, SUPERVISOR_PROGRAM};
use crate::sys::paths::{supervisor_lock_path, watcher_lock_path, wired_lan_path, LOCK_PATH, NM_CONF_DIR, RECORD_DIR};
use crate::sys::settings::{ProfileEdit, PropertyValue};
use crate::trust::{self, Distrust, PairRecord};

/// Finds a profile by UUID, else by its exact name.
pub fn find_profile(nm: &Nm, name_or_uuid: &str) -> Result<Profile> {
    if let Some(p) = nm.profile(name_or_uuid) {
        return Ok(p);
    }
    let mut matches: Vec<Profile> = nm.profiles().into_iter().filter(|p| p.id().as_deref() == Some(name_or_uuid)).collect();
    match matches.len() {
        0 => Err(Error::NoSuchProfile(name_or_uuid.to_owned())),
        1 => Ok(matches.remove(0)),
        count => Err(Error::AmbiguousProfile { name: name_or_uuid.to_owned(), count }),
    }
}

fn string_property(profile: &Profile, setting: &str, property: &str) -> Option<String> {
    match profile.property(setting, property) {
        Some(PropertyValue::Str(s)) => s,
        _ => None,
    }
}

fn snapshot(nm: &Nm, profile: &Profile) -> Result<ProfileSnapshot> {
    let kind = profile.connection_type().unwrap_or_default();
    let mut snapshot = ProfileSnapshot {
        uuid: Uuid::parse(&profile.uuid().unwrap_or_default())?,
        id: profile.id().unwrap_or_default(),
        cloned_mac: None,
        dhcp_client_id: None,
        autoconnect: true,
        user_data: profile.user_data(),
        active: nm.active_connection_of(&profile.uuid().unwrap_or_default()).is_some(),
        filename: profile.filename(),
        ipv6: Ipv6Settings { method: string_property(profile, SETTING_IPV6, "method"), ..Ipv6Settings::default() },
        dad_timeout: None,
        hostname: HOSTNAME_PROPERTIES.iter().filter_map(|&(setting, property)| Some(((setting, property), profile.property(setting, property)?))).collect(),
        kind,
    };
    for m in &MIRRORED {
        if let Some(value) = profile.property(m.setting_for(&snapshot.kind), m.property) {
            (m.set)(&mut snapshot, value);
        }
    }
    Ok(snapshot)
}

/// The device a profile runs on: the one given, its `interface-name`, the
/// device it is active on, or the only device of its kind.
fn profile_device(nm: &Nm, profile: &Profile, given: Option<&str>, option: &'static str) -> Result<Iface> {
    if let Some(name) = given.map(str::to_owned).or_else(|| profile.interface_name()) {
        return Ok(Iface::parse(&name)?);
    }
    let uuid = profile.uuid().unwrap_or_default();
    let compatible: Vec<String> = nm.devices().iter().filter(|d| d.compatible_with(profile)).map(|d| d.iface()).collect();
    let active_on = nm.active_connection_of(&uuid).map(|ac| ac.device_ifaces()).unwrap_or_default();
    match (active_on.as_slice(), compatible.as_slice()) {
        ([one], _) | ([], [one]) => Ok(Iface::parse(one)?),
        _ => Err(Error::UnknownDevice { profile: profile.id().unwrap_or_default(), option }),
    }
}

pub struct PairArgs<'a> {
    pub wired: &'a str,
    pub backup: &'a str,
    pub wired_device: Option<&'a str>,
    pub backup_device: Option<&'a str>,
    pub carrier_wait_ms: u32,
    pub lease_carry: bool,
    pub carrier_watch: bool,
    pub standby: bool,
    /// Pair as given even where the two profiles look swapped.
    pub force: bool,
}

/// What `pair` and `unpair` need from NetworkManager to change profiles: a
/// narrow seam, so that the rollback is tested without a daemon.
pub trait ProfileWriter {
    type Profile;
    /// A whole profile as it was before an update.
    type Saved;
    fn update(&self, profile: &Self::Profile, edit: &ProfileEdit) -> Result<Self::Saved, NmError>;
    fn restore(&self, profile: &Self::Profile, saved: &Self::Saved) -> Result<(), NmError>;
}

impl ProfileWriter for Nm {
    type Profile = Profile;
    type Saved = SavedProfile;

    fn update(&self, profile: &Profile, edit: &ProfileEdit) -> Result<SavedProfile, NmError> {
        self.update_profile(profile, &crate::pairing::timestamp_on_disk(profile.filename().as_deref()), edit)
    }

    fn restore(&self, profile: &Profile, saved: &SavedProfile) -> Result<(), NmError> {
        self.restore_profile(profile, saved)
    }
}

/// Both updates of a plan (`pair`'s or `unpair`'s), or neither: when the
/// wired profile's fails, the backup profile is written back exactly as it
/// was (libnm's cache is not refreshed between the two, so it cannot say
/// what "as it was" is). A side that is gone (`unpair` of a pair whose peer
/// was deleted) or has nothing to change is left alone. Returns what each
/// written profile was before, for [`undo`].
fn apply<'p, W: ProfileWriter>(
    writer: &W,
    wired: Option<&'p W::Profile>,
    backup: Option<&'p W::Profile>,
    plan: &Plan,
) -> Result<Vec<(&'p W::Profile, W::Saved)>> {
    let mut written = Vec::new();
    if let Some(profile) = backup.filter(|_| !plan.backup.is_empty()) {
        written.push((profile, writer.update(profile, &plan.backup)?));
    }
    let Some(wired) = wired.filter(|_| !plan.wired.is_empty()) else {
        return Ok(written);
    };
    match writer.update(wired, &plan.wired) {
        Ok(saved) => {
            written.push((wired, saved));
            Ok(written)
        }
        Err(cause) => match undo(writer, &written) {
            Ok(()) => Err(cause.into()),
            Err(undo) => Err(Error::RollbackFailed { cause, undo }),
        },
    }
}

/// Writes back each profile [`apply`] changed, as it was, last first.
fn undo<W: ProfileWriter>(writer: &W, written: &[(&W::Profile, W::Saved)]) -> Result<(), NmError> {
    written.iter().rev().try_for_each(|(profile, saved)| writer.restore(profile, saved))
}

/// How long `pair` and `unpair` wait for a handover to finish before they
/// commit; they hold the lock only for a few file operations, so a `link-up`
/// that NM waits for is never held up by them.
const COMMIT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `pair`'s commit: the carrier-wait snippet and root's record of the pair,
/// written under the handover lock once both profiles hold their pairing
/// data, so that no handover ever acts on half-changed profiles (before the
/// record, the companion ignores them). Either both files are written, or
/// neither is left changed.
fn commit_pair(record: &PairRecord, snippet: (&Path, &str)) -> Result<()> {
    let _lock = FileLock::acquire(Path::new(LOCK_PATH), COMMIT_LOCK_WAIT)?;
    let record_path = trust::recorded_pair_path(&record.wired);
    let previous_snippet = fs::read(snippet.0).ok();
    write_atomically(snippet.0, snippet.1.as_bytes())?;
    let written = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(RECORD_DIR)
        .map_err(|source| Error::Io { path: RECORD_DIR.into(), source })
        .and_then(|()| Ok(write_atomically(&record_path, record.render().as_bytes())?));
    if written.is_err() {
        let _ = match previous_snippet {
            Some(text) => write_atomically(snippet.0, &text).map_err(|e| e.to_string()),
            None => fs::remove_file(snippet.0).map_err(|e| e.to_string()),
        };
    }
    written
}

/// Removes the record of the pair whose wired profile is `wired` (whatever
/// stands there, a planted link too), under the handover lock.
fn withdraw_record(wired: &Uuid) -> Result<()> {
    let path = trust::recorded_pair_path(wired);
    if fs::symlink_metadata(&path).is_err() {
        return Ok(());
    }
    let _lock = FileLock::acquire(Path::new(LOCK_PATH), COMMIT_LOCK_WAIT)?;
    fs::remove_file(&path).map_err(|source| Error::Io { path, source })
}

/// Puts back a record root wrote that [`withdraw_record`] removed, where a
/// change failed. (A record that was not root's alone is not put back: a
/// new file would make it one.)
fn restore_record(record: Option<&PairRecord>) {
    let Some(record) = record else { return };
    if let Err(e) = write_atomically(&trust::recorded_pair_path(&record.wired), record.render().as_bytes()) {
        warn!("{e}: the pair stays in its profiles but nm-handover ignores it; run `nm-handover pair` again");
    }
}

/// Whether `this` (the profile `unpair` was given) is a side of the pair
/// root recorded, so that its peer may be unpaired with it: the record names
/// both; or, for a pair paired before records existed, there is none and
/// the peer's data points back at `this`. A copy of a paired profile
/// (`nmcli connection clone`) is neither: only the copy is unpaired.
fn unpair_takes_peer(record: &Result<Option<PairRecord>, Distrust>, wired: &Uuid, backup: &Uuid, peer_points_back: bool) -> bool {
    match record {
        Ok(Some(r)) => &r.wired == wired && &r.backup == backup,
        Ok(None) | Err(_) => peer_points_back,
    }
}

pub fn pair(nm: &Nm, args: &PairArgs) -> Result<Vec<String>> {
    if !crate::sys::is_root() {
        return Err(Error::NotRoot("pair"));
    }
    let wired = find_profile(nm, args.wired)?;
    let backup = find_profile(nm, args.backup)?;
    for profile in [&wired, &backup] {
        if profile.is_private() {
            return Err(PairingError::Private(profile.id().unwrap_or_default()).into());
        }
    }
    let wired_device = profile_device(nm, &wired, args.wired_device, "--wired-device")?;
    let backup_device = profile_device(nm, &backup, args.backup_device, "--backup-device")?;
    let device = nm.device(wired_device.as_str()).ok_or_else(|| Error::NoDevice(wired_device.to_string()))?;
    let (wired_snap, backup_snap) = (snapshot(nm, &wired)?, snapshot(nm, &backup)?);
    if !args.force {
        check_order(&wired_snap, &backup_snap)?;
    }
    if order_is_a_guess(&wired_snap, &backup_snap) {
        warn!(
            "nothing tells which of two Ethernet profiles is the wired one: pairing as given, '{}' stays the wired link, '{}' becomes the backup (it connects only when '{}' loses carrier, with its MAC address); `nm-handover unpair` undoes it",
            wired_snap.id, backup_snap.id, wired_snap.id
        );
    }
    let mac = wired_lan_mac(&wired_snap, device.permanent_hw_address().as_deref(), device.hw_address().as_deref())?;
    let identity = wired_identity(&device, &wired_snap.uuid);
    let plan = plan_pair(
        &wired_snap,
        &wired_device,
        &backup_snap,
        &backup_device,
        &mac,
        &identity,
        Options { lease_carry: args.lease_carry, carrier_watch: args.carrier_watch, standby: args.standby },
    )?;
    // Pairing again: the old record goes first, under the lock, so that no
    // handover acts while the profiles change (as for `unpair`); it comes
    // back if the profiles cannot be changed.
    let old_record = trust::read_record(Path::new(RECORD_DIR), &wired_snap.uuid).ok().flatten();
    withdraw_record(&wired_snap.uuid)?;
    let written = match apply(nm, Some(&wired), Some(&backup), &plan) {
        Ok(written) => written,
        Err(err) => {
            restore_record(old_record.as_ref());
            return Err(err);
        }
    };

    let mut summary: Vec<String> = [&wired_snap, &backup_snap].into_iter().filter_map(storage_note).collect();
    summary.extend(plan.summary);
    let text = carrier_wait_conf(&wired_snap.uuid, &wired_device, args.carrier_wait_ms);
    let path = Path::new(NM_CONF_DIR).join(carrier_wait_conf_name(&wired_snap.uuid));
    let record = PairRecord {
        wired: wired_snap.uuid.clone(),
        wired_device: wired_device.clone(),
        backup: backup_snap.uuid.clone(),
        backup_device,
        standby: args.standby,
    };
    if let Err(cause) = commit_pair(&record, (&path, &text)) {
        // Not recorded: the profiles go back to what they were, so nothing is half-paired.
        restore_record(old_record.as_ref());
        return Err(match undo(nm, &written) {
            Ok(()) => cause,
            Err(undo) => Error::RollbackFailed { cause: NmError::Call { what: "recording the pair".into(), message: cause.to_string() }, undo },
        });
    }
    summary.push(format!("{}: the pair recorded by root (nm-handover acts only on pairs recorded here)", trust::recorded_pair_path(&record.wired).display()));
    nm.reload_config()?;
    summary.push(start_supervisor());
    summary.push(format!(
        "{}: carrier-wait-timeout={} ms for {wired_device} (NetworkManager reloaded its configuration)",
        path.display(),
        args.carrier_wait_ms
    ));
    Ok(summary)
}

pub fn unpair(nm: &Nm, name_or_uuid: &str) -> Result<Vec<String>> {
    if !crate::sys::is_root() {
        return Err(Error::NotRoot("unpair"));
    }
    let profile = find_profile(nm, name_or_uuid)?;
    let id = profile.id().unwrap_or_default();
    let this_uuid = Uuid::parse(&profile.uuid().unwrap_or_default())?;
    let this = profile_membership(&profile)?.ok_or_else(|| Error::NotPaired(id.clone()))?;
    let (wired_uuid, backup_uuid) = match this.role {
        Role::Wired => (this_uuid.clone(), this.peer.clone()),
        Role::Backup => (this.peer.clone(), this_uuid.clone()),
    };
    // The peer may be gone (deleted by the user): unpair what is left.
    let peer = nm.profile(this.peer.as_str());
    let peer_points_back = peer.as_ref().and_then(|p| profile_membership(p).ok().flatten()).is_some_and(|m| m.peer == this_uuid && m.role != this.role);
    let record_path = trust::recorded_pair_path(&wired_uuid);
    let record = trust::read_record(Path::new(RECORD_DIR), &wired_uuid);
    let whole_pair = unpair_takes_peer(&record, &wired_uuid, &backup_uuid, peer_points_back);
    let peer = peer.filter(|_| whole_pair);
    let (wired, backup) = match this.role {
        Role::Wired => (Some(&profile), peer.as_ref()),
        Role::Backup => (peer.as_ref(), Some(&profile)),
    };
    let wired_snap = wired.map(|p| snapshot(nm, p)).transpose()?;
    let backup_snap = backup.map(|p| snapshot(nm, p)).transpose()?;
    let plan = plan_unpair(wired_snap.as_ref(), backup_snap.as_ref());
    if !whole_pair {
        apply(nm, wired, backup, &plan)?;
        let mut summary = plan.summary;
        summary.push(format!("'{id}' is not a side of the pair recorded in {}: only '{id}' was unpaired", record_path.display()));
        return Ok(summary);
    }
    // The record goes first, under the handover lock: from then on no
    // handover acts on the pair while its profiles change. (One that is no
    // record root wrote goes too, or the supervisor would never stop.)
    let recorded = record.ok().flatten();
    withdraw_record(&wired_uuid)?;
    if let Err(err) = apply(nm, wired, backup, &plan) {
        // The profiles are as they were: so is the record.
        restore_record(recorded.as_ref());
        return Err(err);
    }
    let mut summary = plan.summary;
    // What nm-handover remembered about the pair's links goes with it.
    if let Some(record) = &recorded {
        summary.push(format!("{}: removed", record_path.display()));
        use crate::handover::Host;
        use crate::marks::Mark;
        for (device, mark) in [(&record.wired_device, Mark::PortFailed), (&record.wired_device, Mark::ReplugPending), (&record.backup_device, Mark::HandedBack)]
        {
            if let Err(e) = System.clear_link_mark(device, mark) {
                tracing::debug!("{e}");
            }
        }
    }
    // The warm standby carries the wired MAC: it goes with the pair, and the
    // kernel settings it changed on the two links are as they were.
    if let Some(record) = &recorded {
        use crate::handover::{Daemon, Host};
        use crate::marks::Mark;
        crate::standby::restore_sysctls(&record.wired_device, &record.backup_device);
        let serving = System.link_mark(&record.backup_device, Mark::StandbyServing).is_some();
        match crate::standby::take_down(nm, &record.backup) {
            Ok(true) => summary.push(format!("took the warm standby on {} down", record.backup_device)),
            Ok(false) => {}
            Err(e) => summary.push(format!("the warm standby on {} could not be taken down: {e}", record.backup_device)),
        }
        for (device, mark) in
            [(&record.backup_device, Mark::StandbyServing), (&record.wired_device, Mark::PullWatched), (&record.wired_device, Mark::ReplugHandled)]
        {
            if let Err(e) = System.clear_link_mark(device, mark) {
                tracing::debug!("{e}");
            }
        }
        // It held the address with the cable out: the backup comes up as itself instead.
        if serving && !nm.has_carrier(&record.wired_device) {
            if let (Some(backup), Some(device)) = (backup, nm.device(record.backup_device.as_str())) {
                summary.push(match nm.activate(backup, &device) {
                    Ok(()) => format!(
                        "'{}': activated on {} with its own MAC address and DHCP identity (the cable is out)",
                        backup.id().unwrap_or_default(),
                        device.iface()
                    ),
                    Err(e) => format!("'{}' could not be activated ({e}): connect it by hand", backup.id().unwrap_or_default()),
                });
            }
        }
    }
    // A backup holding the address still carries the wired MAC and DHCP
    // identity: left so, the re-plug would put both links on the LAN with
    // one MAC and address. Activated again, it comes up as itself.
    if let (Some(backup), Some(snap)) = (backup, &backup_snap) {
        summary.extend(reactivate_as_itself(nm, backup, snap));
    }
    // The profiles are already unpaired: a watcher that cannot be stopped
    // is reported, and ends by itself with the handover.
    match stop_watcher(&watcher_lock_path(wired_uuid.as_str())) {
        Ok(Some(pid)) => summary.push(format!("stopped the pair's carrier watcher (pid {pid})")),
        Ok(None) => {}
        Err(e) => summary.push(format!("could not stop the pair's carrier watcher: {e}")),
    }
    for path in [wired_lan_path(wired_uuid.as_str()), crate::sys::paths::watcher_started_path(wired_uuid.as_str())] {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => summary.push(format!("could not remove {}: {e} (it is gone at the next boot)", path.display())),
            _ => {}
        }
    }
    if !trust::any_pair_recorded(Path::new(RECORD_DIR)) {
        match stop_holder(&supervisor_lock_path(), SUPERVISOR_PROGRAM) {
            Ok(Some(pid)) => summary.push(format!("stopped the supervisor (pid {pid}): no pair is left")),
            Ok(None) => {}
            Err(e) => summary.push(format!("could not stop the supervisor: {e} (it exits by itself at NetworkManager's next change)")),
        }
    }
    let path = Path::new(NM_CONF_DIR).join(carrier_wait_conf_name(&wired_uuid));
    match fs::remove_file(&path) {
        Ok(()) => {
            nm.reload_config()?;
            summary.push(format!("{}: removed (NetworkManager reloaded its configuration)", path.display()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path, source }),
    }
    Ok(summary)
}

/// Activates the backup again where it is active (see `unpair`), so that the
/// identity `unpair` restored takes effect; says what it did.
fn reactivate_as_itself(nm: &Nm, backup: &Profile, snap: &ProfileSnapshot) -> Option<String> {
    let active = nm.active_connection_of(snap.uuid.as_str()).filter(|ac| matches!(ac.state(), ActiveState::Activating | ActiveState::Activated))?;
    let device = active.device_ifaces().into_iter().next().and_then(|iface| nm.device(&iface))?;
    Some(match nm.activate(backup, &device) {
        Ok(()) => format!("'{}': activated again on {}, with its own MAC address and DHCP identity", snap.id, device.iface()),
        Err(e) => format!("'{}' still runs with the wired link's MAC address ({e}): disconnect and connect it again", snap.id),
    })
}

/// How long `pair` waits for a supervisor to watch NetworkManager: one that
/// `unpair` just stopped may still be exiting, and a new one's first
/// reconcile waits for a handover in progress (10 s at most).
const SUPERVISOR_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Makes sure a supervisor (see [`crate::supervise`]) watches NetworkManager
/// when `pair` returns, starting one where none runs; says which. A cable
/// pulled right after `pair` is then seen by it, not left to a supervisor
/// that is still loading (seconds of CPU in the Wi-Fi VM) while the
/// dispatcher's handover waits for the handover lock its first reconcile holds.
fn start_supervisor() -> String {
    let deadline = std::time::Instant::now() + SUPERVISOR_READY_WAIT;
    let mut started: Option<std::process::Child> = None;
    let mut starts = 0;
    loop {
        if let Some(pid) = crate::supervise::ready_supervisor() {
            return match &started {
                Some(child) if child.id() == pid => {
                    format!("started the supervisor (pid {pid}): it reconciles the pairs when NetworkManager changes between events")
                }
                _ => format!("the supervisor runs (pid {pid})"),
            };
        }
        // (One that starts holds its lock before it is ready; `unpair` waits for one it stopped to exit.)
        let starting = running_holder(&supervisor_lock_path(), SUPERVISOR_PROGRAM).ok().flatten();
        let ours_ended = match started.as_mut().map(|child| child.try_wait()) {
            Some(Ok(Some(status))) if !status.success() => {
                return format!(
                    "the supervisor ended at its start ({status}; the journal says why): it starts with NetworkManager, or run `nm-handover pair` again"
                )
            }
            Some(Ok(Some(_))) | None => true,
            Some(_) => false,
        };
        if starting.is_none() && ours_ended && starts < 3 {
            match spawn_supervisor() {
                Ok(child) => started = Some(child),
                Err(message) => return message,
            }
            starts += 1;
        }
        if std::time::Instant::now() >= deadline {
            let pid = starting.map_or_else(|| "none runs".to_owned(), |pid| format!("pid {pid}"));
            return format!(
                "the supervisor ({pid}) was not watching NetworkManager after {} s (the journal says why): `nm-handover status` shows when it is",
                SUPERVISOR_READY_WAIT.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Starts `nm-handover supervise` in the background. Its log goes to the
/// journal through `systemd-cat` where journald runs (as the dispatcher's
/// does through nm-dispatcher), else nowhere: a terminal's `pair` must not
/// keep its output open.
fn spawn_supervisor() -> std::result::Result<std::process::Child, String> {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(SUPERVISOR_PROGRAM),
        Err(e) => return Err(format!("supervisor not started: cannot find my own path: {e} (it starts with NetworkManager)")),
    };
    const SYSTEMD_CAT: &str = "/usr/bin/systemd-cat";
    let journald = Path::new("/run/systemd/journal/stdout").exists() && Path::new(SYSTEMD_CAT).is_file();
    let mut command = if journald {
        let mut c = std::process::Command::new(SYSTEMD_CAT);
        c.args(["-t", "nm-handover"]).arg(&exe);
        c
    } else {
        let mut c = std::process::Command::new(&exe);
        c.stderr(crate::sys::stderr::for_a_child_that_outlives_us());
        c
    };
    // Nothing of the administrator's shell: the environment nm-dispatcher
    // gives its scripts, `/` as working directory, its own process group.
    command
        .arg("supervise")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .process_group(0);
    command.spawn().map_err(|e| format!("supervisor not started: {e} (it starts with NetworkManager)"))
}

fn describe_state(state: LinkState) -> &'static str {
    match state {
        LinkState::Inactive => "inactive",
        LinkState::Activating => "activating",
        LinkState::Active => "active",
        LinkState::Deactivating => "deactivating",
    }
}

/// `status` (and its `--json` form, documented in nm-handover(8)).
#[derive(Debug, Serialize)]
pub struct Status {
    pub networkmanager: NmStatus,
    pub pairs: Vec<PairStatus>,
    /// Pairs that cannot be read, with the reason.
    pub broken: Vec<String>,
    /// Pairs whose profiles carry pairing keys root did not record, with the
    /// reason: nm-handover does nothing for them (see `crate::trust`).
    pub ignored: Vec<String>,
    /// The PID of the supervisor (`nm-handover supervise`), if one runs.
    pub supervisor_pid: Option<u32>,
    /// Whether that supervisor has started (it watches NetworkManager).
    pub supervisor_watching: bool,
}

#[derive(Debug, Serialize)]
pub struct NmStatus {
    pub version: String,
    /// `link-up` (patched) or `lease-carrying` (stock).
    pub mode: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PairStatus {
    pub wired: LinkStatus,
    pub backup: LinkStatus,
    /// `wired`, `backup` or `none`.
    pub active_side: &'static str,
    pub lease_carrying: bool,
    /// The carrier-wait snippet `pair` wrote, if it is there.
    pub carrier_wait_conf: Option<String>,
    /// Whether `pair` left the carrier watcher on (it runs only during a
    /// handover on stock NM), and the PID of the one running now.
    pub carrier_watch: bool,
    pub carrier_watcher_pid: Option<u32>,
    /// The warm standby (`pair --standby`): off, or what it does now.
    pub standby: &'static str,
    /// Where the backup holds a lease of another network than the wired
    /// link last did (see `crate::lan`): the address was not kept.
    pub other_lan: Option<OtherLan>,
}

#[derive(Debug, Serialize)]
pub struct OtherLan {
    pub wired: String,
    pub backup: String,
}

#[derive(Debug, Serialize)]
pub struct LinkStatus {
    pub profile: String,
    pub uuid: String,
    pub device: String,
    pub state: &'static str,
    /// `carrier`, `no-carrier` or `missing` (no such device).
    pub link: &'static str,
    pub ipv4: Vec<String>,
    /// The DHCPv4 client-id NM reports for the current lease (internal client).
    pub dhcp_client_id: Option<String>,
    /// Global IPv6 addresses NM configured (SLAAC /64, DHCPv6 /128).
    pub ipv6: Vec<String>,
    /// The IAID and DUID of the current DHCPv6 lease, as NM reports them.
    pub dhcp6_iaid: Option<String>,
    pub dhcp6_duid: Option<String>,
}

pub fn status(nm: &Nm) -> Status {
    let version = nm.version().unwrap_or_else(|| "unknown".into());
    let mode = if nm_has_link_up() { "link-up" } else { "lease-carrying" };
    let supervisor_pid = running_holder(&supervisor_lock_path(), SUPERVISOR_PROGRAM).ok().flatten();
    let mut report = Status {
        networkmanager: NmStatus { version, mode },
        pairs: Vec::new(),
        broken: Vec::new(),
        ignored: Vec::new(),
        supervisor_pid,
        supervisor_watching: supervisor_pid.is_some() && crate::supervise::ready_supervisor() == supervisor_pid,
    };
    for pair in Pair::all(nm) {
        let pair = match pair {
            Ok(p) => p,
            Err(e @ Error::Untrusted { .. }) => {
                report.ignored.push(e.to_string());
                continue;
            }
            Err(e) => {
                report.broken.push(e.to_string());
                continue;
            }
        };
        let seen = pair.observe(nm, &System);
        let link = |side: &crate::handover::Side, state: LinkState| {
            let device = nm.device(side.device.as_str());
            LinkStatus {
                profile: side.id.clone(),
                uuid: side.uuid.to_string(),
                device: side.device.to_string(),
                state: describe_state(state),
                link: match &device {
                    Some(d) if d.has_carrier() => "carrier",
                    Some(_) => "no-carrier",
                    None => "missing",
                },
                ipv4: device.as_ref().map(|d| d.ipv4_addresses().iter().map(|a| a.to_string()).collect()).unwrap_or_default(),
                dhcp_client_id: device.as_ref().and_then(|d| d.dhcp_option(IpFamily::V4, "dhcp_client_identifier")).filter(|id| !id.is_empty()),
                ipv6: device
                    .as_ref()
                    .map(|d| d.ipv6_addresses().into_iter().filter(|(a, _)| !a.is_unicast_link_local()).map(|(a, prefix)| format!("{a}/{prefix}")).collect())
                    .unwrap_or_default(),
                dhcp6_iaid: device.as_ref().and_then(|d| d.dhcp_option(IpFamily::V6, "iaid")).filter(|v| !v.is_empty()),
                dhcp6_duid: device.as_ref().and_then(|d| d.dhcp_option(IpFamily::V6, "dhcp6_client_id")).filter(|v| !v.is_empty()),
            }
        };
        let conf = Path::new(NM_CONF_DIR).join(carrier_wait_conf_name(&pair.wired.uuid));
        report.pairs.push(PairStatus {
            wired: link(&pair.wired, seen.wired),
            backup: link(&pair.backup, seen.backup),
            active_side: match (seen.wired, seen.backup) {
                (LinkState::Active, _) => "wired",
                (_, LinkState::Active) => "backup",
                _ => "none",
            },
            lease_carrying: pair.options.lease_carry,
            carrier_wait_conf: conf.exists().then(|| conf.display().to_string()),
            carrier_watch: pair.options.carrier_watch,
            carrier_watcher_pid: running_watcher(&watcher_lock_path(pair.wired.uuid.as_str())).ok().flatten(),
            standby: crate::standby::describe(nm, &pair),
            other_lan: pair.backup_on_other_lan(nm, &System).map(|(wired, backup)| OtherLan { wired: wired.to_string(), backup: backup.to_string() }),
        });
    }
    report
}

impl Status {
    /// The report as lines for people.
    pub fn lines(&self) -> Vec<String> {
        let nm = &self.networkmanager;
        let mut out = vec![if nm.mode == "link-up" {
            format!("NetworkManager {}: patched, dispatched '{}' since boot (mode: link-up)", nm.version, crate::LINK_UP_ACTION)
        } else {
            format!("NetworkManager {}: no '{}' dispatched since boot (mode: lease carrying and carrier watcher)", nm.version, crate::LINK_UP_ACTION)
        }];
        if !self.pairs.is_empty() {
            out.push(match self.supervisor_pid {
                Some(pid) if self.supervisor_watching => format!("supervisor: running (pid {pid})"),
                Some(pid) => format!("supervisor: starting (pid {pid})"),
                None => "supervisor: not running (it starts with NetworkManager, or run `nm-handover pair` again)".to_owned(),
            });
        }
        if self.pairs.is_empty() && self.broken.is_empty() && self.ignored.is_empty() {
            out.push("no pairs (create one with `nm-handover pair WIRED BACKUP`)".into());
        }
        out.extend(self.broken.iter().map(|why| format!("broken pair: {why}")));
        out.extend(self.ignored.iter().map(|why| format!("not handled: {why}")));
        for p in &self.pairs {
            let watcher = match (p.carrier_watcher_pid, p.carrier_watch) {
                (Some(pid), _) => format!("running (pid {pid})"),
                (None, true) => "on (runs during a handover on stock NM)".to_owned(),
                (None, false) => "off".to_owned(),
            };
            out.push(format!(
                "pair '{}' ({}) <-> '{}' ({}): active side: {}, lease carrying: {}, carrier watcher: {watcher}, warm standby: {}",
                p.wired.profile,
                p.wired.device,
                p.backup.profile,
                p.backup.device,
                p.active_side,
                if p.lease_carrying { "on" } else { "off" },
                p.standby
            ));
            for (role, l) in [("wired", &p.wired), ("backup", &p.backup)] {
                out.push(format!(
                    "  {role:<6} {:<16} {:<12} {:<10} {}{}",
                    l.device,
                    l.state,
                    l.link.replace('-', " "),
                    if l.ipv4.is_empty() { "-".to_owned() } else { l.ipv4.join(",") },
                    l.dhcp_client_id.as_deref().map(|id| format!("  client-id {id}")).unwrap_or_default()
                ));
            }
            for (role, l) in [("wired", &p.wired), ("backup", &p.backup)] {
                let ids: Vec<String> =
                    [("iaid", &l.dhcp6_iaid), ("duid", &l.dhcp6_duid)].into_iter().filter_map(|(what, v)| Some(format!("{what} {}", v.as_deref()?))).collect();
                if !l.ipv6.is_empty() || !ids.is_empty() {
                    let addrs = if l.ipv6.is_empty() { "-".to_owned() } else { l.ipv6.join(",") };
                    out.push(format!("  {role:<6} ipv6 {addrs}{}", ids.iter().map(|id| format!("  DHCPv6 {id}")).collect::<String>()));
                }
            }
            if let Some(other) = &p.other_lan {
                out.push(format!(
                    "  not the same LAN: the backup's lease is of {}, the wired link's was of {}: the address could not be kept",
                    other.backup, other.wired
                ));
            }
            for (what, w, b) in [
                ("DHCPv4 client-ids", &p.wired.dhcp_client_id, &p.backup.dhcp_client_id),
                ("DHCPv6 IAIDs", &p.wired.dhcp6_iaid, &p.backup.dhcp6_iaid),
                ("DHCPv6 DUIDs", &p.wired.dhcp6_duid, &p.backup.dhcp6_duid),
            ] {
                if let (Some(w), Some(b)) = (w, b) {
                    if !w.eq_ignore_ascii_case(b) {
                        out.push(format!("  the links presented different {what} ({w} and {b}): the DHCP server saw two clients"));
                    }
                }
            }
            out.push(format!("  carrier-wait: {}", p.carrier_wait_conf.clone().unwrap_or_else(|| "not configured (NM waits 6 s after carrier loss)".into())));
        }
        out
    }
}

/// Where nm-dispatcher looks for scripts (`/etc` overrides `/usr/lib` by name).
const DISPATCHER_DIRS: [&str; 2] = ["/etc/NetworkManager/dispatcher.d", "/usr/lib/NetworkManager/dispatcher.d"];
const ENTRY_NAME: &str = "90-nm-handover";

/// Why nm-dispatcher would not run `path` (its rules: a regular file, owned
/// by root, not writable by group or others, not setuid), if it would not.
fn dispatcher_would_skip(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some("missing (or a dangling link)".into()),
        Err(e) => return Some(e.to_string()),
    };
    if !meta.is_file() {
        Some("not a regular file".into())
    } else if meta.uid() != 0 {
        Some(format!("owned by uid {}, not root", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!("writable by group or others (mode {:o})", meta.mode() & 0o7777))
    } else if meta.mode() & 0o4000 != 0 {
        Some("setuid".into())
    } else {
        None
    }
}

fn dispatch_link(subdir: &str, needed: bool) -> DispatchLink {
    let candidates: Vec<std::path::PathBuf> = DISPATCHER_DIRS.iter().map(|d| Path::new(d).join(subdir).join(ENTRY_NAME)).collect();
    let path = candidates.iter().find(|p| fs::symlink_metadata(p).is_ok()).unwrap_or(&candidates[1]);
    DispatchLink { path: path.display().to_string(), state: dispatcher_would_skip(path).map_or(Ok(()), Err), needed, queued: !links_into_no_wait(path) }
}

/// Whether nm-dispatcher starts `path` without queueing it: a symlink whose
/// target lies in a directory named no-wait.d (nm-dispatcher's own test).
fn links_into_no_wait(path: &Path) -> bool {
    let Ok(target) = fs::read_link(path) else { return false };
    let target = path.parent().map_or(target.clone(), |dir| dir.join(&target));
    target.parent().and_then(|dir| fs::canonicalize(dir).ok()).is_some_and(|dir| dir.ends_with("no-wait.d"))
}

/// Scripts nm-dispatcher waits for on every event besides ours.
fn other_waiting_scripts() -> Vec<String> {
    let mut out = Vec::new();
    for dir in DISPATCHER_DIRS {
        let no_wait = Path::new(dir).join("no-wait.d");
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name == ENTRY_NAME || !path.is_file() || dispatcher_would_skip(&path).is_some() || no_wait.join(&name).exists() {
                continue;
            }
            out.push(path.display().to_string());
        }
    }
    out.sort();
    out
}

fn print_config_value(key: &str) -> Option<String> {
    let out = std::process::Command::new("NetworkManager").arg("--print-config").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.trim().strip_prefix(key)?.trim_start().strip_prefix('=').map(|v| v.trim().to_owned()))
}

fn dispatcher_unit() -> DispatcherUnit {
    if Path::new("/run/systemd/system").is_dir() {
        let state = std::process::Command::new("systemctl")
            .args(["is-enabled", "NetworkManager-dispatcher.service"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        DispatcherUnit::Systemd(state)
    } else {
        DispatcherUnit::NoSystemd { activatable: Path::new("/usr/share/dbus-1/system-services/org.freedesktop.nm_dispatcher.service").exists() }
    }
}

/// What `profile` presents on `device` besides its MAC (see [`WiredIdentity`]):
/// only from the profile's own activation (another profile's lease on the
/// same device says nothing about it).
fn wired_identity(device: &Device, profile: &Uuid) -> WiredIdentity {
    let active_here = active_on(device, profile);
    let dhcp6 = |option: &str| device.dhcp_option(IpFamily::V6, option).filter(|v| active_here && !v.is_empty());
    let is_global = |a: &std::net::Ipv6Addr| !a.is_unicast_link_local() && !a.is_loopback() && !a.is_unspecified();
    WiredIdentity {
        permanent_mac: device.permanent_hw_address(),
        client_id_sent: client_id_sent(device, profile),
        // SLAAC addresses are /64; DHCPv6 ones /128.
        slaac_iid: device.ipv6_addresses().into_iter().find(|(a, prefix)| active_here && *prefix == 64 && is_global(a)).map(|(a, _)| token_of(a)),
        dhcp6_iaid_sent: dhcp6("iaid"),
        dhcp6_duid_sent: dhcp6("dhcp6_client_id"),
    }
}

/// The DHCPv4 client-id `profile` presented on `device`, as NM reports it
/// with the lease; only from the profile's own activation (another profile's
/// lease on the same device says nothing about it).
fn client_id_sent(device: &Device, profile: &Uuid) -> Option<String> {
    let active_here = active_on(device, profile);
    device.dhcp_option(IpFamily::V4, "dhcp_client_identifier").filter(|id| active_here && !id.is_empty())
}

fn active_on(device: &Device, profile: &Uuid) -> bool {
    device.active_connection().and_then(|ac| ac.uuid()).as_deref() == Some(profile.as_str())
}

fn pair_facts(nm: &Nm, pair: &Pair) -> PairFacts {
    let snap = |uuid: &Uuid| nm.profile(uuid.as_str()).and_then(|p| snapshot(nm, &p).ok());
    let (wired, backup) = (snap(&pair.wired.uuid), snap(&pair.backup.uuid));
    let device = nm.device(pair.wired.device.as_str());
    let wired_mac = wired.as_ref().and_then(|snap| {
        wired_lan_mac(snap, device.as_ref().and_then(|d| d.permanent_hw_address()).as_deref(), device.as_ref().and_then(|d| d.hw_address()).as_deref()).ok()
    });
    PairFacts {
        wired: pair.wired.id.clone(),
        backup: pair.backup.id.clone(),
        broken: None,
        untrusted: None,
        backup_autoconnect: backup.as_ref().is_some_and(|b| b.autoconnect),
        backup_cloned_mac: backup.as_ref().and_then(|b| b.cloned_mac.clone()),
        wired_mac,
        backup_client_id: backup.as_ref().and_then(|b| b.dhcp_client_id.clone()),
        wired_client_id_sent: device.and_then(|d| client_id_sent(&d, &pair.wired.uuid)),
        carrier_wait_conf: Path::new(NM_CONF_DIR).join(carrier_wait_conf_name(&pair.wired.uuid)).exists(),
        hostname_differs: match (&wired, &backup) {
            (Some(w), Some(b)) => w.hostname.iter().filter(|(k, v)| b.hostname.get(k) != Some(v)).map(|((s, p), _)| format!("{s}.{p}")).collect(),
            _ => Vec::new(),
        },
        backup_is_wifi: backup.is_some_and(|b| b.kind == SETTING_WIRELESS),
        other_lan: pair.backup_on_other_lan(nm, &System).map(|(wired, backup)| (wired.to_string(), backup.to_string())),
        // (A device that is gone is no refusal: an undock, a pull; a USB
        // Wi-Fi adapter unplugged, which `status` shows.)
        refused_links: [(&pair.wired, nm.device(pair.wired.device.as_str()).is_some()), (&pair.backup, nm.device(pair.backup.device.as_str()).is_some())]
            .into_iter()
            .filter(|(_, present)| *present)
            .filter_map(|(side, _)| match pair.may_act_on(nm, side) {
                Err(Error::LinkRefused { device, profile, why }) => Some(format!("{device} of '{profile}': {why}")),
                _ => None,
            })
            .collect(),
    }
}

/// `check`: gathers what [`crate::check::judge`] looks at; never changes anything.
/// `only` limits the pair findings to the pair a profile (either side) belongs to.
pub fn check(nm: &Nm, only: Option<&str>) -> Result<Vec<Finding>> {
    let only = only.map(|name| find_profile(nm, name)).transpose()?.map(|p| p.uuid().unwrap_or_default());
    let patched = nm_has_link_up();
    let mut pairs = Vec::new();
    for pair in Pair::all(nm) {
        match pair {
            Ok(pair) if only.as_deref().is_none_or(|u| u == pair.wired.uuid.as_str() || u == pair.backup.uuid.as_str()) => pairs.push(pair_facts(nm, &pair)),
            Ok(_) => {}
            Err(Error::Untrusted { wired, backup, why }) if only.is_none() => {
                let private = matches!(*why, Distrust::Private { .. });
                pairs.push(PairFacts { wired, backup, untrusted: Some((why.to_string(), private)), ..PairFacts::default() })
            }
            Err(e) if only.is_none() => pairs.push(PairFacts { wired: "?".into(), backup: "?".into(), broken: Some(e.to_string()), ..PairFacts::default() }),
            Err(_) => {}
        }
    }
    let facts = Facts {
        nm_version: nm.version(),
        patched,
        dispatcher_unit: Some(dispatcher_unit()),
        links: vec![dispatch_link("", true), dispatch_link("link-up.d", patched)],
        wifi_backend: print_config_value("wifi.backend"),
        other_waiting_scripts: other_waiting_scripts(),
        pairs,
    };
    Ok(judge(&facts))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::pairing::SETTING_CONNECTION;
    use crate::sys::settings::PropertyChange;

    /// Profiles as whole values: an update replaces the stored one.
    #[derive(Default)]
    struct Store {
        profiles: RefCell<BTreeMap<&'static str, Vec<ProfileEdit>>>,
        updates_before_failure: Option<usize>,
        restore_fails: bool,
        updates: RefCell<usize>,
    }

    impl ProfileWriter for Store {
        type Profile = &'static str;
        type Saved = Vec<ProfileEdit>;

        fn update(&self, profile: &&'static str, edit: &ProfileEdit) -> Result<Vec<ProfileEdit>, NmError> {
            let mut updates = self.updates.borrow_mut();
            if self.updates_before_failure == Some(*updates) {
                return Err(NmError::Call { what: format!("updating profile {profile}"), message: "injected".into() });
            }
            *updates += 1;
            let mut profiles = self.profiles.borrow_mut();
            let history = profiles.entry(profile).or_default();
            let saved = history.clone();
            history.push(edit.clone());
            Ok(saved)
        }

        fn restore(&self, profile: &&'static str, saved: &Vec<ProfileEdit>) -> Result<(), NmError> {
            if self.restore_fails {
                return Err(NmError::Call { what: format!("restoring profile {profile}"), message: "injected".into() });
            }
            self.profiles.borrow_mut().insert(profile, saved.clone());
            Ok(())
        }
    }

    fn plan() -> Plan {
        let edit = |value: &str| {
            let mut edit = ProfileEdit {
                properties: vec![PropertyChange { setting: SETTING_CONNECTION, property: "autoconnect", value: PropertyValue::Bool(false) }],
                ..ProfileEdit::default()
            };
            edit.user_data.insert("nm-handover.role".into(), Some(value.into()));
            edit
        };
        Plan { wired: edit("wired"), backup: edit("backup"), summary: Vec::new() }
    }

    fn store(earlier: &[ProfileEdit]) -> Store {
        let store = Store::default();
        store.profiles.borrow_mut().insert("backup", earlier.to_vec());
        store
    }

    #[test]
    fn a_failed_wired_update_puts_the_backup_back_exactly() {
        // Also a backup that was paired before (re-pairing): it keeps that pairing.
        let earlier = vec![plan().backup];
        let store = Store { updates_before_failure: Some(1), ..store(&earlier) };
        let err = apply(&store, Some(&"wired"), Some(&"backup"), &plan()).unwrap_err();
        assert!(err.to_string().contains("updating profile wired: injected"), "{err}");
        assert_eq!(store.profiles.borrow()["backup"], earlier);
        assert!(!store.profiles.borrow().contains_key("wired"));
    }

    #[test]
    fn a_failed_backup_update_changes_nothing() {
        let store = Store { updates_before_failure: Some(0), ..store(&[]) };
        assert!(apply(&store, Some(&"wired"), Some(&"backup"), &plan()).is_err());
        assert_eq!(store.profiles.borrow()["backup"], Vec::<ProfileEdit>::new());
        assert_eq!(*store.updates.borrow(), 0);
    }

    #[test]
    fn a_failed_rollback_says_both_and_what_to_do() {
        let store = Store { updates_before_failure: Some(1), restore_fails: true, ..store(&[]) };
        let err = apply(&store, Some(&"wired"), Some(&"backup"), &plan()).unwrap_err().to_string();
        assert!(err.contains("updating profile wired: injected") && err.contains("restoring profile backup: injected"), "{err}");
        assert!(err.contains("nm-handover unpair"), "{err}");
    }

    #[test]
    fn unpair_of_a_pair_whose_peer_was_deleted_changes_the_one_left() {
        let kept = store(&[]);
        apply(&kept, None, Some(&"backup"), &plan()).unwrap();
        assert_eq!(kept.profiles.borrow()["backup"], vec![plan().backup]);
        let store = Store { updates_before_failure: Some(0), ..store(&[]) };
        assert!(apply(&store, Some(&"wired"), None, &plan()).unwrap_err().to_string().contains("updating profile wired: injected"));
    }

    #[test]
    fn a_side_with_nothing_to_change_is_not_written() {
        let store = store(&[]);
        let plan = Plan { backup: ProfileEdit::default(), ..plan() };
        apply(&store, Some(&"wired"), Some(&"backup"), &plan).unwrap();
        assert_eq!(store.profiles.borrow()["backup"], Vec::<ProfileEdit>::new());
        assert_eq!(*store.updates.borrow(), 1);
    }

    #[test]
    fn unpair_takes_the_peer_only_of_the_pair_root_recorded() {
        let uuid = |n: u8| Uuid::parse(&format!("{n}{n}{n}{n}{n}{n}{n}{n}-{n}{n}{n}{n}-4{n}{n}{n}-8{n}{n}{n}-{n}{n}{n}{n}{n}{n}{n}{n}{n}{n}{n}{n}")).unwrap();
        let (w, b, copy) = (uuid(1), uuid(2), uuid(3));
        let iface = |s: &str| crate::names::Iface::parse(s).unwrap();
        let record = Ok(Some(PairRecord { wired: w.clone(), wired_device: iface("eth0"), backup: b.clone(), backup_device: iface("wlan0"), standby: false }));
        assert!(unpair_takes_peer(&record, &w, &b, true));
        // A copy of the backup (its peer, the wired profile, points at the original).
        assert!(!unpair_takes_peer(&record, &w, &copy, false));
        // A copy of the wired profile has no record of its own.
        assert!(!unpair_takes_peer(&Ok(None), &copy, &b, false));
        // A pair from before records existed: the peer pointing back decides.
        assert!(unpair_takes_peer(&Ok(None), &w, &b, true));
        let bad = Err(Distrust::BadRecord { path: "/x".into(), why: "a symbolic link".into() });
        assert!(!unpair_takes_peer(&bad, &w, &copy, false));
    }

    #[test]
    fn undo_puts_back_every_profile_written() {
        let store = store(&[]);
        let written = apply(&store, Some(&"wired"), Some(&"backup"), &plan()).unwrap();
        undo(&store, &written).unwrap();
        assert_eq!(store.profiles.borrow()["backup"], Vec::<ProfileEdit>::new());
        assert_eq!(store.profiles.borrow()["wired"], Vec::<ProfileEdit>::new());
    }

    #[test]
    fn both_updates_succeed() {
        let store = store(&[]);
        apply(&store, Some(&"wired"), Some(&"backup"), &plan()).unwrap();
        assert_eq!(store.profiles.borrow()["backup"], vec![plan().backup]);
        assert_eq!(store.profiles.borrow()["wired"], vec![plan().wired]);
    }
}
