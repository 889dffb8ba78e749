//! The installed package: tests/run.sh builds the .deb (debian/), installs it
//! with `dpkg -i`, runs this test with `NM_HANDOVER_INSTALLED=/usr/lib/NetworkManager`
//! and removes the package again. The files dpkg installed are README's
//! layout, and a lab pull and re-plug keep the address with the companion
//! taken from there (the lab's nm-dispatcher runs the installed entry, `pair`
//! is the installed command and starts the installed supervisor); `unpair`
//! then removes what `pair` recorded.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use support::*;

/// What the package installs (README's "Install" table): path -> where a link leads.
const LAYOUT: &[(&str, Option<&str>)] = &[
    ("/usr/bin/nm-handover", Some("/usr/lib/NetworkManager/nm-handover")),
    ("/usr/lib/NetworkManager/nm-handover", None),
    ("/usr/lib/NetworkManager/nm-handover-dispatch", None),
    ("/usr/lib/NetworkManager/nm-handover-watch", None),
    ("/usr/lib/NetworkManager/dispatcher.d/90-nm-handover", Some("/usr/lib/NetworkManager/nm-handover-dispatch")),
    ("/usr/lib/NetworkManager/dispatcher.d/no-wait.d/90-nm-handover", Some("/usr/lib/NetworkManager/nm-handover-dispatch")),
    ("/usr/lib/NetworkManager/dispatcher.d/link-up.d/90-nm-handover", Some("/usr/lib/NetworkManager/nm-handover-dispatch")),
    ("/usr/share/man/man8/nm-handover.8.gz", None),
    ("/usr/share/bash-completion/completions/nm-handover", None),
    ("/usr/share/zsh/vendor-completions/_nm-handover", None),
    ("/usr/share/fish/vendor_completions.d/nm-handover.fish", None),
];

#[test]
#[ignore = "needs the package installed: tests/run.sh runs it after dpkg -i, with NM_HANDOVER_INSTALLED set"]
fn the_installed_package_keeps_the_address_at_a_pull_and_a_replug() {
    let test = "installed package";
    let dir = std::env::var(INSTALLED).unwrap_or_else(|_| panic!("{INSTALLED} must name where the package put the binaries"));
    let listed = Command::new("dpkg").args(["-L", "nm-handover"]).output().expect("dpkg -L");
    assert!(listed.status.success(), "the package is not installed: {}", String::from_utf8_lossy(&listed.stderr));
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    for (path, target) in LAYOUT {
        assert!(listed.lines().any(|l| l == *path), "dpkg -L nm-handover does not list {path}:\n{listed}");
        let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.uid(), 0, "{path} is not root's");
        match target {
            // (dh_link makes the links relative.)
            Some(target) => assert_eq!(std::fs::canonicalize(path).unwrap(), Path::new(target), "{path}"),
            // nm-dispatcher refuses a script that group or others may write.
            None => assert_eq!(meta.permissions().mode() & 0o022, 0, "{path} is writable by group or others"),
        }
    }
    // And nothing else, but the package's own metadata (its copyright and changelog, its lintian overrides).
    for path in listed.lines().filter(|l| !Path::new(l).is_dir() || Path::new(l).is_symlink()) {
        assert!(
            LAYOUT.iter().any(|(p, _)| p == &path) || path.starts_with("/usr/share/doc/nm-handover/") || path == "/usr/share/lintian/overrides/nm-handover",
            "the package installs {path}, which README's layout does not list"
        );
    }
    let installed_entry = Path::new(&dir).join("nm-handover-dispatch");
    // (No skip: this test runs only where the package was installed for it.)
    let p = paired(test, LabConfig::new(DhcpServer::IscDhcpd, DhcpClient::Internal), &[]).expect("the lab did not start (why: above)");
    assert_eq!(p.lab.cfg.companion.as_deref(), Some(installed_entry.as_path()), "the lab must run the installed entry");
    // The supervisor `pair` started is the installed program.
    let pid = supervisor_pid(&p.lab).expect("the supervisor's PID file");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the supervisor runs");
    assert_eq!(exe, Path::new(&dir).join("nm-handover"), "the supervisor is not the installed program");
    pull_and_replug(test, &p);

    // unpair, with the installed command: the record and the carrier-wait snippet go, the supervisor exits.
    let record = p.lab.dir.join(format!("etc/nm-handover/{}.pair", p.wired_uuid));
    let snippet = p.lab.dir.join(format!("etc/conf.d/90-nm-handover-{}.conf", p.wired_uuid));
    assert!(record.exists() && snippet.exists(), "pair did not write {} and {}", record.display(), snippet.display());
    p.lab.companion(&["unpair", "Office LAN"]);
    assert!(!record.exists() && !snippet.exists(), "unpair left {} or {}", record.display(), snippet.display());
    p.lab.expect_until("the supervisor to exit with no pair left", std::time::Duration::from_secs(10), || !Path::new(&format!("/proc/{pid}")).exists());
}
