//! IPv6 across handovers (issue 15): pull/re-plug cycles in the lab with
//! router advertisements (SLAAC) and stateful DHCPv6 from dnsmasq, per
//! configuration: how long until the other link holds both IPv6 addresses
//! the wired link had, whether any changed, and the TCP stall over IPv6
//! beside the TCP stall over IPv4 of the same handovers (the baseline every
//! IPv6 stall is divided by).
//!
//! `cargo bench --bench ipv6` (as root). Environment:
//!   NM_HANDOVER_BENCH_CYCLES   pull/re-plug cycles per row (default 10; 2 handovers each)
//!   NM_HANDOVER_BENCH_ROWS     comma-separated row keys (default: all)
//!   NM_HANDOVER_BENCH_OUT      results file (default: bench-results/ipv6.md)

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use support::*;

struct RowSpec {
    key: &'static str,
    name: &'static str,
    /// The patched build of this version (nm-patch/build), or Debian's stock NM.
    patched: Option<&'static str>,
    /// Stock NM of this version built unpatched by nm-patch/build.
    unpatched_build: Option<&'static str>,
    /// The backup keeps the IPv6 settings it had before `pair` (the control).
    undo_ipv6_identity: bool,
    /// `pair --standby`: the warm standby on the backup link.
    standby: bool,
}

const fn row(key: &'static str, name: &'static str) -> RowSpec {
    RowSpec { key, name, patched: None, unpatched_build: None, undo_ipv6_identity: false, standby: false }
}

const ROWS: &[RowSpec] = &[
    row("stock-1.42", "nm-handover, stock NM"),
    RowSpec { unpatched_build: Some("1.58.1"), ..row("stock-1.58", "nm-handover, stock NM built from Debian's source") },
    RowSpec { patched: Some("1.58.1"), ..row("patched-1.58", "nm-handover, patched NM (link-up)") },
    RowSpec { undo_ipv6_identity: true, ..row("control", "control: nm-handover, stock NM, the backup's own IPv6 settings (stable-privacy, IAID ifname)") },
    RowSpec { standby: true, ..row("standby-1.42", "nm-handover with the warm standby (pair --standby), stock NM") },
];

#[derive(Default)]
struct Samples {
    nm_version: String,
    handovers: usize,
    /// Time until the newly active link holds every IPv6 address the wired link had (usable: DAD done).
    pull6_ms: Vec<f64>,
    replug6_ms: Vec<f64>,
    /// Handovers after which the newly active link did not hold the wired link's IPv6 addresses within [`IPV6_UP`].
    ipv6_changed: usize,
    /// The longest stall per handover and session over IPv6 (one session
    /// per address), and over IPv4; [pull, re-plug].
    stall6_ms: [Vec<f64>; 2],
    stall4_ms: [Vec<f64>; 2],
    /// Sessions without a round trip within 10 s of a handover.
    lost6: usize,
    lost4: usize,
    notes: Vec<String>,
}

/// Sessions over IPv4 and over each wired IPv6 address. A session that
/// died is counted and opened again once a link holds its address (none
/// does in the control, after a pull).
struct Sessions {
    v4: TcpSession,
    v6: Vec<(Ipv6Addr, Option<TcpSession>)>,
}

impl Sessions {
    fn open(lab: &Lab, wired6: &[Ipv6Addr]) -> Sessions {
        Sessions { v4: TcpSession::open(lab), v6: wired6.iter().map(|a| (*a, Some(TcpSession::open_v6_from(lab, *a)))).collect() }
    }

    /// After a handover: each live session's longest stall (or its reset),
    /// then a fresh stall timer.
    fn record(&mut self, lab: &Lab, iface: &str, which: usize, s: &mut Samples) {
        let settle = |session: &TcpSession| session.wait_for_traffic(5, Duration::from_secs(10));
        if settle(&self.v4) {
            s.stall4_ms[which].push(millis(self.v4.report().longest_stall));
            self.v4.reset_stall();
        } else {
            s.lost4 += 1;
            s.notes.push(format!("TCP over IPv4, handover to {iface}: {:?}", self.v4.report()));
            self.v4 = TcpSession::open(lab);
        }
        let held = lab.ipv6_usable(iface);
        for (addr, session) in &mut self.v6 {
            match session {
                Some(live) if settle(live) => {
                    s.stall6_ms[which].push(millis(live.report().longest_stall));
                    live.reset_stall();
                }
                Some(dead) => {
                    s.lost6 += 1;
                    s.notes.push(format!("TCP over {addr}, handover to {iface}: {:?}", dead.report()));
                    *session = None;
                }
                None => {}
            }
            if session.is_none() && held.contains(addr) {
                let fresh = TcpSession::open_v6_from(lab, *addr);
                fresh.wait_for_traffic(5, Duration::from_secs(10));
                fresh.reset_stall();
                *session = Some(fresh);
            }
        }
    }
}

fn run_row(spec: &RowSpec, cycles: usize) -> Result<Samples, String> {
    let cfg = LabConfig::of_build(DhcpServer::Dnsmasq, DhcpClient::Internal, spec.patched, spec.unpatched_build)?;
    let mut s = Samples { nm_version: nm_version(&cfg.nm_daemon), ..Samples::default() };
    let args: &[&str] = if spec.standby { &["--standby"] } else { &[] };
    let p = paired_with(spec.key, cfg.with_ipv6(), args, wait_for_wired_ipv6).ok_or("the lab did not start (see above)")?;
    let lab = &p.lab;
    let backup = p.backup_iface;
    if spec.undo_ipv6_identity {
        lab.nmcli(&["connection", "modify", p.backup_profile, "ipv6.addr-gen-mode", "stable-privacy", "ipv6.token", "", "ipv6.dhcp-iaid", ""])
            .map_err(|e| format!("undo the IPv6 identity: {e}"))?;
    }
    let mut wired6 = lab.ipv6_usable("wired0");
    wired6.sort();
    if wired6.len() != 2 {
        return Err(format!("the wired link has {wired6:?}, not one SLAAC and one DHCPv6 address"));
    }
    let mut sessions = Sessions::open(lab, &wired6);
    // Established, with the stall timer started now.
    sessions.record(lab, "wired0", 0, &mut Samples::default());
    for cycle in 0..cycles {
        if spec.standby {
            let standby = format!("{} (nm-handover standby)", p.backup_profile);
            lab.wait_until("the warm standby up and silent", Duration::from_secs(60), || {
                lab.nmcli(&["-g", "GENERAL.STATE", "connection", "show", &standby]).is_ok_and(|s| s.trim() == "activated") && lab.ipv4(backup).is_none()
            })
            .map_err(|e| format!("cycle {cycle}: {e}"))?;
        }
        for (which, (to, iface)) in [("pull", backup), ("re-plug", "wired0")].into_iter().enumerate() {
            let start = Instant::now();
            if to == "pull" {
                lab.pull_cable();
            } else {
                lab.plug_cable();
            }
            s.handovers += 1;
            match lab.wait_until("the wired link's IPv6 addresses", IPV6_UP, || holds_all(lab, iface, &wired6)) {
                Ok(_) => {
                    let took = millis(start.elapsed());
                    if to == "pull" { &mut s.pull6_ms } else { &mut s.replug6_ms }.push(took);
                }
                Err(_) => {
                    s.ipv6_changed += 1;
                    if s.ipv6_changed == 1 {
                        s.notes.push(format!("cycle {cycle}, {to}: {iface} holds {:?}, the wired link had {wired6:?}", lab.ipv6_usable(iface)));
                    }
                }
            }
            lab.wait_until("the address on IPv4", Duration::from_secs(20), || lab.ipv4(iface) == Some(p.addr))
                .map_err(|e| format!("cycle {cycle}, {to}: {e}"))?;
            if to == "re-plug" {
                lab.wait_until("the backup to give up its IPv6 addresses", Duration::from_secs(15), || lab.ipv6_usable(backup).is_empty())
                    .map_err(|e| format!("cycle {cycle}: {e}"))?;
            }
            sessions.record(lab, iface, which, &mut s);
        }
    }
    Ok(s)
}

fn dnsmasq_version() -> String {
    // "Dnsmasq version 2.90  Copyright (c) ..."
    let out = Command::new("dnsmasq").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.lines().next().and_then(|l| l.split("  ").next()).unwrap_or("dnsmasq").to_owned()
}

fn main() -> ExitCode {
    let cycles = env_usize("NM_HANDOVER_BENCH_CYCLES", 10);
    let wanted = wanted_rows();
    let out_path = bench_out("ipv6.md");
    let mut out = String::new();
    writeln!(out, "## IPv6 across handovers: the same addresses on both links\n").unwrap();
    out.push_str(&ran_on(&["benches/ipv6.rs", "tests/support", "src", "nm-patch", "Cargo.lock"]));
    writeln!(out, "Machine: {}.  ", machine()).unwrap();
    writeln!(
        out,
        "Command: `cargo bench --bench ipv6` (NM_HANDOVER_BENCH_CYCLES={cycles}: {cycles} pull/re-plug cycles = {} handovers per row). \
         Lab: {}, serving DHCPv4, stateful DHCPv6 and router advertisements (SLAAC) on the LAN; NM's internal DHCP client; the backup a veth. The wired link holds one SLAAC and one DHCPv6 address; a TCP request/response every 20 ms \
         runs over IPv4 and over each IPv6 address through all cycles.\n",
        2 * cycles,
        dnsmasq_version()
    )
    .unwrap();
    writeln!(
        out,
        "*Holds both IPv6 addresses*: from the pull (re-plug) to the backup (wired link) holding both addresses the wired link \
         had, usable (duplicate address detection done), polled every 10 ms. *Changed*: handovers after which the link did not \
         hold them within {} s. Stalls: the longest time without a completed round trip, per handover and session (ms); the \
         IPv4 session of the same handovers is the baseline: *ratio* = median IPv6 stall / median IPv4 stall, for pulls and for re-plugs, \
         where neither sample has two modes (a split is shown: how many near which value). A session is *lost* \
         when it completes no round trip within 10 s of the handover (its stall is then not a sample; the notes give its report). Times in ms as \
         median / p95 / max.\n",
        IPV6_UP.as_secs()
    )
    .unwrap();
    writeln!(out, "| configuration | NM | handovers | pull → backup holds both IPv6 addresses | re-plug → wired holds them | IPv6 changed | TCP/IPv6 sessions lost | longest TCP/IPv6 stall: pull; re-plug | longest TCP/IPv4 stall (same handovers): pull; re-plug | TCP/IPv4 sessions lost | ratio IPv6 / IPv4 stall: pull; re-plug |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    let mut notes = Vec::new();
    for spec in ROWS.iter().filter(|s| wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == s.key))) {
        eprintln!("bench ipv6: {} ({cycles} cycles)", spec.name);
        let s = match run_row(spec, cycles) {
            Ok(s) => s,
            Err(e) => {
                notes.push(format!("- not measured: {}: {e}", spec.name));
                continue;
            }
        };
        // A median of two modes falls on either: it divides nothing.
        let ratio = |which: usize| match (median(s.stall6_ms[which].clone()), median(s.stall4_ms[which].clone())) {
            _ if two_modes(&s.stall6_ms[which]).is_some() || two_modes(&s.stall4_ms[which]).is_some() => "n/a (two modes)".into(),
            (v6, v4) if v4 > 0.0 && !v6.is_nan() => format!("{:.2}", v6 / v4),
            _ => "n/a".into(),
        };
        let both = |v: &[Vec<f64>; 2]| format!("{}; {}", median_p95_max(v[0].clone()), median_p95_max(v[1].clone()));
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} of {} | {} | {} | {} | {} | {}; {} |",
            spec.name,
            s.nm_version,
            s.handovers,
            median_p95_max(s.pull6_ms.clone()),
            median_p95_max(s.replug6_ms.clone()),
            s.ipv6_changed,
            s.handovers,
            s.lost6,
            both(&s.stall6_ms),
            both(&s.stall4_ms),
            s.lost4,
            ratio(0),
            ratio(1),
        )
        .unwrap();
        notes.extend(s.notes.into_iter().map(|n| format!("- {}: {n}", spec.key)));
    }
    publish_report("ipv6", out, &notes, &out_path)
}
