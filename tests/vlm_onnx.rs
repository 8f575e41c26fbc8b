//! Whole vision-language models compiled to their three graphs (image encoder, embeddings,
//! decoder over `inputs_embeds`) and run by ONNX Runtime, against Hugging Face transformers
//! on the tiny random models of tests/fixtures/vlm (no libtorch needed; tests/vlm_parity.rs
//! checks the libtorch backend on the same references). For each attention form: the image
//! tokens and the logits at every real position of a padded batch within 1e-4 relative
//! (`max|a - b| / max|b|`, float32), and eight greedy tokens identical to transformers'.
mod common;

use std::path::Path;

use common::*;
use mimic_compiler::{compile_vlm, AttentionImpl, CompileOptions, HeadsSource};
use mimic_models::contract::Contract;
use mimic_models::generate::greedy;
use mimic_models::HostTensor;
use mimic_runtime::{CompiledModel, OnnxLm, SessionOptions};

const TOL: f32 = 1e-4;

fn onnx_parity(name: &str) {
    let (model, reference) = vlm_fixture(name);
    let inputs = vlm_encoder_inputs(&model, &reference);
    let tmp = tempfile::tempdir().unwrap();
    for attention in AttentionImpl::ALL.iter().copied() {
        let dir = tmp.path().join(attention.name());
        let opts = CompileOptions {
            attention,
            last_only: false,
            ..Default::default()
        };
        let contract = compile_vlm(&model, HeadsSource::None, &opts, &dir).unwrap();
        let vision = contract.vision.as_ref().expect("a vision contract");
        assert_eq!(vision.tokens_per_image, model.config.tokens_per_image());
        assert_eq!(Contract::read(&dir).unwrap(), contract);
        for file in [
            "model.onnx",
            "vision.onnx",
            "embed.onnx",
            "preprocessor_config.json",
        ] {
            assert!(dir.join(file).is_file(), "{name}: {file} missing");
        }
        let mut m = CompiledModel::load(&dir, &SessionOptions::default()).unwrap();
        assert!(m.takes_images());

        let features = m.encode_images(&inputs).unwrap();
        let want = &reference["connector.output"];
        assert_eq!(features.shape, want.shape);
        let err = rel_err(&features.data, &want.f32);
        eprintln!("{name} onnx: image features relative error {err:.2e}");
        assert!(err <= TOL, "{name}: image features relative error {err:e}");

        // The padded batch, every image's tokens in order.
        let ids = &reference["input_ids"].i64;
        let mask = &reference["attention_mask"].i64;
        let positions = &reference["position_ids"].i64;
        let batch = reference["input_ids"].shape[0];
        m.set_images(features.clone()).unwrap();
        let state = m.empty_state(batch).unwrap();
        let out = m.run(batch, ids, mask, positions, state).unwrap();
        let vocab = model.config.text.vocab_size;
        let err = rel_err(
            &rows_at_valid(&out.logits, mask, batch, vocab),
            &rows_at_valid(&reference["logits"].f32, mask, batch, vocab),
        );
        eprintln!(
            "{name} onnx {}: logits relative error {err:.2e}",
            attention.name()
        );
        assert!(
            err <= TOL,
            "{name} {attention:?}: logits relative error {err:e}"
        );

        // Greedy generation of the first prompt with its images.
        let seq = reference["input_ids"].shape[1];
        let row0: Vec<u32> = ids[..seq].iter().map(|&x| x as u32).collect();
        let image_id = model.config.image_token_id;
        let per_image = model.config.tokens_per_image();
        let n0 = row0.iter().filter(|&&t| t == image_id).count() / per_image;
        let width = features.data.len() / features.shape[0];
        let mut shape = features.shape.clone();
        shape[0] = n0;
        m.set_images(HostTensor::new(shape, features.data[..n0 * width].to_vec()))
            .unwrap();
        let want = &reference["generate.row0"].i64;
        let gen = greedy(&mut OnnxLm::new(&mut m), &row0, want.len(), &[], |_| {}).unwrap();
        let got: Vec<i64> = gen.tokens.iter().map(|&t| t as i64).collect();
        assert_eq!(&got, want, "{name} {attention:?}: greedy tokens");
    }
}

#[test]
fn idefics2_onnx_matches_transformers() {
    onnx_parity("idefics2");
}

#[test]
fn idefics3_onnx_matches_transformers() {
    onnx_parity("idefics3");
}

#[test]
fn llava_onnx_matches_transformers() {
    onnx_parity("llava");
}

#[test]
fn images_must_match_the_placeholders() {
    let (model, reference) = vlm_fixture("llava");
    let inputs = vlm_encoder_inputs(&model, &reference);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    compile_vlm(&model, HeadsSource::None, &CompileOptions::default(), &dir).unwrap();
    let mut m = CompiledModel::load(&dir, &SessionOptions::default()).unwrap();
    let features = m.encode_images(&inputs).unwrap();
    let seq = reference["input_ids"].shape[1];
    let row0 = &reference["input_ids"].i64[..seq];
    let mask = vec![1i64; seq];
    let positions: Vec<i64> = (0..seq as i64).collect();
    // Row 0 holds two images' tokens; three images are one too many, none two too few.
    m.set_images(features).unwrap();
    let state = m.empty_state(1).unwrap();
    let e = m
        .run(1, row0, &mask, &positions, state)
        .err()
        .expect("three images for two placeholders")
        .to_string();
    assert!(
        e.contains("128 image tokens") && e.contains("3 images"),
        "{e}"
    );
    let state = m.empty_state(1).unwrap();
    let e = m
        .run(1, row0, &mask, &positions, state)
        .err()
        .expect("no images for two placeholders")
        .to_string();
    assert!(e.contains("0 images"), "{e}");
}

/// The tiny Idefics3 fixture compiled into `dir/c` by `mimic compile`.
fn compiled_idefics3(dir: &Path) -> std::path::PathBuf {
    let compiled = dir.join("c");
    let model = fixtures_dir().join("vlm/idefics3");
    succeeds(&[
        "compile",
        "--model",
        model.to_str().unwrap(),
        "--out",
        compiled.to_str().unwrap(),
    ]);
    compiled
}

/// The path of a shape image of the fixture task, as text.
fn shape_image(name: &str) -> String {
    fixtures_dir()
        .join("vlm/shapes")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn run_batches_prompts_with_their_images() {
    // `mimic run` on a compiled vision-language folder: prompts with one, two and no images,
    // batched together, answer as they do one at a time.
    let tmp = tempfile::tempdir().unwrap();
    let compiled = compiled_idefics3(tmp.path());
    let image = shape_image;
    let lines = [
        serde_json::json!({"prompt": "<image>What colour is the shape?",
                           "images": [image("red-circle.png")]}),
        serde_json::json!({"prompt": "<image> and <image>: same colour?",
                           "images": [image("blue-square.png"), image("green-triangle.png")]}),
        serde_json::json!({"prompt": "no image here"}),
    ];
    let file = tmp.path().join("prompts.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let completions = |batch: &str| {
        let json = tmp.path().join(format!("batch-{batch}.json"));
        succeeds(&[
            "run",
            "--compiled",
            compiled.to_str().unwrap(),
            "--prompts-file",
            file.to_str().unwrap(),
            "--batch",
            batch,
            "--max-new-tokens",
            "4",
            "--json",
            json.to_str().unwrap(),
        ]);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["completion"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let batched = completions("3");
    assert_eq!(batched.len(), 3);
    assert_eq!(batched, completions("1"));
    // A prompt whose images and placeholders disagree names itself.
    std::fs::write(
        &file,
        serde_json::json!({"prompt": "<image><image>", "images": [image("red-circle.png")]})
            .to_string(),
    )
    .unwrap();
    let err = fails(&[
        "run",
        "--compiled",
        compiled.to_str().unwrap(),
        "--prompts-file",
        file.to_str().unwrap(),
    ]);
    assert!(err.contains("2 <image> placeholders but 1 images"), "{err}");
}

#[test]
fn idefics2_onnx_drops_partial_patches_as_transformers() {
    let (model, _) = vlm_fixture("idefics2");
    let reference =
        read_reference(&fixtures_dir().join("vlm/idefics2/reference_odd_size.safetensors"));
    let inputs = vlm_encoder_inputs(&model, &reference);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let opts = CompileOptions {
        last_only: false,
        ..Default::default()
    };
    compile_vlm(&model, HeadsSource::None, &opts, &dir).unwrap();
    let mut m = CompiledModel::load(&dir, &SessionOptions::default()).unwrap();
    let features = m.encode_images(&inputs).unwrap();
    let err = rel_err(&features.data, &reference["connector.output"].f32);
    eprintln!("idefics2 30x27 onnx: image features relative error {err:.2e}");
    assert!(err <= TOL, "image features relative error {err:e}");
    m.set_images(features).unwrap();
    let ids = &reference["input_ids"].i64;
    let positions: Vec<i64> = (0..ids.len() as i64).collect();
    let state = m.empty_state(1).unwrap();
    let out = m
        .run(1, ids, &vec![1; ids.len()], &positions, state)
        .unwrap();
    let err = rel_err(&out.logits, &reference["logits"].f32);
    eprintln!("idefics2 30x27 onnx: logits relative error {err:.2e}");
    assert!(err <= TOL, "logits relative error {err:e}");
}

#[test]
fn a_changed_image_encoder_changes_the_compiled_cache_key() {
    // `eval --backend onnx` caches compiled folders by the language model's fingerprint and
    // the encoder's: two models with one language model and two encoders must not share one.
    let (model, _) = vlm_fixture("idefics3");
    let (mut other, _) = vlm_fixture("idefics3");
    assert_eq!(model.encoder_fingerprint(), other.encoder_fingerprint());
    let connector = model.encoder.connector_prefix.clone();
    let (_, t) = other
        .encoder
        .tower
        .weights
        .tensors
        .iter_mut()
        .find(|(n, _)| n.starts_with(&connector))
        .expect("a connector tensor");
    t.data[0] += 1e-3;
    assert_eq!(model.decoder.fingerprint(), other.decoder.fingerprint());
    assert_ne!(model.encoder_fingerprint(), other.encoder_fingerprint());
}

#[test]
fn run_keeps_going_past_invalid_requests() {
    // A prompts file with four invalid requests among valid ones (with and without images):
    // with --keep-going every valid request is served as it is alone, each invalid one gets
    // its own error, and the exit status says some were invalid; without it, the run stops
    // before serving anything and writes nothing.
    let tmp = tempfile::tempdir().unwrap();
    let compiled = compiled_idefics3(tmp.path());
    let image = shape_image;
    let valid = [
        serde_json::json!({"prompt": "<image>What colour is the shape?",
                           "images": [image("red-circle.png")]}),
        serde_json::json!({"prompt": "no image here"}),
        serde_json::json!({"prompt": "<image> and <image>: same colour?",
                           "images": [image("blue-square.png"), image("green-triangle.png")]}),
    ];
    let lines = [
        valid[0].to_string(),
        r#"{"prompt": "#.to_string(),
        valid[1].to_string(),
        serde_json::json!({"heads": "nope", "prompt": "x"}).to_string(),
        serde_json::json!({"prompt": "<image>?", "images": [image("missing.png")]}).to_string(),
        serde_json::json!({"prompt": "word ".repeat(20000)}).to_string(),
        valid[2].to_string(),
    ];
    let file = tmp.path().join("requests.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let json = tmp.path().join("out.json");
    let run = |file: &Path, json: &Path, keep_going: bool| {
        let mut args = vec![
            "run".to_string(),
            "--compiled".into(),
            compiled.display().to_string(),
            "--prompts-file".into(),
            file.display().to_string(),
            "--max-new-tokens".into(),
            "4".into(),
            "--json".into(),
            json.display().to_string(),
        ];
        if keep_going {
            args.push("--keep-going".into());
        }
        args
    };
    let err = fails(&run(&file, &json, false));
    assert!(err.contains("requests.jsonl line 2"), "{err}");
    assert!(!json.exists(), "nothing is written without --keep-going");
    let err = fails(&run(&file, &json, true));
    assert!(err.contains("4 of 7 requests were invalid"), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 7);
    let error = |i: usize| results[i]["error"].as_str().unwrap_or("").to_string();
    assert!(error(1).contains("line 2"), "{}", error(1));
    assert!(error(3).contains("heads `nope`"), "{}", error(3));
    assert!(error(4).contains("missing.png"), "{}", error(4));
    assert!(
        error(5).contains("longer than the model's context"),
        "{}",
        error(5)
    );
    // The valid ones answer as they do alone.
    for (i, request) in [0, 2, 6].into_iter().zip(&valid) {
        assert_eq!(error(i), "", "request {i}");
        let one = tmp.path().join(format!("alone-{i}.jsonl"));
        std::fs::write(&one, request.to_string()).unwrap();
        let alone = tmp.path().join(format!("alone-{i}.json"));
        succeeds(&run(&one, &alone, false));
        let a: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&alone).unwrap()).unwrap();
        assert_eq!(
            results[i]["completion"], a["results"][0]["completion"],
            "request {i}"
        );
    }
}
