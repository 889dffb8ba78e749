//! What the `link-up` series costs an activation that does not use it
//! (issue 12: "every user pays"): the time from "Activation: starting
//! connection" to "activated" of a wired DHCP profile, and a boot (NM start
//! to the wired link activated, nm-dispatcher not running), on NetworkManager
//! 1.58.1 built from Debian's source unpatched and patched, with no script
//! in `link-up.d`; then with a script installed (one that exits at once, as
//! a script does for a profile it does not handle), on the series (every
//! activation waits for it) and on the per-profile opt-in prototype
//! (nm-patch/opt-in-1.58: only a profile that asks waits), with the profile
//! opted in and not. Both from NM's own log timestamps (0.1 ms).
//!
//! `cargo bench --bench link_up_cost` (as root). Environment:
//!   NM_HANDOVER_BENCH_RUNS     activations per row (default 50; boots: a fifth of it)
//!   NM_HANDOVER_V1_NM_DIR      a build of series v1 (nm-patch/build's directory) for its row
//!   NM_HANDOVER_BENCH_OUT      results file (default: bench-results/link-up-cost.md)

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use support::*;

/// NM log timestamps (`<info>  [1795628461.6776] device (wired0): ...`) of
/// the lines containing `what`, in order.
fn stamps(log: &str, what: &str) -> Vec<f64> {
    log.lines().filter(|l| l.contains(what)).filter_map(log_stamp).collect()
}

struct Row {
    activation_ms: Vec<f64>,
    boot_ms: Vec<f64>,
    link_up_calls: usize,
    /// How long IP configuration waited for each `link-up` (NM's own count).
    link_up_wait_ms: Vec<f64>,
    nm_version: String,
}

/// NM's "\"link-up\" dispatcher scripts completed after N ms" lines.
fn link_up_waits(log: &str) -> Vec<f64> {
    log.lines().filter_map(|l| l.split_once("dispatcher scripts completed after ")?.1.split_once(" ms")?.0.trim().parse().ok()).collect()
}

fn wired_activations(log: &str) -> Vec<f64> {
    let starts = stamps(log, "device (wired0): Activation: starting connection");
    let ends = stamps(log, "device (wired0): state change: secondaries -> activated");
    starts.iter().zip(&ends).map(|(s, e)| (e - s) * 1000.0).collect()
}

/// A `link-up.d` script that exits at once: what a script does for a
/// profile it does not handle.
fn noop_link_up_script() -> (String, String) {
    ("link-up.d/50-noop".into(), "#!/bin/sh\nexit 0\n".into())
}

fn run_row(mut cfg: LabConfig, runs: usize, setup: Setup) -> Result<Row, String> {
    let nm_version = nm_version(&cfg.nm_daemon);
    if setup != Setup::NoScript {
        cfg.scripts.push(noop_link_up_script());
    }
    let mut lab = Lab::start(cfg).map_err(|e| e.to_string())?;
    let e = |e: LabError| e.to_string();
    lab.add_ethernet_profile("Office LAN", "wired0", false);
    if setup == Setup::ScriptProfileOptedIn {
        lab.edit_keyfile("Office LAN", "user", "org.freedesktop.NetworkManager.link-up", "yes");
    }
    for _ in 0..runs {
        lab.nmcli(&["connection", "up", "Office LAN"]).map_err(e)?;
        lab.nmcli(&["connection", "down", "Office LAN"]).map_err(e)?;
    }
    let activation_ms = wired_activations(&lab.nm_log());
    // Boots: NM starts with nm-dispatcher not running (it exits when idle).
    lab.nmcli(&["connection", "modify", "Office LAN", "connection.autoconnect", "yes"]).map_err(e)?;
    let mut boot_ms = Vec::new();
    for _ in 0..(runs / 5).max(1) {
        lab.reboot_nm(|lab| {
            for pid in processes_named(lab, "nm-dispatcher") {
                // SAFETY: a process of this lab's own namespace, by its PID.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        });
        lab.wait_until("the wired link activated", Duration::from_secs(30), || {
            lab.nmcli(&["-g", "GENERAL.STATE", "connection", "show", "Office LAN"]).is_ok_and(|s| s.trim() == "activated")
        })
        .map_err(e)?;
        let log = lab.nm_log();
        let started = *stamps(&log, "is starting...").last().ok_or("no NM start line")?;
        let activated = *stamps(&log, "device (wired0): state change: secondaries -> activated").last().ok_or("no activation")?;
        boot_ms.push((activated - started) * 1000.0);
    }
    let link_up_calls = lab.dispatcher_requests().iter().filter(|r| r.action == "link-up").count();
    let link_up_wait_ms = link_up_waits(&lab.nm_log());
    if link_up_wait_ms.len() != link_up_calls {
        return Err(format!("{link_up_calls} link-up requests, but NM logged {} completed waits", link_up_wait_ms.len()));
    }
    Ok(Row { activation_ms, boot_ms, link_up_calls, link_up_wait_ms, nm_version })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    NoScript,
    Script,
    ScriptProfileOptedIn,
}

fn main() -> ExitCode {
    let runs: usize = std::env::var("NM_HANDOVER_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let out_path = bench_out("link-up-cost.md");
    let built = |patched| LabConfig::built(DhcpServer::IscDhcpd, DhcpClient::Internal, "1.58.1", patched);
    let opt_in = || LabConfig::of_series(DhcpServer::IscDhcpd, DhcpClient::Internal, "1.58.1", "opt-in-1.58");
    let mut rows: Vec<(&str, Result<LabConfig, String>, Setup)> = vec![
        ("stock: 1.58.1 built unpatched", built(false), Setup::NoScript),
        ("patched: series v3 (nm-patch/1.58), no link-up script", built(true), Setup::NoScript),
        ("patched: series v3, a link-up script installed", built(true), Setup::Script),
        ("opt-in prototype (nm-patch/opt-in-1.58), a link-up script installed, the profile not opted in", opt_in(), Setup::Script),
        ("opt-in prototype, a link-up script installed, the profile opted in", opt_in(), Setup::ScriptProfileOptedIn),
    ];
    if let Some(v1) = std::env::var_os("NM_HANDOVER_V1_NM_DIR") {
        // built_nm_paths reads the patched build's directory from this variable.
        std::env::set_var("NM_HANDOVER_PATCHED_NM_DIR", &v1);
        rows.push(("patched: series v1, no link-up script", built(true), Setup::NoScript));
        std::env::remove_var("NM_HANDOVER_PATCHED_NM_DIR");
    }
    let mut out = String::new();
    writeln!(out, "## What `link-up` costs activations that do not use it\n").unwrap();
    out.push_str(&ran_on(&["benches/link_up_cost.rs", "tests/support", "nm-patch"]));
    writeln!(out, "Machine: {}.  ", machine()).unwrap();
    writeln!(
        out,
        "Command: `cargo bench --bench link_up_cost` (NM_HANDOVER_BENCH_RUNS={runs}). A wired DHCP profile (ISC dhcpd, internal client) \
         activated and deactivated {runs} times per row with `nmcli`, then {} boots (NM started with nm-dispatcher not running, the \
         profile autoconnecting). Times from NM's own log, in ms as median / p95 / max. \"A link-up script installed\": `link-up.d/50-noop`, \
         which exits at once.\n",
        (runs / 5).max(1)
    )
    .unwrap();
    writeln!(out, "| NetworkManager | version | activations | starting → activated | boots | NM start → wired activated | `link-up` dispatched | IP configuration held for `link-up` (NM's log) | ratio to stock (activation / boot medians) |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|").unwrap();
    let mut base: Option<(f64, f64)> = None;
    let mut notes = Vec::new();
    for (name, cfg, setup) in rows {
        eprintln!("bench link_up_cost: {name}");
        let row = match cfg.and_then(|cfg| run_row(cfg, runs, setup)) {
            Ok(row) => row,
            Err(why) => {
                notes.push(format!("- not measured: {name}: {why}"));
                continue;
            }
        };
        let (a, b) = (median(row.activation_ms.clone()), median(row.boot_ms.clone()));
        let ratio = match base {
            None => {
                base = Some((a, b));
                "1.00 / 1.00".to_owned()
            }
            Some((ba, bb)) => format!("{:.2} / {:.2}", a / ba, b / bb),
        };
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {ratio} |",
            row.nm_version,
            row.activation_ms.len(),
            median_p95_max(row.activation_ms),
            row.boot_ms.len(),
            median_p95_max(row.boot_ms),
            row.link_up_calls,
            if row.link_up_wait_ms.is_empty() { "none".to_owned() } else { median_p95_max(row.link_up_wait_ms) },
        )
        .unwrap();
    }
    publish_report("link_up_cost", out, &notes, &out_path)
}
