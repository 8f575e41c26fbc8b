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
//! # Pipeline
//!
//! ```text
//! refs  = ptb_tokenize(all references, image by image)   // one jar run in pycocoevalcap
//! hyps  = ptb_tokenize(all hypotheses, image by image)   // a second run
//! cider = cider_d(&hyps, &refs grouped per image)
//! vqa   = vqa_accuracy(&questions, VqaVariant::Official) // raw answers, no PTB step
//! ```

pub mod cider;
pub mod ptb;
pub mod vqa;

pub use cider::{cider_d, CiderScores};
pub use ptb::{ptb_tokenize, ptb_tokenize_line};
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
