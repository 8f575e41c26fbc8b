//! Reads captions from stdin, one a line, and prints pycocoevalcap's PTB tokenization of each,
//! all lines tokenized as one input the way pycocoevalcap does (`--raw`: the tokenizer's
//! tokens before the punctuation filter).

use std::io::{BufRead, Write};

fn main() {
    let raw = std::env::args().any(|a| a == "--raw");
    let lines: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map(|l| l.expect("stdin"))
        .collect();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    if raw {
        for tokens in mimic_metrics::ptb::ptb_tokens_in_order(&lines) {
            writeln!(out, "{}", tokens.join(" ")).expect("stdout");
        }
    } else {
        for t in mimic_metrics::ptb_tokenize(&lines) {
            writeln!(out, "{t}").expect("stdout");
        }
    }
}
