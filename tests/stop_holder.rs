//! `unpair` stops the carrier watcher (and the supervisor) through a pidfd,
//! only where the process holding the lock is the program it names: a real
//! process holding a real lock, named as the watcher or not.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nm_handover::sys::lock::{running_holder, stop_holder};

/// A shell named `name` (its argv[0]) that holds the lock at `path` with
/// its PID in it, and takes a moment to exit when told to (as a process
/// that unwinds does).
fn holder(name: &str, path: &Path) -> Child {
    let child = Command::new("/bin/sh")
        .arg0(name)
        .arg("-c")
        .arg(r#"exec 9>>"$0"; flock 9; echo $$ >"$0"; trap 'sleep 0.3; exit 0' TERM; while :; do sleep 0.1; done"#)
        .arg(path)
        .spawn()
        .expect("sh");
    let t0 = Instant::now();
    while running_holder(path, name).ok().flatten().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(5), "the holder never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn exited_within(child: &mut Child, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn only_the_named_program_holding_the_lock_is_stopped() {
    if Command::new("flock").arg("--version").output().is_err() {
        panic!("flock (util-linux) is missing");
    }
    let dir = std::env::temp_dir().join(format!("nmh-stop-holder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("watch-11111111-1111-4111-8111-111111111111.pid");

    // Another program holding the lock (a PID reused by something else): left alone.
    let mut other = holder("not-the-watcher", &path);
    assert_eq!(stop_holder(&path, "nm-handover-watch").unwrap(), None);
    assert!(!exited_within(&mut other, Duration::from_millis(300)), "a process of another name was signalled");
    other.kill().unwrap();
    other.wait().unwrap();

    // The watcher itself: stopped, and its PID returned.
    let mut watcher = holder("nm-handover-watch", &path);
    assert_eq!(stop_holder(&path, "nm-handover-watch").unwrap(), Some(watcher.id()));
    // Gone when stop_holder returns (`unpair` then `pair` must not find it).
    assert!(watcher.try_wait().unwrap().is_some(), "stop_holder returned before the watcher exited");
    // Gone, its lock released: nothing to stop.
    assert_eq!(stop_holder(&path, "nm-handover-watch").unwrap(), None);
    std::fs::remove_dir_all(&dir).unwrap();
}
