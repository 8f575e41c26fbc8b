//! `mimic compile` and `mimic run` on bad input: heads that do not fit the model, an unknown
//! method, an output folder that cannot be written, a corrupt ONNX file. Each gives a clear
//! error naming the file and the problem, a non-zero exit, and leaves nothing half-written.
// These tests drive libtorch directly: the deployment build (no `torch` feature) has none.
#![cfg(feature = "torch")]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use mimic_models::Model;
use mimic_trainer::shift::{LoraConfig, Method, Shift};
use tch::Device;

/// `mimic compile --model MODEL EXTRA.. --out OUT`, as arguments.
fn compile(model: &Path, extra: &[&str], out: &Path) -> Vec<String> {
    let mut args = vec![
        "compile".into(),
        "--model".into(),
        model.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    args
}

fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// Heads of `method` for `model`, written with `edit` applied to the metadata and tensors.
fn heads_file(
    model: &Model,
    method: Method,
    path: &Path,
    edit: impl FnOnce(&mut HashMap<String, String>, &mut Vec<(String, tch::Tensor)>),
) -> PathBuf {
    let shift = Shift::init(
        method,
        &model.config,
        &LoraConfig::default(),
        Device::Cpu,
        1,
    );
    let mut meta = shift.metadata(&model.fingerprint(), &model.config);
    let mut tensors = shift.named_tensors();
    edit(&mut meta, &mut tensors);
    let bytes = mimic_trainer::safetensors_bytes(&tensors, meta).unwrap();
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

/// No output folder and no temporary leftovers beside it.
fn nothing_written(out: &Path) {
    assert!(!out.exists(), "{} was written", out.display());
    let parent = out.parent().unwrap();
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            assert!(
                !name.contains(".partial"),
                "leftover {name} in {}",
                parent.display()
            );
        }
    }
}

#[test]
fn compile_rejects_heads_made_for_another_model() {
    let tmp = tempfile::tempdir().unwrap();
    let llama = Model::open(&fixture("llama")).unwrap();
    let heads = heads_file(
        &llama,
        Method::Mimic,
        &tmp.path().join("h.safetensors"),
        |_, _| {},
    );
    let out = tmp.path().join("out");
    let qwen = fixture("qwen2");
    let err = fails(&compile(&qwen, &["--heads", heads.to_str().unwrap()], &out));
    assert!(
        err.contains("h.safetensors") && err.contains("fingerprint"),
        "{err}"
    );
    nothing_written(&out);
}

#[test]
fn compile_rejects_heads_of_the_wrong_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Model::open(&fixture("llama")).unwrap();
    let heads = heads_file(
        &model,
        Method::MimicConvex,
        &tmp.path().join("h.safetensors"),
        |_, tensors| {
            for (name, t) in tensors.iter_mut() {
                if name == "mimic.u" {
                    *t = t.narrow(2, 0, 3);
                }
            }
        },
    );
    let out = tmp.path().join("out");
    let err = fails(&compile(
        &fixture("llama"),
        &["--heads", heads.to_str().unwrap()],
        &out,
    ));
    assert!(
        err.contains("h.safetensors") && err.contains("mimic.u") && err.contains("shape"),
        "{err}"
    );
    nothing_written(&out);
}

#[test]
fn compile_rejects_an_unknown_method() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Model::open(&fixture("llama")).unwrap();
    let heads = heads_file(
        &model,
        Method::Mimic,
        &tmp.path().join("h.safetensors"),
        |meta, _| {
            meta.insert("mimic.method".into(), "prefix-tuning".into());
        },
    );
    let out = tmp.path().join("out");
    let llama = fixture("llama");
    let err = fails(&compile(
        &llama,
        &["--heads", heads.to_str().unwrap()],
        &out,
    ));
    assert!(
        err.contains("h.safetensors") && err.contains("unknown method `prefix-tuning`"),
        "{err}"
    );
    nothing_written(&out);
    // And on the command line, where the values are listed.
    let err = fails(&compile(
        &llama,
        &["--heads-as-inputs", "--method", "prefix-tuning"],
        &out,
    ));
    assert!(
        err.contains("'prefix-tuning'") && err.contains("mimic-convex"),
        "{err}"
    );
    // LoRA merges into the weights: it cannot be an input.
    let err = fails(&compile(
        &llama,
        &["--heads-as-inputs", "--method", "lora"],
        &out,
    ));
    assert!(err.contains("LoRA"), "{err}");
    nothing_written(&out);
}

#[test]
fn compile_to_a_folder_that_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let out = blocker.join("compiled");
    let err = fails(&compile(&fixture("llama"), &[], &out));
    assert!(err.contains("a-file"), "{err}");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"not a folder");
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["a-file"], "leftovers: {names:?}");
}

#[test]
fn run_rejects_a_corrupt_onnx_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("compiled");
    succeeds(&compile(&fixture("llama"), &[], &out));
    std::fs::write(out.join("model.onnx"), b"\x08\x07garbage, not protobuf").unwrap();
    let err = fails(&[
        "run",
        "--compiled",
        out.to_str().unwrap(),
        "--prompt",
        "hello",
    ]);
    assert!(
        err.contains("model.onnx") && err.contains("cannot load"),
        "{err}"
    );
}

#[test]
fn run_checks_heads_against_the_compiled_model() {
    let tmp = tempfile::tempdir().unwrap();
    let llama = fixture("llama");
    let model = Model::open(&llama).unwrap();
    let convex = heads_file(
        &model,
        Method::MimicConvex,
        &tmp.path().join("convex.safetensors"),
        |_, _| {},
    );
    // A graph with folded heads takes no heads per request.
    let folded = tmp.path().join("folded");
    succeeds(&compile(
        &llama,
        &["--heads", convex.to_str().unwrap()],
        &folded,
    ));
    let spec = format!("task={}", convex.display());
    let err = fails(&[
        "run",
        "--compiled",
        folded.to_str().unwrap(),
        "--heads",
        &spec,
        "--prompt",
        "task:hello",
    ]);
    assert!(err.contains("--heads-as-inputs"), "{err}");
    // A graph taking additive heads refuses convex ones.
    let inputs = tmp.path().join("inputs");
    succeeds(&compile(
        &llama,
        &["--heads-as-inputs", "--method", "mimic"],
        &inputs,
    ));
    let err = fails(&[
        "run",
        "--compiled",
        inputs.to_str().unwrap(),
        "--heads",
        &spec,
        "--prompt",
        "task:hello",
    ]);
    assert!(
        err.contains("convex.safetensors") && err.contains("mimic-convex"),
        "{err}"
    );
    // Heads made for another model.
    let qwen = Model::open(&fixture("qwen2")).unwrap();
    let other = heads_file(
        &qwen,
        Method::Mimic,
        &tmp.path().join("other.safetensors"),
        |_, _| {},
    );
    let spec = format!("task={}", other.display());
    let err = fails(&[
        "run",
        "--compiled",
        inputs.to_str().unwrap(),
        "--heads",
        &spec,
        "--prompt",
        "task:hello",
    ]);
    assert!(
        err.contains("other.safetensors") && err.contains("fingerprint"),
        "{err}"
    );
}

#[test]
fn a_compiled_folder_moved_elsewhere_runs_and_records_no_path() {
    // The default model (its GGUF blocks kept) and a vision-language model, compiled and moved
    // to another folder: they generate as before, and mimic.json names no path of the machine
    // that built them.
    let tmp = tempfile::tempdir().unwrap();
    let image = fixtures_dir().join("vlm/shapes/red-circle.png");
    let image = image.to_str().unwrap().to_string();
    for (name, model, prompt, images) in [
        ("text", default_model(), "The capital of France is", vec![]),
        (
            "idefics",
            fixture("vlm/idefics"),
            "<image> What is it?",
            vec![image],
        ),
    ] {
        let built = tmp.path().join(format!("{name}-built"));
        succeeds(&compile(&model, &[], &built));
        let generate = |dir: &Path| {
            let mut args = vec![
                "generate".to_string(),
                "--compiled".into(),
                dir.display().to_string(),
                "--prompt".into(),
                prompt.into(),
                "--max-new-tokens".into(),
                "4".into(),
            ];
            for i in &images {
                args.extend(["--image".into(), i.clone()]);
            }
            succeeds(&args)
        };
        let before = generate(&built);
        let moved = tmp.path().join("elsewhere").join(name);
        std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
        std::fs::rename(&built, &moved).unwrap();
        assert_eq!(generate(&moved), before, "{name}");
        let contract = std::fs::read_to_string(moved.join("mimic.json")).unwrap();
        for path in [
            tmp.path(),
            &fixtures_dir(),
            default_model().parent().unwrap(),
        ] {
            let p = path.display().to_string();
            assert!(!contract.contains(&p), "{name}: mimic.json names {p}");
        }
    }
}
