//! `mimic align`: a vision-language model made here. A SigLIP tower and an Idefics3 connector
//! are trained from scratch under the frozen language model on easy-VQA's training images,
//! captioned from the data set's own labels ("a red circle"), several images to a sequence;
//! the result is an HF folder in the `Idefics3ForConditionalGeneration` layout.
use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// The language model, kept frozen (default: SmolLM2-135M-Instruct).
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// easy-VQA's data folder (default: the installed package's).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Output folder: model/ (the HF folder), vision.safetensors (the trained encoder alone),
    /// checkpoint.safetensors, log.json and loss.svg.
    #[arg(long, value_name = "DIR", default_value = "runs/smolvlm-easy-vqa")]
    pub out: PathBuf,
    /// Train nothing: assemble model/ from this trained encoder (a vision.safetensors, e.g.
    /// the repository's data/vlm/easy-vqa-encoder.safetensors).
    #[arg(long, value_name = "FILE")]
    pub encoder: Option<PathBuf>,
    /// Start training from this encoder (a vision.safetensors) instead of fresh weights: a
    /// second schedule on top of an earlier run.
    #[arg(long, value_name = "FILE", conflicts_with = "encoder")]
    pub init: Option<PathBuf>,
    /// Optimiser steps.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Images per sequence: each holds 1 to this many, each followed by its caption.
    #[arg(long, default_value_t = 3)]
    pub max_images: usize,
    /// Peak learning rate of the cosine schedule.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Steps of the tower's pretraining before the alignment: a linear head on the tower
    /// learns to name each training image's caption (0: none; ignored with --init).
    #[arg(long, default_value_t = 2000)]
    pub pretrain_steps: usize,
    /// Images per pretraining step.
    #[arg(long, default_value_t = 64)]
    pub pretrain_batch: usize,
    /// Peak learning rate of the pretraining.
    #[arg(long, default_value_t = 1e-3)]
    pub pretrain_lr: f64,
    /// Held-out images (easy-VQA's test split, in order) to measure the captions on: at the
    /// end of training (500 unless given; also the pretraining's accuracy), and with
    /// --encoder, the given encoder's (only when given).
    #[arg(long, value_name = "N")]
    pub holdout: Option<usize>,
    /// Seed of the encoder's initial weights and of the batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Matrix products of the language model in `f32` or `bf16` (`auto`: bf16 where fast).
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: super::train::PrecisionChoice,
    /// Write a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Continue from the folder's checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps (of --steps) have run; for tests of --resume.
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}

/// The file names inside `--out`.
pub const MODEL_DIR: &str = "model";
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
pub const ENCODER_FILE: &str = "vision.safetensors";

pub fn run(a: Args) -> Result<()> {
    use anyhow::Context;
    use mimic_models::vlm::assemble::{self, EncoderSpec};

    let language = a.model.open()?;
    let (text, image_token_id) = assemble::with_image_tokens(&language)?;
    drop(language);
    let spec = EncoderSpec::small();
    let vlm = assemble::vlm_config(&text, image_token_id, &spec)?;
    let model_dir = a.out.join(MODEL_DIR);
    if let Some(path) = &a.encoder {
        let encoder = assemble::read_encoder(path, &vlm)
            .with_context(|| format!("cannot use {} as the image encoder", path.display()))?;
        assemble::write_folder(&model_dir, &text, image_token_id, &spec, &encoder)?;
        println!(
            "wrote {} (the language model and the encoder of {})",
            model_dir.display(),
            path.display()
        );
        if a.holdout.is_none_or(|n| n == 0) {
            return Ok(());
        }
    }
    train(&a, &text, image_token_id, &spec)
}

#[cfg(feature = "torch")]
fn train(
    a: &Args,
    text: &mimic_models::Model,
    image_token_id: u32,
    spec: &mimic_models::vlm::assemble::EncoderSpec,
) -> Result<()> {
    use anyhow::Context;
    use mimic_models::datasets::easy_vqa::{image_labels, package_root, read_easy_vqa};
    use mimic_models::datasets::{EasyVqaSplit, MissingImages};
    use mimic_models::image::processor::ImageProcessor;
    use mimic_models::task::Template;
    use mimic_models::vlm::assemble;
    use mimic_models::vlm::prompt::MimicTemplate;
    use mimic_models::vlm::request::image_tokens;
    use mimic_models::vlm::{ImageEncoder, VlmArchitecture};
    use mimic_trainer::align::{AlignConfig, Aligner, CaptionedImage, PretrainConfig};
    use mimic_trainer::optim::AdamWConfig;
    use mimic_trainer::train::Precision;

    let vlm = assemble::vlm_config(text, image_token_id, spec)?;
    let model_dir = a.out.join(MODEL_DIR);
    let mut threads = a.threads.apply_to_torch();
    let device = a.device.torch()?;
    let root = match &a.root {
        Some(r) => r.clone(),
        None => package_root()?,
    };
    let train = read_easy_vqa(&root, EasyVqaSplit::Train, MissingImages::Error)?;
    let captioned = |labels: Vec<mimic_models::datasets::easy_vqa::ImageLabel>| {
        labels
            .into_iter()
            .map(|l| CaptionedImage {
                caption: l.caption(),
                image: l.image,
            })
            .collect::<Vec<_>>()
    };
    let examples = captioned(image_labels(&train.samples)?);
    let holdout = match a.holdout.unwrap_or(500) {
        0 => Vec::new(),
        n => {
            let test = read_easy_vqa(&root, EasyVqaSplit::Test, MissingImages::Error)?;
            let mut h = captioned(image_labels(&test.samples)?);
            h.truncate(n);
            h
        }
    };
    let processor = ImageProcessor::from_json(
        &assemble::processor_value(spec).to_string(),
        "preprocessor_config.json",
    )?;
    let template = Template::new(
        &MimicTemplate::for_architecture(VlmArchitecture::Idefics3).caption_task_template(),
    )?;
    let init = match a.init.as_ref().or(a.encoder.as_ref()) {
        Some(path) => assemble::read_encoder(path, &vlm)
            .with_context(|| format!("cannot start from {}", path.display()))?,
        None => assemble::init_encoder(&vlm, assemble::embedding_std(text)?, a.seed),
    };
    let encoder = ImageEncoder {
        config: vlm.clone(),
        tower: mimic_models::vision::siglip::SiglipVision {
            config: vlm.vision.clone(),
            prefix: assemble::TOWER_PREFIX.into(),
            weights: init,
            source: "init".into(),
        },
        connector_prefix: assemble::CONNECTOR_PREFIX.into(),
    };
    let decoder = mimic_trainer::TorchModel::new(text, device)?;
    let encoder = mimic_trainer::TorchVision::encoder(&encoder, device)?;
    let cfg = AlignConfig {
        steps: a.steps,
        batch: a.batch,
        max_images: a.max_images,
        seed: a.seed,
        optim: AdamWConfig {
            lr: a.lr,
            ..AlignConfig::default().optim
        },
        precision: match a.precision {
            super::train::PrecisionChoice::Auto => Precision::fastest(device),
            super::train::PrecisionChoice::F32 => Precision::F32,
            super::train::PrecisionChoice::Bf16 => Precision::Bf16,
        },
        pretrain: (a.pretrain_steps > 0 && a.init.is_none()).then_some(PretrainConfig {
            steps: a.pretrain_steps,
            batch: a.pretrain_batch,
            lr: a.pretrain_lr,
            seed: a.seed,
        }),
    };
    let tok = text
        .tokenizer
        .as_ref()
        .context("the language model has no tokenizer")?;
    let mut aligner = Aligner::new(
        cfg,
        &vlm,
        &decoder,
        encoder,
        tok,
        &processor,
        image_tokens(&vlm, &processor),
        &template,
        &examples,
        &holdout,
    )?;
    if let Some(path) = &a.encoder {
        // Measure the given encoder, train nothing.
        if let Some(h) = aligner.caption_accuracy()? {
            println!(
                "captions of {} held-out images by {}: {}",
                h.images,
                path.display(),
                describe(&h)
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let ckpt = a.out.join("checkpoint.safetensors");
    if a.resume {
        aligner.resume(&ckpt)?;
        tracing::info!(step = aligner.step, "resumed from {}", ckpt.display());
    }
    let trainable: usize = aligner
        .encoder
        .trainable_params()
        .iter()
        .map(|(_, t)| t.numel())
        .sum();
    eprintln!(
        "aligning a {}-layer SigLIP tower and its connector ({trainable} parameters) under {} \
         on {} captioned easy-VQA images, {} tokens per image, {:?} products",
        spec.vision.num_layers,
        a.model.path()?.display(),
        examples.len(),
        spec.tokens_per_image(),
        aligner.cfg.precision,
    );
    let mut report = serde_json::Map::new();
    if let (Some(pre), false) = (aligner.cfg.pretrain.clone(), a.resume) {
        eprintln!(
            "pretraining the tower: {} steps of {} images, naming each image's caption among {}",
            pre.steps,
            pre.batch,
            aligner.classes.len()
        );
        let bar = super::steps_bar(pre.steps, 0);
        let (log, held) = aligner.pretrain(&pre, |l| {
            bar.set_position(l.step as u64 + 1);
            bar.set_message(format!("loss {:.4} right {:.3}", l.loss, l.accuracy));
            if bar.is_hidden() && (l.step + 1) % 100 == 0 {
                tracing::info!(
                    step = l.step + 1,
                    of = pre.steps,
                    loss = l.loss,
                    accuracy = l.accuracy,
                    "pretraining"
                );
            }
        })?;
        bar.finish();
        if let Some(h) = &held {
            println!(
                "pretrained tower on {} held-out images: {}",
                h.images,
                describe(h)
            );
            report.insert("pretrain_holdout".into(), serde_json::to_value(h)?);
        }
        mimic_models::files::write_atomically(
            &a.out.join("pretrain.json"),
            serde_json::to_string_pretty(&log)?.as_bytes(),
        )?;
        // A resumed run starts from here, without pretraining again.
        aligner.save_checkpoint(&ckpt)?;
    }
    let bar = super::steps_bar(a.steps, aligner.step);
    let stop = a.stop_after.unwrap_or(a.steps).min(a.steps);
    while aligner.step < stop {
        if aligner.step % super::train::ADAPT_THREADS_EVERY == 0 {
            threads = a.threads.adapt_torch(threads);
        }
        let log = match aligner.train_step() {
            Ok(l) => l,
            Err(e) => {
                bar.abandon();
                return Err(
                    anyhow::anyhow!(e).context(format!("last good checkpoint: {}", ckpt.display()))
                );
            }
        };
        let done = log.step + 1;
        bar.set_position(done as u64);
        bar.set_message(format!(
            "loss {:.4} caption words right {:.3} {:.2} s/step",
            log.loss, log.word_accuracy, log.seconds
        ));
        if bar.is_hidden() && (done % 10 == 0 || done == stop) {
            tracing::info!(
                step = done,
                of = a.steps,
                loss = log.loss,
                token_accuracy = log.token_accuracy,
                word_accuracy = log.word_accuracy,
                seconds = log.seconds,
                "aligning"
            );
        }
        if done % a.checkpoint_every.max(1) == 0 || done == stop {
            aligner.save_checkpoint(&ckpt)?;
        }
    }
    bar.finish();
    let logs = &aligner.log;
    mimic_models::files::write_atomically(
        &a.out.join("log.json"),
        serde_json::to_string_pretty(logs)?.as_bytes(),
    )?;
    let series = [
        ("loss", logs.iter().map(|l| l.loss).collect()),
        (
            "caption words right",
            logs.iter().map(|l| l.word_accuracy).collect(),
        ),
    ];
    let svg = super::plot::loss_svg("alignment on easy-VQA captions", &series);
    mimic_models::files::write_atomically(&a.out.join("loss.svg"), svg.as_bytes())?;
    if aligner.step < a.steps {
        println!(
            "stopped at step {} of {}; continue with --resume",
            aligner.step, a.steps
        );
        return Ok(());
    }
    let tensors: Vec<(String, mimic_models::HostTensor)> = aligner
        .encoder
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let shape = t.size().iter().map(|&x| x as usize).collect();
            let data = Vec::<f32>::try_from(&t.to_kind(tch::Kind::Float).view([-1]))?;
            Ok((n, mimic_models::HostTensor::new(shape, data)))
        })
        .collect::<Result<_>>()?;
    let encoder_path = a.out.join(ENCODER_FILE);
    let meta = std::collections::HashMap::from([(
        "align.config".to_string(),
        serde_json::to_string(&aligner.cfg)?,
    )]);
    mimic_models::files::write_atomically(
        &encoder_path,
        &assemble::safetensors_bytes(&tensors, Some(meta))?,
    )?;
    let weights = assemble::read_encoder(&encoder_path, &vlm)?;
    assemble::write_folder(&model_dir, text, image_token_id, spec, &weights)?;
    if let Some(h) = aligner.caption_accuracy()? {
        println!("captions of {} held-out images: {}", h.images, describe(&h));
        report.insert("holdout".into(), serde_json::to_value(&h)?);
        mimic_models::files::write_atomically(
            &a.out.join("accuracy.json"),
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )?;
    }
    let n = logs.len().max(1) as f64;
    let tail = &logs[logs.len().saturating_sub(20)..];
    println!(
        "wrote {} and {} ({} steps, {:.2} s/step; last 20 steps: loss {:.4}, caption words \
         right {:.3})",
        model_dir.display(),
        encoder_path.display(),
        aligner.step,
        logs.iter().map(|l| l.seconds).sum::<f64>() / n,
        tail.iter().map(|l| l.loss).sum::<f64>() / tail.len().max(1) as f64,
        tail.iter().map(|l| l.word_accuracy).sum::<f64>() / tail.len().max(1) as f64,
    );
    Ok(())
}

/// `all words right 0.950 (a 1.000, colour 0.990, shape 0.955), exactly the caption 0.948`:
/// easy-VQA's captions are `a {colour} {shape}`.
#[cfg(feature = "torch")]
fn describe(h: &mimic_trainer::align::CaptionAccuracy) -> String {
    let names = ["a", "colour", "shape"];
    let words: Vec<String> = h
        .per_word
        .iter()
        .enumerate()
        .map(|(j, v)| format!("{} {v:.3}", names.get(j).copied().unwrap_or("word")))
        .collect();
    format!(
        "all words right {:.3} ({}), exactly the caption {:.3}",
        h.words,
        words.join(", "),
        h.exact
    )
}

#[cfg(not(feature = "torch"))]
fn train(
    _: &Args,
    _: &mimic_models::Model,
    _: u32,
    _: &mimic_models::vlm::assemble::EncoderSpec,
) -> Result<()> {
    anyhow::bail!(
        "this mimic was built without the `torch` feature: alignment needs libtorch \
         (--encoder FILE assembles a trained encoder without it)"
    )
}
