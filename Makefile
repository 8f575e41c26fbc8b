# mimic: `make demo` runs the main job on the default model, `make test` runs the tests.
# Both set up what is missing first (Python packages from PyPI into .venv; Rust crates).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
SITE = $(shell test -x $(VENV)/bin/python && $(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LIBTORCH = $(SITE)/torch
CARGO_FLAGS ?= --release
MIMIC := target/release/mimic

.PHONY: setup build demo demo-text align test lint bench bench-heads bench-train bench-cross icl-table vlm-table reference-env fixtures fuzz kill-anywhere serve-load contention

setup: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
	touch $(STAMP)

build: setup
	cargo build $(CARGO_FLAGS)

# The ICL task sets ship in the repository (data/icl-tasks, MIT; see its README) and inside
# the binary: `--task country-capital` names the built-in copy.
DEMO := runs/demo-country-capital

# The vision-language model made here (`mimic align`): SmolLM2 with the SigLIP tower and
# connector trained on easy-VQA's captions, shipped as data/vlm/easy-vqa-encoder.safetensors
# (4.5 MB) and assembled with the default model into an HF folder.
ENCODER := data/vlm/easy-vqa-encoder.safetensors
VLM := runs/smolvlm-easy-vqa/model
VLM_DEMO := runs/demo-easy-vqa
EASY_VQA = $(SITE)/easy_vqa/data

# The main job, on images: check the environment, assemble the vision-language model, answer
# a question about an image on both backends, train MimIC heads on easy-VQA's training
# questions (8-shot teachers with their images), fold them into the compiled three-graph ONNX
# model, check it against the trainer, and compare zero-shot, 8-shot in-context prompting and
# MimIC on easy-VQA's test questions in ONNX Runtime (VQA accuracy).
demo: build
	$(MIMIC) doctor
	$(MIMIC) align --encoder $(ENCODER) --out $(dir $(VLM))
	$(MIMIC) generate --backend torch --model $(VLM) --image $(EASY_VQA)/test/images/0.png \
		--prompt "Image:<image><end_of_outterance>"$$'\n'"Caption:" --max-new-tokens 6
	$(MIMIC) generate --backend onnx --model $(VLM) --image $(EASY_VQA)/test/images/0.png \
		--prompt "Image:<image><end_of_outterance>"$$'\n'"Caption:" --max-new-tokens 6
	$(MIMIC) train --model $(VLM) --dataset easy-vqa --method mimic --steps 200 --threads 2 \
		--out $(VLM_DEMO)
	$(MIMIC) compile --model $(VLM) --heads $(VLM_DEMO)/heads.safetensors --out $(VLM_DEMO)/compiled
	$(MIMIC) verify --model $(VLM) --dataset easy-vqa --heads $(VLM_DEMO)/heads.safetensors \
		--prompts 10 --json $(VLM_DEMO)/verify.json
	$(MIMIC) eval --model $(VLM) --dataset easy-vqa --method zero-shot,icl,heads --shots 8 \
		--heads $(VLM_DEMO)/heads.safetensors --backend onnx --limit 200 --threads 2 \
		--json $(VLM_DEMO)/eval.json

# The text pipeline: train MimIC heads on country-capital, fold them into a compiled ONNX
# model, check it against the trainer, and compare zero-shot, 8-shot in-context prompting and
# the compiled heads in ONNX Runtime.
demo-text: build
	$(MIMIC) generate --backend torch --prompt "The capital of France is" --max-new-tokens 12
	$(MIMIC) generate --backend onnx --prompt "The capital of France is" --max-new-tokens 12
	$(MIMIC) train --task country-capital --method mimic --steps 300 --threads 2 --out $(DEMO)
	$(MIMIC) compile --heads $(DEMO)/heads.safetensors --out $(DEMO)/compiled
	$(MIMIC) verify --heads $(DEMO)/heads.safetensors --prompts 10 --json $(DEMO)/verify.json
	$(MIMIC) eval --task country-capital --method zero-shot,icl,heads --shots 8 \
		--heads $(DEMO)/heads.safetensors --backend onnx --threads 2 --json $(DEMO)/eval.json

# Train the vision-language model's encoder from scratch (what made $(ENCODER)): the tower
# pretrained (2,000 steps), then 300 steps of one to three captioned images a sequence, then
# 150 of one to nine (the length of an 8-shot prompt) from there. About 23 min on 2 cores.
align: build
	$(MIMIC) align --steps 300 --batch 8 --pretrain-steps 2000 --threads 2 --out runs/align
	$(MIMIC) align --init runs/align/vision.safetensors --steps 150 --batch 4 --max-images 9 \
		--lr 5e-4 --seed 1 --threads 2 --out runs/align9

test: setup
	cargo test $(CARGO_FLAGS) --workspace

# rustfmt, then clippy on the full build and on the deployment build (no libtorch).
lint: setup
	cargo fmt --all -- --check
	cargo clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings
	cargo clippy $(CARGO_FLAGS) --workspace --all-targets --no-default-features -- -D warnings

# Coverage-guided fuzzing of every parser of outside input (GGUF, safetensors, heads files,
# mimic.json, config.json, preprocessor configs, tokenizer.json, task files, images, the
# benchmarks' data files): FUZZ_SECONDS each, then a table (docs/fuzzing.md). Needs a nightly
# toolchain and cargo-fuzz.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# Training killed with SIGKILL at random moments and during checkpoint writes, resumed, and
# compared bit for bit with an uninterrupted run: KILLS per method (docs/reliability.md).
KILLS ?= 20
kill-anywhere: build
	MIMIC_KILLS=$(KILLS) cargo test $(CARGO_FLAGS) --test kill_anywhere -- --nocapture

# `mimic run` fed thousands of requests (heads per request, mixed lengths, some invalid),
# its memory sampled over time (docs/reliability.md).
serve-load: build
	python3 scripts/serve_load.py --requests 3000

# Training step time alone and beside a competing low-priority load (docs/reliability.md).
contention: build
	scripts/contention.sh

# Decode speed of every backend side by side (needs `make reference-env` for transformers).
bench: build reference-env
	$(MIMIC) bench --backends transformers,torch,onnx,onnx-unfused --json bench.json

# What the heads cost and save (needs the heads `make demo` trains): the model with MimIC
# folded in (fused, unfused, and through mimic's kernel) against the base model and against
# 8-shot prompting, prefill, decode and batched serving (on the kernel), side by side in one run.
bench-heads: build
	$(MIMIC) bench --backends onnx,onnx-unfused,onnx-kernel,onnx-mimic,onnx-mimic-unfused,onnx-mimic-kernel,onnx-icl \
		--heads $(DEMO)/heads.safetensors --task country-capital --batched-attention kernel \
		--prompt-len 16,128,512 --new-tokens 32 --iterations 5 --copies 4 --json bench-heads.json

# One training step against the same step in Python PyTorch + transformers.
bench-train: build reference-env
	$(MIMIC) bench-train --rounds 3 --json bench-train.json

# An Idefics decode step with the image keys and values once per prompt, every step, and in
# transformers, on a random Idefics of idefics-9b's proportions at a quarter width.
bench-cross: build reference-env
	.venv-ref/bin/python scripts/make_bench_idefics.py /tmp/bench-idefics
	$(MIMIC) bench-cross --model /tmp/bench-idefics --threads 2 --json bench-cross.json

# The MimIC table in miniature on the vision-language model made here (easy-VQA, ONNX Runtime).
vlm-table: build
	scripts/vlm_table.sh

# The trainer's table: zero-shot, ICL and the four methods on country-capital and antonym.
icl-table: build
	scripts/icl_table.sh

reference-env: .venv-ref/.installed

.venv-ref/.installed: requirements-ref.txt
	$(PYTHON) -m venv .venv-ref
	.venv-ref/bin/pip install --quiet --disable-pip-version-check -r requirements-ref.txt
	touch $@

fixtures: reference-env build
	.venv-ref/bin/python scripts/make_fixtures.py
	.venv-ref/bin/python scripts/reference_default_model.py
	.venv-ref/bin/python scripts/make_image_fixtures.py
	.venv-ref/bin/python scripts/make_vision_fixtures.py
	.venv-ref/bin/python scripts/make_vlm_fixtures.py
	.venv-ref/bin/python scripts/make_idefics_fixtures.py
	.venv-ref/bin/python scripts/make_vlm_task.py
	.venv-ref/bin/python scripts/make_metric_fixtures.py
	.venv-ref/bin/python scripts/make_beam_fixtures.py
	$(MIMIC) align --encoder $(ENCODER) --out $(dir $(VLM))
	.venv-ref/bin/python scripts/reference_made_vlm.py $(VLM) $(EASY_VQA) \
		tests/fixtures/made_vlm/transformers.safetensors
