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
else
    echo "tests/run.sh: not root: the patched NetworkManager is not built; its lab tests will skip" >&2
fi
cargo build --locked --all-targets
# Every figure the docs publish agrees with its result file (warns about stale result files).
python3 bench-results/check-docs
# The lab tests take a machine-wide lock anyway; one thread keeps their output readable.
cargo test --locked -- --test-threads=1
# The patched-NM scenarios once more on the Debian 12 backport (nm-patch/1.42).
if [ "$(id -u)" = 0 ]; then
    # ipv4.dhcp-send-release only exists since NM 1.48: those cases are for 1.58 alone.
    NM_HANDOVER_PATCHED_VERSION=1.42.4 cargo test --locked --test patched -- --test-threads=1 --skip send_release
fi
