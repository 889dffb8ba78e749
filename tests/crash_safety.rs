//! Crash safety and mutual exclusion, with real processes: a lease carry
//! killed with SIGKILL at random points leaves the old or the new complete
//! file, never a torn one; two invocations never hold the handover lock at once.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Rng;

use nm_handover::lease::write_atomically;
use nm_handover::sys::lock::{FileLock, LockError};

const CHILD_ROLE: &str = "NM_HANDOVER_TEST_CHILD";

/// Two complete lease files of different lengths, so a torn write shows.
const OLD: &str = "# This is private data. Do not parse.\nADDRESS=198.18.0.100\n";
const NEW: &str = "# This is private data. Do not parse.\nADDRESS=198.18.0.177\n# carried by nm-handover from backup0, padding the file so a partial write cannot look complete ......\n";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nm-handover-crash-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Re-runs this test binary as a child doing one job (see `child_main`).
fn spawn_child(test: &str, role: &str, arg: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env("NM_HANDOVER_TEST_ARG", arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// In a child: the job, then exit (the parent kills it before or after).
fn child_main() -> bool {
    let Ok(role) = std::env::var(CHILD_ROLE) else { return false };
    let arg = PathBuf::from(std::env::var_os("NM_HANDOVER_TEST_ARG").unwrap());
    match role.as_str() {
        "carry" => loop {
            // Alternate, so a kill can land in any phase of any write.
            write_atomically(&arg, NEW.as_bytes()).unwrap();
            write_atomically(&arg, OLD.as_bytes()).unwrap();
        },
        "hold-lock" => {
            let _lock = FileLock::acquire(&arg, Duration::from_secs(5)).unwrap();
            println!("locked");
            use std::io::Write;
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            std::process::exit(0);
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn sigkill_during_lease_carry_leaves_old_or_new_file() {
    if child_main() {
        return;
    }
    let dir = scratch("carry");
    let lease = dir.join("internal-11111111-1111-4111-8111-111111111111-wired0.lease");
    fs::write(&lease, OLD).unwrap();
    let seed = 0x6e6d_6861_6e64_6f76;
    let mut rng = Rng(seed);
    let trials = 300;
    let (mut saw_old, mut saw_new) = (0, 0);
    for trial in 0..trials {
        let mut child = spawn_child("sigkill_during_lease_carry_leaves_old_or_new_file", "carry", &lease);
        // Kill between 0.5 and 25 ms in: process start-up, then many writes.
        std::thread::sleep(Duration::from_micros(500 + rng.next() % 24_500));
        child.kill().unwrap();
        child.wait().unwrap();
        let text = fs::read_to_string(&lease).unwrap_or_else(|e| panic!("trial {trial} (seed {seed:#x}): lease file unreadable: {e}"));
        match text.as_str() {
            OLD => saw_old += 1,
            NEW => saw_new += 1,
            torn => panic!("trial {trial} (seed {seed:#x}): torn lease file: {torn:?}"),
        }
    }
    // The next writer cleans up what killed writers left behind.
    write_atomically(&lease, OLD.as_bytes()).unwrap();
    let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).filter(|n| n != lease.file_name().unwrap()).collect();
    println!("{trials} SIGKILLs: old file {saw_old} times, new file {saw_new} times, leftovers after the next write: {leftovers:?}");
    assert!(saw_old > 0 && saw_new > 0, "the kills never landed between writes: old {saw_old}, new {saw_new}");
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_invocation_waits_for_the_lock_then_gives_up_or_gets_it() {
    if child_main() {
        return;
    }
    let dir = scratch("lock");
    let path = dir.join("handover.lock");
    let mut child = spawn_child("a_second_invocation_waits_for_the_lock_then_gives_up_or_gets_it", "hold-lock", &path);
    // Wait until the child holds the lock.
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let locked = std::io::BufRead::lines(out).map_while(Result::ok).any(|l| l.contains("locked"));
    assert!(locked, "the child never took the lock");

    let start = Instant::now();
    match FileLock::acquire(&path, Duration::from_millis(300)) {
        Err(LockError::Busy { .. }) => {}
        other => panic!("the lock was not exclusive: {other:?}"),
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300), "gave up after {waited:?}, before its bound");

    let lock = FileLock::acquire(&path, Duration::from_secs(5)).expect("the lock after the holder exits");
    let got_after = start.elapsed();
    child.wait().unwrap();
    println!("busy after {waited:?}; acquired {got_after:?} after the first attempt, once the holder exited");
    assert!(got_after >= Duration::from_millis(1000), "acquired while the child still held it");
    drop(lock);
    fs::remove_dir_all(&dir).unwrap();
}
