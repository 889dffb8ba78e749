//! Whether a dispatcher event can concern a pair at all, decided from the
//! event's environment and at most one small file read: no libnm, no D-Bus.
//! nm-dispatcher runs every script for every event, so this is the common
//! path on every laptop.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::event::{DispatcherAction, DispatcherEvent};
use crate::pairing::{is_carrier_wait_conf_name, user_data_from_env, user_data_from_keyfile, KEY_ROLE};
use crate::policy::{may_act, Hook, Role};

/// Keyfiles larger than this are not read here.
const MAX_KEYFILE: u64 = 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not our business: exit without loading anything.
    Ignore(&'static str),
    /// A global event at NM start-up while pairs exist: reconcile them.
    Reconcile,
    /// An event of a profile that is, or may be, paired.
    Handle(Hook),
}

/// Records that NetworkManager dispatched `link-up` (see
/// [`crate::sys::paths::LINK_UP_SEEN_PATH`]); a failure only means the next event tries
/// again.
pub fn record_link_up_seen(path: &Path) {
    // (Not `exists()`: a link planted there is not this program's record.)
    if fs::symlink_metadata(path).is_ok() {
        return;
    }
    let _ = crate::sys::lock::create_parent_dir(path);
    let _ = fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(path);
}

/// Whether `pair` left its carrier-wait snippet for at least one pair.
pub fn any_pair_configured(conf_dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(conf_dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| is_carrier_wait_conf_name(&e.file_name().to_string_lossy()))
}

/// The profile's pairing role as its user data says, judged without NM:
/// `None` when it cannot be told here, `Some(None)` when it is not paired.
fn role_in_user_data(event: &DispatcherEvent) -> Option<Option<String>> {
    let user_data = if !event.user_env.is_empty() {
        user_data_from_env(&event.user_env)
    } else {
        let path = event.connection_filename.as_deref()?;
        if !path.is_absolute() || path.extension().and_then(|e| e.to_str()) != Some("nmconnection") {
            return None;
        }
        let mut text = String::new();
        File::open(path).ok()?.take(MAX_KEYFILE).read_to_string(&mut text).ok()?;
        user_data_from_keyfile(&text)
    };
    Some(user_data.get(KEY_ROLE).cloned())
}

pub fn prefilter(event: &DispatcherEvent, conf_dir: &Path) -> Verdict {
    let Some(hook) = event.action.hook() else {
        // NM dispatches `hostname` and `connectivity-change` when it starts,
        // before any device event: the moment to bring pairs into their proper
        // state at boot (cable out: no wired event will ever come).
        let DispatcherAction::Other(action) = &event.action else {
            return Verdict::Ignore("not a global action");
        };
        if !matches!(action.as_str(), "hostname" | "connectivity-change") {
            return Verdict::Ignore("action needs no action");
        }
        if !any_pair_configured(conf_dir) {
            return Verdict::Ignore("no pair is configured");
        }
        return Verdict::Reconcile;
    };
    if !may_act(Role::Wired, hook) && !may_act(Role::Backup, hook) {
        return Verdict::Ignore("the event needs no action");
    }
    if event.connection_uuid.is_none() {
        return Verdict::Ignore("event without a profile");
    }
    match role_in_user_data(event) {
        Some(None) => Verdict::Ignore("profile is not paired"),
        Some(Some(role)) if role == "backup" && !may_act(Role::Backup, hook) => Verdict::Ignore("backup event needs no action"),
        _ => Verdict::Handle(hook),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn event(action: &str, env: &[(&str, &str)]) -> DispatcherEvent {
        let args = vec![OsString::from("wired0"), OsString::from(action)];
        let env = env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v)));
        DispatcherEvent::from_parts(args, env).unwrap()
    }

    const UUID: &str = "0b3c2f4e-9a51-4d2b-8f0e-3a6d5c7b9e10";

    #[test]
    fn verdicts() {
        let dir = std::env::temp_dir().join(format!("nmh-prefilter-{}", std::process::id()));
        let conf = dir.join("conf.d");
        fs::create_dir_all(&conf).unwrap();
        let plain = dir.join("Plain.nmconnection");
        fs::write(&plain, "[connection]\nid=Plain\n").unwrap();
        let paired = dir.join("Paired.nmconnection");
        fs::write(&paired, "[connection]\nid=Paired\n\n[user]\nnm-handover.role=wired\n").unwrap();
        let (plain, paired) = (plain.to_str().unwrap(), paired.to_str().unwrap());

        assert_eq!(prefilter(&event("hostname", &[]), &conf), Verdict::Ignore("no pair is configured"));
        assert_eq!(prefilter(&event("vpn-up", &[]), &conf), Verdict::Ignore("action needs no action"));
        assert_eq!(prefilter(&event("up", &[]), &conf), Verdict::Ignore("event without a profile"));
        assert_eq!(prefilter(&event("pre-down", &[("CONNECTION_UUID", UUID)]), &conf), Verdict::Ignore("the event needs no action"));
        let up = |file: &str| event("up", &[("CONNECTION_UUID", UUID), ("CONNECTION_FILENAME", file)]);
        assert_eq!(prefilter(&up(plain), &conf), Verdict::Ignore("profile is not paired"));
        assert_eq!(prefilter(&up(paired), &conf), Verdict::Handle(Hook::Up));
        // Not a keyfile we can read cheaply: let the full program ask NM.
        assert_eq!(prefilter(&up("/etc/sysconfig/network-scripts/ifcfg-eth0"), &conf), Verdict::Handle(Hook::Up));
        // NM >= 1.46 exports the user data: that decides, not the file.
        let with_env = event("up", &[("CONNECTION_UUID", UUID), ("CONNECTION_FILENAME", plain), ("CONNECTION_USER_NM_055HANDOVER__ROLE", "backup")]);
        assert_eq!(prefilter(&with_env, &conf), Verdict::Handle(Hook::Up));
        // A backup's link-up (NM waits for it) never needs NM's state; a wired link-up does, and a
        // backup's down may find its link taken down by the hand-back (`crate::offlan`).
        let backup_env = |action| event(action, &[("CONNECTION_UUID", UUID), ("CONNECTION_USER_NM_055HANDOVER__ROLE", "backup")]);
        assert_eq!(prefilter(&backup_env("link-up"), &conf), Verdict::Ignore("backup event needs no action"));
        assert_eq!(prefilter(&backup_env("down"), &conf), Verdict::Handle(Hook::Down));
        assert_eq!(prefilter(&event("link-up", &[("CONNECTION_UUID", UUID), ("CONNECTION_FILENAME", paired)]), &conf), Verdict::Handle(Hook::LinkUp));
        let other_user_data = event("up", &[("CONNECTION_UUID", UUID), ("CONNECTION_FILENAME", paired), ("CONNECTION_USER_FOO", "x")]);
        assert_eq!(prefilter(&other_user_data, &conf), Verdict::Ignore("profile is not paired"));

        fs::write(conf.join(format!("90-nm-handover-{UUID}.conf")), "").unwrap();
        assert_eq!(prefilter(&event("connectivity-change", &[]), &conf), Verdict::Reconcile);
        let _ = fs::remove_dir_all(&dir);
    }
}
