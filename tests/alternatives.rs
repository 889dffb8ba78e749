//! The alternatives to the companion (and to the `link-up` action) that an
//! NM maintainer names first, measured in the same lab of real parts.
//!
//! Needs root (network namespaces) and `mptcpize`; as non-root every test
//! says why it skips (under CI it fails instead).

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn ip_host(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("ip").args(["-n", &lab.host]).args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// MPTCP (`connection.mptcp-flags`; NetworkManager's default makes every
/// address of a link with a default route a `subflow` endpoint when the
/// kernel has `net.mptcp.enabled=1`; here `also-without-default-route`,
/// the lab's LAN having no router): both links on the LAN with addresses
/// of their own, no companion, NM's default 6 s carrier-wait, an MPTCP
/// session to an MPTCP-capable echo peer beside a plain TCP session. What
/// it shows: a session survives the pull when *both ends* speak MPTCP, but
/// the laptop has two addresses on the LAN and changes between them, and
/// every plain TCP session (most servers: ssh, databases) is carried by
/// one address only.
#[test]
fn mptcp_carries_a_session_to_an_mptcp_peer_across_a_pull_but_not_plain_tcp() {
    let test = "alternative: MPTCP";
    if Command::new("mptcpize").arg("--help").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "{test}: mptcpize is missing (tests/setup-debian.sh installs it)");
        eprintln!("SKIPPED: {test}: mptcpize is not installed (tests/setup-debian.sh installs it)");
        return;
    }
    let mut cfg = LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal);
    cfg.mptcp_peer = true;
    let Some(lab) = start_or_skip(test, cfg) else { return };
    // The lab's LAN has no router: NM's default makes endpoints only on links
    // with a default route (both links of a laptop on an office LAN have one).
    for (profile, iface) in [("Office LAN", "wired0"), ("Backup link", "backup0")] {
        lab.add_ethernet_profile(profile, iface, true);
        lab.nmcli(&["connection", "modify", profile, "connection.mptcp-flags", "enabled,subflow,also-without-default-route"]).expect("set mptcp-flags");
        lab.nmcli(&["connection", "up", profile]).expect("activate with the MPTCP flags");
    }
    lab.expect_until("both links' own addresses", Duration::from_secs(30), || lab.ipv4("wired0").is_some() && lab.ipv4("backup0").is_some());
    let (wired, backup) = (lab.ipv4("wired0").unwrap(), lab.ipv4("backup0").unwrap());
    let endpoints = lab
        .wait_until("NetworkManager's MPTCP endpoints for both addresses", Duration::from_secs(10), || {
            let shown = ip_host(&lab, &["mptcp", "endpoint", "show"]);
            shown.contains(&wired.to_string()) && shown.contains(&backup.to_string())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{test}: {e}\nendpoints: {}\nroutes: {}\nlimits: {}\n{}",
                ip_host(&lab, &["mptcp", "endpoint", "show"]),
                ip_host(&lab, &["route"]),
                ip_host(&lab, &["mptcp", "limits", "show"]),
                lab.diagnostics()
            )
        });
    measured(test, "MPTCP endpoints for both addresses after", ms(endpoints));
    measured(test, "ip mptcp endpoint show", ip_host(&lab, &["mptcp", "endpoint", "show"]).replace('\n', " | "));
    measured(test, "ip mptcp limits show", ip_host(&lab, &["mptcp", "limits", "show"]).replace('\n', " | "));

    let mptcp = TcpSession::open_mptcp(&lab);
    let plain = TcpSession::open(&lab);
    assert!(mptcp.wait_for_traffic(5, Duration::from_secs(5)) && plain.wait_for_traffic(5, Duration::from_secs(5)), "{}", lab.diagnostics());
    // The second subflow is set up right after the first: give it time.
    std::thread::sleep(Duration::from_secs(2));
    let ss = Command::new("ip").args(["netns", "exec", &lab.host, "ss", "-tnH", "state", "established"]).output().expect("run ss");
    let subflows = String::from_utf8_lossy(&ss.stdout).into_owned();
    measured(test, "subflows to the MPTCP peer before the pull", subflows.lines().filter(|l| l.contains(&format!(":{MPTCP_PORT}"))).count());
    mptcp.reset_stall();

    lab.pull_cable();
    // A round trip in flight at the pull may still complete: the plain
    // session counts from a second after it.
    std::thread::sleep(Duration::from_secs(1));
    plain.reset_stall();
    assert!(mptcp.wait_for_traffic(10, Duration::from_secs(15)), "{test}: the MPTCP session after the pull: {:?}\n{}", mptcp.report(), lab.diagnostics());
    let pull = mptcp.report();
    measured(test, "pull: longest stall of the MPTCP session", ms(pull.longest_stall));
    // NM's default carrier-wait (6 s) and the address gone after it: the plain session, from the wired address, has no path.
    std::thread::sleep(Duration::from_secs(7));
    let plain_pull = plain.report();
    measured(
        test,
        "pull: the plain TCP session (from the wired address) from 1 s to 8 s after the pull",
        format!("{} round trips since the pull, stalled {}", plain_pull.round_trips - plain_pull.round_trips_at_reset, ms(plain_pull.longest_stall)),
    );
    assert!(!plain_pull.survived(), "{test}: a plain TCP session from the wired address should have no path after the pull: {plain_pull:?}");
    assert_eq!(lab.ipv4("wired0"), None, "{test}: the wired address is gone after the carrier-wait");
    assert_eq!(lab.ipv4("backup0"), Some(backup), "{test}: the backup keeps its own, other address: the laptop changed address");
    mptcp.reset_stall();

    lab.plug_cable();
    lab.expect_until("the wired address again", Duration::from_secs(30), || lab.ipv4("wired0").is_some());
    assert!(mptcp.wait_for_traffic(10, Duration::from_secs(15)), "{test}: the MPTCP session after the re-plug: {:?}\n{}", mptcp.report(), lab.diagnostics());
    let replug = mptcp.close();
    measured(test, "re-plug: longest stall of the MPTCP session", ms(replug.longest_stall));
    assert!(replug.survived(), "{test}: {replug:?}");
    assert!(pull.longest_stall < Duration::from_secs(3), "{test}: the MPTCP session stalled {:?} at the pull", pull.longest_stall);
    let plain_end = plain.close();
    measured(test, "the plain TCP session after the re-plug", format!("{plain_end:?}"));
}
