#!/usr/bin/env bash
# Training step time alone and beside a competing load on the same cores (docs/reliability.md,
# "CPU contention"): `mimic train` on the default model, STEPS steps, the median step (teacher
# + student seconds from log.json, the first 3 steps left out), for each thread setting in
# SETTINGS, alone, then with LOAD busy loops running at each niceness in NICE (10: a
# low-priority background build; 0: another job at the same priority).
# Usage: scripts/contention.sh   (STEPS=15 LOAD=2 NICE="10 0"; nothing else running)
set -euo pipefail
cd "$(dirname "$0")/.."
MIMIC=${MIMIC:-target/release/mimic}
STEPS=${STEPS:-15}
LOAD=${LOAD:-2}
NICE=${NICE:-"10 0"}
OUT=${OUT:-runs/contention}
mkdir -p "$OUT"
# name|environment|mimic options
SETTINGS=${SETTINGS:-"default (idle cores)||
threads 2 (one per core)||--threads 2
threads 2, OMP_WAIT_POLICY=PASSIVE|OMP_WAIT_POLICY=PASSIVE|--threads 2
threads 1||--threads 1"}

median_step() {
    python3 - "$1" <<'EOF'
import json, statistics, sys
log = json.load(open(sys.argv[1]))
steps = log["steps"] if isinstance(log, dict) and "steps" in log else log
t = [s["teacher_s"] + s["student_s"] for s in steps][3:]
print(f"{statistics.median(t):.3f} {min(t):.3f} {max(t):.3f}")
EOF
}

run_one() { # name env opts tag
    local dir="$OUT/run"
    rm -rf "$dir"
    env $2 "$MIMIC" train --task country-capital --method mimic --steps "$STEPS" \
        --checkpoint-every 1000 $3 --out "$dir" >/dev/null 2>"$OUT/run.log"
    echo "| $1 | $4 | $(median_step "$dir/log.json" | sed 's/ / | /g') |"
}

echo "| setting | load | median step (s) | fastest | slowest |"
echo "|---|---|---|---|---|"
while IFS='|' read -r name envs opts; do
    [ -n "$name" ] || continue
    run_one "$name" "$envs" "$opts" alone
    for n in $NICE; do
        pids=()
        for _ in $(seq "$LOAD"); do
            nice -n "$n" sh -c 'while :; do :; done' &
            pids+=($!)
        done
        run_one "$name" "$envs" "$opts" "$LOAD busy loops, nice $n"
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    done
done <<< "$SETTINGS"
