#!/usr/bin/env bash
# Evaluation speed side by side (BENCHMARKS.md §7): queries per second of `mimic eval` greedy
# against 3-beam search, one query at a time against batches, on both backends, for
# zero-shot and 8-shot prompting with images, on LIMIT easy-VQA test questions and the made
# vision-language model (MimIC's published settings: 3 beams, no length penalty, 10 new
# tokens). Each batched run's answers are compared with the one-at-a-time run's.
# Results: runs/eval-speed/*.json and a table on stdout.
# Usage: scripts/eval_speed.sh   (LIMIT=48 BATCH=8 by default; run with nothing else running)
set -euo pipefail
cd "$(dirname "$0")/.."
MIMIC=${MIMIC:-target/release/mimic}
LIMIT=${LIMIT:-48}
BATCH=${BATCH:-8}
VLM=${VLM:-runs/smolvlm-easy-vqa/model}
OUT=${OUT:-runs/eval-speed}
mkdir -p "$OUT"
[ -f "$VLM/config.json" ] || "$MIMIC" align --encoder data/vlm/easy-vqa-encoder.safetensors --out "$(dirname "$VLM")"
for backend in onnx torch; do
    for beams in 1 3; do
        for batch in 1 "$BATCH"; do
            "$MIMIC" eval --model "$VLM" --dataset easy-vqa --method zero-shot,icl --shots 8 \
                --backend "$backend" --num-beams "$beams" --batch "$batch" --limit "$LIMIT" \
                --threads 2 --json "$OUT/$backend-beams$beams-batch$batch.json" 2>/dev/null >/dev/null
            echo "done: $backend, $beams beams, batch $batch" >&2
        done
    done
done
python3 - "$OUT" "$BATCH" <<'EOF'
import json, sys
out, batch = sys.argv[1], sys.argv[2]
def load(backend, beams, b):
    return json.load(open(f"{out}/{backend}-beams{beams}-batch{b}.json"))
print("| backend | prompting | decoding | one at a time (q/s) | batch %s (q/s) | speed-up | same answers |" % batch)
print("|---|---|---|---|---|---|---|")
for backend in ["onnx", "torch"]:
    for beams in [1, 3]:
        one, many = load(backend, beams, 1), load(backend, beams, batch)
        for i, r in enumerate(one["results"]):
            m = many["results"][i]
            q1 = r["queries"] / r["seconds"]
            qb = m["queries"] / m["seconds"]
            a1 = [a["generated"] for a in one["answers"][i]]
            ab = [a["generated"] for a in many["answers"][i]]
            same = sum(x == y for x, y in zip(a1, ab))
            prompting = "zero-shot" if r["method"].startswith("zero-shot") else "8-shot"
            decoding = "greedy" if beams == 1 else f"{beams} beams"
            print(f"| {backend} | {prompting} | {decoding} | {q1:.2f} | {qb:.2f} | {qb / q1:.2f}x | {same}/{len(a1)} |")
EOF
