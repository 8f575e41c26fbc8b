"""Two `mimic eval --json` files of the same rows on the same questions, side by side.

Usage: python3 scripts/compare_evals.py A.json B.json

Per row (method, the ` (onnx)` tag left off): both accuracies from each file, and how many questions got the same
generated answer in both. Exits 1 when any row's accuracies differ or a file lacks a row of
the other. Standard library only.
"""
import json
import sys


def rows(path):
    """Rows by method, the backend's tag (`mimic (onnx)`) left off."""
    with open(path) as f:
        doc = json.load(f)
    return {r["method"].removesuffix(" (onnx)"): (r, answers)
            for r, answers in zip(doc["results"], doc["answers"])}


def main():
    a_path, b_path = sys.argv[1:3]
    a, b = rows(a_path), rows(b_path)
    ok = set(a) == set(b)
    if not ok:
        print(f"rows differ: {sorted(set(a) ^ set(b))}")
    print(f"| method | questions | VQA accuracy ({a_path}) | ({b_path}) | first-token | same answers |")
    print("|---|---|---|---|---|---|")
    for method in a:
        if method not in b:
            continue
        (ra, xa), (rb, xb) = a[method], b[method]
        same = sum(x["generated"] == y["generated"] for x, y in zip(xa, xb))
        equal = (ra["queries"] == rb["queries"]
                 and ra["exact_match"] == rb["exact_match"]
                 and ra["first_token_accuracy"] == rb["first_token_accuracy"])
        ok &= equal
        print(f"| {method} | {ra['queries']} | {ra['exact_match']:.3f} | {rb['exact_match']:.3f} | "
              f"{ra['first_token_accuracy']:.3f} / {rb['first_token_accuracy']:.3f} | "
              f"{same}/{len(xa)} |")
    print("every row equal" if ok else "ROWS DIFFER")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
