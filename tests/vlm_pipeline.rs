//! The whole pipeline on the tiny random vision-language models (tests/fixtures/vlm) through the
//! command line: `mimic train` with image demonstrations (tests/fixtures/vlm/shapes, one image
//! per pair), `mimic compile` with the heads folded in, and `mimic verify` on the task's image
//! prompts: the compiled folder (its own image encoder, embeddings and decoder) within 1e-4 of
//! the trainer's forward and identical greedy tokens, through all three attention forms. Each
//! method runs on one architecture, so that all four and all three architectures are covered.
// `train` and `verify` need libtorch: the deployment build (no `torch` feature) has neither.
#![cfg(feature = "torch")]
mod common;

use std::path::Path;

use common::*;

fn task() -> String {
    fixtures_dir()
        .join("vlm/shapes/shapes.json")
        .display()
        .to_string()
}

fn pipeline(model: &str, method: &str, shots: &str, tmp: &Path) {
    pipeline_with(model, method, shots, &[], tmp);
}

/// The pipeline with more `train` arguments; returns the compiled folder.
fn pipeline_with(
    model: &str,
    method: &str,
    shots: &str,
    train_args: &[&str],
    tmp: &Path,
) -> std::path::PathBuf {
    let model = fixtures_dir().join("vlm").join(model).display().to_string();
    let name = match train_args.len() {
        0 => method.to_string(),
        n => format!("{method}-{n}"),
    };
    let run = tmp.join(&name);
    let task_file = task();
    let mut args = vec![
        "train",
        "--model",
        &model,
        "--task",
        &task_file,
        "--test-size",
        "4",
        "--method",
        method,
        "--steps",
        "4",
        "--batch",
        "2",
        "--shots",
        shots,
        "--lr",
        "0.05",
        "--threads",
        "2",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend(train_args);
    let out = succeeds(&args);
    let heads = run.join("heads.safetensors");
    assert!(heads.is_file(), "{out}");
    let heads = heads.display().to_string();

    let compiled = tmp.join(format!("{name}-compiled"));
    let out = succeeds(&[
        "compile",
        "--model",
        &model,
        "--heads",
        &heads,
        "--out",
        compiled.to_str().unwrap(),
    ]);
    assert!(out.contains("tokens per image"), "{out}");
    // Idefics' images reach its decoder through the cross graph, the others' through the
    // embedding graph.
    let images_graph = match model.ends_with("idefics") {
        true => "cross_kv.onnx",
        false => "embed.onnx",
    };
    for f in ["model.onnx", "vision.onnx", images_graph, "mimic.json"] {
        assert!(compiled.join(f).is_file(), "{f} missing: {out}");
    }

    let json = tmp.join(format!("{name}-verify.json"));
    succeeds(&[
        "verify",
        "--model",
        &model,
        "--heads",
        &heads,
        "--task",
        &task(),
        "--prompts",
        "4",
        "--steps",
        "6",
        "--threads",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["passed"], true, "{v}");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    for r in rows {
        assert_eq!(r["identical_tokens"], 4, "{r}");
        let err = r["max_relative_error"].as_f64().unwrap();
        assert!(err <= 1e-4, "{r}");
        eprintln!(
            "{model} {method}: {} max relative error {err:.2e}",
            r["attention"]
        );
    }
    compiled
}

#[test]
fn idefics2_mimic_and_lora() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline("idefics2", "mimic", "2", tmp.path());
    pipeline("idefics2", "lora", "2", tmp.path());
}

#[test]
fn idefics3_mimic_convex() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline("idefics3", "mimic-convex", "2", tmp.path());
}

#[test]
fn llava_live() {
    // 64 image tokens per image: one demonstration keeps the teacher inside 256 positions.
    let tmp = tempfile::tempdir().unwrap();
    pipeline("llava", "live", "1", tmp.path());
}

#[test]
fn idefics_mimic_live_and_lora() {
    // Gated cross-attention reads the images; the heads sit on the self-attention layers.
    let tmp = tempfile::tempdir().unwrap();
    pipeline("idefics", "mimic", "2", tmp.path());
    pipeline("idefics", "live", "2", tmp.path());
    pipeline("idefics", "lora", "2", tmp.path());
    // LoRA on the gated cross-attention's projections too, as the published PEFT config's
    // q/k/v/o_proj suffixes adapt them: the keys' and values' updates reach the cross graph.
    let targets = "self_attn.q_proj,self_attn.v_proj,cross_attn.q_proj,cross_attn.k_proj,\
                   cross_attn.v_proj,cross_attn.o_proj";
    let compiled = pipeline_with(
        "idefics",
        "lora",
        "2",
        &["--lora-targets", targets],
        tmp.path(),
    );
    let base = tmp.path().join("base");
    let model = fixtures_dir().join("vlm/idefics").display().to_string();
    succeeds(&[
        "compile",
        "--model",
        &model,
        "--out",
        base.to_str().unwrap(),
    ]);
    let data = |dir: &Path| std::fs::read(dir.join("cross_kv.onnx.data")).unwrap();
    assert_ne!(
        data(&compiled),
        data(&base),
        "LoRA did not reach the cross graph"
    );
}

#[test]
fn heads_see_the_demonstrations_images() {
    // Trained heads change the model's answer to an image prompt: the torch backend's greedy
    // tokens with MimIC heads differ from the base model's on at least one shape image.
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures_dir().join("vlm/idefics3").display().to_string();
    let run = tmp.path().join("m");
    succeeds(&[
        "train",
        "--model",
        &model,
        "--task",
        &task(),
        "--test-size",
        "4",
        "--method",
        "mimic",
        "--steps",
        "20",
        "--batch",
        "2",
        "--shots",
        "2",
        "--lr",
        "0.1",
        "--threads",
        "2",
        "--out",
        run.to_str().unwrap(),
    ]);
    let heads = run.join("heads.safetensors").display().to_string();
    let shapes = fixtures_dir().join("vlm/shapes");
    let mut differ = 0;
    for image in ["red-circle.png", "blue-square.png", "green-triangle.png"] {
        let image = shapes.join(image).display().to_string();
        let args = |heads: Option<&str>| {
            let mut v = vec![
                "generate",
                "--backend",
                "torch",
                "--model",
                &model,
                "--image",
                &image,
                "--prompt",
                "<image>What colour is the shape?",
                "--max-new-tokens",
                "4",
            ];
            if let Some(h) = heads {
                v.extend(["--heads", h]);
            }
            succeeds(&v)
        };
        if args(None) != args(Some(&heads)) {
            differ += 1;
        }
    }
    assert!(differ > 0, "MimIC heads changed no answer");
}

#[test]
fn eval_answers_agree_across_backends() {
    // Zero-shot and in-context prompting with images (the demonstrations carry theirs): the
    // trainer's forward and the compiled folder give the same greedy answers.
    let tmp = tempfile::tempdir().unwrap();
    for name in ["llava", "idefics"] {
        let model = fixtures_dir().join("vlm").join(name).display().to_string();
        let answers = |backend: &str| {
            let json = tmp.path().join(format!("{name}-{backend}.json"));
            succeeds(&[
                "eval",
                "--model",
                &model,
                "--task",
                &task(),
                "--test-size",
                "4",
                "--method",
                "zero-shot,icl",
                "--shots",
                "1",
                "--backend",
                backend,
                "--max-new-tokens",
                "4",
                "--threads",
                "2",
                "--json",
                json.to_str().unwrap(),
            ]);
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            let generated: Vec<String> = v["answers"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|run| run.as_array().unwrap().iter())
                .map(|a| a["generated"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(generated.len(), 8, "{v}");
            generated
        };
        assert_eq!(answers("torch"), answers("onnx"), "{name}");
    }
}

#[test]
fn rices_picks_demonstrations_by_image() {
    // RICES on the shape task: the same answers on both backends, and a different prompt
    // from random demonstrations (the nearest images are not a seeded draw).
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures_dir().join("vlm/idefics3").display().to_string();
    let run = |demos: &str, backend: &str| {
        let json = tmp.path().join(format!("{demos}-{backend}.json"));
        succeeds(&[
            "eval",
            "--model",
            &model,
            "--task",
            &task(),
            "--test-size",
            "4",
            "--method",
            "icl",
            "--shots",
            "2",
            "--demos",
            demos,
            "--backend",
            backend,
            "--max-new-tokens",
            "3",
            "--threads",
            "2",
            "--json",
            json.to_str().unwrap(),
        ]);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(
            v["results"][0]["method"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap(),
            if demos == "rices" { "rices-2" } else { "icl-2" }
        );
        v["answers"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["prompt"].as_str().unwrap().to_string(),
                    a["generated"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let torch = run("rices", "torch");
    let onnx = run("rices", "onnx");
    assert_eq!(
        torch.iter().map(|x| &x.1).collect::<Vec<_>>(),
        onnx.iter().map(|x| &x.1).collect::<Vec<_>>()
    );
    let random = run("random", "torch");
    assert_ne!(
        torch.iter().map(|x| &x.0).collect::<Vec<_>>(),
        random.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
}

#[test]
fn batched_eval_answers_as_one_at_a_time() {
    // Prompts with their demonstrations' images and their own: four queries in one
    // left-padded batch answer as one by one, on both backends, greedy and with beam search
    // (every query's three beams rows of the batch).
    let tmp = tempfile::tempdir().unwrap();
    for name in ["idefics3", "idefics"] {
        let model = fixtures_dir().join("vlm").join(name).display().to_string();
        let answers = |backend: &str, beams: &str, batch: &str| {
            let json = tmp
                .path()
                .join(format!("{name}-{backend}-{beams}-{batch}.json"));
            succeeds(&[
                "eval",
                "--model",
                &model,
                "--task",
                &task(),
                "--test-size",
                "4",
                "--method",
                "zero-shot,icl",
                "--shots",
                "1",
                "--backend",
                backend,
                "--num-beams",
                beams,
                "--batch",
                batch,
                "--max-new-tokens",
                "3",
                "--threads",
                "2",
                "--json",
                json.to_str().unwrap(),
            ]);
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            v["answers"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|run| run.as_array().unwrap().iter())
                .map(|a| a["generated"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        for backend in ["onnx", "torch"] {
            for beams in ["1", "3"] {
                let batched = answers(backend, beams, "4");
                assert_eq!(batched.len(), 8);
                // Not one answer repeated: the comparison below has something to compare.
                assert!(
                    batched.iter().any(|a| a != &batched[0]),
                    "{name}, {backend}, {beams} beams: {batched:?}"
                );
                assert_eq!(
                    batched,
                    answers(backend, beams, "1"),
                    "{name}, {backend}, {beams} beams"
                );
            }
        }
    }
}
