//! The OK-VQA answer stemmer of MimIC's evaluation (`OKVQAStemmer` in
//! `testbed/data/ok_vqa/__init__.py`, "to match the OK-VQA v1.1 procedure"), ported exactly:
//! predictions are stemmed before VQA accuracy on OK-VQA, whose released answers are stemmed
//! the same way.
//!
//! ```text
//! tokens = word_tokenize(answer)                 nltk: Punkt sentences, then Treebank words
//! tags   = pos_tag(tokens)                       nltk: averaged perceptron, Penn tags
//! for each (w, t):
//!     w in MANUAL_MATCHES  -> MANUAL_MATCHES[w]  (168 hand-made pairs)
//!     w ends in "ing"      -> WordNet verb lemma (morphy, shortest lemma)
//!     t is NNS or NNPS     -> inflection.singularize(w)
//!     else                 -> w
//! stem   = " ".join(stemmed tokens)
//! ```
//!
//! Each piece has its own module: [`tokenize`] and [`punkt`] (nltk 3.10.4 `word_tokenize`
//! and `sent_tokenize`), [`tagger`] (`pos_tag`), [`wordnet`] (`WordNetLemmatizer`, verbs),
//! [`inflection`] (`singularize`, inflection 0.5.1) and [`manual`] (the table). All data
//! (tagger weights, Punkt's English parameters, WordNet 3.0 verb lemmas and exceptions) is
//! embedded in the binary from data/okvqa-stemmer/ (provenance and licenses in its README).
//!
//! Checked token by token, tag by tag and output by output against the published code on
//! nltk 3.10.4 / inflection 0.5.1 (scripts/reference_okvqa_stem.py,
//! metrics/tests/fixtures/okvqa_stem.json). Known limits of exactness, all outside realistic
//! answers: Python's `str.isdigit` is reproduced for decimal digits and the common
//! superscript/circled digits only; the contraction rules' `\b` and inflection's `\b` use
//! Unicode `\w` where Python's `re` uses `str.isalnum()` (they differ on combining marks).

pub mod inflection;
pub mod manual;
pub mod punkt;
pub mod tagger;
pub mod tokenize;
pub mod wordnet;

pub use manual::MANUAL_MATCHES;
use tagger::PerceptronTagger;

/// The stemmer: a handle on the embedded models (decoded once per process, on first use).
#[derive(Clone, Copy)]
pub struct OkVqaStemmer {
    tagger: &'static PerceptronTagger,
}

impl Default for OkVqaStemmer {
    fn default() -> Self {
        Self::new()
    }
}

impl OkVqaStemmer {
    /// Loads (once) the tagger model; the other tables load on first use.
    pub fn new() -> Self {
        OkVqaStemmer {
            tagger: PerceptronTagger::pretrained(),
        }
    }

    /// The tokens of `text` with their Penn Treebank tags, as `pos_tag(word_tokenize(text))`.
    pub fn tagged(&self, text: &str) -> Vec<(String, &'static str)> {
        let tokens = tokenize::word_tokenize(text);
        let tags = self.tagger.tag(&tokens);
        tokens.into_iter().zip(tags).collect()
    }

    /// One token's stem given its tag (the published rule order).
    pub fn stem_token(word: &str, tag: &str) -> String {
        if let Some(stem) = manual::manual_match(word) {
            stem.to_string()
        } else if word.ends_with("ing") {
            wordnet::lemmatize_verb(word)
        } else if tag.starts_with("NNS") || tag.starts_with("NNPS") {
            inflection::singularize(word)
        } else {
            word.to_string()
        }
    }

    /// `OKVQAStemmer().stem(text)`.
    pub fn stem(&self, text: &str) -> String {
        let stems: Vec<String> = self
            .tagged(text)
            .iter()
            .map(|(w, t)| Self::stem_token(w, t))
            .collect();
        stems.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked() {
        let s = OkVqaStemmer::new();
        assert_eq!(s.stem("dogs"), "dog");
        assert_eq!(s.stem("running"), "run");
        assert_eq!(s.stem("weddings"), "wed");
        assert_eq!(s.stem("lying"), "lie");
        // "geese" is tagged JJ alone, so it is not singularized (nor would inflection know it).
        assert_eq!(s.stem("geese"), "geese");
        assert_eq!(s.stem("hot dogs."), "hot dog .");
        assert_eq!(s.stem("yes. no"), "yes . no");
        assert_eq!(s.stem(""), "");
    }
}
