//! `mimic bench`: greedy decoding on the default model with each backend, side by side in one
//! run, against the memory-bandwidth bound (weight bytes read per token over measured
//! bandwidth). Python transformers eager runs through `scripts/bench_transformers.py` when a
//! Python with torch is given.
//!
//! With `--heads` and `--task` it also measures what the heads cost and save: the model with
//! MimIC heads folded in against the base model on the same prompts, and against the base
//! model prompted with demonstrations; then a task's queries answered in batches
//! ([`batch`]). The timing harness is [`harness`], the other backends [`backends`], the
//! tables [`report`].
mod backends;
mod batch;
mod harness;
mod images;
mod report;

/// `bench-train`'s steps take their medians as the decode rates do.
#[cfg(feature = "torch")]
pub use harness::median;

use std::path::PathBuf;

use anyhow::{Context, Result};
use mimic_compiler::{AttentionImpl, CompileOptions};
use mimic_runtime::{CompiledModel, SessionOptions};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Prompt lengths in tokens.
    #[arg(long, value_delimiter = ',', default_value = "32,256")]
    prompt_len: Vec<usize>,
    /// Tokens decoded after each prompt (no end-of-sequence stop: equal work).
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Backends, side by side. `onnx-mimic*` need --heads (the heads folded in), `onnx-icl*`
    /// need --task (the base model with `--shots` demonstrations before each prompt);
    /// `-unfused` and `-kernel` name the attention form, fused without a suffix.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "torch,onnx")]
    backends: Vec<Backend>,
    /// MimIC heads for the onnx-mimic backends and the batched runs.
    #[command(flatten)]
    heads: super::HeadsArgs,
    /// A task (a JSON file of pairs or a built-in task set's name): demonstrations for
    /// onnx-icl, and test queries for the batched runs.
    #[arg(long, value_name = "FILE|NAME")]
    task: Option<PathBuf>,
    /// With a vision-language model: questions about images from a benchmark instead (zero-
    /// shot, `--shots` demonstrations with their images, and `--heads`), answered at each of
    /// `--batch-sizes` through the compiled folder, the image encoder's share timed apart.
    #[command(flatten)]
    dataset: super::benchmark::DatasetArgs,
    /// Demonstrations before each onnx-icl prompt and each in-context batched query.
    #[arg(long, default_value_t = 8)]
    shots: usize,
    /// Prompt template of `--task`, with `{input}` and then `{output}`.
    #[arg(long, default_value = mimic_models::prompt::DEFAULT_TEMPLATE)]
    template: String,
    /// Batch sizes of the batched runs (needs --task).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batch_sizes: Vec<usize>,
    /// Leave out the batched runs.
    #[arg(long)]
    no_batched: bool,
    /// The compiled ONNX backends' weights, each format a run of every ONNX backend in the
    /// same lockstep: `f32` (the tables so far), `source` (a GGUF's 4-bit blocks kept,
    /// `MatMulNBits`; its rows are named `BACKEND@source`).
    #[arg(long, value_delimiter = ',', default_value = "f32", value_parser = super::one_of::<mimic_models::contract::WeightFormat>(super::values::WEIGHTS))]
    weights: Vec<mimic_models::contract::WeightFormat>,
    /// Test queries answered at each batch size.
    #[arg(long, default_value_t = 64)]
    batch_queries: usize,
    /// New tokens per answer in the batched runs (every answer this long: equal work).
    #[arg(long, default_value_t = 8)]
    answer_tokens: usize,
    /// Attention form of the batched runs' compiled models; default: as `mimic compile`
    /// picks for the CPU (the kernel).
    #[arg(long, value_parser = super::one_of::<AttentionImpl>(super::values::ATTENTION))]
    batched_attention: Option<AttentionImpl>,
    /// Rounds of the batched runs (all queries each round, methods interleaved); each
    /// method's rate is its median round's.
    #[arg(long, default_value_t = 3)]
    batch_rounds: usize,
    /// Sessions of every ONNX backend (and batched method), loaded in mirrored order
    /// (a b c, c b a, ...) and timed alike: on the machines measured, a session built later
    /// runs a few percent faster than one built before it, and the mirror cancels that.
    #[arg(long, default_value_t = 2)]
    copies: usize,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs; each figure is their median.
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Threads for every backend (libtorch, ONNX Runtime, the Python reference).
    #[command(flatten)]
    threads: super::ThreadsArgs,
    /// Python with torch and transformers, for the `transformers` backend.
    #[arg(long, default_value = ".venv-ref/bin/python")]
    python: PathBuf,
    #[command(flatten)]
    json: super::JsonArgs,
}

/// A backend of `mimic bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Python transformers, eager, float32 (`--python`).
    Transformers,
    /// The trainer's forward on libtorch.
    Torch,
    /// The base model in ONNX Runtime, fused attention.
    Onnx,
    /// The base model, unfused attention.
    OnnxUnfused,
    /// The base model, mimic's kernel.
    OnnxKernel,
    /// The model with the --heads folded in, fused attention.
    OnnxMimic,
    /// The model with the heads, unfused attention.
    OnnxMimicUnfused,
    /// The model with the heads, mimic's kernel.
    OnnxMimicKernel,
    /// The base model with demonstrations before each prompt, fused attention.
    OnnxIcl,
    /// The base model with demonstrations, mimic's kernel.
    OnnxIclKernel,
}

/// What an ONNX backend runs: the base model, with heads, or with demonstrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnnxModel {
    Base,
    WithHeads,
    InContext,
}

impl Backend {
    /// The name in tables and JSON.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// An ONNX backend's model and attention form; `None` for the others.
    fn onnx(self) -> Option<(OnnxModel, AttentionImpl)> {
        use AttentionImpl::{Fused, Kernel, Unfused};
        Some(match self {
            Backend::Transformers | Backend::Torch => return None,
            Backend::Onnx => (OnnxModel::Base, Fused),
            Backend::OnnxUnfused => (OnnxModel::Base, Unfused),
            Backend::OnnxKernel => (OnnxModel::Base, Kernel),
            Backend::OnnxMimic => (OnnxModel::WithHeads, Fused),
            Backend::OnnxMimicUnfused => (OnnxModel::WithHeads, Unfused),
            Backend::OnnxMimicKernel => (OnnxModel::WithHeads, Kernel),
            Backend::OnnxIcl => (OnnxModel::InContext, Fused),
            Backend::OnnxIclKernel => (OnnxModel::InContext, Kernel),
        })
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Row {
    pub backend: String,
    pub prompt_len: usize,
    /// Tokens the model actually processes before decoding (with demonstrations for
    /// onnx-icl); the prompt length otherwise.
    #[serde(default)]
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub prefill_ms: f64,
    pub decode_tok_s: f64,
}

#[derive(Serialize)]
pub struct Report {
    model: PathBuf,
    threads: usize,
    weight_bytes_per_token: u64,
    bandwidth_gb_s: f64,
    bound_tok_s: f64,
    /// The same for the `@source` rows (4-bit blocks kept).
    source_bytes_per_token: u64,
    source_bound_tok_s: f64,
    rows: Vec<Row>,
    heads: Option<PathBuf>,
    task: Option<PathBuf>,
    batched: Vec<batch::BatchRow>,
}

pub fn run(a: Args) -> Result<()> {
    use harness::measure_bandwidth;
    if a.dataset.dataset.is_some() {
        return images::run(&a);
    }
    let model = a.model.open()?;
    let threads = a.threads.resolved();
    // Bandwidth before and after every backend, the highest kept: the machine is shared and
    // its bandwidth varies by tens of percent, and a higher bound is the conservative one.
    eprintln!("measuring memory bandwidth ...");
    let mut bandwidth = measure_bandwidth(threads);
    let prompts: Vec<Vec<u32>> = a
        .prompt_len
        .iter()
        .map(|&n| harness::prompt_ids(&model, n))
        .collect::<Result<_>>()?;
    let heads = a.heads.read(&model)?;
    let task = match &a.task {
        Some(p) => Some(backends::task_prompts(&model, p, &a)?),
        None => None,
    };
    // The ONNX backends run in lockstep, one decode step each in turn, so that the machine's
    // drift during the run falls on all of them alike (their ratios are the targets).
    let mut onnx_backends: Vec<(String, PathBuf, Vec<u32>)> = Vec::new();
    let formats = a
        .weights
        .iter()
        .flat_map(|&w| a.backends.iter().map(move |b| (w, b)));
    for (weights, backend) in formats {
        let Some((what, attention)) = backend.onnx() else {
            continue;
        };
        let name = match weights {
            mimic_models::contract::WeightFormat::F32 => backend.name(),
            w => format!("{}@{}", backend.name(), w.name()),
        };
        let with_heads = match what {
            OnnxModel::WithHeads => Some(
                heads
                    .as_ref()
                    .with_context(|| format!("backend {name} needs --heads FILE"))?,
            ),
            _ => None,
        };
        let prefix = match what {
            OnnxModel::InContext => task
                .as_ref()
                .with_context(|| format!("backend {name} needs --task FILE"))?
                .demo_prefix
                .clone(),
            _ => vec![],
        };
        let opts = CompileOptions {
            attention,
            last_only: true,
            weights,
            ..Default::default()
        };
        let dir = super::compiled_for(&model, with_heads, &opts)?;
        onnx_backends.push((name, dir, prefix));
    }
    let session = SessionOptions {
        threads: a.threads.threads,
        ..Default::default()
    };
    let dirs: Vec<&std::path::Path> = onnx_backends.iter().map(|b| b.1.as_path()).collect();
    let sessions = harness::load_mirrored(&dirs, a.copies, &session)?;
    let mut onnx: Vec<(String, Vec<CompiledModel>, Vec<u32>)> = onnx_backends
        .into_iter()
        .zip(sessions)
        .map(|((name, _, prefix), models)| (name, models, prefix))
        .collect();
    let mut rows = Vec::new();
    if !onnx.is_empty() {
        eprintln!(
            "benchmarking {} in lockstep ({} sessions each) ...",
            onnx.iter()
                .map(|o| o.0.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            a.copies.max(1)
        );
        rows.extend(harness::time_interleaved(&mut onnx, &prompts, &a)?);
        bandwidth = bandwidth.max(measure_bandwidth(threads));
    }
    // The batched runs load sessions of their own.
    drop(onnx);
    for &backend in a.backends.iter().filter(|b| b.onnx().is_none()) {
        eprintln!("benchmarking {} ...", backend.name());
        match backend {
            Backend::Torch => rows.extend(backends::bench_torch(&model, &prompts, &a)?),
            _ => rows.extend(backends::bench_transformers(&model, &a)?),
        }
        bandwidth = bandwidth.max(measure_bandwidth(threads));
    }
    let mut batched = Vec::new();
    if let Some(t) = &task {
        if !a.no_batched && !a.batch_sizes.is_empty() {
            batched = backends::bench_batched(&model, heads.as_ref(), t, &a)?;
        }
    }
    let bytes = harness::weight_bytes_per_token(&model);
    let bound = bandwidth * 1e9 / bytes as f64;
    let source_bytes = harness::source_weight_bytes_per_token(&model);
    let report = Report {
        model: model.source.clone(),
        threads,
        weight_bytes_per_token: bytes,
        bandwidth_gb_s: bandwidth,
        bound_tok_s: bound,
        source_bytes_per_token: source_bytes,
        source_bound_tok_s: bandwidth * 1e9 / source_bytes as f64,
        rows,
        heads: a.heads.heads.clone(),
        task: a.task.clone(),
        batched,
    };
    let mut out = a.json.table();
    report::print_table(&mut out, &report)?;
    if !report.batched.is_empty() {
        report::print_batch_table(&mut out, &report.batched)?;
    }
    report::print_targets(&mut out, &report)?;
    a.json.write(&report)?;
    Ok(())
}
