//! meson-compat: a DESTDIR install, checked file by file (paths, modes, link
//! targets), and the installed binary runs. Needs meson and ninja (installed
//! by tests/setup-debian.sh); without them the test says why it skips.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/local/bin", "/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// What the installed tree holds: path -> (kind, mode, link target).
fn tree(root: &Path) -> BTreeMap<String, (char, u32, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let mode = meta.permissions().mode() & 0o7777;
            assert_eq!(meta.uid(), current_uid(), "{rel} is not owned by the installing user");
            if meta.file_type().is_symlink() {
                out.insert(rel, ('l', 0, Some(fs::read_link(&path).unwrap().to_string_lossy().into_owned())));
            } else if meta.is_dir() {
                out.insert(rel, ('d', mode, None));
                stack.push(path);
            } else {
                out.insert(rel, ('f', mode, None));
            }
        }
    }
    out
}

fn current_uid() -> u32 {
    fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

#[test]
fn meson_destdir_install_has_the_expected_tree() {
    let (Some(meson), Some(_ninja)) = (tool("meson"), tool("ninja")) else {
        if std::env::var_os("CI").is_some() {
            panic!("meson and ninja are needed (tests/setup-debian.sh installs them)");
        }
        eprintln!("SKIPPED: meson/ninja not installed (tests/setup-debian.sh installs them)");
        return;
    };
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Reuse this build's cargo target directory: the install test must not rebuild the world.
    let target_dir = Path::new(env!("CARGO_BIN_EXE_nm-handover")).parent().unwrap().parent().unwrap().to_path_buf();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("meson-compat-test");
    let _ = fs::remove_dir_all(&work);
    let (build, dest) = (work.join("build"), work.join("dest"));
    run(Command::new(&meson)
        .arg("setup")
        .arg(&build)
        .arg(crate_dir.join("meson-compat"))
        .args(["--prefix=/usr", "-Dbuildtype=debug", "-Dhelper_dir=/usr/lib/NetworkManager"])
        .arg(format!("-Dcargo_target_dir={}", target_dir.display())));
    run(Command::new(&meson).arg("compile").arg("-C").arg(&build));
    run(Command::new(&meson).arg("test").arg("-C").arg(&build).arg("--no-rebuild"));
    run(Command::new(&meson).arg("install").arg("-C").arg(&build).arg("--no-rebuild").arg("--destdir").arg(&dest));

    let got = tree(&dest);
    let entry = "/usr/lib/NetworkManager/nm-handover-dispatch".to_owned();
    let mut want: BTreeMap<String, (char, u32, Option<String>)> = BTreeMap::new();
    for dir in [
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/lib/NetworkManager",
        "usr/lib/NetworkManager/dispatcher.d",
        "usr/lib/NetworkManager/dispatcher.d/link-up.d",
        "usr/lib/NetworkManager/dispatcher.d/no-wait.d",
        "usr/share",
        "usr/share/man",
        "usr/share/man/man8",
        "usr/share/bash-completion",
        "usr/share/bash-completion/completions",
        "usr/share/zsh",
        "usr/share/zsh/vendor-completions",
        "usr/share/fish",
        "usr/share/fish/vendor_completions.d",
    ] {
        want.insert(dir.into(), ('d', 0o755, None));
    }
    want.insert("usr/lib/NetworkManager/nm-handover".into(), ('f', 0o755, None));
    want.insert("usr/bin/nm-handover".into(), ('l', 0, Some("/usr/lib/NetworkManager/nm-handover".into())));
    want.insert("usr/lib/NetworkManager/nm-handover-dispatch".into(), ('f', 0o755, None));
    want.insert("usr/lib/NetworkManager/nm-handover-watch".into(), ('f', 0o755, None));
    // nm-dispatcher does not wait for a dispatcher.d script that links into no-wait.d.
    want.insert("usr/lib/NetworkManager/dispatcher.d/90-nm-handover".into(), ('l', 0, Some("no-wait.d/90-nm-handover".into())));
    want.insert("usr/lib/NetworkManager/dispatcher.d/no-wait.d/90-nm-handover".into(), ('l', 0, Some(entry.clone())));
    want.insert("usr/lib/NetworkManager/dispatcher.d/link-up.d/90-nm-handover".into(), ('l', 0, Some("../no-wait.d/90-nm-handover".into())));
    want.insert("usr/share/man/man8/nm-handover.8".into(), ('f', 0o644, None));
    for completion in ["bash-completion/completions/nm-handover", "zsh/vendor-completions/_nm-handover", "fish/vendor_completions.d/nm-handover.fish"] {
        want.insert(format!("usr/share/{completion}"), ('f', 0o644, None));
    }
    // meson's default umask is 022, so the modes do not depend on the caller's umask.
    assert_eq!(got, want, "installed tree differs");

    // nm-dispatcher refuses scripts writable by group or others: nothing installed is.
    for (path, (kind, mode, _)) in &got {
        assert!(*kind == 'l' || mode & 0o022 == 0, "{path} is group/other writable");
    }
    let out = Command::new(dest.join("usr/lib/NetworkManager/nm-handover")).arg("--help").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("nm-handover dispatch IFACE ACTION"));
    // The completions know the commands, each in its shell's syntax.
    let read = |rel: &str| fs::read_to_string(dest.join("usr/share").join(rel)).unwrap();
    assert!(read("bash-completion/completions/nm-handover").contains("complete -F _nm__handover"));
    assert!(read("zsh/vendor-completions/_nm-handover").starts_with("#compdef nm-handover"));
    let fish = read("fish/vendor_completions.d/nm-handover.fish");
    assert!(fish.contains("complete -c nm-handover") && fish.contains("check") && fish.contains("unpair"), "{fish}");
}
