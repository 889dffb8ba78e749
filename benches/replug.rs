//! Re-plug under traffic (issue 14): pull/re-plug cycles with a 5 ms ping
//! and a TCP session running through the backup at the moment of each
//! re-plug, per configuration, in the real-NM lab. Counts re-plugs slower
//! than 500 ms (the wired client missed its ACK: the server's reply went to
//! the backup's bridge port) and measures the race between the backup
//! leaving the LAN and the wired DHCP client's first packet.
//!
//! `cargo bench --bench replug` (as root). Environment:
//!   NM_HANDOVER_BENCH_CYCLES   re-plugs per row (default 100)
//!   NM_HANDOVER_BENCH_ROWS     comma-separated row keys (default: all)
//!   NM_HANDOVER_BENCH_OUT      results file (default: bench-results/replug-traffic.md)

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::process::{Command, ExitCode};

use support::*;

struct RowSpec {
    key: &'static str,
    name: &'static str,
    /// The patched build of this version (nm-patch/build), or Debian's stock NM.
    patched: Option<&'static str>,
    /// Stock NM of this version built unpatched by nm-patch/build (beside a patched row of the same version).
    unpatched_build: Option<&'static str>,
    pair_args: &'static [&'static str],
    /// The alternative to a hook inside NM: the wired profile never connects
    /// by itself (`autoconnect=no`) and a resident service brings it up when
    /// its carrier returns, after taking the backup down through NM.
    wired_by_service: bool,
}

/// That service, as a user would write it with NM's own tools: whenever
/// the wired link reports carrier while its profile is not active, the
/// backup is deactivated and then the wired profile activated. `nmcli`
/// returns only once NM is done, so the backup is off the LAN before the
/// wired DHCP client starts (break before make). Its errors go to `$1`.
const WIRED_BY_SERVICE: &str = r#"
log=$1
ip monitor link | while read -r line; do
    case "$line" in *" wired0: "*|*" wired0@"*) ;; *) continue ;; esac
    case "$line" in *LOWER_UP*) ;; *) continue ;; esac
    [ -n "$(nmcli -g GENERAL.STATE connection show 'Office LAN' 2>>"$log")" ] && continue
    nmcli connection down 'Backup link' >>"$log" 2>&1
    nmcli connection up 'Office LAN' >>"$log" 2>&1
done
"#;

const ROWS: &[RowSpec] = &[
    RowSpec {
        key: "stock-no-watcher",
        name: "control: stock NM, no carrier watcher (`pair --no-carrier-watch`)",
        patched: None,
        unpatched_build: None,
        pair_args: &["--no-carrier-watch"],
        wired_by_service: false,
    },
    RowSpec {
        key: "stock-watcher",
        name: "stock NM with the carrier watcher (default)",
        patched: None,
        unpatched_build: None,
        pair_args: &[],
        wired_by_service: false,
    },
    RowSpec {
        key: "patched-1.42",
        name: "patched NM backport (link-up)",
        patched: Some("1.42.4"),
        unpatched_build: None,
        pair_args: &[],
        wired_by_service: false,
    },
    RowSpec {
        key: "stock-1.58-no-watcher",
        name: "control: stock NM built from Debian's source, no carrier watcher",
        patched: None,
        unpatched_build: Some("1.58.1"),
        pair_args: &["--no-carrier-watch"],
        wired_by_service: false,
    },
    RowSpec {
        key: "stock-1.58-watcher",
        name: "stock NM built from Debian's source, carrier watcher",
        patched: None,
        unpatched_build: Some("1.58.1"),
        pair_args: &[],
        wired_by_service: false,
    },
    RowSpec {
        key: "stock-wired-by-service",
        name: "alternative: stock NM, no carrier watcher, wired `autoconnect=no` brought up by a carrier service after the backup is down",
        patched: None,
        unpatched_build: None,
        pair_args: &["--no-carrier-watch"],
        wired_by_service: true,
    },
    RowSpec { key: "patched-1.58", name: "patched NM (link-up)", patched: Some("1.58.1"), unpatched_build: None, pair_args: &[], wired_by_service: false },
];

struct Row {
    nm_version: String,
    samples: Vec<ReplugSample>,
    tcp: TcpReport,
}

fn run_row(spec: &RowSpec, cycles: usize) -> Result<Row, String> {
    let cfg = LabConfig::of_build(DhcpServer::IscDhcpd, DhcpClient::Internal, spec.patched, spec.unpatched_build)?;
    let nm_version = Command::new(&cfg.nm_daemon).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    let p = paired(spec.key, cfg, spec.pair_args).ok_or("the lab did not start (see above)")?;
    if spec.wired_by_service {
        p.lab.nmcli(&["connection", "modify", "Office LAN", "connection.autoconnect", "no"]).map_err(|e| e.to_string())?;
        // Stopped with the lab, which ends every process in its namespaces.
        let log = p.lab.dir.join("wired-service.log");
        p.lab.host_command(&["sh", "-c", WIRED_BY_SERVICE, "sh", log.to_str().unwrap()]).spawn().map_err(|e| format!("the carrier service: {e}"))?;
    }
    let (samples, tcp) = replugs_under_traffic(&p, cycles, |cycle, s| {
        if s.note.is_some() || s.replug.is_none_or(|r| r > SLOW_REPLUG) {
            eprintln!("{}: cycle {cycle}: {s:?}", spec.key);
        }
    });
    Ok(Row { nm_version, samples, tcp })
}

fn main() -> ExitCode {
    let cycles = env_usize("NM_HANDOVER_BENCH_CYCLES", 100);
    let wanted = wanted_rows();
    let out_path = bench_out("replug-traffic.md");
    let mut out = String::new();
    writeln!(out, "## Re-plug under traffic: the backup leaves before the wired DHCP client speaks\n").unwrap();
    out.push_str(&ran_on(&["benches/replug.rs", "tests/support", "src", "nm-patch", "Cargo.lock"]));
    writeln!(out, "Machine: {}.  ", machine()).unwrap();
    writeln!(
        out,
        "Command: `cargo bench --bench replug` (NM_HANDOVER_BENCH_CYCLES={cycles}: {cycles} pull/re-plug cycles per row). \
         Lab: ISC dhcpd, NM's internal DHCP client, the backup a veth; a ping every 5 ms from the laptop to the server and a \
         TCP request/response every 20 ms run through the backup when the cable returns. One machine, one run: the rows are \
         comparable with each other.\n"
    )
    .unwrap();
    writeln!(
        out,
        "A re-plug is *slow* when the wired link holds the address more than {} ms after the plug (the wired client missed \
         its ACK and retried). *Carrier → backup off*: from the wired link's carrier (`ip monitor`) to the backup set down or \
         its address removed (`ip monitor`). *Carrier → first wired DHCP packet*: to the packet on the wired link's bridge \
         port (tcpdump, kernel timestamp, against the monitor's carrier stamp taken when read). *Lead*: the first wired DHCP \
         packet minus the backup's last frame from the shared MAC on its own bridge port (both tcpdump, kernel timestamps); a \
         race is won when the backup sent nothing after the wired client's first packet, i.e. the bridge learns the wired \
         port for the MAC and delivers the server's answer there. With a 5 ms ping the backup's last frame precedes its \
         going down by up to 5 ms; a capture that saw no frame of the backup since the pull leaves the race not measured \
         (never won). *TCP stall at a re-plug*: the session's longest time without a completed round trip from the plug \
         until it carried traffic again, per re-plug. Times in ms as median / p95 / max.\n",
        SLOW_REPLUG.as_millis()
    )
    .unwrap();
    writeln!(out, "| configuration | NM | re-plugs | slow (> 500 ms) | re-plug → wired holds the address | carrier → backup off | carrier → first wired DHCP packet | races won (backup off first) | lead (median / min) | IP changed | TCP session | TCP stall at a re-plug |").unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    let mut notes = Vec::new();
    for spec in ROWS.iter().filter(|s| wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == s.key))) {
        eprintln!("bench replug: {} ({cycles} cycles)", spec.name);
        let row = match run_row(spec, cycles) {
            Ok(row) => row,
            Err(e) => {
                notes.push(format!("- not measured: {}: {e}", spec.name));
                continue;
            }
        };
        let replugs: Vec<f64> = row.samples.iter().filter_map(|s| s.replug).map(millis).collect();
        let slow = row.samples.iter().filter(|s| s.replug.is_none_or(|r| r > SLOW_REPLUG)).count();
        let off: Vec<f64> = row.samples.iter().filter_map(|s| s.carrier_to_backup_off).map(millis).collect();
        let dhcp: Vec<f64> = row.samples.iter().filter_map(|s| s.carrier_to_first_dhcp).map(millis).collect();
        let mut leads: Vec<f64> = row.samples.iter().filter_map(|s| s.lead_ms).collect();
        let won = leads.iter().filter(|l| **l > 0.0).count();
        leads.sort_by(f64::total_cmp);
        let lead = if leads.is_empty() { "n/a".into() } else { format!("{:.1} / {:.1}", leads[leads.len() / 2], leads[0]) };
        // A race whose capture saw no frame of the backup is not measured: never counted as won.
        let unmeasured = row.samples.len() - leads.len();
        let races = match unmeasured {
            0 => format!("{won} of {}", row.samples.len()),
            n => format!("{won} of {} ({n} not measured)", row.samples.len()),
        };
        let stalls: Vec<f64> = row.samples.iter().filter_map(|s| s.stall).map(millis).collect();
        // A re-plug after which the session carried no traffic within 10 s has no stall sample: counted, not dropped.
        let stalls_text = match row.samples.len() - stalls.len() {
            0 => median_p95_max(stalls),
            n => format!("{}; {n} more > 10000 (no traffic)", median_p95_max(stalls)),
        };
        let ip_changed = row.samples.iter().filter(|s| !s.ip_kept).count();
        let tcp = if row.tcp.survived() { "survived".to_owned() } else { format!("reset: {:?}", row.tcp.error) };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {races} | {lead} | {ip_changed} | {tcp} | {} |",
            spec.name,
            row.nm_version,
            row.samples.len(),
            slow,
            median_p95_max(replugs),
            median_p95_max(off),
            median_p95_max(dhcp),
            stalls_text,
        )
        .unwrap();
        for (cycle, s) in row.samples.iter().enumerate() {
            if let Some(note) = &s.note {
                notes.push(format!("- {}: {note}", spec.key));
            } else if s.replug.is_none_or(|r| r > SLOW_REPLUG) {
                notes.push(format!("- {}: cycle {cycle}: slow re-plug: {s:?}", spec.key));
            }
        }
    }
    publish_report("replug", out, &notes, &out_path)
}
