#!/usr/bin/env bash
# The trainer's comparison table on the default model: for each task, zero-shot, 8-shot ICL,
# and the four trained methods (300 steps, batch 4, 8 shots, seed 0, the trainer's default
# demonstrations and precision), evaluated on the same 100 held-out queries. Results:
# runs/<task>-<method>/ and runs/table-<task>.json. Extra `mimic train` options can be passed
# in TRAIN_ARGS (e.g. TRAIN_ARGS="--demos per-query --precision f32" for the published step).
# Usage: scripts/icl_table.sh [task ...]   (default: country-capital antonym; about 10 min per
# task on a 2-core CPU with AVX512-BF16)
set -euo pipefail
cd "$(dirname "$0")/.."
MIMIC=${MIMIC:-target/release/mimic}
DATA=${DATA:-data/icl-tasks}
STEPS=${STEPS:-300}
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(country-capital antonym)
for t in "${tasks[@]}"; do
    heads=()
    for m in mimic mimic-convex live lora; do
        out=runs/$t-$m
        if [ ! -f "$out/heads.safetensors" ]; then
            /usr/bin/time -f "$t $m: trained in %e s" "$MIMIC" train --task "$DATA/$t.json" --method "$m" \
                --steps "$STEPS" --out "$out" --threads 2 ${TRAIN_ARGS:-}
        fi
        heads+=("$out/heads.safetensors")
    done
    "$MIMIC" eval --task "$DATA/$t.json" --method zero-shot,icl,heads --shots 8 \
        --heads "$(IFS=,; echo "${heads[*]}")" --threads 2 --json "runs/table-$t.json"
done
