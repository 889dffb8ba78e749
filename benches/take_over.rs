//! The NM-native alternative to `link-up` (nm-patch/native-1.58: the wired
//! profile names the backup it takes over from; no companion) beside the
//! `link-up` series with the companion, on the same veth lab, measured the
//! same way (`take_over_cycle`): pull → the backup holds the same IPv4,
//! re-plug → the wired link holds it and the backup is off the LAN, the
//! backup's last frame against the wired link's first DHCP packet, and the
//! longest TCP stall of a session through the link that holds the address.
//!
//! `cargo bench --bench take_over` (as root; both builds by nm-patch/build).
//!   NM_HANDOVER_BENCH_CYCLES  pull/re-plug cycles per row (default 10)
//!   NM_HANDOVER_BENCH_OUT     results file (default: bench-results/take-over.md)

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::ExitCode;

use support::*;

struct Row {
    name: &'static str,
    version: String,
    cycles: Vec<TakeOverCycle>,
}

fn measure(lab: &Lab, addr: Ipv4Addr, backup_iface: &str, cycles: usize) -> Result<Vec<TakeOverCycle>, String> {
    (0..cycles).map(|_| take_over_cycle(lab, addr, backup_iface)).collect()
}

fn link_up_row(cycles: usize) -> Result<Row, String> {
    let test = "bench take_over: link-up";
    let cfg = LabConfig::patched_version(DhcpServer::IscDhcpd, DhcpClient::Internal, "1.58.1")?;
    let version = nm_version(&cfg.nm_daemon);
    let p = paired(test, cfg, &[]).ok_or("the lab cannot run here")?;
    Ok(Row { name: "`link-up` series v3 + the companion (`pair`)", version, cycles: measure(&p.lab, p.addr, p.backup_iface, cycles)? })
}

fn native_row(cycles: usize) -> Result<Row, String> {
    let test = "bench take_over: native";
    let version = nm_version(&LabConfig::of_series(DhcpServer::IscDhcpd, DhcpClient::Internal, "1.58.1", "native-1.58")?.nm_daemon);
    let (lab, addr) = native_lab(test).ok_or("the native prototype cannot run here")?;
    Ok(Row { name: "native take-over prototype (nm-patch/native-1.58), no companion", version, cycles: measure(&lab, addr, "backup0", cycles)? })
}

fn ms_of(v: impl Iterator<Item = std::time::Duration>) -> Vec<f64> {
    v.map(|d| d.as_secs_f64() * 1000.0).collect()
}

fn main() -> ExitCode {
    let cycles: usize = std::env::var("NM_HANDOVER_BENCH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let out_path = bench_out("take-over.md");
    let mut out = String::new();
    writeln!(out, "## The native take-over prototype beside `link-up`\n").unwrap();
    out.push_str(&ran_on(&["benches/take_over.rs", "tests/support", "nm-patch", "src", "Cargo.lock"]));
    writeln!(out, "Machine: {}.  ", machine()).unwrap();
    writeln!(
        out,
        "Command: `cargo bench --bench take_over` (NM_HANDOVER_BENCH_CYCLES={cycles}: {cycles} pull/re-plug cycles per row). Veth lab, ISC dhcpd \
         with ping-check, internal DHCP client, the wired link's carrier-wait 300 ms in both rows, a TCP request/response every 20 ms. \
         Times in ms as median / p95 / max; pull and re-plug from address events, the overlap from packet captures on both bridge ports \
         (the backup's last frame minus the wired link's first DHCP packet after the plug; > 0: both on the LAN).\n"
    )
    .unwrap();
    writeln!(out, "| mechanism | NetworkManager | cycles | pull → backup holds the IPv4 | re-plug → wired holds it, backup off | backup's last frame − wired's first DHCP packet (max; cycles > 0) | longest TCP stall: pulls; re-plugs | ratio to `link-up` (pull / re-plug medians) |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|").unwrap();
    let mut notes = Vec::new();
    let mut base: Option<(f64, f64)> = None;
    for (name, row) in [("link-up", link_up_row as fn(usize) -> Result<Row, String>), ("native", native_row)] {
        eprintln!("bench take_over: {name}");
        let row = match row(cycles) {
            Ok(row) => row,
            Err(why) => {
                notes.push(format!("- not measured: {name}: {why}"));
                continue;
            }
        };
        let pulls = ms_of(row.cycles.iter().map(|c| c.pull));
        let replugs = ms_of(row.cycles.iter().map(|c| c.replug));
        let overlaps: Vec<f64> = row.cycles.iter().map(|c| c.overlap_ms).collect();
        let (p, r) = (median(pulls.clone()), median(replugs.clone()));
        let ratio = match base {
            None => {
                base = Some((p, r));
                "1.00 / 1.00".to_owned()
            }
            Some((bp, br)) => format!("{:.2} / {:.2}", p / bp, r / br),
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} ({} of {}) | {}; {} | {ratio} |",
            row.name,
            row.version,
            row.cycles.len(),
            median_p95_max(pulls),
            median_p95_max(replugs),
            overlaps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            overlaps.iter().filter(|o| **o > 0.0).count(),
            overlaps.len(),
            median_p95_max(ms_of(row.cycles.iter().map(|c| c.stalls.0))),
            median_p95_max(ms_of(row.cycles.iter().map(|c| c.stalls.1))),
        )
        .unwrap();
    }
    publish_report("take_over", out, &notes, &out_path)
}
