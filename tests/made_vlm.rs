//! The vision-language model `mimic align` made (the default SmolLM2 with the shipped trained
//! encoder, data/vlm/easy-vqa-encoder.safetensors), assembled into an HF folder here, against
//! transformers loading that same folder (tests/fixtures/made_vlm/transformers.safetensors,
//! written by scripts/reference_made_vlm.py), on three prompts of one to three images: the
//! prompt's ids exactly, the preprocessed pixels to 1e-6, the image tokens and the last four
//! positions' logits within 1e-4 relative (`max|a - b| / max|b|`), eight greedy tokens
//! identical.
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

    let tok = model.decoder.tokenizer.as_ref().unwrap();
    let data = package_root().unwrap();
    for k in 0..3 {
        let key = |name: &str| format!("p{k}.{name}");
        let want = |name: &str| &reference[&key(name)];
        // Pixels, from the same easy-VQA test images.
        let paths: Vec<_> = meta[&key("images")]
            .split(',')
            .map(|p| data.join(p))
            .collect();
        let inputs = images_inputs(&model.config, &processor, &paths).unwrap();
        let err = rel_err(&inputs.pixel_values.data, &want("pixel_values").f32);
        assert!(err <= 1e-6, "p{k}: pixel values relative error {err:e}");

        // The prompt's ids: mimic's expansion and tokenizer against transformers' tokenizer.
        let expanded = image_tokens(&model.config, &processor)
            .expand(&meta[&key("prompt")])
            .unwrap();
        let ids: Vec<u32> = start_token(tok)
            .into_iter()
            .chain(tok.encode(&expanded).unwrap())
            .collect();
        let want_ids: Vec<u32> = want("input_ids").i64.iter().map(|&x| x as u32).collect();
        assert_eq!(ids, want_ids, "p{k}: prompt ids");

        // The image tokens.
        let features = vlm.encode_images(&inputs, false).unwrap().hidden;
        let err = rel_err(&to_vec(&features), &want("image_features").f32);
        eprintln!(
            "p{k} ({} images): image features relative error {err:.2e}",
            paths.len()
        );
        assert!(err <= TOL, "p{k}: image features relative error {err:e}");

        // The last four positions' logits.
        let t = Tensor::from_slice(&want("input_ids").i64).view([1, -1]);
        let mut f = Forward::new(&t);
        f.logits_last = Some(4);
        f.images = Some(vlm.image_tokens(&t, &features).unwrap());
        let logits = vlm.decoder.forward(&f, None).logits;
        let err = rel_err(&to_vec(&logits), &want("logits_last").f32);
        eprintln!("p{k}: logits relative error {err:.2e}");
        assert!(err <= TOL, "p{k}: logits relative error {err:e}");

        // Greedy decoding, token for token.
        let mut lm = TorchLm::new(&vlm.decoder);
        lm.images = Some((image_token_id as i64, features.shallow_clone()));
        let want_greedy = &want("greedy").i64;
        let gen = greedy(&mut lm, &ids, want_greedy.len(), &[], |_| {}).unwrap();
        let got: Vec<i64> = gen.tokens.iter().map(|&t| t as i64).collect();
        eprintln!(
            "p{k}: greedy {got:?} = {:?}",
            tok.decode(&gen.tokens).unwrap()
        );
        assert_eq!(&got, want_greedy, "p{k}: greedy tokens");
    }
}

#[test]
fn shipped_encoder_captions_held_out_images() {
    // The model sees: on 50 easy-VQA test images it never trained on, greedy decoding names
    // colour and shape both right for at least 90% of them.
    let tmp = tempfile::tempdir().unwrap();
    let encoder = repo().join("data/vlm/easy-vqa-encoder.safetensors");
    let out = succeeds(&[
        "align".as_ref(),
        "--encoder".as_ref(),
        encoder.as_os_str(),
        "--holdout".as_ref(),
        "50".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
        "--out".as_ref(),
        tmp.path().as_os_str(),
    ]);
    let right: f64 = out
        .split("all words right ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no caption accuracy in:\n{out}"));
    assert!(out.contains("captions of 50 held-out images"), "{out}");
    assert!(
        right >= 0.9,
        "captions right for {right} of held-out images:\n{out}"
    );
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
    // Pretraining and four steps at once against pretraining and two, then two more from the
    // checkpoint (no pretraining again): bit-identical.
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
            "--pretrain-steps".as_ref(),
            "3".as_ref(),
            "--pretrain-batch".as_ref(),
            "4".as_ref(),
            "--holdout".as_ref(),
            "4".as_ref(),
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
    let first = run(&whole, &[]);
    assert!(first.contains("captions of 4 held-out images"), "{first}");
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
    for f in [
        "log.json",
        "loss.svg",
        "checkpoint.safetensors",
        "pretrain.json",
        "accuracy.json",
    ] {
        assert!(whole.join(f).is_file(), "{f} missing");
    }
}
