//! The handover lock: one handover at a time on this machine, with a bounded
//! wait. nm-dispatcher serialises its waiting requests, but a user's
//! `nm-handover reconcile` or a script in `no-wait.d` may run alongside.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Where the lock lives (tmpfs: it never outlives a boot).
pub const LOCK_PATH: &str = "/run/nm-handover/handover.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("another nm-handover held {path} for more than {waited:?}; giving up rather than interleaving handovers")]
    Busy { path: PathBuf, waited: Duration },
}

/// Held until dropped (the kernel releases it also when the process dies).
#[derive(Debug)]
pub struct HandoverLock {
    _file: File,
}

impl HandoverLock {
    pub fn acquire(path: &Path, timeout: Duration) -> Result<HandoverLock, LockError> {
        let io_err = |source| LockError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(io_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err)?;
        let start = Instant::now();
        loop {
            // SAFETY: flock on a file descriptor we own for the duration of the call.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(HandoverLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_err(err));
            }
            if start.elapsed() >= timeout {
                return Err(LockError::Busy { path: path.to_owned(), waited: timeout });
            }
            sleep(Duration::from_millis(10));
        }
    }
}
