//! `mimic bench`: greedy decoding on the default model with each backend, side by side in one
//! run, against the memory-bandwidth bound (weight bytes read per token over measured
//! bandwidth). Python transformers eager runs through `scripts/bench_transformers.py` when a
//! Python with torch is given.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mimic_compiler::{AttentionImpl, CompileOptions};
use mimic_models::generate::{greedy, CausalLm};
use mimic_models::Model;
use mimic_runtime::{CompiledModel, OnnxLm, SessionOptions};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt lengths in tokens.
    #[arg(long, value_delimiter = ',', default_value = "32,256")]
    prompt_len: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Backends: torch, onnx, onnx-unfused, transformers.
    #[arg(long, value_delimiter = ',', default_value = "torch,onnx")]
    backends: Vec<String>,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Threads for every backend (libtorch, ONNX Runtime, the Python reference).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Python with torch and transformers, for the `transformers` backend.
    #[arg(long, default_value = ".venv-ref/bin/python")]
    python: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Row {
    pub backend: String,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub prefill_ms: f64,
    pub decode_tok_s: f64,
}

#[derive(Serialize)]
struct Report {
    model: PathBuf,
    threads: usize,
    weight_bytes_per_token: u64,
    bandwidth_gb_s: f64,
    bound_tok_s: f64,
    rows: Vec<Row>,
}

/// Bytes of float32 weights a decode step reads: every matrix and norm once, and the output
/// projection (the embedding table when tied); the embedding lookup reads one row only.
fn weight_bytes_per_token(model: &Model) -> u64 {
    let cfg = &model.config;
    let embed = (cfg.vocab_size * cfg.hidden_size) as u64;
    let total = model.weights.num_params() as u64;
    let read = if cfg.tie_word_embeddings {
        total
    } else {
        total - embed
    };
    4 * read
}

/// Read bandwidth in GB/s: `threads` threads summing disjoint parts of a 1 GiB buffer, best of 5.
fn measure_bandwidth(threads: usize) -> f64 {
    let n = (1usize << 30) / 4;
    let buf: Vec<f32> = vec![1.0; n];
    let chunk = n.div_ceil(threads.max(1));
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let sum: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || c.chunks(16).map(|v| v.iter().sum::<f32>()).sum::<f32>()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        std::hint::black_box(sum);
        best = best.max((n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// A prompt of exactly `len` tokens: a plain English text repeated and cut.
fn prompt_ids(model: &Model, len: usize) -> Result<Vec<u32>> {
    let text =
        "The history of the city goes back many centuries, to a small settlement on the river \
                where traders met to exchange grain, salt and cloth. ";
    let one = model.tokenizer()?.encode(text)?;
    if one.is_empty() {
        bail!("tokenizer produced no tokens");
    }
    Ok(one.iter().cycle().take(len).copied().collect())
}

fn time_backend<M: CausalLm>(
    name: &str,
    lm: &mut M,
    prompts: &[Vec<u32>],
    a: &Args,
) -> Result<Vec<Row>>
where
    M::Error: std::error::Error + Send + Sync + 'static,
{
    let mut rows = Vec::new();
    for ids in prompts {
        let mut prefill = Vec::new();
        let mut decode = Vec::new();
        for it in 0..a.warmup + a.iterations {
            // No EOS: every run decodes exactly `new_tokens`.
            let g = greedy(lm, ids, a.new_tokens, &[], |_| {})?;
            if it >= a.warmup {
                prefill.push(g.prefill_s * 1e3);
                decode.push((g.tokens.len() - 1) as f64 / g.decode_s);
            }
        }
        let row = Row {
            backend: name.into(),
            prompt_len: ids.len(),
            new_tokens: a.new_tokens,
            prefill_ms: median(&mut prefill),
            decode_tok_s: median(&mut decode),
        };
        tracing::info!(?row, "measured");
        rows.push(row);
    }
    Ok(rows)
}

/// The middle value (NaN for none).
pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub fn run(a: Args) -> Result<()> {
    let model = super::open_model(a.model.as_deref())?;
    // Bandwidth before and after every backend, the highest kept: the machine is shared and
    // its bandwidth varies by tens of percent, and a higher bound is the conservative one.
    eprintln!("measuring memory bandwidth ...");
    let mut bandwidth = measure_bandwidth(a.threads);
    let prompts: Vec<Vec<u32>> = a
        .prompt_len
        .iter()
        .map(|&n| prompt_ids(&model, n))
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for backend in &a.backends {
        eprintln!("benchmarking {backend} ...");
        match backend.as_str() {
            "onnx" | "onnx-unfused" => {
                let attention = if backend == "onnx" {
                    AttentionImpl::Fused
                } else {
                    AttentionImpl::Unfused
                };
                let dir = super::compiled_for(
                    &model,
                    None,
                    &CompileOptions {
                        attention,
                        last_only: true,
                    },
                )?;
                let opts = SessionOptions {
                    threads: a.threads,
                    ..Default::default()
                };
                let mut compiled = CompiledModel::load(&dir, &opts)?;
                rows.extend(time_backend(
                    backend,
                    &mut OnnxLm::new(&mut compiled),
                    &prompts,
                    &a,
                )?);
            }
            "torch" => rows.extend(bench_torch(&model, &prompts, &a)?),
            "transformers" => rows.extend(bench_transformers(&model, &a)?),
            other => bail!("unknown backend `{other}` (torch, onnx, onnx-unfused, transformers)"),
        }
        bandwidth = bandwidth.max(measure_bandwidth(a.threads));
    }
    let bytes = weight_bytes_per_token(&model);
    let bound = bandwidth * 1e9 / bytes as f64;
    let report = Report {
        model: model.source.clone(),
        threads: a.threads,
        weight_bytes_per_token: bytes,
        bandwidth_gb_s: bandwidth,
        bound_tok_s: bound,
        rows,
    };
    print_table(&report);
    if let Some(path) = &a.json {
        mimic_models::files::write_atomically(
            path,
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )?;
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "weights read per token: {:.1} MB; measured read bandwidth ({} threads): {:.1} GB/s; bound: {:.1} tokens/s",
        r.weight_bytes_per_token as f64 / 1e6,
        r.threads,
        r.bandwidth_gb_s,
        r.bound_tok_s
    );
    let base = |len: usize| {
        r.rows
            .iter()
            .find(|x| x.backend == "transformers-eager" && x.prompt_len == len)
            .map(|x| x.decode_tok_s)
    };
    println!(
        "| {:<20} | {:>6} | {:>4} | {:>11} | {:>11} | {:>9} | {:>14} |",
        "backend", "prompt", "new", "prefill ms", "decode t/s", "% bound", "x transformers"
    );
    println!(
        "|{:-<22}|{:->8}|{:->6}|{:->13}|{:->13}|{:->11}|{:->16}|",
        "", "", "", "", "", "", ""
    );
    for x in &r.rows {
        let ratio =
            base(x.prompt_len).map_or("-".to_string(), |b| format!("{:.2}x", x.decode_tok_s / b));
        println!(
            "| {:<20} | {:>6} | {:>4} | {:>11.1} | {:>11.1} | {:>8.0}% | {:>14} |",
            x.backend,
            x.prompt_len,
            x.new_tokens,
            x.prefill_ms,
            x.decode_tok_s,
            100.0 * x.decode_tok_s / r.bound_tok_s,
            ratio
        );
    }
}

#[cfg(feature = "torch")]
fn bench_torch(model: &Model, prompts: &[Vec<u32>], a: &Args) -> Result<Vec<Row>> {
    tch::set_num_threads(a.threads as i32);
    let tm = mimic_trainer::TorchModel::new(model, tch::Device::Cpu)?;
    time_backend("torch", &mut mimic_trainer::TorchLm::new(&tm), prompts, a)
}

#[cfg(not(feature = "torch"))]
fn bench_torch(_: &Model, _: &[Vec<u32>], _: &Args) -> Result<Vec<Row>> {
    bail!("this mimic was built without the `torch` feature")
}

/// Runs `scripts/bench_transformers.py` on the same weights and reads its JSON.
fn bench_transformers(model: &Model, a: &Args) -> Result<Vec<Row>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_transformers.py");
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
        .args(["--threads", &a.threads.to_string()])
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
