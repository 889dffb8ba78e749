//! NetworkManager's native alternative to `link-up` (nm-patch/native-1.58,
//! a prototype series on 1.58.1, no companion): the wired profile names the
//! backup profile it takes over from; NetworkManager takes the backup off
//! the LAN before the wired link's DHCP starts, keeps it from autoconnecting
//! while the wired profile is active, and lets it autoconnect again at a
//! pull. The same pull and re-plug are measured on the `link-up` series
//! with the companion in `benches/take_over.rs`.
//!
//! Needs root and the prototype's build (`nm-patch/build --series
//! native-1.58`, which `tests/run.sh` runs); without them the test says why
//! it skips (under CI it fails).

mod support;

use std::time::Duration;

use support::*;

#[test]
fn native_take_over_keeps_one_address_across_pulls_and_replugs() {
    let test = "native/take-over";
    let Some((lab, addr)) = native_lab(test) else { return };
    // The backup is a candidate for autoconnect now, and stays off the LAN
    // while the wired profile is active.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(nm_state(&lab, "Backup link"), "", "the backup autoconnected beside the active wired profile\n{}", lab.diagnostics());
    for cycle in 1..=2 {
        let c = take_over_cycle(&lab, addr, "backup0").unwrap_or_else(|why| panic!("{test} (cycle {cycle}): {why}\n{}", lab.diagnostics()));
        measured(test, &format!("cycle {cycle}: pull -> backup holds the same address"), ms(c.pull));
        measured(test, &format!("cycle {cycle}: re-plug -> wired holds it, backup off the LAN"), ms(c.replug));
        measured(test, &format!("cycle {cycle}: backup's last frame - wired's first DHCP packet"), format!("{:.1} ms", c.overlap_ms));
        assert!(c.pull <= pull_bound(false), "{test}: the pull took {:?}\n{}", c.pull, lab.diagnostics());
        assert!(c.replug <= replug_bound(false), "{test}: the re-plug took {:?}\n{}", c.replug, lab.diagnostics());
        assert!(c.overlap_ms < 0.0, "{test}: the backup sent {:.1} ms after the wired link's first DHCP packet\n{}", c.overlap_ms, lab.diagnostics());
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(nm_state(&lab, "Backup link"), "", "the backup came back beside the wired link\n{}", lab.diagnostics());
        assert_eq!(nm_state(&lab, "Office LAN"), "activated");
    }
    assert!(!lab.server_log().contains("Abandoning IP address"), "{}", lab.diagnostics());
    let log = lab.nm_log();
    assert_eq!(log.matches("Activation: taking over from 'Backup link' on backup0").count(), 2, "{}", lab.diagnostics());
}
