//! Compiled heads against the trainer's shifted forward: every method (MimIC additive and
//! convex, LIVE, LoRA), fused and unfused attention, folded or as graph inputs, on the small
//! fixture models (grouped-query attention, biases, a sliding window).
//! Tolerance: relative error `max|a - b| / max|b|` at most 1e-4 in float32.
mod common;

use common::*;
use mimic_compiler::{compile_model, AttentionImpl, CompileOptions, HeadsSource};
use mimic_models::{Heads, Method, Model};
use mimic_runtime::{CompiledModel, SessionOptions};
use mimic_trainer::shift::{LoraConfig, Shift};
use mimic_trainer::{Forward, TorchModel};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const TOL: f32 = 1e-4;
const METHODS: [Method; 4] = [
    Method::Mimic,
    Method::MimicConvex,
    Method::Live,
    Method::Lora,
];

/// Heads of `method` with random values large enough to move the model (the published
/// initialisation is nearly the identity), saved for `model`.
fn random_heads(model: &Model, method: Method, seed: u64, dir: &Path) -> (Shift, PathBuf) {
    let lora = LoraConfig {
        targets: vec![
            "self_attn.q_proj".into(),
            "self_attn.v_proj".into(),
            "mlp.down_proj".into(),
        ],
        ..LoraConfig::default()
    };
    let shift = Shift::init(method, &model.config, &lora, Device::Cpu, seed);
    tch::no_grad(|| {
        for (name, t, _) in &shift.params {
            let scale = match name.as_str() {
                "mimic.w" => 0.5,
                "mimic.b" => 1.0,
                "live.a" => 1.0,
                _ => 0.3,
            };
            let mut t = t.shallow_clone();
            t.copy_(&(Tensor::randn_like(&t) * scale));
        }
    });
    let path = dir.join(format!("{}-{seed}.safetensors", method.name()));
    shift
        .save(
            &path,
            &model.fingerprint(),
            &model.config,
            &Default::default(),
        )
        .unwrap();
    (shift, path)
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
}

/// Values of `[batch, seq, width]` at the given (row, position) pairs.
fn gather(x: &[f32], seq: usize, width: usize, at: &[(usize, usize)]) -> Vec<f32> {
    at.iter()
        .flat_map(|&(b, s)| x[(b * seq + s) * width..(b * seq + s + 1) * width].to_vec())
        .collect()
}

/// The trainer's logits `[b, s, vocab]` with `shift` applied (or none).
fn trainer_logits(tm: &TorchModel, shift: Option<&Shift>, ids: &Ref, mask: &Ref) -> Vec<f32> {
    let _guard = tch::no_grad_guard();
    let shape: Vec<i64> = ids.shape.iter().map(|&d| d as i64).collect();
    let ids_t = Tensor::from_slice(&ids.i64).view(shape.as_slice());
    let mask_t = Tensor::from_slice(&mask.i64).view(shape.as_slice());
    let mut f = Forward::new(&ids_t);
    f.attention_mask = Some(&mask_t);
    if let Some(s) = shift {
        f.shifts = s.shifts();
    }
    to_vec(&tm.forward(&f, None).logits)
}

/// Runs a compiled all-logits folder on a left-padded batch, positions counted from the mask.
fn compiled_logits(m: &mut CompiledModel, ids: &Ref, mask: &Ref) -> Vec<f32> {
    let (b, s) = (ids.shape[0], ids.shape[1]);
    let mut pos = Vec::with_capacity(b * s);
    for row in mask.i64.chunks(s) {
        let mut n = 0i64;
        for &x in row {
            pos.push((n - 1 + x).max(0));
            n += x;
        }
    }
    let state = m.empty_state(b).unwrap();
    m.run(b, &ids.i64, &mask.i64, &pos, state).unwrap().logits
}

fn compile(model: &Model, heads: HeadsSource, attention: AttentionImpl, out: &Path) {
    let opts = CompileOptions {
        attention,
        last_only: false,
        ..Default::default()
    };
    compile_model(model, heads, &opts, out).unwrap();
}

#[test]
fn folded_heads_match_the_trainer_for_every_method() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::open(&dir).unwrap();
        let reference = read_reference(&dir.join("reference.safetensors"));
        let (ids, mask) = (
            &reference["padded_input_ids"],
            &reference["padded_attention_mask"],
        );
        let (seq, vocab) = (ids.shape[1], model.config.vocab_size);
        let at = valid_positions(&mask.i64, ids.shape[0]);
        let tm = TorchModel::new(&model, Device::Cpu).unwrap();
        let base = gather(&trainer_logits(&tm, None, ids, mask), seq, vocab, &at);
        for method in METHODS {
            let (shift, path) = random_heads(&model, method, 7, tmp.path());
            let want = gather(
                &trainer_logits(&tm, Some(&shift), ids, mask),
                seq,
                vocab,
                &at,
            );
            // The heads must matter, or agreement would prove nothing.
            let moved = rel_err(&base, &want);
            assert!(
                moved > 1e-2,
                "{name} {method:?}: heads barely change logits ({moved:e})"
            );
            let heads = Heads::read(&path, &model.fingerprint(), &model.config).unwrap();
            for attention in [AttentionImpl::Fused, AttentionImpl::Unfused] {
                let out = tmp
                    .path()
                    .join(format!("{name}-{}-{attention:?}", method.name()));
                compile(&model, HeadsSource::Folded(&heads), attention, &out);
                let mut m = CompiledModel::load(&out, &SessionOptions::default()).unwrap();
                let got = gather(&compiled_logits(&mut m, ids, mask), seq, vocab, &at);
                let err = rel_err(&got, &want);
                eprintln!(
                    "{name} {:<12} {attention:?}: relative error {err:.2e} (heads move logits {moved:.2e})",
                    method.name()
                );
                assert!(err <= TOL, "{name} {method:?} {attention:?}: {err:e}");
            }
        }
    }
}

#[test]
fn folded_heads_decode_incrementally_like_the_full_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = &fixture_models()[0];
    let model = Model::open(dir).unwrap();
    let reference = read_reference(&dir.join("reference.safetensors"));
    let ids = &reference["input_ids"];
    let seq = ids.shape[1];
    let row: Vec<u32> = ids.i64[..seq].iter().map(|&x| x as u32).collect();
    let one_row = Ref {
        shape: vec![1, seq],
        i64: ids.i64[..seq].to_vec(),
        f32: vec![],
    };
    let ones = Ref {
        shape: vec![1, seq],
        i64: vec![1; seq],
        f32: vec![],
    };
    let vocab = model.config.vocab_size;
    let tm = TorchModel::new(&model, Device::Cpu).unwrap();
    for method in [Method::Mimic, Method::MimicConvex] {
        let (shift, path) = random_heads(&model, method, 11, tmp.path());
        let full = trainer_logits(&tm, Some(&shift), &one_row, &ones);
        let heads = Heads::read(&path, &model.fingerprint(), &model.config).unwrap();
        for attention in [AttentionImpl::Fused, AttentionImpl::Unfused] {
            let out = tmp.path().join(format!("{}-{attention:?}", method.name()));
            let opts = CompileOptions {
                attention,
                last_only: true,
                ..Default::default()
            };
            compile_model(&model, HeadsSource::Folded(&heads), &opts, &out).unwrap();
            let mut m = CompiledModel::load(&out, &SessionOptions::default()).unwrap();
            let state = m.empty_state(1).unwrap();
            let mut r = m.step(&row[..4], state).unwrap();
            for s in 4..seq {
                r = m.step(&row[s..s + 1], r.state).unwrap();
                let err = rel_err(&r.logits, &gather(&full, seq, vocab, &[(0, s)]));
                assert!(err <= TOL, "{method:?} {attention:?} step {s}: {err:e}");
            }
        }
    }
}

#[test]
fn heads_as_inputs_serve_a_different_task_per_row() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models().into_iter().take(2) {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::open(&dir).unwrap();
        let reference = read_reference(&dir.join("reference.safetensors"));
        let (ids, mask) = (
            &reference["padded_input_ids"],
            &reference["padded_attention_mask"],
        );
        let (batch, seq, vocab) = (ids.shape[0], ids.shape[1], model.config.vocab_size);
        assert!(batch >= 2, "the fixture batch has two rows");
        let tm = TorchModel::new(&model, Device::Cpu).unwrap();
        let base = trainer_logits(&tm, None, ids, mask);
        for method in [Method::Mimic, Method::MimicConvex, Method::Live] {
            let (shift_a, path_a) = random_heads(&model, method, 21, tmp.path());
            let with_a = trainer_logits(&tm, Some(&shift_a), ids, mask);
            let heads_a = Heads::read(&path_a, &model.fingerprint(), &model.config).unwrap();
            for attention in [AttentionImpl::Fused, AttentionImpl::Unfused] {
                let out = tmp
                    .path()
                    .join(format!("{name}-inputs-{}-{attention:?}", method.name()));
                compile(&model, HeadsSource::Inputs(method), attention, &out);
                let mut m = CompiledModel::load(&out, &SessionOptions::default()).unwrap();
                // Row 0 with heads A, row 1 without heads.
                let mut rows: Vec<Option<&Heads>> = vec![None; batch];
                rows[0] = Some(&heads_a);
                m.set_heads(&rows).unwrap();
                let got = compiled_logits(&mut m, ids, mask);
                let at = valid_positions(&mask.i64, batch);
                let row0: Vec<_> = at.iter().copied().filter(|p| p.0 == 0).collect();
                let row1: Vec<_> = at.iter().copied().filter(|p| p.0 == 1).collect();
                let e0 = rel_err(
                    &gather(&got, seq, vocab, &row0),
                    &gather(&with_a, seq, vocab, &row0),
                );
                let e1 = rel_err(
                    &gather(&got, seq, vocab, &row1),
                    &gather(&base, seq, vocab, &row1),
                );
                eprintln!(
                    "{name} {:<12} {attention:?} as inputs: row with heads {e0:.2e}, row without {e1:.2e}",
                    method.name()
                );
                assert!(
                    e0 <= TOL && e1 <= TOL,
                    "{name} {method:?} {attention:?}: {e0:e} {e1:e}"
                );
            }
        }
    }
}

#[test]
fn float16_models_stay_within_1e_2_of_the_trainer() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models().into_iter().take(2) {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::open(&dir).unwrap();
        let reference = read_reference(&dir.join("reference.safetensors"));
        let (ids, mask) = (
            &reference["padded_input_ids"],
            &reference["padded_attention_mask"],
        );
        let (batch, seq, vocab) = (ids.shape[0], ids.shape[1], model.config.vocab_size);
        let at = valid_positions(&mask.i64, batch);
        let tm = TorchModel::new(&model, Device::Cpu).unwrap();
        for method in METHODS {
            let (shift, path) = random_heads(&model, method, 5, tmp.path());
            let want = gather(
                &trainer_logits(&tm, Some(&shift), ids, mask),
                seq,
                vocab,
                &at,
            );
            let heads = Heads::read(&path, &model.fingerprint(), &model.config).unwrap();
            for attention in [AttentionImpl::Fused, AttentionImpl::Unfused] {
                let sources = [
                    ("folded", HeadsSource::Folded(&heads)),
                    ("inputs", HeadsSource::Inputs(method)),
                ];
                for (how, source) in sources {
                    if method == Method::Lora && how == "inputs" {
                        continue;
                    }
                    let out = tmp
                        .path()
                        .join(format!("{name}-{}-{attention:?}-{how}-fp16", method.name()));
                    let opts = CompileOptions {
                        attention,
                        dtype: mimic_compiler::Dtype::Fp16,
                        last_only: false,
                        ..Default::default()
                    };
                    compile_model(&model, source, &opts, &out).unwrap();
                    let mut m = CompiledModel::load(&out, &SessionOptions::default()).unwrap();
                    if how == "inputs" {
                        m.set_heads(&[Some(&heads)]).unwrap();
                    }
                    let got = gather(&compiled_logits(&mut m, ids, mask), seq, vocab, &at);
                    let err = rel_err(&got, &want);
                    eprintln!(
                        "{name} {:<12} {attention:?} {how} fp16: relative error {err:.2e}",
                        method.name()
                    );
                    assert!(
                        err <= 1e-2,
                        "{name} {method:?} {attention:?} {how} fp16: {err:e}"
                    );
                }
            }
        }
    }
}

/// Heads whose slot takes nearly all the weight (`b = 16`, so `1 - mu` is about 1e-7), as
/// trained heads do in some layers: the additive fold must still recover `h` exactly, which
/// needs `1 - mu` summed from the real keys rather than subtracted from `mu`.
#[test]
fn additive_heads_with_mu_near_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = &fixture_models()[0];
    let model = Model::open(dir).unwrap();
    let reference = read_reference(&dir.join("reference.safetensors"));
    let (ids, mask) = (
        &reference["padded_input_ids"],
        &reference["padded_attention_mask"],
    );
    let (batch, seq, vocab) = (ids.shape[0], ids.shape[1], model.config.vocab_size);
    let at = valid_positions(&mask.i64, batch);
    let tm = TorchModel::new(&model, Device::Cpu).unwrap();
    let (shift, _) = random_heads(&model, Method::Mimic, 3, tmp.path());
    tch::no_grad(|| {
        for (name, t, _) in &shift.params {
            if name == "mimic.b" {
                let _ = t.shallow_clone().fill_(16.0);
            }
        }
    });
    let path = tmp.path().join("saturated.safetensors");
    shift
        .save(
            &path,
            &model.fingerprint(),
            &model.config,
            &Default::default(),
        )
        .unwrap();
    let want = gather(
        &trainer_logits(&tm, Some(&shift), ids, mask),
        seq,
        vocab,
        &at,
    );
    let heads = Heads::read(&path, &model.fingerprint(), &model.config).unwrap();
    for (dtype, tol) in [
        (mimic_compiler::Dtype::Fp32, 1e-4),
        (mimic_compiler::Dtype::Fp16, 1e-2),
    ] {
        for attention in [AttentionImpl::Fused, AttentionImpl::Unfused] {
            let out = tmp.path().join(format!("{attention:?}-{}", dtype.name()));
            let opts = CompileOptions {
                attention,
                dtype,
                last_only: false,
                ..Default::default()
            };
            compile_model(&model, HeadsSource::Folded(&heads), &opts, &out).unwrap();
            let mut m = CompiledModel::load(&out, &SessionOptions::default()).unwrap();
            let got = gather(&compiled_logits(&mut m, ids, mask), seq, vocab, &at);
            let err = rel_err(&got, &want);
            eprintln!(
                "mu near 1, {attention:?} {}: relative error {err:.2e}",
                dtype.name()
            );
            assert!(err <= tol, "{attention:?} {}: {err:e}", dtype.name());
        }
    }
}
