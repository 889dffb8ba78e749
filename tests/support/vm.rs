//! The Wi-Fi lab's VM: the host kernel has no cfg80211, so a test that needs
//! real 802.11 runs itself again inside a virtme-ng VM (TCG: KVM is not usable
//! here) whose kernel has mac80211_hwsim. The guest shares the host's root
//! file system read-only, so it runs this very test binary, NetworkManager,
//! hostapd and the companion as built; the lab inside is the usual one
//! (`Lab`), with two radios instead of the backup veth. See WIFI-LAB.md.

use super::lab::{flock_file, LAB_LOCK};
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set inside the VM: the test runs its scenario instead of booting a VM.
const IN_VM: &str = "NM_HANDOVER_IN_VM";
/// nm-patch/build's cache (the patched NetworkManager builds) and virtme-ng's
/// venv in it, which setup-debian.sh installs.
const NM_CACHE: &str = "/var/cache/nm-handover";
const VNG: &str = "/var/cache/nm-handover/venv/bin/vng";
/// A test scenario boots (~10 s) and runs (~30-60 s) under TCG; this bounds a hang.
pub const VM_TIMEOUT: Duration = Duration::from_secs(600);
/// The shared VM runs all of a binary's Wi-Fi tests (~1-2 min each).
const SHARED_VM_TIMEOUT: Duration = Duration::from_secs(1800);

/// The wired side of the VM's lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wired {
    /// A veth, as in the host's lab: a software device, which NetworkManager
    /// leaves up across a suspend.
    Veth,
    /// Also the [`HARDWARE_NICS`], each joined by a QEMU hub to a peer NIC
    /// for the LAN's bridge: devices NetworkManager treats as hardware (it
    /// takes them down at a suspend); their cable is QEMU's `set_link`,
    /// asked for by the guest through [`CABLE_DIR`] (see WIFI-LAB.md, "A
    /// wired NIC NetworkManager treats as hardware").
    HardwareNics,
}

/// A NIC of the VM and its peer on the LAN's hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmNic {
    /// QEMU's device model and id (what `set_link` names).
    pub model: &'static str,
    pub qemu_id: &'static str,
    pub mac: &'static str,
    pub peer_mac: &'static str,
}

/// virtio has no Wake-on-LAN: NetworkManager takes it down before a suspend.
pub const VIRTIO_NIC: VmNic = VmNic { model: "virtio-net-pci", qemu_id: "nic1", mac: "52:54:00:12:34:01", peer_mac: "52:54:00:12:34:02" };
/// QEMU's RTL8139C+ can wake on LAN (its e1000e cannot: the driver finds no
/// WoL support): with it on, NetworkManager leaves the device up at a
/// suspend and takes it down only after the wake (nm-manager.c,
/// `do_sleep_wake`), as on many laptops' NICs.
pub const WOL_NIC: VmNic = VmNic { model: "rtl8139", qemu_id: "nic3", mac: "52:54:00:12:34:03", peer_mac: "52:54:00:12:34:04" };
pub const HARDWARE_NICS: [VmNic; 2] = [VIRTIO_NIC, WOL_NIC];

/// Set inside a VM booted with [`Wired::HardwareNics`]: the shared directory
/// where the guest asks for a cable (`cable-request`: `<seq> <qemu id>
/// on|off`) and the host says it is done (`cable-done`, the same line).
pub const CABLE_DIR: &str = "NM_HANDOVER_VM_CABLE";

/// Inside a VM booted with [`Wired::HardwareNics`], the directory of [`CABLE_DIR`].
pub fn vm_cable_dir() -> Option<PathBuf> {
    std::env::var_os(CABLE_DIR).map(PathBuf::from)
}

/// On the host: carries the guest's cable requests to QEMU's monitor until
/// `stop` is set.
fn cable_agent(out: PathBuf, monitor: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let mut done = String::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        let Ok(request) = fs::read_to_string(out.join("cable-request")) else { continue };
        let request = request.trim().to_owned();
        if request == done || request.is_empty() {
            continue;
        }
        let (Some(nic), Some(state)) = (request.split_whitespace().nth(1), request.split_whitespace().nth(2)) else { continue };
        let sent = std::os::unix::net::UnixStream::connect(&monitor).and_then(|mut m| {
            m.set_read_timeout(Some(Duration::from_secs(5)))?;
            m.write_all(format!("set_link {nic} {state}\n").as_bytes())?;
            // The monitor echoes the command and prompts again once it has run it.
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            while !String::from_utf8_lossy(&seen).contains("set_link") || !String::from_utf8_lossy(&seen).trim_end().ends_with("(qemu)") {
                let n = m.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            Ok(())
        });
        if let Err(e) = sent {
            eprintln!("the VM's cable agent: {}: {e}", monitor.display());
            continue;
        }
        let tmp = out.join("cable-done.tmp");
        if fs::write(&tmp, &request).and_then(|()| fs::rename(&tmp, out.join("cable-done"))).is_ok() {
            done = request;
        }
    }
}

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
        [dir.clone(), dir.join("virtual")]
            .iter()
            .any(|dir| fs::read_dir(dir).is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("mac80211_hwsim.ko"))))
    })
}

/// On the host: boots the VM that runs `test` (this binary's test function
/// of that name) with the guest's environment, its time limit and the wired
/// side given, and fails with the guest's log when it fails there. Skips
/// loudly (fails under CI) where the VM cannot run.
pub fn run_in_vm_with(test: &str, env: &[(&str, &str)], timeout: Duration, wired: Wired) {
    let run = match boot_vm_wired(test, &["--exact", test, "--nocapture", "--test-threads=1"], env, timeout, wired) {
        Ok(run) => run,
        Err(why) => return vm_unavailable(test, &why),
    };
    println!("--- {test} in the Wi-Fi VM ({:.0} s wall)\n{}", run.wall.as_secs_f64(), run.guest_log);
    run.assert_success(test);
    // `--exact` with a name that matches nothing runs 0 tests and succeeds.
    assert!(run.guest_log.contains("running 1 test"), "{test}: the VM ran no test of that name; guest log above");
}

/// Says why `test` cannot run in the VM here: a loud skip, a failure under CI (which must skip nothing).
fn vm_unavailable(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: cannot run the Wi-Fi VM under CI: {why}");
    }
    eprintln!("SKIPPED (the Wi-Fi lab needs root and tests/setup-debian.sh): {test}: {why}");
}

/// Set inside a VM: its read-write directory, shared with the host.
const VM_OUT: &str = "NM_HANDOVER_VM_OUT";

/// What a test prints in the guest before its scenario, then its name; and
/// the markers it leaves in the VM's directory when it starts and when it passes.
const BANNER: &str = "=== Wi-Fi VM test: ";
fn marker(out: &Path, test: &str, what: &str) -> PathBuf {
    out.join("tests").join(format!("{test}.{what}"))
}

/// The test named `test` of this binary runs `scenario` in the VM; on the
/// host it runs there through [`run_in_shared_vm`].
pub fn in_shared_vm(test: &str, scenario: impl FnOnce()) {
    if !in_vm() {
        run_in_shared_vm(test);
        return;
    }
    let out = PathBuf::from(std::env::var_os(VM_OUT).expect("the VM's directory"));
    let _ = fs::create_dir_all(out.join("tests"));
    println!("{BANNER}{test}");
    fs::write(marker(&out, test, "started"), "").expect("the test's start marker");
    // A test that hangs ends the guest's run at its own limit, not the
    // whole VM's: the tests after it then fail as not run, at once.
    // (The scenario's end, even by a panic, drops `finished` and ends the wait.)
    let (finished, wait) = std::sync::mpsc::channel::<()>();
    let (name, dir) = (test.to_owned(), out.clone());
    std::thread::spawn(move || {
        if wait.recv_timeout(VM_TIMEOUT) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            let _ = fs::write(marker(&dir, &name, "timed-out"), "");
            eprintln!("{name}: still running after {VM_TIMEOUT:?}: the guest's run ends here");
            std::process::exit(124);
        }
    });
    scenario();
    drop(finished);
    fs::write(marker(&out, test, "passed"), "").expect("the test's pass marker");
}

/// This process's test filters, to run the same tests in the guest: the
/// filters, `--exact`, `--skip` and the ignored-test switches; not the
/// options of the host's own run (threads, output format).
fn guest_filters() -> Vec<String> {
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact" | "--ignored" | "--include-ignored" => filters.push(arg),
            "--skip" => filters.extend([arg].into_iter().chain(args.next())),
            _ if arg.starts_with("--skip=") => filters.push(arg),
            "--test-threads" | "--logfile" | "--color" | "--format" | "--shuffle-seed" | "-Z" => {
                args.next();
            }
            _ if arg.starts_with('-') => {}
            _ => filters.push(arg),
        }
    }
    filters
}

/// On the host: one VM boot for every Wi-Fi test this process runs (a boot
/// and the guest's start cost ~15 s under TCG, per test before). The first
/// caller boots the VM with this process's own filters, so the guest runs
/// the tests the host runs, one after the other; each caller then fails with
/// its own part of the guest's log unless its test passed there. Skips
/// loudly (fails under CI) where the VM cannot run.
pub fn run_in_shared_vm(test: &str) {
    static SHARED: std::sync::OnceLock<Result<VmRun, String>> = std::sync::OnceLock::new();
    let run = SHARED.get_or_init(|| {
        let mut args = guest_filters();
        args.extend(["--nocapture".into(), "--test-threads=1".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        boot_vm_wired("shared", &args, &[], SHARED_VM_TIMEOUT, Wired::Veth)
    });
    let run = match run {
        Ok(run) => run,
        Err(why) => return vm_unavailable(test, why),
    };
    let part = run.guest_log.split_once(&format!("{BANNER}{test}")).map(|(_, rest)| rest.split(BANNER).next().unwrap_or(rest));
    println!("--- {test} in the shared Wi-Fi VM ({:.0} s wall for all its tests)\n{}", run.wall.as_secs_f64(), part.unwrap_or(&run.guest_log));
    let has = |what: &str| run.markers.contains(&format!("{test}.{what}"));
    if !has("started") {
        // Not run: the guest's run ended early (a test before it hung or the
        // VM failed), or a name that matches nothing in the guest.
        assert!(
            run.guest_status == Some(0),
            "{test}: not run: the guest's run ended with status {:?} (a test before it timed out: {:?}); guest log:\n{}\nvng:\n{}",
            run.guest_status,
            run.markers.iter().filter(|m| m.ends_with(".timed-out")).collect::<Vec<_>>(),
            run.guest_log,
            run.vng_log_tail
        );
        panic!("{test}: the VM ran no test of that name; guest log:\n{}", run.guest_log);
    }
    assert!(!has("timed-out"), "{test}: still running in the Wi-Fi VM after {VM_TIMEOUT:?}; its log above");
    assert!(has("passed"), "{test}: failed in the Wi-Fi VM (guest status {:?}); its log above; vng:\n{}", run.guest_status, run.vng_log_tail);
}

/// What a VM run left behind.
pub struct VmRun {
    /// The guest's read-write directory (shared with the host).
    pub out: PathBuf,
    pub guest_log: String,
    /// The exit status of this binary in the guest; `None` when it did not
    /// finish (killed at the timeout).
    pub guest_status: Option<i32>,
    pub wall: Duration,
    vng_log_tail: String,
    /// The markers the guest's tests left (see [`in_shared_vm`]), read
    /// while the VM's directory was still this run's.
    markers: std::collections::BTreeSet<String>,
}

impl VmRun {
    pub fn assert_success(&self, what: &str) {
        assert_eq!(self.guest_status, Some(0), "{what}: failed in the Wi-Fi VM; guest log above; vng:\n{}", self.vng_log_tail);
    }
}

/// Boots the Wi-Fi VM, runs this binary in it with `args` and `env` (plus
/// `NM_HANDOVER_IN_VM`), and returns what it left; `Err` says why no VM can
/// run here. Holds the lab lock (shared with other VMs) and a CPU meanwhile
/// (see [`take_vm_locks`]).
pub fn boot_vm(name: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Result<VmRun, String> {
    boot_vm_wired(name, args, env, timeout, Wired::Veth)
}

/// What a VM holds while it runs: the lab lock, shared (a lab on the host
/// takes it alone; a VM touches none of the host's namespaces, and two VMs
/// nothing of each other's), and one of the host's CPUs: a guest under TCG
/// keeps one busy (1 vCPU), so more VMs than CPUs would slow every guest's
/// timings. (tests/run.sh runs the two Wi-Fi VM binaries side by side.)
fn take_vm_locks() -> Result<(fs::File, fs::File), String> {
    let lab = flock_file(LAB_LOCK, libc::LOCK_SH).map_err(|e| format!("lab lock: {e}"))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slot = |i: usize| format!("/run/nm-handover-vm-cpu{i}.lock");
    let free = (0..cpus).find_map(|i| flock_file(&slot(i), libc::LOCK_EX | libc::LOCK_NB).ok());
    let cpu = match free {
        Some(cpu) => cpu,
        None => flock_file(&slot(std::process::id() as usize % cpus), libc::LOCK_EX).map_err(|e| format!("VM CPU lock: {e}"))?,
    };
    Ok((lab, cpu))
}

/// [`boot_vm`] with the wired side given.
pub fn boot_vm_wired(name: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration, wired: Wired) -> Result<VmRun, String> {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        return Err("network namespaces and NetworkManager need root".into());
    }
    if !Path::new(VNG).exists() {
        return Err(format!("{VNG} is missing"));
    }
    let kernel = hwsim_kernel().ok_or("no kernel with mac80211_hwsim in /boot (package linux-image-amd64)")?;
    let _locks = take_vm_locks()?;

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wifi-vm").join(name);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let quote = |v: &str| format!("'{}'", v.replace('\'', "'\\''"));
    let mut exports = format!(
        "export {IN_VM}=1 {VM_OUT}={out} NM_HANDOVER_MEASUREMENTS={out}/measurements.txt NM_HANDOVER_LAB_LOGS={out}/labs RUST_BACKTRACE=1\n",
        out = out.display()
    );
    let out_text = out.to_string_lossy().into_owned();
    let wired_env = (wired == Wired::HardwareNics).then_some((CABLE_DIR, out_text.as_str()));
    for (key, value) in env.iter().copied().chain(std::env::var("CI").ok().as_deref().map(|ci| ("CI", ci))).chain(wired_env) {
        exports.push_str(&format!("export {key}={}\n", quote(value)));
    }
    let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
    let script = format!(
        "modprobe mac80211_hwsim radios=2 || exit 90\n{exports}cd {manifest}\n{exe} {args} >{out}/guest.log 2>&1\necho $? >{out}/status\n",
        out = out.display(),
        manifest = env!("CARGO_MANIFEST_DIR"),
        exe = quote(&exe.to_string_lossy()),
        args = args.join(" "),
    );
    fs::write(out.join("run.sh"), script).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let log = fs::File::create(out.join("vng.log")).map_err(|e| e.to_string())?;
    // A path short enough for a socket's name, which the target directory's is not.
    let monitor = PathBuf::from(format!("/run/nm-handover-vm-{}.monitor", std::process::id()));
    let _ = fs::remove_file(&monitor);
    let mut qemu_opts = Vec::new();
    if wired == Wired::HardwareNics {
        let mut opts = String::new();
        for (hub, nic) in HARDWARE_NICS.iter().enumerate() {
            for (port, (id, mac)) in [(nic.qemu_id, nic.mac), (&*format!("{}-peer", nic.qemu_id), nic.peer_mac)].into_iter().enumerate() {
                opts.push_str(&format!("-netdev hubport,id=hub{hub}port{port},hubid={hub} -device {},netdev=hub{hub}port{port},id={id},mac={mac} ", nic.model));
            }
        }
        // The `=` form: vng's argparse would take a value starting with `-` for an option.
        qemu_opts.push(format!("--qemu-opts={opts}-monitor unix:{},server,nowait", monitor.display()));
    }
    let stop_agent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let agent = (wired == Wired::HardwareNics).then(|| {
        let (out, monitor, stop) = (out.clone(), monitor.clone(), stop_agent.clone());
        std::thread::spawn(move || cable_agent(out, monitor, stop))
    });
    let mut child = Command::new(VNG)
        .args(["-r", kernel.to_str().unwrap(), "--disable-kvm", "--force-9p", "-m", "2G", "--cpus", "1"])
        .args(&qemu_opts)
        .arg(format!("--rwdir={}", out.display()))
        // The guest gets an empty /var/cache: the patched NetworkManager builds are handed in.
        .arg(format!("--rodir={NM_CACHE}"))
        .args(["--exec", &format!("sh {}/run.sh", out.display())])
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", Path::new(VNG).parent().unwrap().display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // Its own process group: a hung VM is stopped with everything vng started.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {VNG}: {e}"))?;
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if started.elapsed() > timeout {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_agent.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(agent) = agent {
        let _ = agent.join();
    }
    let _ = fs::remove_file(&monitor);
    if let Ok(lines) = fs::read_to_string(out.join("measurements.txt")) {
        let host = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab-measurements.txt");
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(host) {
            let _ = f.write_all(lines.as_bytes());
        }
    }
    let vng_log = fs::read_to_string(out.join("vng.log")).unwrap_or_default();
    let tail: Vec<&str> = vng_log.lines().rev().take(30).collect();
    Ok(VmRun {
        guest_log: fs::read_to_string(out.join("guest.log")).unwrap_or_default(),
        guest_status: fs::read_to_string(out.join("status")).ok().and_then(|s| s.trim().parse().ok()),
        wall: started.elapsed(),
        vng_log_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        markers: fs::read_dir(out.join("tests")).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        out,
    })
}
