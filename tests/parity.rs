//! Both backends against Hugging Face transformers on small random checkpoints
//! (tests/fixtures, written by scripts/make_fixtures.py), and against each other.
//! Tolerance: relative error `max|a - b| / max|b|` at most 1e-4 in float32.
// These tests drive libtorch directly: the deployment build (no `torch` feature) has none.
#![cfg(feature = "torch")]
mod common;

use std::collections::BTreeMap;

use common::*;
use mimic_compiler::{compile_model, AttentionImpl, CompileOptions, HeadsSource};
use mimic_models::backend::Site;
use mimic_models::Model;
use mimic_runtime::{CompiledModel, SessionOptions};
use mimic_trainer::{Forward, KvCache, TorchModel};
use tch::{Device, Kind};

const TOL: f32 = 1e-4;

/// Values of `[batch, seq, width]` at the given (row, position) pairs.
fn gather_positions(x: &[f32], seq: usize, width: usize, at: &[(usize, usize)]) -> Vec<f32> {
    at.iter()
        .flat_map(|&(b, s)| {
            x[(b * seq + s) * width..(b * seq + s + 1) * width]
                .iter()
                .copied()
        })
        .collect()
}

/// A fixture's name, model, reference outputs and libtorch model.
fn open_fixture(dir: &std::path::Path) -> (String, Model, BTreeMap<String, Ref>, TorchModel) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let model = Model::open(dir).unwrap();
    let reference = read_reference(&dir.join("reference.safetensors"));
    let tm = TorchModel::new(&model, Device::Cpu).unwrap();
    (name, model, reference, tm)
}

#[test]
fn torch_backend_matches_transformers() {
    let _guard = tch::no_grad_guard();
    for dir in fixture_models() {
        let (name, model, reference, tm) = open_fixture(&dir);
        let ids = tensor_i64(&reference["input_ids"]);
        let mut f = Forward::new(&ids);
        let sites = [Site::AttnOutput, Site::MlpOutput, Site::LayerOutput];
        f.record = &sites;
        let out = tm.forward(&f, None);
        let err = rel_err(&to_vec(&out.logits), &reference["logits"].f32);
        assert!(err <= TOL, "{name}: logits relative error {err:e}");
        eprintln!("{name}: torch logits relative error {err:.2e}");
        for l in 0..model.config.num_layers {
            for (site, key) in [
                (Site::AttnOutput, "attn_out"),
                (Site::MlpOutput, "mlp_out"),
                (Site::LayerOutput, "out"),
            ] {
                let got = to_vec(&out.recorded[&(l, site)]);
                let err = rel_err(&got, &reference[&format!("layers.{l}.{key}")].f32);
                assert!(err <= TOL, "{name}: layer {l} {key} relative error {err:e}");
            }
        }
        // Left-padded batch: compare where the mask is 1.
        let mask = &reference["padded_attention_mask"];
        let ids = tensor_i64(&reference["padded_input_ids"]);
        let mask_t = tensor_i64(mask);
        let pos = tensor_i64(&reference["padded_position_ids"]);
        let mut f = Forward::new(&ids);
        f.attention_mask = Some(&mask_t);
        f.position_ids = Some(&pos);
        let logits = to_vec(&tm.forward(&f, None).logits);
        let (seq, vocab) = (mask.shape[1], model.config.vocab_size);
        let at = valid_positions(&mask.i64, mask.shape[0]);
        let err = rel_err(
            &gather_positions(&logits, seq, vocab, &at),
            &gather_positions(&reference["padded_logits"].f32, seq, vocab, &at),
        );
        assert!(err <= TOL, "{name}: padded logits relative error {err:e}");
        // Default positions from the mask must equal the explicit ones.
        let mut f = Forward::new(&ids);
        f.attention_mask = Some(&mask_t);
        let logits2 = to_vec(&tm.forward(&f, None).logits);
        let err = rel_err(
            &gather_positions(&logits2, seq, vocab, &at),
            &gather_positions(&logits, seq, vocab, &at),
        );
        assert!(
            err <= 1e-6,
            "{name}: positions derived from the mask differ ({err:e})"
        );
        eprintln!("{name}: torch ok");
    }
}

/// The trainer's mixed precision (`Forward::matmul = BFloat16`): matrix products in bfloat16,
/// the rest in float32, within 3e-2 of transformers' float32 logits and MLP outputs, and not
/// equal to them (the products really ran in bfloat16).
#[test]
fn torch_bf16_matmuls_stay_close_to_transformers() {
    let _guard = tch::no_grad_guard();
    for dir in fixture_models() {
        let (name, model, reference, tm) = open_fixture(&dir);
        let ids = tensor_i64(&reference["input_ids"]);
        let mut f = Forward::new(&ids);
        f.matmul = Kind::BFloat16;
        let sites = [Site::MlpOutput];
        f.record = &sites;
        let out = tm.forward(&f, None);
        assert_eq!(
            out.logits.kind(),
            Kind::Float,
            "{name}: logits leave in float32"
        );
        let err = rel_err(&to_vec(&out.logits), &reference["logits"].f32);
        eprintln!("{name}: bf16 logits relative error {err:.2e}");
        assert!(err <= 3e-2, "{name}: bf16 logits relative error {err:e}");
        assert!(err > 1e-5, "{name}: bf16 logits equal float32 ({err:e})");
        for l in 0..model.config.num_layers {
            let got = to_vec(&out.recorded[&(l, Site::MlpOutput)]);
            let err = rel_err(&got, &reference[&format!("layers.{l}.mlp_out")].f32);
            assert!(
                err <= 3e-2,
                "{name}: layer {l} bf16 mlp_out relative error {err:e}"
            );
        }
    }
}

#[test]
fn torch_incremental_decoding_matches_full_sequence() {
    let _guard = tch::no_grad_guard();
    for dir in fixture_models() {
        let model = Model::open(&dir).unwrap();
        let reference = read_reference(&dir.join("reference.safetensors"));
        let tm = TorchModel::new(&model, Device::Cpu).unwrap();
        let ids = tensor_i64(&reference["input_ids"]);
        let full = &reference["logits"];
        let (seq, vocab) = (full.shape[1], full.shape[2]);
        let mut cache = KvCache::default();
        let prefix = ids.narrow(1, 0, 6);
        tm.forward(&Forward::new(&prefix), Some(&mut cache));
        for s in 6..seq as i64 {
            let step = ids.narrow(1, s, 1);
            let got = to_vec(&tm.forward(&Forward::new(&step), Some(&mut cache)).logits);
            let want = gather_positions(&full.f32, seq, vocab, &[(0, s as usize), (1, s as usize)]);
            let err = rel_err(&got, &want);
            assert!(
                err <= TOL,
                "{}: step {s} relative error {err:e}",
                dir.display()
            );
        }
    }
}

/// Runs a compiled (all-logits) folder on a batch with an empty cache.
fn run_compiled(
    dir: &std::path::Path,
    ids: &Ref,
    mask: Option<&Ref>,
    pos: Option<&Ref>,
) -> Vec<f32> {
    let mut m = CompiledModel::load(dir, &SessionOptions::default()).unwrap();
    let (b, s) = (ids.shape[0], ids.shape[1]);
    let ones = vec![1i64; b * s];
    let mask = mask.map_or(ones, |m| m.i64.clone());
    let pos = pos.map_or_else(
        || (0..b).flat_map(|_| 0..s as i64).collect(),
        |p| p.i64.clone(),
    );
    let state = m.empty_state(b).unwrap();
    m.run(b, &ids.i64, &mask, &pos, state).unwrap().logits
}

#[test]
fn onnx_backend_matches_transformers_fused_and_unfused() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::open(&dir).unwrap();
        let reference = read_reference(&dir.join("reference.safetensors"));
        for attention in [
            AttentionImpl::Fused,
            AttentionImpl::Unfused,
            AttentionImpl::Kernel,
        ] {
            let out = tmp.path().join(format!("{name}-{attention:?}"));
            compile_model(
                &model,
                HeadsSource::None,
                &CompileOptions {
                    attention,
                    last_only: false,
                    ..Default::default()
                },
                &out,
            )
            .unwrap();
            let logits = run_compiled(&out, &reference["input_ids"], None, None);
            let err = rel_err(&logits, &reference["logits"].f32);
            assert!(
                err <= TOL,
                "{name} {attention:?}: logits relative error {err:e}"
            );
            eprintln!("{name} {attention:?}: onnx logits relative error {err:.2e}");

            let mask = &reference["padded_attention_mask"];
            let logits = run_compiled(
                &out,
                &reference["padded_input_ids"],
                Some(mask),
                Some(&reference["padded_position_ids"]),
            );
            let (seq, vocab) = (mask.shape[1], model.config.vocab_size);
            let at = valid_positions(&mask.i64, mask.shape[0]);
            let err = rel_err(
                &gather_positions(&logits, seq, vocab, &at),
                &gather_positions(&reference["padded_logits"].f32, seq, vocab, &at),
            );
            assert!(
                err <= TOL,
                "{name} {attention:?}: padded logits relative error {err:e}"
            );
            eprintln!("{name} {attention:?}: onnx ok");
        }
    }
}

#[test]
fn onnx_incremental_decoding_matches_full_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::open(&dir).unwrap();
        let reference = read_reference(&dir.join("reference.safetensors"));
        let full = &reference["logits"];
        let (seq, vocab) = (full.shape[1], full.shape[2]);
        let ids: Vec<u32> = reference["input_ids"].i64[..seq]
            .iter()
            .map(|&x| x as u32)
            .collect();
        for attention in [
            AttentionImpl::Fused,
            AttentionImpl::Unfused,
            AttentionImpl::Kernel,
        ] {
            let out = tmp.path().join(format!("{name}-{attention:?}"));
            compile_model(
                &model,
                HeadsSource::None,
                &CompileOptions {
                    attention,
                    last_only: true,
                    ..Default::default()
                },
                &out,
            )
            .unwrap();
            let mut m = CompiledModel::load(&out, &SessionOptions::default()).unwrap();
            let state = m.empty_state(1).unwrap();
            let mut r = m.step(&ids[..6], state).unwrap();
            for s in 6..seq {
                r = m.step(&ids[s..s + 1], r.state).unwrap();
                let want = gather_positions(&full.f32, seq, vocab, &[(0, s)]);
                let err = rel_err(&r.logits, &want);
                assert!(
                    err <= TOL,
                    "{name} {attention:?}: step {s} relative error {err:e}"
                );
            }
        }
    }
}
