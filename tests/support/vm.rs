//! The Wi-Fi lab's VM: the host kernel has no cfg80211, so a test that needs
//! real 802.11 runs itself again inside a virtme-ng VM (TCG: KVM is not usable
//! here) whose kernel has mac80211_hwsim. The guest shares the host's root
//! file system read-only, so it runs this very test binary, NetworkManager,
//! hostapd and the companion as built; the lab inside is the usual one
//! (`Lab`), with two radios instead of the backup veth. See WIFI-LAB.md.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set inside the VM: the test runs its scenario instead of booting a VM.
const IN_VM: &str = "NM_HANDOVER_IN_VM";
/// What setup-debian.sh installs virtme-ng into.
const VNG: &str = "/var/cache/nm-handover/venv/bin/vng";
/// A scenario boots (~10 s) and runs (~30 s) under TCG; this bounds a hang.
const VM_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether this process is the test inside the VM.
pub fn in_vm() -> bool {
    std::env::var_os(IN_VM).is_some()
}

/// The installed kernel that ships mac80211_hwsim, and its version.
fn hwsim_kernel() -> Option<PathBuf> {
    let mut kernels: Vec<PathBuf> = fs::read_dir("/boot").ok()?.flatten().map(|e| e.path()).collect();
    kernels.sort();
    kernels.into_iter().rev().find(|k| {
        let Some(version) = k.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("vmlinuz-")) else { return false };
        // drivers/net/wireless/ on 6.1, drivers/net/wireless/virtual/ since 6.2.
        let dir = Path::new("/lib/modules").join(version).join("kernel/drivers/net/wireless");
        [dir.clone(), dir.join("virtual")].iter().any(|dir| {
            fs::read_dir(dir).is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("mac80211_hwsim.ko")))
        })
    })
}

/// On the host: boots the VM that runs `test` (this binary's test function
/// of that name) and fails with the guest's log when it fails there. Skips
/// loudly (fails under CI) where the VM cannot run.
pub fn run_in_vm(test: &str) {
    let skip = |why: String| {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: cannot run the Wi-Fi VM under CI: {why}");
        }
        eprintln!("SKIPPED (the Wi-Fi lab needs root and tests/setup-debian.sh): {test}: {why}");
    };
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        return skip("network namespaces and NetworkManager need root".into());
    }
    if !Path::new(VNG).exists() {
        return skip(format!("{VNG} is missing"));
    }
    let Some(kernel) = hwsim_kernel() else {
        return skip("no kernel with mac80211_hwsim in /boot (package linux-image-amd64)".into());
    };
    // The VM takes a whole CPU: no other lab at the same time.
    let lock = fs::OpenOptions::new().create(true).write(true).truncate(false).open("/run/nm-handover-lab.lock").expect("lab lock");
    // SAFETY: flock on a file we own; released when it is closed.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0, "lab lock");

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wifi-vm").join(test);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    let exe = std::env::current_exe().unwrap();
    let ci = std::env::var("CI").map(|v| format!("export CI='{v}'\n")).unwrap_or_default();
    let script = format!(
        "modprobe mac80211_hwsim radios=2 || exit 90\n\
         export {IN_VM}=1 NM_HANDOVER_MEASUREMENTS={out}/measurements.txt RUST_BACKTRACE=1\n{ci}\
         cd {manifest}\n\
         {exe} --exact {test} --nocapture --test-threads=1 >{out}/guest.log 2>&1\n\
         echo $? >{out}/status\n",
        out = out.display(),
        manifest = env!("CARGO_MANIFEST_DIR"),
        exe = exe.display(),
    );
    fs::write(out.join("run.sh"), script).unwrap();
    let started = Instant::now();
    let mut vng = Command::new(VNG);
    vng.args(["-r", kernel.to_str().unwrap(), "--disable-kvm", "--force-9p", "-m", "2G", "--cpus", "1"])
        .arg(format!("--rwdir={}", out.display()))
        .args(["--exec", &format!("sh {}/run.sh", out.display())])
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", Path::new(VNG).parent().unwrap().display()))
        .stdin(Stdio::null())
        .stdout(fs::File::create(out.join("vng.log")).unwrap())
        .stderr(fs::File::create(out.join("vng.log")).unwrap().try_clone().unwrap())
        // Its own process group: a hung VM is stopped with everything vng started.
        .process_group(0);
    let mut child = vng.spawn().expect("start vng");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > VM_TIMEOUT {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let guest_log = fs::read_to_string(out.join("guest.log")).unwrap_or_default();
    println!("--- {test} in the Wi-Fi VM ({:.0} s wall)\n{guest_log}", started.elapsed().as_secs_f64());
    if let Ok(lines) = fs::read_to_string(out.join("measurements.txt")) {
        let host = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab-measurements.txt");
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(host) {
            let _ = f.write_all(lines.as_bytes());
        }
    }
    let guest_status = fs::read_to_string(out.join("status")).unwrap_or_default();
    let vng_log = fs::read_to_string(out.join("vng.log")).unwrap_or_default();
    let tail: String = vng_log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(status.is_some(), "{test}: the VM did not finish within {VM_TIMEOUT:?}\n{tail}");
    assert_eq!(guest_status.trim(), "0", "{test}: failed in the VM (status {guest_status:?}, vng {status:?}); guest log above\n{tail}");
}
