//! Teaching a frozen language model to see: training a vision tower and its connector from
//! scratch so that the language model, reading the image tokens, writes the images' captions.
//!
//! Each training sequence interleaves one to `max_images` images with their captions, in the
//! MimIC caption shot of the model ([`MimicTemplate::caption_task_template`]):
//! `Image:<image><end_of_outterance>\nCaption: a red circle<end_of_outterance>\n` per image.
//! The loss is the cross-entropy of every caption token (its end marker included) under the
//! frozen language model; gradients flow through the language model into the image tokens,
//! the connector and the tower, which alone are updated (AdamW, cosine schedule). Several
//! images per sequence teach the model to take interleaved demonstrations.
use std::path::{Path, PathBuf};
use std::time::Instant;

use mimic_models::files::write_atomically;
use mimic_models::image::decode::load_image;
use mimic_models::image::processor::ImageProcessor;
use mimic_models::task::{start_token, Pair, Template};
use mimic_models::tokenizer::TextTokenizer;
use mimic_models::vlm::prompt::ImageTokens as PromptImageTokens;
use mimic_models::vlm::VlmConfig;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::optim::{cosine_lr, AdamW, AdamWConfig};
use crate::rng::SplitMix64;
use crate::torch_backend::{Forward, ImageTokens, TorchModel};
use crate::torch_vision::{TorchVision, VisionForward};
use crate::train::Precision;
use crate::{Result, TrainerError};

/// Everything that determines an alignment run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlignConfig {
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Each sequence holds 1 to this many images, drawn uniformly.
    pub max_images: usize,
    pub seed: u64,
    pub optim: AdamWConfig,
    pub precision: Precision,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            steps: 400,
            batch: 8,
            max_images: 3,
            seed: 0,
            optim: AdamWConfig {
                lr: 1e-3,
                weight_decay: 1e-2,
                ..AdamWConfig::default()
            },
            precision: Precision::F32,
        }
    }
}

/// An image and its caption.
#[derive(Debug, Clone)]
pub struct CaptionedImage {
    pub image: PathBuf,
    pub caption: String,
}

/// One step's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlignLog {
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    /// Caption tokens the model predicted right (argmax), of all caption tokens this step.
    pub token_accuracy: f64,
    /// The same over the captions' words alone (`a red circle`), not their end marker.
    #[serde(default)]
    pub word_accuracy: f64,
    pub grad_norm: f64,
    pub seconds: f64,
}

/// One image's shot, tokenized: the ids up to the caption (the image's run of image tokens
/// expanded) and the caption's ids with its end marker.
struct Shot {
    prompt: Vec<u32>,
    caption: Vec<u32>,
    /// How many of `caption`'s ids are the caption's words (the rest: its end marker).
    words: usize,
}

pub struct Aligner<'a> {
    pub cfg: AlignConfig,
    vlm: &'a VlmConfig,
    decoder: &'a TorchModel,
    pub encoder: TorchVision,
    /// Every image, preprocessed once: `[n, channels, size, size]` on the device.
    pixels: Tensor,
    shots: Vec<Shot>,
    start: Option<u32>,
    pad: u32,
    opt: AdamW,
    rng: SplitMix64,
    pub step: usize,
    pub log: Vec<AlignLog>,
}

impl<'a> Aligner<'a> {
    /// An aligner over `examples` (each image must decode and preprocess to the tower's size),
    /// training `encoder` (its tensors made trainable here) under the frozen `decoder`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: AlignConfig,
        vlm: &'a VlmConfig,
        decoder: &'a TorchModel,
        mut encoder: TorchVision,
        tok: &TextTokenizer,
        processor: &ImageProcessor,
        expansion: PromptImageTokens,
        template: &Template,
        examples: &[CaptionedImage],
    ) -> Result<Self> {
        if examples.is_empty() {
            return Err(TrainerError::Other(
                "no captioned images to align on".into(),
            ));
        }
        if cfg.max_images == 0 || cfg.batch == 0 || cfg.steps == 0 {
            return Err(TrainerError::Other(
                "steps, batch and images per sequence must be positive".into(),
            ));
        }
        let device = encoder.device;
        let size = encoder.config.image_size as i64;
        let mut pixels = Vec::with_capacity(examples.len());
        for (i, ex) in examples.iter().enumerate() {
            let img = load_image(&ex.image)?;
            let p = processor.process(std::slice::from_ref(&img))?;
            let v = &p.pixel_values;
            // [1, 1, c, h, w] for Idefics3's processor: one image of the tower's size.
            let (h, w) = (v.shape[v.shape.len() - 2], v.shape[v.shape.len() - 1]);
            if h as i64 != size || w as i64 != size || v.data.len() != 3 * h * w {
                return Err(TrainerError::Other(format!(
                    "{}: preprocessed to {h}x{w}, the tower takes {size}x{size} images \
                     (give images with a side of {size})",
                    ex.image.display()
                )));
            }
            pixels.push(Tensor::f_from_slice(&v.data)?.view([1, 3, size, size]));
            if (i + 1) % 1000 == 0 {
                tracing::info!(images = i + 1, of = examples.len(), "preprocessing images");
            }
        }
        let pixels = Tensor::cat(&pixels, 0).to_device(device);
        let expand = |text: String| -> Result<String> {
            expansion
                .expand(&text)
                .map_err(|e| TrainerError::Other(e.to_string()))
        };
        let (_, tail) = template
            .text
            .split_once("{output}")
            .ok_or_else(|| TrainerError::Other("the caption template has no {output}".into()))?;
        let shots = examples
            .iter()
            .map(|ex| {
                let pair = Pair {
                    input: String::new(),
                    output: ex.caption.clone(),
                    images: vec![ex.image.clone()],
                };
                let (q, a) = template.query_answer(&pair);
                let caption = tok.encode(&format!("{a}{tail}"))?;
                let words = tok.encode(&a)?.len();
                let words = if caption.starts_with(&tok.encode(&a)?) {
                    words
                } else {
                    0
                };
                Ok(Shot {
                    prompt: tok.encode(&expand(q)?)?,
                    caption,
                    words,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let per_image = vlm.tokens_per_image() as i64;
        if let Some(s) = shots.iter().find(|s| {
            s.prompt
                .iter()
                .filter(|&&t| t == vlm.image_token_id)
                .count() as i64
                != per_image
        }) {
            return Err(TrainerError::Other(format!(
                "a caption shot holds {} image tokens, the model takes {per_image} per image",
                s.prompt.len()
            )));
        }
        let params = encoder.make_trainable();
        let opt = AdamW::new(cfg.optim.clone(), &params.iter().collect::<Vec<_>>());
        let rng = SplitMix64::new(cfg.seed);
        Ok(Aligner {
            vlm,
            decoder,
            encoder,
            pixels,
            shots,
            start: start_token(tok),
            pad: tok.pad_id().unwrap_or(0),
            opt,
            rng,
            step: 0,
            log: Vec::new(),
            cfg,
        })
    }

    /// Draws the next batch: per sequence, its images' indices.
    fn draw(&mut self) -> Vec<Vec<usize>> {
        let n = self.shots.len();
        (0..self.cfg.batch)
            .map(|_| {
                let k = 1 + self.rng.below(self.cfg.max_images);
                (0..k).map(|_| self.rng.below(n)).collect()
            })
            .collect()
    }

    /// Runs the next step: draw, forward, backward, update.
    pub fn train_step(&mut self) -> Result<AlignLog> {
        let batch = self.draw();
        self.step_on(&batch)
    }

    /// One step on sequences of the given images.
    pub fn step_on(&mut self, batch: &[Vec<usize>]) -> Result<AlignLog> {
        let t0 = Instant::now();
        let device = self.encoder.device;
        // Right-padded ids and, per position, what it holds: 0 prompt, 1 a caption's end
        // marker, 2 a caption's words.
        let mut rows: Vec<(Vec<i64>, Vec<i64>)> = Vec::new();
        for seq in batch {
            let mut ids: Vec<i64> = self.start.iter().map(|&s| s as i64).collect();
            let mut target = vec![0; ids.len()];
            for &i in seq {
                let shot = &self.shots[i];
                ids.extend(shot.prompt.iter().map(|&t| t as i64));
                target.extend(std::iter::repeat_n(0, shot.prompt.len()));
                ids.extend(shot.caption.iter().map(|&t| t as i64));
                target.extend(std::iter::repeat_n(2, shot.words));
                target.extend(std::iter::repeat_n(1, shot.caption.len() - shot.words));
            }
            rows.push((ids, target));
        }
        let max_pos = self.decoder.config.max_position_embeddings;
        let len = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        if len > max_pos {
            return Err(TrainerError::Other(format!(
                "a training sequence of {len} tokens is longer than the model's context of \
                 {max_pos}; use fewer images per sequence"
            )));
        }
        let (b, s) = (rows.len() as i64, len as i64);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        let mut target = Vec::with_capacity(rows.len() * len);
        for (r, t) in &rows {
            let pad = len - r.len();
            ids.extend(
                r.iter()
                    .copied()
                    .chain(std::iter::repeat_n(self.pad as i64, pad)),
            );
            mask.extend(std::iter::repeat_n(1i64, r.len()).chain(std::iter::repeat_n(0, pad)));
            target.extend(t.iter().copied().chain(std::iter::repeat_n(0, pad)));
        }
        let ids = Tensor::from_slice(&ids).view([b, s]).to_device(device);
        let mask = Tensor::from_slice(&mask).view([b, s]).to_device(device);
        let target = Tensor::from_slice(&target).view([b, s]).to_device(device);

        let order: Vec<i64> = batch.iter().flatten().map(|&i| i as i64).collect();
        let pixels = self
            .pixels
            .index_select(0, &Tensor::from_slice(&order).to_device(device));
        let mut vf = VisionForward::new(&pixels);
        vf.features = self.vlm.features();
        let features = self.encoder.encode(&vf)?.hidden;
        let features = features.reshape([-1, *features.size().last().unwrap_or(&1)]);

        let mut f = Forward::new(&ids);
        f.attention_mask = Some(&mask);
        f.matmul = self.cfg.precision.kind();
        f.images = Some(ImageTokens {
            token_id: self.vlm.image_token_id as i64,
            features: &features,
        });
        let logits = self.decoder.forward(&f, None).logits;
        // Position t predicts token t + 1: a caption token at t + 1 is a target.
        let pred = logits.narrow(1, 0, s - 1);
        let next = ids.narrow(1, 1, s - 1);
        let kind = target.narrow(1, 1, s - 1);
        let is_target = kind.gt(0);
        let is_word = kind.eq(2);
        let logp = pred.log_softmax(-1, Kind::Float);
        let nll = -logp.gather(-1, &next.unsqueeze(-1), false).squeeze_dim(-1);
        let weight = is_target.to_kind(Kind::Float);
        let count = weight.sum(Kind::Float);
        let loss = (&nll * &weight).sum(Kind::Float) / &count;
        let right = pred.argmax(-1, false).eq_tensor(&next);
        let count_right = |mask: &Tensor| {
            let n = mask.to_kind(Kind::Float).sum(Kind::Float).double_value(&[]);
            let k = right
                .logical_and(mask)
                .to_kind(Kind::Float)
                .sum(Kind::Float)
                .double_value(&[]);
            k / n.max(1.0)
        };
        let (token_accuracy, word_accuracy) = (count_right(&is_target), count_right(&is_word));
        loss.backward();
        let loss_v = loss.double_value(&[]);
        if !loss_v.is_finite() {
            return Err(TrainerError::Other(format!(
                "loss is {loss_v} at step {}: stopping (the last checkpoint is kept)",
                self.step
            )));
        }
        let lr = cosine_lr(&self.cfg.optim, self.step, self.cfg.steps);
        let mut params = self.encoder.trainable_params();
        let mut refs: Vec<(&mut Tensor, bool)> = params
            .iter_mut()
            .map(|(name, t)| {
                let decay = !(name.ends_with(".bias") || name.contains("norm"));
                (t, decay)
            })
            .collect();
        let grad_norm = self.opt.step(&mut refs, lr);
        let log = AlignLog {
            step: self.step,
            lr,
            loss: loss_v,
            token_accuracy,
            word_accuracy,
            grad_norm,
            seconds: t0.elapsed().as_secs_f64(),
        };
        self.step += 1;
        self.log.push(log.clone());
        Ok(log)
    }

    /// Writes a checkpoint: the encoder's tensors, the optimiser's moments, the sampler's
    /// state, the step and the log.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        // The trainable tensors under their own names (q/k/v stacked), as `resume` reads them.
        let mut tensors = Vec::new();
        for (i, (name, t)) in self.encoder.trainable_params().into_iter().enumerate() {
            tensors.push((name.clone(), t));
            tensors.push((format!("opt.m.{name}"), self.opt.m[i].shallow_clone()));
            tensors.push((format!("opt.v.{name}"), self.opt.v[i].shallow_clone()));
        }
        let meta = std::collections::HashMap::from([
            ("align.step".to_string(), self.step.to_string()),
            ("align.opt_t".to_string(), self.opt.t.to_string()),
            ("align.rng".to_string(), self.rng.state.to_string()),
            (
                "align.config".to_string(),
                serde_json::to_string(&self.cfg).unwrap_or_default(),
            ),
            (
                "align.log".to_string(),
                serde_json::to_string(&self.log).unwrap_or_default(),
            ),
        ]);
        Ok(write_atomically(
            path,
            &crate::safetensors_bytes(&tensors, meta)?,
        )?)
    }

    /// Continues from a checkpoint of [`Aligner::save_checkpoint`] with the same settings.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let (mut tensors, meta) = mimic_models::weights::read_safetensors_with_metadata(path)?;
        let err = |m: String| TrainerError::Other(format!("checkpoint {}: {m}", path.display()));
        let saved = meta
            .get("align.config")
            .ok_or_else(|| err("no alignment settings (not an alignment checkpoint)".into()))?;
        if serde_json::from_str::<serde_json::Value>(saved).ok()
            != serde_json::to_value(&self.cfg).ok()
        {
            return Err(err(
                "was written with other alignment settings; pass the same options to resume".into(),
            ));
        }
        let num = |k: &str| -> Result<u64> {
            meta.get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| err(format!("no {k}")))
        };
        let device = self.encoder.device;
        let mut take = |name: &str| -> Result<Tensor> {
            let t = tensors
                .remove(name)
                .ok_or_else(|| err(format!("tensor {name} missing")))?;
            let shape: Vec<i64> = t.shape.iter().map(|&x| x as i64).collect();
            Ok(Tensor::f_from_slice(&t.data)?
                .f_reshape(&shape)?
                .to_device(device))
        };
        let names: Vec<String> = self
            .encoder
            .trainable_params()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut values = Vec::new();
        for (i, name) in names.iter().enumerate() {
            values.push(take(name)?);
            self.opt.m[i] = take(&format!("opt.m.{name}"))?;
            self.opt.v[i] = take(&format!("opt.v.{name}"))?;
        }
        self.encoder.load_trainable(&values)?;
        self.step = num("align.step")? as usize;
        self.opt.t = num("align.opt_t")? as i64;
        self.rng = SplitMix64::new(num("align.rng")?);
        self.log = serde_json::from_str(meta.get("align.log").map_or("[]", |s| s.as_str()))
            .unwrap_or_default();
        Ok(())
    }
}
