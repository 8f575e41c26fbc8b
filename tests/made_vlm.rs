//! The vision-language model `mimic align` made (the default SmolLM2 with the shipped trained
//! encoder, data/vlm/easy-vqa-encoder.safetensors), assembled into an HF folder here, against
//! transformers loading that same folder (tests/fixtures/made_vlm/transformers.safetensors,
//! written by scripts/reference_made_vlm.py): the prompt's ids and the preprocessed pixels
//! exactly (pixels to 1e-6), the image tokens and the last four positions' logits within 1e-4
//! relative (`max|a - b| / max|b|`), eight greedy tokens identical.
#![cfg(feature = "torch")]
mod common;

use common::*;
use mimic_models::datasets::easy_vqa::package_root;
use mimic_models::generate::greedy;
use mimic_models::task::start_token;
use mimic_models::vlm::assemble::{self, EncoderSpec};
use mimic_models::vlm::request::{folder_processor, image_tokens, images_inputs};
use mimic_models::vlm::VisionLanguageModel;
use mimic_models::Model;
use mimic_trainer::torch_backend::{Forward, TorchLm};
use mimic_trainer::TorchVlm;
use tch::{Device, Tensor};

const TOL: f32 = 1e-4;

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn made_model_matches_transformers() {
    let _guard = tch::no_grad_guard();
    let reference = read_reference(&fixtures_dir().join("made_vlm/transformers.safetensors"));
    let meta = mimic_models::weights::read_safetensors_metadata(
        &fixtures_dir().join("made_vlm/transformers.safetensors"),
    )
    .unwrap();

    // Assemble the folder as `mimic align --encoder` does.
    let language = Model::open(&default_model()).unwrap();
    let (text, image_token_id) = assemble::with_image_tokens(&language).unwrap();
    drop(language);
    let spec = EncoderSpec::small();
    let cfg = assemble::vlm_config(&text, image_token_id, &spec).unwrap();
    let encoder =
        assemble::read_encoder(&repo().join("data/vlm/easy-vqa-encoder.safetensors"), &cfg)
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    assemble::write_folder(&dir, &text, image_token_id, &spec, &encoder).unwrap();
    drop(text);
    let model = VisionLanguageModel::open(&dir).unwrap();
    let vlm = TorchVlm::new(&model, Device::Cpu).unwrap();
    let processor = folder_processor(&dir).unwrap();

    // Pixels, from the same two easy-VQA test images.
    let data = package_root().unwrap();
    let paths: Vec<_> = meta["images"].split(',').map(|p| data.join(p)).collect();
    let inputs = images_inputs(&model.config, &processor, &paths).unwrap();
    let err = rel_err(&inputs.pixel_values.data, &reference["pixel_values"].f32);
    assert!(err <= 1e-6, "pixel values relative error {err:e}");

    // The prompt's ids: mimic's expansion and tokenizer against transformers' tokenizer.
    let tok = model.decoder.tokenizer.as_ref().unwrap();
    let expanded = image_tokens(&model.config, &processor)
        .expand(&meta["prompt"])
        .unwrap();
    let ids: Vec<u32> = start_token(tok)
        .into_iter()
        .chain(tok.encode(&expanded).unwrap())
        .collect();
    let want_ids: Vec<u32> = reference["input_ids"]
        .i64
        .iter()
        .map(|&x| x as u32)
        .collect();
    assert_eq!(ids, want_ids, "prompt ids");

    // The image tokens.
    let features = vlm.encode_images(&inputs, false).unwrap().hidden;
    let err = rel_err(&to_vec(&features), &reference["image_features"].f32);
    eprintln!("image features relative error {err:.2e}");
    assert!(err <= TOL, "image features relative error {err:e}");

    // The last four positions' logits.
    let t = Tensor::from_slice(&reference["input_ids"].i64).view([1, -1]);
    let mut f = Forward::new(&t);
    f.logits_last = Some(4);
    f.images = Some(vlm.image_tokens(&t, &features).unwrap());
    let logits = vlm.decoder.forward(&f, None).logits;
    let err = rel_err(&to_vec(&logits), &reference["logits_last"].f32);
    eprintln!("logits relative error {err:.2e}");
    assert!(err <= TOL, "logits relative error {err:e}");

    // Greedy decoding, token for token.
    let mut lm = TorchLm::new(&vlm.decoder);
    lm.images = Some((image_token_id as i64, features.shallow_clone()));
    let want = &reference["greedy"].i64;
    let gen = greedy(&mut lm, &ids, want.len(), &[], |_| {}).unwrap();
    let got: Vec<i64> = gen.tokens.iter().map(|&t| t as i64).collect();
    eprintln!("greedy {got:?} = {:?}", tok.decode(&gen.tokens).unwrap());
    assert_eq!(&got, want, "greedy tokens");
}

#[test]
fn align_refuses_an_encoder_of_another_shape() {
    // A tiny random SigLIP tower's weights are not this model's encoder.
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&[
        "align".as_ref(),
        "--encoder".as_ref(),
        fixtures_dir()
            .join("vlm/idefics3/model.safetensors")
            .as_os_str(),
        "--out".as_ref(),
        tmp.path().as_os_str(),
    ]);
    assert!(
        err.contains("idefics3/model.safetensors") && err.contains("image encoder"),
        "{err}"
    );
    assert!(
        !tmp.path().join("model").exists(),
        "no folder written for a refused encoder"
    );
}

#[test]
fn resumed_alignment_ends_with_the_same_encoder() {
    // Four steps at once against two, then two more from the checkpoint: bit-identical.
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &std::path::Path, extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "align".as_ref(),
            "--steps".as_ref(),
            "4".as_ref(),
            "--batch".as_ref(),
            "1".as_ref(),
            "--max-images".as_ref(),
            "2".as_ref(),
            "--threads".as_ref(),
            "2".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ];
        args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
        succeeds(&args)
    };
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    run(&whole, &[]);
    let out = run(&split, &["--stop-after", "2"]);
    assert!(out.contains("stopped at step 2 of 4"), "{out}");
    assert!(!split.join("vision.safetensors").exists());
    run(&split, &["--resume"]);
    let read = |p: &std::path::Path| {
        mimic_models::weights::read_safetensors_with_metadata(p)
            .unwrap()
            .0
    };
    let a = read(&whole.join("vision.safetensors"));
    let b = read(&split.join("vision.safetensors"));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(t.data, b[name].data, "{name} differs after resuming");
    }
    // The folder is a vision-language model mimic opens.
    let model = VisionLanguageModel::open(&whole.join("model")).unwrap();
    assert_eq!(model.config.tokens_per_image(), 16);
    for f in ["log.json", "loss.svg", "checkpoint.safetensors"] {
        assert!(whole.join(f).is_file(), "{f} missing");
    }
}
