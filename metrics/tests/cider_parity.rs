//! CIDEr-D against pycocoevalcap 1.2 (fixtures/cider.json, scripts/make_metric_fixtures.py).

use mimic_metrics::{cider_d, ptb_tokenize};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    images: Vec<Image>,
    corpus: f64,
    subsets: Vec<Subset>,
}

#[derive(Deserialize)]
struct Image {
    id: String,
    refs: Vec<String>,
    hyp: String,
    refs_tokenized: Vec<String>,
    hyp_tokenized: String,
    score: f64,
}

#[derive(Deserialize)]
struct Subset {
    ids: Vec<String>,
    corpus: f64,
    scores: Vec<f64>,
}

const TOL: f64 = 1e-9;

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("fixtures/cider.json")).expect("cider.json")
}

#[test]
fn corpus_and_per_image_match_pycocoevalcap() {
    let f = fixture();
    let hyps: Vec<&str> = f.images.iter().map(|i| i.hyp_tokenized.as_str()).collect();
    let refs: Vec<Vec<String>> = f.images.iter().map(|i| i.refs_tokenized.clone()).collect();
    let s = cider_d(&hyps, &refs).unwrap();
    for (img, got) in f.images.iter().zip(&s.per_image) {
        assert!(
            (got - img.score).abs() < TOL,
            "{}: {got} vs {}",
            img.id,
            img.score
        );
    }
    assert!(
        (s.corpus - f.corpus).abs() < TOL,
        "{} vs {}",
        s.corpus,
        f.corpus
    );
}

#[test]
fn subsets_use_their_own_document_frequencies() {
    let f = fixture();
    for sub in &f.subsets {
        let imgs: Vec<&Image> = sub
            .ids
            .iter()
            .map(|id| f.images.iter().find(|i| &i.id == id).unwrap())
            .collect();
        let hyps: Vec<&str> = imgs.iter().map(|i| i.hyp_tokenized.as_str()).collect();
        let refs: Vec<Vec<String>> = imgs.iter().map(|i| i.refs_tokenized.clone()).collect();
        let s = cider_d(&hyps, &refs).unwrap();
        for (got, want) in s.per_image.iter().zip(&sub.scores) {
            assert!((got - want).abs() < TOL, "{:?}: {got} vs {want}", sub.ids);
        }
        assert!((s.corpus - sub.corpus).abs() < TOL);
    }
}

#[test]
fn end_to_end_from_raw_captions() {
    // pycocoevalcap tokenizes all references in one jar run (image by image) and all
    // hypotheses in another; the port does the same and scores its own tokens.
    let f = fixture();
    let flat: Vec<&str> = f
        .images
        .iter()
        .flat_map(|i| i.refs.iter().map(String::as_str))
        .collect();
    let mut toks = ptb_tokenize(&flat).into_iter();
    let refs: Vec<Vec<String>> = f
        .images
        .iter()
        .map(|i| toks.by_ref().take(i.refs.len()).collect())
        .collect();
    let hyps = ptb_tokenize(&f.images.iter().map(|i| i.hyp.as_str()).collect::<Vec<_>>());
    for (img, (r, h)) in f.images.iter().zip(refs.iter().zip(&hyps)) {
        assert_eq!(r, &img.refs_tokenized, "{}", img.id);
        assert_eq!(h, &img.hyp_tokenized, "{}", img.id);
    }
    let s = cider_d(&hyps, &refs).unwrap();
    assert!((s.corpus - f.corpus).abs() < TOL);
}
