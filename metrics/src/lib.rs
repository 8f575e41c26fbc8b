//! The seed's benchmark metrics, computed the way their official scorers compute them.
//!
//! No libtorch, no Python, no Java: plain Rust checked against the official code's numbers
//! (fixtures by `scripts/make_metric_fixtures.py`, tests in `metrics/tests/`).
//!
//! # VQA accuracy ([`vqa`])
//!
//! For a prediction `p` and ten ground-truth answers `g_1..g_10` (after the normalisation
//! described in [`vqa`]):
//!
//! ```text
//! acc_i(p) = min(1, #{ j != i : g_j == p } / 3)        (leave one annotator out)
//! acc(p)   = (1/10) * sum_i acc_i(p)
//! overall  = 100 * mean over questions of acc(p)
//! ```
//!
//! The official scorer (GT-Vision-Lab `vqaEval.py`) normalises both sides only when the ten
//! answers are not all identical and rounds overall, per question type and per answer type to
//! 2 decimals (Python 2 `round`); MimIC's variant normalises every answer and the prediction
//! unconditionally and does not round ([`VqaVariant`]).
//!
//! # CIDEr-D ([`cider`])
//!
//! pycocoevalcap 1.2's `Cider` (n = 4, sigma = 6) over whitespace-split (PTB-tokenized)
//! captions. With `I` images, `df(g)` the number of images whose references contain n-gram
//! `g` (the evaluated set's references only) and `ref_len = ln(I)`:
//!
//! ```text
//! v_n(s)[g]  = tf_s(g) * (ref_len - ln(max(1, df(g))))        for each n-gram g of order n
//! sim_n(h,r) = sum_g min(v_n(h)[g], v_n(r)[g]) * v_n(r)[g] / (|v_n(h)| |v_n(r)|)
//!              (no division when a norm is 0)
//!              * exp(-(len(h) - len(r))^2 / (2 sigma^2))
//! score(img) = 10 * (1/|R|) * sum_{r in R} (1/4) * sum_{n=1..4} sim_n(h, r)
//! corpus     = mean over images of score(img)
//! ```
//!
//! where `len` is pycocoevalcap's quirk: the number of **bigrams** (not words) in the caption.
//!
//! # PTB tokenization ([`ptb`])
//!
//! pycocoevalcap tokenizes every caption with Stanford CoreNLP 3.4.1's `PTBTokenizer
//! -preserveLines -lowerCase` and then drops the tokens `''`, `'`, ` `` `, `` ` ``, `-LRB-`,
//! `-RRB-`, `-LCB-`, `-RCB-`, `.`, `?`, `!`, `,`, `:`, `-`, `--`, `...`, `;` (after
//! lower-casing, brackets read `-lrb-` and so survive the filter). [`ptb`] is a hand-written
//! Rust port of the lexer rules captions exercise plus that filter. pycocoevalcap runs the jar
//! once over all captions, one a line, and a few lexer lookaheads see the next line:
//! [`ptb_tokenize`] takes the captions in that order (image by image, caption by caption).
//!
//! # MME ([`mme`])
//!
//! The official `eval_tool/calculation.py`: a prediction is read as yes/no after
//! lower-casing (exact word, else `yes` then `no` in its first 4 characters, else `other`,
//! always wrong). Per subtask (two questions per image):
//!
//! ```text
//! acc   = #questions right / #questions
//! acc+  = #images with both questions right / #images
//! score = acc * 100 + acc+ * 100                              (max 200, not rounded)
//! perception = sum of the 10 perception scores; cognition = sum of the 4 cognition ones
//! ```
//!
//! [`mme`] also reads and writes the official result files (`<subtask>.txt`, lines
//! `image\tquestion\tgt\tprediction`) and has MimIC's variant: `yes` -> 1, `no` -> 0, else
//! -1 on the stripped first line, scored as plain accuracy ([`MmeVariant::Mimic`]).
//!
//! # SEED-Bench v1 ([`seed`])
//!
//! Exact-match accuracy per image dimension (`question_type_id` 1..=9) and over all
//! questions, `correct / questions * 100`. Letters come either given, or extracted from
//! generated text as MimIC does it (cut at the first `\n` or `.`, strip, keep A-D, else a
//! random letter), the random letters drawn from a seeded [`seed::SplitMix64`].
//!
//! # OK-VQA answer stemming ([`okvqa`])
//!
//! MimIC's `OKVQAStemmer` (OK-VQA v1.1): nltk's `word_tokenize` and `pos_tag`, then per
//! token a hand-made table, WordNet's verb lemma for `-ing` words, or inflection's
//! `singularize` for plural nouns ([`okvqa::OkVqaStemmer::stem`]), models embedded.
//!
//! # Pipeline
//!
//! ```text
//! refs  = ptb_tokenize(all references, image by image)   // one jar run in pycocoevalcap
//! hyps  = ptb_tokenize(all hypotheses, image by image)   // a second run
//! cider = cider_d(&hyps, &refs grouped per image)
//! vqa   = vqa_accuracy(&questions, VqaVariant::Official) // raw answers, no PTB step
//! mme   = mme_report(&read_results_dir(dir)?, MmeVariant::Official)
//! seed  = seed_accuracy_from_generations(&generations, rng_seed)
//! ```

pub mod cider;
pub mod mme;
pub mod okvqa;
pub mod ptb;
pub mod seed;
pub mod vqa;

pub use cider::{cider_d, CiderScores};
pub use mme::{mme_report, MmeReport, MmeSubtask, MmeVariant};
pub use okvqa::OkVqaStemmer;
pub use ptb::{ptb_tokenize, ptb_tokenize_line};
pub use seed::{seed_accuracy, SeedDimension, SeedReport};
pub use vqa::{vqa_accuracy, VqaQuestion, VqaReport, VqaVariant};

/// Errors from the metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric needs at least one item.
    #[error("{0}: nothing to score")]
    Empty(&'static str),
    /// Mismatched or malformed inputs.
    #[error("{0}")]
    Invalid(String),
    /// A name or id that is none of the known ones (an MME subtask, a SEED-Bench dimension).
    #[error("unknown {kind}: {name:?}")]
    UnknownName { kind: &'static str, name: String },
    /// A malformed line of an input file (`line` from 1; 0 for the file as a whole).
    #[error("{}:{}: {}", .path.display(), .line, .message)]
    Format {
        path: std::path::PathBuf,
        line: usize,
        message: String,
    },
    /// A file that could not be read or written.
    #[error("{}: {}", .path.display(), .source)]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Python's `str.isspace()` for one character (what `str.split()` and `str.strip()` use):
/// Unicode White_Space plus the information separators U+001C..U+001F.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no argument.
pub(crate) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_isspace).filter(|w| !w.is_empty())
}

/// Python's `str.strip()` with no argument.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}
