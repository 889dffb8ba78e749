#!/bin/bash
# The test command: installs what it needs (Debian packages, crates, and the
# patched NetworkManager built from Debian's source by nm-patch/build, cached
# in /var/cache/nm-handover), then runs every test: unit tests of the pure
# modules and the real-NetworkManager lab scenarios on stock and patched NM
# (which need root; as non-root they skip loudly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-debian.sh
if [ "$(id -u)" = 0 ]; then
    # About 6 minutes each on 2 cores the first time; seconds when cached.
    bash nm-patch/build --version 1.58.1 >/dev/null
    bash nm-patch/build --version 1.42.4 >/dev/null
    # NM's native take-over prototype, the alternative UPSTREAMING.md offers (tests/native.rs).
    bash nm-patch/build --version 1.58.1 --series native-1.58 >/dev/null
else
    echo "tests/run.sh: not root: the patched NetworkManager is not built; its lab tests will skip" >&2
fi
# The style (rustfmt.toml) and the lints, gated by the toolchain this command
# installs (setup-debian.sh: Debian's rustfmt-web and rust-web-clippy, called
# as themselves: cargo would take rustup's subcommands first), pinned to the
# versions below. A Debian update that brings other versions shows their
# findings without failing, until the pin moves: new lints never break CI by
# surprise. Its own target directory: rustup's rustc builds the rest.
gating_clippy="clippy 0.1.96"
gating_rustfmt="rustfmt 1.9.0"
debian_rust() { env PATH=/usr/bin:/bin CARGO_TARGET_DIR="$PWD/target/debian-lint" "$@"; }
for tool in /usr/bin/cargo-clippy /usr/bin/cargo-fmt /usr/bin/rustfmt; do
    [ -x "$tool" ] || { echo "tests/run.sh: $tool is missing (rust-web-clippy, rustfmt-web: tests/setup-debian.sh installs them)" >&2; exit 1; }
done
debian_clippy=$(debian_rust /usr/bin/cargo-clippy clippy --version)
debian_rustfmt=$(debian_rust /usr/bin/rustfmt --version)
is_version() { [[ "$1" == "$2" || "$1" == "$2 "* || "$1" == "$2-"* ]]; }
if is_version "$debian_rustfmt" "$gating_rustfmt"; then
    debian_rust /usr/bin/cargo-fmt fmt --check
else
    echo "tests/run.sh: $debian_rustfmt is not the pinned $gating_rustfmt: its style does not gate" >&2
    debian_rust /usr/bin/cargo-fmt fmt --check || true
fi
if is_version "$debian_clippy" "$gating_clippy"; then
    debian_rust /usr/bin/cargo-clippy clippy --locked --all-targets -- -D warnings
else
    echo "tests/run.sh: $debian_clippy is not the pinned $gating_clippy: its lints do not gate" >&2
    debian_rust /usr/bin/cargo-clippy clippy --locked --all-targets || true
fi
# (The benches are compiled by the lints above, --all-targets; the tests run them as nothing.)
cargo build --locked --lib --bins --tests
# Every figure the docs publish agrees with its result file (warns about stale result files).
python3 bench-results/check-docs
# The lab tests take a machine-wide lock anyway; one thread keeps their output readable.
# The two Wi-Fi VM binaries run after the rest, side by side: a guest under TCG
# keeps one CPU busy and touches nothing of the host's (tests/support/vm.rs
# takes one CPU each), so on 2 CPUs both finish in the time of the longer one.
vm_tests=(wifi wifi_day)
host_tests=()
for file in tests/*.rs; do
    name=$(basename "$file" .rs)
    [[ " ${vm_tests[*]} " == *" $name "* ]] || host_tests+=(--test "$name")
done
failed=0
cargo test --locked --no-fail-fast --lib --bins "${host_tests[@]}" -- --test-threads=1 || failed=1
cargo test --locked --doc || failed=1
vm_logs=$(mktemp -d /tmp/nmh-vm-tests.XXXXXX)
pids=()
for name in "${vm_tests[@]}"; do
    cargo test --locked --test "$name" -- --test-threads=1 >"$vm_logs/$name.log" 2>&1 &
    pids+=($!)
done
for i in "${!vm_tests[@]}"; do
    status=0
    wait "${pids[$i]}" || status=$?
    echo "=== tests/${vm_tests[$i]}.rs (in the Wi-Fi VM; exit status $status)"
    cat "$vm_logs/${vm_tests[$i]}.log"
    [ "$status" = 0 ] || failed=1
done
rm -rf "$vm_logs"
[ "$failed" = 0 ] || { echo "tests/run.sh: tests failed (above)" >&2; exit 1; }
# The patched-NM scenarios once more on the Debian 12 backport (nm-patch/1.42).
if [ "$(id -u)" = 0 ]; then
    # ipv4.dhcp-send-release only exists since NM 1.48: those cases are for 1.58 alone. The
    # companion's pull and re-plug (with traffic) on the backport run on real 802.11 in
    # tests/wifi.rs; here the backport's own behaviour: link-up's hold, timeout, queue, exclusions.
    NM_HANDOVER_PATCHED_VERSION=1.42.4 cargo test --locked --test patched -- --test-threads=1 --skip send_release \
        --skip patched_pull_and_replug --skip patched_with_traffic
fi
# The Debian package: built offline, lintian-clean, installed, a lab scenario run against it, purged.
bash tests/package-deb.sh
