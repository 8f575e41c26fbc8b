#!/usr/bin/env python3
"""transformers' Idefics decode step, the peer row of `mimic bench-cross`.

Runs IdeficsForVisionText2Text (float32, CPU, `--threads` threads) on the prompt ids mimic
built, with the perceiver's output given as random latents (`perceiver_embeddings`, so the
image encoder is not timed, as in mimic's rows) and the image attention mask built by the
processor's rule: each token reads the most recent <image> before it. Each round: the prefill,
then `--steps` greedy decode steps with the KV cache, each timed alone; in every step
transformers projects the image latents to each gated block's keys and values again. Prints
JSON: the median round's prefill and each round's median step, in milliseconds.

    .venv-ref/bin/python scripts/bench_idefics_transformers.py --model DIR --ids 1,2,3 \
        --images 3 --steps 32 --rounds 5 --threads 2
"""
import argparse
import json
import statistics
import time

import torch
from transformers import IdeficsForVisionText2Text


def image_mask(ids, image_token, eos, n_images):
    """The processor's rule: one-hot of the most recent image; none before the first image
    and after an end-of-sequence token until the next image."""
    mask = torch.zeros(1, len(ids), n_images, dtype=torch.long)
    count, after_eos = -1, False
    for i, t in enumerate(ids):
        if t == image_token:
            count += 1
            after_eos = False
        if count >= 0 and not after_eos:
            mask[0, i, count] = 1
        if t == eos:
            after_eos = True
    return mask


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--images", type=int, required=True)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    model = IdeficsForVisionText2Text.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    cfg = model.config
    ids = [int(t) for t in a.ids.split(",")]
    image_token = cfg.vocab_size + cfg.additional_vocab_size - 1
    latents = cfg.perceiver_config.resampler_n_latents
    width = cfg.vision_config.embed_dim
    perceiver = torch.randn(a.images, latents, width)
    mask = image_mask(ids, image_token, cfg.eos_token_id, a.images)
    prefills, steps = [], []
    with torch.inference_mode():
        for _ in range(a.rounds):
            t = time.perf_counter()
            out = model(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                image_attention_mask=mask,
                perceiver_embeddings=perceiver,
                use_cache=True,
            )
            prefills.append((time.perf_counter() - t) * 1e3)
            cache = out.past_key_values
            nxt = out.logits[0, -1].argmax().item()
            total = len(ids)
            times = []
            for _ in range(a.steps):
                total += 1
                t = time.perf_counter()
                out = model(
                    input_ids=torch.tensor([[nxt]]),
                    attention_mask=torch.ones(1, total, dtype=torch.long),
                    image_attention_mask=mask[:, -1:, :],
                    perceiver_embeddings=perceiver,
                    past_key_values=cache,
                    use_cache=True,
                )
                times.append((time.perf_counter() - t) * 1e3)
                cache = out.past_key_values
                nxt = out.logits[0, -1].argmax().item()
            steps.append(statistics.median(times))
    print(json.dumps({"prefill_ms": statistics.median(prefills), "step_ms_rounds": steps}))


if __name__ == "__main__":
    main()
