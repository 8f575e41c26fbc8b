"""Decode step times of several compiled models, side by side in lockstep.

Each model prefills the same random prompt, then all decode one step each in turn (in a
shuffled order per step) with their KV caches bound as ONNX Runtime values, so that the
machine's drift falls on every model alike. All sessions share one global intra-op thread
pool (spinning on, as in production): sessions that take turns step by step with pools of
their own would leave spinning workers on the cores the next one needs.

Every model is loaded COPIES times (default 2) in mirrored order (a b c, c b a, ...), and its
step times are pooled over its sessions: on the machines measured, a session built later
decodes a few percent faster than one built before it, even of the same file (it goes with
ONNX Runtime's weight prepacking), which would otherwise favour the models listed last.

    python3 scripts/decode_lockstep.py DIR_OR_ONNX[,DIR_OR_ONNX...] PROMPT STEPS REPEATS [BATCH [COPIES]]

Each entry is a compiled folder (its model.onnx) or an .onnx file beside a mimic.json (a
variant of a compiled graph). Prints per model the 25th percentile, median and mean step time
and the median's ratio to the first model's. Needs numpy and onnxruntime (1.30), e.g. in a
scratch venv: python3 -m venv /tmp/pv && /tmp/pv/bin/pip install numpy onnxruntime==1.30.0.
"""

import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import _pybind_state

THREADS = 2


def load(entry):
    path = entry if entry.endswith(".onnx") else os.path.join(entry, "model.onnx")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.use_per_session_threads = False
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    with open(os.path.join(os.path.dirname(path), "mimic.json")) as f:
        cache = json.load(f)["kv_cache"]
    return session, cache


def empty_cache(cache, batch):
    """Zero slots (fused MimIC graphs start their cache with them) and no tokens."""
    state = {}
    shape = (batch, cache["num_kv_heads"], cache.get("slots", 0))
    for layer in range(cache["num_layers"]):
        for kind, dim in (("key", cache["key_dim"]), ("value", cache["value_dim"])):
            zeros = np.zeros(shape + (dim,), np.float32)
            state[f"past_key_values.{layer}.{kind}"] = ort.OrtValue.ortvalue_from_numpy(zeros)
    return state


def step(session, state, ids, past):
    """One run over `ids` `[batch, n]` after `past` cached tokens of every row."""
    binding = session.io_binding()
    batch, n = ids.shape
    positions = np.tile(np.arange(past, past + n, dtype=np.int64), (batch, 1))
    binding.bind_cpu_input("input_ids", ids)
    binding.bind_cpu_input("attention_mask", np.ones((batch, past + n), np.int64))
    binding.bind_cpu_input("position_ids", positions)
    for name, value in state.items():
        binding.bind_ortvalue_input(name, value)
    names = [o.name for o in session.get_outputs()]
    for name in names:
        binding.bind_output(name)
    session.run_with_iobinding(binding)
    new = {}
    for name, value in zip(names, binding.get_outputs()):
        if name.startswith("present."):
            _, layer, kind = name.split(".")
            new[f"past_key_values.{layer}.{kind}"] = value
    return new


def main():
    _pybind_state.set_global_thread_pool_sizes(THREADS, 1)
    entries = sys.argv[1].split(",")
    prompt, steps, repeats = (int(x) for x in sys.argv[2:5])
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    copies = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    # (entry index, session, cache layout), loaded in mirrored order.
    sessions = []
    for copy in range(copies):
        order = range(len(entries)) if copy % 2 == 0 else reversed(range(len(entries)))
        for e in order:
            sessions.append((e, *load(entries[e])))
    ids = np.random.default_rng(0).integers(100, 40000, (batch, prompt)).astype(np.int64)
    next_ids = np.full((batch, 1), 123, np.int64)
    times = [[] for _ in entries]
    for r in range(repeats):
        states = [step(s, empty_cache(c, batch), ids, 0) for _, s, c in sessions]
        order = list(range(len(sessions)))
        for t in range(steps):
            np.random.default_rng(r * 1000 + t).shuffle(order)
            for i in order:
                e, session, _ = sessions[i]
                start = time.perf_counter()
                states[i] = step(session, states[i], next_ids, prompt + t)
                times[e].append(time.perf_counter() - start)
    base = np.median(times[0])
    for entry, x in zip(entries, times):
        x = np.array(x) * 1e3
        print(
            f"{entry[-60:]:<60} p25 {np.percentile(x, 25):.2f} median {np.median(x):.2f} "
            f"mean {x.mean():.2f} ms  x{np.median(x) / 1e3 / base:.4f}"
        )


if __name__ == "__main__":
    main()
