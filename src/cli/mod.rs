//! The command line: one file per subcommand.
mod bench;
mod bench_batch;
mod bench_train;
mod compile;
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
use mimic_models::Model;

#[derive(Parser)]
#[command(
    name = "mimic",
    version,
    about = "MimIC: in-context demonstrations as attention-head shifts, compiled to ONNX"
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
    /// Generate text greedily on the libtorch or the ONNX Runtime backend.
    Generate(generate::Args),
    /// Compile a model into an ONNX folder (model.onnx, weights, tokenizer, mimic.json).
    Compile(compile::Args),
    /// Benchmark greedy decoding: backends side by side, against the memory-bandwidth bound.
    Bench(bench::Args),
    /// Time one MimIC training step against the same step in Python PyTorch + transformers.
    BenchTrain(bench_train::Args),
    /// Report libtorch, ONNX Runtime, execution providers and the default model.
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
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Compile(a) => compile::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchTrain(a) => bench_train::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Run(a) => run::run(a),
    }
}

/// The model named on the command line, or the default model.
pub fn model_path(arg: Option<&Path>) -> Result<PathBuf> {
    match arg {
        Some(p) => Ok(p.to_path_buf()),
        None => Ok(mimic_models::default_model::default_model_path()?),
    }
}

pub fn open_model(arg: Option<&Path>) -> Result<Model> {
    let path = model_path(arg)?;
    Model::open(&path).with_context(|| format!("cannot load model {}", path.display()))
}

/// How ONNX Runtime runs a compiled folder: the options `generate` and `run` share.
#[derive(clap::Args)]
pub struct RuntimeArgs {
    /// ONNX Runtime execution provider.
    #[arg(long, default_value = "cpu")]
    pub ep: mimic_runtime::ExecutionProvider,
    /// Run on CPU when the execution provider is missing.
    #[arg(long, value_parser = ["cpu"])]
    pub fallback: Option<String>,
    /// Intra-op threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// TensorRT: build fp16 engines (`--ep tensorrt`).
    #[arg(long)]
    pub trt_fp16: bool,
    /// TensorRT: engine cache folder (default: trt-cache in the compiled folder).
    #[arg(long)]
    pub trt_cache: Option<PathBuf>,
}

impl RuntimeArgs {
    /// Loads the compiled folder `dir` with these options.
    pub fn load(&self, dir: &Path) -> Result<mimic_runtime::CompiledModel> {
        let opts = mimic_runtime::SessionOptions {
            threads: self.threads,
            provider: self.ep,
            fallback_cpu: self.fallback.is_some(),
            tensorrt_fp16: self.trt_fp16,
            tensorrt_cache: self.trt_cache.clone(),
        };
        mimic_runtime::CompiledModel::load(dir, &opts)
            .with_context(|| format!("cannot load {}", dir.display()))
    }
}

/// The heads file at `path` (if given), checked against `model`.
pub fn read_heads(model: &Model, path: Option<&Path>) -> Result<Option<mimic_models::Heads>> {
    path.map(|p| mimic_models::Heads::read(p, &model.fingerprint(), &model.config))
        .transpose()
        .map_err(Into::into)
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
    let build = std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let fingerprint = model.fingerprint();
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
    let passes: Vec<&str> = opts.passes.iter().map(|p| p.name()).collect();
    let tag = format!(
        "{fingerprint}-{build:x}-{:?}-{}-{}-{}{heads_tag}",
        opts.attention,
        opts.dtype.name(),
        if opts.last_only { "last" } else { "all" },
        passes.join("+")
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
    mimic_compiler::compile_model(model, source, opts, &dir)?;
    Ok(dir)
}
