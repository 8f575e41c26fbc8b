//! `mimic bench-vision`: a vision-language model's image encoder (tower and connector) per
//! image, on libtorch, in ONNX Runtime and in Python transformers (the peer a user would
//! otherwise run), side by side in one run. Each backend runs in a child process of its own
//! (this executable with `--only BACKEND`, or `scripts/bench_vision_transformers.py`), so
//! that its peak resident memory is its own: the child reports the memory before loading the
//! encoder and its peak after the timed runs.
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// The image to encode (PNG or JPEG); default: a synthetic 640x480 gradient.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Images per encoder call (the same image repeated).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed calls per backend, after two untimed ones.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    #[command(flatten)]
    json: super::JsonArgs,
    /// The Python with transformers for the transformers row (`make reference-env`); the row
    /// is left out when it is missing.
    #[arg(long, default_value = ".venv-ref/bin/python")]
    python: PathBuf,
    /// Run one backend and print its measurement as JSON (what the parent runs).
    #[arg(long, hide = true, value_enum)]
    only: Option<Backend>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    Torch,
    Onnx,
}

/// One backend's numbers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Measurement {
    backend: String,
    images_per_call: usize,
    /// Milliseconds per image: median, and the 10th and 90th percentiles of the calls.
    ms_per_image: f64,
    ms_p10: f64,
    ms_p90: f64,
    /// Resident memory before the encoder was loaded, and the peak after the timed calls (MiB).
    rss_before_mib: f64,
    peak_rss_mib: f64,
}

/// `VmRSS` or `VmHWM` of this process, in MiB.
fn status_mib(key: &str) -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} in /proc/self/status"))?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unreadable {line:?}"))?;
    Ok(kb / 1024.0)
}

/// The encoder inputs of the benchmark's batch.
fn inputs(
    a: &Args,
    v: &mimic_models::vlm::VisionLanguageModel,
) -> Result<mimic_models::vlm::inputs::EncoderInputs> {
    let image = match &a.image {
        Some(p) => mimic_models::image::decode::load_image(p)?,
        None => image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        })),
    };
    let processor = v
        .processor
        .as_ref()
        .with_context(|| format!("{}: preprocessor_config.json missing", v.source.display()))?;
    let processed = processor.process(&vec![image; a.batch])?;
    Ok(mimic_models::vlm::inputs::encoder_inputs(
        &v.config,
        &processed,
        mimic_models::vision::patches::Bucketing::Transformers5,
    )?)
}

/// Median and the 10th and 90th percentiles of `xs` (sorted in place).
fn spread(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

/// Times `call` (two untimed calls first) and reports memory around it.
fn measure(
    a: &Args,
    backend: Backend,
    rss_before: f64,
    mut call: impl FnMut() -> Result<()>,
) -> Result<Measurement> {
    call()?;
    call()?;
    let mut ms = Vec::with_capacity(a.repeats);
    for _ in 0..a.repeats.max(1) {
        let t = std::time::Instant::now();
        call()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3 / a.batch as f64);
    }
    let (median, p10, p90) = spread(&mut ms);
    Ok(Measurement {
        backend: format!("{backend:?}").to_lowercase(),
        images_per_call: a.batch,
        ms_per_image: median,
        ms_p10: p10,
        ms_p90: p90,
        rss_before_mib: rss_before,
        peak_rss_mib: status_mib("VmHWM")?,
    })
}

/// One backend, in this process.
fn run_one(a: &Args, backend: Backend) -> Result<Measurement> {
    let path = a.model.path()?;
    let v = mimic_models::vlm::VisionLanguageModel::open(&path)
        .with_context(|| format!("cannot load model {}", path.display()))?;
    let inputs = inputs(a, &v)?;
    let rss_before = status_mib("VmRSS")?;
    match backend {
        Backend::Onnx => {
            let dir =
                std::env::temp_dir().join(format!("mimic-bench-vision-{}", std::process::id()));
            mimic_compiler::vision::compile_image_encoder(&v.encoder, &dir)?;
            drop(v);
            let opts = mimic_runtime::SessionOptions {
                threads: a.threads.threads,
                ..Default::default()
            };
            let model = mimic_runtime::VisionModel::load(&dir, &opts);
            let _ = std::fs::remove_dir_all(&dir);
            let mut model = model?;
            let patches = match (&inputs.position_ids, &inputs.patch_mask) {
                (Some(i), Some(m)) => Some((i.as_slice(), m.as_slice())),
                _ => None,
            };
            measure(a, backend, rss_before, || {
                model.run(&inputs.pixel_values, patches)?;
                Ok(())
            })
        }
        Backend::Torch => run_torch(a, v, &inputs, rss_before),
    }
}

#[cfg(feature = "torch")]
fn run_torch(
    a: &Args,
    v: mimic_models::vlm::VisionLanguageModel,
    inputs: &mimic_models::vlm::inputs::EncoderInputs,
    rss_before: f64,
) -> Result<Measurement> {
    a.threads.apply_to_torch();
    let _guard = tch::no_grad_guard();
    let encoder = mimic_trainer::TorchVision::encoder(&v.encoder, tch::Device::Cpu)?;
    drop(v);
    measure(a, Backend::Torch, rss_before, || {
        encoder.encode_inputs(inputs, false)?;
        Ok(())
    })
}

#[cfg(not(feature = "torch"))]
fn run_torch(
    _: &Args,
    _: mimic_models::vlm::VisionLanguageModel,
    _: &mimic_models::vlm::inputs::EncoderInputs,
    _: f64,
) -> Result<Measurement> {
    bail!("this mimic was built without the `torch` feature: no libtorch backend to time")
}

/// The transformers peer, when its Python is there.
fn transformers_row(a: &Args, model: &std::path::Path) -> Result<Option<Measurement>> {
    if !a.python.is_file() {
        return Ok(None);
    }
    eprintln!("timing the image encoder in transformers ...");
    let script = super::repo_file("scripts/bench_vision_transformers.py")?;
    let mut cmd = std::process::Command::new(&a.python);
    cmd.arg(&script)
        .arg("--model")
        .arg(model)
        .args(["--batch", &a.batch.to_string()])
        .args(["--repeats", &a.repeats.to_string()])
        .args(["--threads", &a.threads.resolved().to_string()]);
    if let Some(i) = &a.image {
        cmd.arg("--image").arg(i);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", a.python.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}",
            a.python.display(),
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let last = line.lines().last().unwrap_or_default();
    Ok(Some(serde_json::from_str(last).with_context(|| {
        format!("unreadable transformers measurement {line:?}")
    })?))
}

pub fn run(a: Args) -> Result<()> {
    if let Some(backend) = a.only {
        let m = run_one(&a, backend)?;
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    let path = a.model.path()?;
    if !mimic_models::vlm::VisionLanguageModel::is_vlm_dir(&path) {
        bail!(
            "{}: not a vision-language model folder (bench-vision times an image encoder)",
            path.display()
        );
    }
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    let backends: &[Backend] = if cfg!(feature = "torch") {
        &[Backend::Torch, Backend::Onnx]
    } else {
        &[Backend::Onnx]
    };
    for &backend in backends {
        eprintln!("timing the image encoder on {backend:?} ...");
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("bench-vision")
            .arg("--model")
            .arg(&path)
            .args(["--batch", &a.batch.to_string()])
            .args(["--repeats", &a.repeats.to_string()])
            .args(["--threads", &a.threads.threads.to_string()])
            .args(["--only", &format!("{backend:?}").to_lowercase()]);
        if let Some(i) = &a.image {
            cmd.arg("--image").arg(i);
        }
        let out = cmd
            .output()
            .context("cannot run the benchmark's child process")?;
        if !out.status.success() {
            bail!(
                "the {backend:?} run failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let m: Measurement = serde_json::from_str(line.trim())
            .with_context(|| format!("unreadable measurement {line:?}"))?;
        rows.push(m);
    }
    match transformers_row(&a, &path) {
        Ok(Some(m)) => rows.push(m),
        Ok(None) => eprintln!(
            "transformers left out: {} not found (make reference-env installs it)",
            a.python.display()
        ),
        Err(e) => return Err(e),
    }
    let mut out = a.json.table();
    writeln!(
        out,
        "{}: image encoder (tower and connector), {} image(s) per call, {} threads",
        path.display(),
        a.batch,
        a.threads.resolved()
    )?;
    writeln!(
        out,
        "| {:<12} | {:>12} | {:>17} | {:>16} | {:>15} | {:>13} |",
        "backend",
        "ms / image",
        "p10 - p90 (ms)",
        "RSS before (MiB)",
        "peak RSS (MiB)",
        "added (MiB)"
    )?;
    writeln!(
        out,
        "|{:-<14}|{:->14}|{:->19}|{:->18}|{:->17}|{:->15}|",
        "", "", "", "", "", ""
    )?;
    for r in &rows {
        writeln!(
            out,
            "| {:<12} | {:>12.3} | {:>17} | {:>16.1} | {:>15.1} | {:>13.1} |",
            r.backend,
            r.ms_per_image,
            format!("{:.3} - {:.3}", r.ms_p10, r.ms_p90),
            r.rss_before_mib,
            r.peak_rss_mib,
            r.peak_rss_mib - r.rss_before_mib
        )?;
    }
    writeln!(
        out,
        "RSS before: the process before the backend loads the encoder (mimic: the weights read \
         from disk; transformers: torch imported); added: what loading it and the runs add to \
         the peak"
    )?;
    a.json
        .write(&serde_json::json!({ "model": path, "rows": rows }))?;
    Ok(())
}
