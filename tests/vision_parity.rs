//! The SigLIP vision tower on libtorch against Hugging Face transformers, on small random
//! towers (tests/fixtures/vision, written by scripts/make_vision_fixtures.py).
//! Tolerance: relative error `max|a - b| / max|b|` at most 1e-4 in float32.
// These tests drive libtorch directly: the deployment build (no `torch` feature) has none.
#![cfg(feature = "torch")]
mod common;

use common::*;
use mimic_models::vision::{Activation, Features};
use mimic_trainer::torch_vision::{TorchVision, VisionForward};
use tch::{Device, Kind, Tensor};

const TOL: f32 = 1e-4;

#[test]
fn siglip_torch_matches_transformers() {
    let _guard = tch::no_grad_guard();
    let (tower, reference) = vision_fixture("siglip");
    // transformers 5 saves SiglipVisionModel without the `vision_model.` of 4.x checkpoints.
    assert_eq!(tower.prefix, "");
    assert_eq!(tower.config.activation, Activation::GeluTanh);
    let tv = TorchVision::new(&tower, Device::Cpu).unwrap();
    let pixels = tensor_f32(&reference["pixel_values"]);
    let mut f = VisionForward::new(&pixels);
    f.record = true;
    let out = tv.forward(&f).unwrap();
    let want = &reference["last_hidden_state"].f32;
    let err = rel_err(&to_vec(&out.hidden), want);
    eprintln!("siglip: last_hidden_state relative error {err:.2e}");
    assert!(err <= TOL, "last_hidden_state relative error {err:e}");
    let layers = tower.config.num_layers;
    assert_eq!(out.hidden_states.len(), layers + 1);
    for (i, h) in out.hidden_states.iter().enumerate() {
        let err = rel_err(&to_vec(h), &reference[&format!("hidden_states.{i}")].f32);
        eprintln!("siglip: hidden_states[{i}] relative error {err:.2e}");
        assert!(err <= TOL, "hidden_states[{i}] relative error {err:e}");
    }
    // The tanh GELU, not the exact one: the exact one's transformers output is far further
    // away than ours.
    let erf_gap = rel_err(&reference["last_hidden_state_gelu_erf"].f32, want);
    eprintln!("siglip: exact-erf GELU output differs by {erf_gap:.2e}");
    assert!(err * 10.0 < erf_gap, "{err:e} not well below {erf_gap:e}");

    // LLaVA's features: hidden_states[k], no post_layernorm, later layers skipped.
    for k in 0..=layers {
        let mut f = VisionForward::new(&pixels);
        f.features = Features::HiddenState(k);
        let got = to_vec(&tv.forward(&f).unwrap().hidden);
        let err = rel_err(&got, &reference[&format!("hidden_states.{k}")].f32);
        assert!(
            err <= TOL,
            "features hidden_states[{k}] relative error {err:e}"
        );
    }
    // Explicit 0..n ids are the default ones.
    let n = tower.config.num_positions() as i64;
    let ids = Tensor::arange(n, (Kind::Int64, Device::Cpu))
        .unsqueeze(0)
        .repeat([2, 1]);
    let mut f = VisionForward::new(&pixels);
    f.position_ids = Some(&ids);
    let err = rel_err(
        &to_vec(&tv.forward(&f).unwrap().hidden),
        &to_vec(&out.hidden),
    );
    assert!(
        err == 0.0,
        "explicit position ids change the output ({err:e})"
    );
}

#[test]
fn siglip_torch_rejects_bad_inputs() {
    let _guard = tch::no_grad_guard();
    let (tower, _) = vision_fixture("siglip");
    let tv = TorchVision::new(&tower, Device::Cpu).unwrap();
    for shape in [[1i64, 3, 30, 32], [1, 1, 32, 32], [1, 3, 16, 16]] {
        let px = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        let e = tv.forward(&VisionForward::new(&px)).err();
        assert!(e.is_some(), "{shape:?} accepted");
    }
}

/// Idefics2's vision transformer on a padded batch: the host-side bucketed position ids equal
/// the ones transformers computes, and with them and the patch mask the tower's output does.
#[test]
fn idefics2_padded_batch_matches_transformers() {
    let _guard = tch::no_grad_guard();
    let (tower, reference) = vision_fixture("idefics2");
    assert_eq!(tower.config.model_type, "idefics2_vision");
    let cfg = &tower.config;
    let mask_ref = &reference["patch_attention_mask"];
    let (n, patches) = (mask_ref.shape[0], mask_ref.shape[1]);
    let ids = fixture_position_ids(&tower, &reference);
    assert_eq!(ids, reference["position_ids"].i64, "bucketed position ids");

    let tv = TorchVision::new(&tower, Device::Cpu).unwrap();
    let pixels = tensor_f32(&reference["pixel_values"]);
    let ids_t = Tensor::from_slice(&ids).view([n as i64, patches as i64]);
    let mask_t = tensor_i64(mask_ref);
    let mut f = VisionForward::new(&pixels);
    f.position_ids = Some(&ids_t);
    f.patch_mask = Some(&mask_t);
    let got = to_vec(&tv.forward(&f).unwrap().hidden);
    let want = &reference["last_hidden_state"].f32;
    let err = rel_err(&got, want);
    eprintln!("idefics2 padded batch: last_hidden_state relative error {err:.2e}");
    assert!(err <= TOL, "last_hidden_state relative error {err:e}");
    // Without the mask the padded image's real patches would see the padding.
    let mut f = VisionForward::new(&pixels);
    f.position_ids = Some(&ids_t);
    let unmasked = to_vec(&tv.forward(&f).unwrap().hidden);
    let hidden = cfg.hidden_size;
    let image1 = patches * hidden..;
    let gap = rel_err(&unmasked[image1.clone()], &want[image1]);
    assert!(gap > 1e-2, "the patch mask changes nothing ({gap:e})");
}

/// The compiled tower in ONNX Runtime against the libtorch backend, both fixtures.
#[test]
fn onnx_matches_torch() {
    use mimic_compiler::vision::{compile_vision, VisionCompileOptions};
    use mimic_models::HostTensor;
    use mimic_runtime::{SessionOptions, VisionModel};
    let _guard = tch::no_grad_guard();
    let tmp = tempfile::tempdir().unwrap();
    for (name, variable_size) in [("siglip", false), ("idefics2", true)] {
        let (tower, reference) = vision_fixture(name);
        let tv = TorchVision::new(&tower, Device::Cpu).unwrap();
        let px = &reference["pixel_values"];
        let pixels = tensor_f32(px);
        let mut f = VisionForward::new(&pixels);
        let (ids, ids_t, mask_t);
        let mut patches = None;
        if variable_size {
            let mask = &reference["patch_attention_mask"];
            ids = fixture_position_ids(&tower, &reference);
            ids_t = Tensor::from_slice(&ids).view([mask.shape[0] as i64, -1]);
            mask_t = tensor_i64(mask);
            f.position_ids = Some(&ids_t);
            f.patch_mask = Some(&mask_t);
            patches = Some((ids.as_slice(), mask.i64.as_slice()));
        }
        let torch = to_vec(&tv.forward(&f).unwrap().hidden);
        let dir = tmp.path().join(name);
        let opts = VisionCompileOptions {
            variable_size,
            ..Default::default()
        };
        compile_vision(&tower, &opts, &dir).unwrap();
        let mut m = VisionModel::load(&dir, &SessionOptions::default()).unwrap();
        let onnx = m
            .run(&HostTensor::new(px.shape.clone(), px.f32.clone()), patches)
            .unwrap();
        let err = rel_err(&onnx.hidden.data, &torch);
        eprintln!("{name}: onnx vs torch last_hidden_state relative error {err:.2e}");
        assert!(err <= TOL, "{name}: onnx vs torch relative error {err:e}");
    }
}
