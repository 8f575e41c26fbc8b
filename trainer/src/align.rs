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
use mimic_models::vision::siglip::Features;

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
    /// The tower's pretraining before the alignment, if any ([`Aligner::pretrain`]).
    #[serde(default)]
    pub pretrain: Option<PretrainConfig>,
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
            pretrain: None,
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

/// Held-out images: pixels on the device, shots and captions.
struct Holdout {
    pixels: Tensor,
    shots: Vec<Shot>,
    captions: Vec<String>,
}

/// Settings of the tower's pretraining ([`Aligner::pretrain`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate of the cosine schedule.
    pub lr: f64,
    pub seed: u64,
}

/// One pretraining step's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainLog {
    pub step: usize,
    pub loss: f64,
    /// Images of this step whose caption the head named.
    pub accuracy: f64,
    pub seconds: f64,
}

/// How well captions come out on held-out images.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CaptionAccuracy {
    pub images: usize,
    /// Images whose every caption word is right: greedy decoding writes the caption.
    pub words: f64,
    /// ... and its end marker: greedy decoding writes exactly the caption, then stops.
    pub exact: f64,
    /// Per word position (`a`, the colour, the shape), the images with that word right.
    pub per_word: Vec<f64>,
}

/// One held-out image's caption: all its words right, the whole caption (end marker
/// included) right, and each word position right.
struct CaptionVerdict {
    words: bool,
    exact: bool,
    per_word: Vec<bool>,
}

impl CaptionAccuracy {
    /// The share of images right in each sense.
    fn tally(verdicts: impl Iterator<Item = CaptionVerdict>) -> Self {
        let mut acc = CaptionAccuracy::default();
        let (mut words, mut exact) = (0, 0);
        let mut per_word: Vec<usize> = Vec::new();
        for v in verdicts {
            acc.images += 1;
            words += v.words as usize;
            exact += v.exact as usize;
            if per_word.len() < v.per_word.len() {
                per_word.resize(v.per_word.len(), 0);
            }
            for (j, ok) in v.per_word.iter().enumerate() {
                per_word[j] += *ok as usize;
            }
        }
        let n = acc.images.max(1) as f64;
        acc.words = words as f64 / n;
        acc.exact = exact as f64 / n;
        acc.per_word = per_word.iter().map(|&k| k as f64 / n).collect();
        acc
    }
}

/// Whether AdamW decays a tensor: not biases and norms.
fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("norm"))
}

/// The language model's predictions over a batch of caption sequences
/// ([`Aligner::predict`]).
struct Pass {
    pred: Tensor,
    next: Tensor,
    kind: Tensor,
}

/// One image's shot, tokenized: the ids up to the caption (the image's run of image tokens
/// expanded) and the caption's ids with its end marker.
struct Shot {
    prompt: Vec<u32>,
    caption: Vec<u32>,
    /// How many of `caption`'s ids are the caption's words (the rest: its end marker).
    words: usize,
    /// Where each word of the caption ends in `caption` (ids up to and including it); empty
    /// where the words' tokens do not line up with the caption's.
    word_ends: Vec<usize>,
}

impl Shot {
    fn new(
        ex: &CaptionedImage,
        tok: &TextTokenizer,
        expansion: &PromptImageTokens,
        template: &Template,
        tail: &str,
    ) -> Result<Self> {
        let pair = Pair {
            input: String::new(),
            output: ex.caption.clone(),
            images: vec![ex.image.clone()],
        };
        let (q, a) = template.query_answer(&pair);
        let caption = tok.encode(&format!("{a}{tail}"))?;
        let prefix_len = |text: &str| -> Result<Option<usize>> {
            let ids = tok.encode(text)?;
            Ok(caption.starts_with(&ids).then_some(ids.len()))
        };
        let words = prefix_len(&a)?.unwrap_or(0);
        // Each word's end: the ids of the answer up to it must begin the caption's.
        let mut word_ends = Vec::new();
        let mut at = 0;
        for w in a.split_whitespace() {
            let end = a[at..].find(w).map_or(a.len(), |i| at + i + w.len());
            at = end;
            match prefix_len(&a[..end])? {
                Some(n) if n > word_ends.last().copied().unwrap_or(0) => word_ends.push(n),
                _ => {
                    word_ends.clear();
                    break;
                }
            }
        }
        let prompt = expansion
            .expand(&q)
            .map_err(|e| TrainerError::Other(e.to_string()))?;
        Ok(Shot {
            prompt: tok.encode(&prompt)?,
            caption,
            words,
            word_ends,
        })
    }
}

/// `examples`' images, preprocessed: `[n, channels, size, size]` on the CPU. Every image must
/// preprocess to the tower's size.
fn preprocess(
    examples: &[CaptionedImage],
    processor: &ImageProcessor,
    size: i64,
) -> Result<Tensor> {
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
    Ok(Tensor::cat(&pixels, 0))
}

pub struct Aligner<'a> {
    pub cfg: AlignConfig,
    vlm: &'a VlmConfig,
    decoder: &'a TorchModel,
    pub encoder: TorchVision,
    /// Every image, preprocessed once: `[n, channels, size, size]` on the device.
    pixels: Tensor,
    shots: Vec<Shot>,
    /// The distinct captions, sorted: the classes of the tower's pretraining.
    pub classes: Vec<String>,
    /// Each image's class, `[n]` int64 on the device.
    class_of: Tensor,
    /// Held-out images, for [`Aligner::caption_accuracy`] and [`Aligner::pretrain`]'s
    /// accuracy.
    holdout: Option<Holdout>,
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
        holdout: &[CaptionedImage],
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
        let pixels =
            preprocess(examples, processor, encoder.config.image_size as i64)?.to_device(device);
        let (_, tail) = template
            .text
            .split_once("{output}")
            .ok_or_else(|| TrainerError::Other("the caption template has no {output}".into()))?;
        let shots_of = |examples: &[CaptionedImage]| {
            examples
                .iter()
                .map(|ex| Shot::new(ex, tok, &expansion, template, tail))
                .collect::<Result<Vec<_>>>()
        };
        let shots = shots_of(examples)?;
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
        let mut captions: Vec<&str> = examples.iter().map(|e| e.caption.as_str()).collect();
        captions.sort_unstable();
        captions.dedup();
        // Sorted and drawn from the examples' own captions: every caption is found.
        let ids: Vec<i64> = examples
            .iter()
            .map(|e| captions.binary_search(&e.caption.as_str()).unwrap_or(0) as i64)
            .collect();
        let classes: Vec<String> = captions.iter().map(|c| c.to_string()).collect();
        let class_of = Tensor::from_slice(&ids).to_device(device);
        let holdout = if holdout.is_empty() {
            None
        } else {
            let size = encoder.config.image_size as i64;
            Some(Holdout {
                pixels: preprocess(holdout, processor, size)?.to_device(device),
                shots: shots_of(holdout)?,
                captions: holdout.iter().map(|e| e.caption.clone()).collect(),
            })
        };
        let params = encoder.make_trainable();
        let opt = AdamW::new(cfg.optim.clone(), &params.iter().collect::<Vec<_>>());
        let rng = SplitMix64::new(cfg.seed);
        Ok(Aligner {
            vlm,
            decoder,
            encoder,
            pixels,
            shots,
            classes,
            class_of,
            holdout,
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

    /// The language model's predictions over sequences of the given images (indices into
    /// `shots` and `pixels`): `pred` `[b, s - 1, vocab]` for positions `0..s - 1`, the `next`
    /// ids they predict, and what each next id is (0 prompt or padding, 1 a caption's end
    /// marker, 2 a caption's words).
    fn predict(&self, shots: &[Shot], pixels: &Tensor, batch: &[Vec<usize>]) -> Result<Pass> {
        let device = self.encoder.device;
        let mut rows: Vec<(Vec<i64>, Vec<i64>)> = Vec::new();
        for seq in batch {
            let mut ids: Vec<i64> = self.start.iter().map(|&s| s as i64).collect();
            let mut target = vec![0; ids.len()];
            for &i in seq {
                let shot = &shots[i];
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
        let pixels = pixels.index_select(0, &Tensor::from_slice(&order).to_device(device));
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
        Ok(Pass {
            pred: logits.narrow(1, 0, s - 1),
            next: ids.narrow(1, 1, s - 1),
            kind: target.narrow(1, 1, s - 1),
        })
    }

    /// One step on sequences of the given images.
    pub fn step_on(&mut self, batch: &[Vec<usize>]) -> Result<AlignLog> {
        let t0 = Instant::now();
        let Pass { pred, next, kind } = self.predict(&self.shots, &self.pixels, batch)?;
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
                let decay = decays(name);
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

    /// Pretrains the tower alone, before it meets the language model (as a SigLIP tower is
    /// pretrained before it is put under one): a linear head over the tower's mean-pooled last
    /// hidden state learns to name each image's caption among [`Aligner::classes`]
    /// (cross-entropy; images flipped left to right at random; AdamW with a cosine schedule).
    /// The head is dropped afterwards and the connector is untouched. `progress` sees every
    /// step; returns the log and the held-out accuracy (per word of the named caption).
    pub fn pretrain(
        &mut self,
        cfg: &PretrainConfig,
        mut progress: impl FnMut(&PretrainLog),
    ) -> Result<(Vec<PretrainLog>, Option<CaptionAccuracy>)> {
        let device = self.encoder.device;
        let hidden = self.encoder.config.hidden_size as i64;
        let k = self.classes.len() as i64;
        let mut head_w = Tensor::zeros([k, hidden], (Kind::Float, device)).set_requires_grad(true);
        let mut head_b = Tensor::zeros([k], (Kind::Float, device)).set_requires_grad(true);
        let mut tower: Vec<(String, Tensor)> = self
            .encoder
            .trainable_params()
            .into_iter()
            .filter(|(n, _)| n.starts_with(&self.encoder.prefix))
            .collect();
        let optim = AdamWConfig {
            lr: cfg.lr,
            ..self.cfg.optim.clone()
        };
        let mut opt = {
            let mut all: Vec<&Tensor> = tower.iter().map(|(_, t)| t).collect();
            all.extend([&head_w, &head_b]);
            AdamW::new(optim.clone(), &all)
        };
        let mut rng = SplitMix64::new(cfg.seed);
        let n = self.shots.len();
        let mut log = Vec::with_capacity(cfg.steps);
        for step in 0..cfg.steps {
            let t0 = Instant::now();
            let idx: Vec<i64> = (0..cfg.batch).map(|_| rng.below(n) as i64).collect();
            let flip: Vec<f32> = (0..cfg.batch).map(|_| rng.below(2) as f32).collect();
            let idx = Tensor::from_slice(&idx).to_device(device);
            let x = self.pixels.index_select(0, &idx);
            let flip = Tensor::from_slice(&flip)
                .to_device(device)
                .view([-1, 1, 1, 1]);
            let x = &x + (x.flip([3]) - &x) * &flip;
            let logits = self.pooled(&x)?.matmul(&head_w.tr()) + &head_b;
            let y = self.class_of.index_select(0, &idx);
            let loss = logits.cross_entropy_for_logits(&y);
            loss.backward();
            let accuracy = logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
            let loss_v = loss.double_value(&[]);
            if !loss_v.is_finite() {
                return Err(TrainerError::Other(format!(
                    "pretraining loss is {loss_v} at step {step}"
                )));
            }
            let lr = cosine_lr(&optim, step, cfg.steps);
            let mut refs: Vec<(&mut Tensor, bool)> = tower
                .iter_mut()
                .map(|(name, t)| (t, decays(name)))
                .collect();
            refs.push((&mut head_w, true));
            refs.push((&mut head_b, false));
            opt.step(&mut refs, lr);
            let entry = PretrainLog {
                step,
                loss: loss_v,
                accuracy,
                seconds: t0.elapsed().as_secs_f64(),
            };
            progress(&entry);
            log.push(entry);
        }
        let held = match &self.holdout {
            None => None,
            Some(h) => {
                let _guard = tch::no_grad_guard();
                let n = h.captions.len() as i64;
                let mut named = Vec::with_capacity(n as usize);
                for start in (0..n).step_by(256) {
                    let x = h.pixels.narrow(0, start, (n - start).min(256));
                    let logits = self.pooled(&x)?.matmul(&head_w.tr()) + &head_b;
                    named.extend(Vec::<i64>::try_from(&logits.argmax(-1, false))?);
                }
                // The head names a whole caption: words right is exactly right.
                let verdicts = h.captions.iter().zip(&named).map(|(truth, &c)| {
                    let said: Vec<&str> = self.classes[c as usize].split_whitespace().collect();
                    let truth: Vec<&str> = truth.split_whitespace().collect();
                    let per_word: Vec<bool> = (0..truth.len())
                        .map(|j| said.get(j) == truth.get(j))
                        .collect();
                    let right = per_word.iter().all(|&r| r) && said.len() == truth.len();
                    CaptionVerdict {
                        words: right,
                        exact: right,
                        per_word,
                    }
                });
                Some(CaptionAccuracy::tally(verdicts))
            }
        };
        Ok((log, held))
    }

    /// The tower's last hidden state, mean over patches: `[n, hidden]`.
    fn pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut vf = VisionForward::new(pixels);
        vf.features = Features::LastHiddenState;
        let h = self.encoder.forward(&vf)?.hidden;
        Ok(h.mean_dim([1].as_slice(), false, Kind::Float))
    }

    /// Captions of the held-out images (`None` without any), one image to a sequence, read
    /// under teacher forcing: an image counts as right when the language model's most likely
    /// next token is the caption's at every position, which is exactly when greedy decoding
    /// writes the caption.
    pub fn caption_accuracy(&self) -> Result<Option<CaptionAccuracy>> {
        let Some(h) = &self.holdout else {
            return Ok(None);
        };
        let _guard = tch::no_grad_guard();
        let mut verdicts = Vec::with_capacity(h.shots.len());
        let indices: Vec<usize> = (0..h.shots.len()).collect();
        for chunk in indices.chunks(32) {
            let batch: Vec<Vec<usize>> = chunk.iter().map(|&i| vec![i]).collect();
            let Pass { pred, next, kind } = self.predict(&h.shots, &h.pixels, &batch)?;
            let right = pred.argmax(-1, false).eq_tensor(&next);
            let cols = right.size()[1] as usize;
            let right = Vec::<bool>::try_from(&right.flatten(0, -1))?;
            let kind = Vec::<i64>::try_from(&kind.flatten(0, -1))?;
            for (r, &i) in chunk.iter().enumerate() {
                let row = r * cols..(r + 1) * cols;
                // One image a sequence: its caption's ids are the targets, in order.
                let caption: Vec<bool> = right[row.clone()]
                    .iter()
                    .zip(&kind[row])
                    .filter(|(_, &k)| k > 0)
                    .map(|(&ok, _)| ok)
                    .collect();
                let shot = &h.shots[i];
                let mut from = 0;
                let per_word: Vec<bool> = shot
                    .word_ends
                    .iter()
                    .map(|&end| {
                        let ok = caption[from..end.min(caption.len())].iter().all(|&ok| ok);
                        from = end;
                        ok
                    })
                    .collect();
                verdicts.push(CaptionVerdict {
                    words: caption[..shot.words.min(caption.len())]
                        .iter()
                        .all(|&ok| ok),
                    exact: caption.iter().all(|&ok| ok),
                    per_word,
                });
            }
        }
        Ok(Some(CaptionAccuracy::tally(verdicts.into_iter())))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_accuracy_tallies_images_and_word_positions() {
        let verdict = |words, exact, per_word: [bool; 3]| CaptionVerdict {
            words,
            exact,
            per_word: per_word.to_vec(),
        };
        let acc = CaptionAccuracy::tally(
            [
                verdict(true, true, [true, true, true]),
                verdict(false, false, [true, true, false]),
                verdict(false, false, [true, false, false]),
                verdict(true, false, [true, true, true]),
            ]
            .into_iter(),
        );
        assert_eq!(acc.images, 4);
        assert_eq!(acc.words, 0.5);
        assert_eq!(acc.exact, 0.25);
        assert_eq!(acc.per_word, vec![1.0, 0.75, 0.5]);
    }
}
