#!/bin/sh
# meson's custom_target for nm-handover: builds the three binaries with cargo and
# copies them to the paths meson expects.
# Usage: cargo-build.sh CARGO CRATE_DIR TARGET_DIR PROFILE OUT_DIR [CARGO ARGS...]
set -eu
cargo=$1 crate_dir=$2 target_dir=$3 profile=$4 out_dir=$5
shift 5
"$cargo" build --locked --manifest-path "$crate_dir/Cargo.toml" --target-dir "$target_dir" \
    --profile "$profile" --bin nm-handover --bin nm-handover-dispatch --bin nm-handover-watch "$@"
case "$profile" in dev) built=debug ;; *) built=$profile ;; esac
for bin in nm-handover nm-handover-dispatch nm-handover-watch; do
    cp "$target_dir/$built/$bin" "$out_dir/$bin.tmp"
    mv "$out_dir/$bin.tmp" "$out_dir/$bin"
done
