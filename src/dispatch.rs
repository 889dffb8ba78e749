//! A dispatcher event, handled: `nm-handover IFACE ACTION`. Events that
//! cannot concern a pair are filtered out first ([`crate::prefilter`]),
//! without connecting to NetworkManager.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::event::DispatcherEvent;
use crate::handover::{Pair, System};
use crate::lease::LeaseStore;
use crate::policy::Role;
use crate::prefilter::{prefilter, Verdict};
use crate::supervise;
use crate::sys::libnm::Nm;
use crate::sys::lock::FileLock;
use crate::sys::paths::{LOCK_PATH, NM_CONF_DIR};

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
            let acted = supervise::reconcile(&nm)?;
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
    let pair = match Pair::of_profile(&nm, &profile) {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            debug!("profile {uuid} is not paired");
            return Ok(Outcome::Ignored("profile is not paired"));
        }
        // Pairing keys root did not record: someone else's data, never a reason for root to act.
        Err(err @ Error::Untrusted { .. }) => {
            warn!("{err}; event {:?} of '{}' skipped", event.action, profile.id().unwrap_or_default());
            return Ok(Outcome::Ignored("pair not recorded by root"));
        }
        Err(err) => return Err(err),
    };
    let role = if pair.wired.uuid == uuid { Role::Wired } else { Role::Backup };
    pair.handle(role, hook, &nm, &System, &LeaseStore::default())?;
    Ok(Outcome::Handled)
}
