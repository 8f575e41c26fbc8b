#!/usr/bin/env bash
# Builds every fuzz target (cargo-fuzz, libFuzzer, AddressSanitizer, debug assertions on) and
# runs each for FUZZ_SECONDS (default 60), one after another, on its corpus (seeded by
# scripts/fuzz_seeds.sh). Limits: -rss_limit_mb=2048 and -malloc_limit_mb=512, so that an
# allocation sized by an untrusted field is a crash; -timeout=10 makes a slow input a hang.
# Prints a table: target, executions, wall seconds, crashes (crash, timeout or OOM inputs
# written to fuzz/artifacts/<target>/ by this run). Exits 1 if any target crashed.
#
#   scripts/fuzz.sh [TARGET...]        FUZZ_SECONDS=300 scripts/fuzz.sh gguf safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(gguf safetensors heads contract hf_config image_config tokenizer task image datasets)
fi

if ! cargo "+$TOOLCHAIN" fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz (and rustup toolchain install nightly)" >&2
    exit 2
fi
[ -d fuzz/corpus ] || scripts/fuzz_seeds.sh
# All targets in one build (they share every dependency).
cargo "+$TOOLCHAIN" fuzz build -O
BIN=fuzz/target/$(rustc "+$TOOLCHAIN" -vV | sed -n 's/^host: //p')/release
LOGS=fuzz/logs
mkdir -p "$LOGS"

rows=()
total_crashes=0
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    start=$(date +%s.%N)
    set +e
    "$BIN/$t" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -timeout=10 -print_final_stats=1 >"$LOGS/$t.log" 2>&1
    rc=$?
    set -e
    end=$(date +%s.%N)
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOGS/$t.log" | tail -1)
    [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$LOGS/$t.log" | tail -1 | tr -d '#')
    crashes=$(($(ls "fuzz/artifacts/$t" | wc -l) - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
    total_crashes=$((total_crashes + crashes))
    rows+=("$(printf '%-14s %12s %8.1f %8s' "$t" "${execs:-0}" "$wall" "$crashes")")
    echo "$t: ${execs:-0} executions, ${wall}s, $crashes crashes (log: $LOGS/$t.log)" >&2
done

printf '\n%-14s %12s %8s %8s\n' target executions wall_s crashes
printf '%s\n' "${rows[@]}"
[ "$total_crashes" -eq 0 ] || { echo "crashing inputs: fuzz/artifacts/<target>/" >&2; exit 1; }
