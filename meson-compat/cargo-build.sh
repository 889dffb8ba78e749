#!/bin/sh
# meson's custom_target for nm-handover: builds with cargo and copies the
# binary to the path meson expects.
# Usage: cargo-build.sh CARGO CRATE_DIR TARGET_DIR PROFILE OUTPUT [CARGO ARGS...]
set -eu
cargo=$1 crate_dir=$2 target_dir=$3 profile=$4 output=$5
shift 5
"$cargo" build --locked --manifest-path "$crate_dir/Cargo.toml" --target-dir "$target_dir" \
    --profile "$profile" --bin nm-handover "$@"
case "$profile" in dev) out_dir=debug ;; *) out_dir=$profile ;; esac
cp "$target_dir/$out_dir/nm-handover" "$output.tmp"
mv "$output.tmp" "$output"
