"""Decode step times of several compiled models, side by side in lockstep.

Each model prefills the same random prompt, then all decode one step each in turn (in a
shuffled order per step) with their KV caches bound as ONNX Runtime values, so that the
machine's drift falls on every model alike. Intra-op spinning is off: models that take turns
step by step would otherwise leave spinning workers on the cores the next one needs.

    python3 scripts/decode_lockstep.py DIR_OR_ONNX[,DIR_OR_ONNX...] PROMPT STEPS REPEATS

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


def load(entry, threads):
    path = entry if entry.endswith(".onnx") else os.path.join(entry, "model.onnx")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    with open(os.path.join(os.path.dirname(path), "mimic.json")) as f:
        cache = json.load(f)["kv_cache"]
    return session, cache


def empty_cache(cache):
    """Zero slots (fused MimIC graphs start their cache with them) and no tokens."""
    state = {}
    shape = (1, cache["num_kv_heads"], cache.get("slots", 0))
    for layer in range(cache["num_layers"]):
        for kind, dim in (("key", cache["key_dim"]), ("value", cache["value_dim"])):
            zeros = np.zeros(shape + (dim,), np.float32)
            state[f"past_key_values.{layer}.{kind}"] = ort.OrtValue.ortvalue_from_numpy(zeros)
    return state


def step(session, state, ids, past):
    binding = session.io_binding()
    n = len(ids)
    binding.bind_cpu_input("input_ids", np.array([ids], np.int64))
    binding.bind_cpu_input("attention_mask", np.ones((1, past + n), np.int64))
    binding.bind_cpu_input("position_ids", np.arange(past, past + n, dtype=np.int64)[None])
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
    entries = sys.argv[1].split(",")
    prompt, steps, repeats = (int(x) for x in sys.argv[2:5])
    models = [load(e, threads=2) for e in entries]
    ids = [int(x) for x in np.random.default_rng(0).integers(100, 40000, prompt)]
    times = [[] for _ in models]
    for r in range(repeats):
        states = [step(s, empty_cache(c), ids, 0) for s, c in models]
        order = list(range(len(models)))
        for t in range(steps):
            np.random.default_rng(r * 1000 + t).shuffle(order)
            for i in order:
                start = time.perf_counter()
                states[i] = step(models[i][0], states[i], [123], prompt + t)
                times[i].append(time.perf_counter() - start)
    base = np.median(times[0])
    for entry, x in zip(entries, times):
        x = np.array(x) * 1e3
        print(
            f"{entry[-60:]:<60} p25 {np.percentile(x, 25):.2f} median {np.median(x):.2f} "
            f"mean {x.mean():.2f} ms  x{np.median(x) / 1e3 / base:.4f}"
        )


if __name__ == "__main__":
    main()
