#!/usr/bin/env python3
"""Per-operator time of the decode steps in two ONNX Runtime profiles, side by side.

Make the profiles with `MIMIC_ORT_PROFILE=PREFIX mimic generate --compiled DIR ...` (ONNX
Runtime writes PREFIX_<date>.json). Node times are summed per operator type over the runs
after the first two (prefill and the first decode step) and given in ms per step.

Usage: scripts/ort_profile_diff.py BASE.json OTHER.json
"""
import collections
import json
import sys


def per_step(path):
    events = json.load(open(path))
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    nodes = [
        e
        for e in events
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
    ]
    decode = runs[2:]
    if not decode:
        sys.exit(f"{path}: fewer than three runs")
    by_op = collections.Counter()
    for r in decode:
        start, end = r["ts"], r["ts"] + r["dur"]
        for n in nodes:
            if start <= n["ts"] <= end:
                by_op[n["args"]["op_name"]] += n["dur"]
    steps = len(decode)
    step_us = sum(r["dur"] for r in decode) / steps
    return {op: us / steps for op, us in by_op.items()}, step_us, steps


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, step_a, n_a = per_step(sys.argv[1])
    b, step_b, n_b = per_step(sys.argv[2])
    print(
        f"decode steps {n_a} / {n_b}: {step_a / 1e3:.2f} ms vs {step_b / 1e3:.2f} ms a step "
        f"({100 * (step_b / step_a - 1):+.1f}%)"
    )
    print(f"{'operator':22s} {'base ms':>8s} {'other ms':>8s} {'diff ms':>8s}")
    for op in sorted(set(a) | set(b), key=lambda k: -b.get(k, 0)):
        x, y = a.get(op, 0) / 1e3, b.get(op, 0) / 1e3
        print(f"{op:22s} {x:8.3f} {y:8.3f} {y - x:+8.3f}")


if __name__ == "__main__":
    main()
