#!/usr/bin/env python3
"""The transformers peer of `mimic bench-vision`: a vision-language model's image encoder
(`get_image_features`: tower and connector), eager, float32, per image, with the process's
resident memory before the model is loaded and its peak after the timed calls.

Prints one JSON object with the fields `mimic bench-vision` reads. The image is the file
given, or the same synthetic 640x480 gradient mimic makes (R = x mod 256, G = y mod 256,
B = (x + y) mod 256), processed by the folder's own image processor.

    .venv-ref/bin/python scripts/bench_vision_transformers.py --model DIR [--image F]
"""
import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
from PIL import Image


def rss_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {key} in /proc/self/status")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--image")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    from transformers import (AutoConfig, AutoImageProcessor, Idefics2ForConditionalGeneration,
                              Idefics3ForConditionalGeneration, LlavaForConditionalGeneration)

    if a.image:
        image = Image.open(a.image).convert("RGB")
    else:
        x = np.arange(640)[None, :]
        y = np.arange(480)[:, None]
        rgb = np.stack(np.broadcast_arrays(x % 256, y % 256, (x + y) % 256), -1)
        image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    processor = AutoImageProcessor.from_pretrained(a.model)
    model_type = AutoConfig.from_pretrained(a.model).model_type
    images = [image] * a.batch
    if model_type == "llava":
        inputs = processor(images, return_tensors="pt")
        kwargs = {}
    else:
        inputs = processor([images], return_tensors="pt")
        kwargs = {"pixel_attention_mask": inputs["pixel_attention_mask"]}
    before = rss_mib("VmRSS")
    cls = {"idefics2": Idefics2ForConditionalGeneration,
           "idefics3": Idefics3ForConditionalGeneration,
           "llava": LlavaForConditionalGeneration}[model_type]
    model = cls.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").eval()
    pixels = inputs["pixel_values"]

    def call():
        with torch.no_grad():
            model.model.get_image_features(pixel_values=pixels, **kwargs)

    call()
    call()
    ms = []
    for _ in range(max(1, a.repeats)):
        t = time.perf_counter()
        call()
        ms.append((time.perf_counter() - t) * 1e3 / a.batch)
    ms.sort()
    at = lambda q: ms[round((len(ms) - 1) * q)]
    print(json.dumps({
        "backend": "transformers",
        "images_per_call": a.batch,
        "ms_per_image": statistics.median(ms) if len(ms) % 2 else at(0.5),
        "ms_p10": at(0.1),
        "ms_p90": at(0.9),
        "rss_before_mib": before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
