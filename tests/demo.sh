#!/bin/bash
# The main job: in a lab of network namespaces with real NetworkManager, ISC dhcpd
# and a live TCP session, pull the cable and plug it back, printing the timeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-debian.sh
cargo build --locked --tests
cargo test --locked --test demo -- --nocapture
