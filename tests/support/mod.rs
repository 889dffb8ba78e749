//! The test lab: real NetworkManager, nm-dispatcher, D-Bus, ISC dhcpd or
//! dnsmasq and a TCP peer, in network namespaces the test creates.
//!
//! ```text
//!   ns "<name>-lan":  br0 198.18.0.1/24, DHCP server, TCP echo peer :7000
//!                      ├── p-wired0  (cable pull = this port down)
//!                      └── p-backup0
//!   ns "<name>-host": wired0, backup0 (veth peers of the ports above);
//!                     NetworkManager + nm-dispatcher on a private D-Bus, in a
//!                     private mount namespace with private /run,
//!                     /etc/NetworkManager, /var/lib/NetworkManager, read-only /sys
//! ```
//! Nothing runs in, or changes, the root network namespace. `Drop` tears
//! everything down, also when a test fails.

#![allow(dead_code, unused_imports)]

pub mod lab;
pub mod net;
pub mod scenario;
pub mod vm;

pub use lab::*;
pub use net::*;
pub use scenario::*;
pub use vm::*;

/// A small deterministic generator (no dependency): xorshift64*, for
/// reproducible random intervals and kill points.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The machine a benchmark ran on, for its report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next().map(str::to_owned)).unwrap_or_default();
    let nm = std::process::Command::new("/usr/sbin/NetworkManager")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    // dhcpd names its version on stderr ("isc-dhcpd-4.4.3-P1").
    let dhcpd = std::process::Command::new("dhcpd").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned()).unwrap_or_default();
    format!(
        "{} CPUs ({cpu}), {}, kernel {}, Debian NetworkManager {nm}, {dhcpd}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" "),
        kernel.trim()
    )
}

/// A count from the environment (a benchmark's cycles, runs), or `default`.
/// `NetworkManager --version` of a daemon binary ("" when it does not run).
pub fn nm_version(daemon: &std::path::Path) -> String {
    std::process::Command::new(daemon).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

/// The rows a bench runs: `NM_HANDOVER_BENCH_ROWS` (comma-separated keys), or all (`None`).
pub fn wanted_rows() -> Option<Vec<String>> {
    std::env::var("NM_HANDOVER_BENCH_ROWS").ok().map(|v| v.split(',').map(str::to_owned).collect())
}

/// Where a bench writes its report: `NM_HANDOVER_BENCH_OUT`, or `bench-results/<file>`.
pub fn bench_out(file: &str) -> std::path::PathBuf {
    std::env::var_os("NM_HANDOVER_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results").join(file))
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `d` in milliseconds, for benchmark samples.
pub fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// "median / p95 / max" of `v`, for benchmark tables, and the split of a
/// sample of two modes (see [`two_modes`]).
pub fn median_p95_max(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let stats = format!("{:.1} / {:.1} / {:.1}", at(0.5), at(0.95), v[v.len() - 1]);
    match two_modes(&v) {
        Some((lower, upper)) => format!("{stats} (two modes: {})", fmt_split(&lower, &upper)),
        None => stats,
    }
}

/// The stamp a result file carries: the commit the benchmark ran on and the
/// paths whose later change makes the file stale (`bench-results/check-docs`
/// reads it). A tree with uncommitted changes is stamped `dirty-COMMIT`,
/// which check-docs refuses for a published file.
pub fn ran_on(depends: &[&str]) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR")])
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=7", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Result files themselves are written by the run: they do not make it dirty.
    let dirty = git(&["status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench-results"]).is_none_or(|s| !s.is_empty());
    format!("<!-- ran-on: {}{commit}; depends: {} -->\n", if dirty { "dirty-" } else { "" }, depends.join(" "))
}

/// A sample of two separate modes (the largest step between neighbours at
/// least 3x, each side at least 2 samples), as (lower, upper); None when it
/// is one mode. A median of such a sample falls on whichever mode the rank
/// lands in, so it is reported as a split and divides nothing.
pub fn two_modes(v: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
    // (Signed samples, such as the overlap, are never split: a step across 0 is no ratio.)
    if v.iter().any(|x| *x <= 0.0) {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let (i, step) = (1..s.len().saturating_sub(2)).map(|i| (i + 1, s[i + 1] / s[i].max(1.0))).max_by(|a, b| a.1.total_cmp(&b.1))?;
    (step >= 3.0 && i >= 2).then(|| (s[..i].to_vec(), s[i..].to_vec()))
}

/// "12 of 20 ≈ 20, 8 ≈ 210": the size and median of each mode.
pub fn fmt_split(lower: &[f64], upper: &[f64]) -> String {
    let n = lower.len() + upper.len();
    format!("{} of {n} ≈ {:.0}, {} ≈ {:.0}", lower.len(), median(lower.to_vec()), upper.len(), median(upper.to_vec()))
}

/// Prints a benchmark's report with its notes and writes it to `path`.
pub fn publish_report(bench: &str, mut report: String, notes: &[String], path: &std::path::Path) -> std::process::ExitCode {
    if !notes.is_empty() {
        report.push_str(&format!("\n{}\n", notes.join("\n")));
    }
    print!("{report}");
    match std::fs::write(path, &report) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench {bench}: cannot write {}: {e}", path.display());
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    #[test]
    fn two_modes_are_split_and_one_mode_is_not() {
        let stalls = [20.0, 21.0, 19.0, 204.0, 22.0, 210.0, 20.0, 213.0];
        let (lower, upper) = two_modes(&stalls).expect("two modes");
        assert_eq!((lower.len(), upper.len()), (5, 3));
        assert_eq!(fmt_split(&lower, &upper), "5 of 8 ≈ 20, 3 ≈ 210");
        assert!(two_modes(&[359.0, 370.0, 371.0, 362.0, 365.0]).is_none());
        // One outlier is not a mode.
        assert!(two_modes(&[7.0, 8.0, 9.0, 7.0, 2007.0]).is_none());
        assert!(two_modes(&[-7.0, -5.0, 25.0, 30.0]).is_none());
    }
}
