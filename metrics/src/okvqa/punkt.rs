//! Punkt sentence splitting as `nltk.sent_tokenize(text)` does it (nltk 3.10.4
//! `PunktSentenceTokenizer.tokenize` with the English `punkt_tab` parameters, Kiss & Strunk
//! 2006), the first step of `word_tokenize`.
//!
//! A candidate boundary is every `.`, `?` or `!` followed by either a non-word punctuation
//! mark or whitespace and a further token. For each candidate, the word before it, the mark
//! and what follows form a small context; the context is split into Punkt word tokens and
//! annotated in two passes:
//!
//! ```text
//! first pass   "." "?" "!" -> break;  ".." ... -> ellipsis;
//!              "w." -> abbreviation if lower(w) (or its last "-" part) is a known
//!              abbreviation type, else break
//! second pass  (w, next) a known collocation             -> abbreviation, no break
//!              abbreviation/ellipsis, not an initial:
//!                  orthographic evidence that next starts a sentence, or next is
//!                  capitalised and a frequent sentence starter -> break
//!              initial ("J.") or number ("##number##."):
//!                  orthographic evidence against a sentence start -> abbreviation, no break
//!                  initial, evidence unknown, next capitalised and never seen lower-case
//!                                                        -> abbreviation, no break
//! ```
//!
//! The context holds a sentence break when a token after a break-marked token exists. A
//! sentence ends after the mark; the next begins at the following token (or at the
//! following punctuation). Closing quotes and brackets right after a break are then moved
//! back onto the sentence they close ("realignment").
//!
//! Parameters: data/okvqa-stemmer/punkt-english (abbreviation types, collocations, frequent
//! sentence starters, orthographic context flags per type), embedded at build time.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use fancy_regex::Regex;

/// Orthographic context flags: a type seen upper-case at the beginning, middle or an
/// unknown position of a sentence, and the same for lower case.
const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC | ORTHO_MID_UC | ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC | ORTHO_MID_LC | ORTHO_UNK_LC;

/// The learned English parameters.
struct PunktParameters {
    abbrev_types: HashSet<&'static str>,
    collocations: HashSet<(&'static str, &'static str)>,
    sent_starters: HashSet<&'static str>,
    ortho_context: HashMap<&'static str, u32>,
}

fn params() -> &'static PunktParameters {
    static PARAMS: OnceLock<PunktParameters> = OnceLock::new();
    PARAMS.get_or_init(|| PunktParameters {
        abbrev_types: str::lines(include_str!(
            "../../../data/okvqa-stemmer/punkt-english/abbrev_types.txt"
        ))
        .collect(),
        collocations: str::lines(include_str!(
            "../../../data/okvqa-stemmer/punkt-english/collocations.tab"
        ))
        .map(|l| l.split_once('\t').expect("collocation pair"))
        .collect(),
        sent_starters: str::lines(include_str!(
            "../../../data/okvqa-stemmer/punkt-english/sent_starters.txt"
        ))
        .collect(),
        ortho_context: str::lines(include_str!(
            "../../../data/okvqa-stemmer/punkt-english/ortho_context.tab"
        ))
        .map(|l| {
            let (typ, flags) = l.rsplit_once('\t').expect("ortho context row");
            (typ, flags.parse().expect("ortho flags"))
        })
        .collect(),
    })
}

/// Punctuation that cannot be part of a word (`)";}]*:@'({[`, curly quotes, guillemets, `?`,
/// `!`): after a sentence-end mark it makes the mark a candidate boundary.
fn is_non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"'
            | ';'
            | '}'
            | ']'
            | '*'
            | ':'
            | '@'
            | '\''
            | '('
            | '{'
            | '['
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
            | '?'
            | '!'
    )
}

/// Punkt's word tokens of one line: multi-character punctuation (`--`, `...`, `. . .`), words
/// up to whitespace, non-word punctuation or a word-final comma, and any other single
/// non-space character.
fn punkt_words(line: &str) -> Vec<&str> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        let non_word = "[)\";}\\]*:@'({\\[\u{2018}\u{2019}\u{201c}\u{201d}\u{ab}\u{bb}?!]";
        let multi = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)";
        let word_start = "[^(\"`{\\[:;&#*@)}\\]\\-,]";
        let pattern = format!(
            "{multi}|(?={word_start})\\S+?(?=\\s|\\z|{non_word}|{multi}|,(?=\\z|\\s|{non_word}|{multi}))|\\S"
        );
        Regex::new(&pattern).expect("punkt word pattern")
    });
    re.find_iter(line)
        .map(|m| m.expect("punkt word match").as_str())
        .collect()
}

/// One annotated Punkt token.
struct Token<'a> {
    tok: &'a str,
    /// Lower-cased, numbers (`-?[.,]?\d[\d,.-]*\.?`) read `##number##`.
    typ: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

impl<'a> Token<'a> {
    fn new(tok: &'a str) -> Self {
        static NUMERIC: OnceLock<regex::Regex> = OnceLock::new();
        let numeric =
            NUMERIC.get_or_init(|| regex::Regex::new(r"^-?[.,]?\d[\d,.-]*\.?$").expect("numeric"));
        let lower = tok.to_lowercase();
        let typ = if numeric.is_match(&lower) {
            "##number##".to_string()
        } else {
            lower
        };
        Token {
            tok,
            typ,
            period_final: tok.ends_with('.'),
            sentbreak: false,
            abbr: false,
            ellipsis: false,
        }
    }

    fn type_no_period(&self) -> &str {
        if self.typ.chars().count() > 1 && self.typ.ends_with('.') {
            &self.typ[..self.typ.len() - 1]
        } else {
            &self.typ
        }
    }

    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }

    fn first_upper(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_uppercase)
    }

    fn first_lower(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_lowercase)
    }

    /// Two or more periods and nothing else.
    fn is_ellipsis(&self) -> bool {
        self.tok.len() >= 2 && self.tok.bytes().all(|b| b == b'.')
    }

    /// A letter (a word character that is not a digit) and a period: `J.`.
    fn is_initial(&self) -> bool {
        static INITIAL: OnceLock<regex::Regex> = OnceLock::new();
        INITIAL
            .get_or_init(|| regex::Regex::new(r"^[^\W\d]\.$").expect("initial"))
            .is_match(self.tok)
    }
}

/// First pass: decisions from the token's own type.
fn first_pass(t: &mut Token, p: &PunktParameters) {
    let tok = t.tok;
    if matches!(tok, "." | "?" | "!") {
        t.sentbreak = true;
    } else if t.is_ellipsis() {
        t.ellipsis = true;
    } else if t.period_final && !tok.ends_with("..") {
        let stem = tok[..tok.len() - 1].to_lowercase();
        let last_part = stem.rsplit('-').next().unwrap_or("");
        if p.abbrev_types.contains(stem.as_str()) || p.abbrev_types.contains(last_part) {
            t.abbr = true;
        } else {
            t.sentbreak = true;
        }
    }
}

/// Orthographic evidence that `t` starts a sentence: `Some(true)`, `Some(false)`, or `None`
/// (unknown).
fn ortho_heuristic(t: &Token, p: &PunktParameters) -> Option<bool> {
    if matches!(t.tok, ";" | ":" | "," | "." | "!" | "?") {
        return Some(false);
    }
    let ctx = p
        .ortho_context
        .get(t.type_no_sentperiod())
        .copied()
        .unwrap_or(0);
    if t.first_upper() && ctx & ORTHO_LC != 0 && ctx & ORTHO_MID_UC == 0 {
        return Some(true);
    }
    if t.first_lower() && (ctx & ORTHO_UC != 0 || ctx & ORTHO_BEG_LC == 0) {
        return Some(false);
    }
    None
}

/// Second pass: revise the decision on `t1`, a period-final token, from the token after it.
fn second_pass(t1: &mut Token, t2: &Token, p: &PunktParameters) {
    if !t1.period_final {
        return;
    }
    let typ = t1.type_no_period().to_string();
    let next_typ = t2.type_no_sentperiod();
    let is_initial = t1.is_initial();
    if p.collocations.contains(&(typ.as_str(), next_typ)) {
        t1.sentbreak = false;
        t1.abbr = true;
        return;
    }
    if (t1.abbr || t1.ellipsis) && !is_initial {
        if ortho_heuristic(t2, p) == Some(true) {
            t1.sentbreak = true;
            return;
        }
        if t2.first_upper() && p.sent_starters.contains(next_typ) {
            t1.sentbreak = true;
            return;
        }
    }
    if is_initial || typ == "##number##" {
        let starts = ortho_heuristic(t2, p);
        if starts == Some(false) {
            t1.sentbreak = false;
            t1.abbr = true;
            return;
        }
        if starts.is_none()
            && is_initial
            && t2.first_upper()
            && p.ortho_context.get(next_typ).copied().unwrap_or(0) & ORTHO_LC == 0
        {
            t1.sentbreak = false;
            t1.abbr = true;
        }
    }
}

/// Whether a candidate's context holds a sentence break followed by another token.
fn contains_sentbreak(context: &str) -> bool {
    let p = params();
    let mut tokens: Vec<Token> = context
        .split('\n')
        .filter(|line| !crate::py_strip(line).is_empty())
        .flat_map(punkt_words)
        .map(Token::new)
        .collect();
    for t in tokens.iter_mut() {
        first_pass(t, p);
    }
    // nltk's passes are chained generators: token i is revised seeing token i+1 after its
    // first pass only, which this forward loop reproduces.
    for i in 0..tokens.len() {
        if i + 1 < tokens.len() {
            let (head, tail) = tokens.split_at_mut(i + 1);
            second_pass(&mut head[i], &tail[0], p);
        }
        if tokens[i].sentbreak && i + 1 < tokens.len() {
            return true;
        }
    }
    false
}

/// A candidate boundary: the mark at `at`, the end of what follows it (`after_end`), and
/// where the next token starts when whitespace follows the mark.
struct Candidate {
    at: usize,
    after_end: usize,
    next_tok: Option<usize>,
}

fn candidates(text: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (at, c) in text.char_indices() {
        if !matches!(c, '.' | '?' | '!') {
            continue;
        }
        let rest = &text[at + 1..];
        let Some(n) = rest.chars().next() else {
            continue;
        };
        if is_non_word(n) {
            out.push(Candidate {
                at,
                after_end: at + 1 + n.len_utf8(),
                next_tok: None,
            });
        } else if n.is_whitespace() {
            let ws = rest.len() - rest.trim_start_matches(char::is_whitespace).len();
            let after_ws = &rest[ws..];
            let word = after_ws.len()
                - after_ws
                    .trim_start_matches(|c: char| !c.is_whitespace())
                    .len();
            if word > 0 {
                out.push(Candidate {
                    at,
                    after_end: at + 1 + ws + word,
                    next_tok: Some(at + 1 + ws),
                });
            }
        }
    }
    out
}

/// Python's `string.whitespace`.
fn is_ascii_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Candidate boundaries with their contexts (the word before the mark, the mark and what
/// follows); a candidate whose word overlaps the previous candidate's is dropped, as nltk's
/// `_match_potential_end_contexts` does.
fn end_contexts(text: &str) -> Vec<(Candidate, String)> {
    let mut out = Vec::new();
    let mut prev_slice = (0usize, 0usize);
    let mut prev: Option<Candidate> = None;
    let context = |slice: (usize, usize), c: &Candidate| -> String {
        let word = if slice.0 < slice.1 {
            &text[slice.0..slice.1]
        } else {
            ""
        };
        format!("{word}{}", &text[c.at..c.after_end])
    };
    for cand in candidates(text) {
        let before = &text[prev_slice.1..cand.at];
        let last_space = before
            .char_indices()
            .rev()
            .find(|&(_, c)| is_ascii_space(c))
            .map_or(0, |(i, _)| i);
        // nltk treats a whitespace at index 0 like no whitespace at all.
        let start = if last_space != 0 {
            last_space + prev_slice.1 + 1
        } else {
            prev_slice.0
        };
        let word_slice = (start, cand.at);
        if let Some(p) = prev.take() {
            if prev_slice.1 <= word_slice.0 {
                let ctx = context(prev_slice, &p);
                out.push((p, ctx));
            }
        }
        prev = Some(cand);
        prev_slice = word_slice;
    }
    if let Some(p) = prev {
        let ctx = context(prev_slice, &p);
        out.push((p, ctx));
    }
    out
}

/// Length of the realignment match at the start of `s`: closing quotes/brackets (as few as
/// possible) followed by whitespace, by `--`, or by the end of a line. Returns the match end
/// and the end of its closing-punctuation part.
fn realignment(s: &str) -> Option<(usize, usize)> {
    let closing = |c: char| {
        matches!(
            c,
            '"' | '\''
                | ')'
                | ']'
                | '}'
                | '\u{2018}'
                | '\u{2019}'
                | '\u{201c}'
                | '\u{201d}'
                | '\u{ab}'
                | '\u{bb}'
        )
    };
    let mut end = 0;
    for c in s.chars() {
        if !closing(c) {
            return None;
        }
        end += c.len_utf8();
        let rest = &s[end..];
        match rest.chars().next() {
            Some(n) if n.is_whitespace() => {
                let ws = rest.len() - rest.trim_start_matches(char::is_whitespace).len();
                return Some((end + ws, end));
            }
            None => return Some((end, end)),
            _ if rest.starts_with("--") => return Some((end, end)),
            _ => {}
        }
    }
    None
}

/// `nltk.sent_tokenize(text)`: the sentences, as slices of `text`.
pub fn sentences(text: &str) -> Vec<&str> {
    // Sentence spans before realignment (byte offsets; start may pass end: an empty one).
    let mut spans = Vec::new();
    let mut last_break = 0;
    for (cand, ctx) in end_contexts(text) {
        if contains_sentbreak(&ctx) {
            spans.push((last_break, cand.at + 1));
            last_break = cand.next_tok.unwrap_or(cand.at + 1);
        }
    }
    spans.push((last_break, text.trim_end_matches(crate::py_isspace).len()));

    let slice = |(s, e): (usize, usize)| if s < e { &text[s..e] } else { "" };
    let mut out = Vec::new();
    let mut realign = 0;
    for i in 0..spans.len() {
        let s1 = (spans[i].0 + realign, spans[i].1);
        let Some(&s2) = spans.get(i + 1) else {
            if !slice(s1).is_empty() {
                out.push(slice(s1));
            }
            continue;
        };
        // The match's rstrip() leaves exactly its closing-punctuation part.
        if let Some((end, closing_end)) = realignment(slice(s2)) {
            out.push(slice((s1.0, s2.0 + closing_end)));
            realign = end;
        } else {
            realign = 0;
            if !slice(s1).is_empty() {
                out.push(slice(s1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_keeps() {
        assert_eq!(sentences("yes. no"), ["yes.", "no"]);
        assert_eq!(sentences("Dr. Smith"), ["Dr. Smith"]);
        assert_eq!(sentences("What? No!"), ["What?", "No!"]);
        assert_eq!(sentences("(end.) next"), ["(end.)", "next"]);
        assert!(sentences("").is_empty());
        assert!(sentences("   ").is_empty());
    }
}
