//! `mimic bench-train`: one MimIC training step (teacher pass, student forward + backward +
//! optimiser) on the default model, timed, beside the same step in Python PyTorch with
//! transformers (`scripts/bench_train_step.py`), in one run.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    /// Task file (default: country-capital from the shared ICL task sets).
    #[arg(long)]
    task: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 8)]
    shots: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Python with torch and transformers for the reference row; `none` skips it.
    #[arg(long, default_value = ".venv-ref/bin/python")]
    python: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub backend: String,
    pub teacher_s: f64,
    pub student_s: f64,
    pub step_s: f64,
}

fn default_task() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/icl-tasks/country-capital.json")
}

#[cfg(feature = "torch")]
fn rust_rows(a: &Args, task_path: &std::path::Path) -> Result<Vec<Row>> {
    use super::bench::median;
    use mimic_trainer::shift::Method;
    use mimic_trainer::task::{Task, Template, DEFAULT_TEMPLATE};
    use mimic_trainer::train::{TrainConfig, Trainer};
    tch::set_num_threads(a.threads as i32);
    let model = super::open_model(a.model.as_deref())?;
    let tm = mimic_trainer::TorchModel::new(&model, tch::Device::Cpu)?;
    let task = Task::load(task_path, Template::new(DEFAULT_TEMPLATE)?, 100, 0)?;
    let mut rows = Vec::new();
    for shared in [false, true] {
        let mut cfg = TrainConfig::for_method(Method::Mimic);
        cfg.batch = a.batch;
        cfg.shots = a.shots;
        cfg.steps = a.warmup + a.steps;
        cfg.shared_demos = shared;
        let mut trainer = Trainer::new(&tm, &model, &task, cfg)?;
        let (mut t, mut s) = (vec![], vec![]);
        for i in 0..a.warmup + a.steps {
            let log = trainer.train_step()?;
            if i >= a.warmup {
                t.push(log.teacher_s);
                s.push(log.student_s);
            }
        }
        let mut steps: Vec<f64> = t.iter().zip(&s).map(|(a, b)| a + b).collect();
        let name = if shared {
            "mimic (libtorch), shared demos"
        } else {
            "mimic (libtorch)"
        };
        rows.push(Row {
            backend: name.into(),
            teacher_s: median(&mut t),
            student_s: median(&mut s),
            step_s: median(&mut steps),
        });
    }
    Ok(rows)
}

#[cfg(not(feature = "torch"))]
fn rust_rows(_: &Args, _: &std::path::Path) -> Result<Vec<Row>> {
    bail!("this mimic was built without the `torch` feature")
}

pub fn run(a: Args) -> Result<()> {
    let task = a.task.clone().unwrap_or_else(default_task);
    let mut rows = Vec::new();
    if a.python.as_os_str() != "none" {
        eprintln!("timing the Python reference step ...");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_train_step.py");
        let out =
            std::env::temp_dir().join(format!("mimic-bench-train-{}.json", std::process::id()));
        let mut cmd = std::process::Command::new(&a.python);
        cmd.arg(&script)
            .arg("--task")
            .arg(&task)
            .arg("--json")
            .arg(&out);
        for (k, v) in [
            ("--batch", a.batch),
            ("--shots", a.shots),
            ("--warmup", a.warmup),
            ("--steps", a.steps),
            ("--threads", a.threads),
        ] {
            cmd.args([k, &v.to_string()]);
        }
        if let Some(m) = &a.model {
            cmd.arg(if m.is_dir() { "--model" } else { "--gguf" })
                .arg(m);
        }
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", a.python.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", script.display());
        }
        let text = std::fs::read_to_string(&out).with_context(|| out.display().to_string())?;
        let _ = std::fs::remove_file(&out);
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
        rows.push(Row {
            backend: "python transformers".into(),
            teacher_s: get("teacher_s"),
            student_s: get("student_s"),
            step_s: get("step_s"),
        });
    }
    eprintln!("timing the libtorch step ...");
    rows.extend(rust_rows(&a, &task)?);
    let base = rows
        .iter()
        .find(|r| r.backend == "python transformers")
        .map(|r| r.step_s);
    println!(
        "one MimIC step: batch {}, {} shots, {} threads, medians of {} steps after {} warm-up",
        a.batch, a.shots, a.threads, a.steps, a.warmup
    );
    println!(
        "| {:<32} | {:>9} | {:>9} | {:>9} | {:>11} |",
        "backend", "teacher s", "student s", "step s", "x python"
    );
    println!(
        "|{:-<34}|{:->11}|{:->11}|{:->11}|{:->13}|",
        "", "", "", "", ""
    );
    for r in &rows {
        let ratio = base.map_or("-".into(), |b| format!("{:.2}x", r.step_s / b));
        println!(
            "| {:<32} | {:>9.3} | {:>9.3} | {:>9.3} | {:>11} |",
            r.backend, r.teacher_s, r.student_s, r.step_s, ratio
        );
    }
    if let Some(p) = &a.json {
        mimic_models::files::write_atomically(p, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    }
    Ok(())
}
