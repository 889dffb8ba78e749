//! A dispatcher event, handled: `nm-handover IFACE ACTION`. Events that
//! cannot concern a pair are filtered out first ([`crate::prefilter`]),
//! without connecting to NetworkManager.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{debug, error, info};

use crate::commands;
use crate::error::Result;
use crate::event::DispatcherEvent;
use crate::handover::Pair;
use crate::lease::LeaseStore;
use crate::policy::decide;
use crate::prefilter::{prefilter, Verdict, NM_CONF_DIR};
use crate::sys::libnm::Nm;
use crate::sys::lock::{FileLock, LOCK_PATH};

/// How long an event waits for another invocation's handover to finish.
const LOCK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not our business; nothing was loaded.
    Ignored(&'static str),
    /// A paired profile's event was handled.
    Handled,
}

pub fn run(args: impl IntoIterator<Item = OsString>, env: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Outcome> {
    let event = DispatcherEvent::from_parts(args, env)?;
    let hook = match prefilter(&event, Path::new(NM_CONF_DIR)) {
        Verdict::Ignore(why) => return Ok(Outcome::Ignored(why)),
        Verdict::Reconcile => {
            let _lock = FileLock::acquire(Path::new(LOCK_PATH), LOCK_WAIT)?;
            let nm = Nm::connect()?;
            let acted = commands::reconcile(&nm)?;
            debug!(acted, "reconciled pairs on {:?}", event.action);
            return Ok(Outcome::Handled);
        }
        Verdict::Handle(hook) => hook,
    };
    let Some(uuid) = event.connection_uuid.clone() else {
        return Ok(Outcome::Ignored("event without a profile"));
    };
    // The lock first: libnm's cache is filled when connecting, and what it
    // holds must be what NM looks like after the previous handover, not before.
    let _lock = FileLock::acquire(Path::new(LOCK_PATH), LOCK_WAIT)?;
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
    if decision.actions.is_empty() {
        return Ok(Outcome::Handled);
    }
    // One line per handover, with its outcome and how long it took
    // (`journalctl -u NetworkManager-dispatcher -g 'nm-handover.*handover'`).
    let started = Instant::now();
    let result = pair.execute(&nm, &LeaseStore::default(), &decision.actions);
    let took_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(()) => info!(pair = %pair.wired.id, backup = %pair.backup.id, took_ms, "handover done: {:?}", decision.actions),
        // (The error itself is logged once, by the caller.)
        Err(_) => error!(pair = %pair.wired.id, backup = %pair.backup.id, took_ms, "handover failed: {:?}", decision.actions),
    }
    result?;
    Ok(Outcome::Handled)
}
