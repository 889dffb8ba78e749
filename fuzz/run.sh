#!/bin/bash
# Runs every fuzz target for SECONDS each (default 600), starting from the
# committed seeds (small real files from the lab), and writes a summary of
# executions and crashes to fuzz/results.md.
#   bash fuzz/run.sh [SECONDS] [TARGET...]      (FUZZ_JOBS=N targets at a time; default: CPUs)
# Installs cargo-fuzz when missing. cargo-fuzz builds with AddressSanitizer,
# whose -Z flag needs RUSTC_BOOTSTRAP=1 on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
jobs=${FUZZ_JOBS:-$(nproc)}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build >/dev/null 2>&1 || cargo fuzz build
mkdir -p logs
run_one() {
    local t=$1 status=0
    mkdir -p "corpus/$t"
    cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
    echo "fuzz/run.sh: $t for $secs s" >&2
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 -close_fd_mask=3 \
        >"logs/$t.log" 2>&1 || status=$?
    echo "$status" >"logs/$t.status"
}
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_one "$t" &
    running=$((running + 1))
done
wait || true
{
    echo "## Fuzzing: \`bash fuzz/run.sh $secs\` on $(date -u +%Y-%m-%d), $(nproc) CPUs, $jobs targets at a time"
    echo
    echo "| target | seconds | executions | crashes | exit status |"
    echo "|---|---|---|---|---|"
    for t in "${targets[@]}"; do
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
        crashes=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
        echo "| $t | $secs | ${execs:-?} | $crashes | $(cat "logs/$t.status") |"
    done
} >results.md
cat results.md
