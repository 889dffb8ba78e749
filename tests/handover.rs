//! The companion on stock NetworkManager, in a lab of real parts: cable pull
//! and re-plug keep one IPv4 address and a live TCP session, with ISC dhcpd
//! and dnsmasq, NM's internal DHCP client and dhclient.
//!
//! Needs root (network namespaces); as non-root every test says why it skips.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::*;

/// A paired lab with the wired link up and holding its address.
struct Paired {
    lab: Lab,
    addr: Ipv4Addr,
    wired_uuid: String,
    backup_uuid: String,
}

fn paired(test: &str, server: DhcpServer, client: DhcpClient, pair_args: &[&str]) -> Option<Paired> {
    let lab = start_or_skip(test, LabConfig::new(server, client).with_companion())?;
    let wired_uuid = lab.add_ethernet_profile("Office LAN", "wired0", true);
    let backup_uuid = lab.add_ethernet_profile("Backup link", "backup0", false);
    let mut args = vec!["pair", "Office LAN", "Backup link"];
    args.extend_from_slice(pair_args);
    let said = lab.companion(&args);
    assert!(said.contains("cloned-mac-address"), "pair must say what it changed:\n{said}");
    lab.wait_until("the wired link's address", Duration::from_secs(30), || lab.ipv4("wired0").is_some())
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.diagnostics()));
    let addr = lab.ipv4("wired0").unwrap();
    Some(Paired { lab, addr, wired_uuid, backup_uuid })
}

fn nm_state(lab: &Lab, profile: &str) -> String {
    lab.nmcli(&["-g", "GENERAL.STATE", "connection", "show", profile]).unwrap_or_default().trim().to_owned()
}

/// Records a measurement for the README and the test log.
fn measured(test: &str, what: &str, value: impl std::fmt::Display) {
    let line = format!("{test}: {what}: {value}");
    println!("MEASURED {line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab-measurements.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// What the DHCP server saw from the clients, as the README reports it.
fn server_requests(lab: &Lab, since_line: usize) -> Vec<String> {
    lab.server_log()
        .lines()
        .skip(since_line)
        .filter(|l| l.contains("DHCPDISCOVER") || l.contains("DHCPREQUEST") || l.contains("DHCPACK") || l.contains("DHCPOFFER") || l.contains("DHCPNAK") || l.contains("Abandoning"))
        .map(str::to_owned)
        .collect()
}

fn keyfile_bytes(lab: &Lab) -> Vec<(String, Vec<u8>)> {
    let dir = lab.nm_conf_dir().join("system-connections");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

/// Pull, then re-plug; asserts the address, the TCP session, the server's
/// view and that no profile on disk was rewritten. Returns the re-plug's
/// double-address window.
fn pull_and_replug(test: &str, p: &Paired) -> Duration {
    let lab = &p.lab;
    let diag = |what: &str| format!("{test}: {what}\n{}", lab.diagnostics());
    let profiles_before = keyfile_bytes(lab);
    let backup_mac = lab.mac("backup0");
    let wired_mac = lab.mac("wired0");
    let monitor = NetMonitor::start(lab);
    let tcp = TcpSession::open(lab);
    assert!(tcp.wait_for_traffic(5, Duration::from_secs(5)), "{}", diag("no TCP traffic before the pull"));
    assert_eq!(tcp.report().local.map(|a| *a.ip()), Some(p.addr));

    let log_mark = lab.server_log().lines().count();
    let pull = Instant::now();
    lab.pull_cable();
    lab.wait_until("the backup to hold the wired address", Duration::from_secs(20), || lab.ipv4("backup0") == Some(p.addr))
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    let took = monitor.address_added_at(pull, "backup0", p.addr).map_or(pull.elapsed(), |t| t - pull);
    measured(test, "pull -> backup holds the same address", ms(took));
    assert_eq!(lab.mac("backup0"), wired_mac, "{}", diag("the backup must use the wired MAC"));
    assert!(tcp.wait_for_traffic(10, Duration::from_secs(10)), "{}", diag(&format!("TCP after the pull: {:?}", tcp.report())));
    measured(test, "pull: longest TCP stall", ms(tcp.report().longest_stall));
    measured(test, "pull: DHCP messages at the server", server_requests(lab, log_mark).join(" | "));
    tcp.reset_stall();

    let log_mark = lab.server_log().lines().count();
    let plug = Instant::now();
    lab.plug_cable();
    lab.wait_until("the wired link to hold the address again", Duration::from_secs(30), || lab.ipv4("wired0") == Some(p.addr))
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    let wired_back = monitor.address_added_at(plug, "wired0", p.addr).map_or(plug.elapsed(), |t| t - plug);
    lab.wait_until("the backup profile to be deactivated", Duration::from_secs(15), || {
        nm_state(lab, "Backup link").is_empty() && lab.ipv4("backup0").is_none()
    })
    .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    lab.wait_until("the backup's own MAC to return", Duration::from_secs(5), || lab.mac("backup0") == backup_mac)
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    let window = monitor.double_address_window(plug, p.addr, "wired0", "backup0").expect("wired address event");
    measured(test, "re-plug -> wired holds the address", ms(wired_back));
    measured(test, "re-plug: both links held the address on the LAN", ms(window));
    measured(test, "re-plug: DHCP messages at the server", server_requests(lab, log_mark).join(" | "));
    assert!(tcp.wait_for_traffic(10, Duration::from_secs(10)), "{}", diag(&format!("TCP after the re-plug: {:?}", tcp.report())));
    let report = tcp.close();
    measured(test, "re-plug: longest TCP stall", ms(report.longest_stall));
    assert!(report.survived(), "{}", diag(&format!("the TCP session must survive: {report:?}")));
    assert!(!lab.server_log().contains("Abandoning IP address"), "{}", diag("the server abandoned the address"));
    assert_eq!(keyfile_bytes(lab), profiles_before, "{}", diag("a profile on disk was rewritten by a handover"));
    assert_eq!(nm_state(lab, "Office LAN"), "activated");
    window
}

fn pull_replug_case(test: &str, server: DhcpServer, client: DhcpClient) {
    let Some(p) = paired(test, server, client, &[]) else { return };
    pull_and_replug(test, &p);
    // And once more: the second cycle starts from a handed-back state.
    pull_and_replug(&format!("{test} (second cycle)"), &p);
}

#[test]
fn pull_and_replug_isc_dhcpd_internal_client() {
    pull_replug_case("isc-dhcpd/internal", DhcpServer::IscDhcpd, DhcpClient::Internal);
}

#[test]
fn pull_and_replug_isc_dhcpd_dhclient() {
    pull_replug_case("isc-dhcpd/dhclient", DhcpServer::IscDhcpd, DhcpClient::Dhclient);
}

#[test]
fn pull_and_replug_dnsmasq_internal_client() {
    pull_replug_case("dnsmasq/internal", DhcpServer::Dnsmasq, DhcpClient::Internal);
}

#[test]
fn pull_and_replug_dnsmasq_dhclient() {
    pull_replug_case("dnsmasq/dhclient", DhcpServer::Dnsmasq, DhcpClient::Dhclient);
}

/// The wired link's lease file is missing (or stale) and the server's lease
/// was released while the backup held the address. Without the carried
/// lease the returning wired client would DISCOVER, dhcpd would ping the
/// address, the still-present backup would answer and the address would be
/// abandoned. Returns whether the server abandoned it and the final address.
fn released_lease_case(test: &str, server: DhcpServer, client: DhcpClient, pair_args: &[&str]) -> Option<(bool, Option<Ipv4Addr>, Ipv4Addr)> {
    let p = paired(test, server, client, pair_args)?;
    let lab = &p.lab;
    let diag = |what: &str| format!("{test}: {what}\n{}", lab.diagnostics());
    let wired_mac = lab.mac("wired0");
    // The wired link's own lease file goes missing: only a carried lease can help.
    for entry in std::fs::read_dir(lab.nm_state_dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".lease") && name.contains(&p.wired_uuid) {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    lab.pull_cable();
    lab.wait_until("the backup to hold the address", Duration::from_secs(20), || lab.ipv4("backup0") == Some(p.addr))
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    lab.wait_until("the backup profile to be activated", Duration::from_secs(20), || nm_state(lab, "Backup link") == "activated")
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    // Let the companion's `up` handling finish before the server forgets the lease.
    std::thread::sleep(Duration::from_millis(500));
    release_lease_at_server(lab, p.addr, &wired_mac, client == DhcpClient::Internal);
    lab.wait_until("the server to record the release", Duration::from_secs(5), || lab.server_log().contains("DHCPRELEASE"))
        .unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    // dhcpd skips its ping check within `ping-cltt-secs` (1 s in the lab) of
    // the client's last transaction, and the release is one: let it age.
    std::thread::sleep(Duration::from_secs(2));
    let log_mark = lab.server_log().lines().count();
    lab.plug_cable();
    let got = lab.wait_until("the wired link to get an address", Duration::from_secs(40), || lab.ipv4("wired0").is_some());
    got.unwrap_or_else(|e| panic!("{}", diag(&e.to_string())));
    // Give a late abandonment the time to show in the log.
    std::thread::sleep(Duration::from_millis(1500));
    let abandoned = lab.server_log().contains("Abandoning IP address");
    measured(test, "released lease: DHCP messages at the server after the re-plug", server_requests(lab, log_mark).join(" | "));
    let _ = p.backup_uuid;
    Some((abandoned, lab.ipv4("wired0"), p.addr))
}

#[test]
fn released_lease_is_carried_back_isc_dhcpd_internal_client() {
    let Some((abandoned, now, before)) = released_lease_case("released/isc-dhcpd/internal", DhcpServer::IscDhcpd, DhcpClient::Internal, &[]) else { return };
    assert!(!abandoned, "dhcpd abandoned the address");
    assert_eq!(now, Some(before));
}

#[test]
fn released_lease_is_carried_back_isc_dhcpd_dhclient() {
    let Some((abandoned, now, before)) = released_lease_case("released/isc-dhcpd/dhclient", DhcpServer::IscDhcpd, DhcpClient::Dhclient, &[]) else { return };
    assert!(!abandoned, "dhcpd abandoned the address");
    assert_eq!(now, Some(before));
}

#[test]
fn released_lease_is_carried_back_dnsmasq_internal_client() {
    let Some((_, now, before)) = released_lease_case("released/dnsmasq/internal", DhcpServer::Dnsmasq, DhcpClient::Internal, &[]) else { return };
    assert_eq!(now, Some(before));
}

#[test]
fn released_lease_is_carried_back_dnsmasq_dhclient() {
    let Some((_, now, before)) = released_lease_case("released/dnsmasq/dhclient", DhcpServer::Dnsmasq, DhcpClient::Dhclient, &[]) else { return };
    assert_eq!(now, Some(before));
}

/// The control for the case above: the same events with lease carrying off
/// make dhcpd abandon the address, so the test above can fail.
#[test]
fn control_released_lease_without_carrying_is_abandoned() {
    let test = "control: released/isc-dhcpd/internal, --no-lease-carry";
    let Some((abandoned, now, before)) = released_lease_case(test, DhcpServer::IscDhcpd, DhcpClient::Internal, &["--no-lease-carry"]) else { return };
    assert!(abandoned, "without the carried lease dhcpd should have pinged and abandoned {before}");
    assert_ne!(now, Some(before));
}

/// The control without the companion: the backup has its own MAC and
/// address, the pull leaves the TCP session without a path.
#[test]
fn control_without_companion_loses_address_and_session() {
    let test = "control: no companion";
    let Some(lab) = start_or_skip(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal)) else { return };
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.add_ethernet_profile("Backup link", "backup0", true);
    lab.wait_until("both links' addresses", Duration::from_secs(30), || lab.ipv4("wired0").is_some() && lab.ipv4("backup0").is_some())
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.diagnostics()));
    let addr = lab.ipv4("wired0").unwrap();
    let tcp = TcpSession::open(&lab);
    assert!(tcp.wait_for_traffic(5, Duration::from_secs(5)));
    lab.pull_cable();
    lab.wait_until("NM to drop the wired address", Duration::from_secs(20), || lab.ipv4("wired0").is_none())
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.diagnostics()));
    let progressed = tcp.wait_for_traffic(1, Duration::from_secs(8));
    let report = tcp.close();
    measured(test, "after the pull the backup has", format!("{:?} (the wired link had {addr})", lab.ipv4("backup0")));
    assert_ne!(lab.ipv4("backup0"), Some(addr));
    assert!(!progressed, "without the companion the session should have no path after the pull: {report:?}");
}

#[test]
fn boot_with_cable_out_brings_up_the_backup() {
    let test = "boot with the cable out";
    let Some(mut p) = paired(test, DhcpServer::IscDhcpd, DhcpClient::Internal, &[]) else { return };
    p.lab.reboot_nm(|lab| lab.pull_cable());
    let lab = &p.lab;
    let took = lab
        .wait_until("the backup to come up with the wired address", Duration::from_secs(30), || lab.ipv4("backup0") == Some(p.addr))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.diagnostics()));
    measured(test, "NM start -> backup holds the address", ms(took));
    assert!(lab.ipv4("wired0").is_none());
}

#[test]
fn boot_with_cable_in_brings_up_only_the_wired_link() {
    let test = "boot with the cable in";
    let Some(mut p) = paired(test, DhcpServer::IscDhcpd, DhcpClient::Internal, &[]) else { return };
    p.lab.reboot_nm(|_| {});
    let lab = &p.lab;
    lab.wait_until("the wired address", Duration::from_secs(30), || lab.ipv4("wired0") == Some(p.addr))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.diagnostics()));
    // NM's start-up events (hostname, connectivity-change) have run the companion by now; give it time to misbehave.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.ipv4("backup0"), None, "{}", lab.diagnostics());
    assert_eq!(nm_state(lab, "Backup link"), "");
}

#[test]
fn pair_then_unpair_restores_the_profiles() {
    let test = "pair/unpair";
    let Some(lab) = start_or_skip(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_companion()) else { return };
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.add_ethernet_profile("Backup link", "backup0", true);
    let show = |name: &str| lab.nmcli(&["-g", "802-3-ethernet.cloned-mac-address,ipv4.dhcp-client-id,connection.autoconnect", "connection", "show", name]).unwrap().replace('\\', "");
    let before = (show("Office LAN"), show("Backup link"));
    let said = lab.companion(&["pair", "Office LAN", "Backup link"]);
    let wired_mac = lab.mac("wired0");
    let backup = show("Backup link");
    assert!(backup.to_lowercase().contains(&wired_mac.to_lowercase()), "cloned MAC not set: {backup}\n{said}");
    assert!(backup.lines().last() == Some("no"), "autoconnect not switched off: {backup}");
    let conf_dir = lab.nm_conf_dir().join("conf.d");
    assert_eq!(std::fs::read_dir(&conf_dir).unwrap().count(), 1, "the carrier-wait snippet");
    let status = lab.companion(&["status"]);
    assert!(status.contains("stock") && status.contains("Office LAN") && status.contains("Backup link"), "{status}");
    let said_unpair = lab.companion(&["unpair", "Backup link"]);
    assert_eq!((show("Office LAN"), show("Backup link")), before, "unpair must restore both profiles\n{said_unpair}");
    assert_eq!(std::fs::read_dir(&conf_dir).unwrap().count(), 0, "unpair must remove the snippet");
    assert!(lab.companion(&["status"]).contains("no pairs"));
}
