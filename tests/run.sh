#!/bin/bash
# The test command: installs what it needs (Debian packages, crates), then runs
# every test: unit tests of the pure modules and the real-NetworkManager lab
# scenarios (which need root; as non-root they skip loudly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-debian.sh
cargo build --locked --all-targets
# The lab tests take a machine-wide lock anyway; one thread keeps their output readable.
cargo test --locked -- --test-threads=1
