use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub task: super::TaskArgs,
    /// What to evaluate (comma-separate to compare several in one table).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "zero-shot,icl"
    )]
    pub method: Vec<EvalMethod>,
    /// Demonstrations before each query for `--method icl`.
    #[arg(long, default_value_t = 8)]
    pub shots: usize,
    /// How `--method icl` picks its demonstrations: `random` (seeded draws from the training
    /// part) or `rices` (the training pairs whose image is nearest the query's, by the model's
    /// own image features; vision-language models).
    #[arg(long, value_enum, default_value = "random")]
    pub demos: DemoChoice,
    /// Heads files for `--method heads` (one row each).
    #[arg(long, value_delimiter = ',', value_name = "FILE,...")]
    pub heads: Vec<PathBuf>,
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Evaluate the first N test queries only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// New tokens generated per answer at most (default 10; 20 for --dataset coco and
    /// flickr30k, as the published MimIC code).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Beam search with this many beams, by transformers' rules; 1 is greedy decoding,
    /// stopped at the first newline. Default: 1 for --task; 3 for --dataset, the published
    /// MimIC setting.
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Beam search: a finished hypothesis's summed log-probability is divided by its length
    /// to this power (default 1.0; 0.0 for --dataset, the published MimIC setting).
    #[arg(long, allow_hyphen_values = true)]
    pub length_penalty: Option<f64>,
    /// Beam search: stop once `--num-beams` hypotheses are finished (transformers'
    /// `early_stopping=True`); by default, once no running beam can beat them.
    #[arg(long)]
    pub early_stopping: bool,
    /// Queries answered at once, on either backend, greedy or beam search: left-padded into
    /// one batch (with beam search, every query's beams are rows of it), each row stopping at
    /// its newline, end marker or end token. The answers are those of one query at a time.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
    /// `torch` (the trainer's forward) or `onnx` (the model compiled with the heads folded in,
    /// run in ONNX Runtime on the CPU).
    #[arg(long, value_enum, default_value = "torch")]
    pub backend: super::generate::BackendKind,
    /// Attention of the compiled graph for `--backend onnx`; default: as `mimic compile`
    /// picks for the CPU (the kernel).
    #[arg(long, value_parser = super::one_of::<mimic_compiler::AttentionImpl>(super::values::ATTENTION))]
    pub attention: Option<mimic_compiler::AttentionImpl>,
    /// The results and every answer as JSON.
    #[command(flatten)]
    pub json: super::JsonArgs,
    /// With --dataset: write each method's official results file here,
    /// `{dataset}-{method}.json` (`[{question_id, answer}]`), for the official scorer.
    #[arg(long, value_name = "DIR", requires = "dataset")]
    pub results: Option<PathBuf>,
}

/// How in-context demonstrations are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoChoice {
    Random,
    Rices,
}

/// What `mimic eval` evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalMethod {
    /// The query alone.
    ZeroShot,
    /// `--shots` demonstrations from the training split before the query.
    Icl,
    /// The query alone, with each `--heads` file applied (one row each).
    Heads,
}

#[cfg(feature = "torch")]
pub fn run(a: Args) -> Result<()> {
    use anyhow::{bail, Context};
    use mimic_models::beam::{BeamConfig, EarlyStopping};
    use mimic_trainer::eval::{evaluate, Decoding, EvalRun, Prompting};
    use mimic_trainer::shift::Shift;
    use std::io::Write;

    let any = a.model.open_any()?;
    let model = any.decoder();
    let arch = match &any {
        super::AnyModel::Vision(v) => Some(v.config.architecture),
        super::AnyModel::Text(_) => None,
    };
    let (task, bench) = a.task.load_for(arch, a.limit)?;
    a.threads.apply_to_torch();
    let device = a.device.torch()?;
    let seed = a.task.seed;
    // Load every heads file first: a bad one fails before any evaluation runs.
    let mut shifts = Vec::new();
    if a.method.contains(&EvalMethod::Heads) {
        if a.heads.is_empty() {
            bail!("--method heads needs --heads FILE");
        }
        for path in &a.heads {
            let h = mimic_models::Heads::read(path, &model.fingerprint(), &model.config)?;
            let shift = Shift::from_heads(&h, &model.config, device)?.0;
            shifts.push((h, shift));
        }
    }
    // A vision-language model: the task's images become image tokens once (torch backend);
    // the compiled folder encodes each prompt's images itself (onnx backend).
    let vision = match &any {
        super::AnyModel::Vision(v) => Some(v.as_ref()),
        super::AnyModel::Text(_) => None,
    };
    let rices = a.demos == DemoChoice::Rices && a.method.contains(&EvalMethod::Icl);
    if rices && vision.is_none() {
        bail!(
            "--demos rices ranks demonstrations by their images: it needs a vision-language model"
        );
    }
    let encode_task = a.backend == super::generate::BackendKind::Torch || rices;
    let torch = super::TorchModels::new(&any, device, encode_task.then_some(&task))?;
    let tm = torch.decoder();
    let tok = model.tokenizer()?;
    // RICES: each query's demonstrations, nearest image last.
    let retrieved = match (&torch.images, rices) {
        (Some(images), true) => mimic_trainer::rices::rices_demonstrations(&task, images, a.shots)?,
        _ => Vec::new(),
    };
    // Each run, with the heads it uses.
    let mut runs: Vec<(Prompting, Option<&mimic_models::Heads>)> = Vec::new();
    for m in &a.method {
        match m {
            EvalMethod::ZeroShot => runs.push((Prompting::ZeroShot, None)),
            EvalMethod::Icl if rices => {
                runs.push((Prompting::Retrieved(a.shots, retrieved.as_slice()), None))
            }
            EvalMethod::Icl => runs.push((Prompting::InContext(a.shots), None)),
            EvalMethod::Heads => {
                runs.extend(shifts.iter().map(|(h, s)| (Prompting::Shifted(s), Some(h))))
            }
        }
    }
    let attention = a.attention.unwrap_or(super::default_attention(
        mimic_runtime::ExecutionProvider::Cpu,
        mimic_compiler::Dtype::Fp32,
    ));
    // The published MimIC settings for benchmarks: 3 beams, no length penalty, 10 new
    // tokens (20 for captions); greedy for tasks.
    let dataset = a.task.dataset.dataset;
    let captions = matches!(
        dataset,
        Some(mimic_models::datasets::Dataset::Coco | mimic_models::datasets::Dataset::Flickr30k)
    );
    let max_new = a.max_new_tokens.unwrap_or(if captions { 20 } else { 10 });
    let num_beams = a.num_beams.unwrap_or(if dataset.is_some() { 3 } else { 1 });
    let length_penalty = a
        .length_penalty
        .unwrap_or(if dataset.is_some() { 0.0 } else { 1.0 });
    let decoding = Decoding {
        max_new,
        seed,
        beam: (num_beams > 1).then_some(BeamConfig {
            num_beams,
            length_penalty,
            early_stopping: if a.early_stopping {
                EarlyStopping::Done
            } else {
                EarlyStopping::Heuristic
            },
            max_new_tokens: max_new,
        }),
    };
    let mut results = Vec::new();
    let mut all_answers = Vec::new();
    for (p, heads) in &runs {
        let bar = indicatif::ProgressBar::new(task.test.len() as u64);
        let progress = |i, _| bar.set_position(i as u64);
        let (r, answers) = match a.backend {
            super::generate::BackendKind::Torch => evaluate(
                tm,
                tok,
                &task,
                p,
                &decoding,
                torch.images.as_ref(),
                a.batch,
                progress,
            )?,
            super::generate::BackendKind::Onnx => {
                let opts = mimic_compiler::CompileOptions {
                    attention,
                    last_only: true,
                    ..Default::default()
                };
                let dir = super::compiled_any_for(&any, *heads, &opts)?;
                let mut compiled = mimic_runtime::CompiledModel::load(
                    &dir,
                    &mimic_runtime::SessionOptions {
                        threads: a.threads.threads,
                        ..Default::default()
                    },
                )?;
                let mut run = EvalRun::new(p, decoding);
                run.method = format!("{} (onnx)", run.method);
                if a.batch > 1 {
                    run.method = format!("{} batch {}", run.method, a.batch);
                }
                evaluate_compiled(&mut compiled, vision, tok, &task, &run, a.batch, progress)?
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
    let mut out = a.json.table();
    // Accuracies with their 95% Wilson intervals.
    let with_interval = |x: f64, (lo, hi): (f64, f64)| format!("{x:.3} [{lo:.2}, {hi:.2}]");
    writeln!(
        out,
        "| {:<15} | {:<20} | {:>7} | {:>19} | {:>19} | {:>10} | {:>13} | {:>7} | {:>7} |",
        "task",
        "method",
        "queries",
        "first-token",
        "exact match",
        "params",
        "prompt tokens",
        "s/query",
        "encoder"
    )?;
    writeln!(
        out,
        "|{:-<17}|{:-<22}|{:->9}|{:->21}|{:->21}|{:->12}|{:->15}|{:->9}|{:->9}|",
        "", "", "", "", "", "", "", "", ""
    )?;
    for r in &results {
        let per_query = r.seconds / r.queries.max(1) as f64;
        let encoder = if r.encoder_seconds > 0.0 {
            format!("{:.0}%", 100.0 * r.encoder_seconds / r.seconds.max(1e-9))
        } else {
            "-".to_string()
        };
        writeln!(
            out,
            "| {:<15} | {:<20} | {:>7} | {:>19} | {:>19} | {:>10} | {:>13.1} | {:>7.3} | {:>7} |",
            r.task,
            r.method,
            r.queries,
            with_interval(r.first_token_accuracy, r.first_token_interval),
            with_interval(r.exact_match, r.exact_match_interval),
            r.trainable_params,
            r.mean_prompt_tokens,
            per_query,
            encoder
        )?;
    }
    writeln!(
        out,
        "accuracy [95% Wilson interval]; s/query: seconds per query, whole run over queries; \
         encoder: the image encoder's share of it (compiled models); below, exact match of each later method against each \
         earlier one on the same queries (exact McNemar test)"
    )?;
    // Every pair of methods, each later row against each earlier one: queries only one of
    // them answered exactly, and the p-value of "equally accurate".
    let exact: Vec<Vec<bool>> = all_answers
        .iter()
        .map(|answers| answers.iter().map(|x| x.exact).collect())
        .collect();
    let mut paired = Vec::new();
    for i in 0..results.len() {
        for j in 0..i {
            paired.push(mimic_trainer::stats::PairedComparison::new(
                (&results[i].method, &exact[i]),
                (&results[j].method, &exact[j]),
            ));
        }
    }
    if !paired.is_empty() {
        writeln!(
            out,
            "| {:<20} | {:<20} | {:>6} | {:>6} | {:>10} | {:>9} |",
            "A", "B", "A only", "B only", "A - B", "p"
        )?;
        writeln!(
            out,
            "|{:-<22}|{:-<22}|{:->8}|{:->8}|{:->12}|{:->11}|",
            "", "", "", "", "", ""
        )?;
        for c in &paired {
            writeln!(
                out,
                "| {:<20} | {:<20} | {:>6} | {:>6} | {:>+10.3} | {:>9.2e} |",
                c.a, c.b, c.only_a, c.only_b, c.difference, c.p_value
            )?;
        }
    }
    // A benchmark: its own score of every method's answers, and the official results files.
    let mut scores = Vec::new();
    if let Some(bench) = &bench {
        for (r, answers) in results.iter().zip(&all_answers) {
            let generated: Vec<String> = answers.iter().map(|x| x.generated.clone()).collect();
            scores.push(bench.score(&r.method, &generated)?);
            if let Some(dir) = &a.results {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                // "mimic (onnx)" -> "mimic-onnx"
                let name = r.method.replace(" (", "-").replace([' ', ')'], "");
                let path = dir.join(format!("{}-{name}.json", bench.dataset.name()));
                let written = bench.write_results(&path, &generated)?;
                eprintln!("wrote {}", written.display());
            }
        }
        writeln!(
            out,
            "the benchmark's own score, answers post-processed as the published MimIC code does"
        )?;
        writeln!(
            out,
            "| {:<10} | {:<20} | {:>9} | {:<36} | {:<40} |",
            "dataset", "method", "questions", "score", "details"
        )?;
        writeln!(
            out,
            "|{:-<12}|{:-<22}|{:->11}|{:-<38}|{:-<42}|",
            "", "", "", "", ""
        )?;
        for sc in &scores {
            let (headline, details) = sc.summary();
            writeln!(
                out,
                "| {:<10} | {:<20} | {:>9} | {:<36} | {:<40} |",
                sc.dataset, sc.method, sc.questions, headline, details
            )?;
        }
    }
    a.json.write(&serde_json::json!({
        "results": results,
        "paired_exact_match": paired,
        "benchmark": scores,
        "answers": all_answers
    }))?;
    Ok(())
}

#[cfg(not(feature = "torch"))]
pub fn run(_: Args) -> Result<()> {
    anyhow::bail!("this mimic was built without the `torch` feature: evaluation runs on libtorch")
}

/// `run` on the test split through a compiled folder, one query at a time (`batch` 1) or
/// `batch` at a time, greedy or beam search; a vision-language model's prompts have
/// their images encoded by the folder's image encoder, timed into `encoder_seconds`.
#[cfg(feature = "torch")]
pub(crate) fn evaluate_compiled(
    compiled: &mut mimic_runtime::CompiledModel,
    vision: Option<&mimic_models::vlm::VisionLanguageModel>,
    tok: &mimic_models::tokenizer::TextTokenizer,
    task: &mimic_models::task::Task,
    run: &mimic_trainer::eval::EvalRun,
    batch: usize,
    progress: impl FnMut(usize, usize),
) -> Result<(
    mimic_trainer::eval::EvalResult,
    Vec<mimic_trainer::eval::Answer>,
)> {
    let encoder_time = std::cell::Cell::new(0.0);
    let (mut r, answers) = if batch > 1 {
        evaluate_onnx_batched(
            compiled,
            vision,
            tok,
            task,
            run,
            batch,
            &encoder_time,
            progress,
        )?
    } else {
        let mut lm = TrainerErrors(mimic_runtime::OnnxLm::new(compiled));
        let images = match vision {
            Some(v) => Some(onnx_prompt_images(v, &encoder_time)?),
            None => None,
        };
        mimic_trainer::eval::evaluate_lm(&mut lm, tok, task, run, images, progress)?
    };
    r.encoder_seconds = encoder_time.get();
    Ok((r, answers))
}

/// A causal LM whose errors are the trainer's, so the evaluation loop can drive ONNX Runtime.
#[cfg(feature = "torch")]
struct TrainerErrors<M>(M);

/// The test split `batch` queries at a time through a compiled folder (greedy, each row
/// stopping at its newline, the template's end marker or an end token, or beam search); a vision-language
/// model's rows carry their images' tokens, row after row, their encoding timed into
/// `encoder_time`.
#[cfg(feature = "torch")]
#[allow(clippy::too_many_arguments)]
fn evaluate_onnx_batched(
    compiled: &mut mimic_runtime::CompiledModel,
    vision: Option<&mimic_models::vlm::VisionLanguageModel>,
    tok: &mimic_models::tokenizer::TextTokenizer,
    task: &mimic_models::task::Task,
    run: &mimic_trainer::eval::EvalRun,
    batch: usize,
    encoder_time: &std::cell::Cell<f64>,
    progress: impl FnMut(usize, usize),
) -> Result<(
    mimic_trainer::eval::EvalResult,
    Vec<mimic_trainer::eval::Answer>,
)> {
    use mimic_trainer::TrainerError;
    let err = |e: mimic_runtime::RuntimeError| TrainerError::Other(e.to_string());
    let processor = vision.map(super::vlm_processor).transpose()?;
    let expansion = match (vision, processor) {
        (Some(v), Some(p)) => Some(mimic_models::vlm::request::image_tokens(&v.config, p)),
        _ => None,
    };
    let pad = tok.pad_id().unwrap_or(0);
    let max_positions = compiled.contract.max_positions;
    let answer_batch = |encs: &[mimic_models::task::Encoded]| {
        if let (Some(v), Some(p)) = (vision, processor) {
            let mut parts = Vec::new();
            for enc in encs.iter().filter(|e| !e.images.is_empty()) {
                let t0 = std::time::Instant::now();
                let inputs = mimic_models::vlm::request::images_inputs(&v.config, p, &enc.images)?;
                parts.push(compiled.encode_images(&inputs).map_err(err)?);
                encoder_time.set(encoder_time.get() + t0.elapsed().as_secs_f64());
            }
            if let Some(tokens) = mimic_models::HostTensor::concat_rows(&parts) {
                compiled.set_images(tokens).map_err(err)?;
            }
        }
        let prompts: Vec<Vec<u32>> = encs.iter().map(|e| e.prompt()).collect();
        let mut lm = TrainerErrors(mimic_runtime::batch::OnnxBatch::new(compiled, pad));
        mimic_trainer::eval::answer_batch(&mut lm, tok, &task.template, &prompts, &run.decoding)
    };
    Ok(mimic_trainer::eval::evaluate_batched(
        tok,
        task,
        run,
        expansion,
        batch,
        max_positions,
        answer_batch,
        progress,
    )?)
}

/// A compiled vision-language model's prompts: each prompt's images through its own image
/// encoder (preprocessing and encoding timed into `encoder_time`), handed to the runtime
/// before the prompt runs.
#[cfg(feature = "torch")]
fn onnx_prompt_images<'f, 'm: 'f>(
    v: &'f mimic_models::vlm::VisionLanguageModel,
    encoder_time: &'f std::cell::Cell<f64>,
) -> Result<mimic_trainer::eval::PromptImages<'f, TrainerErrors<mimic_runtime::OnnxLm<'m>>>> {
    let processor = super::vlm_processor(v)?;
    Ok(mimic_trainer::eval::PromptImages {
        expansion: mimic_models::vlm::request::image_tokens(&v.config, processor),
        set: Box::new(move |lm, paths| {
            let err = |e: String| mimic_trainer::TrainerError::Other(e);
            if paths.is_empty() {
                return Ok(());
            }
            let t0 = std::time::Instant::now();
            let inputs = mimic_models::vlm::request::images_inputs(&v.config, processor, paths)?;
            let features =
                lm.0.model
                    .encode_images(&inputs)
                    .map_err(|e| err(e.to_string()))?;
            encoder_time.set(encoder_time.get() + t0.elapsed().as_secs_f64());
            lm.0.model
                .set_images(features)
                .map_err(|e| err(e.to_string()))
        }),
    })
}

#[cfg(feature = "torch")]
impl<M: mimic_models::beam::BeamLm> mimic_models::beam::BeamLm for TrainerErrors<M>
where
    M::Error: std::fmt::Display,
{
    type Error = mimic_trainer::TrainerError;

    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, Self::Error> {
        self.0
            .start(prompt)
            .map_err(|e| mimic_trainer::TrainerError::Other(e.to_string()))
    }

    fn step(&mut self, parents: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>, Self::Error> {
        self.0
            .step(parents, tokens)
            .map_err(|e| mimic_trainer::TrainerError::Other(e.to_string()))
    }
}

#[cfg(feature = "torch")]
impl<M: mimic_models::batch::BatchLm> mimic_models::batch::BatchLm for TrainerErrors<M>
where
    M::Error: std::fmt::Display,
{
    type Error = mimic_trainer::TrainerError;

    fn start_batch(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, Self::Error> {
        self.0
            .start_batch(prompts)
            .map_err(|e| mimic_trainer::TrainerError::Other(e.to_string()))
    }

    fn step_batch(
        &mut self,
        parents: &[usize],
        tokens: &[u32],
    ) -> Result<Vec<Vec<f32>>, Self::Error> {
        self.0
            .step_batch(parents, tokens)
            .map_err(|e| mimic_trainer::TrainerError::Other(e.to_string()))
    }
}

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
