//! Whole vision-language models on libtorch against Hugging Face transformers: tiny random
//! Idefics2, Idefics3 and LLaVA (Qwen2) models (tests/fixtures/vlm, written by
//! scripts/make_vlm_fixtures.py), a batch of two prompts (two images of different sizes in
//! the first, one image and left padding in the second). Every part is compared: the patch
//! masks and position ids (exactly), the tower's hidden states, the connector's steps and
//! output, each decoder layer and the logits at real positions, relative error
//! `max|a - b| / max|b|` at most 1e-4 in float32; and eight greedy tokens, identical.
#![cfg(feature = "torch")]
mod common;

use common::*;
use mimic_models::backend::Site;
use mimic_models::generate::greedy;
use mimic_models::vision::ConnectorSite;
use mimic_models::vlm::{VisionLanguageModel, VlmArchitecture};
use mimic_trainer::torch_backend::{Forward, TorchLm};
use mimic_trainer::TorchVlm;
use tch::{Device, Tensor};

const TOL: f32 = 1e-4;

fn check(name: &str, what: &str, got: &Tensor, want: &Ref) -> f32 {
    let dims: Vec<usize> = got.size().iter().map(|&d| d as usize).collect();
    assert_eq!(dims, want.shape, "{name}: {what} shape");
    let err = rel_err(&to_vec(got), &want.f32);
    eprintln!("{name}: {what} relative error {err:.2e}");
    assert!(err <= TOL, "{name}: {what} relative error {err:e}");
    err
}

fn parity(name: &str, arch: VlmArchitecture) {
    let _guard = tch::no_grad_guard();
    assert!(VisionLanguageModel::is_vlm_dir(
        &fixtures_dir().join("vlm").join(name)
    ));
    let (model, reference) = vlm_fixture(name);
    assert_eq!(model.config.architecture, arch);
    let vlm = TorchVlm::new(&model, Device::Cpu).unwrap();

    // Host-side inputs: the padding image dropped, patch masks and bucketed ids exact.
    let inputs = vlm_encoder_inputs(&model, &reference);
    if let Some(want) = reference.get("vision.patch_attention_mask") {
        assert_eq!(
            inputs.patch_mask.as_ref().unwrap(),
            &want.i64,
            "{name}: patch mask"
        );
        let ids = &reference["vision.position_ids"].i64;
        assert_eq!(
            inputs.position_ids.as_ref().unwrap(),
            ids,
            "{name}: position ids"
        );
        assert_eq!(inputs.images_per_prompt, vec![2, 1]);
    }

    // Image encoder: tower, connector steps, image tokens.
    let out = vlm.encode_images(&inputs, true).unwrap();
    let layers = model.config.vision.num_layers;
    for k in 0..=layers {
        let key = format!("vision.hidden_states.{k}");
        check(name, &key, &out.hidden_states[k], &reference[&key]);
    }
    let features_key = match arch {
        VlmArchitecture::Llava => "vision.features",
        _ => "vision.last_hidden_state",
    };
    check(
        name,
        features_key,
        &out.connector[&ConnectorSite::Features],
        &reference[features_key],
    );
    for (site, key) in [
        (
            ConnectorSite::ModalityProjection,
            "connector.modality_projection".to_string(),
        ),
        (
            ConnectorSite::PixelShuffle,
            "connector.pixel_shuffle".to_string(),
        ),
    ]
    .into_iter()
    .chain((0..4).map(|i| {
        (
            ConnectorSite::PerceiverLayer(i),
            format!("connector.perceiver.layers.{i}"),
        )
    })) {
        match (out.connector.get(&site), reference.get(&key)) {
            (Some(got), Some(want)) => {
                check(name, &key, got, want);
            }
            (None, None) => {}
            (got, want) => panic!(
                "{name}: {key}: recorded {} but the reference has it: {}",
                got.is_some(),
                want.is_some()
            ),
        }
    }
    check(
        name,
        "connector.output",
        &out.hidden,
        &reference["connector.output"],
    );

    // Decoder over the padded batch, image tokens in place of <image>.
    let ids = tensor_i64(&reference["input_ids"]);
    let mask = tensor_i64(&reference["attention_mask"]);
    let positions = tensor_i64(&reference["position_ids"]);
    let images = vlm.image_tokens(&ids, &out.hidden).unwrap();
    let mut f = Forward::new(&ids);
    f.attention_mask = Some(&mask);
    f.position_ids = Some(&positions);
    f.record = &[Site::LayerOutput];
    f.images = Some(images);
    let fwd = vlm.decoder.forward(&f, None);
    let (b, s) = (ids.size()[0] as usize, ids.size()[1]);
    let mask_ref = &reference["attention_mask"].i64;
    let at_valid = |t: &Tensor| rows_at_valid(&to_vec(t), mask_ref, b, t.size()[2] as usize);
    let at_valid_ref = |r: &Ref| rows_at_valid(&r.f32, mask_ref, b, r.shape[2]);
    for l in 0..model.config.text.num_layers {
        let key = format!("decoder.hidden_states.{l}");
        let err = rel_err(
            &at_valid(&fwd.recorded[&(l, Site::LayerOutput)]),
            &at_valid_ref(&reference[&key]),
        );
        eprintln!("{name}: {key} relative error {err:.2e}");
        assert!(err <= TOL, "{name}: {key} relative error {err:e}");
    }
    let err = rel_err(&at_valid(&fwd.logits), &at_valid_ref(&reference["logits"]));
    eprintln!("{name}: logits relative error {err:.2e}");
    assert!(err <= TOL, "{name}: logits relative error {err:e}");

    // Greedy generation of the first prompt alone (its two images), token for token.
    let want = &reference["generate.row0"].i64;
    let row0: Vec<u32> = reference["input_ids"].i64[..s as usize]
        .iter()
        .map(|&x| x as u32)
        .collect();
    let image_id = model.config.image_token_id;
    let n0 =
        (row0.iter().filter(|&&t| t == image_id).count() / model.config.tokens_per_image()) as i64;
    let features0 = out.hidden.narrow(0, 0, n0);
    let mut lm = TorchLm::new(&vlm.decoder);
    let tokens = vlm.image_tokens(&ids.narrow(0, 0, 1), &features0).unwrap();
    lm.images = Some((tokens.token_id, features0.shallow_clone()));
    let gen = greedy(&mut lm, &row0, want.len(), &[], |_| {}).unwrap();
    let got: Vec<i64> = gen.tokens.iter().map(|&t| t as i64).collect();
    eprintln!("{name}: greedy {got:?}");
    assert_eq!(&got, want, "{name}: greedy tokens");
}

#[test]
fn idefics2_matches_transformers() {
    parity("idefics2", VlmArchitecture::Idefics2);
}

#[test]
fn idefics3_matches_transformers() {
    parity("idefics3", VlmArchitecture::Idefics3);
}

#[test]
fn llava_matches_transformers() {
    parity("llava", VlmArchitecture::Llava);
}

#[test]
fn image_token_count_must_match_the_images() {
    let _guard = tch::no_grad_guard();
    let (model, reference) = vlm_fixture("idefics3");
    let vlm = TorchVlm::new(&model, Device::Cpu).unwrap();
    let inputs = vlm_encoder_inputs(&model, &reference);
    let out = vlm.encode_images(&inputs, false).unwrap();
    let ids = tensor_i64(&reference["input_ids"]);
    // Row 0 holds two images' tokens: one image is too few, all three too many.
    let row0 = ids.narrow(0, 0, 1);
    let e = vlm
        .image_tokens(&row0, &out.hidden.narrow(0, 0, 1))
        .err()
        .expect("two placeholders, one image")
        .to_string();
    assert!(
        e.contains("32 image tokens") && e.contains("1 images"),
        "{e}"
    );
    assert!(vlm.image_tokens(&row0, &out.hidden).is_err());
}

#[test]
fn idefics2_drops_partial_patches_as_transformers() {
    // A 30x27 image of 4 px patches: transformers' stride-4 convolution and mask unfolding
    // keep 7x6 patches; the position ids spread them over the 8x8 table.
    let _guard = tch::no_grad_guard();
    let (model, _) = vlm_fixture("idefics2");
    let dir = fixtures_dir().join("vlm/idefics2");
    let reference = read_reference(&dir.join("reference_odd_size.safetensors"));
    let vlm = TorchVlm::new(&model, Device::Cpu).unwrap();
    let inputs = vlm_encoder_inputs(&model, &reference);
    assert_eq!(
        inputs.patch_mask.as_ref().unwrap(),
        &reference["vision.patch_attention_mask"].i64
    );
    assert_eq!(
        inputs.position_ids.as_ref().unwrap(),
        &reference["vision.position_ids"].i64
    );
    let out = vlm.encode_images(&inputs, true).unwrap();
    let name = "idefics2 30x27";
    check(
        name,
        "vision.last_hidden_state",
        &out.connector[&ConnectorSite::Features],
        &reference["vision.last_hidden_state"],
    );
    check(
        name,
        "connector.output",
        &out.hidden,
        &reference["connector.output"],
    );
    let ids = tensor_i64(&reference["input_ids"]);
    let mut f = Forward::new(&ids);
    f.images = Some(vlm.image_tokens(&ids, &out.hidden).unwrap());
    let logits = vlm.decoder.forward(&f, None).logits;
    check(name, "logits", &logits, &reference["logits"]);
}
