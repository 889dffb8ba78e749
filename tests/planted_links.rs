//! Every file the companion writes as root refuses a symbolic link planted
//! where it goes (and leaves the link's target alone): the handover and
//! watcher locks under /run/nm-handover, the `link-up` marker, lease files,
//! the conf.d snippet, the pair's record, the LAN record, the watcher's
//! start record, the supervisor's pull mark and the standby's saved kernel
//! settings (all written by `write_atomically`), root's record and those
//! files read back, and the off-LAN records and link marks (both `touch`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nm_handover::lease::write_atomically;
use nm_handover::names::Uuid;
use nm_handover::prefilter::record_link_up_seen;
use nm_handover::sys::lock::{read_no_follow, touch, FileLock};
use nm_handover::sys::paths::watcher_lock_path;
use nm_handover::trust::{read_record, record_path, Distrust};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("nmh-planted-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A link at `name` to a victim file; returns both paths.
    fn plant(&self, name: &str) -> (PathBuf, PathBuf) {
        let victim = self.0.join(format!("victim-of-{name}"));
        fs::write(&victim, "victim\n").unwrap();
        let link = self.0.join(name);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        (link, victim)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn untouched(victim: &Path) {
    assert_eq!(fs::read_to_string(victim).unwrap(), "victim\n", "{} was written through the link", victim.display());
}

#[test]
fn the_handover_and_watcher_locks_refuse_a_planted_link() {
    let scratch = Scratch::new("locks");
    let watcher_lock = watcher_lock_path("11111111-1111-4111-8111-111111111111");
    for name in ["handover.lock", "supervise.pid", watcher_lock.file_name().unwrap().to_str().unwrap()] {
        let (link, victim) = scratch.plant(name);
        let err = FileLock::acquire(&link, Duration::from_millis(10)).unwrap_err();
        assert!(err.to_string().contains("symbolic links") || err.to_string().contains("Too many levels"), "{name}: {err}");
        untouched(&victim);
    }
}

#[test]
fn the_link_up_marker_refuses_a_planted_link() {
    let scratch = Scratch::new("marker");
    let (link, victim) = scratch.plant("link-up-seen");
    record_link_up_seen(&link);
    untouched(&victim);
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
}

#[test]
fn lease_files_the_conf_snippet_and_the_record_refuse_a_planted_link() {
    let scratch = Scratch::new("atomic");
    for name in [
        "internal-11111111-1111-4111-8111-111111111111-backup0.lease",
        "90-nm-handover-11111111-1111-4111-8111-111111111111.conf",
        "11111111-1111-4111-8111-111111111111.pair",
        "lan-11111111-1111-4111-8111-111111111111",
        "watch-11111111-1111-4111-8111-111111111111.started",
        "pull-watched-3",
        "sysctl-ipv4-wlan0-arp_ignore",
    ] {
        let (link, victim) = scratch.plant(name);
        let err = write_atomically(&link, b"written\n").unwrap_err();
        assert!(err.to_string().contains("symlink") || err.to_string().contains("symbolic link"), "{name}: {err}");
        untouched(&victim);
    }
}

#[test]
fn a_planted_link_is_no_record_of_a_pair() {
    let scratch = Scratch::new("record");
    let wired = Uuid::parse("11111111-1111-4111-8111-111111111111").unwrap();
    let path = record_path(&scratch.0, &wired);
    let victim = scratch.0.join("victim");
    fs::write(&victim, "wired=x\n").unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    assert!(matches!(read_record(&scratch.0, &wired), Err(Distrust::BadRecord { why, .. }) if why.contains("symbolic link")));
}

#[test]
fn off_lan_records_and_link_marks_refuse_a_planted_link() {
    let scratch = Scratch::new("touch");
    for name in ["off-lan-7", "replug-3", "port-failed-3", "handed-back-4", "standby-serving-4", "replug-handled-3"] {
        let (link, victim) = scratch.plant(name);
        assert_eq!(touch(&link).unwrap_err().raw_os_error(), Some(libc::ELOOP), "{name}");
        untouched(&victim);
    }
    touch(&scratch.0.join("off-lan-8")).unwrap();
    assert!(scratch.0.join("off-lan-8").is_file());
}

#[test]
fn what_root_reads_back_from_run_refuses_a_planted_link() {
    let scratch = Scratch::new("read");
    // A saved kernel setting (`unpair` writes it back into /proc/sys) and a watcher's start record.
    for name in ["sysctl-ipv4-wlan0-arp_ignore", "watch-11111111-1111-4111-8111-111111111111.started"] {
        let (link, _) = scratch.plant(name);
        assert_eq!(read_no_follow(&link).unwrap_err().raw_os_error(), Some(libc::ELOOP), "{name}");
    }
    fs::write(scratch.0.join("plain"), "1\n").unwrap();
    assert_eq!(read_no_follow(&scratch.0.join("plain")).unwrap(), "1\n");
}
