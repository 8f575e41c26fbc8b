//! Inputs the fuzzers (fuzz/, docs/fuzzing.md) found crashing a parser, minimized, each fed
//! to that parser the way its fuzz target feeds it: every one must now be an error, not a
//! panic, a huge allocation or a hang. The inputs are in tests/fixtures/fuzz/<target>/.
use std::path::{Path, PathBuf};

use mimic_models::gguf::GgufFile;
use mimic_models::tokenizer::TextTokenizer;
use mimic_models::vlm::config::VlmConfig;
use mimic_models::{LlamaConfig, Weights};

fn input(target: &str, name: &str) -> (PathBuf, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target)
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, bytes)
}

/// What the `gguf` fuzz target does (the model before the tokenizer), stopping at the first
/// error.
fn load_gguf(path: &Path, bytes: &[u8]) -> mimic_models::Result<()> {
    let g = GgufFile::from_bytes(path, bytes)?;
    for t in &g.tensors {
        g.tensor_f32(t)?;
    }
    let cfg = LlamaConfig::from_gguf(&g)?;
    Weights::from_gguf(&g, &cfg)?;
    TextTokenizer::from_gguf(&g)?;
    Ok(())
}

/// What the `hf_config` fuzz target does: both readers must refuse the file.
fn hf_config_errors(path: &Path, bytes: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(bytes).expect("the input is JSON");
    let text = LlamaConfig::from_hf_value(&v, path).expect_err("a text config");
    let vlm = VlmConfig::from_hf_value(&v, path).expect_err("a VLM config");
    (text.to_string(), vlm.to_string())
}

/// `tokenizer`: a decoder object with a number as a key (`"decoder": {1: 2}`) made the
/// tokenizers crate panic (`expect("Helper")` in its decoder deserializer) instead of
/// returning its JSON error.
#[test]
fn tokenizer_malformed_decoder_is_an_error() {
    let (_, bytes) = input("tokenizer", "decoder_bad_key.json");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, bytes).unwrap();
    let err = TextTokenizer::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("invalid JSON"),
        "{err}"
    );
}

/// `hf_config`: `num_hidden_layers` 10^14 allocated the per-layer sliding windows (16 bytes a
/// layer) before any check.
#[test]
fn hf_config_huge_layer_count_is_an_error() {
    let (path, bytes) = input("hf_config", "huge_layer_count.json");
    let (text, vlm) = hf_config_errors(&path, &bytes);
    assert!(
        text.contains("huge_layer_count.json") && text.contains("num_hidden_layers"),
        "{text}"
    );
    // As a VLM it fails earlier (no vision config), but must fail all the same.
    assert!(vlm.contains("huge_layer_count.json"), "{vlm}");
}

/// `gguf`: `llama.block_count` 2^32 - 1 allocated 64 GB of per-layer settings in
/// `LlamaConfig::from_gguf`.
#[test]
fn gguf_huge_block_count_is_an_error() {
    let (path, bytes) = input("gguf", "huge_block_count.gguf");
    let err = load_gguf(&path, &bytes).unwrap_err().to_string();
    assert!(
        err.contains("huge_block_count.gguf") && err.contains("llama.block_count"),
        "{err}"
    );
}

/// `gguf`: a 0-dimensional `blk.0.attn_q.weight` made `Weights::from_gguf` index `shape[0]`
/// of an empty shape (the rotary un-permutation of Llama's q/k rows).
#[test]
fn gguf_scalar_projection_is_an_error() {
    let (path, bytes) = input("gguf", "scalar_q_proj.gguf");
    let err = load_gguf(&path, &bytes).unwrap_err().to_string();
    assert!(
        err.contains("scalar_q_proj.gguf") && err.contains("blk.0.attn_q.weight"),
        "{err}"
    );
}

/// Loads a tokenizer.json from the fuzz fixtures as mimic loads one, then encodes with it
/// (where the tokenizers crate used to panic).
fn load_tokenizer(name: &str) -> mimic_models::Result<()> {
    let (_, bytes) = input("tokenizer", name);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, bytes).unwrap();
    let tok = TextTokenizer::from_file(&path)?;
    tok.encode("a")?;
    Ok(())
}

/// `tokenizer`: a template post-processor naming a special token its `special_tokens` table
/// lacks; the tokenizers crate does not check that on reading and panicked at the first encode
/// (`no entry found for key`).
#[test]
fn tokenizer_template_missing_special_token_is_an_error() {
    let err = load_tokenizer("template_missing_special.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("\"<s>\""),
        "{err}"
    );
}

/// `tokenizer`: a single-sequence template that uses `$B` indexed a second sequence that a
/// single encode does not have (index out of bounds in the tokenizers crate).
#[test]
fn tokenizer_single_template_with_second_sequence_is_an_error() {
    let err = load_tokenizer("template_single_b.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("$B"),
        "{err}"
    );
}

/// `image_config` (found after the fuzzing, by hand): a size read from
/// `preprocessor_config.json` sized the resized image before any check: `longest_edge`
/// 3,000,000 asked for a 36.9 GB buffer and aborted the process. Every image side is now at
/// most `MAX_IMAGE_EDGE` pixels.
#[test]
fn image_config_huge_size_is_an_error() {
    use mimic_models::image::ImageProcessor;
    let config = |size: &str| {
        format!(
            r#"{{"image_processor_type": "Idefics3ImageProcessor", "do_image_splitting": false,
               "do_pad": true, "size": {size}, "max_image_size": {{"longest_edge": 32}}}}"#
        )
    };
    let path = Path::new("preprocessor_config.json");
    let err = match ImageProcessor::from_json(&config(r#"{"longest_edge": 3000000}"#), path) {
        Ok(_) => panic!("a side of 3,000,000 pixels was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("preprocessor_config.json") && err.contains("3000000 pixels"),
        "{err}"
    );
    // The largest allowed side still reads.
    ImageProcessor::from_json(&config(r#"{"longest_edge": 8192}"#), path).unwrap();
}
