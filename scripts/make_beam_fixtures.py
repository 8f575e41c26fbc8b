#!/usr/bin/env python3
"""Reference outputs of transformers' beam search (5.24, `GenerationMixin._beam_search`) for the Rust port.

Rules the port must follow (one sequence, i.e. batch of 1; B = num_beams, N = max_new_tokens,
P = prompt length, t = generated tokens so far, lp = length_penalty, E = early_stopping):
 1. State: B running beams (tokens, sum of log-probs) and B "finished" slots (score -1e9, empty).
    Step 1: every running beam is the prompt; beam 0 starts at score 0 and beams 1..B-1 at -1e9,
    so only beam 0's tokens survive the first top-k (the B copies never duplicate each other).
 2. Each step: log_softmax (float32) of every running beam's last logits, plus the beam's score;
    flatten (beam, token) -> beam*V + token and keep the top K = max(2, 1 + #eos) * B candidates
    (sorted by accumulated log-prob, descending). The new token is appended.
 3. A candidate "hits" when its token is in eos_token_id or when it reaches length N (t+1 == N).
    Next running beams: the best B candidates that did not hit (hit ones are pushed down by -1e9).
 4. Finished update: only hit candidates whose rank among the K is < B may become finished
    hypotheses (an EOS at rank >= B is dropped). Its score is sum_logprobs / (t+1)**lp, where t+1
    = number of generated tokens INCLUDING the EOS (the EOS log-prob is in the sum and the EOS
    token stays in the sequence). The B slots become the top B of [old slots, new hypotheses];
    non-hypotheses carry about -1e9 and never beat a real one.
 5. Stop after a step when (a) t+1 == N: at that step the top-B-ranked candidates were all
    finalised (EOS or not) and merged with earlier ones; or (b) all B slots hold hypotheses and
    E is True; or (c) all B slots hold hypotheses and best_running / L**lp <= worst finished
    score, where best_running is the best running beam's raw sum after this step and
    L = t+1 (E False, or E "never" with lp <= 0) or L = N (E "never" with lp > 0). With E False and
    lp > 0 this is a heuristic (it may stop although a longer beam could still win).
 6. Output: the B slots in descending score order; sequences[0] is generate()'s answer and
    sequences_scores are the slot scores. Exact ties follow torch.topk's (unspecified) order; no
    case here is near a tie: `min_margin` (>= 1.3e-4) is its smallest score gap at any decision.
    transformers pads shorter hypotheses to the longest with `pad_token_id or eos_token_id[0]`
    (so pad 0 pads with the EOS!); cases.json stores every hypothesis unpadded (its true length,
    taken from beam_indices).

cases.json: a list of {model, prompt, num_beams, length_penalty, early_stopping, max_new_tokens,
eos_token_id, pad_token_id, sequences (B hypotheses, generated tokens only, transformers' order),
scores (sequences_scores), min_margin}. Grid per model: 4 seeded prompts (lengths 3, 5, 8, 12) x
num_beams {2, 3, 5} x length_penalty {0, 1, 2, -1} x early_stopping {False, True}, N = 8,
eos [2], pad 1; the last prompt is also run with an "early EOS" [e] and with two EOS tokens [e, f],
where e and f are tokens seen at generated positions 2-3 of that prompt's beams with eos [2]
(never at position 1, never the pad 1) that, as the only EOS, end a returned hypothesis early in
the most (second most) of the 12 (num_beams, length_penalty) settings; smallest id on ties.
This gives llama [0] / [0, 216], mistral [236] / [236, 280], qwen2 [62] / [62, 203].
Each case is also re-run by an independent Python implementation of rules 1-6 (no KV cache),
which must give the same sequences; early_stopping "never" is checked that way but not stored.

Regenerate (offline, CPU, float32, eager attention, deterministic):
    .venv-ref/bin/python scripts/make_beam_fixtures.py
"""

import json
import os
import random
from collections import Counter

import torch
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIXTURES, "beam", "cases.json")

MODELS = ["llama", "mistral", "qwen2"]
PROMPT_LENS = [3, 5, 8, 12]
BEAMS = [2, 3, 5]
PENALTIES = [0.0, 1.0, 2.0, -1.0]
EARLY = [False, True]
MAX_NEW = 8
BASE_EOS = [2]
PAD = 1
NEG = -1.0e9


def load(name):
    model = AutoModelForCausalLM.from_pretrained(
        os.path.join(FIXTURES, name), dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


def prompts(name, vocab):
    rng = random.Random(7919 * (MODELS.index(name) + 1))
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in PROMPT_LENS]


def hf_beam(model, prompt, b, lp, es, eos, ret):
    """transformers' generate(); returns (hypotheses unpadded, scores or None)."""
    ids = torch.tensor([prompt])
    kwargs = dict(
        attention_mask=torch.ones_like(ids), do_sample=False, num_beams=b, length_penalty=lp,
        max_new_tokens=MAX_NEW, early_stopping=es, eos_token_id=eos, pad_token_id=PAD,
    )
    with torch.no_grad():
        if ret == 1:
            out = model.generate(ids, **kwargs)
            return [out[0, len(prompt):].tolist()], None
        out = model.generate(ids, num_return_sequences=ret, output_scores=True,
                             return_dict_in_generate=True, **kwargs)
    lengths = (out.beam_indices != -1).sum(dim=1).tolist()
    seqs = [out.sequences[i, len(prompt):len(prompt) + n].tolist() for i, n in enumerate(lengths)]
    # Whatever follows a shorter hypothesis is padding.
    fill = PAD or eos[0]
    for i, n in enumerate(lengths):
        assert all(x == fill for x in out.sequences[i, len(prompt) + n:].tolist())
    return seqs, [float(s) for s in out.sequences_scores.tolist()]


def py_beam(model, prompt, b, lp, es, eos):
    """Rules 1-6 of the docstring, written out; returns (hypotheses, scores, min_margin)."""
    k = max(2, 1 + len(eos)) * b
    running = [([], 0.0 if i == 0 else NEG) for i in range(b)]
    slots = [(NEG, None)] * b  # (score, tokens); tokens None = empty
    margin = float("inf")
    for t in range(MAX_NEW):
        ids = torch.tensor([prompt + toks for toks, _ in running])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[:, -1, :].float(), dim=-1)
        acc = logp + torch.tensor([s for _, s in running], dtype=torch.float32)[:, None]
        vocab = acc.shape[1]
        vals, idx = torch.topk(acc.reshape(-1), k + 1)
        margin = min(margin, float((vals[:-1] - vals[1:]).min()))
        cands = []
        for rank in range(k):
            beam, tok = divmod(int(idx[rank]), vocab)
            toks = running[beam][0] + [tok]
            hit = tok in eos or t + 1 == MAX_NEW
            cands.append((float(vals[rank]), toks, hit, rank))
        running = [(toks, s) for s, toks, hit, _ in cands if not hit][:b]
        new = [(torch.tensor(s, dtype=torch.float32) / ((t + 1) ** lp), toks)
               for s, toks, hit, rank in cands if hit and rank < b]
        merged = [x for x in slots if x[1] is not None] + [(float(s), toks) for s, toks in new]
        merged.sort(key=lambda x: -x[0])
        for a, c in zip(merged, merged[1:]):
            margin = min(margin, a[0] - c[0])
        slots = (merged + [(NEG, None)] * b)[:b]
        if t + 1 == MAX_NEW:
            break
        if all(toks is not None for _, toks in slots):
            if es is True:
                break
            length = MAX_NEW if (es == "never" and lp > 0) else t + 1
            best = float(torch.tensor(running[0][1], dtype=torch.float32) / (length ** lp))
            worst = min(s for s, _ in slots)
            margin = min(margin, abs(best - worst))
            if best <= worst:
                break
    return [toks for _, toks in slots], [s for s, _ in slots], margin


def pick_eos(model, prompt):
    """Two EOS tokens that end hypotheses early (see the module docstring)."""
    seen, first = set(), set()
    for b in BEAMS:
        for lp in PENALTIES:
            seqs, _ = hf_beam(model, prompt, b, lp, False, BASE_EOS, b)
            for s in seqs:
                first.update(s[:1])
                seen.update(s[1:3])
    candidates = sorted(seen - first - set(BASE_EOS) - {PAD})

    def early_hits(tok):  # (num_beams, length_penalty) settings with a hypothesis ending in tok
        hits = 0
        for b in BEAMS:
            for lp in PENALTIES:
                seqs, _ = hf_beam(model, prompt, b, lp, False, [tok], b)
                hits += any(s[-1] == tok and len(s) < MAX_NEW for s in seqs)
        return hits

    ranked = sorted((-early_hits(tok), tok) for tok in candidates)
    return ranked[0][1], ranked[1][1]


def run_case(model, name, prompt, b, lp, es, eos):
    seqs, scores = hf_beam(model, prompt, b, lp, es, eos, b)
    plain, _ = hf_beam(model, prompt, b, lp, es, eos, 1)
    assert plain[0] == seqs[0], (name, prompt, b, lp, es, eos, plain, seqs)
    mine, my_scores, margin = py_beam(model, prompt, b, lp, es, eos)
    assert mine == seqs, (name, prompt, b, lp, es, eos, mine, seqs)
    assert all(abs(x - y) <= 1e-4 * max(1.0, abs(y)) for x, y in zip(my_scores, scores)), (my_scores, scores)
    return dict(
        model=name, prompt=prompt, num_beams=b, length_penalty=lp, early_stopping=es,
        max_new_tokens=MAX_NEW, eos_token_id=eos, pad_token_id=PAD, sequences=seqs,
        scores=scores, min_margin=float(f"{margin:.3g}"),
    )


def main():
    torch.set_num_threads(1)
    cases, notes = [], []
    for name in MODELS:
        model = load(name)
        ps = prompts(name, model.config.vocab_size)
        e, f = pick_eos(model, ps[-1])
        notes.append(f"{name}: early eos {e}, second eos {f}")
        runs = [(p, BASE_EOS) for p in ps] + [(ps[-1], [e]), (ps[-1], [e, f])]
        for prompt, eos in runs:
            for b in BEAMS:
                for lp in PENALTIES:
                    for es in EARLY:
                        cases.append(run_case(model, name, prompt, b, lp, es, eos))
                    # "never" only checks the written-down rules; not stored.
                    seqs, _ = hf_beam(model, prompt, b, lp, "never", eos, b)
                    assert py_beam(model, prompt, b, lp, "never", eos)[0] == seqs
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        fh.write("[\n" + ",\n".join(json.dumps(c, separators=(",", ":")) for c in cases) + "\n]\n")
    for n in notes:
        print(n)
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
