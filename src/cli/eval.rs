use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub task: PathBuf,
    /// zero-shot, icl or heads (repeat or comma-separate to compare several in one table).
    #[arg(long, value_delimiter = ',', default_value = "zero-shot,icl")]
    pub method: Vec<String>,
    #[arg(long, default_value_t = 8)]
    pub shots: usize,
    /// Heads files for `--method heads` (one row each).
    #[arg(long, value_delimiter = ',')]
    pub heads: Vec<PathBuf>,
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    pub test_size: usize,
    /// Evaluate the first N test queries only.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 10)]
    pub max_new_tokens: usize,
    #[arg(long, default_value = mimic_models::prompt::DEFAULT_TEMPLATE)]
    pub template: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// `torch` (the trainer's forward) or `onnx` (the model compiled with the heads folded in,
    /// run in ONNX Runtime).
    #[arg(long, value_enum, default_value = "torch")]
    pub backend: super::generate::BackendKind,
    /// Attention of the compiled graph for `--backend onnx`.
    #[arg(long, default_value = "fused")]
    pub attention: mimic_compiler::AttentionImpl,
    /// Also write the results (and every answer) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[cfg(feature = "torch")]
pub fn run(a: Args) -> Result<()> {
    use anyhow::bail;
    use mimic_trainer::eval::{evaluate, evaluate_lm, EvalRun, Prompting};
    use mimic_trainer::shift::Shift;
    use mimic_trainer::task::{Task, Template};

    let model = super::open_model(a.model.as_deref())?;
    let mut task = Task::load(&a.task, Template::new(&a.template)?, a.test_size, a.seed)?;
    if let Some(n) = a.limit {
        task.test.truncate(n);
    }
    if a.threads > 0 {
        tch::set_num_threads(a.threads as i32);
    }
    let device = mimic_trainer::parse_device(&a.device)?;
    // Load every heads file first: a bad one fails before any evaluation runs.
    let mut shifts = Vec::new();
    for m in &a.method {
        if m == "heads" {
            if a.heads.is_empty() {
                bail!("--method heads needs --heads FILE");
            }
            for path in &a.heads {
                let h = mimic_models::Heads::read(path, &model.fingerprint(), &model.config)?;
                let shift = Shift::from_heads(&h, &model.config, device)?.0;
                shifts.push((h, shift));
            }
        } else if m != "zero-shot" && m != "icl" {
            bail!("unknown evaluation method `{m}` (zero-shot, icl, heads)");
        }
    }
    let tm = mimic_trainer::TorchModel::new(&model, device)?;
    let tok = model.tokenizer()?;
    // Each run, with the heads it uses.
    let mut runs: Vec<(Prompting, Option<&mimic_models::Heads>)> = Vec::new();
    for m in &a.method {
        match m.as_str() {
            "zero-shot" => runs.push((Prompting::ZeroShot, None)),
            "icl" => runs.push((Prompting::InContext(a.shots), None)),
            _ => runs.extend(shifts.iter().map(|(h, s)| (Prompting::Shifted(s), Some(h)))),
        }
    }
    let mut results = Vec::new();
    let mut all_answers = Vec::new();
    for (p, heads) in &runs {
        let bar = indicatif::ProgressBar::new(task.test.len() as u64);
        let progress = |i, _| bar.set_position(i as u64);
        let (r, answers) = match a.backend {
            super::generate::BackendKind::Torch => {
                evaluate(&tm, tok, &task, p, a.max_new_tokens, a.seed, progress)?
            }
            super::generate::BackendKind::Onnx => {
                let run = match p {
                    Prompting::ZeroShot => ("zero-shot".to_string(), 0, 0),
                    Prompting::InContext(k) => (format!("icl-{k}"), 0, *k),
                    Prompting::Shifted(s) => (s.method.name().to_string(), s.num_params(), 0),
                };
                let opts = mimic_compiler::CompileOptions {
                    attention: a.attention,
                    last_only: true,
                    ..Default::default()
                };
                let dir = super::compiled_for(&model, *heads, &opts)?;
                let mut compiled = mimic_runtime::CompiledModel::load(
                    &dir,
                    &mimic_runtime::SessionOptions {
                        threads: a.threads,
                        ..Default::default()
                    },
                )?;
                let mut lm = TrainerErrors(mimic_runtime::OnnxLm::new(&mut compiled));
                let run = EvalRun {
                    method: format!("{} (onnx)", run.0),
                    trainable_params: run.1,
                    shots: run.2,
                    max_new: a.max_new_tokens,
                    seed: a.seed,
                };
                evaluate_lm(&mut lm, tok, &task, &run, progress)?
            }
        };
        bar.finish_and_clear();
        eprintln!(
            "{}: first-token {:.3}, exact {:.3}",
            r.method, r.first_token_accuracy, r.exact_match
        );
        all_answers.push(answers);
        results.push(r);
    }
    println!(
        "| {:<15} | {:<20} | {:>7} | {:>11} | {:>11} | {:>10} | {:>13} |",
        "task", "method", "queries", "first-token", "exact match", "params", "prompt tokens"
    );
    println!(
        "|{:-<17}|{:-<22}|{:->9}|{:->13}|{:->13}|{:->12}|{:->15}|",
        "", "", "", "", "", "", ""
    );
    for r in &results {
        println!(
            "| {:<15} | {:<20} | {:>7} | {:>11.3} | {:>11.3} | {:>10} | {:>13.1} |",
            r.task,
            r.method,
            r.queries,
            r.first_token_accuracy,
            r.exact_match,
            r.trainable_params,
            r.mean_prompt_tokens
        );
    }
    if let Some(path) = &a.json {
        let v = serde_json::json!({"results": results, "answers": all_answers});
        mimic_models::files::write_atomically(path, serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    Ok(())
}

#[cfg(not(feature = "torch"))]
pub fn run(_: Args) -> Result<()> {
    anyhow::bail!("this mimic was built without the `torch` feature: evaluation runs on libtorch")
}

/// A causal LM whose errors are the trainer's, so the evaluation loop can drive ONNX Runtime.
#[cfg(feature = "torch")]
struct TrainerErrors<M>(M);

#[cfg(feature = "torch")]
impl<M: mimic_models::generate::CausalLm> mimic_models::generate::CausalLm for TrainerErrors<M>
where
    M::Error: std::fmt::Display,
{
    type Error = mimic_trainer::TrainerError;

    fn reset(&mut self) {
        self.0.reset()
    }

    fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>, Self::Error> {
        self.0
            .extend(ids)
            .map_err(|e| mimic_trainer::TrainerError::Other(e.to_string()))
    }

    fn max_positions(&self) -> usize {
        self.0.max_positions()
    }
}
