#!/usr/bin/env python3
"""Reference for the OK-VQA answer stemmer (`mimic_metrics::okvqa`): runs the published
MimIC stemmer (`testbed/data/ok_vqa/__init__.py`, `OKVQAStemmer`, copied below with its
`_MANUAL_MATCHES` table) on nltk 3.10.4 and inflection 0.5.1, over generated VQA-style
answers, and writes metrics/tests/fixtures/okvqa_stem.json (input, tokens, tags, output).

nltk's data packages are not downloaded: each piece is given from a file, and nltk's own
code reads it exactly as `nltk.download` would have it read:

- `nltk.sent_tokenize` (inside `word_tokenize`): the punkt_tab English parameters in
  data/okvqa-stemmer/punkt-english (see scripts/convert_okvqa_tagger.py), put on
  `nltk.data.path` as `tokenizers/punkt_tab/english/`;
- `nltk.pos_tag`: `PerceptronTagger(load=False)` given the weights, tag dictionary and classes
  of nltk_data's `averaged_perceptron_tagger.pickle` (--tagger-pickle), installed as the
  tagger `pos_tag` gets (`nltk.tag._get_tagger`), so `pos_tag -> _pos_tag -> tagger.tag` runs
  as published;
- `WordNetLemmatizer`: `nltk.corpus.wordnet` replaced by a `WordNetCorpusReader` over the
  WordNet 3.0 folder of Debian's `wordnet-base` (--wordnet).

Inputs: the pickle is in nltk_data's packages/taggers/averaged_perceptron_tagger.zip; WordNet
3.0 is Debian's package (`apt-get download wordnet-base && dpkg -x wordnet-base_*.deb wn`, then
wn/usr/share/wordnet); the published file is MimIC's testbed/data/ok_vqa/__init__.py (optional:
checks the table below against it).

Usage (from the repository root, with .venv-ref):
    python scripts/reference_okvqa_stem.py --tagger-pickle averaged_perceptron_tagger.pickle \
        --wordnet /usr/share/wordnet [--published testbed/data/ok_vqa/__init__.py]
"""

import argparse
import ast
import json
import pickle
import random
import shutil
import sys
import tempfile
from pathlib import Path

import inflection
import nltk
from nltk.corpus.reader import VERB
from nltk.corpus.reader.wordnet import WordNetCorpusReader
from nltk.tag.perceptron import PerceptronTagger

ROOT = Path(__file__).resolve().parent.parent

# ---- The published stemmer (MimIC testbed/data/ok_vqa/__init__.py), unchanged in behaviour.
_MANUAL_MATCHES = {
    "police": "police", "las": "las", "vegas": "vegas", "yes": "yes", "jeans": "jean",
    "hell's": "hell", "domino's": "domino", "morning": "morn", "clothes": "cloth", "are": "are",
    "riding": "ride", "leaves": "leaf", "dangerous": "danger", "clothing": "cloth",
    "texting": "text", "kiting": "kite", "firefighters": "firefight", "ties": "tie",
    "married": "married", "teething": "teeth", "gloves": "glove", "tennis": "tennis",
    "dining": "dine", "directions": "direct", "waves": "wave", "christmas": "christmas",
    "drives": "drive", "pudding": "pud", "coding": "code", "plating": "plate",
    "quantas": "quanta", "hornes": "horn", "graves": "grave", "mating": "mate",
    "paned": "pane", "alertness": "alert", "sunbathing": "sunbath", "tenning": "ten",
    "wetness": "wet", "urinating": "urine", "sickness": "sick", "braves": "brave",
    "firefighting": "firefight", "lenses": "lens", "reflections": "reflect",
    "backpackers": "backpack", "eatting": "eat", "designers": "design",
    "curiousity": "curious", "playfulness": "play", "blindness": "blind", "hawke": "hawk",
    "tomatoe": "tomato", "rodeoing": "rodeo", "brightness": "bright", "circuses": "circus",
    "skateboarders": "skateboard", "staring": "stare", "electronics": "electron",
    "electicity": "elect", "mountainous": "mountain", "socializing": "social",
    "hamburgers": "hamburg", "caves": "cave", "transitions": "transit", "wading": "wade",
    "creame": "cream", "toileting": "toilet", "sautee": "saute", "buildings": "build",
    "belongings": "belong", "stockings": "stock", "walle": "wall", "cumulis": "cumuli",
    "travelers": "travel", "conducter": "conduct", "browsing": "brows", "pooping": "poop",
    "haircutting": "haircut", "toppings": "top", "hearding": "heard",
    "sunblocker": "sunblock", "bases": "base", "markings": "mark", "mopeds": "mope",
    "kindergartener": "kindergarten", "pies": "pie", "scrapbooking": "scrapbook",
    "couponing": "coupon", "meetings": "meet", "elevators": "elev", "lowes": "low",
    "men's": "men", "childrens": "children", "shelves": "shelve", "paintings": "paint",
    "raines": "rain", "paring": "pare", "expressions": "express", "routes": "rout",
    "pease": "peas", "vastness": "vast", "awning": "awn", "boy's": "boy",
    "drunkenness": "drunken", "teasing": "teas", "conferences": "confer", "ripeness": "ripe",
    "suspenders": "suspend", "earnings": "earn", "reporters": "report", "kid's": "kid",
    "containers": "contain", "corgie": "corgi", "porche": "porch", "microwaves": "microwave",
    "batter's": "batter", "sadness": "sad", "apartments": "apart", "oxygenize": "oxygen",
    "striping": "stripe", "purring": "pure", "professionals": "profession", "piping": "pipe",
    "farmer's": "farmer", "potatoe": "potato", "emirates": "emir", "womens": "women",
    "veteran's": "veteran", "wilderness": "wilder", "propellers": "propel", "alpes": "alp",
    "charioteering": "chariot", "swining": "swine", "illness": "ill", "crepte": "crept",
    "adhesives": "adhesive", "regent's": "regent", "decorations": "decor",
    "rabbies": "rabbi", "overseas": "oversea", "travellers": "travel", "casings": "case",
    "smugness": "smug", "doves": "dove", "nationals": "nation", "mustange": "mustang",
    "ringe": "ring", "gondoliere": "gondolier", "vacationing": "vacate",
    "reminders": "remind", "baldness": "bald", "settings": "set", "glaced": "glace",
    "coniferous": "conifer", "revelations": "revel", "personals": "person",
    "daughter's": "daughter", "badness": "bad", "projections": "project",
    "polarizing": "polar", "vandalizers": "vandal", "minerals": "miner",
    "protesters": "protest", "controllers": "control", "weddings": "wed",
    "sometimes": "sometime", "earing": "ear",
}


class OKVQAStemmer:
    """Stemmer to match OKVQA v1.1 procedure (the published code)."""

    def __init__(self):
        self._wordnet_lemmatizer = nltk.stem.WordNetLemmatizer()

    def stem(self, input_string):
        word_and_pos = nltk.pos_tag(nltk.tokenize.word_tokenize(input_string))
        stemmed_words = []
        for w, p in word_and_pos:
            if w in _MANUAL_MATCHES:
                w = _MANUAL_MATCHES[w]
            elif w.endswith("ing"):
                w = self._wordnet_lemmatizer.lemmatize(w, VERB)
            elif p.startswith("NNS") or p.startswith("NNPS"):
                w = inflection.singularize(w)
            stemmed_words.append(w)
        return " ".join(stemmed_words)


# ---- nltk's data, from files.
class _SetOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if name == "set" and module in ("__builtin__", "builtins"):
            return set
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def install_tagger(pickle_path):
    with open(pickle_path, "rb") as f:
        weights, tagdict, classes = _SetOnlyUnpickler(f, encoding="latin1").load()
    tagger = PerceptronTagger(load=False)
    tagger.model.weights = weights
    tagger.tagdict = tagdict
    tagger.classes = classes
    tagger.model.classes = classes
    nltk.tag._get_tagger = lambda lang=None: tagger
    return tagger


# WordNet 3.0's lexicographer file names (nltk's reader needs the `lexnames` file, which
# Debian's wordnet-base leaves out; it plays no part in morphy).
_LEXNAMES = (
    "adj.all 3,adj.pert 3,adv.all 4,noun.Tops 1,noun.act 1,noun.animal 1,noun.artifact 1,"
    "noun.attribute 1,noun.body 1,noun.cognition 1,noun.communication 1,noun.event 1,"
    "noun.feeling 1,noun.food 1,noun.group 1,noun.location 1,noun.motive 1,noun.object 1,"
    "noun.person 1,noun.phenomenon 1,noun.plant 1,noun.possession 1,noun.process 1,"
    "noun.quantity 1,noun.relation 1,noun.shape 1,noun.state 1,noun.substance 1,noun.time 1,"
    "verb.body 2,verb.change 2,verb.cognition 2,verb.communication 2,verb.competition 2,"
    "verb.consumption 2,verb.contact 2,verb.creation 2,verb.emotion 2,verb.motion 2,"
    "verb.perception 2,verb.possession 2,verb.social 2,verb.stative 2,verb.weather 2,"
    "adj.ppl 3"
).split(",")


def install_wordnet(folder, scratch):
    # Under a folder on nltk.data.path: nltk's path guard refuses a reader root elsewhere.
    wn_dir = scratch / "nltk_data" / "corpora" / "wordnet"
    shutil.copytree(folder, wn_dir)
    if not (wn_dir / "lexnames").exists():
        (wn_dir / "lexnames").write_text(
            "".join(f"{i:02d}\t{n.replace(' ', chr(9))}\n" for i, n in enumerate(_LEXNAMES))
        )
    # The reader's constructor maps "3.0" synsets onto nltk_data's `wordnet` package through
    # index.sense files (not in wordnet-base); that mapping plays no part in morphy either.
    WordNetCorpusReader.map_wn = lambda self, version="wordnet": None
    reader = WordNetCorpusReader(str(wn_dir), None)
    nltk.corpus.wordnet = reader
    return reader


def install_punkt(punkt_dir, scratch):
    target = scratch / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    shutil.copytree(punkt_dir, target)
    nltk.data.path.insert(0, str(scratch / "nltk_data"))


def check_published(path):
    """The table above must be the published one."""
    tree = ast.parse(Path(path).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_MANUAL_MATCHES":
            published = ast.literal_eval(node.value)
            assert list(published.items()) == list(_MANUAL_MATCHES.items()), "table differs"
            print(f"_MANUAL_MATCHES: {len(published)} entries, same as {path}")
            return
    raise SystemExit(f"no _MANUAL_MATCHES in {path}")


# ---- Inputs.
WORDS = (
    "dog dogs cat cats geese goose mice mouse children child men women people person oxen "
    "feet teeth sheep fish deer series species news glasses buses boxes quizzes matrices "
    "vertices octopi viruses analyses bases crises theses diagnoses knives wives leaves "
    "shelves wolves halves lives cows kine zombies moves sexes humans movies berries cherries "
    "babies ladies stories toys keys days shoes potatoes tomatoes heroes photos pianos data "
    "criteria media bacteria running lying dying tying sitting swimming playing eating "
    "skiing surfing flying riding driving making taking singing ring king thing things "
    "something nothing morning evening building wedding weddings ceiling spring string "
    "went ran ate saw flew swam bought caught taught thought was were is are am be been has "
    "have had does did done go goes going gone red blue green yellow white black orange "
    "purple brown pink gray grey kitchen bathroom bedroom living room street table chair "
    "chairs bed beds car cars bus truck trucks train trains plane planes boat boats bike "
    "bikes motorcycle pizza pizzas sandwich sandwiches banana bananas apple apples hot dog "
    "frisbee frisbees kite kites umbrella umbrellas giraffe giraffes elephant elephants zebra "
    "zebras horse horses bear bears bird birds tennis baseball soccer surfboard skateboard "
    "snowboard skis ski racket bat glove gloves helmet helmets jeans clothes clothing police "
    "christmas vegas las yes no maybe one two three four five 1 2 3 10 20 100 1990 2010 "
    "3.5 1,000 50% $5 a an the of in on at to for with by from up down left right sunny "
    "rainy cloudy cold warm hot wood wooden metal plastic glass paper stone brick concrete "
    "grass sand water snow ice new york san francisco london paris tokyo usa america "
    "american england english china chinese japan japanese french italian mexican indian "
    "dr mr mrs st u.s. u.k. a.m. p.m. etc vs no. jr. inc. co. dept. "
    "watching texting kiting dining coding mating staring wading browsing pooping paring "
    "teasing striping purring piping vacationing polarizing earing awning "
    "analysis thesis basis crisis octopus virus status alias bus axis testis "
    "fries flies cries tries dries spies skies pies ties lies dies "
    "café naïve résumé jalapeño über señor piñata crème brûlée "
    "Dogs Cats Running Geese Children Weddings Christmas Police Paris London Nike Adidas "
    "McDonald's Starbucks iPhone eBay NASA USA UK BBC TV DVD DVDs CDs ATMs USB "
    "Lying Dying Went Mice Men Women"
).split()
WORDS += list(_MANUAL_MATCHES)
CONTRACTIONS = (
    "don't it's can't won't isn't aren't didn't doesn't i'm you're they're we've he'd she'll "
    "let's o'clock rock'n'roll y'all 'tis 'twas cannot gonna gotta wanna gimme lemme "
    "dog's cat's children's men's women's people's boys' girls' james' "
    "Don't It's Can't I'M YOU'RE"
).split()
PUNCT_AFTER = [".", ",", "?", "!", "'", '"', ")", "...", ";", ":", "-", "--", "'s", ".)", '."']
PUNCT_BEFORE = ["(", '"', "'", "``", "--", "-", "$", "#", "@"]
SEPARATORS = [" ", " ", " ", " ", "  ", "-", " - ", " -- ", ", ", "/", " & ", "\t", "\n", ". "]

FIXED = [
    "", " ", "   ", "\n", ".", "..", "...", "?", "!", "'", '"', "(", ")", "--", "-",
    "dogs", "running", "weddings", "lying", "geese", "mice", "children", "went", "dying",
    "yes. no", "Yes. No.", "dr. smith", "Dr. Smith", "u.s. army", "U.S. Army", "a.m. train",
    "5 p.m. train", "st. louis", "no. 5", "2 p.m.", "it's 5 o'clock", "don't know",
    "can't tell", "cannot", "gonna", "wanna go", "the dog's bone", "'tis", "hot dogs",
    "hot dogs.", "(hot dogs)", '"hot dogs"', "hot dogs!!! yes", "maybe... no", "a - b",
    "new york city", "san francisco 49ers", "1,000 dollars", "$5.00", "50%", "3.5 inches",
    "café", "naïve", "Café au lait", "jalapeños", "crème brûlée", "résumés", "über",
    "«quoted»", "“curly” quotes", "‘single’", "em—dash", "en–dash", "a*b", "c++", "#1",
    "@home", "x & y", "a;b", "time: 5", "3:30", "a,b", "a, b", "1,2", "Mr. T", "J. Smith",
    "e.g. dogs", "i.e. cats", "vs. cats", "etc.", "Inc.", "U.K.", "U.S.A. flags", "A. B. C.",
    "What? No!", "Why? Because.", "one. two. three.", "first.Second", "end.)", "(end.) next",
    "tennis rackets", "skis", "dvds", "DVDs", "glasses", "eye glasses", "scissors", "pants",
    "thesis", "theses", "analyses", "octopi", "viruses", "statuses", "people", "kine",
    "Kine", "zombies", "moves", "humans", "sexes", "oxen", "Oxen", "matrices", "vertices",
    "quizzes", "databases", "movies", "series", "news", "bus", "buses", "shoes", "tomatoes",
    "wolves", "knives", "hives", "archives", "passersby", "crises", "axes", "testes",
]


# Punctuation-heavy strings: the tokenizer's and Punkt's corner cases, answers or not.
FUZZ_ALPHABET = list("aAbBsSiIjJ..??!!''\"\"()[]{}<>--,,::;`«»“”‘’…—–*@#$%&/ \t\n0123456789é")
FUZZ_PIECES = ["'s", "n't", "'ll", "'re", "can", "not", "gon", "na", "'t", "is", "Dr", "U.S",
               "e.g", "etc", "No", "The", "However", "St", "Inc", "p.m", "J", "K", "dogs",
               "running", "children", "went", "lying"]


def fuzz(rng):
    parts = []
    for _ in range(rng.randint(1, 8)):
        parts.append(rng.choice(FUZZ_PIECES) if rng.random() < 0.4 else rng.choice(FUZZ_ALPHABET))
    return "".join(parts)


def generate(seed, count, fuzz_count):
    rng = random.Random(seed)
    out = list(FIXED)
    while len(out) < count - fuzz_count:
        n = rng.choice([1, 1, 1, 2, 2, 2, 3, 3, 4])
        parts = []
        for _ in range(n):
            r = rng.random()
            w = rng.choice(CONTRACTIONS) if r < 0.12 else rng.choice(WORDS)
            c = rng.random()
            if c < 0.12:
                w = w.capitalize()
            elif c < 0.15:
                w = w.upper()
            if rng.random() < 0.1:
                w = rng.choice(PUNCT_BEFORE) + w
            if rng.random() < 0.18:
                w = w + rng.choice(PUNCT_AFTER)
            parts.append(w)
        text = parts[0]
        for p in parts[1:]:
            text += rng.choice(SEPARATORS) + p
        r = rng.random()
        if r < 0.05:
            text = " " + text
        elif r < 0.1:
            text = text + " "
        out.append(text)
    while len(out) < count:
        out.append(fuzz(rng))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tagger-pickle", type=Path, required=True)
    ap.add_argument("--wordnet", type=Path, required=True, help="Debian wordnet-base folder")
    ap.add_argument("--punkt", type=Path, default=ROOT / "data/okvqa-stemmer/punkt-english")
    ap.add_argument("--published", type=Path, help="MimIC's testbed/data/ok_vqa/__init__.py")
    ap.add_argument("--seed", type=int, default=20250611)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--fuzz", type=int, default=800, help="how many of them are fuzz strings")
    ap.add_argument("--out", type=Path, default=ROOT / "metrics/tests/fixtures/okvqa_stem.json")
    args = ap.parse_args()
    if args.published:
        check_published(args.published)

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        install_punkt(args.punkt, scratch)
        install_tagger(args.tagger_pickle)
        install_wordnet(args.wordnet, scratch)
        stemmer = OKVQAStemmer()
        cases = []
        for text in generate(args.seed, args.count, args.fuzz):
            tokens = nltk.tokenize.word_tokenize(text)
            tags = [t for _, t in nltk.pos_tag(tokens)]
            cases.append(
                {"input": text, "tokens": tokens, "tags": tags, "output": stemmer.stem(text)}
            )
        # The one-sentence form, for a difference report if ever needed.
        multi = sum(
            1 for c in cases if c["tokens"] != nltk.tokenize.word_tokenize(c["input"], preserve_line=True)
        )

    fixture = {
        "generator": "scripts/reference_okvqa_stem.py",
        "seed": args.seed,
        "python": sys.version.split()[0],
        "nltk": nltk.__version__,
        "inflection": inflection.__version__,
        "tagger": "nltk_data averaged_perceptron_tagger.pickle",
        "wordnet": "WordNet 3.0 (Debian wordnet-base)",
        "punkt": "punkt_tab english (data/okvqa-stemmer/punkt-english)",
        "cases": cases,
    }
    # One case a line: readable diffs, small file.
    head = json.dumps({k: v for k, v in fixture.items() if k != "cases"}, ensure_ascii=False)
    body = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    args.out.write_text(head[:-1] + ', "cases": [\n' + body + "\n]}\n", encoding="utf-8")
    print(f"{len(cases)} cases ({multi} split differently with preserve_line=True) -> {args.out}")


if __name__ == "__main__":
    main()
