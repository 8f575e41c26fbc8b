//! `mimic train` and `mimic eval` end to end on the default model with tiny settings:
//! resuming reproduces an uninterrupted run, the NaN guard keeps the last good checkpoint,
//! and bad input fails cleanly.
mod common;

use common::{write_task, PAIRS};

use mimic_models::weights::read_safetensors_with_metadata;
use std::process::{Command, Output};

fn mimic(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mimic"))
        .args(args)
        .output()
        .expect("run mimic")
}

fn ok(args: &[&str]) -> String {
    let out = mimic(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mimic {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn fails(args: &[&str]) -> String {
    let out = mimic(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "mimic {args:?} succeeded");
    assert!(
        !stderr.contains("panicked"),
        "mimic {args:?} panicked:\n{stderr}"
    );
    stderr
}

fn train_args<'a>(task: &'a str, out: &'a str, method: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--task",
        task,
        "--method",
        method,
        "--out",
        out,
        "--steps",
        "4",
        "--batch",
        "2",
        "--shots",
        "2",
        "--test-size",
        "4",
        "--checkpoint-every",
        "1",
        "--threads",
        "2",
    ]
}

#[test]
fn resumed_training_ends_with_the_same_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let task = write_task(tmp.path(), &PAIRS);
    let task = task.to_str().unwrap();
    // Mixed precision for one, float32 for the other: both must resume bit-identically.
    for (method, precision) in [("mimic", "bf16"), ("lora", "f32")] {
        let whole = tmp.path().join(format!("whole-{method}"));
        let split = tmp.path().join(format!("split-{method}"));
        let mut args = train_args(task, whole.to_str().unwrap(), method);
        args.extend(["--precision", precision]);
        ok(&args);
        let mut first = train_args(task, split.to_str().unwrap(), method);
        first.extend(["--precision", precision, "--stop-after", "2"]);
        let out = ok(&first);
        assert!(out.contains("stopped at step 2 of 4"), "{out}");
        assert!(!split.join("heads.safetensors").exists());
        let mut second = train_args(task, split.to_str().unwrap(), method);
        second.extend(["--precision", precision, "--resume"]);
        ok(&second);
        let read = |p: &std::path::Path| read_safetensors_with_metadata(p).unwrap().0;
        let a = read(&whole.join("heads.safetensors"));
        let b = read(&split.join("heads.safetensors"));
        assert_eq!(a.len(), b.len());
        for (name, t) in &a {
            assert_eq!(t.shape, b[name].shape, "{method}: {name} shape");
            let d = t
                .data
                .iter()
                .zip(&b[name].data)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert_eq!(d, 0.0, "{method}: {name} differs by {d} after resuming");
        }
        for f in ["log.json", "loss.svg", "checkpoint.safetensors"] {
            assert!(whole.join(f).is_file(), "{f} missing");
        }
    }
}

#[test]
fn nan_guard_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let task = write_task(tmp.path(), &PAIRS);
    let out = tmp.path().join("run");
    let mut args = train_args(task.to_str().unwrap(), out.to_str().unwrap(), "mimic");
    args.extend(["--poison-step", "3"]);
    let err = fails(&args);
    assert!(
        err.contains("loss is NaN at step 3") && err.contains("checkpoint.safetensors"),
        "{err}"
    );
    let (_, meta) = read_safetensors_with_metadata(&out.join("checkpoint.safetensors")).unwrap();
    assert_eq!(meta["train.step"], "2");
    assert!(!out.join("heads.safetensors").exists());
}

#[test]
fn eval_reports_a_table_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let task = write_task(tmp.path(), &PAIRS);
    let json = tmp.path().join("eval.json");
    let out = ok(&[
        "eval",
        "--task",
        task.to_str().unwrap(),
        "--method",
        "zero-shot,icl",
        "--shots",
        "2",
        "--test-size",
        "4",
        "--json",
        json.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    assert!(out.contains("| task") && out.contains("icl-2"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(v["results"][0]["queries"], 4);
    // Each accuracy with its 95% interval around it, and the two methods compared pairwise.
    for r in v["results"].as_array().unwrap() {
        let x = r["exact_match"].as_f64().unwrap();
        let (lo, hi) = (
            r["exact_match_interval"][0].as_f64().unwrap(),
            r["exact_match_interval"][1].as_f64().unwrap(),
        );
        assert!(lo <= x && x <= hi && hi - lo > 0.3, "{r}");
    }
    let paired = &v["paired_exact_match"][0];
    assert_eq!(
        (paired["a"].as_str(), paired["b"].as_str()),
        (Some("icl-2"), Some("zero-shot"))
    );
    let p = paired["p_value"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0, "{paired}");
    assert!(out.contains("McNemar"), "{out}");
}

#[test]
fn bad_task_files() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let err = fails(&["train", "--task", empty.to_str().unwrap(), "--steps", "1"]);
    assert!(
        err.contains("empty.json") && err.contains("0 pairs"),
        "{err}"
    );

    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "[{\"input\": \"a\"").unwrap();
    let err = fails(&["eval", "--task", broken.to_str().unwrap()]);
    assert!(
        err.contains("broken.json") && err.contains("not a JSON list"),
        "{err}"
    );

    let missing = tmp.path().join("missing.json");
    let err = fails(&["train", "--task", missing.to_str().unwrap()]);
    assert!(err.contains("missing.json"), "{err}");
}

#[test]
fn more_shots_than_the_training_part_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let task = write_task(tmp.path(), &PAIRS[..6]);
    let task = task.to_str().unwrap();
    let args = |demos| {
        [
            "train",
            "--task",
            task,
            "--shots",
            "8",
            "--test-size",
            "2",
            "--steps",
            "1",
            "--demos",
            demos,
        ]
    };
    let err = fails(&args("per-query"));
    assert!(
        err.contains("8 shots asked for but the training part holds 3 other pairs"),
        "{err}"
    );
    // Shared demonstrations must also leave out the batch's (default 4) queries.
    let err = fails(&args("shared"));
    assert!(
        err.contains(
            "8 shots asked for but, besides a batch's 4 queries, the training part holds 0 pairs"
        ),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "word ".repeat(3000);
    let pairs: Vec<(&str, &str)> = PAIRS.iter().map(|(_, o)| (long.as_str(), *o)).collect();
    let task = write_task(tmp.path(), &pairs);
    let err = fails(&[
        "train",
        "--task",
        task.to_str().unwrap(),
        "--shots",
        "2",
        "--test-size",
        "4",
        "--steps",
        "1",
    ]);
    assert!(
        err.contains("longer than the model's context of 8192"),
        "{err}"
    );
    let err = fails(&[
        "eval",
        "--task",
        task.to_str().unwrap(),
        "--method",
        "icl",
        "--shots",
        "3",
        "--test-size",
        "4",
    ]);
    assert!(
        err.contains("longer than the model's context of 8192"),
        "{err}"
    );
}

#[test]
fn heads_made_for_another_model() {
    let tmp = tempfile::tempdir().unwrap();
    let task = write_task(tmp.path(), &PAIRS);
    let run = tmp.path().join("run");
    let mut args = train_args(task.to_str().unwrap(), run.to_str().unwrap(), "mimic");
    args[8] = "1"; // one step
    ok(&args);
    let heads = run.join("heads.safetensors");
    let fixture = common::fixtures_dir().join("llama");
    let err = fails(&[
        "eval",
        "--task",
        task.to_str().unwrap(),
        "--method",
        "heads",
        "--heads",
        heads.to_str().unwrap(),
        "--model",
        fixture.to_str().unwrap(),
    ]);
    assert!(
        err.contains("heads.safetensors") && err.contains("made for a model with fingerprint"),
        "{err}"
    );

    let not_heads = common::fixtures_dir().join("llama/reference.safetensors");
    let err = fails(&[
        "eval",
        "--task",
        task.to_str().unwrap(),
        "--method",
        "heads",
        "--heads",
        not_heads.to_str().unwrap(),
    ]);
    assert!(
        err.contains("reference.safetensors") && err.contains("not a mimic heads file"),
        "{err}"
    );
}

#[cfg(feature = "torch")]
#[test]
fn lora_targets_run_on_to_the_end_of_the_answer() {
    // The same draw for MimIC and LoRA: LoRA's answers carry the template's end of the answer
    // (`\n` here) after the answer's own ids, MimIC's do not.
    use mimic_models::task::{Task, Template, DEFAULT_TEMPLATE};
    use mimic_models::Method;
    use mimic_trainer::train::{TrainConfig, Trainer};
    let tmp = tempfile::tempdir().unwrap();
    let task_path = write_task(tmp.path(), &PAIRS);
    let task = Task::load(&task_path, Template::new(DEFAULT_TEMPLATE).unwrap(), 2, 0).unwrap();
    let base = mimic_models::Model::open(&common::default_model()).unwrap();
    let tm = mimic_trainer::TorchModel::new(&base, tch::Device::Cpu).unwrap();
    let draw = |method| {
        let mut t = Trainer::new(&tm, &base, &task, TrainConfig::for_method(method)).unwrap();
        t.draw_batch().unwrap()
    };
    let (mimic, lora) = (draw(Method::Mimic), draw(Method::Lora));
    let end = base.tokenizer().unwrap().encode("\n").unwrap();
    assert!(!end.is_empty());
    assert_eq!(mimic.len(), lora.len());
    for (m, l) in mimic.iter().zip(&lora) {
        assert_eq!(m.query, l.query);
        assert_eq!(l.answer, [&m.answer[..], &end].concat());
    }
}
