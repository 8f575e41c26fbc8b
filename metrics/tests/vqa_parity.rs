//! VQA accuracy against the Python re-implementation of the official vqaEval.py logic and
//! MimIC's variant (fixtures/vqa.json, scripts/make_metric_fixtures.py).

use std::collections::BTreeMap;

use mimic_metrics::vqa::{question_accuracy, vqa_accuracy, VqaQuestion, VqaVariant};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    questions: Vec<VqaQuestion>,
    official: Report,
    mimic: Report,
    mimic_per_question: Vec<f64>,
}

#[derive(Deserialize)]
struct Report {
    overall: f64,
    #[serde(rename = "perQuestionType")]
    per_question_type: BTreeMap<String, f64>,
    #[serde(rename = "perAnswerType")]
    per_answer_type: BTreeMap<String, f64>,
    #[serde(rename = "perQuestion", default)]
    per_question: Vec<f64>,
}

fn fixture() -> Fixture {
    let text = include_str!("fixtures/vqa.json");
    serde_json::from_str(text).expect("vqa.json")
}

#[test]
fn official_matches_exactly() {
    let f = fixture();
    let r = vqa_accuracy(&f.questions, VqaVariant::Official).unwrap();
    for (i, (got, want)) in r
        .per_question
        .iter()
        .zip(&f.official.per_question)
        .enumerate()
    {
        assert_eq!(got, want, "question {i}: {:?}", f.questions[i]);
    }
    assert_eq!(r.per_question.len(), f.official.per_question.len());
    assert_eq!(r.overall, f.official.overall);
    assert_eq!(r.per_question_type, f.official.per_question_type);
    assert_eq!(r.per_answer_type, f.official.per_answer_type);
}

#[test]
fn mimic_variant_matches_exactly() {
    let f = fixture();
    let r = vqa_accuracy(&f.questions, VqaVariant::Mimic).unwrap();
    for (i, q) in f.questions.iter().enumerate() {
        let got = 100.0 * question_accuracy(&q.prediction, &q.answers, VqaVariant::Mimic);
        assert_eq!(got, f.mimic_per_question[i], "question {i}: {q:?}");
        assert_eq!(r.per_question[i], got);
    }
    assert_eq!(r.overall, f.mimic.overall);
    assert_eq!(r.per_question_type, f.mimic.per_question_type);
    assert_eq!(r.per_answer_type, f.mimic.per_answer_type);
}
