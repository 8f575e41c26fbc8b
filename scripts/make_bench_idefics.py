#!/usr/bin/env python3
"""Write a random Idefics (v1) with idefics-9b's proportions at a quarter of its width, for
`mimic bench-cross`.

No Idefics checkpoint can be downloaded here, and timing needs real proportions, not real
weights. A decode step's cost is its decoder's (about 12 h^2 a layer) plus, when the image
keys and values are projected again in every step, 2 x latents x kv_width x h a gated block.
idefics-9b: h 4096, 32 layers, a gated block every 4 (8), CLIP-H latents 1280 wide, 64 per
image. Here h, the intermediate size and the latent width are divided by 4 (1024, 2752, 320)
and the layers by 4 (8 layers, 2 blocks), so the two costs keep idefics-9b's ratio. The image
encoder (1 CLIP layer, 1 perceiver block) is not timed. The tokenizer and processor are the
idefics fixture's (its 288 tokens and 2 added ones: the output head is small).

    .venv-ref/bin/python scripts/make_bench_idefics.py /tmp/bench-idefics
    target/release/mimic bench-cross --model /tmp/bench-idefics --threads 2
"""
import os
import shutil
import sys

import torch
from transformers import IdeficsConfig, IdeficsForVisionText2Text

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vlm", "idefics")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench-idefics"
    torch.manual_seed(0)
    config = IdeficsConfig(
        vocab_size=288, additional_vocab_size=2, hidden_size=1024, intermediate_size=2752,
        num_hidden_layers=8, num_attention_heads=8, cross_layer_interval=4, qk_layer_norms=True,
        alpha_initializer="ones", alpha_type="float",
        max_position_embeddings=2048, use_resampler=True,
        vision_config=dict(embed_dim=320, image_size=224, patch_size=14, num_hidden_layers=1,
                           num_attention_heads=4, intermediate_size=1280, hidden_act="gelu"),
        perceiver_config=dict(use_resampler=True, resampler_n_latents=64, resampler_depth=1,
                              resampler_n_heads=4, resampler_head_dim=80,
                              qk_layer_norms_perceiver=True),
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = IdeficsForVisionText2Text(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.02)
    model.save_pretrained(out)
    for f in ("tokenizer.json", "preprocessor_config.json"):
        shutil.copy(os.path.join(FIXTURE, f), os.path.join(out, f))
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {n / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
