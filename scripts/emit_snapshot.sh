#!/usr/bin/env bash
# Hashes of the graphs `mimic compile` emits for the default model: the base model and heads
# of every method, every attention form, fp32 and fp16, folded and as inputs. Run it with two
# builds of mimic and diff the outputs to check that a refactor of the emitter changes no
# emitted byte:  scripts/emit_snapshot.sh BIN HEADS_DIR OUT.txt
# HEADS_DIR holds <method>/heads.safetensors (made once, by `mimic train --steps 2` if missing).
set -euo pipefail
BIN=${1:?mimic binary}; HEADS=${2:?heads folder}; OUT=${3:?output file}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for m in mimic mimic-convex live lora; do
    if [ ! -f "$HEADS/$m/heads.safetensors" ]; then
        "$BIN" train --task data/icl-tasks/country-capital.json --method "$m" --steps 2 \
            --batch 2 --shots 2 --threads 2 --out "$HEADS/$m" >/dev/null
    fi
done
: >"$OUT"
one() {  # name, compile args...
    local name=$1; shift
    rm -rf "$work/c"
    "$BIN" compile --out "$work/c" "$@" >/dev/null 2>&1 || { echo "$name FAILED" >>"$OUT"; return; }
    for f in "$work"/c/*.onnx "$work"/c/*.data "$work"/c/mimic.json; do
        [ -f "$f" ] && echo "$name $(basename "$f") $(sha256sum <"$f" | cut -c1-16)" >>"$OUT"
    done
    return 0
}
for att in fused unfused kernel; do
    for dt in fp32 fp16; do
        [ "$att" = kernel ] && [ "$dt" = fp16 ] && continue
        one "base-$att-$dt" --attention $att --dtype $dt
        for m in mimic mimic-convex live lora; do
            one "$m-$att-$dt" --attention $att --dtype $dt --heads "$HEADS/$m/heads.safetensors"
        done
        for m in mimic mimic-convex live; do
            one "inputs-$m-$att-$dt" --attention $att --dtype $dt --heads-as-inputs --method $m
        done
    done
done
one "base-fused-all-logits-nopasses" --attention fused --all-logits --passes none
one "mimic-unfused-fusion" --attention unfused --passes constant-folding,attention-fusion,dead-nodes --heads "$HEADS/mimic/heads.safetensors"
echo "$(wc -l <"$OUT") lines written to $OUT"
