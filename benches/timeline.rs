//! Where a pull's and a re-plug's outage goes, on real 802.11 (the Wi-Fi
//! VM): for each configuration, every event around each handover on one
//! clock (the wall clock every log here stamps), the outage of a 100 Hz ping
//! to the LAN peer cut into the stretches between them, and what no event
//! explains. The median cycle's timeline as a table, and as an SVG of which
//! link held the address when.
//!
//! Events: the kernel's (carrier, addresses: `ip monitor`), NetworkManager's
//! log (carrier-wait, device states, dispatcher calls, the Wi-Fi's
//! association and key handshake, DHCP), the companion's and the
//! supervisor's log, and the probe's replies (each with its round trip, so
//! the first reply after the outage is split into the wait for the probe's
//! next ping, at most its 10 ms interval, and the round trip itself).
//!
//! `cargo bench --bench timeline` (as root; boots the Wi-Fi VM).
//!   NM_HANDOVER_BENCH_CYCLES  pull/re-plug cycles per configuration (default 7)
//!   NM_HANDOVER_BENCH_ROWS    configurations (default: wifi-stock,wifi-standby,wifi-bond)
//!   NM_HANDOVER_BENCH_OUT     results file (default: bench-results/timeline.md; the SVGs beside it)

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use support::*;

/// The probe's interval: the longest a restored path waits for the next ping.
const PROBE_INTERVAL_MS: f64 = 10.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    Stock,
    Standby,
    Bond,
}

impl Config {
    fn key(self) -> &'static str {
        match self {
            Config::Stock => "wifi-stock",
            Config::Standby => "wifi-standby",
            Config::Bond => "wifi-bond",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Config::Stock => "nm-handover, stock NM 1.42 (the backup activated at the pull)",
            Config::Standby => "nm-handover with the warm standby (pair --standby), stock NM 1.42",
            Config::Bond => "NetworkManager bond, active-backup, the Wi-Fi a port",
        }
    }
}

/// Lines of NetworkManager's log that mark a step, and what each is called.
const NM_EVENTS: &[(&str, &str)] = &[
    ("(wired0): carrier: link disconnected (deferring", "NM: wired carrier lost, carrier-wait starts"),
    ("(wired0): carrier: link disconnected (calling deferred", "NM: carrier-wait over"),
    ("device (wired0): state change: activated -> unavailable", "NM: wired link deactivated"),
    ("(wired0) dispatching action 'down'", "NM: dispatches down"),
    ("(wired0) dispatching action 'link-up'", "NM: dispatches link-up"),
    ("device (wired0): carrier: link connected", "NM: wired carrier back"),
    ("device (wired0): Activation: starting connection", "NM: wired activation starts"),
    ("dhcp4 (wired0): activation: beginning transaction", "NM: wired DHCP starts"),
    ("dhcp4 (wired0): event: send", "NM: wired DHCP sends"),
    ("dhcp4 (wired0): event: received ACK", "NM: wired DHCP ACK"),
    ("device (wlan0): Activation: starting connection", "NM: Wi-Fi activation starts"),
    ("(wlan0): Activation: (wifi) access point", "NM: Wi-Fi secrets asked for"),
    ("device (wlan0): supplicant interface state: associating -> associated", "wpa_supplicant: associated"),
    ("device (wlan0): supplicant interface state: 4way_handshake -> completed", "wpa_supplicant: key handshake done"),
    ("dhcp4 (wlan0): event: send", "NM: Wi-Fi DHCP sends"),
    ("dhcp4 (wlan0): event: received ACK", "NM: Wi-Fi DHCP ACK"),
    ("(wlan0): reapply (version-id", "NM: standby reapplied"),
    ("device (wlan0): state change: secondaries -> activated", "NM: Wi-Fi activated"),
    ("(wired0): Activation: successful", "NM: wired activated"),
    ("(wlan0): Activation: successful", "NM: Wi-Fi activated"),
];

/// Lines of the companion's and the supervisor's log that mark a step.
const COMPANION_EVENTS: &[(&str, &str)] = &[
    ("holds the address (warm standby)", "standby: address and routes on the Wi-Fi"),
    ("left the LAN's address (warm standby)", "standby: address off the Wi-Fi"),
    ("reapplied the standby of", "supervisor: standby reapplied"),
    ("hook=Reconcile observed", "supervisor: decides"),
    ("action=down}: ", "companion: down runs"),
    ("action=link-up}: ", "companion: link-up runs"),
    ("asked NetworkManager to activate", "companion: activation asked"),
    ("took wlan0 off the LAN", "watcher: Wi-Fi off the LAN"),
    ("which watched this pull, hands it over", "dispatcher entry: down left to the supervisor"),
];

/// Events on the wall clock (s) with what each is.
type Events = Vec<(f64, String)>;

/// Which link held the address when: (iface, from, to), wall clock (s).
type Holders = Vec<(String, f64, f64)>;

/// One handover's events on the wall clock (s), in order.
struct Handover {
    what: &'static str,
    at: f64,
    events: Events,
    /// The outage: the replies around the probe's longest gap, and the round trip of the second.
    outage: Option<(f64, f64, f64)>,
    holders: Holders,
    replies: Vec<f64>,
}

struct Stretch {
    from: f64,
    to: f64,
    ends_with: String,
}

impl Handover {
    fn outage_ms(&self) -> Option<f64> {
        self.outage.map(|(a, b, _)| (b - a) * 1000.0)
    }

    /// The outage cut at each event inside it, the cause of each stretch
    /// being the event that ends it; and the part no event explains.
    fn stretches(&self) -> Option<(Vec<Stretch>, f64)> {
        let (a, b, rtt_ms) = self.outage?;
        let sent = b - rtt_ms / 1000.0;
        let mut marks: Vec<(f64, String)> = vec![(self.at, format!("the cable {}", self.what))];
        marks.extend(self.events.iter().filter(|(t, _)| *t > a && *t < sent).cloned());
        marks.sort_by(|x, y| x.0.total_cmp(&y.0));
        let mut stretches = Vec::new();
        let mut from = a;
        for (t, label) in marks.into_iter().filter(|(t, _)| *t >= a) {
            stretches.push(Stretch { from, to: t, ends_with: label });
            from = t;
        }
        let waited = sent - from;
        // Up to one interval is the probe's cadence; beyond it nothing says why.
        let cadence = waited.clamp(0.0, PROBE_INTERVAL_MS / 1000.0);
        let unexplained = (waited - cadence).max(0.0);
        if unexplained > 0.0 {
            stretches.push(Stretch { from, to: from + unexplained, ends_with: "(no event: unattributed)".into() });
        }
        stretches.push(Stretch { from: from + unexplained, to: sent, ends_with: "the probe's next ping sent (10 ms cadence)".into() });
        stretches.push(Stretch { from: sent, to: b, ends_with: "its reply (round trip)".into() });
        Some((stretches, unexplained * 1000.0))
    }
}

/// `[1796489311.2186]`-stamped lines of `log` matching `patterns` in `[from, to]`.
fn log_events(log: &str, patterns: &[(&str, &str)], from: f64, to: f64) -> Vec<(f64, String)> {
    log.lines()
        .filter_map(|line| {
            let stamp = log_stamp(line)?;
            let (_, label) = patterns.iter().find(|(p, _)| line.contains(p))?;
            (stamp >= from && stamp <= to).then(|| (stamp, label.to_string()))
        })
        .collect()
}

/// The kernel's events of the handover and who held `addr` when.
fn kernel_events(monitor: &NetMonitor, since: Instant, addr: Ipv4Addr, held: Vec<(String, f64)>, until: f64) -> (Events, Holders) {
    let mut events = Vec::new();
    let mut holding = held;
    let mut holders = Vec::new();
    for (t, event) in monitor.events_since(since) {
        let t = epoch_secs(monitor.wall_clock(t));
        match event {
            NetEvent::Carrier { iface, up } => events.push((t, format!("kernel: {iface} carrier {}", if up { "up" } else { "down" }))),
            NetEvent::AddressAdded { iface, addr: a } if a == addr => {
                events.push((t, format!("kernel: address on {iface}")));
                holding.push((iface, t));
            }
            NetEvent::AddressRemoved { iface, addr: a } if a == addr => {
                events.push((t, format!("kernel: address off {iface}")));
                if let Some(i) = holding.iter().position(|(h, _)| *h == iface) {
                    let (iface, from) = holding.remove(i);
                    holders.push((iface, from, t));
                }
            }
            _ => {}
        }
    }
    holders.extend(holding.into_iter().map(|(iface, from)| (iface, from, until)));
    (events, holders)
}

fn setup(config: Config) -> Result<(Lab, Ipv4Addr, &'static str), String> {
    let test = format!("bench timeline: {}", config.key());
    let cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal).with_wifi();
    match config {
        Config::Bond => {
            let lab = Lab::start(cfg).map_err(|e| e.to_string())?;
            let addr = wifi_bond(&lab).map_err(|e| e.to_string())?;
            Ok((lab, addr, "bond0"))
        }
        Config::Stock | Config::Standby => {
            let args: &[&str] = if config == Config::Standby { &["--standby"] } else { &[] };
            let p = paired(&test, cfg, args).ok_or("the lab cannot run here")?;
            Ok((p.lab, p.addr, "wlan0"))
        }
    }
}

/// How long the docked station's traffic with the access point is counted.
const DOCKED_FOR: Duration = Duration::from_secs(60);

/// What a station associated while docked costs the air: the frames and
/// bytes the access point received from it and sent to it over [`DOCKED_FOR`]
/// with the cable in (the standby's; the bond's Wi-Fi port's), none of the
/// LAN's traffic through it.
fn docked_airtime(lab: &Lab) -> Result<String, String> {
    // (The bond's Wi-Fi port carries the bond's address, which may not be the wired port's.)
    let mac = lab.ap_stations().into_iter().next().ok_or("no station is associated while docked")?;
    let before = lab.ap_station_counters(&mac).ok_or("the access point has no counters for the station")?;
    std::thread::sleep(DOCKED_FOR);
    let after = lab.ap_station_counters(&mac).ok_or("the station left while docked")?;
    Ok(format!(
        "Docked for {} s (the cable in, idle): the access point received {} frames ({} bytes) from the station and sent it {} ({} bytes).",
        DOCKED_FOR.as_secs(),
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
        after.2.saturating_sub(before.2),
        after.3.saturating_sub(before.3)
    ))
}

fn run(config: Config, cycles: usize) -> Result<(Vec<Handover>, Option<String>), String> {
    let (lab, addr, holder) = setup(config)?;
    let monitor = NetMonitor::start(&lab);
    let probe = Probe::start(&lab);
    let e = |e: LabError| e.to_string();
    let ready = |lab: &Lab| -> Result<(), String> {
        if config == Config::Standby {
            lab.wait_until("the warm standby", Duration::from_secs(60), || {
                lab.nmcli(&["-g", "GENERAL.STATE", "connection", "show", "Office Wi-Fi (nm-handover standby)"]).is_ok_and(|s| s.trim() == "activated")
                    && lab.ipv4("wlan0").is_none()
            })
            .map_err(e)?;
        }
        Ok(())
    };
    let airtime = match config {
        Config::Stock => None,
        Config::Standby | Config::Bond => {
            ready(&lab)?;
            Some(docked_airtime(&lab).unwrap_or_else(|why| format!("Docked airtime not measured: {why}.")))
        }
    };
    let mut handovers = Vec::new();
    for _ in 0..cycles {
        ready(&lab)?;
        std::thread::sleep(Duration::from_secs(1));
        for (what, plugged) in [("pulled", false), ("plugged back", true)] {
            let held: Vec<(String, f64)> = ["wired0", "wlan0", "bond0"]
                .iter()
                .filter(|i| lab.ipv4(i) == Some(addr))
                .map(|i| (i.to_string(), epoch_secs(SystemTime::now()) - 0.5))
                .collect();
            let since = Instant::now();
            let at = epoch_secs(SystemTime::now());
            lab.set_cable("wired0", plugged);
            // (The bond keeps the address on bond0 throughout.)
            let settled = |lab: &Lab| {
                if plugged && holder != "bond0" {
                    lab.ipv4("wired0") == Some(addr) && lab.ipv4("wlan0").is_none()
                } else {
                    lab.ipv4(holder) == Some(addr)
                }
            };
            lab.wait_until("the address where it belongs", Duration::from_secs(30), || settled(&lab)).map_err(e)?;
            std::thread::sleep(Duration::from_secs(3));
            let until = epoch_secs(SystemTime::now());
            let (mut events, holders) = kernel_events(&monitor, since, addr, held, until);
            events.extend(log_events(&lab.nm_log(), NM_EVENTS, at, until));
            events.extend(log_events(&lab.dispatcher_log(), COMPANION_EVENTS, at, until));
            events.sort_by(|x, y| x.0.total_cmp(&y.0));
            let replies = probe.replies();
            let before = replies.iter().rev().find(|(t, _)| *t < at).copied();
            let window: Vec<(f64, f64)> = before.into_iter().chain(replies.iter().copied().filter(|(t, _)| *t >= at && *t <= until)).collect();
            let outage = window.windows(2).max_by(|x, y| (x[1].0 - x[0].0).total_cmp(&(y[1].0 - y[0].0))).map(|w| (w[0].0, w[1].0, w[1].1));
            let replies = window.iter().map(|(t, _)| *t).collect();
            handovers.push(Handover { what, at, events, outage, holders, replies });
        }
    }
    Ok((handovers, airtime))
}

/// The handover whose outage is the median of its kind.
fn median_of<'a>(handovers: &'a [Handover], what: &str) -> Option<&'a Handover> {
    let mut of: Vec<&Handover> = handovers.iter().filter(|h| h.what == what && h.outage.is_some()).collect();
    of.sort_by(|x, y| x.outage_ms().unwrap_or(0.0).total_cmp(&y.outage_ms().unwrap_or(0.0)));
    of.get(of.len() / 2).copied()
}

fn svg(config: Config, h: &Handover) -> String {
    let (a, b, _) = h.outage.unwrap_or((h.at, h.at, 0.0));
    let (start, end) = (h.at.min(a) - 0.1, b + 0.15);
    let width = 960.0;
    let x = |t: f64| 160.0 + (t - start) / (end - start) * (width - 180.0);
    let mut s = String::new();
    let events: Vec<&(f64, String)> = h.events.iter().filter(|(t, _)| *t >= start && *t <= end).collect();
    let height = 150.0 + 14.0 * events.len() as f64;
    writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#).unwrap();
    writeln!(s, r#"<text x="10" y="16" font-size="13">{}: the median cable {} ({:.0} ms without a reply)</text>"#, config.name(), h.what, (b - a) * 1000.0)
        .unwrap();
    for (lane, iface) in ["wired0", "wlan0", "bond0"].iter().enumerate() {
        let y = 34.0 + 22.0 * lane as f64;
        writeln!(s, r#"<text x="10" y="{}">{iface} holds the address</text>"#, y + 11.0).unwrap();
        for (_, from, to) in h.holders.iter().filter(|(i, _, _)| i == iface) {
            let (from, to) = (from.max(start), to.min(end));
            writeln!(s, r##"<rect x="{:.1}" y="{y}" width="{:.1}" height="14" fill="#4a90d9"/>"##, x(from), (x(to) - x(from)).max(1.0)).unwrap();
        }
    }
    let y = 100.0;
    writeln!(s, r#"<text x="10" y="{}">ping replies</text>"#, y + 11.0).unwrap();
    writeln!(s, r##"<rect x="{:.1}" y="{y}" width="{:.1}" height="14" fill="#f3c4c4"/>"##, x(a), x(b) - x(a)).unwrap();
    for t in h.replies.iter().filter(|t| **t >= start && **t <= end) {
        writeln!(s, r##"<line x1="{0:.1}" x2="{0:.1}" y1="{y}" y2="{1}" stroke="#2a7a2a"/>"##, x(*t), y + 14.0).unwrap();
    }
    for (i, (t, label)) in events.iter().enumerate() {
        let ly = 135.0 + 14.0 * i as f64;
        writeln!(s, r##"<line x1="{0:.1}" x2="{0:.1}" y1="30" y2="{1}" stroke="#999" stroke-dasharray="2,2"/>"##, x(*t), ly - 4.0).unwrap();
        writeln!(s, r#"<text x="{:.1}" y="{ly}">{:+.0} ms {}</text>"#, x(*t) + 3.0, (t - h.at) * 1000.0, label.replace('&', "&amp;").replace('<', "&lt;"))
            .unwrap();
    }
    s.push_str("</svg>\n");
    s
}

fn report(config: Config, handovers: &[Handover], out_dir: &Path, out: &mut String) {
    writeln!(out, "\n### {}\n", config.name()).unwrap();
    for what in ["pulled", "plugged back"] {
        let of: Vec<&Handover> = handovers.iter().filter(|h| h.what == what).collect();
        let outages: Vec<f64> = of.iter().filter_map(|h| h.outage_ms()).collect();
        let unattributed: Vec<f64> = of.iter().filter_map(|h| Some(h.stretches()?.1 / h.outage_ms()?.max(1e-9) * 100.0)).collect();
        writeln!(
            out,
            "Cable {what}: {} cycles; outage {} ms (median / p95 / max); unattributed share of the outage {} % (median / p95 / max).\n",
            of.len(),
            median_p95_max(outages),
            median_p95_max(unattributed)
        )
        .unwrap();
        let Some(h) = median_of(handovers, what) else {
            writeln!(out, "(no cycle measured)\n").unwrap();
            continue;
        };
        let Some((stretches, unexplained)) = h.stretches() else { continue };
        let file = format!("timeline-{}-{}.svg", config.key(), if what == "pulled" { "pull" } else { "replug" });
        if let Err(err) = std::fs::write(out_dir.join(&file), svg(config, h)) {
            writeln!(out, "(cannot write {file}: {err})").unwrap();
        }
        let total = h.outage_ms().unwrap_or(0.0);
        writeln!(out, "The median one ({total:.0} ms; [{file}]({file})), from the probe's last reply before the cable {what}:\n").unwrap();
        writeln!(out, "| from (ms) | to (ms) | stretch (ms) | ends with |").unwrap();
        writeln!(out, "|---|---|---|---|").unwrap();
        let (a, _, _) = h.outage.unwrap();
        for st in &stretches {
            writeln!(out, "| {:.1} | {:.1} | {:.1} | {} |", (st.from - a) * 1000.0, (st.to - a) * 1000.0, (st.to - st.from) * 1000.0, st.ends_with).unwrap();
        }
        writeln!(out, "\nUnattributed: {unexplained:.1} ms of {total:.0} ({:.1} %).\n", unexplained / total.max(1e-9) * 100.0).unwrap();
    }
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    let cycles = env_usize("NM_HANDOVER_BENCH_CYCLES", 7);
    let out_path = bench_out("timeline.md");
    let wanted = wanted_rows().unwrap_or_else(|| ["wifi-stock", "wifi-standby", "wifi-bond"].map(str::to_owned).to_vec());
    if !in_vm() {
        let rows = wanted.join(",");
        let cycles_text = cycles.to_string();
        let vm_out: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wifi-vm/timeline/timeline.md");
        let _ = std::fs::create_dir_all(vm_out.parent().unwrap());
        let env = [
            ("NM_HANDOVER_BENCH_ROWS", rows.as_str()),
            ("NM_HANDOVER_BENCH_CYCLES", cycles_text.as_str()),
            ("NM_HANDOVER_BENCH_OUT", vm_out.to_str().unwrap()),
        ];
        let timeout = Duration::from_secs(600 + 40 * cycles as u64 * wanted.len() as u64);
        return match boot_vm("timeline", &["--bench"], &env, timeout) {
            Ok(run) if run.guest_status == Some(0) => {
                let dir = out_path.parent().unwrap_or(Path::new("."));
                for entry in std::fs::read_dir(vm_out.parent().unwrap()).into_iter().flatten().flatten() {
                    let name = entry.file_name();
                    if name.to_string_lossy().ends_with(".svg") {
                        let _ = std::fs::copy(entry.path(), dir.join(&name));
                    }
                }
                let report = std::fs::read_to_string(&vm_out).unwrap_or_else(|e| format!("(no report from the VM: {e})"));
                publish_report("timeline", report, &[], &out_path)
            }
            Ok(run) => {
                eprintln!("bench timeline: the Wi-Fi VM failed (status {:?}); its log is in {}", run.guest_status, run.out.display());
                ExitCode::FAILURE
            }
            Err(why) => {
                eprintln!("bench timeline: not measured: {why}");
                ExitCode::FAILURE
            }
        };
    }
    let mut out = String::new();
    writeln!(out, "## Where the outage goes: a timeline of each pull and re-plug on real 802.11\n").unwrap();
    out.push_str(&ran_on(&["benches/timeline.rs", "tests/support", "src", "Cargo.lock"]));
    writeln!(out, "Machine: {}.  ", machine()).unwrap();
    writeln!(
        out,
        "Command: `cargo bench --bench timeline` (NM_HANDOVER_BENCH_CYCLES={cycles}: {cycles} pull/re-plug cycles per configuration), in the Wi-Fi VM \
         (mac80211_hwsim, hostapd WPA2-PSK, ISC dhcpd, stock NetworkManager, under TCG: compare orderings and shares, not absolute times). \
         The outage is the longest gap of a 100 Hz ping to the LAN peer around each handover; it is cut at every event in it (the kernel's, from \
         `ip monitor` as read; NetworkManager's log; the companion's and the supervisor's log), each stretch ending with the event named; the \
         first reply after the outage is split into the wait for the probe's next ping (at most its 10 ms interval) and its round trip; what \
         remains is unattributed.\n"
    )
    .unwrap();
    let out_dir = out_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut notes = Vec::new();
    for config in [Config::Stock, Config::Standby, Config::Bond].into_iter().filter(|c| wanted.iter().any(|w| w == c.key())) {
        eprintln!("bench timeline: {}", config.key());
        match run(config, cycles) {
            Ok((handovers, airtime)) => {
                report(config, &handovers, &out_dir, &mut out);
                if let Some(airtime) = airtime {
                    writeln!(out, "{airtime}\n").unwrap();
                }
            }
            Err(why) => notes.push(format!("- not measured: {}: {why}", config.key())),
        }
    }
    publish_report("timeline", out, &notes, &out_path)
}
