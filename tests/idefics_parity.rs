//! Idefics (v1) on libtorch against Hugging Face transformers: a tiny random
//! `IdeficsForVisionText2Text` (tests/fixtures/vlm/idefics, written by
//! scripts/make_idefics_fixtures.py): a CLIP tower, a perceiver resampler with q/k
//! LayerNorms, and a Llama decoder with two gated cross-attention blocks (q/k RMS norms,
//! `alpha_type` float). The batch holds a prompt with three images, text before the first
//! image (tokens that read no image) and an end-of-sequence token in the middle (the tokens
//! after it read none until the next image), and a prompt with two images, left-padded.
//!
//! Checked: the processor (prompt text, token ids and the image attention rule exactly;
//! pixels within 1e-5), every part's output (relative error `max|a - b| / max|b|` at most
//! 1e-4 in float32), and eight greedy tokens per prompt with their step logits. A second
//! model (`idefics-vector`) has `alpha_type` vector and no q/k norms.
#![cfg(feature = "torch")]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use mimic_models::backend::Site;
use mimic_models::generate::greedy_with_logits;
use mimic_models::vision::ConnectorSite;
use mimic_models::vlm::idefics::ImageWalk;
use mimic_models::vlm::request::{folder_processor, image_tokens, images_inputs};
use mimic_models::vlm::{VisionLanguageModel, VlmArchitecture};
use mimic_trainer::torch_backend::{Forward, TorchLm};
use mimic_trainer::TorchVlm;
use tch::{Device, Tensor};

const TOL: f32 = 1e-4;

fn check(what: &str, got: &Tensor, want: &Ref) {
    let dims: Vec<usize> = got.size().iter().map(|&d| d as usize).collect();
    assert_eq!(dims, want.shape, "{what} shape");
    let err = rel_err(&to_vec(got), &want.f32);
    eprintln!("{what}: relative error {err:.2e}");
    assert!(err <= TOL, "{what}: relative error {err:e}");
}

fn metadata(name: &str, key: &str) -> serde_json::Value {
    let path = fixtures_dir()
        .join("vlm")
        .join(name)
        .join("reference.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let text = &meta.metadata().as_ref().unwrap()[key];
    serde_json::from_str(text).unwrap()
}

/// Each row's real (unpadded) ids.
fn rows(reference: &BTreeMap<String, Ref>) -> Vec<Vec<u32>> {
    let s = reference["input_ids"].shape[1];
    let (ids, mask) = (
        &reference["input_ids"].i64,
        &reference["attention_mask"].i64,
    );
    ids.chunks(s)
        .zip(mask.chunks(s))
        .map(|(r, m)| {
            r.iter()
                .zip(m)
                .filter(|(_, &m)| m != 0)
                .map(|(&t, _)| t as u32)
                .collect()
        })
        .collect()
}

#[test]
fn processor_matches_transformers() {
    let (model, reference) = vlm_fixture("idefics");
    assert_eq!(model.config.architecture, VlmArchitecture::Idefics);
    let dir = fixtures_dir().join("vlm/idefics");
    let processor = folder_processor(&dir).unwrap();
    let expansion = image_tokens(&model.config, &processor);
    let prompts = metadata("idefics", "prompts");
    let full = metadata("idefics", "full_texts");
    let tok = model.decoder.tokenizer.as_ref().unwrap();
    let image_id = model.config.image_token_id;
    assert_eq!(image_id, 289, "<image> read from the tokenizer");
    let eos = &model.config.text.eos_token_ids;
    let s = reference["input_ids"].shape[1];
    let n_slots = reference["image_attention_mask"].shape[2];
    let pad = |r: usize| {
        s - reference["attention_mask"].i64[r * s..][..s]
            .iter()
            .sum::<i64>() as usize
    };
    for (r, ids) in rows(&reference).iter().enumerate() {
        let text = expansion.expand(prompts[r].as_str().unwrap()).unwrap();
        let want = full[r].as_str().unwrap();
        // The processor writes BOS as text; the tokenizer's template adds it here.
        assert_eq!(format!("<s>{text}"), want, "row {r}: expanded prompt");
        assert_eq!(&tok.encode(&text).unwrap(), ids, "row {r}: token ids");
        // The image attention rule, as transformers' one-hot mask.
        let reads = ImageWalk::default().prompt(ids, image_id, eos);
        let mask = &reference["image_attention_mask"].i64[r * s * n_slots..][..s * n_slots];
        for (p, read) in reads.iter().enumerate() {
            let row = &mask[(pad(r) + p) * n_slots..][..n_slots];
            let want: Option<usize> = row.iter().position(|&x| x == 1);
            assert_eq!(*read, want, "row {r} token {p}: image read");
        }
    }
    // Pixels from the PNG files, against the processor's (real images, in prompt order).
    let names = metadata("idefics", "images");
    let paths: Vec<PathBuf> = names
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|n| dir.join(n.as_str().unwrap()))
        })
        .collect();
    let inputs = images_inputs(&model.config, &processor, &paths).unwrap();
    let want = vlm_encoder_inputs(&model, &reference);
    assert_eq!(want.images_per_prompt, vec![3, 2]);
    assert_eq!(inputs.pixel_values.shape, want.pixel_values.shape);
    let err = inputs
        .pixel_values
        .data
        .iter()
        .zip(&want.pixel_values.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("pixel values: max abs error {err:.2e}");
    assert!(err <= 1e-5, "pixel values differ by {err}");
}

fn parity(name: &str) {
    let _guard = tch::no_grad_guard();
    let dir = fixtures_dir().join("vlm").join(name);
    assert!(VisionLanguageModel::is_vlm_dir(&dir));
    let (model, reference) = vlm_fixture(name);
    let vlm = TorchVlm::new(&model, Device::Cpu).unwrap();
    let inputs = vlm_encoder_inputs(&model, &reference);
    let out = vlm.encode_images(&inputs, true).unwrap();
    if let Some(want) = reference.get("vision.embeddings") {
        let _ = want; // before pre_layrnorm: not an observed site
    }
    for k in 0..=model.config.vision.num_layers {
        let key = format!("vision.hidden_states.{k}");
        if let Some(want) = reference.get(&key) {
            check(&format!("{name}: {key}"), &out.hidden_states[k], want);
        }
    }
    if let Some(want) = reference.get("vision.last_hidden_state") {
        check(
            &format!("{name}: vision.last_hidden_state"),
            &out.connector[&ConnectorSite::Features],
            want,
        );
    }
    for i in 0..2 {
        let key = format!("connector.perceiver.blocks.{i}");
        if let Some(want) = reference.get(&key) {
            check(
                &format!("{name}: {key}"),
                &out.connector[&ConnectorSite::PerceiverLayer(i)],
                want,
            );
        }
    }
    if let Some(want) = reference.get("connector.output") {
        check(&format!("{name}: connector.output"), &out.hidden, want);
    }

    // The decoder over the padded batch, the latents read by cross-attention.
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
    let b = ids.size()[0] as usize;
    let mask_ref = &reference["attention_mask"].i64;
    let at_valid = |t: &Tensor| rows_at_valid(&to_vec(t), mask_ref, b, t.size()[2] as usize);
    let at_valid_ref = |r: &Ref| rows_at_valid(&r.f32, mask_ref, b, r.shape[2]);
    for l in 0..model.config.text.num_layers {
        let key = format!("decoder.hidden_states.{}", l + 1);
        if let Some(want) = reference.get(&key) {
            let err = rel_err(
                &at_valid(&fwd.recorded[&(l, Site::LayerOutput)]),
                &at_valid_ref(want),
            );
            eprintln!("{name}: {key} relative error {err:.2e}");
            assert!(err <= TOL, "{name}: {key} relative error {err:e}");
        }
    }
    let err = rel_err(&at_valid(&fwd.logits), &at_valid_ref(&reference["logits"]));
    eprintln!("{name}: logits relative error {err:.2e}");
    assert!(err <= TOL, "{name}: logits relative error {err:e}");

    // Each prompt alone: greedy tokens and every step's logits (incremental decoding, the
    // latents' keys and values computed once).
    let per_prompt = &inputs.images_per_prompt;
    let mut first = 0;
    for (r, prompt) in rows(&reference).iter().enumerate() {
        let Some(want) = reference.get(&format!("generate.row{r}")) else {
            continue;
        };
        let n = per_prompt[r] as i64;
        let latents = out.hidden.narrow(0, first, n);
        first += n;
        let mut lm = TorchLm::new(&vlm.decoder);
        lm.images = Some((model.config.image_token_id as i64, latents));
        let (tokens, logits) = greedy_with_logits(&mut lm, prompt, want.i64.len()).unwrap();
        let got: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        eprintln!("{name}: row {r} greedy {got:?}");
        assert_eq!(got, want.i64, "{name}: row {r} greedy tokens");
        let scores = &reference[&format!("generate.row{r}.scores")];
        let flat: Vec<f32> = logits.concat();
        let err = rel_err(&flat, &scores.f32);
        eprintln!("{name}: row {r} step logits relative error {err:.2e}");
        assert!(
            err <= TOL,
            "{name}: row {r} step logits relative error {err:e}"
        );
    }
}

#[test]
fn idefics_matches_transformers_on_libtorch() {
    parity("idefics");
}

#[test]
fn idefics_vector_gates_match_transformers_on_libtorch() {
    parity("idefics-vector");
}

#[test]
fn an_image_token_without_its_image_is_an_error() {
    let _guard = tch::no_grad_guard();
    let (model, reference) = vlm_fixture("idefics");
    let vlm = TorchVlm::new(&model, Device::Cpu).unwrap();
    let prompt = rows(&reference)[1].clone();
    let mut lm = TorchLm::new(&vlm.decoder);
    let err = greedy_with_logits(&mut lm, &prompt, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 <image> tokens but 0 images"), "{err}");
    // One image for two <image> tokens.
    let inputs = vlm_encoder_inputs(&model, &reference);
    let latents = vlm.encode_images(&inputs, false).unwrap().hidden;
    lm.images = Some((model.config.image_token_id as i64, latents.narrow(0, 0, 1)));
    let err = greedy_with_logits(&mut lm, &prompt, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 <image> tokens but 1 images"), "{err}");
}

#[test]
fn text_before_the_first_image_reads_no_image() {
    // Row 0 starts with text: transformers gives those tokens no cross-attention (the
    // parity test checks their logits); here, other images leave them exactly as they are
    // and change the tokens after the first image.
    let _guard = tch::no_grad_guard();
    let (model, reference) = vlm_fixture("idefics");
    let vlm = TorchVlm::new(&model, Device::Cpu).unwrap();
    let inputs = vlm_encoder_inputs(&model, &reference);
    let latents = vlm.encode_images(&inputs, false).unwrap().hidden;
    let prompt = rows(&reference)[0].clone();
    let first = prompt
        .iter()
        .position(|&t| t == model.config.image_token_id)
        .unwrap();
    assert!(first >= 2, "the prompt starts with text");
    let ids =
        Tensor::from_slice(&prompt.iter().map(|&t| t as i64).collect::<Vec<_>>()).view([1, -1]);
    let logits = |features: &Tensor| {
        let images = vlm.image_tokens(&ids, features).unwrap();
        let mut f = Forward::new(&ids);
        f.images = Some(images);
        to_vec(&vlm.decoder.forward(&f, None).logits)
    };
    let mine = logits(&latents.narrow(0, 0, 3));
    let others = logits(&latents.narrow(0, 2, 3));
    let vocab = model.config.text.vocab_size;
    assert_eq!(mine[..first * vocab], others[..first * vocab]);
    assert_ne!(mine[first * vocab..], others[first * vocab..]);
}

#[test]
fn a_shared_prefix_with_images_repeated_over_a_padded_batch_matches_full_sequences() {
    // What training with shared demonstrations does: the demonstrations (with their images)
    // run once, their cache is repeated for every row, and each row's query brings its own
    // image (or none), left-padded. Each row must match its whole sequence run alone.
    let _guard = tch::no_grad_guard();
    let (model, reference) = vlm_fixture("idefics");
    let vlm = TorchVlm::new(&model, Device::Cpu).unwrap();
    let inputs = vlm_encoder_inputs(&model, &reference);
    let latents = vlm.encode_images(&inputs, false).unwrap().hidden;
    let tok = model.decoder.tokenizer.as_ref().unwrap();
    let processor = folder_processor(&fixtures_dir().join("vlm/idefics")).unwrap();
    let expansion = image_tokens(&model.config, &processor);
    let ids = |text: &str, bos: bool| -> Vec<i64> {
        let mut v: Vec<i64> = tok
            .encode(&expansion.expand(text).unwrap())
            .unwrap()
            .into_iter()
            .map(|t| t as i64)
            .collect();
        if !bos {
            v.remove(0);
        }
        v
    };
    let image_id = model.config.image_token_id as i64;
    let prefix = ids(
        "Image:<image> Question: what? Answer: red\nImage:<image> Answer: blue\n",
        true,
    );
    let conts = [
        ids("Image:<image> Question: and this?", false),
        ids("Question: no image here?", false),
    ];
    let row_images = [latents.narrow(0, 2, 1), latents.narrow(0, 0, 0)];
    let prefix_images = latents.narrow(0, 0, 2);

    let mut cache = mimic_trainer::torch_backend::KvCache::default();
    let p = Tensor::from_slice(&prefix).view([1, -1]);
    let mut f = Forward::new(&p);
    f.images = Some(vlm.image_tokens(&p, &prefix_images).unwrap());
    vlm.decoder.forward(&f, Some(&mut cache));
    let mut cache = cache.repeat_batch(2);
    let width = conts.iter().map(Vec::len).max().unwrap();
    let mut flat = Vec::new();
    let mut mask = Vec::new();
    for c in &conts {
        flat.extend(std::iter::repeat_n(0i64, width - c.len()).chain(c.iter().copied()));
        mask.extend(
            std::iter::repeat_n(0i64, width - c.len()).chain(std::iter::repeat_n(1, c.len())),
        );
    }
    let batch_ids = Tensor::from_slice(&flat).view([2, -1]);
    let batch_mask = Tensor::from_slice(&mask).view([2, -1]);
    let batch_images = Tensor::cat(&row_images, 0);
    let mut f = Forward::new(&batch_ids);
    f.attention_mask = Some(&batch_mask);
    f.images = Some(vlm.image_tokens(&batch_ids, &batch_images).unwrap());
    let batched = vlm.decoder.forward(&f, Some(&mut cache)).logits;
    for (row, cont) in conts.iter().enumerate() {
        let full: Vec<i64> = [&prefix[..], cont].concat();
        let n_images = full.iter().filter(|&&t| t == image_id).count() as i64;
        let images = Tensor::cat(
            &[
                prefix_images.shallow_clone(),
                row_images[row].shallow_clone(),
            ],
            0,
        );
        assert_eq!(images.size()[0], n_images);
        let full = Tensor::from_slice(&full).view([1, -1]);
        let mut f = Forward::new(&full);
        f.images = Some(vlm.image_tokens(&full, &images).unwrap());
        let alone = vlm.decoder.forward(&f, None).logits;
        let n = cont.len() as i64;
        let want = alone.narrow(1, full.size()[1] - n, n);
        let got = batched
            .get(row as i64)
            .narrow(0, width as i64 - n, n)
            .unsqueeze(0);
        let err = rel_err(&to_vec(&got), &to_vec(&want));
        eprintln!("row {row}: relative error {err:.2e}");
        assert!(err <= TOL, "row {row}: relative error {err:e}");
    }
}
