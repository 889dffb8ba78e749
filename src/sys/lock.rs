//! File locks: the handover lock (one handover at a time on this machine,
//! with a bounded wait: nm-dispatcher serialises its waiting requests, but a
//! user's `nm-handover reconcile` or a script in `no-wait.d` may run
//! alongside), and each pair's carrier-watcher lock (one watcher per pair;
//! the file names the PID holding it, so `unpair` can stop it).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// What the process holding a watcher lock must be called, before it is signalled.
pub const WATCHER_PROGRAM: &str = "nm-handover-watch";

/// What the process holding the supervisor lock must be called.
pub const SUPERVISOR_PROGRAM: &str = "nm-handover";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("another nm-handover held {path} for more than {waited:?}; giving up rather than interleaving handovers")]
    Busy { path: PathBuf, waited: Duration },
}

/// Held until dropped (the kernel releases it also when the process dies).
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

/// Creates the directory `path` lives in (`/run/nm-handover`), if missing.
pub fn create_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => fs::DirBuilder::new().recursive(true).mode(0o755).create(dir),
        None => Ok(()),
    }
}

/// Reads a file root wrote under /run/nm-handover, refusing a symbolic
/// link planted where it is (`ELOOP`).
pub fn read_no_follow(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Creates the file at `path` (and its directory) if missing, and sets its
/// modification time to now: a record whose existence and age are the data.
/// A link planted there is refused, not followed.
pub fn touch(path: &Path) -> io::Result<()> {
    create_parent_dir(path)?;
    let file = OpenOptions::new().write(true).create(true).truncate(false).mode(0o644).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)?;
    file.set_modified(std::time::SystemTime::now())
}

impl FileLock {
    pub fn acquire(path: &Path, timeout: Duration) -> Result<FileLock, LockError> {
        let io_err = |source| LockError::Io { path: path.to_owned(), source };
        create_parent_dir(path).map_err(io_err)?;
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
                return Ok(FileLock { file });
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

impl FileLock {
    /// [`FileLock::acquire`], then this process's PID written into the
    /// locked file: what [`running_holder`] reads.
    pub fn acquire_naming_this_process(path: &Path, timeout: Duration) -> Result<FileLock, LockError> {
        let lock = FileLock::acquire(path, timeout)?;
        lock.file
            .set_len(0)
            .and_then(|()| lock.file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0))
            .map_err(|source| LockError::Io { path: path.to_owned(), source })?;
        Ok(lock)
    }
}

/// The PID of the carrier watcher holding `path`, if one runs: the file is
/// locked and the PID in it is a process named [`WATCHER_PROGRAM`].
pub fn running_watcher(path: &Path) -> Result<Option<u32>, LockError> {
    running_holder(path, WATCHER_PROGRAM)
}

/// Whether the process whose PID `path` holds (its starter wrote it) is a
/// carrier watcher of the pair `pair` that runs now: one that started but
/// does not hold its lock yet (a Wi-Fi VM's watcher took 2.3 s to), or
/// holds it already. A PID reused since is another process's: its command
/// line is not that watcher's.
pub fn started_watcher(path: &Path, pair: &str) -> bool {
    let Some(pid) = read_no_follow(path).ok().and_then(|text| text.trim().parse::<u32>().ok()) else { return false };
    // (A zombie's command line is empty.)
    // Root's (a user who got the PID and named a program so could otherwise
    // pass for the watcher, and no watcher would start at the next pull).
    use std::os::unix::fs::MetadataExt;
    if !fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == 0) {
        return false;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args = cmdline.split(|b| *b == 0);
    let argv0 = args.next().unwrap_or_default();
    Path::new(std::ffi::OsStr::from_bytes(argv0)).file_name() == Some(std::ffi::OsStr::new(WATCHER_PROGRAM)) && args.any(|a| a == pair.as_bytes())
}

/// The PID of the process named `program` that holds the lock at `path`, if one does.
pub fn running_holder(path: &Path, program: &str) -> Result<Option<u32>, LockError> {
    let io_err = |source| LockError::Io { path: path.to_owned(), source };
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    // SAFETY: flock on a file descriptor we own for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        // Nobody holds it: no watcher runs (a stale file of one that exited).
        return Ok(None);
    }
    // A watcher writes its PID right after taking the lock.
    let mut pid = None;
    for _ in 0..100 {
        let mut text = String::new();
        (&file).read_to_string(&mut text).map_err(io_err)?;
        (&file).seek(SeekFrom::Start(0)).map_err(io_err)?;
        pid = text.trim().parse::<u32>().ok();
        if pid.is_some() {
            break;
        }
        sleep(Duration::from_millis(10));
    }
    let Some(pid) = pid else {
        return Err(io_err(io::Error::new(io::ErrorKind::InvalidData, "locked, but holds no PID after 1 s")));
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let is_holder = Path::new(std::ffi::OsStr::from_bytes(argv0)).file_name() == Some(std::ffi::OsStr::new(program));
    Ok(is_holder.then_some(pid))
}

/// Stops the carrier watcher holding `path`, if one runs (see
/// [`running_watcher`]). Returns the PID stopped.
///
/// The signal goes through a pidfd opened before the process is checked
/// again: if the PID was reused in between, the check fails; if the watcher
/// exits after the check, the pidfd still names it, never a process that
/// got its PID, and the signal goes nowhere.
pub fn stop_watcher(path: &Path) -> Result<Option<u32>, LockError> {
    stop_holder(path, WATCHER_PROGRAM)
}

/// How long [`stop_holder`] waits for the process it signalled to exit.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Stops the process named `program` that holds the lock at `path` (see
/// [`stop_watcher`]), and waits up to [`EXIT_WAIT`] for it to exit: its
/// locks go with it, so that what runs next (a `pair` right after `unpair`)
/// does not find one on its way out and take it for one that runs.
pub fn stop_holder(path: &Path, program: &str) -> Result<Option<u32>, LockError> {
    let io_err = |source| LockError::Io { path: path.to_owned(), source };
    let Some(pid) = running_holder(path, program)? else {
        return Ok(None);
    };
    // SAFETY: pidfd_open(2) with a PID and no flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ESRCH) { Ok(None) } else { Err(io_err(err)) };
    }
    // SAFETY: a new descriptor this function owns from here on.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    if running_holder(path, program)? != Some(pid) {
        return Ok(None);
    }
    // SAFETY: pidfd_send_signal(2) on the pidfd just opened, no siginfo, no flags.
    if unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGTERM, ptr::null::<libc::siginfo_t>(), 0) } != 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ESRCH) { Ok(None) } else { Err(io_err(err)) };
    }
    // A pidfd is readable once its process has exited. (Not waited for
    // beyond EXIT_WAIT: it was signalled, and its lock says when it is gone.)
    let deadline = Instant::now() + EXIT_WAIT;
    loop {
        let mut exited = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: poll(2) on one pollfd that lives across the call.
        match unsafe { libc::poll(&mut exited, 1, left.as_millis() as libc::c_int) } {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            0 => tracing::warn!("{program} (pid {pid}) signalled, still exiting after {} s", EXIT_WAIT.as_secs()),
            _ => {}
        }
        return Ok(Some(pid));
    }
}
