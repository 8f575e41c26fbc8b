#!/usr/bin/env bash
# On a CUDA machine whose Python has PyTorch 2.11.0 (+cu130) and onnxruntime 1.30.0: build (or
# take) mimic with the `cuda` feature, then run the formula test and one training on the GPU
# and print their numbers.
#   scripts/cuda_check.sh [path/to/mimic-built-with-cuda]
# Build it on any machine with `LIBTORCH=<torch dir> cargo build --release --features cuda`
# (CUDA libraries are resolved at run time, from the torch below).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=$($PY -c 'import torch, os; print(os.path.dirname(torch.__file__))')
SITE=$(dirname "$TORCH")
$PY -c 'import torch; print("python torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
# libtorch_cuda's own dependencies (cudnn, cublas, ...) live in the nvidia wheels beside torch.
NV=$(find "$SITE/nvidia" -maxdepth 3 -name lib -type d 2>/dev/null | paste -sd:)
export LD_LIBRARY_PATH="$TORCH/lib:${NV}:${LD_LIBRARY_PATH:-}"
export MIMIC_SITE_PACKAGES=$SITE
MIMIC=${1:-target/release/mimic}
"$MIMIC" doctor
# The formula test (exact additive heads reproduce attention over demonstrations) on CUDA.
if [ -z "${1:-}" ]; then
    LIBTORCH=$TORCH MIMIC_TEST_DEVICE=cuda cargo test --release --features cuda --test formula -- --nocapture
fi
DATA=${DATA:-data/icl-tasks}
out=$(mktemp -d)
time "$MIMIC" train --task "$DATA/country-capital.json" --method mimic --steps 300 --device cuda --out "$out/run"
"$MIMIC" eval --task "$DATA/country-capital.json" --method zero-shot,icl,heads --heads "$out/run/heads.safetensors" --device cuda
