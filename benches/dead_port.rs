//! A plug into a dead wired port (a dead wall port, another VLAN, a port that
//! blocks 802.1X) with NetworkManager's default `ipv4.dhcp-timeout` (45 s)
//! and its default autoconnect retries, stock and patched NM, in the
//! real-NM lab. The lab test (`tests/day.rs`) runs the same scenario with a
//! 10 s timeout; this measures the default once.
//!
//! `cargo bench --bench dead_port` (as root). Environment:
//!   NM_HANDOVER_BENCH_ROWS     comma-separated row keys (default: all)
//!   NM_HANDOVER_BENCH_OUT      results file (default: bench-results/dead-port.md)

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use support::*;

/// How long the online share is sampled while NetworkManager retries the
/// port: two of its activations of 45 s. The port then comes alive while NM
/// still retries; after its last retry NM waits 300 s before the next
/// (with or without nm-handover), which the bench would only wait out.
const RETRIES: Duration = Duration::from_secs(2 * 45);

struct Row {
    key: &'static str,
    name: &'static str,
    patched: bool,
}

const ROWS: &[Row] = &[
    Row { key: "stock", name: "stock NM, carrier watcher, supervisor", patched: false },
    Row { key: "patched", name: "patched NM (link-up), supervisor", patched: true },
];

fn main() -> ExitCode {
    let wanted = wanted_rows();
    let out_path = bench_out("dead-port.md");
    let mut out = String::new();
    writeln!(out, "## A plug into a dead wired port, NetworkManager's default DHCP timeout\n").unwrap();
    out.push_str(&ran_on(&["benches/dead_port.rs", "tests/support", "src", "Cargo.lock"]));
    writeln!(out, "Machine: {}.  ", machine()).unwrap();
    writeln!(
        out,
        "Command: `cargo bench --bench dead_port`. Lab: ISC dhcpd, NM's internal DHCP client, the backup a veth, the wired \
         profile's `ipv4.dhcp-timeout` 0 (NM's 45 s) and its autoconnect retries NM's default (4). The cable is pulled (the \
         backup takes the address), the wired link's bridge port leaves the LAN's bridge (carrier stays, nothing answers), and \
         the cable goes in. *Back*: plug -> the backup holds the address again. *Online*: the share of samples (every 250 ms) \
         over the next {} s, while NM retries the port, in which the backup (up) or the wired link holds the address. \
         *Moved*: the port answers again -> the wired link holds the address and the backup is off. One run per row.\n",
        RETRIES.as_secs()
    )
    .unwrap();
    writeln!(out, "| configuration | NM | back (s) | online while NM retries | moved once the port answers (s) |").unwrap();
    writeln!(out, "|---|---|---|---|---|").unwrap();
    let mut notes = Vec::new();
    for row in ROWS.iter().filter(|r| wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == r.key))) {
        eprintln!("bench dead_port: {}", row.name);
        let cfg = if row.patched { LabConfig::patched(DhcpServer::IscDhcpd) } else { Ok(LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal)) };
        let cfg = match cfg {
            Ok(cfg) => cfg,
            Err(e) => {
                notes.push(format!("- not measured: {}: {e}", row.name));
                continue;
            }
        };
        let version = nm_version(&cfg.nm_daemon);
        let Some(p) = paired(&format!("bench dead port ({})", row.key), cfg, &[]) else {
            notes.push(format!("- not measured: {}: the lab did not start (see above)", row.name));
            continue;
        };
        let outcome = dead_port(&p, 0, RETRIES);
        writeln!(
            out,
            "| {} | {version} | {:.1} | {:.0} % | {:.1} |",
            row.name,
            outcome.back.as_secs_f64(),
            outcome.online_share * 100.0,
            outcome.moved.as_secs_f64()
        )
        .unwrap();
    }
    publish_report("dead_port", out, &notes, &out_path)
}
