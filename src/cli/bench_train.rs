//! `mimic bench-train`: one MimIC training step (teacher pass, student forward + backward +
//! optimiser) on the default model, timed, beside the same step in Python PyTorch with
//! transformers (`scripts/bench_train_step.py`), in one run.
//!
//! The Python step runs in float32 and under bfloat16 autocast; the Rust step in four kinds:
//! demonstrations per query (as published) or shared by the batch, matrix products in float32
//! or bfloat16. Every Rust kind runs the very batch the Python step ran (its token ids, read
//! back from its JSON; the shared kinds give every row the first row's demonstrations), the same
//! batch at every step, as the Python step does. `--rounds` repeats the whole comparison, and
//! each ratio is taken against the Python float32 step of its own round.
use std::path::PathBuf;

use std::io::Write;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Task (a JSON file of pairs or a built-in task set's name; default: country-capital).
    #[arg(long, value_name = "FILE|NAME")]
    task: Option<PathBuf>,
    /// Queries per step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Demonstrations per query.
    #[arg(long, default_value_t = 8)]
    shots: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps; each figure is their median.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    /// Times every step kind this many times, in turn, so each ratio is taken within a round.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Python with torch and transformers for the reference rows; `none` skips them.
    #[arg(long, default_value = ".venv-ref/bin/python")]
    python: PathBuf,
    #[command(flatten)]
    json: super::JsonArgs,
}

/// The batch the Python step ran (token ids as it wrote them), so the Rust steps time the very
/// same one.
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
#[derive(Debug, Clone, Deserialize)]
struct PythonBatch {
    teacher_ids: Vec<Vec<u32>>,
    student_ids: Vec<Vec<u32>>,
    items: Vec<PythonItem>,
}

#[cfg_attr(not(feature = "torch"), allow(dead_code))]
#[derive(Debug, Clone, Deserialize)]
struct PythonItem {
    n_answer: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub round: usize,
    pub backend: String,
    pub teacher_s: f64,
    pub student_s: f64,
    pub step_s: f64,
}

/// The reference: the published step (demonstrations per query, float32 teacher).
const PYTHON: &str = "python transformers";

/// The task as a file the Python script can read: a path as given, or a built-in task set's
/// file in the repository's `data/icl-tasks/`.
fn task_file(task: Option<&std::path::Path>) -> Result<PathBuf> {
    let spec = task.unwrap_or(std::path::Path::new("country-capital"));
    if spec.is_file() {
        return Ok(spec.to_path_buf());
    }
    // Neither a file nor a built-in task set: the error says so (not "not in data/").
    mimic_models::task::read_task_text(spec)?;
    super::repo_file(&format!("data/icl-tasks/{}.json", spec.display()))
}

/// The Rust step kinds: demonstrations shared per batch or not, and the matmul type.
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
const RUST_STEPS: [(&str, bool, &str); 4] = [
    ("mimic, per-query demos, f32", false, "f32"),
    ("mimic, per-query demos, bf16", false, "bf16"),
    ("mimic, shared demos, f32", true, "f32"),
    ("mimic, shared demos, bf16", true, "bf16"),
];

/// Start, demonstrations, query and answer of each row of the Python batch; with `shared`,
/// every row takes the first row's demonstrations.
#[cfg(feature = "torch")]
fn encoded(b: &PythonBatch, shared: bool) -> Result<Vec<mimic_models::task::Encoded>> {
    let rows = b.teacher_ids.iter().zip(&b.student_ids).zip(&b.items);
    let mut out: Vec<mimic_models::task::Encoded> = Vec::new();
    for ((t, s), it) in rows {
        let q_len = s.len().saturating_sub(1 + it.n_answer);
        if s.is_empty() || t.len() < s.len() || t[t.len() - s.len() + 1..] != s[1..] {
            bail!("the Python batch's teacher and student rows do not end alike");
        }
        out.push(mimic_models::task::Encoded {
            start: s[..1].to_vec(),
            demos: t[1..t.len() + 1 - s.len()].to_vec(),
            query: s[1..1 + q_len].to_vec(),
            answer: s[1 + q_len..].to_vec(),
            images: vec![],
            demo_images: 0,
        });
    }
    if shared {
        let demos = out[0].demos.clone();
        for e in &mut out {
            e.demos = demos.clone();
        }
    }
    Ok(out)
}

#[cfg(feature = "torch")]
fn rust_rows(
    a: &Args,
    task_path: &std::path::Path,
    batch: Option<&PythonBatch>,
    round: usize,
) -> Result<Vec<Row>> {
    use super::bench::median;
    use mimic_models::task::{Task, Template, DEFAULT_TEMPLATE};
    use mimic_trainer::shift::Method;
    use mimic_trainer::train::{TrainConfig, Trainer};
    tch::set_num_threads(a.threads.resolved() as i32);
    let model = a.model.open()?;
    let tm = mimic_trainer::TorchModel::new(&model, tch::Device::Cpu)?;
    let task = Task::load(task_path, Template::new(DEFAULT_TEMPLATE)?, 100, 0)?;
    let mut rows = Vec::new();
    for (name, shared, matmul) in RUST_STEPS {
        let mut cfg = TrainConfig::for_method(Method::Mimic);
        cfg.batch = a.batch;
        cfg.shots = a.shots;
        cfg.steps = a.warmup + a.steps;
        cfg.shared_demos = shared;
        cfg.precision = matmul.parse().map_err(anyhow::Error::msg)?;
        let mut trainer = Trainer::new(&tm, &model, &task, cfg)?;
        // The same batch every step, as the Python step runs it.
        let examples = match batch {
            Some(b) => encoded(b, shared)?,
            None => trainer.draw_batch()?,
        };
        let (mut t, mut s) = (vec![], vec![]);
        for i in 0..a.warmup + a.steps {
            let log = trainer.step_on(&examples)?;
            if i >= a.warmup {
                t.push(log.teacher_s);
                s.push(log.student_s);
            }
        }
        let mut steps: Vec<f64> = t.iter().zip(&s).map(|(a, b)| a + b).collect();
        rows.push(Row {
            round,
            backend: name.into(),
            teacher_s: median(&mut t),
            student_s: median(&mut s),
            step_s: median(&mut steps),
        });
    }
    Ok(rows)
}

#[cfg(not(feature = "torch"))]
fn rust_rows(_: &Args, _: &std::path::Path, _: Option<&PythonBatch>, _: usize) -> Result<Vec<Row>> {
    bail!("this mimic was built without the `torch` feature")
}

/// Runs `scripts/bench_train_step.py` once and reads its medians and its batch.
fn python_row(
    a: &Args,
    task: &std::path::Path,
    bf16: bool,
    round: usize,
) -> Result<(Row, PythonBatch)> {
    let script = super::repo_file("scripts/bench_train_step.py")?;
    let out = std::env::temp_dir().join(format!("mimic-bench-train-{}.json", std::process::id()));
    let mut cmd = std::process::Command::new(&a.python);
    cmd.arg(&script)
        .arg("--task")
        .arg(task)
        .arg("--json")
        .arg(&out);
    for (k, v) in [
        ("--batch", a.batch),
        ("--shots", a.shots),
        ("--warmup", a.warmup),
        ("--steps", a.steps),
        ("--threads", a.threads.resolved()),
    ] {
        cmd.args([k, &v.to_string()]);
    }
    if bf16 {
        cmd.arg("--bf16");
    }
    if let Some(m) = &a.model.model {
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
    let batch: PythonBatch = serde_json::from_value(v.clone())
        .with_context(|| format!("{} wrote no batch", script.display()))?;
    let row = Row {
        round,
        backend: if bf16 {
            format!("{PYTHON}, bf16 autocast")
        } else {
            PYTHON.into()
        },
        teacher_s: get("teacher_s"),
        student_s: get("student_s"),
        step_s: get("step_s"),
    };
    Ok((row, batch))
}

pub fn run(a: Args) -> Result<()> {
    let task = task_file(a.task.as_deref())?;
    let mut rows = Vec::new();
    let mut batch = None;
    for round in 1..=a.rounds.max(1) {
        if a.python.as_os_str() != "none" {
            for bf16 in [false, true] {
                tracing::info!(round, bf16, "timing the Python reference step");
                let (row, b) = python_row(&a, &task, bf16, round)?;
                rows.push(row);
                batch = Some(b);
            }
        }
        tracing::info!(round, "timing the libtorch steps");
        rows.extend(rust_rows(&a, &task, batch.as_ref(), round)?);
    }
    let mut out = a.json.table();
    writeln!(
        out,
        "one MimIC step: batch {}, {} shots, {} threads, medians of {} steps after {} warm-up, {} round(s)",
        a.batch,
        a.shots,
        a.threads.resolved(),
        a.steps,
        a.warmup,
        a.rounds.max(1)
    )?;
    writeln!(
        out,
        "| {:>5} | {:<38} | {:>9} | {:>9} | {:>9} | {:>8} |",
        "round", "step", "teacher s", "student s", "step s", "x python"
    )?;
    writeln!(
        out,
        "|{:->7}|{:-<40}|{:->11}|{:->11}|{:->11}|{:->10}|",
        "", "", "", "", "", ""
    )?;
    for r in &rows {
        // Each ratio is against the float32 Python step of the same round.
        let base = rows
            .iter()
            .find(|p| p.round == r.round && p.backend == PYTHON)
            .map(|p| p.step_s);
        let ratio = base.map_or("-".into(), |b| format!("{:.2}x", r.step_s / b));
        writeln!(
            out,
            "| {:>5} | {:<38} | {:>9.3} | {:>9.3} | {:>9.3} | {:>8} |",
            r.round, r.backend, r.teacher_s, r.student_s, r.step_s, ratio
        )?;
    }
    a.json.write(&rows)?;
    Ok(())
}
