use std::path::PathBuf;

use crate::event::EventError;
use crate::lease::LeaseError;
use crate::names::NameError;
use crate::pairing::PairingError;
use crate::sys::libnm::NmError;
use crate::sys::lock::LockError;
use crate::trust::Distrust;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Nm(#[from] NmError),
    #[error(transparent)]
    Settings(#[from] crate::sys::settings::SettingsError),
    #[error(transparent)]
    Pairing(#[from] PairingError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("no profile named or with UUID '{0}' (see `nmcli connection show`)")]
    NoSuchProfile(String),
    #[error("{count} profiles are named '{name}'; give the UUID instead")]
    AmbiguousProfile { name: String, count: usize },
    #[error("profile '{0}' is not paired")]
    NotPaired(String),
    #[error("pairing of '{profile}' is inconsistent: {reason}; run `nm-handover unpair` and pair again")]
    Inconsistent { profile: String, reason: String },
    #[error("cannot tell which device '{profile}' uses; give it with {option}")]
    UnknownDevice { profile: String, option: &'static str },
    #[error("no network device '{0}'")]
    NoDevice(String),
    #[error("{cause}; putting the backup profile back failed too ({undo}): the pair is left half-changed: run `nm-handover unpair` on the profile still paired (`nm-handover status` lists it as broken)")]
    RollbackFailed { cause: NmError, undo: NmError },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("carrier watcher for '{pair}' not started: {reason}")]
    WatcherNotStarted { pair: String, reason: String },
    #[error("pair '{wired}' <-> '{backup}' ignored: {why}; an administrator's `nm-handover pair` records a pair (`nm-handover check` says more)")]
    Untrusted { wired: String, backup: String, why: Box<Distrust> },
    #[error("not acting on {device} for '{profile}': {why}")]
    LinkRefused { device: String, profile: String, why: String },
    #[error("`nm-handover {0}` must run as root: it writes the pair's record in {dir}, which only root may write", dir = crate::sys::paths::RECORD_DIR)]
    NotRoot(&'static str),
    #[error("taking {device} off the LAN (rtnetlink): {source}")]
    Netlink { device: String, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
