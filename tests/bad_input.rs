//! Bad input to the command line: a clear error naming the file and the problem, a non-zero
//! exit, and no panic.
mod common;

use std::path::Path;

use common::*;

fn generate_on(model: &Path) -> String {
    fails(&[
        "generate",
        "--backend",
        "torch",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hi",
    ])
}

/// A copy of the llama fixture folder to damage.
fn fixture_copy(tmp: &Path) -> std::path::PathBuf {
    let src = fixtures_dir().join("llama");
    let dst = tmp.join("llama");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

#[test]
fn missing_model_path() {
    let err = generate_on(Path::new("/nonexistent/model.gguf"));
    assert!(
        err.contains("/nonexistent/model.gguf") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn truncated_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(default_model()).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = generate_on(&cut);
    assert!(err.contains("cut.gguf"), "{err}");
}

#[test]
fn truncated_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path());
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() - 1000]).unwrap();
    let err = generate_on(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("not a valid safetensors"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path());
    let cfg = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"llama\"", "\"gpt2\"");
    std::fs::write(&cfg, text).unwrap();
    let err = generate_on(&dir);
    assert!(
        err.contains("config.json") && err.contains("unsupported architecture \"gpt2\""),
        "{err}"
    );
}

#[test]
fn unknown_tensor_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path());
    let data = vec![0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![4], &data).unwrap();
    let bytes = safetensors::serialize([("model.embed_tokens.weight", view)], None).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    let err = generate_on(&dir);
    assert!(
        err.contains("model.embed_tokens.weight") && err.contains("unsupported tensor type I32"),
        "{err}"
    );
}

#[test]
fn wrong_tensor_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(tmp.path());
    let cfg = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    std::fs::write(&cfg, text).unwrap();
    let err = generate_on(&dir);
    assert!(
        err.contains("mlp.gate_proj.weight") && err.contains("shape"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let prompt = "word ".repeat(9000);
    let err = fails(&[
        "generate",
        "--backend",
        "torch",
        "--prompt",
        &prompt,
        "--max-new-tokens",
        "4",
    ]);
    assert!(
        err.contains("longer than the model's context of 8192"),
        "{err}"
    );
}

#[test]
fn unknown_device() {
    let err = fails(&[
        "generate",
        "--backend",
        "torch",
        "--device",
        "tpu",
        "--prompt",
        "hi",
    ]);
    assert!(err.contains("unknown device `tpu`"), "{err}");
}
