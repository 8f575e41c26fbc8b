//! The OK-VQA stemmer against the published MimIC code on nltk 3.10.4 and inflection 0.5.1
//! (fixtures/okvqa_stem.json, scripts/reference_okvqa_stem.py): tokens, tags and stemmed
//! output must all be identical, case by case.

use mimic_metrics::okvqa::{tagger::PerceptronTagger, tokenize::word_tokenize, OkVqaStemmer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    nltk: String,
    inflection: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    input: String,
    tokens: Vec<String>,
    tags: Vec<String>,
    output: String,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("fixtures/okvqa_stem.json")).expect("okvqa_stem.json")
}

#[test]
fn every_case_matches_exactly() {
    let f = fixture();
    assert_eq!(f.nltk, "3.10.4");
    assert_eq!(f.inflection, "0.5.1");
    assert!(f.cases.len() >= 3000, "{} cases", f.cases.len());
    let stemmer = OkVqaStemmer::new();
    let tagger = PerceptronTagger::pretrained();
    let (mut bad_tokens, mut bad_tags, mut bad_output) = (0, 0, 0);
    for c in &f.cases {
        let tokens = word_tokenize(&c.input);
        if tokens != c.tokens {
            bad_tokens += 1;
            eprintln!("tokens {:?}: got {tokens:?}, want {:?}", c.input, c.tokens);
            continue;
        }
        let tags = tagger.tag(&tokens);
        if tags != c.tags {
            bad_tags += 1;
            eprintln!("tags {:?}: got {tags:?}, want {:?}", c.input, c.tags);
        }
        let out = stemmer.stem(&c.input);
        if out != c.output {
            bad_output += 1;
            eprintln!("stem {:?}: got {out:?}, want {:?}", c.input, c.output);
        }
    }
    eprintln!(
        "{} cases: {bad_tokens} token, {bad_tags} tag, {bad_output} output mismatches",
        f.cases.len()
    );
    assert_eq!((bad_tokens, bad_tags, bad_output), (0, 0, 0));
}
