//! `mimic bench`: greedy decoding on the default model with each backend, side by side in one
//! run, against the memory-bandwidth bound (weight bytes read per token over measured
//! bandwidth). Python transformers eager runs through `scripts/bench_transformers.py` when a
//! Python with torch is given.
//!
//! With `--heads` and `--task` it also measures what the heads cost and save: the model with
//! MimIC heads folded in (fused and unfused attention) against the base model on the same
//! prompts, and against the base model prompted with demonstrations; then a task's queries
//! answered in batches (see [`super::bench_batch`]).
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mimic_compiler::{AttentionImpl, CompileOptions};
use mimic_models::generate::greedy;
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
    /// Backends: torch, onnx, onnx-unfused, onnx-kernel, transformers; with --heads
    /// onnx-mimic, onnx-mimic-unfused and onnx-mimic-kernel (the heads folded in); with --task
    /// onnx-icl and onnx-icl-kernel (the base model with `--shots` demonstrations before each
    /// prompt). `-unfused` and `-kernel` name the attention form (`--attention`), fused
    /// without a suffix.
    #[arg(long, value_delimiter = ',', default_value = "torch,onnx")]
    backends: Vec<String>,
    /// MimIC heads for the onnx-mimic backends and the batched runs.
    #[arg(long)]
    heads: Option<PathBuf>,
    /// A task: demonstrations for onnx-icl, and test queries for the batched runs.
    #[arg(long)]
    task: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    shots: usize,
    #[arg(long, default_value = mimic_models::prompt::DEFAULT_TEMPLATE)]
    template: String,
    /// Batch sizes of the batched runs (needs --task).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batch_sizes: Vec<usize>,
    /// Leave out the batched runs.
    #[arg(long)]
    no_batched: bool,
    /// Test queries answered at each batch size.
    #[arg(long, default_value_t = 64)]
    batch_queries: usize,
    /// New tokens per answer in the batched runs (every answer this long: equal work).
    #[arg(long, default_value_t = 8)]
    answer_tokens: usize,
    /// Attention form of the batched runs' compiled models (fused, unfused, kernel).
    #[arg(long, default_value = "fused")]
    batched_attention: AttentionImpl,
    /// Rounds of the batched runs (all queries each round, methods interleaved); each
    /// method's rate is its median round's.
    #[arg(long, default_value_t = 3)]
    batch_rounds: usize,
    /// Sessions of every ONNX backend (and batched method), loaded in mirrored order
    /// (a b c, c b a, ...) and timed alike: on the machines measured, a session built later
    /// runs a few percent faster than one built before it, and the mirror cancels that.
    #[arg(long, default_value_t = 2)]
    copies: usize,
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
    /// Tokens the model actually processes before decoding (with demonstrations for
    /// onnx-icl); the prompt length otherwise.
    #[serde(default)]
    pub prompt_tokens: usize,
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
    heads: Option<PathBuf>,
    task: Option<PathBuf>,
    batched: Vec<super::bench_batch::BatchRow>,
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

#[cfg(feature = "torch")]
fn time_backend<M: mimic_models::generate::CausalLm>(
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
            prompt_tokens: ids.len(),
            new_tokens: a.new_tokens,
            prefill_ms: median(&mut prefill),
            decode_tok_s: median(&mut decode),
        };
        tracing::info!(?row, "measured");
        rows.push(row);
    }
    Ok(rows)
}

/// Loads `copies` sessions of each folder, in mirrored order (the folders forward, then
/// backward, ...); returns each folder's sessions. Sessions built later run a few percent
/// faster on the machines measured (the same folder too: it goes with when ONNX Runtime
/// prepacks the weights), so every backend gets early and late ones alike.
pub(super) fn load_mirrored(
    dirs: &[&std::path::Path],
    copies: usize,
    opts: &SessionOptions,
) -> Result<Vec<Vec<CompiledModel>>> {
    let mut out: Vec<Vec<CompiledModel>> = dirs.iter().map(|_| Vec::new()).collect();
    for copy in 0..copies.max(1) {
        let order: Vec<usize> = match copy % 2 {
            0 => (0..dirs.len()).collect(),
            _ => (0..dirs.len()).rev().collect(),
        };
        for i in order {
            out[i].push(CompiledModel::load(dirs[i], opts)?);
        }
    }
    Ok(out)
}

/// Times ONNX backends in lockstep. For each prompt and iteration every session prefills in
/// turn (its backend's demonstration prefix, if any, before the prompt); then they decode one
/// token each in turn, the order rotating step by step, so the machine's drift falls on all
/// of them alike down to the scale of one step. They share the process's ONNX Runtime thread
/// pool ([`mimic_runtime::environment`]), so none leaves workers spinning on the cores the
/// next one needs. Every run decodes exactly `new_tokens` (no EOS). A backend's decode rate
/// in an iteration is over all its sessions ([`load_mirrored`]); medians over iterations.
fn time_interleaved(
    onnx: &mut [(String, Vec<CompiledModel>, Vec<u32>)],
    prompts: &[Vec<u32>],
    a: &Args,
) -> Result<Vec<Row>> {
    use mimic_models::generate::{argmax, CausalLm};
    let mut rows = Vec::new();
    let backends = onnx.len();
    // Each backend's sessions each decode `new_tokens - 1` steps an iteration.
    let steps: Vec<usize> = onnx
        .iter()
        .map(|o| o.1.len() * a.new_tokens.saturating_sub(1))
        .collect();
    for ids in prompts {
        let mut prefill = vec![Vec::new(); backends];
        let mut decode = vec![Vec::new(); backends];
        let full: Vec<Vec<u32>> = onnx
            .iter()
            .map(|(_, _, prefix)| [prefix.as_slice(), ids].concat())
            .collect();
        for it in 0..a.warmup + a.iterations {
            // Every session with the backend it belongs to.
            let mut lms: Vec<(usize, OnnxLm)> = onnx
                .iter_mut()
                .enumerate()
                .flat_map(|(b, o)| o.1.iter_mut().map(move |m| (b, OnnxLm::new(m))))
                .collect();
            let n = lms.len();
            let mut logits = vec![Vec::new(); n];
            // Prefills too take turns in an order that rotates iteration by iteration.
            for i in (0..n).map(|k| (k + it) % n) {
                let (b, lm) = &mut lms[i];
                let t = Instant::now();
                logits[i] = lm.extend(&full[*b])?;
                if it >= a.warmup {
                    prefill[*b].push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            let mut seconds = vec![0f64; backends];
            for step in 1..a.new_tokens {
                for i in (0..n).map(|k| (k + step) % n) {
                    let next = argmax(&logits[i]);
                    let (b, lm) = &mut lms[i];
                    let t = Instant::now();
                    logits[i] = lm.extend(&[next])?;
                    seconds[*b] += t.elapsed().as_secs_f64();
                }
            }
            if it >= a.warmup && a.new_tokens > 1 {
                for b in 0..backends {
                    decode[b].push(steps[b] as f64 / seconds[b]);
                }
            }
        }
        for (i, (name, _, prefix)) in onnx.iter().enumerate() {
            let row = Row {
                backend: name.clone(),
                prompt_len: ids.len(),
                prompt_tokens: prefix.len() + ids.len(),
                new_tokens: a.new_tokens,
                prefill_ms: median(&mut prefill[i]),
                decode_tok_s: median(&mut decode[i]),
            };
            tracing::info!(?row, "measured");
            rows.push(row);
        }
    }
    Ok(rows)
}

/// An ONNX backend's name split into its model (`onnx`, `onnx-mimic`, `onnx-icl`) and its
/// attention form (no suffix: fused; `-unfused`, `-kernel`).
fn onnx_backend(name: &str) -> Option<(&'static str, AttentionImpl)> {
    let (rest, attention) = if let Some(r) = name.strip_suffix("-unfused") {
        (r, AttentionImpl::Unfused)
    } else if let Some(r) = name.strip_suffix("-kernel") {
        (r, AttentionImpl::Kernel)
    } else {
        (name, AttentionImpl::Fused)
    };
    let kind = match rest {
        "onnx" => "onnx",
        "onnx-mimic" => "onnx-mimic",
        "onnx-icl" if attention != AttentionImpl::Unfused => "onnx-icl",
        _ => return None,
    };
    Some((kind, attention))
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
    let heads = super::read_heads(&model, a.heads.as_deref())?;
    let task = match &a.task {
        Some(p) => Some(task_prompts(&model, p, &a)?),
        None => None,
    };
    // The ONNX backends run in lockstep, one decode step each in turn, so that the machine's
    // drift during the run falls on all of them alike (their ratios are the targets).
    let mut backends: Vec<(String, PathBuf, Vec<u32>)> = Vec::new();
    for backend in a.backends.iter().filter(|b| b.starts_with("onnx")) {
        let Some((kind, attention)) = onnx_backend(backend) else {
            bail!("unknown backend `{backend}` (onnx, onnx-mimic, onnx-icl, each also with -unfused or -kernel except onnx-icl-unfused)")
        };
        let with_heads = match kind == "onnx-mimic" {
            true => Some(
                heads
                    .as_ref()
                    .with_context(|| format!("backend {backend} needs --heads FILE"))?,
            ),
            false => None,
        };
        let prefix = match kind {
            "onnx-icl" => task
                .as_ref()
                .with_context(|| "backend onnx-icl needs --task FILE")?
                .demo_prefix
                .clone(),
            _ => vec![],
        };
        let opts = CompileOptions {
            attention,
            last_only: true,
            ..Default::default()
        };
        let dir = super::compiled_for(&model, with_heads, &opts)?;
        backends.push((backend.clone(), dir, prefix));
    }
    let session = SessionOptions {
        threads: a.threads,
        ..Default::default()
    };
    let dirs: Vec<&std::path::Path> = backends.iter().map(|b| b.1.as_path()).collect();
    let sessions = load_mirrored(&dirs, a.copies, &session)?;
    let mut onnx: Vec<(String, Vec<CompiledModel>, Vec<u32>)> = backends
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
        rows.extend(time_interleaved(&mut onnx, &prompts, &a)?);
        bandwidth = bandwidth.max(measure_bandwidth(a.threads));
    }
    // The batched runs load sessions of their own.
    drop(onnx);
    for backend in a.backends.iter().filter(|b| !b.starts_with("onnx")) {
        eprintln!("benchmarking {backend} ...");
        match backend.as_str() {
            "torch" => rows.extend(bench_torch(&model, &prompts, &a)?),
            "transformers" => rows.extend(bench_transformers(&model, &a)?),
            other => bail!("unknown backend `{other}` (torch, transformers, onnx, onnx-unfused, onnx-mimic, onnx-mimic-unfused, onnx-icl)"),
        }
        bandwidth = bandwidth.max(measure_bandwidth(a.threads));
    }
    let mut batched = Vec::new();
    if let Some(t) = &task {
        if !a.no_batched && !a.batch_sizes.is_empty() {
            batched = bench_batched(&model, heads.as_ref(), t, &a)?;
        }
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
        heads: a.heads.clone(),
        task: a.task.clone(),
        batched,
    };
    print_table(&report);
    if !report.batched.is_empty() {
        super::bench_batch::print_batch_table(&report.batched);
    }
    print_targets(&report);
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
        "| {:<20} | {:>6} | {:>6} | {:>4} | {:>11} | {:>11} | {:>9} | {:>14} |",
        "backend",
        "prompt",
        "tokens",
        "new",
        "prefill ms",
        "decode t/s",
        "% bound",
        "x transformers"
    );
    println!(
        "|{:-<22}|{:->8}|{:->8}|{:->6}|{:->13}|{:->13}|{:->11}|{:->16}|",
        "", "", "", "", "", "", "", ""
    );
    for x in &r.rows {
        let ratio =
            base(x.prompt_len).map_or("-".to_string(), |b| format!("{:.2}x", x.decode_tok_s / b));
        println!(
            "| {:<20} | {:>6} | {:>6} | {:>4} | {:>11.1} | {:>11.1} | {:>8.0}% | {:>14} |",
            x.backend,
            x.prompt_len,
            x.prompt_tokens,
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

/// The prompts a task gives the benchmark.
pub struct TaskPrompts {
    /// The start token and `--shots` demonstrations, put before every onnx-icl prompt.
    pub demo_prefix: Vec<u32>,
    /// Test queries zero-shot and with demonstrations, with their expected answers.
    pub zero_shot: Vec<(Vec<u32>, String)>,
    pub in_context: Vec<(Vec<u32>, String)>,
}

#[cfg(feature = "torch")]
fn task_prompts(model: &Model, path: &std::path::Path, a: &Args) -> Result<TaskPrompts> {
    use mimic_trainer::rng::SplitMix64;
    use mimic_trainer::task::{start_token, Encoded, Task, Template};
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

#[cfg(not(feature = "torch"))]
fn task_prompts(_: &Model, _: &std::path::Path, _: &Args) -> Result<TaskPrompts> {
    bail!("--task needs the `torch` feature (tasks and templates live in the trainer crate)")
}

/// The batched runs: base zero-shot, MimIC (when --heads), and in-context prompting.
fn bench_batched(
    model: &Model,
    heads: Option<&mimic_models::Heads>,
    t: &TaskPrompts,
    a: &Args,
) -> Result<Vec<super::bench_batch::BatchRow>> {
    use super::bench_batch::{time_batched, Contender};
    let opts = CompileOptions {
        attention: a.batched_attention,
        last_only: true,
        ..Default::default()
    };
    let base = super::compiled_for(model, None, &opts)?;
    let mut contenders = vec![Contender {
        method: "zero-shot".into(),
        dir: &base,
        queries: t.zero_shot.clone(),
    }];
    let with_heads;
    if let Some(h) = heads {
        with_heads = super::compiled_for(model, Some(h), &opts)?;
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
            a.threads,
            a.batch_rounds,
            a.copies,
        )?;
        tracing::info!(?r, "measured");
        rows.extend(r);
    }
    Ok(rows)
}

/// The comparisons the compiler issue sets targets for, from this run's rows.
fn print_targets(r: &Report) {
    let decode = |backend: &str, len: usize| {
        r.rows
            .iter()
            .find(|x| x.backend == backend && x.prompt_len == len)
    };
    let mut lens: Vec<usize> = r.rows.iter().map(|x| x.prompt_len).collect();
    lens.sort_unstable();
    lens.dedup();
    for len in lens {
        for (suffix, form) in [("", "fused"), ("-kernel", "through mimic's kernel")] {
            let (b, m) = (
                decode(&format!("onnx{suffix}"), len),
                decode(&format!("onnx-mimic{suffix}"), len),
            );
            if let (Some(b), Some(m)) = (b, m) {
                println!(
                    "prompt {len}: MimIC {form} decode costs {:+.1}% over the base model {form} (target at most +3%); prefill {:.2}x",
                    100.0 * (b.decode_tok_s / m.decode_tok_s - 1.0),
                    m.prefill_ms / b.prefill_ms
                );
            }
        }
        // Attention forms against each other: `a` over `b`, as `a/b`.
        for (a, b, what, ratio) in [
            ("onnx-kernel", "onnx", "base", "kernel/fused"),
            ("onnx-mimic-kernel", "onnx-mimic", "MimIC", "kernel/fused"),
            ("onnx", "onnx-unfused", "base", "fused/unfused"),
            ("onnx-mimic", "onnx-mimic-unfused", "MimIC", "fused/unfused"),
        ] {
            if let (Some(x), Some(y)) = (decode(a, len), decode(b, len)) {
                println!(
                    "prompt {len}: {what} {ratio} decode speed {:.2}x, prefill time {:.2}x (CPU execution provider)",
                    x.decode_tok_s / y.decode_tok_s,
                    x.prefill_ms / y.prefill_ms
                );
            }
        }
    }
    let batched = |method: &str, batch: usize| {
        r.batched
            .iter()
            .find(|x| x.method.starts_with(method) && x.batch == batch)
    };
    // Ratios within each round too: the methods ran interleaved in it.
    let per_round = |a: &super::bench_batch::BatchRow,
                     b: &super::bench_batch::BatchRow,
                     f: &dyn Fn(f64) -> String| {
        a.rounds_queries_per_s
            .iter()
            .zip(&b.rounds_queries_per_s)
            .map(|(x, y)| f(x / y))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    if let (Some(b), Some(m)) = (batched("zero-shot", 1), batched("mimic", 1)) {
        println!(
            "batch 1: MimIC per-query latency {:.3}x the base model's (target at most 1.03x); per round {}",
            m.seconds_per_query / b.seconds_per_query,
            per_round(b, m, &|x| format!("{x:.3}x"))
        );
    }
    let largest = r.batched.iter().map(|x| x.batch).max().unwrap_or(0);
    if let (Some(m), Some(i)) = (batched("mimic", largest), batched("icl", largest)) {
        let speedup = m.queries_per_s / i.queries_per_s;
        let tokens = i.tokens_per_query / m.tokens_per_query;
        println!(
            "batch {largest}: MimIC {:.2}x the queries/s of in-context prompting, which processes {:.2}x the tokens per query: {:.0}% of that ratio (target at least 80%; per round {}); exact match {:.3} vs {:.3}",
            speedup,
            tokens,
            100.0 * speedup / tokens,
            per_round(m, i, &|x| format!("{:.0}%", 100.0 * x / tokens)),
            m.exact_match,
            i.exact_match
        );
    }
}
