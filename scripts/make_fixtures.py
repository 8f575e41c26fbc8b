#!/usr/bin/env python3
"""Build tiny random Llama-family checkpoints and their Hugging Face reference outputs.

For every model in MODELS this writes tests/fixtures/<name>/ with
  config.json            what save_pretrained writes, plus the classic `rope_theta` /
                         `rope_scaling` keys (transformers 5 only writes `rope_parameters`)
  model.safetensors      float32 weights (tied models store only model.embed_tokens.weight)
  reference.safetensors  inputs (int64) and reference outputs (float32), see `reference()`
The Rust parity tests load the folder with their own loader and compare against these outputs.

Everything is offline and deterministic (fixed seeds, eager attention, float32, CPU).
Regenerate with:
    .venv-ref/bin/python scripts/make_fixtures.py
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

SEQ_LEN = 9
BATCH = 2
PAD_LEFT = 3  # pad positions on the left of row 0 of the padded batch
PREFIX_LEN = 6  # incremental-decode check: prefill 6 tokens, then decode 3 one by one

# Shared tiny shape: hidden 64 = 4 heads x head_dim 16.
COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    head_dim=16,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    attn_implementation="eager",
)

MODELS = {
    "llama": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON, vocab_size=256, num_hidden_layers=2, num_key_value_heads=2,
            rope_theta=10000.0, tie_word_embeddings=False,
        ),
    ),
    "llama-tied-rope-llama3": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON, vocab_size=320, num_hidden_layers=2, num_key_value_heads=2,
            rope_theta=500000.0, tie_word_embeddings=True,
            # A small original context so that every rotary frequency band is affected.
            rope_scaling={
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
            },
        ),
    ),
    "llama-rope-linear": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON, vocab_size=256, num_hidden_layers=2, num_key_value_heads=2,
            rope_theta=10000.0, tie_word_embeddings=False,
            rope_scaling={"rope_type": "linear", "factor": 2.0},
        ),
    ),
    "mistral": (
        MistralForCausalLM,
        # Window 4 < SEQ_LEN so the sliding window actually masks keys.
        MistralConfig(
            **COMMON, vocab_size=384, num_hidden_layers=3, num_key_value_heads=1,
            rope_theta=10000.0, sliding_window=4, tie_word_embeddings=False,
        ),
    ),
    "qwen2": (
        Qwen2ForCausalLM,
        Qwen2Config(
            **COMMON, vocab_size=512, num_hidden_layers=2, num_key_value_heads=2,
            rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
        ),
    ),
}


def randomize(model, seed):
    """Re-initialise with O(1) activations and non-trivial norms/biases.

    The stock init (std 0.02, norms = 1, biases = 0) gives near-uniform logits and would let
    bugs such as a missing norm weight or bias pass the parity tests unnoticed.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() == 2 and "embed_tokens" in name:
                # 2/sqrt(hidden) keeps tied-head logits at std ~2 instead of saturating.
                p.copy_(2.0 * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif p.dim() == 2:
                # Linear weight [out, in]: scale by fan-in.
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            else:
                raise ValueError(f"unexpected parameter {name}")
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def make_inputs(vocab, seed):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (BATCH, SEQ_LEN), generator=g, dtype=torch.int64)
    # Padded batch: row 0 = first SEQ_LEN-PAD_LEFT tokens of input_ids[0] left-padded with 0,
    # row 1 = input_ids[1] unpadded, so valid positions can be cross-checked against plain runs.
    padded = input_ids.clone()
    padded[0, PAD_LEFT:] = input_ids[0, : SEQ_LEN - PAD_LEFT]
    padded[0, :PAD_LEFT] = 0
    mask = torch.ones(BATCH, SEQ_LEN, dtype=torch.int64)
    mask[0, :PAD_LEFT] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, padded, mask, pos


def first(x):
    return x[0] if isinstance(x, tuple) else x


@torch.no_grad()
def reference(model, input_ids, padded, mask, pos):
    n_layers = model.config.num_hidden_layers
    out = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        def save(key):
            return lambda _m, _inp, o: out.__setitem__(key, first(o).detach().clone())
        hooks.append(layer.self_attn.register_forward_hook(save(f"layers.{i}.attn_out")))
        hooks.append(layer.mlp.register_forward_hook(save(f"layers.{i}.mlp_out")))
        hooks.append(layer.register_forward_hook(save(f"layers.{i}.out")))
    out["logits"] = model(input_ids=input_ids).logits
    for h in hooks:
        h.remove()
    assert len(out) == 1 + 3 * n_layers

    out["padded_logits"] = model(input_ids=padded, attention_mask=mask, position_ids=pos).logits
    out["input_ids"] = input_ids
    out["padded_input_ids"] = padded
    out["padded_attention_mask"] = mask
    out["padded_position_ids"] = pos
    return {k: v.contiguous() for k, v in out.items()}


def close(a, b, what, atol=1e-4):
    err = (a - b).abs().max().item()
    assert err < atol, f"{what}: max abs diff {err}"
    return err


@torch.no_grad()
def check(model, ref, name):
    """Self-consistency checks of the reference itself, so fixtures can be trusted."""
    logits = ref["logits"]
    # 1. Padded row 1 is unpadded; padded row 0's valid part is a plain run of the shorter prefix.
    close(ref["padded_logits"][1], logits[1], f"{name} padded row 1")
    short = model(input_ids=ref["input_ids"][:1, : SEQ_LEN - PAD_LEFT]).logits[0]
    close(ref["padded_logits"][0, PAD_LEFT:], short, f"{name} padded row 0")
    # 2. Incremental decode with a KV cache reproduces the full-sequence logits.
    ids = ref["input_ids"]
    cache = DynamicCache(config=model.config)
    # transformers 5.24 renamed `past_key_values` to `cache` (old name deprecated).
    step = model(input_ids=ids[:, :PREFIX_LEN], cache=cache, use_cache=True)
    close(step.logits, logits[:, :PREFIX_LEN], f"{name} prefill")
    for t in range(PREFIX_LEN, SEQ_LEN):
        step = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
        close(step.logits[:, 0], logits[:, t], f"{name} decode step {t}")
    # 3. Layer outputs chain: out_i = h_{i-1} + attn_i + mlp_i (residual structure is as assumed).
    h_prev = model.model.embed_tokens(ids)
    for i in range(model.config.num_hidden_layers):
        a, m, o = (ref[f"layers.{i}.{k}"] for k in ("attn_out", "mlp_out", "out"))
        close(h_prev + a + m, o, f"{name} residual layer {i}")
        h_prev = o
    # 4. Logits are not degenerate (random init must give a peaked distribution).
    assert logits.std().item() > 0.3, f"{name}: logits too flat ({logits.std().item():.3f})"


@torch.no_grad()
def check_sliding_window(cls, config, state_dict, ids):
    """The eager path must honour sliding_window: a huge window must change the logits."""
    wide_cfg = config.__class__.from_dict({**config.to_dict(), "sliding_window": 4096})
    wide_cfg._attn_implementation = "eager"
    wide = cls(wide_cfg).eval()
    wide.load_state_dict(state_dict)
    narrow = cls(config).eval()
    narrow.load_state_dict(state_dict)
    a, b = narrow(input_ids=ids).logits, wide(input_ids=ids).logits
    window = config.sliding_window
    # Positions < window see the same keys either way; later ones must differ.
    same = (a[:, :window] - b[:, :window]).abs().max().item()
    diff = (a[:, window:] - b[:, window:]).abs().amax(dim=-1).min().item()
    assert same < 1e-5 and diff > 1e-3, f"sliding window not honoured ({same}, {diff})"
    return same, diff


@torch.no_grad()
def check_rope_scaling(cls, config, state_dict, ids):
    """The scaled rotary embedding must change the logits, or the fixture tests nothing."""
    plain_rope = {"rope_type": "default", "rope_theta": config.rope_parameters["rope_theta"]}
    plain_cfg = config.__class__.from_dict({**config.to_dict(), "rope_parameters": plain_rope})
    plain_cfg._attn_implementation = "eager"
    plain = cls(plain_cfg).eval()
    plain.load_state_dict(state_dict)
    scaled = cls(config).eval()
    scaled.load_state_dict(state_dict)
    diff = (plain(input_ids=ids).logits - scaled(input_ids=ids).logits).abs().max().item()
    assert diff > 1e-2, f"rope scaling has no effect ({diff})"
    return diff


def add_classic_rope_keys(path):
    """transformers 5 writes `rope_parameters` only; add `rope_theta` / `rope_scaling` too."""
    with open(path) as f:
        cfg = json.load(f)
    params = cfg.get("rope_parameters") or {}
    if "rope_theta" not in cfg:
        cfg["rope_theta"] = params["rope_theta"]
    if "rope_scaling" not in cfg:
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        cfg["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else scaling
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    return cfg


def build(name, cls, config, out_root, seed):
    torch.manual_seed(seed)
    model = cls(config).eval()
    randomize(model, seed)
    model.config.dtype = torch.float32
    input_ids, padded, mask, pos = make_inputs(config.vocab_size, seed + 1)
    ref = reference(model, input_ids, padded, mask, pos)
    check(model, ref, name)
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        same, diff = check_sliding_window(cls, config, model.state_dict(), input_ids)
        print(f"  {name}: sliding window honoured (first {config.sliding_window} positions "
              f"equal to huge window: {same:.1e}; later positions differ by >= {diff:.3f})")

    if config.rope_parameters.get("rope_type", "default") != "default":
        diff = check_rope_scaling(cls, config, model.state_dict(), input_ids)
        print(f"  {name}: {config.rope_parameters['rope_type']} rope scaling changes logits by up to {diff:.3f}")

    folder = os.path.join(out_root, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    cfg = add_classic_rope_keys(os.path.join(folder, "config.json"))
    gen_cfg = os.path.join(folder, "generation_config.json")  # not needed by the Rust loader
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    save_file(ref, os.path.join(folder, "reference.safetensors"),
              metadata={"prefix_len": str(PREFIX_LEN), "pad_left": str(PAD_LEFT)})

    # Round trip: the saved folder (with the extra rope keys) must reload to the same outputs.
    reloaded = cls.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        close(reloaded(input_ids=input_ids).logits, ref["logits"], f"{name} reload", atol=1e-6)

    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    print(f"{name}: " + ", ".join(f"{f} {s / 1024:.1f} KiB" for f, s in sizes.items())
          + f" | rope_parameters={cfg.get('rope_parameters')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    ap.add_argument("--only", nargs="*", help="subset of model names")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    for k, (name, (cls, config)) in enumerate(MODELS.items()):
        if args.only and name not in args.only:
            continue
        build(name, cls, config, os.path.normpath(args.out), args.seed + 100 * k)


if __name__ == "__main__":
    main()
