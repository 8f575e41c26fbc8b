//! Idefics (v1) compiled to its three graphs (image encoder with the perceiver, the cross
//! graph computing every gated block's keys and values once per prompt, and the decoder over
//! `input_ids` with each token's image slot) and run by ONNX Runtime, against Hugging Face
//! transformers on the tiny random models of tests/fixtures/vlm/idefics{,-vector} (written by
//! scripts/make_idefics_fixtures.py; tests/idefics_parity.rs checks libtorch on the same
//! references). For each attention form: the latents and the logits at every real position
//! of the padded batch within 1e-4 relative (`max|a - b| / max|b|`, float32), and each
//! prompt's eight greedy tokens identical to transformers', with their step logits. A decoder
//! compiled to project the latents in every pass (`--cross-kv every-step`) too.
mod common;

use common::*;
use mimic_compiler::cross::CrossKv;
use mimic_compiler::{compile_vlm, AttentionImpl, CompileOptions, HeadsSource};
use mimic_models::contract::Contract;
use mimic_models::generate::greedy_with_logits;
use mimic_models::HostTensor;
use mimic_runtime::{CompiledModel, OnnxLm, SessionOptions};

const TOL: f32 = 1e-4;

fn onnx_parity(name: &str, forms: &[(AttentionImpl, CrossKv)]) {
    let (model, reference) = vlm_fixture(name);
    let inputs = vlm_encoder_inputs(&model, &reference);
    let tmp = tempfile::tempdir().unwrap();
    for &(attention, cross_kv) in forms {
        let form = format!("{} {}", attention.name(), cross_kv.name());
        let dir = tmp.path().join(form.replace(' ', "-"));
        let opts = CompileOptions {
            attention,
            last_only: false,
            cross_kv,
            ..Default::default()
        };
        let contract = compile_vlm(&model, HeadsSource::None, &opts, &dir).unwrap();
        let vision = contract.vision.as_ref().expect("a vision contract");
        assert_eq!(vision.embed_model, None);
        assert_eq!(Contract::read(&dir).unwrap(), contract);
        for file in ["model.onnx", "vision.onnx"] {
            assert!(dir.join(file).is_file(), "{name}: {file} missing");
        }
        // Keys and values once per prompt come from the cross graph; every step, from the
        // latents inside the decoder.
        let once = cross_kv == CrossKv::Inputs;
        assert_eq!(dir.join("cross_kv.onnx").is_file(), once);
        assert_eq!(vision.cross_kv_model.is_some(), once);
        assert!(!dir.join("embed.onnx").exists());
        let mut m = CompiledModel::load(&dir, &SessionOptions::default()).unwrap();
        assert!(m.takes_images());

        let latents = m.encode_images(&inputs).unwrap();
        if let Some(want) = reference.get("connector.output") {
            assert_eq!(latents.shape, want.shape);
            let err = rel_err(&latents.data, &want.f32);
            eprintln!("{name} onnx: latents relative error {err:.2e}");
            assert!(err <= TOL, "{name}: latents relative error {err:e}");
        }

        // The padded batch, each row reading its own images.
        let ids = &reference["input_ids"].i64;
        let mask = &reference["attention_mask"].i64;
        let positions = &reference["position_ids"].i64;
        let batch = reference["input_ids"].shape[0];
        m.set_images(latents.clone()).unwrap();
        let state = m.empty_state(batch).unwrap();
        let out = m.run(batch, ids, mask, positions, state).unwrap();
        let vocab = model.config.text.vocab_size;
        let err = rel_err(
            &rows_at_valid(&out.logits, mask, batch, vocab),
            &rows_at_valid(&reference["logits"].f32, mask, batch, vocab),
        );
        eprintln!("{name} onnx {form}: logits relative error {err:.2e}");
        assert!(
            err <= TOL,
            "{name} {attention:?}: logits relative error {err:e}"
        );

        // Each prompt alone, greedy, with every step's logits.
        let seq = reference["input_ids"].shape[1];
        let per_image = latents.data.len() / latents.shape[0];
        let mut first = 0;
        for (r, &n) in inputs.images_per_prompt.iter().enumerate() {
            let Some(want) = reference.get(&format!("generate.row{r}")) else {
                continue;
            };
            let prompt: Vec<u32> = ids[r * seq..(r + 1) * seq]
                .iter()
                .zip(&mask[r * seq..(r + 1) * seq])
                .filter(|(_, &m)| m != 0)
                .map(|(&t, _)| t as u32)
                .collect();
            let mut shape = latents.shape.clone();
            shape[0] = n;
            let data = latents.data[first * per_image..(first + n) * per_image].to_vec();
            first += n;
            m.set_images(HostTensor::new(shape, data)).unwrap();
            let mut lm = OnnxLm::new(&mut m);
            let (tokens, logits) = greedy_with_logits(&mut lm, &prompt, want.i64.len()).unwrap();
            let got: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
            assert_eq!(got, want.i64, "{name} {attention:?}: row {r} greedy tokens");
            let scores = &reference[&format!("generate.row{r}.scores")];
            let err = rel_err(&logits.concat(), &scores.f32);
            eprintln!("{name} onnx {form}: row {r} step logits relative error {err:.2e}");
            assert!(
                err <= TOL,
                "{name} {attention:?}: row {r} step logits {err:e}"
            );
        }
    }
}

#[test]
fn idefics_onnx_matches_transformers() {
    let mut forms: Vec<_> = AttentionImpl::ALL
        .iter()
        .map(|&a| (a, CrossKv::Inputs))
        .collect();
    forms.push((AttentionImpl::Fused, CrossKv::Recomputed));
    onnx_parity("idefics", &forms);
}

#[test]
fn idefics_vector_gates_onnx_match_transformers() {
    onnx_parity(
        "idefics-vector",
        &[
            (AttentionImpl::Fused, CrossKv::Inputs),
            (AttentionImpl::Unfused, CrossKv::Recomputed),
        ],
    );
}

#[test]
fn onnx_refuses_an_image_token_without_its_image_and_text_before_it_reads_none() {
    let (model, reference) = vlm_fixture("idefics");
    let inputs = vlm_encoder_inputs(&model, &reference);
    let tmp = tempfile::tempdir().unwrap();
    let opts = CompileOptions {
        last_only: false,
        ..Default::default()
    };
    compile_vlm(&model, HeadsSource::None, &opts, tmp.path()).unwrap();
    let mut m = CompiledModel::load(tmp.path(), &SessionOptions::default()).unwrap();
    let latents = m.encode_images(&inputs).unwrap();
    let seq = reference["input_ids"].shape[1];
    let ids: Vec<u32> = reference["input_ids"].i64[..seq]
        .iter()
        .map(|&t| t as u32)
        .collect();
    let state = m.empty_state(1).unwrap();
    let err = m.step(&ids, state).err().unwrap().to_string();
    assert!(err.contains("3 <image> tokens but 0 images"), "{err}");

    // Row 0 with its own images, and with others: the text before the first image is the
    // same, the rest is not.
    let per_image = latents.data.len() / latents.shape[0];
    let mut logits = |from: usize| {
        let mut shape = latents.shape.clone();
        shape[0] = 3;
        let data = latents.data[from * per_image..(from + 3) * per_image].to_vec();
        m.set_images(HostTensor::new(shape, data)).unwrap();
        let state = m.empty_state(1).unwrap();
        m.step(&ids, state).unwrap().logits
    };
    let (mine, others) = (logits(0), logits(2));
    let first = ids
        .iter()
        .position(|&t| t == model.config.image_token_id)
        .unwrap();
    let vocab = model.config.text.vocab_size;
    assert_eq!(mine[..first * vocab], others[..first * vocab]);
    assert_ne!(mine[first * vocab..], others[first * vocab..]);
}

#[test]
fn idefics_image_encoder_onnx_matches_transformers_per_part() {
    // The CLIP tower's every hidden state (class token first, pre_layrnorm applied, no
    // post_layernorm) and the perceiver's latents, from the encoder graph exposing them.
    use mimic_compiler::vision::write_image_encoder;
    use mimic_runtime::VisionModel;
    let (model, reference) = vlm_fixture("idefics");
    let inputs = vlm_encoder_inputs(&model, &reference);
    let tmp = tempfile::tempdir().unwrap();
    write_image_encoder(&model.encoder, true, tmp.path()).unwrap();
    let mut m = VisionModel::load(tmp.path(), &SessionOptions::default()).unwrap();
    let out = m.run(&inputs.pixel_values, None).unwrap();
    let layers = model.config.vision.num_layers;
    assert_eq!(out.hidden_states.len(), layers + 1);
    for (k, h) in out.hidden_states.iter().enumerate() {
        let want = &reference[&format!("vision.hidden_states.{k}")];
        assert_eq!(h.shape, want.shape);
        let err = rel_err(&h.data, &want.f32);
        eprintln!("idefics onnx: vision.hidden_states.{k} relative error {err:.2e}");
        assert!(err <= TOL, "vision.hidden_states.{k}: {err:e}");
    }
    let err = rel_err(&out.hidden.data, &reference["connector.output"].f32);
    eprintln!("idefics onnx: connector.output relative error {err:.2e}");
    assert!(err <= TOL, "connector.output: {err:e}");
}
