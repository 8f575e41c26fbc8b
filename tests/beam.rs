//! Beam search against transformers' `generate(num_beams=..)` on the small random text models
//! (tests/fixtures/beam/cases.json, written by scripts/make_beam_fixtures.py: 2, 3 and 5 beams,
//! length penalties -1, 0, 1 and 2, early stopping on and off, end tokens that finish
//! hypotheses early), on both backends: every returned hypothesis token for token, in
//! transformers' order, and its normalised score within 1e-4 (relative). The closest call of
//! any case is two candidates 1.3e-4 apart (`min_margin`), so float32 rounding decides none.
// Drives libtorch directly: the deployment build (no `torch` feature) has none.
#![cfg(feature = "torch")]
mod common;

use std::collections::BTreeMap;

use common::*;
use mimic_compiler::{compile_model, AttentionImpl, CompileOptions, HeadsSource};
use mimic_models::beam::{beam_search, BeamConfig, EarlyStopping, Hypothesis};
use mimic_models::Model;
use mimic_runtime::{CompiledModel, OnnxLm, SessionOptions};
use mimic_trainer::{TorchLm, TorchModel};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    model: String,
    prompt: Vec<u32>,
    num_beams: usize,
    length_penalty: f64,
    early_stopping: bool,
    max_new_tokens: usize,
    eos_token_id: Vec<u32>,
    sequences: Vec<Vec<u32>>,
    scores: Vec<f64>,
}

impl Case {
    fn config(&self) -> BeamConfig {
        BeamConfig {
            num_beams: self.num_beams,
            length_penalty: self.length_penalty,
            early_stopping: if self.early_stopping {
                EarlyStopping::Done
            } else {
                EarlyStopping::Heuristic
            },
            max_new_tokens: self.max_new_tokens,
        }
    }

    /// transformers' sequences without the padding after an end token.
    fn expected(&self) -> Vec<Vec<u32>> {
        self.sequences
            .iter()
            .map(
                |s| match s.iter().position(|t| self.eos_token_id.contains(t)) {
                    Some(i) => s[..=i].to_vec(),
                    None => s.clone(),
                },
            )
            .collect()
    }

    fn check(&self, backend: &str, got: &[Hypothesis]) -> Result<(), String> {
        let got_tokens: Vec<Vec<u32>> = got.iter().map(|h| h.tokens.clone()).collect();
        let want = self.expected();
        if got_tokens != want {
            return Err(format!(
                "{backend} {} {:?} beams {} lp {} early {}: got {got_tokens:?}, want {want:?}",
                self.model, self.prompt, self.num_beams, self.length_penalty, self.early_stopping
            ));
        }
        for (h, &s) in got.iter().zip(&self.scores) {
            let err = (h.score - s).abs() / s.abs().max(1.0);
            if err > 1e-4 {
                return Err(format!(
                    "{backend} {}: score {} vs {s}",
                    self.model, h.score
                ));
            }
        }
        Ok(())
    }
}

#[test]
fn beam_search_matches_transformers() {
    let _guard = tch::no_grad_guard();
    let text = std::fs::read_to_string(fixtures_dir().join("beam/cases.json")).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let tmp = tempfile::tempdir().unwrap();
    let mut models: BTreeMap<String, (Model, TorchModel, CompiledModel)> = BTreeMap::new();
    let (mut torch_ok, mut onnx_ok) = (0, 0);
    let mut failures = Vec::new();
    for case in &cases {
        if !models.contains_key(&case.model) {
            let model = Model::open(&fixtures_dir().join(&case.model)).unwrap();
            let tm = TorchModel::new(&model, tch::Device::Cpu).unwrap();
            let dir = tmp.path().join(&case.model);
            let opts = CompileOptions {
                attention: AttentionImpl::Fused,
                ..Default::default()
            };
            compile_model(&model, HeadsSource::None, &opts, &dir).unwrap();
            let cm = CompiledModel::load(&dir, &SessionOptions::default()).unwrap();
            models.insert(case.model.clone(), (model, tm, cm));
        }
        let (_, tm, cm) = models.get_mut(&case.model).unwrap();
        let cfg = case.config();
        let got = beam_search(
            &mut TorchLm::new(tm),
            &case.prompt,
            &cfg,
            &case.eos_token_id,
        )
        .unwrap();
        match case.check("torch", &got) {
            Ok(()) => torch_ok += 1,
            Err(e) => failures.push(e),
        }
        let got =
            beam_search(&mut OnnxLm::new(cm), &case.prompt, &cfg, &case.eos_token_id).unwrap();
        match case.check("onnx", &got) {
            Ok(()) => onnx_ok += 1,
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "beam search: {torch_ok}/{n} cases on libtorch, {onnx_ok}/{n} on ONNX Runtime",
        n = cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
