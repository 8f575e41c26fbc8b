#!/usr/bin/env python3
"""Write a random vision-language model of real image-encoder size, for `mimic bench-vision`.

No pretrained vision-language model can be downloaded here, and timing needs real sizes, not
real weights: this builds an Idefics3 (SmolVLM) model whose vision tower and connector have
SmolVLM-256M's shapes (SigLIP-B/16: 768 wide, 12 layers, 512 px images of 16 px patches, 1024
patches; pixel shuffle by 4 to 64 image tokens) with random weights, and a tiny random
language model (only the encoder is timed). Writes config.json, model.safetensors,
tokenizer.json (copied from the idefics3 fixture) and preprocessor_config.json to OUT.

    .venv-ref/bin/python scripts/make_bench_vlm.py /tmp/bench-smolvlm
    target/release/mimic bench-vision --model /tmp/bench-smolvlm --threads 2
"""
import os
import shutil
import sys

import torch
from transformers import Idefics3Config, Idefics3ForConditionalGeneration

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vlm", "idefics3")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench-smolvlm"
    torch.manual_seed(0)
    vocab = 368  # the fixture tokenizer's
    config = Idefics3Config(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=512, patch_size=16),
        text_config=dict(model_type="llama", vocab_size=vocab, hidden_size=64,
                         intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=4096),
        scale_factor=4, image_token_id=324, tie_word_embeddings=False)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.save_pretrained(out)
    for f in ("tokenizer.json", "preprocessor_config.json"):
        shutil.copy(os.path.join(FIXTURE, f), os.path.join(out, f))
    pre = os.path.join(out, "preprocessor_config.json")
    text = open(pre).read().replace('"longest_edge": 32', '"longest_edge": 512')
    open(pre, "w").write(text)
    n = sum(p.numel() for n_, p in model.named_parameters() if "text_model" not in n_)
    print(f"wrote {out}: image encoder {n / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
