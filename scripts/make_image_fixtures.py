#!/usr/bin/env python3
"""Writes the image-processor parity fixtures in models/tests/fixtures/images/.

Run by `make fixtures` in the reference environment (.venv-ref, requirements-ref.txt), or in
any venv with transformers==5.24.0, "pillow<13", numpy and scikit-image (torch not needed):
    .venv-ref/bin/python scripts/make_image_fixtures.py

Pillow must be < 13: Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the
height shrinks much more than the width, which changes some u8 values by one; mimic reproduces
the order every earlier Pillow used (horizontal pass first), the one MimIC's runs had.

Inputs are small PNG (and one JPEG) copies of scikit-image's sample photographs, made here with
PIL; the processors are built from their PIL ("slow") classes with explicit arguments (no hub).
Expected outputs are compact: shapes, the pixel mask as one valid (height, width) rectangle per
image, per-channel sums (float64) and a seeded sample of (flat index, value) pairs per tensor.
`resize/` holds PIL's own uint8 resize outputs, compared byte for byte.
"""
import json
import os
from pathlib import Path

import numpy as np
import PIL
from PIL import Image
import skimage
import transformers
from transformers.image_transforms import convert_to_rgb
from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "tests" / "fixtures" / "images"
DATA = Path(skimage.__file__).parent / "data"
SAMPLES = 2000


def save_inputs():
    inp = OUT / "inputs"
    inp.mkdir(parents=True, exist_ok=True)
    made = {}

    def put(name, im, **kw):
        im.save(inp / name, **kw)
        made[name] = im

    chelsea = Image.open(DATA / "chelsea.png").convert("RGB")  # 451x300
    put("chelsea_200x133.png", chelsea.resize((200, 133), Image.BICUBIC), optimize=True)
    coffee = Image.open(DATA / "coffee.png").convert("RGB")  # 600x400
    put("coffee_crop_120x181.png", coffee.crop((230, 60, 350, 241)), optimize=True)
    astronaut = Image.open(DATA / "astronaut.png").convert("RGB")  # 512x512
    put("astronaut_160x160.png", astronaut.resize((160, 160), Image.LANCZOS), optimize=True)
    camera = Image.open(DATA / "camera.png")  # 512x512, mode L
    assert camera.mode == "L"
    put("camera_gray_150x97.png", camera.resize((150, 97), Image.BILINEAR), optimize=True)
    rocket = Image.open(DATA / "rocket.jpg").convert("RGB")  # 427x640
    # An odd size that exercises the rounding rules (the aspect of 333x517, made smaller).
    put("rocket_167x259.png", rocket.resize((167, 259), Image.BICUBIC), optimize=True)
    # A JPEG re-encoded by PIL (libjpeg), 4:2:0, at an odd size: decoding parity is measured.
    put("rocket_333x517.jpg", rocket.resize((333, 517), Image.BICUBIC), quality=80)
    # RGBA: transformers composites transparent pixels onto white.
    logo = Image.open(DATA / "logo.png")
    rgba = logo.convert("RGBA").resize((96, 64), Image.BILINEAR)
    put("logo_rgba_96x64.png", rgba, optimize=True)
    return made


def decode_fixtures(inputs):
    out = {}
    for name in inputs:
        im = Image.open(OUT / "inputs" / name)
        arr = np.array(convert_to_rgb(im, return_numpy=True)).astype(np.int64)
        rng = np.random.default_rng(7)
        flat = arr.reshape(-1)
        idx = np.sort(rng.choice(flat.size, size=min(SAMPLES, flat.size), replace=False))
        out[name] = {
            "mode": im.mode,
            "height": arr.shape[0],
            "width": arr.shape[1],
            "channel_sums": [int(arr[..., c].sum()) for c in range(3)],
            "samples": [[int(i), int(flat[i])] for i in idx],
        }
    # PIL's plain convert("RGB") (alpha dropped) for the RGBA one.
    im = Image.open(OUT / "inputs" / "logo_rgba_96x64.png")
    plain = np.array(im.convert("RGB")).astype(np.int64)
    out["logo_rgba_96x64.png"]["pil_convert_rgb_channel_sums"] = [int(plain[..., c].sum()) for c in range(3)]
    return out


def resize_fixtures():
    rdir = OUT / "resize"
    rdir.mkdir(parents=True, exist_ok=True)
    src_name = "coffee_crop_120x181.png"
    src = Image.open(OUT / "inputs" / src_name).convert("RGB")
    cases = []
    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
    for fname, f in filters.items():
        for w, h in [(37, 29), (61, 240), (200, 133), (120, 90)]:
            file = f"{fname}_{w}x{h}.png"
            src.resize((w, h), f).save(rdir / file)
            cases.append({"input": src_name, "filter": fname, "width": w, "height": h, "expected": file})
    return cases


def tensor_summary(arr, channel_axis, seed):
    arr = np.asarray(arr)
    rng = np.random.default_rng(seed)
    flat = arr.reshape(-1)
    idx = np.sort(rng.choice(flat.size, size=min(SAMPLES, flat.size), replace=False))
    moved = np.moveaxis(arr.astype(np.float64), channel_axis, 0).reshape(arr.shape[channel_axis], -1)
    return {
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "channel_sums": [float(s) for s in moved.sum(axis=1)],
        "samples": [[int(i), float(flat[i])] for i in idx],
    }


def mask_summary(mask):
    mask = np.asarray(mask)
    shape = list(mask.shape)
    m = mask.reshape(-1, shape[-2], shape[-1])
    valid = []
    for k in range(m.shape[0]):
        rows = int(m[k].any(axis=1).sum())
        cols = int(m[k].any(axis=0).sum())
        rect = np.zeros_like(m[k])
        rect[:rows, :cols] = 1
        assert (rect == m[k]).all(), "pixel mask is not a top-left rectangle"
        valid.append([rows, cols])
    return {"shape": shape, "valid_hw": valid}


def processor_cases():
    cases = []

    def add(name, cls, config, batch, seed):
        # A null key means the class default here, as in mimic (transformers 5.x would pass None on).
        proc = cls(**{k: v for k, v in config.items() if k != "image_processor_type" and v is not None})
        images = [[Image.open(OUT / "inputs" / f) for f in sample] for sample in batch]
        if cls is SiglipImageProcessorPil:
            flat = [im for sample in images for im in sample]
            res = proc(flat, return_tensors="np")
            channel_axis = 1
        else:
            res = proc(images, return_tensors="np")
            channel_axis = 2
        case = {
            "name": name,
            "config": config,
            "batch": batch,
            "pixel_values": tensor_summary(res["pixel_values"], channel_axis, seed),
        }
        if "pixel_attention_mask" in res:
            case["pixel_attention_mask"] = mask_summary(res["pixel_attention_mask"])
        cases.append(case)

    siglip_llava = {
        "image_processor_type": "SiglipImageProcessor",
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "LlavaProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": 384, "width": 384},
    }
    add("siglip_llava_interleave_384", SiglipImageProcessorPil, siglip_llava,
        [["chelsea_200x133.png"], ["camera_gray_150x97.png"], ["rocket_167x259.png"], ["logo_rgba_96x64.png"]], 1)
    add("siglip_downscale_odd_97x61", SiglipImageProcessorPil,
        {**siglip_llava, "size": {"height": 97, "width": 61}}, [["astronaut_160x160.png"], ["rocket_167x259.png"]], 2)
    add("siglip_jpeg", SiglipImageProcessorPil, siglip_llava, [["rocket_333x517.jpg"]], 3)

    idefics2_8b = {
        "image_processor_type": "Idefics2ImageProcessor",
        "do_convert_rgb": True,
        "do_image_splitting": False,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "Idefics2Processor",
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"longest_edge": 980, "shortest_edge": 378},
    }
    add("idefics2_default_upscale", Idefics2ImageProcessorPil, idefics2_8b,
        [["chelsea_200x133.png", "camera_gray_150x97.png"], ["rocket_167x259.png"]], 4)
    # Smaller edges exercise the downscale and aspect rules on small inputs.
    small = {**idefics2_8b, "size": {"longest_edge": 101, "shortest_edge": 45}}
    add("idefics2_small_edges", Idefics2ImageProcessorPil, small,
        [["chelsea_200x133.png"], ["coffee_crop_120x181.png", "astronaut_160x160.png", "rocket_167x259.png"],
         ["camera_gray_150x97.png"]], 5)
    add("idefics2_split", Idefics2ImageProcessorPil, {**small, "do_image_splitting": True},
        [["chelsea_200x133.png", "rocket_167x259.png"], ["coffee_crop_120x181.png"]], 6)
    # Mean/std other than 0.5, rescale_factor off the default.
    clip = {**small, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711]}
    add("idefics2_clip_norm", Idefics2ImageProcessorPil, clip, [["logo_rgba_96x64.png", "coffee_crop_120x181.png"]], 7)

    smolvlm = {
        "image_processor_type": "Idefics3ImageProcessor",
        "do_convert_rgb": True,
        "do_image_splitting": False,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "max_image_size": {"longest_edge": 364},
        "processor_class": "Idefics3Processor",
        "resample": 1,
        "rescale_factor": 0.00392156862745098,
        "size": {"longest_edge": 1456},
    }
    add("idefics3_default_nosplit", Idefics3ImageProcessorPil, smolvlm,
        [["chelsea_200x133.png"], ["rocket_167x259.png", "camera_gray_150x97.png"]], 8)
    add("idefics3_small_nosplit", Idefics3ImageProcessorPil,
        {**smolvlm, "size": {"longest_edge": 99}, "max_image_size": {"longest_edge": 45}},
        [["coffee_crop_120x181.png", "astronaut_160x160.png"], ["logo_rgba_96x64.png"]], 9)
    return cases


def main():
    assert int(PIL.__version__.split(".")[0]) < 13, f"Pillow {PIL.__version__}: use pillow<13 (see the docstring)"
    inputs = save_inputs()
    fixtures = {
        "generator": "scripts/make_image_fixtures.py",
        "transformers": transformers.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "decode": decode_fixtures(inputs),
        "resize": resize_fixtures(),
        "processors": processor_cases(),
    }
    with open(OUT / "expected.json", "w") as f:
        json.dump(fixtures, f, separators=(",", ":"))
        f.write("\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(OUT)}: {p.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
