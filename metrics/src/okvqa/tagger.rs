//! `nltk.pos_tag(tokens)` (nltk 3.10.4, no tagset mapping): the greedy averaged perceptron
//! tagger (Honnibal's design, nltk `PerceptronTagger.tag`) with nltk_data's pretrained
//! Penn Treebank model (`averaged_perceptron_tagger`), embedded from
//! data/okvqa-stemmer/tagger.bin.gz (written by scripts/convert_okvqa_tagger.py).
//!
//! Left to right, each token takes the tag-dictionary tag of its exact spelling if it has
//! one; otherwise the class with the highest score
//!
//! ```text
//! score(c) = sum over the 14 features f present in the model of w[f][c]   (f64, in the
//!            order below, as Python adds them)
//! tag      = argmax_c (score(c), c)       ties go to the larger tag string
//! ```
//!
//! over the features (context = `-START-`, `-START2-`, normalised tokens, `-END-`, `-END2-`;
//! `prev`, `prev2` = the two tags already given; suffixes are the last 3 characters):
//!
//! ```text
//! bias | i suffix <word[-3:]> | i pref1 <word[0]> | i-1 tag <prev> | i-2 tag <prev2>
//! i tag+i-2 tag <prev> <prev2> | i word <ctx[i]> | i-1 tag+i word <prev> <ctx[i]>
//! i-1 word <ctx[i-1]> | i-1 suffix <ctx[i-1][-3:]> | i-2 word <ctx[i-2]>
//! i+1 word <ctx[i+1]> | i+1 suffix <ctx[i+1][-3:]> | i+2 word <ctx[i+2]>
//! ```
//!
//! Normalisation: a hyphen not in first position -> `!HYPHEN`; four digits -> `!YEAR`; a
//! leading digit -> `!DIGITS`; else lower case. The model's weights are 3-decimal values
//! stored as integer thousandths; `milli / 1000.0` is the very double nltk holds, so the
//! sums and the argmax are nltk's bit for bit.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

/// The pretrained model: tags, the tag dictionary and per-feature weights.
pub struct PerceptronTagger {
    /// The tag set, sorted (so the last of equal scores is the larger tag).
    classes: Vec<String>,
    tagdict: HashMap<String, u8>,
    /// Feature -> range into `weights`.
    features: HashMap<String, (u32, u32)>,
    weights: Vec<(u8, f64)>,
}

const MAGIC: &[u8] = b"OKVQA-APT1";

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1)[0]
    }
    fn u16(&mut self) -> usize {
        u16::from_le_bytes(self.bytes(2).try_into().unwrap()) as usize
    }
    fn u32(&mut self) -> usize {
        u32::from_le_bytes(self.bytes(4).try_into().unwrap()) as usize
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.bytes(4).try_into().unwrap())
    }
    fn string(&mut self, len: usize) -> String {
        String::from_utf8(self.bytes(len).to_vec()).expect("utf-8 in tagger model")
    }
}

impl PerceptronTagger {
    /// The embedded model, decoded once.
    pub fn pretrained() -> &'static PerceptronTagger {
        static MODEL: OnceLock<PerceptronTagger> = OnceLock::new();
        MODEL.get_or_init(|| {
            let gz = include_bytes!("../../../data/okvqa-stemmer/tagger.bin.gz");
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut raw)
                .expect("tagger model gzip");
            Self::decode(&raw)
        })
    }

    fn decode(raw: &[u8]) -> Self {
        let mut r = Reader { buf: raw, pos: 0 };
        assert_eq!(r.bytes(MAGIC.len()), MAGIC, "tagger model magic");
        let n_classes = r.u8() as usize;
        let classes: Vec<String> = (0..n_classes)
            .map(|_| {
                let len = r.u8() as usize;
                r.string(len)
            })
            .collect();
        let n_tagdict = r.u32();
        let mut tagdict = HashMap::with_capacity(n_tagdict);
        for _ in 0..n_tagdict {
            let len = r.u16();
            let word = r.string(len);
            tagdict.insert(word, r.u8());
        }
        let n_features = r.u32();
        let mut features = HashMap::with_capacity(n_features);
        let mut weights = Vec::new();
        for _ in 0..n_features {
            let len = r.u16();
            let feature = r.string(len);
            let n = r.u8() as u32;
            let start = weights.len() as u32;
            for _ in 0..n {
                let class = r.u8();
                weights.push((class, f64::from(r.i32()) / 1000.0));
            }
            features.insert(feature, (start, n));
        }
        assert_eq!(r.pos, raw.len(), "trailing bytes in tagger model");
        PerceptronTagger {
            classes,
            tagdict,
            features,
            weights,
        }
    }

    /// The tags of `tokens`, one per token (`[t for _, t in nltk.pos_tag(tokens)]`).
    pub fn tag<S: AsRef<str>>(&self, tokens: &[S]) -> Vec<&str> {
        let mut context: Vec<String> = vec!["-START-".into(), "-START2-".into()];
        context.extend(tokens.iter().map(|t| normalize(t.as_ref())));
        context.extend(["-END-".to_string(), "-END2-".to_string()]);
        let mut prev = "-START-";
        let mut prev2 = "-START2-";
        let mut out = Vec::with_capacity(tokens.len());
        for (i, word) in tokens.iter().enumerate() {
            let word = word.as_ref();
            let tag = match self.tagdict.get(word) {
                Some(&c) => self.classes[c as usize].as_str(),
                None => self.predict(&features(i + 2, word, &context, prev, prev2)),
            };
            out.push(tag);
            prev2 = prev;
            prev = tag;
        }
        out
    }

    /// The best class for the features: highest score, ties to the larger tag.
    fn predict(&self, features: &[String]) -> &str {
        let mut scores = vec![0.0f64; self.classes.len()];
        for f in features {
            if let Some(&(start, n)) = self.features.get(f.as_str()) {
                for &(class, w) in &self.weights[start as usize..(start + n) as usize] {
                    scores[class as usize] += w;
                }
            }
        }
        let mut best = 0;
        for (c, &s) in scores.iter().enumerate() {
            // Classes are sorted: `>=` lets the later (larger) tag win a tie.
            if s >= scores[best] {
                best = c;
            }
        }
        &self.classes[best]
    }
}

/// The last (up to) 3 characters.
fn suffix(s: &str) -> &str {
    let start = s.char_indices().rev().nth(2).map_or(0, |(i, _)| i);
    &s[start..]
}

/// The 14 feature strings of the token at `i` (an index into `context`, past the 2 starts).
fn features(i: usize, word: &str, ctx: &[String], prev: &str, prev2: &str) -> Vec<String> {
    let pref1: String = word.chars().next().map(String::from).unwrap_or_default();
    vec![
        "bias".to_string(),
        format!("i suffix {}", suffix(word)),
        format!("i pref1 {pref1}"),
        format!("i-1 tag {prev}"),
        format!("i-2 tag {prev2}"),
        format!("i tag+i-2 tag {prev} {prev2}"),
        format!("i word {}", ctx[i]),
        format!("i-1 tag+i word {prev} {}", ctx[i]),
        format!("i-1 word {}", ctx[i - 1]),
        format!("i-1 suffix {}", suffix(&ctx[i - 1])),
        format!("i-2 word {}", ctx[i - 2]),
        format!("i+1 word {}", ctx[i + 1]),
        format!("i+1 suffix {}", suffix(&ctx[i + 1])),
        format!("i+2 word {}", ctx[i + 2]),
    ]
}

/// Python's `str.isdigit()` for one character: decimal digits (`\p{Nd}`) and the other
/// characters of Unicode Numeric_Type=Digit that occur in text (superscripts, subscripts,
/// circled and parenthesised digits).
fn py_isdigit(c: char) -> bool {
    static ND: OnceLock<regex::Regex> = OnceLock::new();
    let nd = ND.get_or_init(|| regex::Regex::new(r"^\p{Nd}$").expect("Nd"));
    let mut buf = [0u8; 4];
    nd.is_match(c.encode_utf8(&mut buf))
        || matches!(c,
            '\u{b2}' | '\u{b3}' | '\u{b9}' | '\u{2070}' | '\u{2074}'..='\u{2079}'
            | '\u{2080}'..='\u{2089}' | '\u{2460}'..='\u{2468}' | '\u{2474}'..='\u{247c}'
            | '\u{2488}'..='\u{2490}' | '\u{24ea}' | '\u{24f5}'..='\u{24fd}' | '\u{24ff}'
            | '\u{2776}'..='\u{277e}' | '\u{2780}'..='\u{2788}' | '\u{278a}'..='\u{2792}')
}

/// nltk's `PerceptronTagger.normalize`.
pub fn normalize(word: &str) -> String {
    let first = word.chars().next();
    if word.contains('-') && first != Some('-') {
        return "!HYPHEN".into();
    }
    if word.chars().count() == 4 && word.chars().all(py_isdigit) {
        return "!YEAR".into();
    }
    if first.is_some_and(py_isdigit) {
        return "!DIGITS".into();
    }
    word.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tags() {
        let t = PerceptronTagger::pretrained();
        let toks = [
            "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog",
        ];
        assert_eq!(
            t.tag(&toks),
            ["DT", "JJ", "NN", "NN", "VBZ", "IN", "DT", "JJ", "NN"]
        );
        assert_eq!(t.tag(&["dogs"]), ["NNS"]);
        assert_eq!(t.tag(&["running"]), ["VBG"]);
        assert!(t.tag::<&str>(&[]).is_empty());
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize("Dogs"), "dogs");
        assert_eq!(normalize("1990"), "!YEAR");
        assert_eq!(normalize("3.5"), "!DIGITS");
        assert_eq!(normalize("hot-dog"), "!HYPHEN");
        assert_eq!(normalize("-"), "-");
        assert_eq!(suffix("café"), "afé");
        assert_eq!(suffix("a"), "a");
    }
}
