#!/usr/bin/env bash
# The MimIC paper's comparison in miniature, on the vision-language model mimic makes
# (SmolLM2 + the SigLIP tower and connector of data/vlm/easy-vqa-encoder.safetensors):
# zero-shot, 8-shot in-context prompting with image demonstrations (random and RICES), and the
# four trained methods (MimIC, MimIC convex, LIVE, LoRA; STEPS steps, 8-shot teachers, the
# trainer's defaults), on the same LIMIT easy-VQA test questions, all run by ONNX Runtime
# through the compiled three-graph model, scored with VQA accuracy and first-token accuracy,
# then again on libtorch (the trainer's forward) and compared row by row.
# Results: runs/vlm-<method>/ (heads, training log and time) and runs/vlm-table*.json.
# Usage: scripts/vlm_table.sh   (STEPS=200 LIMIT=200 by default; about an hour on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
MIMIC=${MIMIC:-target/release/mimic}
STEPS=${STEPS:-200}
LIMIT=${LIMIT:-200}
VLM=${VLM:-runs/smolvlm-easy-vqa/model}
[ -f "$VLM/config.json" ] || "$MIMIC" align --encoder data/vlm/easy-vqa-encoder.safetensors --out "$(dirname "$VLM")"
heads=()
for m in mimic mimic-convex live lora; do
    out=runs/vlm-$m
    if [ ! -f "$out/heads.safetensors" ]; then
        /usr/bin/time -f "$m: trained in %e s" -o "$out.time" "$MIMIC" train --model "$VLM" \
            --dataset easy-vqa --method "$m" --steps "$STEPS" --out "$out" --threads 2
        cat "$out.time"
    fi
    heads+=("$out/heads.safetensors")
done
# Every row twice: in ONNX Runtime through the compiled folder (the table), and on libtorch
# with the trainer's own forward; the two must agree row for row.
for backend in onnx torch; do
    suffix=$([ "$backend" = onnx ] && echo "" || echo "-$backend")
    "$MIMIC" eval --model "$VLM" --dataset easy-vqa --method zero-shot,icl,heads --shots 8 \
        --heads "$(IFS=,; echo "${heads[*]}")" --backend "$backend" --limit "$LIMIT" \
        --threads 2 --json "runs/vlm-table$suffix.json"
    "$MIMIC" eval --model "$VLM" --dataset easy-vqa --method icl --demos rices --shots 8 \
        --backend "$backend" --limit "$LIMIT" --threads 2 --json "runs/vlm-table-rices$suffix.json"
done
python3 scripts/compare_evals.py runs/vlm-table.json runs/vlm-table-torch.json
python3 scripts/compare_evals.py runs/vlm-table-rices.json runs/vlm-table-rices-torch.json
