use std::path::PathBuf;

use anyhow::Result;
use mimic_models::Method;

/// Steps between two checks of the idle cores (`--threads 0`).
#[cfg(feature = "torch")]
pub(crate) const ADAPT_THREADS_EVERY: usize = 10;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub task: super::TaskArgs,
    /// mimic (MimIC, additive: o = h + mu u), mimic-convex (o = (1 - mu) h + mu u), live or
    /// lora.
    #[arg(long, default_value = "mimic", value_parser = super::one_of::<Method>(super::values::METHOD))]
    pub method: Method,
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Demonstrations the teacher sees before each query.
    #[arg(long, default_value_t = 8)]
    pub shots: usize,
    /// Optimiser steps.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Queries per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Peak learning rate of the cosine schedule (default: the method's, 5e-3 for MimIC).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Activation site aligned between teacher and student.
    #[arg(long, default_value = "mlp", value_parser = ["mlp", "attn", "layer"])]
    pub site: String,
    /// Alignment loss between the teacher's and the student's activations at `--site`.
    #[arg(long, value_enum, default_value = "mse")]
    pub align: Align,
    /// Weight of the alignment loss (default: the method's).
    #[arg(long)]
    pub align_weight: Option<f64>,
    /// Weight of the answer's cross-entropy (default: the method's).
    #[arg(long)]
    pub ce_weight: Option<f64>,
    /// Weight of KL(teacher logits || student logits) on the answer (default: the method's).
    #[arg(long)]
    pub kl_weight: Option<f64>,
    /// LoRA: rank of the low-rank update.
    #[arg(long, default_value_t = 8)]
    pub lora_rank: usize,
    /// LoRA: scale alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// LoRA: the projections adapted.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "self_attn.q_proj,self_attn.v_proj",
        value_parser = mimic_models::heads::LORA_TARGETS
    )]
    pub lora_targets: Vec<String>,
    /// Output folder (heads.safetensors, checkpoint.safetensors, log.json, loss.svg);
    /// default runs/<task>-<method>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Demonstrations: `per-query` (each query its own, as published) or `shared` (one set per
    /// batch; the teacher runs it once and the queries continue from its cache, about 1.6x
    /// faster a step at the same accuracy); `auto` is shared unless the model has a sliding
    /// window, which a shared prefix would shift.
    #[arg(long, value_enum, default_value = "auto")]
    pub demos: Demos,
    /// Matrix products in `f32`, or in `bf16` with everything else in float32 (mixed
    /// precision, as the published recipe trains); `auto` takes bf16 where it is fast (CUDA, or
    /// a CPU with AVX512-BF16) and f32 elsewhere.
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: PrecisionChoice,
    /// Write a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Continue from the folder's checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps (of --steps) have run; for tests of --resume.
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// Make the loss NaN at this step; for tests of the guard.
    #[arg(long, hide = true)]
    pub poison_step: Option<usize>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}

/// The alignment loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Align {
    /// Mean squared error.
    Mse,
    /// One minus the cosine similarity.
    Cosine,
}

/// Where the teacher's demonstrations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Demos {
    /// Shared unless the model has a sliding window.
    Auto,
    /// Each query its own demonstrations (the published sampling).
    PerQuery,
    /// One set of demonstrations per batch.
    Shared,
}

/// The matrix products' type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionChoice {
    /// bf16 where bfloat16 products are fast (CUDA, AVX512-BF16), else f32.
    Auto,
    /// float32 throughout.
    F32,
    /// bfloat16 products, float32 elsewhere.
    Bf16,
}

#[cfg(feature = "torch")]
pub fn run(a: Args) -> Result<()> {
    use anyhow::Context;
    use mimic_trainer::train::{AlignLoss, Precision, TrainConfig, Trainer};

    let method = a.method;
    let any = a.model.open_any()?;
    let model = any.decoder();
    let arch = match &any {
        super::AnyModel::Vision(v) => Some(v.config.architecture),
        super::AnyModel::Text(_) => None,
    };
    let (task, _) = a.task.load_for(arch, None)?;
    let mut threads = a.threads.apply_to_torch();
    let device = a.device.torch()?;
    // A vision-language model: its language model is trained, its image encoder turns the
    // task's images into image tokens once.
    let torch = super::TorchModels::new(&any, device, Some(&task))?;
    let tm = torch.decoder();
    let mut cfg = TrainConfig::for_method(method);
    cfg.shots = a.shots;
    cfg.steps = a.steps;
    cfg.batch = a.batch;
    cfg.seed = a.task.seed;
    cfg.site = a.site.clone();
    cfg.align = match a.align {
        Align::Mse => AlignLoss::Mse,
        Align::Cosine => AlignLoss::Cosine,
    };
    if let Some(lr) = a.lr {
        cfg.optim.lr = lr;
    }
    cfg.align_weight = a.align_weight.unwrap_or(cfg.align_weight);
    cfg.ce_weight = a.ce_weight.unwrap_or(cfg.ce_weight);
    cfg.kl_weight = a.kl_weight.unwrap_or(cfg.kl_weight);
    cfg.lora.rank = a.lora_rank;
    cfg.lora.alpha = a.lora_alpha;
    cfg.lora.targets = a.lora_targets.clone();
    cfg.shared_demos = match a.demos {
        Demos::Auto => mimic_trainer::train::can_share_demos(&tm.config),
        Demos::PerQuery => false,
        Demos::Shared => true,
    };
    cfg.precision = match a.precision {
        PrecisionChoice::Auto => Precision::fastest(device),
        PrecisionChoice::F32 => Precision::F32,
        PrecisionChoice::Bf16 => Precision::Bf16,
    };
    tracing::info!(precision = ?cfg.precision, shared_demos = cfg.shared_demos, "training step");
    let stem = a.task.name();
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{stem}-{}", method.name())));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let ckpt = out.join("checkpoint.safetensors");

    let mut trainer = Trainer::new(tm, model, &task, cfg)?;
    trainer.poison_step = a.poison_step;
    trainer.images = torch.images.as_ref();
    if a.resume {
        trainer.resume(&ckpt)?;
        tracing::info!(step = trainer.step, "resumed from {}", ckpt.display());
    }
    eprintln!(
        "training {} on {} ({} train / {} test pairs, {} shots, {} trainable parameters)",
        method.name(),
        a.task.name(),
        task.train.len(),
        task.test.len(),
        a.shots,
        trainer.shift.num_params()
    );
    let bar = super::steps_bar(a.steps, trainer.step);
    let stop = a.stop_after.unwrap_or(a.steps).min(a.steps);
    while trainer.step < stop {
        if trainer.step % ADAPT_THREADS_EVERY == 0 {
            threads = a.threads.adapt_torch(threads);
        }
        let log = match trainer.train_step() {
            Ok(l) => l,
            Err(e) => {
                bar.abandon();
                return Err(
                    anyhow::anyhow!(e).context(format!("last good checkpoint: {}", ckpt.display()))
                );
            }
        };
        bar.set_position(log.step as u64);
        bar.set_message(format!(
            "loss {:.4} (align {:.4} ce {:.4} kl {:.4}) {:.2} s/step",
            log.loss,
            log.align,
            log.ce,
            log.kl,
            log.teacher_s + log.student_s
        ));
        if bar.is_hidden() && (log.step % 10 == 0 || log.step == stop) {
            // No terminal for the bar: progress goes to the log.
            tracing::info!(
                step = log.step,
                of = a.steps,
                loss = log.loss,
                align = log.align,
                ce = log.ce,
                kl = log.kl,
                "training"
            );
        }
        if log.step % a.checkpoint_every == 0 || log.step == stop {
            trainer.save_checkpoint(&ckpt)?;
        }
    }
    bar.finish();
    let logs = &trainer.log;
    let json = serde_json::to_string_pretty(logs)?;
    mimic_models::files::write_atomically(&out.join("log.json"), json.as_bytes())?;
    let series = [
        ("loss", logs.iter().map(|l| l.loss).collect()),
        ("align", logs.iter().map(|l| l.align).collect()),
        ("ce", logs.iter().map(|l| l.ce).collect()),
        ("kl", logs.iter().map(|l| l.kl).collect()),
    ];
    let svg = super::plot::loss_svg(&format!("{} on {stem}", method.name()), &series);
    mimic_models::files::write_atomically(&out.join("loss.svg"), svg.as_bytes())?;
    if trainer.step == a.steps {
        let heads = out.join("heads.safetensors");
        trainer.shift.save(
            &heads,
            &model.fingerprint(),
            &model.config,
            &trainer.heads_metadata(),
        )?;
        let n = logs.len().max(1) as f64;
        println!(
            "wrote {} ({} steps, final loss {:.4}, {:.2} s/step: teacher {:.2} s, student {:.2} s)",
            heads.display(),
            trainer.step,
            logs.last().map_or(f64::NAN, |l| l.loss),
            logs.iter().map(|l| l.teacher_s + l.student_s).sum::<f64>() / n,
            logs.iter().map(|l| l.teacher_s).sum::<f64>() / n,
            logs.iter().map(|l| l.student_s).sum::<f64>() / n,
        );
    } else {
        println!(
            "stopped at step {} of {}; continue with --resume",
            trainer.step, a.steps
        );
    }
    Ok(())
}

#[cfg(not(feature = "torch"))]
pub fn run(_: Args) -> Result<()> {
    anyhow::bail!("this mimic was built without the `torch` feature: training needs libtorch")
}
