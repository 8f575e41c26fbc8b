//! The SigLIP vision tower compiled to ONNX and run by ONNX Runtime, against Hugging Face
//! transformers on the small random towers of tests/fixtures/vision (no libtorch needed;
//! tests/vision_parity.rs checks it against the libtorch backend too).
//! Tolerance: relative error `max|a - b| / max|b|` at most 1e-4 in float32.
mod common;

use common::*;
use mimic_compiler::vision::{compile_vision, VisionCompileOptions};
use mimic_models::vision::Features;
use mimic_models::HostTensor;
use mimic_runtime::{SessionOptions, VisionModel};

const TOL: f32 = 1e-4;

fn host(r: &Ref) -> HostTensor {
    HostTensor::new(r.shape.clone(), r.f32.clone())
}

#[test]
fn siglip_onnx_matches_transformers() {
    let (tower, reference) = vision_fixture("siglip");
    let tmp = tempfile::tempdir().unwrap();
    let layers = tower.config.num_layers;
    let opts = VisionCompileOptions {
        hidden_states: true,
        ..Default::default()
    };
    compile_vision(&tower, &opts, tmp.path()).unwrap();
    let mut m = VisionModel::load(tmp.path(), &SessionOptions::default()).unwrap();
    let out = m.run(&host(&reference["pixel_values"]), None).unwrap();
    let want = &reference["last_hidden_state"];
    assert_eq!(out.hidden.shape, want.shape);
    let err = rel_err(&out.hidden.data, &want.f32);
    eprintln!("siglip onnx: last_hidden_state relative error {err:.2e}");
    assert!(err <= TOL, "last_hidden_state relative error {err:e}");
    assert_eq!(out.hidden_states.len(), layers + 1);
    for (k, h) in out.hidden_states.iter().enumerate() {
        let err = rel_err(&h.data, &reference[&format!("hidden_states.{k}")].f32);
        eprintln!("siglip onnx: hidden_states[{k}] relative error {err:.2e}");
        assert!(err <= TOL, "hidden_states[{k}] relative error {err:e}");
    }
    let erf_gap = rel_err(&reference["last_hidden_state_gelu_erf"].f32, &want.f32);
    assert!(err * 10.0 < erf_gap, "{err:e} not well below {erf_gap:e}");

    // LLaVA's features (`vision_feature_layer` -1): the last layer's output, no post_layernorm.
    let opts = VisionCompileOptions {
        features: Features::HiddenState(layers),
        ..Default::default()
    };
    let dir = tmp.path().join("features");
    compile_vision(&tower, &opts, &dir).unwrap();
    let mut m = VisionModel::load(&dir, &SessionOptions::default()).unwrap();
    let out = m.run(&host(&reference["pixel_values"]), None).unwrap();
    let err = rel_err(
        &out.hidden.data,
        &reference[&format!("hidden_states.{layers}")].f32,
    );
    assert!(err <= TOL, "features relative error {err:e}");
}

#[test]
fn idefics2_padded_batch_onnx_matches_transformers() {
    let (tower, reference) = vision_fixture("idefics2");
    let tmp = tempfile::tempdir().unwrap();
    let opts = VisionCompileOptions {
        variable_size: true,
        ..Default::default()
    };
    compile_vision(&tower, &opts, tmp.path()).unwrap();
    let mut m = VisionModel::load(tmp.path(), &SessionOptions::default()).unwrap();
    let mask = &reference["patch_attention_mask"];
    let ids = fixture_position_ids(&tower, &reference);
    let out = m
        .run(&host(&reference["pixel_values"]), Some((&ids, &mask.i64)))
        .unwrap();
    let err = rel_err(&out.hidden.data, &reference["last_hidden_state"].f32);
    eprintln!("idefics2 padded batch onnx: last_hidden_state relative error {err:.2e}");
    assert!(err <= TOL, "last_hidden_state relative error {err:e}");
}
