#!/usr/bin/env python3
"""`mimic run` under load (docs/reliability.md): thousands of requests through one compiled
folder with MimIC heads as inputs, heads swapped per request (two tasks' heads and none),
prompts of mixed lengths (0 to 24 demonstrations), and some invalid requests (a line that is
no JSON object, unknown heads, an empty prompt, a prompt longer than the context) with
--keep-going. While it runs, its resident memory is sampled from /proc every half second.

Checks: every valid request served (a completion and no error), every invalid one refused
with its own error, the exit status 1 (some were invalid); and reports RSS over time.

Usage: scripts/serve_load.py [--requests 3000] [--mimic target/release/mimic] [--out DIR]
(needs heads from `mimic train`: made here with 2 steps if missing; the default model.)
"""
import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(args):
    print("+", " ".join(str(a) for a in args), file=sys.stderr)
    subprocess.run([str(a) for a in args], check=True)


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--mimic", default=str(ROOT / "target/release/mimic"))
    ap.add_argument("--out", default=str(ROOT / "runs/serve-load"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    mimic = a.mimic

    # Two tasks' heads (2 steps each: the load, not their accuracy, is under test).
    tasks = {"cc": "country-capital", "ant": "antonym"}
    for name, task in tasks.items():
        heads = out / f"heads-{name}/heads.safetensors"
        if not heads.exists():
            sh([mimic, "train", "--task", task, "--method", "mimic", "--steps", "2",
                "--threads", "2", "--out", heads.parent])
    compiled = out / "compiled"
    if not (compiled / "mimic.json").exists():
        sh([mimic, "compile", "--heads-as-inputs", "--method", "mimic", "--out", compiled])

    # The requests: demonstrations of the task, then a query, as `Q: .. A:` lines.
    rng = random.Random(a.seed)
    data = {}
    for name, task in tasks.items():
        pairs = json.loads((ROOT / f"data/icl-tasks/{task}.json").read_text())
        data[name] = [(p["input"], p["output"]) for p in pairs]
    lines, expect_invalid = [], []
    for i in range(a.requests):
        roll = rng.random()
        if roll < 0.01:
            lines.append('{"heads": "cc", "prompt": ')  # not a JSON object
            expect_invalid.append(i)
            continue
        if roll < 0.02:
            lines.append(json.dumps({"heads": "nope", "prompt": "Q: a\nA:"}))
            expect_invalid.append(i)
            continue
        if roll < 0.03:
            lines.append(json.dumps({"heads": None, "prompt": ""}))
            expect_invalid.append(i)
            continue
        if roll < 0.04:
            lines.append(json.dumps({"heads": "cc", "prompt": "word " * 9000}))
            expect_invalid.append(i)
            continue
        name = rng.choice(["cc", "ant", None])
        pairs = data[name or rng.choice(["cc", "ant"])]
        shots = rng.randint(0, 24)
        demo = "".join(f"Q: {x}\nA: {y}\n\n" for x, y in rng.sample(pairs, shots))
        x, _ = rng.choice(pairs)
        lines.append(json.dumps({"heads": name, "prompt": f"{demo}Q: {x}\nA:"}))
    prompts = out / "requests.jsonl"
    prompts.write_text("\n".join(lines) + "\n")

    result = out / "results.json"
    cmd = [mimic, "run", "--compiled", compiled, "--heads", f"cc={out / 'heads-cc/heads.safetensors'}",
           "--heads", f"ant={out / 'heads-ant/heads.safetensors'}", "--prompts-file", prompts,
           "--batch", str(a.batch), "--max-new-tokens", "8", "--stop-at-newline", "--keep-going",
           "--threads", "2", "--json", result]
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    t0 = time.time()
    log = open(out / "run.log", "w")
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=log)
    samples = []
    while p.poll() is None:
        r = rss_kib(p.pid)
        if r:
            samples.append((time.time() - t0, r))
        time.sleep(0.5)
    wall = time.time() - t0
    status = p.returncode
    v = json.loads(result.read_text())
    results = v["results"]
    assert len(results) == a.requests, (len(results), a.requests)
    errors = [i for i, r in enumerate(results) if r.get("error")]
    valid_failed = [i for i in errors if i not in set(expect_invalid)]
    invalid_served = [i for i in expect_invalid if i not in set(errors)]
    empty_valid = [i for i, r in enumerate(results) if not r.get("error") and r["completion"] is None]
    # RSS over time: after the first tenth of the run (model loaded, arenas grown) to the end.
    warm = [r for t, r in samples if t >= 0.1 * wall] or [r for _, r in samples]
    report = {
        "requests": a.requests,
        "served": v["served"],
        "invalid": v["invalid"],
        "expected_invalid": len(expect_invalid),
        "valid_failed": len(valid_failed),
        "invalid_served": len(invalid_served),
        "exit_status": status,
        "wall_s": round(wall, 1),
        "served_per_s": round(v["served"] / v["seconds"], 1),
        "rss_mib": {
            "first_sample": round(samples[0][1] / 1024, 1) if samples else None,
            "after_warmup": round(warm[0] / 1024, 1) if warm else None,
            "end": round(samples[-1][1] / 1024, 1) if samples else None,
            "max": round(max(r for _, r in samples) / 1024, 1) if samples else None,
        },
        "rss_over_time": [(round(t, 1), round(r / 1024, 1)) for t, r in samples[:: max(1, len(samples) // 20)]],
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    ok = (status == 1 and not valid_failed and not invalid_served and not empty_valid
          and v["invalid"] == len(expect_invalid))
    if not ok:
        print("serve_load: FAILED", file=sys.stderr)
        sys.exit(1)
    print("serve_load: ok", file=sys.stderr)


if __name__ == "__main__":
    main()
