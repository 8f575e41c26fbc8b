"""Instructions a compiled model executes per decode step (or per prefill), counted by
callgrind: unlike a timing, the count hardly moves from run to run (two runs of one model in
one invocation agree within 0.01%, runs in separate invocations within about 0.2%), so graph
variants whose cost differs by less than a timing's noise can still be told apart.

    python3 scripts/count_instructions.py DIR_OR_ONNX[,DIR_OR_ONNX...] [STEPS [PROMPT [MODE]]]

Each entry is a compiled folder (its model.onnx) or an .onnx file beside a mimic.json (a
variant of a compiled graph). Each model is loaded in a process of its own under valgrind
(two at a time), prefills PROMPT (default 8) random tokens and decodes one token; then
callgrind counts STEPS (default 3) more decode steps (MODE `decode`, the default) or STEPS
prefills of the same prompt (MODE `prefill`). One thread, no spinning: the count is of the
work, not of waiting. Prints instructions per step and the ratio to the first model's.

It counts instructions, not time: the decode of this model reads its weights from memory
and waits on them, which the count does not see, so a graph's share of instructions bounds
what its small nodes cost rather than measuring its speed. Needs valgrind and gcc (for the
client-request helper it builds in a temporary folder), numpy and onnxruntime (1.30), e.g.
in a scratch venv: python3 -m venv /tmp/pv && /tmp/pv/bin/pip install numpy onnxruntime==1.30.0.
"""

import concurrent.futures
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HELPER = r"""
#include <valgrind/callgrind.h>
void count_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
void count_stop(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS; CALLGRIND_STOP_INSTRUMENTATION; }
"""


def child(entry, steps, prompt, mode, helper):
    """Runs under valgrind: load, warm up, then count `steps` steps between client requests."""
    import onnxruntime as ort

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from decode_lockstep import empty_cache, step

    path = entry if entry.endswith(".onnx") else os.path.join(entry, "model.onnx")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    with open(os.path.join(os.path.dirname(path), "mimic.json")) as f:
        cache = json.load(f)["kv_cache"]
    ids = np.random.default_rng(0).integers(100, 40000, (1, prompt)).astype(np.int64)
    next_ids = np.full((1, 1), 123, np.int64)
    state = step(session, empty_cache(cache, 1), ids, 0)
    state = step(session, state, next_ids, prompt)
    counter = ctypes.CDLL(helper)
    counter.count_start()
    for t in range(steps):
        if mode == "decode":
            state = step(session, state, next_ids, prompt + 1 + t)
        else:
            step(session, empty_cache(cache, 1), ids, 0)
    counter.count_stop()


def count(entry, steps, prompt, mode, helper, out):
    """Instructions per step of one model, from a valgrind run of this script."""
    cmd = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
        f"--callgrind-out-file={out}", sys.executable, os.path.abspath(__file__),
        "--child", entry, str(steps), str(prompt), mode, helper,
    ]
    env = dict(os.environ, PYTHONHASHSEED="0")
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dump = f"{out}.1"
    if run.returncode != 0 or not os.path.exists(dump):
        raise SystemExit(f"{entry}: valgrind run failed:\n{run.stderr[-2000:]}")
    with open(dump) as f:
        total = next(int(line.split()[1]) for line in f if line.startswith("summary:"))
    return total / steps


def main():
    if sys.argv[1] == "--child":
        entry, steps, prompt, mode, helper = sys.argv[2:7]
        child(entry, int(steps), int(prompt), mode, helper)
        return
    entries = sys.argv[1].split(",")
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    prompt = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    mode = sys.argv[4] if len(sys.argv) > 4 else "decode"
    if mode not in ("decode", "prefill"):
        raise SystemExit(f"unknown mode `{mode}` (decode, prefill)")
    with tempfile.TemporaryDirectory() as tmp:
        source, helper = os.path.join(tmp, "count.c"), os.path.join(tmp, "libcount.so")
        with open(source, "w") as f:
            f.write(HELPER)
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", helper, source], check=True)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            jobs = [
                pool.submit(count, e, steps, prompt, mode, helper, os.path.join(tmp, f"cg.{i}"))
                for i, e in enumerate(entries)
            ]
            totals = [j.result() for j in jobs]
    for entry, n in zip(entries, totals):
        print(f"{entry[-60:]:<60} {n / 1e6:9.3f} M instructions per {mode} step  x{n / totals[0]:.4f}")


if __name__ == "__main__":
    main()
