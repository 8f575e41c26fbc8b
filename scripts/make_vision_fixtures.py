#!/usr/bin/env python3
"""Build tiny random SigLIP vision towers and their Hugging Face reference outputs.

For every tower in TOWERS this writes tests/fixtures/vision/<name>/ with
  config.json            what save_pretrained writes
  model.safetensors      float32 weights
  reference.safetensors  inputs and reference outputs (float32; int64 ids), see below
(under vision/ so that the decoder tests, which take every tests/fixtures/<name>/ holding a
reference.safetensors for a decoder, do not see them).

  siglip    SiglipVisionModel, two fixed-size images: pixel_values, hidden_states.{0..L}
            (0 = embeddings, l + 1 = encoder layer l's output, before post_layernorm) and
            last_hidden_state (after post_layernorm).
  idefics2  Idefics2VisionTransformer on a padded batch (image 1 has 5x7 real patches of an
            8x8 grid): pixel_values, patch_attention_mask, the bucketed position_ids the
            embeddings computed, and last_hidden_state; and for grids of 26, 27 and 70
            patches a side, torch's float32 boundaries and the buckets of every count of
            real patches along a side, as transformers 5.24 and 4.4x compute them.

Everything is offline and deterministic (fixed seeds, eager attention, float32, CPU).
Regenerate with:
    .venv-ref/bin/python scripts/make_vision_fixtures.py
"""

import argparse
import os

import torch
from safetensors.torch import save_file
from transformers import (
    Idefics2Config,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

N_IMAGES = 2
# Shared tiny shape: hidden 32 = 4 heads x head_dim 8, 32 px images of 4 px patches (8x8).
COMMON = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=4,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
)
REAL_PATCHES = (5, 7)
BUCKET_GRIDS = (26, 27, 70)  # idefics2: rows x columns of real patches in image 1


def randomize(model, seed):
    """Re-initialise with O(1) activations and non-trivial norms and biases.

    The stock init (norms = 1, biases = 0) would let a missing norm weight or bias pass.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "position_embedding" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() in (2, 4):
                # Linear [out, in] or Conv2d [out, in, k, k]: scale by fan-in.
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            else:
                raise ValueError(f"unexpected parameter {name}")


def pixels(seed, size):
    """Normalised pixel values in [-1, 1], as mean = std = 0.5 processors give."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(N_IMAGES, 3, size, size, generator=g) * 2 - 1


def close(a, b, what, atol=1e-5):
    err = (a - b).abs().max().item()
    assert err < atol, f"{what}: max abs diff {err}"
    return err


def record_hidden_states(model, encoder_layers, embeddings):
    out = {}
    hooks = [embeddings.register_forward_hook(
        lambda _m, _i, o: out.__setitem__("hidden_states.0", o.detach().clone()))]
    for i, layer in enumerate(encoder_layers):
        def save(key):
            return lambda _m, _i, o: out.__setitem__(
                key, (o[0] if isinstance(o, tuple) else o).detach().clone())
        hooks.append(layer.register_forward_hook(save(f"hidden_states.{i + 1}")))
    return out, hooks


@torch.no_grad()
def build_siglip(out_root, seed):
    config = SiglipVisionConfig(**COMMON, vision_use_head=False, attn_implementation="eager")
    torch.manual_seed(seed)
    model = SiglipVisionModel(config).eval()
    randomize(model, seed)
    px = pixels(seed + 1, config.image_size)
    out, hooks = record_hidden_states(model, model.vision_model.encoder.layers
                                      if hasattr(model, "vision_model") else model.encoder.layers,
                                      model.vision_model.embeddings
                                      if hasattr(model, "vision_model") else model.embeddings)
    res = model(pixel_values=px, output_hidden_states=True)
    for h in hooks:
        h.remove()
    L = config.num_hidden_layers
    assert sorted(out) == [f"hidden_states.{i}" for i in range(L + 1)], sorted(out)
    # The hooks agree with transformers' own hidden_states where it returns them.
    if res.hidden_states is not None:
        for i, h in enumerate(res.hidden_states):
            close(h, out[f"hidden_states.{i}"], f"siglip hidden_states[{i}]", atol=1e-7)
    out["last_hidden_state"] = res.last_hidden_state
    out["pixel_values"] = px
    # post_layernorm really is the last step, and the activation matters: the exact-erf GELU
    # changes the output, so a wrong activation cannot pass the parity test.
    post = model.vision_model.post_layernorm if hasattr(model, "vision_model") else model.post_layernorm
    close(post(out[f"hidden_states.{L}"]), res.last_hidden_state, "siglip post_layernorm")
    erf_cfg = SiglipVisionConfig(**{**COMMON, "hidden_act": "gelu"}, vision_use_head=False,
                                 attn_implementation="eager")
    erf = SiglipVisionModel(erf_cfg).eval()
    erf.load_state_dict(model.state_dict())
    out["last_hidden_state_gelu_erf"] = erf(pixel_values=px).last_hidden_state
    gelu_diff = ((out["last_hidden_state_gelu_erf"] - res.last_hidden_state).abs().max()
                 / res.last_hidden_state.abs().max()).item()
    assert gelu_diff > 1e-5, f"exact GELU does not change the output ({gelu_diff})"
    assert res.last_hidden_state.std().item() > 0.3, "last_hidden_state degenerate"
    write("siglip", model, out, out_root, SiglipVisionModel, px)
    print(f"  siglip: exact-erf GELU moves last_hidden_state by {gelu_diff:.2e} (relative)")


@torch.no_grad()
def build_idefics2(out_root, seed):
    config = Idefics2Config(vision_config=COMMON).vision_config
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Idefics2VisionTransformer(config).eval()
    randomize(model, seed)
    side = config.image_size // config.patch_size
    px = pixels(seed + 1, config.image_size)
    rows, cols = REAL_PATCHES
    p = config.patch_size
    px[1, :, rows * p:, :] = 0.0
    px[1, :, :, cols * p:] = 0.0
    mask = torch.ones(N_IMAGES, side, side, dtype=torch.bool)
    mask[1, rows:, :] = False
    mask[1, :, cols:] = False
    out = {}
    hook = model.embeddings.position_embedding.register_forward_pre_hook(
        lambda _m, inp: out.__setitem__("position_ids", inp[0].detach().clone()))
    res = model(pixel_values=px, patch_attention_mask=mask)
    hook.remove()
    out["last_hidden_state"] = res.last_hidden_state
    out["pixel_values"] = px
    out["patch_attention_mask"] = mask.to(torch.int64).reshape(N_IMAGES, -1)
    # Image 0 is full: its ids are 0..side^2 and its output that of running it alone.
    assert torch.equal(out["position_ids"][0], torch.arange(side * side))
    alone = model(pixel_values=px[:1]).last_hidden_state
    close(alone[0], res.last_hidden_state[0], "idefics2 full image alone")
    # Image 1's real patches spread over the whole grid (bucketing), not 0..rows*cols.
    real = out["position_ids"][1].reshape(side, side)[:rows, :cols]
    assert real.max().item() > rows * side, real
    # The bucketing at real grid sizes (Idefics3 26, LLaVA 27, Idefics2 70 patches a side):
    # the buckets of every count of real patches along a side, one row per count.
    for grid in BUCKET_GRIDS:
        out[f"boundaries_{grid}"] = torch.arange(1 / grid, 1.0, 1 / grid)
        out[f"buckets_{grid}"] = side_buckets(grid)
        out[f"buckets_v4_{grid}"] = side_buckets_v4(grid)
    write("idefics2", model, out, out_root, Idefics2VisionTransformer, px,
          load_kwargs=dict(patch_attention_mask=mask))


def side_buckets(grid):
    """Row n - 1: the bucket of patch i along a side of n real patches (-1 past n), computed
    as Idefics2VisionEmbeddings.forward does (float32 throughout)."""
    boundaries = torch.arange(1 / grid, 1.0, 1 / grid)
    out = torch.full((grid, grid), -1, dtype=torch.int64)
    for n in range(1, grid + 1):
        step = 1.0 / torch.tensor([n])
        coords = torch.arange(grid, dtype=torch.float32)[None, :] * step[:, None]
        coords = torch.clamp(coords, max=(1.0 - 1e-6))
        out[n - 1, :n] = torch.bucketize(coords, boundaries, right=True)[0, :n]
    return out


def side_buckets_v4(grid):
    """The same with transformers 4.4x's fractions (what MimIC ran): `torch.arange(0, 1 - 1e-6,
    1 / nb)` with `nb` the mask's sum, a tensor, so the step is float32."""
    boundaries = torch.arange(1 / grid, 1.0, 1 / grid)
    out = torch.full((grid, grid), -1, dtype=torch.int64)
    for n in range(1, grid + 1):
        nb = torch.ones(n, dtype=torch.bool).sum()
        coords = torch.arange(0, 1 - 1e-6, 1 / nb)
        assert coords.shape == (n,) and coords.dtype == torch.float32
        out[n - 1, :n] = torch.bucketize(coords, boundaries, right=True)
    return out


def write(name, model, ref, out_root, cls, px, load_kwargs=None):
    folder = os.path.join(out_root, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    ref = {k: v.contiguous() for k, v in ref.items()}
    save_file(ref, os.path.join(folder, "reference.safetensors"))
    reloaded = cls.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        again = reloaded(pixel_values=px, **(load_kwargs or {})).last_hidden_state
    close(again, ref["last_hidden_state"], f"{name} reload", atol=1e-6)
    from safetensors import safe_open
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        names = sorted(f.keys())
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    print(f"{name}: " + ", ".join(f"{f} {s / 1024:.1f} KiB" for f, s in sizes.items())
          + f" | first tensor {names[0]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vision"))
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    out = os.path.normpath(args.out)
    build_siglip(out, args.seed)
    build_idefics2(out, args.seed + 100)


if __name__ == "__main__":
    main()
