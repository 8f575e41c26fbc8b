//! What the benchmark times besides the ONNX backends in lockstep: libtorch, Python
//! transformers (through `scripts/bench_transformers.py`), and a task's queries in batches.
use anyhow::{bail, Context, Result};
use mimic_compiler::CompileOptions;
use mimic_models::Model;

use super::{Args, Row};

#[cfg(feature = "torch")]
pub fn bench_torch(model: &Model, prompts: &[Vec<u32>], a: &Args) -> Result<Vec<Row>> {
    tch::set_num_threads(a.threads.resolved() as i32);
    let tm = mimic_trainer::TorchModel::new(model, tch::Device::Cpu)?;
    super::harness::time_backend("torch", &mut mimic_trainer::TorchLm::new(&tm), prompts, a)
}

#[cfg(not(feature = "torch"))]
pub fn bench_torch(_: &Model, _: &[Vec<u32>], _: &Args) -> Result<Vec<Row>> {
    bail!("this mimic was built without the `torch` feature")
}

/// Runs `scripts/bench_transformers.py` on the same weights and reads its JSON.
pub fn bench_transformers(model: &Model, a: &Args) -> Result<Vec<Row>> {
    let script = crate::cli::repo_file("scripts/bench_transformers.py")?;
    let out = std::env::temp_dir().join(format!(
        "mimic-bench-transformers-{}.json",
        std::process::id()
    ));
    let lens: Vec<String> = a.prompt_len.iter().map(|n| n.to_string()).collect();
    let status = std::process::Command::new(&a.python)
        .arg(&script)
        .arg(if model.source.is_dir() {
            "--model"
        } else {
            "--gguf"
        })
        .arg(&model.source)
        .args(["--prompt-len", &lens.join(",")])
        .args(["--new-tokens", &a.new_tokens.to_string()])
        .args(["--warmup", &a.warmup.to_string()])
        .args(["--iterations", &a.iterations.to_string()])
        .args(["--threads", &a.threads.resolved().to_string()])
        .arg("--json")
        .arg(&out)
        .status()
        .with_context(|| {
            format!(
                "cannot run {} (make reference-env installs it)",
                a.python.display()
            )
        })?;
    if !status.success() {
        bail!(
            "{} {} failed ({status})",
            a.python.display(),
            script.display()
        );
    }
    let text = std::fs::read_to_string(&out).with_context(|| format!("{}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    let rows: Vec<Row> =
        serde_json::from_str(&text).with_context(|| format!("{}", out.display()))?;
    Ok(rows)
}

/// The prompts a task gives the benchmark.
pub struct TaskPrompts {
    /// The start token and `--shots` demonstrations, put before every onnx-icl prompt.
    pub demo_prefix: Vec<u32>,
    /// Test queries zero-shot and with demonstrations, with their expected answers.
    pub zero_shot: Vec<(Vec<u32>, String)>,
    pub in_context: Vec<(Vec<u32>, String)>,
}

pub fn task_prompts(model: &Model, path: &std::path::Path, a: &Args) -> Result<TaskPrompts> {
    use mimic_models::rng::SplitMix64;
    use mimic_models::task::{start_token, Encoded, Task, Template};
    let tok = model.tokenizer()?;
    let task = Task::load(path, Template::new(&a.template)?, a.batch_queries, 0)?;
    let start = start_token(tok);
    let mut rng = SplitMix64::new(0);
    let first = task.test.first().context("the task has no test queries")?;
    let demos = task.demonstrations(first, a.shots, &mut rng)?;
    let enc = Encoded::new(tok, start, &task.template, &demos, first)?;
    let demo_prefix = [enc.start.as_slice(), enc.demos.as_slice()].concat();
    let (mut zero_shot, mut in_context) = (vec![], vec![]);
    for q in task.test.iter().take(a.batch_queries) {
        let zero = Encoded::new(tok, start, &task.template, &[], q)?;
        zero_shot.push((zero.prompt(), q.output.clone()));
        let demos = task.demonstrations(q, a.shots, &mut rng)?;
        let icl = Encoded::new(tok, start, &task.template, &demos, q)?;
        in_context.push((icl.prompt(), q.output.clone()));
    }
    Ok(TaskPrompts {
        demo_prefix,
        zero_shot,
        in_context,
    })
}

/// The batched runs: base zero-shot, MimIC (when --heads), and in-context prompting.
pub fn bench_batched(
    model: &Model,
    heads: Option<&mimic_models::Heads>,
    t: &TaskPrompts,
    a: &Args,
) -> Result<Vec<super::batch::BatchRow>> {
    use super::batch::{time_batched, Contender};
    let opts = CompileOptions {
        attention: a.batched_attention.unwrap_or(crate::cli::default_attention(
            mimic_runtime::ExecutionProvider::Cpu,
            mimic_compiler::Dtype::Fp32,
        )),
        last_only: true,
        weights: a.weights.first().copied().unwrap_or_default(),
        ..Default::default()
    };
    let base = crate::cli::compiled_for(model, None, &opts)?;
    let mut contenders = vec![Contender {
        method: "zero-shot".into(),
        dir: &base,
        queries: t.zero_shot.clone(),
    }];
    let with_heads;
    if let Some(h) = heads {
        with_heads = crate::cli::compiled_for(model, Some(h), &opts)?;
        contenders.push(Contender {
            method: h.method.name().into(),
            dir: &with_heads,
            queries: t.zero_shot.clone(),
        });
    }
    contenders.push(Contender {
        method: format!("icl-{}", a.shots),
        dir: &base,
        queries: t.in_context.clone(),
    });
    let tok = model.tokenizer()?;
    let mut rows = Vec::new();
    for &batch in &a.batch_sizes {
        eprintln!("batched: batch {batch} ...");
        let r = time_batched(
            &contenders,
            tok,
            batch.max(1),
            a.answer_tokens,
            a.threads.threads,
            a.batch_rounds,
            a.copies,
        )?;
        tracing::info!(?r, "measured");
        rows.extend(r);
    }
    Ok(rows)
}
