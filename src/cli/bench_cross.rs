//! `mimic bench-cross`: what a decode step of a cross-attention decoder (Idefics) costs with
//! its image keys and values computed once per prompt (`--cross-kv once`, the default), against
//! the same decoder projecting the image latents in every step (`--cross-kv every-step`, as
//! transformers does), side by side in one run, and Python transformers itself (its decode step
//! with the perceiver's output given, so that only the cross projections repeat) when the
//! reference environment is there.
//!
//! The prompt holds `--images` images (random latents: the image encoder is not timed) between
//! short texts; each round runs both compiled folders one after the other, prefill and
//! `--steps` greedy decode steps, each step timed alone. The figures are the median step of the
//! median round, with the rounds' spread.
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Images in the prompt.
    #[arg(long, default_value_t = 3)]
    images: usize,
    /// Greedy decode steps timed per round.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// Rounds (each runs every row once).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    #[command(flatten)]
    json: super::JsonArgs,
    /// The Python with transformers for the transformers row (`make reference-env`); the row
    /// is left out when it is missing.
    #[arg(long, default_value = ".venv-ref/bin/python")]
    python: PathBuf,
}

/// One way of decoding, measured.
#[derive(Debug, Serialize)]
struct Row {
    decoder: String,
    /// Milliseconds: the prefill of the median round, and the median decode step per round.
    prefill_ms: f64,
    step_ms: f64,
    step_ms_rounds: Vec<f64>,
    /// Step time against `--cross-kv once`'s.
    vs_once: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    images: usize,
    prompt_tokens: usize,
    image_keys: usize,
    gated_blocks: usize,
    threads: usize,
    steps: usize,
    rows: Vec<Row>,
    /// The greedy tokens of both compiled decoders agree.
    identical_tokens: bool,
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(a: Args) -> Result<()> {
    use mimic_compiler::cross::CrossKv;
    use mimic_compiler::{compile_vlm, CompileOptions, HeadsSource};
    use mimic_models::generate::argmax;
    use mimic_models::rng::SplitMix64;
    use mimic_models::vlm::request::{folder_processor, image_tokens};
    use mimic_runtime::{CompiledModel, SessionOptions};

    if a.images == 0 || a.steps == 0 || a.rounds == 0 {
        bail!("--images, --steps and --rounds must be positive");
    }
    let any = a.model.open_any()?;
    let super::AnyModel::Vision(vlm) = &any else {
        bail!("bench-cross times a cross-attention decoder: give an Idefics model (--model DIR)");
    };
    let Some(x) = vlm.config.text.cross_attention.clone() else {
        bail!(
            "{} is {}, whose decoder has no cross-attention (bench-cross is for Idefics)",
            vlm.source.display(),
            vlm.config.architecture.name()
        );
    };
    let threads = a.threads.resolved();
    let tok = vlm
        .decoder
        .tokenizer
        .as_ref()
        .context("the model folder has no tokenizer.json")?;
    let processor = folder_processor(&vlm.source)?;
    let text = format!(
        "{}Answer:",
        "A photo of <image> something on a table. ".repeat(a.images)
    );
    let text = image_tokens(&vlm.config, &processor).expand(&text)?;
    let prompt = tok.encode(&text)?;
    if prompt.len() + a.steps > vlm.config.text.max_position_embeddings {
        bail!(
            "a prompt of {} tokens and {} steps is longer than the model's context of {}",
            prompt.len(),
            a.steps,
            vlm.config.text.max_position_embeddings
        );
    }
    // Latents as a LayerNorm leaves them: unit scale.
    let (n, width) = (x.latents_per_image, x.kv_input_dim);
    let mut rng = SplitMix64::new(7);
    let latents: Vec<f32> = (0..a.images * n * width)
        .map(|_| rng.normal() as f32)
        .collect();
    let latents = mimic_models::HostTensor::new(vec![a.images, n, width], latents);

    // The compiled folders live while their sessions load; removed at the end.
    let tmp =
        TempDir(std::env::temp_dir().join(format!("mimic-bench-cross-{}", std::process::id())));
    let opts = SessionOptions {
        threads,
        ..Default::default()
    };
    let modes = [CrossKv::Inputs, CrossKv::Recomputed];
    let mut models = Vec::new();
    for mode in modes {
        let dir = tmp.0.join(mode.name());
        let compile = CompileOptions {
            cross_kv: mode,
            attention: super::default_attention(
                mimic_runtime::ExecutionProvider::Cpu,
                mimic_compiler::Dtype::Fp32,
            ),
            ..Default::default()
        };
        compile_vlm(vlm, HeadsSource::None, &compile, &dir)?;
        models.push(CompiledModel::load(&dir, &opts)?);
    }
    let bar = super::steps_bar(a.rounds * modes.len(), 0);
    bar.set_message("decode rounds, cross keys/values once and every step");
    let mut prefill = vec![Vec::new(); modes.len()];
    let mut steps = vec![Vec::new(); modes.len()];
    let mut tokens = vec![Vec::new(); modes.len()];
    for _ in 0..a.rounds {
        for (i, m) in models.iter_mut().enumerate() {
            m.set_images(latents.clone())?;
            let t = std::time::Instant::now();
            let state = m.empty_state(1)?;
            let out = m.step(&prompt, state)?;
            prefill[i].push(t.elapsed().as_secs_f64() * 1e3);
            let vocab = *out.logits_shape.last().unwrap_or(&1);
            let mut next = argmax(&out.logits[out.logits.len() - vocab..]);
            let mut state = out.state;
            let mut times = Vec::with_capacity(a.steps);
            let mut got = vec![next];
            for _ in 0..a.steps {
                let t = std::time::Instant::now();
                let out = m.step(&[next], state)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                next = argmax(&out.logits[out.logits.len() - vocab..]);
                got.push(next);
                state = out.state;
            }
            steps[i].push(median(&times));
            tokens[i] = got;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let once = median(&steps[0]);
    let mut rows: Vec<Row> = modes
        .iter()
        .enumerate()
        .map(|(i, mode)| Row {
            decoder: format!("mimic, cross keys/values {}", mode.name()),
            prefill_ms: median(&prefill[i]),
            step_ms: median(&steps[i]),
            step_ms_rounds: steps[i].clone(),
            vs_once: median(&steps[i]) / once,
        })
        .collect();
    match transformers_row(&a, &vlm.source, &prompt, threads) {
        Ok(Some((prefill_ms, rounds))) => rows.push(Row {
            decoder: "transformers (PyTorch), every step".into(),
            prefill_ms,
            step_ms: median(&rounds),
            vs_once: median(&rounds) / once,
            step_ms_rounds: rounds,
        }),
        Ok(None) => tracing::warn!(
            python = %a.python.display(),
            "no reference environment: the transformers row is left out (make reference-env)"
        ),
        Err(e) => tracing::warn!("the transformers row failed: {e:#}"),
    }
    let report = Report {
        model: vlm.source.display().to_string(),
        images: a.images,
        prompt_tokens: prompt.len(),
        image_keys: a.images * n,
        gated_blocks: x.num_blocks(vlm.config.text.num_layers),
        threads,
        steps: a.steps,
        identical_tokens: tokens[0] == tokens[1],
        rows,
    };
    let mut out = a.json.table();
    writeln!(
        out,
        "{}: {} images ({} image keys) in a {}-token prompt, {} gated blocks, {} threads, \
         {} decode steps x {} rounds",
        report.model,
        report.images,
        report.image_keys,
        report.prompt_tokens,
        report.gated_blocks,
        threads,
        a.steps,
        a.rounds
    )?;
    writeln!(
        out,
        "| decoder                              | prefill ms | ms / step | rounds (min-max) | vs once |"
    )?;
    writeln!(
        out,
        "|--------------------------------------|------------|-----------|------------------|---------|"
    )?;
    for r in &report.rows {
        let (lo, hi) = r
            .step_ms_rounds
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        writeln!(
            out,
            "| {:<36} | {:>10.2} | {:>9.3} | {:>7.3}-{:<8.3} | {:>6.2}x |",
            r.decoder, r.prefill_ms, r.step_ms, lo, hi, r.vs_once
        )?;
    }
    writeln!(
        out,
        "greedy tokens of the two compiled decoders identical: {}",
        report.identical_tokens
    )?;
    a.json.write(&report)?;
    if !report.identical_tokens {
        bail!(super::CheckFailed(
            "the two compiled decoders' greedy tokens differ".into()
        ));
    }
    Ok(())
}

/// transformers' prefill and median decode step per round (milliseconds), from
/// `scripts/bench_idefics_transformers.py` in the reference environment; `None` without it.
fn transformers_row(
    a: &Args,
    model: &std::path::Path,
    prompt: &[u32],
    threads: usize,
) -> Result<Option<(f64, Vec<f64>)>> {
    if !a.python.is_file() {
        return Ok(None);
    }
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_idefics_transformers.py");
    let ids: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
    let out = std::process::Command::new(&a.python)
        .arg(&script)
        .args(["--model", &model.display().to_string()])
        .args(["--ids", &ids.join(",")])
        .args(["--images", &a.images.to_string()])
        .args(["--steps", &a.steps.to_string()])
        .args(["--rounds", &a.rounds.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    #[derive(serde::Deserialize)]
    struct Peer {
        prefill_ms: f64,
        step_ms_rounds: Vec<f64>,
    }
    let p: Peer = serde_json::from_slice(&out.stdout).context("the script's JSON")?;
    Ok(Some((p.prefill_ms, p.step_ms_rounds)))
}
