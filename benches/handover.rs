//! Handover benchmark: latency, TCP continuity, DHCP traffic and conflicts
//! per configuration, in the real-NM lab, against baselines measured in the
//! same run; and the cost of one dispatcher invocation.
//!
//! `cargo bench --bench handover` (as root). Environment:
//!   NM_HANDOVER_BENCH_CYCLES   pull/re-plug cycles per row (default 20; 2 handovers each)
//!   NM_HANDOVER_BENCH_RUNS     dispatcher invocations per cost row (default 1000, interleaved)
//!   NM_HANDOVER_BENCH_ROWS     comma-separated row keys to run (default: all)
//!   NM_HANDOVER_BENCH_OUT      results file (default: bench-results/handover.md)
//! Prints one markdown report and writes it to the results file. The `wifi-*`
//! rows run on real 802.11 in the Wi-Fi VM (`tests/support/vm.rs`): this
//! binary boots it and runs those rows again inside, under TCG.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// `patched`: the version built by nm-patch/build, or none for Debian's stock NM.
    Companion {
        client: DhcpClient,
        patched: Option<&'static str>,
    },
    NoCompanion,
    SeedLike,
    Bonding,
}

struct RowSpec {
    key: &'static str,
    name: &'static str,
    setup: Setup,
    /// The backup is a real Wi-Fi station (the VM), not the backup veth.
    wifi: bool,
    /// A carrier-wait snippet for the wired device (what `pair` writes), for
    /// rows without the companion.
    carrier_wait_ms: Option<u32>,
    /// Stock NetworkManager of this version, built unpatched by nm-patch/build
    /// (the stock row beside a patched one of the same version).
    unpatched_build: Option<&'static str>,
    /// `ipv4.dad-timeout` set on both paired profiles (NM's default: 0 ms
    /// on 1.42, 200 ms on 1.58), to measure what address conflict
    /// detection adds to a handover.
    dad_timeout_ms: Option<u32>,
    /// `pair --standby`: the warm standby.
    standby: bool,
}

const fn row(key: &'static str, name: &'static str, setup: Setup) -> RowSpec {
    RowSpec { key, name, setup, wifi: false, carrier_wait_ms: None, unpatched_build: None, dad_timeout_ms: None, standby: false }
}

const INTERNAL: DhcpClient = DhcpClient::Internal;

const ROWS: &[RowSpec] = &[
    row("stock-internal", "nm-handover, stock NM (internal DHCP)", Setup::Companion { client: INTERNAL, patched: None }),
    row("stock-dhclient", "nm-handover, stock NM (dhclient)", Setup::Companion { client: DhcpClient::Dhclient, patched: None }),
    RowSpec {
        unpatched_build: Some("1.58.1"),
        ..row("stock-1.58", "nm-handover, stock NM built from Debian's source (internal DHCP)", Setup::Companion { client: INTERNAL, patched: None })
    },
    row("patched", "nm-handover, patched NM (link-up)", Setup::Companion { client: INTERNAL, patched: Some("1.58.1") }),
    row("patched-1.42", "nm-handover, patched NM backport (link-up)", Setup::Companion { client: INTERNAL, patched: Some("1.42.4") }),
    RowSpec {
        dad_timeout_ms: Some(200),
        ..row(
            "stock-internal-dad200",
            "nm-handover, stock NM (internal DHCP), ipv4.dad-timeout 200 on both profiles (1.58's default)",
            Setup::Companion { client: INTERNAL, patched: None },
        )
    },
    RowSpec {
        unpatched_build: Some("1.58.1"),
        dad_timeout_ms: Some(0),
        ..row(
            "stock-1.58-dad0",
            "nm-handover, stock NM built from Debian's source (internal DHCP), ipv4.dad-timeout 0 on both profiles (1.42's default)",
            Setup::Companion { client: INTERNAL, patched: None },
        )
    },
    RowSpec {
        dad_timeout_ms: Some(0),
        ..row(
            "patched-dad0",
            "nm-handover, patched NM (link-up), ipv4.dad-timeout 0 on both profiles",
            Setup::Companion { client: INTERNAL, patched: Some("1.58.1") },
        )
    },
    row("seed-like", "baseline: seed-like shell script (stock NM)", Setup::SeedLike),
    RowSpec { carrier_wait_ms: Some(300), ..row("seed-like-300", "baseline: seed-like shell script, carrier-wait 300 ms (stock NM)", Setup::SeedLike) },
    row("none", "baseline: no companion, both autoconnect", Setup::NoCompanion),
    row("bonding", "baseline: kernel bond active-backup (no DHCP)", Setup::Bonding),
    RowSpec { wifi: true, ..row("wifi-stock", "Wi-Fi: nm-handover, stock NM (internal DHCP)", Setup::Companion { client: INTERNAL, patched: None }) },
    RowSpec {
        wifi: true,
        ..row("wifi-patched-1.42", "Wi-Fi: nm-handover, patched NM backport (link-up)", Setup::Companion { client: INTERNAL, patched: Some("1.42.4") })
    },
    RowSpec {
        wifi: true,
        unpatched_build: Some("1.58.1"),
        ..row(
            "wifi-stock-1.58",
            "Wi-Fi: nm-handover, stock NM built from Debian's source (internal DHCP)",
            Setup::Companion { client: INTERNAL, patched: None },
        )
    },
    RowSpec {
        wifi: true,
        ..row("wifi-patched-1.58", "Wi-Fi: nm-handover, patched NM (link-up)", Setup::Companion { client: INTERNAL, patched: Some("1.58.1") })
    },
    RowSpec {
        wifi: true,
        ..row("wifi-bond", "Wi-Fi anchor: NetworkManager bond, active-backup, the Wi-Fi a port (the recipe users are pointed to)", Setup::Bonding)
    },
    RowSpec {
        wifi: true,
        carrier_wait_ms: Some(300),
        ..row("wifi-seed-like", "Wi-Fi baseline: seed-like shell script, carrier-wait 300 ms (stock NM)", Setup::SeedLike)
    },
    RowSpec { wifi: true, ..row("wifi-none", "Wi-Fi baseline: stock NM alone, both profiles autoconnect (6 s carrier-wait)", Setup::NoCompanion) },
    RowSpec {
        wifi: true,
        standby: true,
        ..row("wifi-standby", "Wi-Fi: nm-handover with the warm standby (pair --standby), stock NM", Setup::Companion { client: INTERNAL, patched: None })
    },
    RowSpec {
        wifi: true,
        standby: true,
        ..row(
            "wifi-standby-patched-1.42",
            "Wi-Fi: nm-handover with the warm standby (pair --standby), patched NM backport (link-up)",
            Setup::Companion { client: INTERNAL, patched: Some("1.42.4") },
        )
    },
];

/// The row every other row is divided by: the seed-like script with the
/// carrier-wait `pair` sets, so a ratio shows what the companion adds; on
/// Wi-Fi, the same on Wi-Fi.
/// The seed-like row a row's ratios divide by: only a row of the same
/// condition (NetworkManager build, DHCP client, conflict probe, kind of
/// link) has one; the seed-like script runs on stock packaged NM with the
/// internal client, so the dhclient, 1.58, patched and dad rows get none.
fn baseline_of(spec: &RowSpec) -> Option<&'static str> {
    let same_condition = match spec.setup {
        Setup::Companion { client, patched } => client == INTERNAL && patched.is_none() && !spec.standby,
        Setup::SeedLike | Setup::NoCompanion => true,
        Setup::Bonding => false,
    } && spec.unpatched_build.is_none()
        && spec.dad_timeout_ms.is_none();
    same_condition.then_some(if spec.wifi { "wifi-seed-like" } else { "seed-like-300" })
}

#[derive(Default, Debug)]
struct Samples {
    pull_ms: Vec<f64>,
    replug_ms: Vec<f64>,
    ip_changed: u32,
    resets: u32,
    /// The longest TCP stall of each pull, and of each re-plug.
    stall_pull_ms: Vec<f64>,
    stall_replug_ms: Vec<f64>,
    /// Handovers after which the session carried no traffic within the
    /// bench's wait: their stall is longer than the wait, not measured.
    stall_pull_censored: usize,
    stall_replug_censored: usize,
    /// How long the bench waits for traffic after a handover.
    traffic_wait: Duration,
    /// The longest gap of the 100 Hz probe at each pull and each re-plug.
    outage_pull_ms: Vec<f64>,
    outage_replug_ms: Vec<f64>,
    dhcp_per_handover: Vec<f64>,
    /// How often the shared MAC moved between bridge ports while docked
    /// (from a second after each re-plug settled to the next pull; the first
    /// period from the setup on), per period. Wi-Fi rows only.
    mac_moves_docked: Vec<f64>,
    /// At each re-plug, the wired link's own time from its carrier to its
    /// address (rtnetlink events): NetworkManager's activation and DHCP
    /// exchange, which a re-plug cannot beat while the wired link must wait
    /// for its DHCP before it uses the address.
    wired_floor_ms: Vec<f64>,
    conflicts: u32,
    window_ms: Vec<f64>,
    handovers: u32,
    notes: Vec<String>,
    /// `NetworkManager --version` of the daemon that ran.
    nm_version: String,
}

/// (median, p95, max) of the samples, by nearest rank.
fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Some((rank(0.5), rank(0.95), s[s.len() - 1]))
}

fn fmt_stats(v: &[f64]) -> String {
    match (stats(v), two_modes(v)) {
        (Some((m, p, x)), Some((lower, upper))) => format!("{m:.0} / {p:.0} / {x:.0} (two modes: {})", fmt_split(&lower, &upper)),
        (Some((m, p, x)), None) => format!("{m:.0} / {p:.0} / {x:.0}"),
        (None, _) => "n/a".into(),
    }
}

/// The stalls of a row: those with traffic after them as `fmt_stats`, and
/// how many saw none within the bench's wait (their stall is longer).
fn fmt_stalls(v: &[f64], censored: usize, wait: Duration) -> String {
    let total = v.len() + censored;
    match censored {
        0 => fmt_stats(v),
        _ if v.is_empty() => format!("> {} ({censored} of {censored}: no traffic within the bench's wait)", wait.as_millis()),
        // The median falls among the stalls beyond the wait: it is "> wait".
        _ if censored * 2 >= total => {
            format!("median > {}: {censored} of {total} without traffic within the bench's wait; the others {}", wait.as_millis(), fmt_stats(v))
        }
        _ => format!("{}; {censored} more > {} (no traffic within the bench's wait)", fmt_stats(v), wait.as_millis()),
    }
}

fn client_messages(log: &str) -> usize {
    log.lines().filter(|l| ["DHCPDISCOVER", "DHCPREQUEST", "DHCPRELEASE", "DHCPDECLINE", "DHCPINFORM"].iter().any(|m| l.contains(m))).count()
}

fn lab_config(spec: &RowSpec) -> Result<LabConfig, String> {
    let mut cfg = match spec.setup {
        Setup::Companion { client, patched: Some(version) } => LabConfig::patched_version(DhcpServer::IscDhcpd, client, version)?.with_companion(),
        Setup::Companion { client, patched: None } => match spec.unpatched_build {
            Some(version) => LabConfig::built(DhcpServer::IscDhcpd, client, version, false)?.with_companion(),
            None => LabConfig::new(DhcpServer::IscDhcpd, client).with_companion(),
        },
        Setup::NoCompanion => LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal),
        Setup::SeedLike => {
            let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal);
            let mut script = include_str!("seed-like.sh").to_owned();
            if spec.wifi {
                script = script.replace("Backup link", "Office Wi-Fi").replace("802-3-ethernet", "802-11-wireless").replace("backup0", "wlan0");
            }
            cfg.scripts.push(("90-seed-like".into(), script));
            cfg
        }
        // The recipe users are pointed to: NetworkManager's own bond, the Wi-Fi a port.
        Setup::Bonding if spec.wifi => LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal),
        Setup::Bonding => {
            let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal);
            cfg.extra_nm_conf = "[keyfile]\nunmanaged-devices=interface-name:wired0;interface-name:backup0;interface-name:bond0\n".into();
            cfg.nm_manages_links = false;
            cfg
        }
    };
    if let Some(ms) = spec.carrier_wait_ms {
        cfg.extra_nm_conf.push_str(&format!("[device-wired0]\nmatch-device=interface-name:wired0\ncarrier-wait-timeout={ms}\n"));
    }
    Ok(if spec.wifi { cfg.with_wifi() } else { cfg })
}

fn ip(lab: &Lab, args: &[&str]) -> Result<(), String> {
    let mut argv = vec!["ip", "-n", lab.host.as_str()];
    argv.extend_from_slice(args);
    let out = Command::new(argv[0]).args(&argv[1..]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("`{}`: {}", argv.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Brings the lab to "wired holds the address" for the setup; returns that address.
/// The standby `pair --standby` keeps up (see `src/standby.rs`).
const STANDBY: &str = "Office Wi-Fi (nm-handover standby)";

fn prepare(lab: &Lab, setup: Setup, standby: bool) -> Result<Ipv4Addr, String> {
    let e = |e: LabError| e.to_string();
    match setup {
        Setup::Bonding if lab.cfg.wifi => wifi_bond(lab).map_err(e),
        Setup::Bonding => {
            ip(lab, &["link", "add", "bond0", "type", "bond", "mode", "active-backup", "miimon", "10"])
                .map_err(|e| format!("this kernel cannot make a bond (no CONFIG_BONDING?): {e}"))?;
            for port in ["wired0", "backup0"] {
                ip(lab, &["link", "set", port, "down"])?;
                ip(lab, &["link", "set", port, "master", "bond0"])?;
            }
            ip(lab, &["link", "set", "bond0", "type", "bond", "primary", "wired0"])?;
            ip(lab, &["link", "set", "bond0", "up"])?;
            ip(lab, &["addr", "add", "198.18.0.50/24", "dev", "bond0"])?;
            lab.wait_until("the bond to reach the server", Duration::from_secs(10), || {
                Command::new("ip")
                    .args(["netns", "exec", &lab.host, "ping", "-c1", "-W1", "198.18.0.1"])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .map_err(e)?;
            Ok(Ipv4Addr::new(198, 18, 0, 50))
        }
        _ => {
            let companion = matches!(setup, Setup::Companion { .. });
            lab.add_ethernet_profile("Office LAN", "wired0", true);
            let (backup, profile) = backup_of(lab);
            if lab.cfg.wifi {
                lab.add_wifi_profile(profile, backup);
                if setup == Setup::NoCompanion {
                    lab.nmcli(&["connection", "modify", profile, "connection.autoconnect", "yes"]).map_err(e)?;
                }
                lab.wait_for_access_point_in_scan_list().map_err(e)?;
            } else {
                lab.add_ethernet_profile(profile, backup, setup == Setup::NoCompanion);
            }
            if companion {
                let mut args = vec!["pair", "Office LAN", profile];
                if standby {
                    args.push("--standby");
                }
                // (Its log, and the supervisor's it starts, kept with the lab's.)
                lab.companion_logging_to("dispatcher.log", &args);
            }
            lab.wait_until("the wired address", Duration::from_secs(30), || lab.ipv4("wired0").is_some()).map_err(e)?;
            if setup == Setup::NoCompanion {
                lab.wait_until("the backup's own address", Duration::from_secs(60), || lab.ipv4(backup).is_some()).map_err(e)?;
            }
            Ok(lab.ipv4("wired0").unwrap())
        }
    }
}

/// The backup's interface and profile name in this lab.
fn backup_of(lab: &Lab) -> (&'static str, &'static str) {
    if lab.cfg.wifi {
        ("wlan0", "Office Wi-Fi")
    } else {
        ("backup0", "Backup link")
    }
}

fn nm_state(lab: &Lab, profile: &str) -> String {
    lab.nmcli(&["-g", "GENERAL.STATE", "connection", "show", profile]).unwrap_or_default().trim().to_owned()
}

fn run_row(spec: &RowSpec, cycles: usize) -> Result<Samples, String> {
    let cfg = lab_config(spec)?;
    let nm_version = nm_version(&cfg.nm_daemon);
    let lab = Lab::start(cfg).map_err(|e| e.to_string())?;
    let mut addr = prepare(&lab, spec.setup, spec.standby)?;
    if let Some(timeout) = spec.dad_timeout_ms {
        let (_, backup_profile) = backup_of(&lab);
        for profile in ["Office LAN", backup_profile] {
            lab.nmcli(&["connection", "modify", profile, "ipv4.dad-timeout", &timeout.to_string()]).map_err(|e| e.to_string())?;
        }
        // Applied from the next activation on.
        lab.nmcli(&["connection", "up", "Office LAN"]).map_err(|e| e.to_string())?;
        lab.wait_until("the wired address", Duration::from_secs(30), || lab.ipv4("wired0").is_some()).map_err(|e| e.to_string())?;
        addr = lab.ipv4("wired0").unwrap();
    }
    let bond = spec.setup == Setup::Bonding;
    let (backup, backup_profile) = backup_of(&lab);
    let holder = if bond { "bond0" } else { backup };
    let mut s = Samples { nm_version, ..Samples::default() };
    let monitor = NetMonitor::start(&lab);
    // On the veth rows both links' bridge ports are captured: the wired
    // link's DHCP packets, and every frame the backup sends from the shared MAC.
    let wired_mac = lab.mac("wired0");
    let captures = (!bond && !spec.wifi && spec.setup != Setup::NoCompanion)
        .then(|| (Capture::start(&lab, "p-wired0"), Capture::frames_from(&lab, &format!("p-{backup}"), &wired_mac)));
    let mut tcp = TcpSession::open(&lab);
    tcp.wait_for_traffic(5, Duration::from_secs(5));
    let probe = Probe::start(&lab);
    // The probe's outage of a handover: from its start until traffic is back.
    let outage = |s: &mut Samples, from: SystemTime, what: &str, cycle: usize| match probe.longest_gap(from, SystemTime::now()) {
        Some(gap) => (if what == "pull" { &mut s.outage_pull_ms } else { &mut s.outage_replug_ms }).push(millis(gap)),
        None => s.notes.push(format!("cycle {cycle}: the 100 Hz probe had no reply before the {what} or none again by the bench's wait (not measured)")),
    };
    let traffic_wait = if spec.setup == Setup::NoCompanion { Duration::from_secs(3) } else { Duration::from_secs(10) };
    s.traffic_wait = traffic_wait;
    let fdb = spec.wifi.then(|| FdbMonitor::start(&lab));
    let mut docked_since = fdb.as_ref().map(|f| f.mark());
    for cycle in 0..cycles {
        if spec.standby {
            let ready = lab.wait_until("the warm standby associated and silent", Duration::from_secs(60), || {
                nm_state(&lab, STANDBY) == "activated" && lab.ipv4(backup).is_none()
            });
            if ready.is_err() {
                s.notes.push(format!("cycle {cycle}: the warm standby was not up and silent 60 s before the pull"));
            }
        }
        if let (Some(fdb), Some(since)) = (&fdb, docked_since.take()) {
            s.mac_moves_docked.push(fdb.moves(&wired_mac, since, fdb.mark()) as f64);
        }
        // Pull.
        let mark = lab.server_log().len();
        tcp.reset_stall();
        let pull = Instant::now();
        let pull_wall = SystemTime::now();
        lab.pull_cable();
        if !bond {
            let got = lab.wait_until("the backup's address", Duration::from_secs(20), || match spec.setup {
                Setup::NoCompanion => lab.ipv4("wired0").is_none(),
                _ => lab.ipv4(backup) == Some(addr),
            });
            if got.is_err() {
                s.notes.push(format!("cycle {cycle}: no backup address 20 s after the pull"));
            }
            // What the host holds now decides "IP changed"; the monitor only times it.
            let holds = if spec.setup == Setup::NoCompanion { lab.ipv4(backup) } else { lab.ipv4(backup).filter(|a| *a == addr) };
            if holds != Some(addr) {
                s.ip_changed += 1;
                // Without the companion a new address is the expected outcome, not news.
                if spec.setup != Setup::NoCompanion {
                    s.notes.push(format!("cycle {cycle}: after the pull the backup held {holds:?}, not {addr} (wired {:?})", lab.ipv4("wired0")));
                }
            } else if let Some(t) = monitor.address_added_at(pull, backup, addr) {
                s.pull_ms.push(millis(t - pull));
            } else {
                s.notes.push(format!("cycle {cycle}: the backup held {addr} but its address event was not seen (not timed)"));
            }
        }
        let alive = tcp.wait_for_traffic(5, traffic_wait);
        if alive {
            s.stall_pull_ms.push(millis(tcp.report().longest_stall));
        } else {
            s.stall_pull_censored += 1;
        }
        if !alive && tcp.report().error.is_some() {
            s.resets += 1;
            tcp = TcpSession::open(&lab);
        }
        std::thread::sleep(Duration::from_millis(300));
        outage(&mut s, pull_wall, "pull", cycle);

        // Re-plug.
        tcp.reset_stall();
        let plug = Instant::now();
        let plug_wall = SystemTime::now();
        lab.plug_cable();
        if !bond {
            let settled = lab.wait_until("the wired link back, the backup off the LAN", Duration::from_secs(30), || {
                lab.ipv4("wired0") == Some(addr) && (spec.setup == Setup::NoCompanion || lab.ipv4(holder) != Some(addr))
            });
            if settled.is_err() {
                s.notes.push(format!("cycle {cycle}: not settled 30 s after the plug (wired {:?})", lab.ipv4("wired0")));
            }
            let wired_at = monitor.address_added_at(plug, "wired0", addr);
            if let (Some(carrier), Some(address)) = (monitor.carrier_up_at(plug, "wired0"), wired_at) {
                s.wired_floor_ms.push(millis(address.saturating_duration_since(carrier)));
            }
            let backup_off = monitor.backup_off_at(plug, addr, backup);
            match (wired_at, backup_off, spec.setup) {
                (Some(w), _, Setup::NoCompanion) => s.replug_ms.push(millis(w - plug)),
                (Some(w), Some(b), _) => s.replug_ms.push(millis(w.max(b) - plug)),
                _ => {}
            }
            if let Some(other) = lab.ipv4("wired0").filter(|a| *a != addr) {
                s.ip_changed += 1;
                s.notes.push(format!("cycle {cycle}: after the re-plug the wired link held {other}, not {addr}"));
            }
            match &captures {
                // The backup's last frame from the shared MAC (up to a second
                // after) minus the wired client's first DHCP packet, signed:
                // > 0 when the backup was still on the LAN while the wired
                // client spoke, when a server's ping could be answered.
                Some((dhcp, backup_frames)) => {
                    let mut first = None;
                    let _ = lab.wait_until("the wired link's first DHCP packet", Duration::from_secs(2), || {
                        first = dhcp.first_dhcp_from(&wired_mac, plug_wall).map(|(t, _)| t);
                        first.is_some()
                    });
                    match first {
                        // The backup carried the TCP session from the pull on: a
                        // capture without a frame from it since is broken, and the
                        // race is not measured rather than counted as won.
                        Some(first) => match backup_frames.last_from_between(&wired_mac, pull_wall, first + Duration::from_secs(1)) {
                            Some(last) => s.window_ms.push((epoch_secs(last) - epoch_secs(first)) * 1000.0),
                            None => s
                                .notes
                                .push(format!("cycle {cycle}: the backup's port capture saw no frame from {wired_mac} since the pull (overlap not measured)")),
                        },
                        None => s.notes.push(format!("cycle {cycle}: no wired DHCP packet captured after the plug (overlap not measured)")),
                    }
                }
                None if spec.setup != Setup::NoCompanion => {
                    if let Some(w) = monitor.double_address_window(plug, addr, "wired0", backup) {
                        s.window_ms.push(millis(w));
                    }
                }
                None => {}
            }
        }
        let alive = tcp.wait_for_traffic(5, traffic_wait);
        if alive {
            s.stall_replug_ms.push(millis(tcp.report().longest_stall));
        } else {
            s.stall_replug_censored += 1;
        }
        if !alive && tcp.report().error.is_some() {
            s.resets += 1;
            tcp = TcpSession::open(&lab);
        }
        std::thread::sleep(Duration::from_millis(300));
        outage(&mut s, plug_wall, "re-plug", cycle);
        std::thread::sleep(Duration::from_millis(700));
        docked_since = fdb.as_ref().map(|f| f.mark());
        let log = lab.server_log();
        let since = &log[mark.min(log.len())..];
        s.dhcp_per_handover.push(client_messages(since) as f64 / 2.0);
        s.conflicts += since.matches("Abandoning IP address").count() as u32;
        s.handovers += 2;
        // Settle before the next cycle: the backup profile fully down.
        if matches!(spec.setup, Setup::Companion { .. } | Setup::SeedLike) {
            let _ = lab.wait_until("the backup profile down", Duration::from_secs(10), || nm_state(&lab, backup_profile).is_empty());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let report = tcp.close();
    if report.error.is_some() {
        s.resets += 1;
    }
    Ok(s)
}

/// Wall time of running `argv` with `env`, `runs` times.
fn invocation_times(argv: &[&str], env: &[(&str, String)], runs: usize) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let status = event_command(argv, env).status().expect("spawn");
            assert!(status.success(), "{argv:?} failed: {status}");
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

fn event_command(argv: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Peak RSS in KiB of `argv` itself. A child's `ru_maxrss` starts from the
/// high-water mark of the process it was forked from (this benchmark: tens
/// of MiB), so it is taken through GNU time, a small spawner, whose own
/// floor is reported as its own row (`/bin/true`).
fn peak_rss_kib(argv: &[&str], env: &[(&str, String)]) -> Option<u64> {
    let mut full = vec!["/usr/bin/time", "-f", "%M"];
    full.extend_from_slice(argv);
    let out = event_command(&full, env).stderr(Stdio::piped()).output().ok()?;
    String::from_utf8_lossy(&out.stderr).lines().last()?.trim().parse().ok()
}

fn dispatcher_cost(runs: usize, out: &mut String) {
    let dir = std::env::temp_dir().join(format!("nmh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let case_script = dir.join("case.sh");
    std::fs::write(&case_script, "#!/bin/sh\ncase \"$1:$2\" in\nwired0:down) echo handover ;;\nesac\nexit 0\n").unwrap();
    let seed_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/seed-like.sh");
    let keyfile = dir.join("Other.nmconnection");
    std::fs::write(&keyfile, "[connection]\nid=Other\nuuid=0b3c2f4e-9a51-4d2b-8f0e-3a6d5c7b9e10\ntype=ethernet\ninterface-name=eth9\n\n[ipv4]\nmethod=auto\n")
        .unwrap();
    let event = vec![
        ("NM_DISPATCHER_ACTION", "up".to_owned()),
        ("DEVICE_IFACE", "eth9".to_owned()),
        ("DEVICE_IP_IFACE", "eth9".to_owned()),
        ("CONNECTION_UUID", "0b3c2f4e-9a51-4d2b-8f0e-3a6d5c7b9e10".to_owned()),
        ("CONNECTION_ID", "Other".to_owned()),
        ("CONNECTION_FILENAME", keyfile.display().to_string()),
        ("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/no-bus".to_owned()),
    ];
    let entry = env!("CARGO_BIN_EXE_nm-handover-dispatch");
    let full = env!("CARGO_BIN_EXE_nm-handover");
    let rows: Vec<(&str, Vec<&str>)> = vec![
        ("/bin/sh case-statement script", vec!["/bin/sh", case_script.to_str().unwrap(), "eth9", "up"]),
        ("seed-like shell script", vec!["/bin/sh", seed_script.to_str().unwrap(), "eth9", "up"]),
        ("nm-handover-dispatch (what nm-dispatcher runs)", vec![entry, "eth9", "up"]),
        ("for comparison: nm-handover IFACE ACTION (links libnm, GLib, GnuTLS, ...)", vec![full, "eth9", "up"]),
    ];
    // Warm the page cache, then measure the rows interleaved, one run of each
    // in turn, so that the machine's drift hits every row alike.
    let mut results: Vec<(String, Vec<f64>, String)> = rows.iter().map(|(name, _)| (name.to_string(), Vec::new(), String::new())).collect();
    for (_, argv) in &rows {
        invocation_times(argv, &event, 5);
    }
    for _ in 0..runs {
        for ((_, argv), (_, times, _)) in rows.iter().zip(results.iter_mut()) {
            times.extend(invocation_times(argv, &event, 1));
        }
    }
    for ((_, argv), (_, _, peak)) in rows.iter().zip(results.iter_mut()) {
        *peak = (0..5).filter_map(|_| peak_rss_kib(argv, &event)).max().map_or("n/a (no /usr/bin/time)".into(), |k| k.to_string());
    }
    let floor = peak_rss_kib(&["/bin/true"], &event).map_or("n/a".into(), |k| k.to_string());
    let base = stats(&results[0].1).map_or(1.0, |s| s.0);
    writeln!(out, "\n### Dispatcher cost: an event of an interface in no pair ({runs} runs each)\n").unwrap();
    writeln!(
        out,
        "| script | wall time µs (median / p95 / max) | ratio to /bin/sh (median) | peak RSS KiB (max of 5, through GNU time; /bin/true there: {floor}) |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|").unwrap();
    for (name, t, rss) in &results {
        let med = stats(t).map_or(f64::NAN, |s| s.0);
        writeln!(out, "| {name} | {} | {:.2} | {rss} |", fmt_stats(t), med / base).unwrap();
    }
    writeln!(
        out,
        "\nThe unrelated event gets no NetworkManager connection and no D-Bus: the bus address points \
         nowhere, and nm-handover still exits 0 (it decides from the environment and one keyfile read)."
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A handover event's cost inside the lab: nm-dispatcher's own timing of the
/// wired `down` requests, and the companion's peak RSS for a command that
/// connects to NM like a handover event does.
fn handover_event_cost(out: &mut String) {
    let Ok(lab) = Lab::start(LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_companion()) else {
        writeln!(out, "\n(handover event cost: lab unavailable)").unwrap();
        return;
    };
    lab.add_ethernet_profile("Office LAN", "wired0", true);
    lab.add_ethernet_profile("Backup link", "backup0", false);
    lab.companion(&["pair", "Office LAN", "Backup link"]);
    let _ = lab.wait_until("wired", Duration::from_secs(30), || lab.ipv4("wired0").is_some());
    for _ in 0..5 {
        lab.pull_cable();
        let _ = lab.wait_until("backup", Duration::from_secs(20), || lab.ipv4("backup0").is_some());
        lab.plug_cable();
        let _ = lab.wait_until("wired", Duration::from_secs(20), || lab.ipv4("wired0").is_some() && lab.ipv4("backup0").is_none());
        std::thread::sleep(Duration::from_millis(500));
    }
    let times: Vec<f64> = lab
        .dispatcher_requests()
        .into_iter()
        .filter(|r| r.iface.as_deref() == Some("wired0") && r.action == "down")
        .filter_map(|r| r.outcome.filter(|o| o.succeeded))
        .map(|o| o.took.as_secs_f64() * 1e6)
        .collect();
    // nsenter execs the command: its peak is the larger of the two, taken through GNU time.
    let status_cmd = lab.host_command(&[env!("CARGO_BIN_EXE_nm-handover"), "status"]);
    let argv: Vec<String> = std::iter::once(status_cmd.get_program()).chain(status_cmd.get_args()).map(|a| a.to_string_lossy().into_owned()).collect();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let peak = peak_rss_kib(&argv, &[]).map_or("n/a".into(), |k| k.to_string());
    writeln!(out, "\n### Dispatcher cost: a handover event (the wired `down`, as nm-dispatcher timed it)\n").unwrap();
    writeln!(out, "| event | wall time µs (median / p95 / max), n={} | peak RSS KiB (`nm-handover status` in the lab: libnm + D-Bus) |", times.len()).unwrap();
    writeln!(out, "|---|---|---|").unwrap();
    writeln!(out, "| wired `down` → carry lease, activate backup | {} | {peak} |", fmt_stats(&times)).unwrap();
}

fn main() -> ExitCode {
    // The commit the rows run on: taken before they run (they take a while).
    let stamp = ran_on(&["benches/handover.rs", "benches/seed-like.sh", "tests/support", "src", "nm-patch", "Cargo.lock"]);
    // `cargo bench` passes --bench; we take no arguments.
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench: the lab needs root (network namespaces, NetworkManager); nothing measured");
        return ExitCode::FAILURE;
    }
    let cycles = env_usize("NM_HANDOVER_BENCH_CYCLES", 20);
    let runs = env_usize("NM_HANDOVER_BENCH_RUNS", 1000);
    let wanted = wanted_rows();
    let out_path = bench_out("handover.md");

    let selected = |spec: &&RowSpec| wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == spec.key));
    // The Wi-Fi rows run in the VM, by this binary booted there; the rest here.
    let wifi_rows: Vec<&str> = ROWS.iter().filter(selected).filter(|r| r.wifi).map(|r| r.key).collect();
    let wifi_report = if in_vm() || wifi_rows.is_empty() {
        None
    } else {
        eprintln!("bench: {} in the Wi-Fi VM ({cycles} cycles each)", wifi_rows.join(", "));
        let rows = wifi_rows.join(",");
        let cycles_text = cycles.to_string();
        let vm_out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wifi-vm/bench/wifi.md");
        let env = [
            ("NM_HANDOVER_BENCH_ROWS", rows.as_str()),
            ("NM_HANDOVER_BENCH_CYCLES", cycles_text.as_str()),
            ("NM_HANDOVER_BENCH_OUT", vm_out.to_str().unwrap()),
        ];
        // Each Wi-Fi row of 20 cycles takes ~5 min under TCG.
        let timeout = Duration::from_secs(600 + 30 * cycles as u64 * wifi_rows.len() as u64);
        Some(match boot_vm("bench", &["--bench"], &env, timeout) {
            Ok(run) if run.guest_status == Some(0) => std::fs::read_to_string(&vm_out).unwrap_or_else(|e| format!("(no report from the VM: {e})")),
            Ok(run) => format!(
                "(the Wi-Fi VM failed or ran out of time, status {:?} after {:.0} s; its log is in {})\n",
                run.guest_status,
                run.wall.as_secs_f64(),
                run.out.display()
            ),
            Err(why) => format!("(Wi-Fi rows not measured: {why})\n"),
        })
    };
    let mut results: Vec<(&RowSpec, Samples)> = Vec::new();
    let mut skipped = Vec::new();
    for spec in ROWS.iter().filter(selected) {
        if spec.wifi != in_vm() {
            continue;
        }
        eprintln!("bench: {} ({cycles} cycles)", spec.name);
        match run_row(spec, cycles) {
            Ok(s) => results.push((spec, s)),
            Err(why) => {
                eprintln!("bench: {}: not measured: {why}", spec.name);
                skipped.push(format!("{}: {why}", spec.name));
            }
        }
    }

    let mut out = String::new();
    writeln!(out, "## Handover benchmark\n").unwrap();
    out.push_str(&stamp);
    writeln!(out, "Machine: {}.  ", machine()).unwrap();
    let host_rows = !results.is_empty() || !skipped.is_empty();
    writeln!(out, "Command: `cargo bench --bench handover` (NM_HANDOVER_BENCH_CYCLES={cycles}: {cycles} pull/re-plug cycles = {} handovers per row). Lab: ISC dhcpd with ping-check, `ping-cltt-secs 1`; a TCP request/response every 20 ms across all cycles.\n", cycles * 2).unwrap();
    if host_rows {
        writeln!(out, "Times in ms as median / p95 / max. Ratios are medians divided by the medians of the seed-like row with the same carrier-wait (300 ms) on the same kind of link, measured in the same run, and only for rows of the seed-like row's condition (stock packaged NM, internal DHCP client, NM's default conflict probe; the rows with NM's default 6 s carrier-wait differ in that alone, and their ratios show what it costs): the other rows have no baseline of their own condition here (n/a). A sample of two modes is shown as a split (how many near which value) and divides nothing; a stall after which the session carried no traffic within the bench's wait is counted as longer than the wait, not as a measurement. `pair` sets the backup's ipv4.dad-timeout to 0; the wired profile keeps NetworkManager's default (0 ms on 1.42, 200 ms on 1.58) unless a row says otherwise. The re-plug overlap: on the veth rows from packet captures on both bridge ports (kernel timestamps), the backup's last frame from the shared MAC, from the pull up to 1 s after the wired link's first DHCP packet, minus that packet, signed (the count says how often the backup was still on the LAN while the wired client spoke; with a TCP round trip every 20 ms through it, the backup's last frame precedes its going down by up to 20 ms; no frame since the pull means a broken capture: not measured, noted); on the Wi-Fi rows from address events (the wired link's address added while the backup still held it).{}\n", if in_vm() { " Measured in the Wi-Fi VM under TCG (software emulation): compare ratios and orderings, not absolute times, with the veth rows of `handover.md`." } else { "" }).unwrap();
        writeln!(out, "| configuration | timed pulls / re-plugs (of cycles; the rest dropped, see notes) | pull → backup holds the same IPv4 | re-plug → wired holds it, backup off the LAN | IP changed | TCP resets | longest TCP stall: pulls; re-plugs | longest gap of a 100 Hz ping to the LAN peer: pulls; re-plugs | DHCP client packets per handover | server conflicts | re-plug: backup's last frame − wired's first DHCP packet (> 0: both on the LAN) | ratio pull / re-plug / stall at pull / stall at re-plug | ping gap ratio to the bond on the same kind of link (pull / re-plug medians) | the shared MAC's moves between bridge ports while docked: total (periods with any, of periods) | re-plug floor: the wired link's own carrier → address; the ping gap's ratio to it (medians) |").unwrap();
        writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
        for (spec, s) in &results {
            // A median divides only where it is one: a sample of two modes, or
            // with stalls beyond the wait (not measured), has none to divide.
            let divisible = |v: &[f64], censored: usize| (censored == 0 && two_modes(v).is_none()).then(|| stats(v).map(|x| x.0)).flatten();
            let base = results.iter().find(|(b, _)| Some(b.key) == baseline_of(spec)).map(|(_, s)| {
                (
                    divisible(&s.pull_ms, 0),
                    divisible(&s.replug_ms, 0),
                    divisible(&s.stall_pull_ms, s.stall_pull_censored),
                    divisible(&s.stall_replug_ms, s.stall_replug_censored),
                )
            });
            let ratio = |x: Option<f64>, b: Option<Option<f64>>| match (x, b.flatten()) {
                (Some(x), Some(b)) if b > 0.0 => format!("{:.2}", x / b),
                _ => "n/a".into(),
            };
            // The anchor users are pointed to: the bond on the same kind of link, same run.
            let bond = results
                .iter()
                .find(|(b, _)| b.setup == Setup::Bonding && b.wifi == spec.wifi)
                .map(|(_, b)| (divisible(&b.outage_pull_ms, 0), divisible(&b.outage_replug_ms, 0)));
            writeln!(
                out,
                "| {}, NM {} | {} / {} of {} | {} | {} | {} / {} | {} | {}; {} | {}; {} | {} | {} | {} | {} / {} / {} / {} | {} / {} | {} | {}; {} |",
                spec.name,
                s.nm_version,
                s.pull_ms.len(),
                s.replug_ms.len(),
                s.handovers / 2,
                fmt_stats(&s.pull_ms),
                fmt_stats(&s.replug_ms),
                s.ip_changed,
                s.handovers,
                s.resets,
                fmt_stalls(&s.stall_pull_ms, s.stall_pull_censored, s.traffic_wait),
                fmt_stalls(&s.stall_replug_ms, s.stall_replug_censored, s.traffic_wait),
                fmt_stats(&s.outage_pull_ms),
                fmt_stats(&s.outage_replug_ms),
                stats(&s.dhcp_per_handover).map_or("n/a".into(), |x| format!("{:.1}", x.0)),
                s.conflicts,
                match s.window_ms.iter().filter(|w| **w > 0.0).count() {
                    _ if s.window_ms.is_empty() => "n/a".to_owned(),
                    over => format!("{} ({over} of {} > 0)", fmt_stats(&s.window_ms), s.window_ms.len()),
                },
                ratio(divisible(&s.pull_ms, 0), base.map(|b| b.0)),
                ratio(divisible(&s.replug_ms, 0), base.map(|b| b.1)),
                ratio(divisible(&s.stall_pull_ms, s.stall_pull_censored), base.map(|b| b.2)),
                ratio(divisible(&s.stall_replug_ms, s.stall_replug_censored), base.map(|b| b.3)),
                ratio(divisible(&s.outage_pull_ms, 0), bond.map(|b| b.0)),
                ratio(divisible(&s.outage_replug_ms, 0), bond.map(|b| b.1)),
                if s.mac_moves_docked.is_empty() {
                    "n/a".to_owned()
                } else {
                    format!(
                        "{} ({} of {})",
                        s.mac_moves_docked.iter().sum::<f64>(),
                        s.mac_moves_docked.iter().filter(|m| **m > 0.0).count(),
                        s.mac_moves_docked.len()
                    )
                },
                fmt_stats(&s.wired_floor_ms),
                ratio(divisible(&s.outage_replug_ms, 0), Some(divisible(&s.wired_floor_ms, 0))),
            )
            .unwrap();
        }
        for (spec, s) in &results {
            for note in &s.notes {
                writeln!(out, "\n- {}: {note}", spec.name).unwrap();
            }
        }
        for why in &skipped {
            writeln!(out, "\n- not measured: {why}").unwrap();
        }
    }
    if let Some(report) = wifi_report {
        writeln!(
            out,
            "\n### On real 802.11: the Wi-Fi VM (mac80211_hwsim, hostapd WPA2-PSK), same command\n\n{}",
            report.replace("## Handover benchmark", "").trim()
        )
        .unwrap();
    }
    if !in_vm() && wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == "cost")) {
        dispatcher_cost(runs, &mut out);
        handover_event_cost(&mut out);
    }
    print!("{out}");
    if let Some(dir) = out_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&out_path, &out) {
        Ok(()) => eprintln!("bench: written to {}", out_path.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", out_path.display()),
    }
    ExitCode::SUCCESS
}
