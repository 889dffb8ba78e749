//! A laptop's day where the radio and the hardware matter, in the Wi-Fi VM
//! (`support/vm.rs`): the wired link is the VM's virtio NIC, which
//! NetworkManager treats as hardware and takes down at a suspend (a veth is
//! software and stays up), and the backup is the mac80211_hwsim station.
//! Suspend and resume through NetworkManager's `Sleep` D-Bus method (what
//! logind's PrepareForSleep makes it do), the access point off the air and
//! back, the radio off and on.
//!
//! Every scenario runs beside a control: the same profiles unpaired, both
//! connecting automatically as a user has them, in the same VM; the paired
//! laptop must be connected on the right link no later than the control +
//! 2 s, with the same IPv4, one lease and no conflict at the server. Where
//! the Wi-Fi comes back, both are timed from the end of the scan that lists
//! the network again (NetworkManager autoconnects there; see `support::scenario::Return`):
//! when the network returns relative to NM's scans is chance, a scan's worth
//! (~4 s under TCG) either way. The paired laptop must ask for the Wi-Fi
//! within `REACTION` of that scan's end, only once, and its activation take
//! no longer than the control's + 2 s.
//!
//! One VM boot runs them all (a boot costs ~10 s and the guest's lab ~30 s
//! under TCG); `NM_HANDOVER_DAY_ONLY=<name>` on the host runs one. Needs root
//! and what tests/setup-debian.sh installs; otherwise it says why it skips
//! (and fails under CI, which must skip nothing).

mod support;

use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use support::*;

/// How much later than plain NetworkManager the paired laptop may be back.
const SLACK: Duration = Duration::from_secs(2);
/// How long NetworkManager takes to be back after a wake or the access point's
/// return under TCG, at most (its scans set it: up to a minute between two).
const BACK_WITHIN: Duration = Duration::from_secs(150);
/// Runs one scenario in the VM.
const ONLY: &str = "NM_HANDOVER_DAY_ONLY";
fn cfg(nic: VmNic) -> LabConfig {
    LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_hardware_wired(nic)
}

/// The wired profile wakes on LAN where the NIC can (see [`WOL_NIC`]).
fn wake_on_lan(lab: &Lab) {
    if lab.cfg.hardware_wired.as_ref().is_some_and(|(_, nic)| *nic == WOL_NIC) {
        lab.nmcli(&["connection", "modify", "Office LAN", "802-3-ethernet.wake-on-lan", "magic"]).expect("wake-on-lan on");
    }
}

/// The lab of a control: the wired profile and the Wi-Fi profile unpaired,
/// both connecting automatically, both holding an address.
fn control(test: &str, nic: VmNic) -> Option<Lab> {
    let lab = start_or_skip(test, cfg(nic))?;
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    wake_on_lan(&lab);
    lab.add_wifi_profile("Office Wi-Fi", "wlan0");
    lab.nmcli(&["connection", "modify", "Office Wi-Fi", "connection.autoconnect", "yes"]).expect("autoconnect the control's Wi-Fi");
    lab.expect_until("both links' addresses", BACK_WITHIN, || lab.ipv4("wired0").is_some() && lab.ipv4("wlan0").is_some());
    Some(lab)
}

/// Whether `iface` holds `addr`, or any address where none is expected (the control).
fn holds(lab: &Lab, iface: &str, addr: Option<Ipv4Addr>) -> bool {
    match (lab.ipv4(iface), addr) {
        (Some(now), Some(addr)) => now == addr,
        (now, None) => now.is_some(),
        (None, Some(_)) => false,
    }
}

fn wifi_activations(lab: &Lab) -> usize {
    lab.nm_log().matches("Activation: starting connection 'Office Wi-Fi'").count()
}

fn asleep(lab: &Lab) {
    // Not while a device is still activating: NetworkManager 1.42 can let an
    // activation in its last steps (ip-check) finish after the Sleep, and
    // then never answers it (the device it waits for never disconnects).
    // A laptop is seldom put to sleep within a second of connecting.
    lab.expect_until("no device activating", Duration::from_secs(60), || {
        lab.nmcli(&["-t", "-f", "STATE", "device"]).is_ok_and(|states| !states.lines().any(|s| s.starts_with("connecting")))
    });
    lab.nm_sleep(true);
    lab.expect_until("NetworkManager asleep", Duration::from_secs(30), || lab.nmcli(&["-t", "-f", "STATE", "general"]).is_ok_and(|s| s.trim() == "asleep"));
}

/// Wakes NetworkManager; how long until `iface` holds the address.
fn woken(lab: &Lab, iface: &str, addr: Option<Ipv4Addr>) -> Duration {
    let t0 = Instant::now();
    lab.nm_sleep(false);
    lab.expect_until(&format!("{iface} to hold the address after the wake"), BACK_WITHIN, || holds(lab, iface, addr));
    t0.elapsed()
}

/// The times of one suspend/resume day: asleep and woken on the cable; asleep
/// on the cable and woken without; asleep on the backup and woken on the cable.
#[derive(Debug)]
struct SleepTimes {
    on_the_cable: Duration,
    woken_without: Duration,
    /// The Wi-Fi's return after the wake without the cable (from the sleep on).
    woken_without_return: Return,
    woken_on_the_cable: Duration,
}

/// `addr`: the paired laptop's one address (`None` for the control, whose
/// links each have their own).
fn suspend_day(lab: &Lab, test: &str, addr: Option<Ipv4Addr>) -> SleepTimes {
    let paired = addr.is_some();
    let since = lab.server_log().lines().count();

    let before = wifi_activations(lab);
    asleep(lab);
    let on_the_cable = woken(lab, "wired0", addr);
    connected(lab, test);
    if paired {
        // Past the supervisor's settle and wired grace: no stray backup.
        std::thread::sleep(Duration::from_secs(8));
        assert_eq!(wifi_activations(lab), before, "{test}: the Wi-Fi was activated after a wake on the cable\n{}", lab.diagnostics());
        assert!(lab.ap_stations().is_empty(), "{test}: a stray station after a wake on the cable\n{}", lab.diagnostics());
    }

    let since_asleep = lab.nm_log().lines().count();
    asleep(lab);
    lab.pull_cable();
    let woken_without = woken(lab, "wlan0", addr);
    connected(lab, test);
    let woken_without_return = wifi_return(lab, test, since_asleep);
    if paired {
        assert_eq!(lab.ap_stations(), [lab.mac("wired0")], "{test}: {}", lab.diagnostics());
    }

    asleep(lab);
    lab.plug_cable();
    let woken_on_the_cable = woken(lab, "wired0", addr);
    connected(lab, test);
    if paired {
        lab.expect_until("the station to leave the access point", Duration::from_secs(30), || lab.ap_stations().is_empty());
        assert!(lab.ipv4("wlan0").is_none(), "{test}: the backup kept the address beside the wired link\n{}", lab.diagnostics());
        no_conflict(lab, test);
        only_acks_for(lab, since, addr.unwrap());
    }
    SleepTimes { on_the_cable, woken_without, woken_without_return, woken_on_the_cable }
}

fn suspend_and_resume(nic: VmNic) {
    let test = &format!("wifi-day/suspend and resume, wired {}", nic.model);
    let Some(control_lab) = control(&format!("{test} (control)"), nic) else { return };
    let control = suspend_day(&control_lab, &format!("{test} (control)"), None);
    drop(control_lab);
    let Some(p) = paired_with(test, cfg(nic), &[], wake_on_lan) else { return };
    let took = suspend_day(&p.lab, test, Some(p.addr));
    if nic == WOL_NIC {
        // The path this NIC is here for: NetworkManager left it up at the suspend.
        assert!(
            p.lab.nm_log().contains("sleep: device wired0 has wake-on-lan, skipping"),
            "{test}: the wired NIC did not wake on LAN\n{}",
            p.lab.diagnostics()
        );
    }
    for (what, control, paired) in [
        ("wake on the cable -> wired holds the address", control.on_the_cable, took.on_the_cable),
        ("wake without the cable -> Wi-Fi holds the address", control.woken_without, took.woken_without),
        ("asleep on the Wi-Fi, wake on the cable -> wired holds the address", control.woken_on_the_cable, took.woken_on_the_cable),
    ] {
        measured(test, &format!("{what}: control / paired"), format!("{} / {}", ms(control), ms(paired)));
    }
    for (control, paired) in [(control.on_the_cable, took.on_the_cable), (control.woken_on_the_cable, took.woken_on_the_cable)] {
        assert!(paired <= control + SLACK, "{test}: paired {took:?}, control {control:?}\n{}", p.lab.diagnostics());
    }
    judge_return(&p.lab, test, "wake without the cable", &control.woken_without_return, &took.woken_without_return);
}

/// How long after one return of the office network the Wi-Fi held the
/// address again, and that return in NM's log.
type Back = (Duration, Return);

/// With the cable out and the Wi-Fi holding the address: the access point
/// off the air for 15 s and back, then the radio off for 1 s and on (the
/// second return comes within 15 s of the first activation, the supervisor's
/// first retry wait: a backup that came up must not count as a failed try).
fn radio_day(lab: &Lab, test: &str, addr: Option<Ipv4Addr>) -> (Back, Back) {
    let since = lab.nm_log().lines().count();
    lab.set_access_point(false);
    lab.expect_until("the Wi-Fi to lose the access point", Duration::from_secs(60), || lab.ipv4("wlan0").is_none());
    std::thread::sleep(Duration::from_secs(15));
    let t0 = Instant::now();
    lab.set_access_point(true);
    lab.expect_until("the Wi-Fi back with the access point", BACK_WITHIN, || holds(lab, "wlan0", addr));
    let ap_back = (t0.elapsed(), wifi_return(lab, test, since));
    connected(lab, test);

    let since = lab.nm_log().lines().count();
    lab.nmcli(&["radio", "wifi", "off"]).expect("radio off");
    lab.expect_until("the Wi-Fi off", Duration::from_secs(30), || lab.ipv4("wlan0").is_none());
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    lab.nmcli(&["radio", "wifi", "on"]).expect("radio on");
    // rfkill is not per network namespace: the radio switch took the lab's
    // access point off the air too, and hostapd does not come back by itself.
    lab.restart_access_point();
    lab.expect_until("the Wi-Fi back with the radio", BACK_WITHIN, || holds(lab, "wlan0", addr));
    let radio_back = (t0.elapsed(), wifi_return(lab, test, since));
    connected(lab, test);
    (ap_back, radio_back)
}

fn access_point_and_radio_away_and_back() {
    let test = "wifi-day/access point and radio away and back";
    let Some(control_lab) = control(&format!("{test} (control)"), VIRTIO_NIC) else { return };
    control_lab.pull_cable();
    let control = radio_day(&control_lab, &format!("{test} (control)"), None);
    drop(control_lab);
    let Some(p) = paired(test, cfg(VIRTIO_NIC), &[]) else { return };
    let lab = &p.lab;
    lab.pull_cable();
    lab.expect_until("the Wi-Fi to hold the address", BACK_WITHIN, || lab.ipv4("wlan0") == Some(p.addr));
    let since = lab.server_log().lines().count();
    let took = radio_day(lab, test, Some(p.addr));
    no_conflict(lab, test);
    only_acks_for(lab, since, p.addr);
    assert_eq!(lab.ap_stations(), [lab.mac("wired0")], "{test}: {}", lab.diagnostics());
    measured(test, "access point back -> Wi-Fi holds the address: control / paired", format!("{} / {}", ms(control.0 .0), ms(took.0 .0)));
    measured(test, "radio on -> Wi-Fi holds the address: control / paired", format!("{} / {}", ms(control.1 .0), ms(took.1 .0)));
    judge_return(lab, test, "access point back", &control.0 .1, &took.0 .1);
    judge_return(lab, test, "radio on", &control.1 .1, &took.1 .1);
}

/// At home: the office Wi-Fi is not in range, the user's home Wi-Fi
/// connects by itself, the cable goes out. How long until the LAN's peer is
/// reachable through the home Wi-Fi; the office Wi-Fi is never tried and the
/// home Wi-Fi never interrupted.
fn home_day(lab: &Lab, test: &str) -> Duration {
    let home = ["ssid", "nmh-home", "autoconnect", "yes", "wifi-sec.key-mgmt", "wpa-psk", "wifi-sec.psk", WIFI_PSK, "ipv6.method", "disabled"];
    lab.add_profile("wifi", "Home Wi-Fi", "wlan0", &home).expect("the home Wi-Fi profile");
    lab.rename_access_point("nmh-home");
    lab.expect_until("the home Wi-Fi", BACK_WITHIN, || nm_state(lab, "Home Wi-Fi") == "activated" && lab.ipv4("wlan0").is_some());
    // As at home, where the office network was last seen hours ago: NM no longer lists it.
    lab.expect_until("the office network gone from the scan list", BACK_WITHIN, || {
        lab.nmcli(&["-t", "-f", "SSID", "device", "wifi", "list", "--rescan", "yes"]).is_ok_and(|list| !list.lines().any(|l| l == WIFI_SSID))
    });
    let home_mac = lab.mac("wlan0");
    let office_tries = lab.nm_log().matches("Activation: starting connection 'Office Wi-Fi'").count();
    let t0 = Instant::now();
    lab.pull_cable();
    lab.expect_until("the peer through the home Wi-Fi", Duration::from_secs(60), || lab.ipv4("wired0").is_none() && peer_reachable(lab));
    let took = t0.elapsed();
    // Past the supervisor's settle and grace: nothing tried, nothing interrupted.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        lab.nm_log().matches("Activation: starting connection 'Office Wi-Fi'").count(),
        office_tries,
        "{test}: the office Wi-Fi was tried at home\n{}",
        lab.diagnostics()
    );
    assert_eq!(nm_state(lab, "Home Wi-Fi"), "activated", "{test}: {}", lab.diagnostics());
    assert_eq!(lab.ap_stations(), [home_mac], "{test}: the home Wi-Fi's MAC changed");
    connected(lab, test);
    took
}

fn at_home() {
    let test = "wifi-day/at home (the office Wi-Fi out of range)";
    let Some(control_lab) = control(&format!("{test} (control)"), VIRTIO_NIC) else { return };
    let control = home_day(&control_lab, &format!("{test} (control)"));
    drop(control_lab);
    let Some(p) = paired(test, cfg(VIRTIO_NIC), &[]) else { return };
    let took = home_day(&p.lab, test);
    measured(test, "pull -> the LAN's peer through the home Wi-Fi: control / paired", format!("{} / {}", ms(control), ms(took)));
    assert!(took <= control + SLACK, "{test}: paired {took:?}, control {control:?}\n{}", p.lab.diagnostics());
}

/// With the warm standby (`pair --standby`): up beside the cable at the
/// office, gone with the office network, and at home the home Wi-Fi
/// connects and works as without it; the standby is never tried there.
fn at_home_with_the_standby() {
    let test = "wifi-day/at home with the warm standby";
    let Some(p) = paired(test, cfg(VIRTIO_NIC), &["--standby"]) else { return };
    let lab = &p.lab;
    let standby = "Office Wi-Fi (nm-handover standby)";
    lab.expect_until("the warm standby at the office", BACK_WITHIN, || nm_state(lab, standby) == "activated");
    let took = home_day(lab, test);
    measured(test, "pull -> the LAN's peer through the home Wi-Fi", ms(took));
    assert!(nm_state(lab, standby).is_empty(), "{test}: the standby is up at home\n{}", lab.diagnostics());
    // One activation at the office, none since.
    assert_eq!(lab.nm_log().matches(&format!("Activation: starting connection '{standby}'")).count(), 1, "{test}: {}", lab.diagnostics());
}

const SCENARIOS: &[(&str, fn())] = &[
    ("at_home", at_home),
    ("at_home_with_the_standby", at_home_with_the_standby),
    ("suspend_and_resume", || suspend_and_resume(VIRTIO_NIC)),
    ("suspend_and_resume_waking_on_lan", || suspend_and_resume(WOL_NIC)),
    ("access_point_and_radio_away_and_back", access_point_and_radio_away_and_back),
];

#[test]
fn a_laptops_day_with_a_hardware_nic_and_real_802_11() {
    let name = "a_laptops_day_with_a_hardware_nic_and_real_802_11";
    if !in_vm() {
        let only = std::env::var(ONLY).ok();
        let env: Vec<(&str, &str)> = only.as_deref().map(|o| (ONLY, o)).into_iter().collect();
        run_in_vm_with(name, &env, VM_TIMEOUT * 2, Wired::HardwareNics);
        return;
    }
    let only = std::env::var(ONLY).ok();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (scenario, run) in SCENARIOS.iter().filter(|(s, _)| only.as_deref().is_none_or(|o| o == *s)) {
        ran += 1;
        println!("=== {scenario}");
        if catch_unwind(AssertUnwindSafe(run)).is_err() {
            failed.push(*scenario);
        }
    }
    assert!(ran > 0, "{ONLY}={only:?} names no scenario");
    assert!(failed.is_empty(), "failed in the VM: {failed:?}");
}
