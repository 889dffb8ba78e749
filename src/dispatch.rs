//! The nm-dispatcher entry point: `nm-handover IFACE ACTION`.
//!
//! nm-dispatcher runs every script for every event, so the common case, an
//! event of a profile that is in no pair, is decided from the environment
//! (and at most one small read of the profile's keyfile) without connecting
//! to NetworkManager.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use tracing::{debug, info};

use crate::error::Result;
use crate::commands;
use crate::event::{DispatcherAction, DispatcherEvent};
use crate::handover::Pair;
use crate::lease::LeaseStore;
use crate::pairing::{user_data_from_env, user_data_from_keyfile, KEY_ROLE};
use crate::policy::{decide, Hook};
use crate::sys::libnm::Nm;

/// Keyfiles larger than this are not read on the fast path.
const MAX_KEYFILE: u64 = 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not our business; nothing was loaded.
    Ignored(&'static str),
    /// A paired profile's event was handled.
    Handled,
}

/// Whether the profile's user data could mark it as paired, judged without
/// NM: `Some(false)` only when we know it is not paired.
fn maybe_paired(event: &DispatcherEvent) -> Option<bool> {
    if !event.user_env.is_empty() {
        return Some(user_data_from_env(&event.user_env).contains_key(KEY_ROLE));
    }
    let path = event.connection_filename.as_deref()?;
    if !path.is_absolute() || path.extension().and_then(|e| e.to_str()) != Some("nmconnection") {
        return None;
    }
    let text = read_small(path)?;
    Some(user_data_from_keyfile(&text).contains_key(KEY_ROLE))
}

fn read_small(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let mut text = String::new();
    file.take(MAX_KEYFILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// NM dispatches `hostname` and `connectivity-change` when it starts, before
/// any device event: the moment to bring pairs into their proper state at
/// boot (cable out: no wired event will ever come).
fn run_global(event: &DispatcherEvent) -> Result<Outcome> {
    let DispatcherAction::Other(action) = &event.action else {
        return Ok(Outcome::Ignored("not a global action"));
    };
    if !matches!(action.as_str(), "hostname" | "connectivity-change") {
        return Ok(Outcome::Ignored("action needs no action"));
    }
    if !commands::any_pair_configured(Path::new(commands::NM_CONF_DIR)) {
        return Ok(Outcome::Ignored("no pair is configured"));
    }
    let nm = Nm::connect()?;
    let acted = commands::reconcile(&nm)?;
    debug!(acted, "reconciled pairs on {action}");
    Ok(Outcome::Handled)
}

pub fn run(args: impl IntoIterator<Item = OsString>, env: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Outcome> {
    let event = DispatcherEvent::from_parts(args, env)?;
    let Some(hook) = event.action.hook() else {
        return run_global(&event);
    };
    if hook == Hook::PreDown {
        return Ok(Outcome::Ignored("pre-down needs no action"));
    }
    let Some(uuid) = event.connection_uuid.clone() else {
        return Ok(Outcome::Ignored("event without a profile"));
    };
    if maybe_paired(&event) == Some(false) {
        return Ok(Outcome::Ignored("profile is not paired"));
    }

    let nm = Nm::connect()?;
    let Some(profile) = nm.profile(uuid.as_str()) else {
        return Ok(Outcome::Ignored("profile no longer exists"));
    };
    let Some(pair) = Pair::of_profile(&nm, &profile)? else {
        debug!("profile {uuid} is not paired");
        return Ok(Outcome::Ignored("profile is not paired"));
    };
    let role = if pair.wired.uuid == uuid { crate::policy::Role::Wired } else { crate::policy::Role::Backup };
    let observed = pair.observe(&nm);
    let decision = decide(role, hook, observed, pair.options);
    info!(
        ?role,
        ?observed,
        actions = ?decision.actions,
        "{}",
        decision.reason
    );
    pair.execute(&nm, &LeaseStore::default(), &decision.actions)?;
    Ok(Outcome::Handled)
}
