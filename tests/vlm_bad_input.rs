//! Bad input to the vision-language models through the command line: an image that does not
//! decode, a truncated image, more or fewer images than `<image>` placeholders, an unsupported
//! vision config key, a task whose pair names a missing image, and heads made for another
//! model. Each gives a clear error naming the file or the counts, a non-zero exit, no panic,
//! and nothing half-written.
mod common;

use std::path::{Path, PathBuf};

use common::*;

fn model(name: &str) -> String {
    fixtures_dir().join("vlm").join(name).display().to_string()
}

fn image(name: &str) -> String {
    fixtures_dir()
        .join("vlm/shapes")
        .join(name)
        .display()
        .to_string()
}

fn generate(model: &str, images: &[&str], prompt: &str) -> String {
    let mut args = vec!["generate", "--model", model, "--prompt", prompt];
    for i in images {
        args.extend(["--image", i]);
    }
    args.extend(["--max-new-tokens", "2"]);
    fails(&args)
}

/// A copy of a fixture model folder, to damage.
fn fixture_copy(name: &str, tmp: &Path) -> PathBuf {
    let src = fixtures_dir().join("vlm").join(name);
    let dst = tmp.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if e.file_name() != "reference.safetensors" {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    dst
}

#[test]
fn an_image_that_does_not_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("notes.png");
    std::fs::write(&bad, "these are notes, not pixels").unwrap();
    let err = generate(&model("idefics3"), &[bad.to_str().unwrap()], "<image>hi");
    assert!(err.contains("notes.png"), "{err}");
}

#[test]
fn a_truncated_image() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(image("red-circle.png")).unwrap();
    let cut = tmp.path().join("cut.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = generate(&model("llava"), &[cut.to_str().unwrap()], "<image>hi");
    assert!(err.contains("cut.png"), "{err}");
}

#[test]
fn images_and_placeholders_must_agree() {
    let red = image("red-circle.png");
    let blue = image("blue-square.png");
    let err = generate(&model("idefics2"), &[&red, &blue], "<image>one placeholder");
    assert!(err.contains("1 <image> placeholders but 2 images"), "{err}");
    let err = generate(&model("idefics2"), &[&red], "<image> and <image>");
    assert!(err.contains("2 <image> placeholders but 1 images"), "{err}");
    let err = generate(&model("idefics2"), &[], "<image> without an image");
    assert!(err.contains("no --image"), "{err}");
    // Idefics: an <image> token with no image, on both backends.
    for backend in ["onnx", "torch"] {
        let err = fails(&[
            "generate",
            "--backend",
            backend,
            "--model",
            &model("idefics"),
            "--prompt",
            "<image> and <image>",
            "--image",
            &red,
            "--max-new-tokens",
            "2",
        ]);
        assert!(
            err.contains("2 <image> placeholders but 1 images"),
            "{backend}: {err}"
        );
    }
    // A text model takes no images.
    let text = fixtures_dir().join("llama").display().to_string();
    let err = generate(&text, &[&red], "hi");
    assert!(err.contains("text model"), "{err}");
}

#[test]
fn an_unsupported_vision_config_key() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, key, value) in [
        (
            "llava",
            "vision_feature_select_strategy",
            serde_json::json!("cls"),
        ),
        ("llava", "vision_feature_layer", serde_json::json!([-2, -5])),
        ("idefics3", "scale_factor", serde_json::json!(3)),
        // transformers knows only float and vector gates.
        ("idefics", "alpha_type", serde_json::json!("matrix")),
        ("idefics", "cross_layer_interval", serde_json::json!(0)),
    ] {
        let dir = fixture_copy(name, tmp.path());
        let path = dir.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config[key] = value;
        std::fs::write(&path, config.to_string()).unwrap();
        let out = tmp.path().join(format!("{name}-{key}-out"));
        let err = fails(&[
            "compile",
            "--model",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(err.contains("config.json") && err.contains(key), "{err}");
        assert!(!out.exists(), "{} was written", out.display());
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // A vision hidden_act the tower does not run.
    let dir = fixture_copy("idefics2", tmp.path());
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["vision_config"]["hidden_act"] = serde_json::json!("quick_gelu");
    std::fs::write(&path, config.to_string()).unwrap();
    let err = generate(
        dir.to_str().unwrap(),
        &[&image("red-circle.png")],
        "<image>",
    );
    assert!(
        err.contains("config.json") && err.contains("quick_gelu"),
        "{err}"
    );
}

#[test]
fn a_task_with_a_missing_image() {
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("task.json");
    let pairs = serde_json::json!([
        {"input": "<image>What colour?", "output": "red", "images": ["red.png"]},
        {"input": "<image>What colour?", "output": "blue", "images": ["blue.png"]},
    ]);
    std::fs::write(&task, pairs.to_string()).unwrap();
    let err = fails(&[
        "verify",
        "--model",
        &model("idefics3"),
        "--task",
        task.to_str().unwrap(),
    ]);
    assert!(
        err.contains("task.json") && err.contains("red.png"),
        "{err}"
    );
    // A pair whose placeholders and images disagree.
    let pairs = serde_json::json!([
        {"input": "What colour?", "output": "red", "images": [image("red-circle.png")]},
        {"input": "<image>What colour?", "output": "blue", "images": [image("blue-square.png")]},
    ]);
    std::fs::write(&task, pairs.to_string()).unwrap();
    let err = fails(&[
        "verify",
        "--model",
        &model("idefics3"),
        "--task",
        task.to_str().unwrap(),
    ]);
    assert!(err.contains("pair 0 has 0 <image> placeholders"), "{err}");
}

#[test]
fn heads_made_for_another_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    succeeds(&[
        "train",
        "--model",
        &model("idefics2"),
        "--task",
        fixtures_dir()
            .join("vlm/shapes/shapes.json")
            .to_str()
            .unwrap(),
        "--test-size",
        "4",
        "--steps",
        "1",
        "--batch",
        "1",
        "--shots",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    let heads = run.join("heads.safetensors");
    let out = tmp.path().join("compiled");
    let err = fails(&[
        "compile",
        "--model",
        &model("idefics3"),
        "--heads",
        heads.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("heads.safetensors"), "{err}");
    assert!(!out.exists(), "{} was written", out.display());
}

#[test]
fn lora_on_cross_attention_needs_gated_blocks() {
    // Idefics has gated cross-attention blocks; Idefics3 has none to adapt.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let task = fixtures_dir().join("vlm/shapes/shapes.json");
    let err = fails(&[
        "train",
        "--model",
        &model("idefics3"),
        "--task",
        task.to_str().unwrap(),
        "--method",
        "lora",
        "--lora-targets",
        "self_attn.q_proj,cross_attn.k_proj",
        "--steps",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("cross_attn.k_proj") && err.contains("gated cross-attention"),
        "{err}"
    );
    assert!(!out.join("heads.safetensors").exists());
}
