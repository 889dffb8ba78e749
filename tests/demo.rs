//! The handover demo: a real NetworkManager lab, a live TCP session, a cable
//! pull and a re-plug, printed as a timeline. `bash tests/demo.sh` runs it.
//!
//! The backup is a real Wi-Fi station where the Wi-Fi VM can run (this
//! binary boots it and runs again inside, see `support/vm.rs`); elsewhere the
//! demo runs on the backup veth and says why.
//!
//! Options (environment): NM_HANDOVER_DEMO_SERVER=isc-dhcpd|dnsmasq,
//! NM_HANDOVER_DEMO_CLIENT=internal|dhclient.

mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use support::*;

fn main() -> ExitCode {
    let server = match std::env::var("NM_HANDOVER_DEMO_SERVER").as_deref() {
        Ok("dnsmasq") => DhcpServer::Dnsmasq,
        Ok("isc-dhcpd") | Err(_) => DhcpServer::IscDhcpd,
        Ok(other) => {
            eprintln!("demo: NM_HANDOVER_DEMO_SERVER must be isc-dhcpd or dnsmasq, not {other:?}");
            return ExitCode::from(2);
        }
    };
    let client = match std::env::var("NM_HANDOVER_DEMO_CLIENT").as_deref() {
        Ok("dhclient") => DhcpClient::Dhclient,
        Ok("internal") | Err(_) => DhcpClient::Internal,
        Ok(other) => {
            eprintln!("demo: NM_HANDOVER_DEMO_CLIENT must be internal or dhclient, not {other:?}");
            return ExitCode::from(2);
        }
    };
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the demo's lab needs root (network namespaces, NetworkManager)");
        return if std::env::var_os("CI").is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    }
    let mut cfg = LabConfig::new(server, client).with_companion();
    if in_vm() {
        cfg = cfg.with_wifi();
    } else {
        match boot_vm("demo", &[], &[], VM_TIMEOUT) {
            Ok(run) => {
                println!("demo on real 802.11, in the Wi-Fi VM (TCG, {:.0} s wall):\n{}", run.wall.as_secs_f64(), run.guest_log);
                return if run.guest_status == Some(0) { ExitCode::SUCCESS } else { ExitCode::FAILURE };
            }
            Err(why) => println!("demo: the Wi-Fi VM cannot run here ({why}); the backup is a veth instead\n"),
        }
    }
    let lab = match Lab::start(cfg) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("demo: the lab cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&lab) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("demo FAILED: {why}\n{}", lab.diagnostics());
            ExitCode::FAILURE
        }
    }
}

fn run(lab: &Lab) -> Result<(), String> {
    let t0 = Instant::now();
    let stamp = |what: &str| println!("{:>8.3} s  {what}", t0.elapsed().as_secs_f64());
    let e = |e: LabError| e.to_string();
    println!("lab: {} ({:?}, {:?} DHCP client), NetworkManager {}", lab.name, lab.cfg.server, lab.cfg.client, lab.nmcli(&["-v"]).map_err(e)?.trim());
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    let (backup, profile) = if lab.cfg.wifi { ("wlan0", "Office Wi-Fi") } else { ("backup0", "Backup link") };
    if lab.cfg.wifi {
        lab.add_wifi_profile(profile, backup);
        println!("backup: Wi-Fi profile '{profile}' on {backup} (mac80211_hwsim), access point '{WIFI_SSID}' (hostapd, WPA2-PSK) bridged onto the LAN");
        lab.wait_for_access_point_in_scan_list().map_err(e)?;
    } else {
        lab.add_ethernet_profile(profile, backup, false);
    }
    for line in lab.companion(&["pair", "Office LAN", profile]).lines() {
        println!("            pair: {line}");
    }
    lab.wait_until("the wired address", Duration::from_secs(30), || lab.ipv4("wired0").is_some()).map_err(e)?;
    let addr = lab.ipv4("wired0").unwrap();
    stamp(&format!("wired0 holds {addr}"));
    let monitor = NetMonitor::start(lab);
    let tcp = TcpSession::open(lab);
    tcp.wait_for_traffic(5, Duration::from_secs(5));
    stamp(&format!("TCP session {} -> {SERVER}:{TCP_PORT} exchanging data every 20 ms", tcp.report().local.unwrap()));

    let pull = Instant::now();
    stamp("cable pulled (p-wired0 down in the lan namespace)");
    lab.pull_cable();
    lab.wait_until("the backup to hold the address", Duration::from_secs(30), || lab.ipv4(backup) == Some(addr)).map_err(e)?;
    stamp(&format!("{backup} holds {addr} with MAC {} ({} ms after the pull)", lab.mac(backup), pull.elapsed().as_millis()));
    if lab.cfg.wifi {
        stamp(&format!("access point's stations: {:?}", lab.ap_stations()));
    }
    tcp.wait_for_traffic(10, Duration::from_secs(10));
    stamp(&format!("TCP: {} round trips so far, longest stall {} ms", tcp.round_trips(), tcp.report().longest_stall.as_millis()));
    tcp.reset_stall();
    std::thread::sleep(Duration::from_secs(1));

    let plug = Instant::now();
    stamp("cable plugged back");
    lab.plug_cable();
    lab.wait_until("wired0 to hold the address", Duration::from_secs(30), || lab.ipv4("wired0") == Some(addr)).map_err(e)?;
    lab.wait_until("the backup to be off the LAN", Duration::from_secs(15), || lab.ipv4(backup).is_none()).map_err(e)?;
    stamp(&format!("wired0 holds {addr}, {backup} is down ({} ms after the plug)", plug.elapsed().as_millis()));
    if lab.cfg.wifi {
        lab.wait_until("the station to leave the access point", Duration::from_secs(15), || lab.ap_stations().is_empty()).map_err(e)?;
        stamp("the station has left the access point");
    }
    tcp.wait_for_traffic(10, Duration::from_secs(10));
    let window = monitor.double_address_window(plug, addr, "wired0", backup);
    let report = tcp.close();
    stamp(&format!(
        "TCP: {} round trips, longest stall after the re-plug {} ms, error: {}",
        report.round_trips,
        report.longest_stall.as_millis(),
        report.error.as_deref().unwrap_or("none")
    ));

    println!("\naddress and link events (host namespace, from the pull):\n{}", monitor.dump(pull));
    println!("\nDHCP server log:\n{}", dhcp_lines(&lab.server_log()).join("\n"));
    println!("\nthe companion in nm-dispatcher's log:");
    for line in lab.dispatcher_log().lines().filter(|l| l.contains("nm-handover{")).take(40) {
        println!("  {line}");
    }
    println!("\nstatus:\n{}", lab.companion(&["status"]));
    println!(
        "summary: same address {addr} throughout; both links held it on the LAN for {} ms after the re-plug; \
              the TCP session {}; server conflicts: {}",
        window.map_or("?".into(), |w| w.as_millis().to_string()),
        if report.survived() { "survived" } else { "DIED" },
        lab.server_log().matches("Abandoning").count()
    );
    if !report.survived() {
        return Err("the TCP session did not survive".into());
    }
    Ok(())
}
