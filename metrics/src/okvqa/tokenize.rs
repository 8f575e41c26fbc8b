//! `nltk.tokenize.word_tokenize` (nltk 3.10.4): Punkt sentence splitting ([`super::punkt`]),
//! then the improved Treebank word tokenizer (`NLTKWordTokenizer`, `convert_parentheses =
//! False`) on each sentence.
//!
//! The Treebank tokenizer is a fixed sequence of regex substitutions that pads tokens with
//! spaces, after which the text is split on whitespace:
//!
//! ```text
//! starting quotes -> punctuation -> brackets -> "--" -> " " + text + " "
//!   -> ending quotes and clitics ('s 'm 'd 'll 're 've n't) -> MacIntyre contractions
//!   (can|not, gon|na, 't|is ...) -> split()
//! ```
//!
//! Regex semantics: nltk compiles these patterns with the `regex` module (Unicode `\w`, `\s`,
//! `\d` as the Rust `regex` crate defines them), except the contraction patterns, which use the
//! standard `re` (there `\b` sees Python's `str.isalnum()` word characters, which differ from
//! Unicode `\w` only on combining marks and a few letter-like numbers). Python's `$` (end, or
//! before a final newline) is written `(?=\n?\z)`.

use std::sync::OnceLock;

use fancy_regex::Regex;

use super::punkt;

/// One substitution of the tokenizer: a pattern and its replacement (`${1}`-style groups).
struct Rule {
    pattern: Regex,
    replacement: &'static str,
}

fn rule(pattern: &str, replacement: &'static str) -> Rule {
    Rule {
        pattern: Regex::new(pattern).expect("tokenizer pattern"),
        replacement,
    }
}

/// Every substitution in the order nltk applies them.
fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        vec![
            // Starting quotes: opening curly quotes and backticks, a leading `"`, and a `"`
            // or `''` after an opening bracket or space become ``; a quote opening a word
            // (not a clitic like 're or 's) is split off.
            rule("([«“‘„]|[`]+)", " ${1} "),
            rule("^\"", "``"),
            rule("(``)", " ${1} "),
            rule("([ (\\[{<])(\"|'{2})", "${1} `` "),
            rule(r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)", "${1} "),
            // Punctuation. The sentence-final period (with closing quotes/brackets and
            // spaces after it, taken possessively) is split off first.
            rule(
                "([^.])(\\.)([\\])}>\"'»”’ ]*+)\\s*(?=\\n?\\z)",
                "${1} ${2} ${3} ",
            ),
            rule(r"([:,])([^\d])", " ${1} ${2}"),
            rule(r"([:,])(?=\n?\z)", " ${1} "),
            rule(r"\.{2,}", " ${0} "),
            rule(r"[;@#$%&]", " ${0} "),
            rule("[\u{2012}-\u{2015}]", " ${0} "),
            rule("([^.])(\\.)([\\])}>\"']*)\\s*(?=\\n?\\z)", "${1} ${2}${3} "),
            rule(r"[?!]", " ${0} "),
            rule(r"([^'])' ", "${1} ' "),
            rule(r"[*]", " ${0} "),
            // Brackets, then double dashes.
            rule(r"[\]\[(){}<>]", " ${0} "),
            rule(r"--", " -- "),
        ]
    })
}

/// The substitutions applied after the text is padded with one space on each side.
fn ending_rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        vec![
            // Ending quotes become '' and clitics split from their word.
            rule("([»”’])", " ${1} "),
            rule("''", " '' "),
            rule("\"", " '' "),
            rule(r"\s+", " "),
            rule("([^' ])('[sS]|'[mM]|'[dD]|') ", "${1} ${2} "),
            rule("([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", "${1} ${2} "),
            // MacIntyre's contractions (CONTRACTIONS2, then CONTRACTIONS3).
            rule(r"(?i)\b(can)(not)\b", " ${1} ${2} "),
            rule(r"(?i)\b(d)('ye)\b", " ${1} ${2} "),
            rule(r"(?i)\b(gim)(me)\b", " ${1} ${2} "),
            rule(r"(?i)\b(gon)(na)\b", " ${1} ${2} "),
            rule(r"(?i)\b(got)(ta)\b", " ${1} ${2} "),
            rule(r"(?i)\b(lem)(me)\b", " ${1} ${2} "),
            rule(r"(?i)\b(more)('n)\b", " ${1} ${2} "),
            rule(r"(?i)\b(wan)(na)(?=\s)", " ${1} ${2} "),
            rule(r"(?i) ('t)(is)\b", " ${1} ${2} "),
            rule(r"(?i) ('t)(was)\b", " ${1} ${2} "),
        ]
    })
}

/// `NLTKWordTokenizer().tokenize(sentence)`: the Treebank tokens of one sentence.
pub fn treebank_tokenize(sentence: &str) -> Vec<String> {
    let mut text = sentence.to_string();
    for r in rules() {
        text = r.pattern.replace_all(&text, r.replacement).into_owned();
    }
    text = format!(" {text} ");
    for r in ending_rules() {
        text = r.pattern.replace_all(&text, r.replacement).into_owned();
    }
    crate::py_split(&text).map(str::to_string).collect()
}

/// `nltk.word_tokenize(text)`: Punkt sentences, each tokenized by [`treebank_tokenize`].
pub fn word_tokenize(text: &str) -> Vec<String> {
    punkt::sentences(text)
        .into_iter()
        .flat_map(treebank_tokenize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        word_tokenize(s)
    }

    #[test]
    fn treebank_cases() {
        assert_eq!(toks("hot dogs."), ["hot", "dogs", "."]);
        assert_eq!(toks("don't know"), ["do", "n't", "know"]);
        assert_eq!(toks("It's"), ["It", "'s"]);
        assert_eq!(toks("cannot"), ["can", "not"]);
        assert_eq!(toks("\"hot dogs\""), ["``", "hot", "dogs", "''"]);
        assert_eq!(toks("(end.) next"), ["(", "end", ".", ")", "next"]);
        assert_eq!(toks("$5.00"), ["$", "5.00"]);
        assert_eq!(toks("em—dash"), ["em", "—", "dash"]);
        assert!(toks("").is_empty());
        assert!(toks("  ").is_empty());
    }

    #[test]
    fn sentences_are_split_first() {
        // One sentence would keep "yes." whole (only the final period is split off).
        assert_eq!(toks("yes. no"), ["yes", ".", "no"]);
        assert_eq!(treebank_tokenize("yes. no"), ["yes.", "no"]);
        // An abbreviation followed by a lower-case word does not end a sentence.
        assert_eq!(toks("dr. smith"), ["dr.", "smith"]);
    }
}
