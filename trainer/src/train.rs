//! Fitting a [`Shift`] so the model without demonstrations behaves as with them.
//!
//! Each step draws a batch of training queries, each with `shots` demonstrations from the other
//! training pairs. The teacher is the frozen model on `[start] demos query answer`; the student
//! is the shifted model on `[start] query answer`. Both batches are left-padded, so the query
//! and answer positions line up at the right end. The loss is a weighted sum of
//! - alignment: MSE (or 1 - cosine) between teacher and student activations at a site (MLP
//!   output by default) on the query and answer positions, averaged over layers;
//! - cross-entropy of the answer tokens under the student;
//! - KL(teacher || student) of the next-token distributions on the answer positions.
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use mimic_models::backend::Site;
use mimic_models::files::write_atomically;
use mimic_models::tokenizer::TextTokenizer;
use mimic_models::Model;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::optim::{cosine_lr, AdamW, AdamWConfig};
use crate::rng::SplitMix64;
use crate::shift::{LoraConfig, Method, Shift};
use crate::task::{start_token, Encoded, Task};
use crate::torch_backend::{Forward, ImageTokens, KvCache, TorchModel};
use crate::torch_vlm::TaskImages;
use crate::{Result, TrainerError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlignLoss {
    Mse,
    Cosine,
}

/// The type the linear layers of the teacher and the student multiply in. The published recipe
/// trains under 16-bit mixed precision; `Bf16` is its counterpart here: weights and matrix
/// products in bfloat16, everything else (activations between layers, attention, the shift, its
/// parameters, gradients and the optimiser) in float32. `F32` is float32 throughout.
/// Older checkpoints, written before the setting existed, read as `F32` (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }

    /// `Bf16` where matrix products in bfloat16 are fast (a CUDA device, or a CPU with
    /// AVX512-BF16 dot products), `F32` elsewhere, where bfloat16 would be emulated.
    pub fn fastest(device: tch::Device) -> Precision {
        if device.is_cuda() || cpu_has_bf16_dot() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_bf16_dot() -> bool {
    // Every CPU with AMX also has AVX512-BF16.
    std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_bf16_dot() -> bool {
    false
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision `{other}` (f32, bf16)")),
        }
    }
}

/// Everything that determines a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub method: Method,
    pub shots: usize,
    pub steps: usize,
    pub batch: usize,
    pub seed: u64,
    pub site: String,
    pub align: AlignLoss,
    pub align_weight: f64,
    pub ce_weight: f64,
    pub kl_weight: f64,
    pub optim: AdamWConfig,
    pub lora: LoraConfig,
    /// One set of demonstrations per batch instead of per query: the teacher then runs the
    /// demonstrations once and the batch's queries continue from that cache.
    #[serde(default)]
    pub shared_demos: bool,
    /// The matrix products' type.
    #[serde(default)]
    pub precision: Precision,
}

/// Whether a batch can share one demonstration prefix: not with a sliding window, which
/// counts cache positions, padding between the prefix and a query included.
pub fn can_share_demos(config: &mimic_models::LlamaConfig) -> bool {
    config.sliding_window.iter().all(Option::is_none)
}

impl TrainConfig {
    /// The published defaults for each method: MimIC aligns MLP outputs (1.0) plus 0.5
    /// cross-entropy; LIVE matches logits (KL 1.0) plus 0.5 cross-entropy; LoRA uses
    /// cross-entropy alone.
    pub fn for_method(method: Method) -> Self {
        let (align_weight, ce_weight, kl_weight) = match method {
            Method::Mimic | Method::MimicConvex => (1.0, 0.5, 0.0),
            Method::Live => (0.0, 0.5, 1.0),
            Method::Lora => (0.0, 1.0, 0.0),
        };
        TrainConfig {
            method,
            shots: 8,
            steps: 200,
            batch: 4,
            seed: 0,
            site: "mlp".into(),
            align: AlignLoss::Mse,
            align_weight,
            ce_weight,
            kl_weight,
            optim: AdamWConfig::default(),
            lora: LoraConfig::default(),
            shared_demos: false,
            precision: Precision::F32,
        }
    }
}

/// One step's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    pub align: f64,
    pub ce: f64,
    pub kl: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub teacher_s: f64,
    pub student_s: f64,
}

/// A training run in progress: the shift, the optimiser state, the sampler and the log.
pub struct Trainer<'a> {
    pub model: &'a TorchModel,
    pub base: &'a Model,
    pub tok: &'a TextTokenizer,
    pub task: &'a Task,
    pub cfg: TrainConfig,
    pub shift: Shift,
    pub opt: AdamW,
    pub rng: SplitMix64,
    pub step: usize,
    pub log: Vec<StepLog>,
    /// Testing aid: make the loss NaN at this step, to exercise the guard.
    pub poison_step: Option<usize>,
    /// A vision-language model's image tokens for the task's images: prompts expand their
    /// `<image>` placeholders, and the teacher's and student's passes take the tokens.
    pub images: Option<&'a TaskImages>,
    site: Site,
}

/// Which of an example's images a pass takes.
#[derive(Debug, Clone, Copy)]
enum ImagePart {
    Demos,
    Query,
    All,
}

/// Left-pads sequences: ids `[b, t]` (padded with `pad`) and mask `[b, t]`.
pub fn left_pad(seqs: &[Vec<u32>], pad: u32) -> (Tensor, Tensor) {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(seqs.len() * t);
    let mut mask = Vec::with_capacity(seqs.len() * t);
    for s in seqs {
        let n = t - s.len();
        ids.extend(std::iter::repeat_n(pad as i64, n).chain(s.iter().map(|&x| x as i64)));
        mask.extend(std::iter::repeat_n(0i64, n).chain(std::iter::repeat_n(1, s.len())));
    }
    let shape = [seqs.len() as i64, t as i64];
    (
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape),
    )
}

/// `[b, n]` float mask, 1 at the last `lens[i]` of `n` right-aligned positions.
fn tail_mask(lens: &[usize], n: usize) -> Tensor {
    let v: Vec<f32> = lens
        .iter()
        .flat_map(|&l| (0..n).map(move |j| if j + l >= n { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_slice(&v).view([lens.len() as i64, n as i64])
}

impl<'a> Trainer<'a> {
    pub fn new(
        model: &'a TorchModel,
        base: &'a Model,
        task: &'a Task,
        cfg: TrainConfig,
    ) -> Result<Self> {
        let tok = base.tokenizer()?;
        let site: Site = cfg.site.parse().map_err(TrainerError::Other)?;
        crate::shift::check_lora_targets(&model.config, &cfg.lora.targets)?;
        if cfg.batch == 0 || cfg.steps == 0 {
            return Err(TrainerError::Other(
                "--batch and --steps must be positive".into(),
            ));
        }
        if cfg.shared_demos && !can_share_demos(&model.config) {
            return Err(TrainerError::Other(
                "shared demonstrations need full attention; this model has a sliding window".into(),
            ));
        }
        // Fails early when the task cannot supply the shots: shared demonstrations must leave
        // out all of a batch's queries, per-query ones just the query.
        let besides_batch = task.train.len().saturating_sub(cfg.batch);
        if !cfg.shared_demos {
            task.demonstrations(&task.train[0], cfg.shots, &mut SplitMix64::new(0))?;
        } else if cfg.shots > besides_batch {
            return Err(TrainerError::Other(format!(
                "{}: {} shots asked for but, besides a batch's {} queries, the training part holds {besides_batch} pairs; use fewer shots, a smaller batch or --demos per-query",
                task.path.display(),
                cfg.shots,
                cfg.batch
            )));
        }
        let shift = Shift::init(cfg.method, &model.config, &cfg.lora, model.device, cfg.seed);
        let params: Vec<&Tensor> = shift.params.iter().map(|(_, t, _)| t).collect();
        let opt = AdamW::new(cfg.optim.clone(), &params);
        Ok(Trainer {
            model,
            base,
            tok,
            task,
            rng: SplitMix64::new(cfg.seed ^ 0x5eed),
            cfg,
            shift,
            opt,
            step: 0,
            log: vec![],
            poison_step: None,
            images: None,
            site,
        })
    }

    /// One optimisation step on a freshly drawn batch. Errors when the loss is not finite (the
    /// parameters are left as they were before the step).
    pub fn train_step(&mut self) -> Result<StepLog> {
        let examples = self.draw_batch()?;
        self.step_on(&examples)
    }

    /// The next batch of training examples from the seeded sampler.
    pub fn draw_batch(&mut self) -> Result<Vec<Encoded>> {
        let cfg = &self.cfg;
        let start = start_token(self.tok);
        // Per query: a query, then its demonstrations, in turn (the order the sampler's state
        // depends on). Shared: the batch's queries, then one set none of them is in.
        let (tok, task) = (self.tok, self.task);
        let expansion = self.images.map(|i| i.expansion);
        let encode = |demos: &[crate::task::Pair], q| {
            Encoded::with_image_tokens(tok, start, &task.template, demos, q, expansion)
        };
        let mut examples = Vec::with_capacity(cfg.batch);
        if cfg.shared_demos {
            let queries: Vec<&crate::task::Pair> = (0..cfg.batch)
                .map(|_| &task.train[self.rng.below(task.train.len())])
                .collect();
            let demos = task.demonstrations_excluding(&queries, cfg.shots, &mut self.rng)?;
            for q in queries {
                examples.push(encode(&demos, q)?);
            }
        } else {
            for _ in 0..cfg.batch {
                let q = &task.train[self.rng.below(task.train.len())];
                examples.push(encode(
                    &task.demonstrations(q, cfg.shots, &mut self.rng)?,
                    q,
                )?);
            }
        }
        if cfg.method == Method::Lora {
            // LoRA learns from the answer alone: its target runs on to the template's end of
            // the answer, so that it stops like the model prompted with demonstrations.
            let end = tok.encode(task.template.answer_tail())?;
            for e in &mut examples {
                e.answer.extend(&end);
            }
        }
        Ok(examples)
    }

    /// One optimisation step on the given examples. With shared demonstrations every example
    /// must carry the same ones (the teacher runs them once, from the first example).
    pub fn step_on(&mut self, examples: &[Encoded]) -> Result<StepLog> {
        let cfg = &self.cfg;
        if examples.is_empty() {
            return Err(TrainerError::Other("an empty training batch".into()));
        }
        if cfg.shared_demos && examples.iter().any(|e| e.demos != examples[0].demos) {
            return Err(TrainerError::Other(
                "shared demonstrations: the batch's examples carry different ones".into(),
            ));
        }
        let max_pos = self.model.config.max_position_embeddings;
        if let Some(e) = examples.iter().find(|e| e.full().len() > max_pos) {
            return Err(TrainerError::Other(format!(
                "a teacher sequence of {} tokens is longer than the model's context of {max_pos}; use fewer shots",
                e.full().len()
            )));
        }
        let pad = self.tok.pad_id().unwrap_or(0);
        let qa_lens: Vec<usize> = examples.iter().map(Encoded::query_answer_len).collect();
        let ans_lens: Vec<usize> = examples.iter().map(|e| e.answer.len()).collect();
        let n_qa = *qa_lens.iter().max().unwrap_or(&1);
        let n_ans = *ans_lens.iter().max().unwrap_or(&1);
        let device = self.model.device;
        let record = [self.site];
        let record: &[Site] = if cfg.align_weight > 0.0 { &record } else { &[] };

        // Teacher: frozen, with demonstrations; skipped when no loss term reads it (LoRA's
        // cross-entropy alone).
        let t0 = Instant::now();
        let needs_teacher = cfg.align_weight > 0.0 || cfg.kl_weight > 0.0;
        let teacher = needs_teacher.then(|| {
            let _g = tch::no_grad_guard();
            // With shared demonstrations the prefix runs once and every query continues from
            // its cache; otherwise each row is its whole sequence.
            let (rows, mut cache): (Vec<Vec<u32>>, Option<KvCache>) = if cfg.shared_demos {
                let e0 = &examples[0];
                let prefix: Vec<i64> = [&e0.start[..], &e0.demos]
                    .concat()
                    .iter()
                    .map(|&x| x as i64)
                    .collect();
                let prefix = Tensor::from_slice(&prefix).view([1, -1]).to_device(device);
                let mut cache = KvCache::default();
                let mut f = Forward::new(&prefix);
                f.logits_last = Some(0); // only its keys and values are needed
                f.matmul = cfg.precision.kind();
                let demo_images =
                    self.image_features(std::slice::from_ref(e0), ImagePart::Demos)?;
                f.images = self.image_tokens(demo_images.as_ref());
                self.model.forward(&f, Some(&mut cache));
                let rows = examples
                    .iter()
                    .map(|e| [&e.query[..], &e.answer].concat())
                    .collect();
                (rows, Some(cache.repeat_batch(examples.len() as i64)))
            } else {
                (examples.iter().map(Encoded::full).collect(), None)
            };
            let (ids, mask) = left_pad(&rows, pad);
            let (ids, mask) = (ids.to_device(device), mask.to_device(device));
            let part = if cfg.shared_demos {
                ImagePart::Query
            } else {
                ImagePart::All
            };
            let images = self.image_features(examples, part)?;
            let mut f = Forward::new(&ids);
            f.attention_mask = Some(&mask);
            f.images = self.image_tokens(images.as_ref());
            f.record = record;
            // Only the KL term reads the teacher's logits.
            f.logits_last = Some(if cfg.kl_weight > 0.0 {
                n_ans as i64 + 1
            } else {
                0
            });
            f.matmul = cfg.precision.kind();
            Ok::<_, TrainerError>(self.model.forward(&f, cache.as_mut()))
        });
        let teacher = teacher.transpose()?;
        let teacher_s = t0.elapsed().as_secs_f64();

        // Student: shifted, without demonstrations.
        let t1 = Instant::now();
        let student_seqs: Vec<Vec<u32>> = examples
            .iter()
            .map(|e| [&e.start[..], &e.query, &e.answer].concat())
            .collect();
        let (s_ids, s_mask) = left_pad(&student_seqs, pad);
        let (s_ids, s_mask) = (s_ids.to_device(device), s_mask.to_device(device));
        let s_images = self.image_features(examples, ImagePart::Query)?;
        let mut f = Forward::new(&s_ids);
        f.attention_mask = Some(&s_mask);
        f.images = self.image_tokens(s_images.as_ref());
        f.record = record;
        f.logits_last = Some(n_ans as i64 + 1);
        f.shifts = self.shift.shifts();
        f.matmul = cfg.precision.kind();
        let student = self.model.forward(&f, None);

        let zero = || Tensor::zeros([], (Kind::Float, device));
        // Alignment on the query and answer positions.
        let align = if let (true, Some(teacher)) = (cfg.align_weight > 0.0, &teacher) {
            let m = tail_mask(&qa_lens, n_qa).to_device(device);
            let count = m.sum(Kind::Float);
            let per_layer: Vec<Tensor> = (0..self.model.config.num_layers)
                .map(|l| {
                    let tail = |x: &Tensor| x.narrow(1, x.size()[1] - n_qa as i64, n_qa as i64);
                    let t = tail(&teacher.recorded[&(l, self.site)]);
                    let s = tail(&student.recorded[&(l, self.site)]);
                    let per_pos = match cfg.align {
                        AlignLoss::Mse => {
                            (&s - &t)
                                .pow_tensor_scalar(2)
                                .mean_dim(-1, false, Kind::Float)
                        }
                        AlignLoss::Cosine => 1.0 - Tensor::cosine_similarity(&s, &t, -1, 1e-8),
                    };
                    (per_pos * &m).sum(Kind::Float) / &count
                })
                .collect();
            Tensor::stack(&per_layer, 0).mean(Kind::Float)
        } else {
            zero()
        };
        // Answer tokens are the last `a` of each row; logits at the `a` positions before predict them.
        let a_mask = tail_mask(&ans_lens, n_ans).to_device(device);
        let a_count = a_mask.sum(Kind::Float);
        let s_logp = student
            .logits
            .narrow(1, 0, n_ans as i64)
            .log_softmax(-1, Kind::Float);
        let targets = s_ids.narrow(1, s_ids.size()[1] - n_ans as i64, n_ans as i64);
        let ce = if cfg.ce_weight > 0.0 {
            let nll = -s_logp
                .gather(-1, &targets.unsqueeze(-1), false)
                .squeeze_dim(-1);
            (nll * &a_mask).sum(Kind::Float) / &a_count
        } else {
            zero()
        };
        let kl = if let (true, Some(teacher)) = (cfg.kl_weight > 0.0, &teacher) {
            let t_logp = teacher
                .logits
                .narrow(1, 0, n_ans as i64)
                .log_softmax(-1, Kind::Float);
            let per_pos =
                (t_logp.exp() * (&t_logp - &s_logp)).sum_dim_intlist(-1, false, Kind::Float);
            (per_pos * &a_mask).sum(Kind::Float) / &a_count
        } else {
            zero()
        };
        let poison = if self.poison_step == Some(self.step + 1) {
            f64::NAN
        } else {
            1.0
        };
        let loss = (&align * cfg.align_weight + &ce * cfg.ce_weight + &kl * cfg.kl_weight) * poison;
        let loss_v = loss.double_value(&[]);
        if !loss_v.is_finite() {
            return Err(TrainerError::Other(format!(
                "loss is {loss_v} at step {}: stopping (the last checkpoint is kept)",
                self.step + 1
            )));
        }
        loss.backward();
        let lr = cosine_lr(&cfg.optim, self.step, cfg.steps);
        let mut params: Vec<(&mut Tensor, bool)> = self
            .shift
            .params
            .iter_mut()
            .map(|(_, t, d)| (t, *d))
            .collect();
        let grad_norm = self.opt.step(&mut params, lr);
        if !grad_norm.is_finite()
            || self
                .shift
                .params
                .iter()
                .any(|(_, t, _)| t.isfinite().all().int64_value(&[]) == 0)
        {
            return Err(TrainerError::Other(format!(
                "parameters are not finite after step {} (gradient norm {grad_norm}): stopping (the last checkpoint is kept)",
                self.step + 1
            )));
        }
        let student_s = t1.elapsed().as_secs_f64();
        self.step += 1;
        let entry = StepLog {
            step: self.step,
            loss: loss_v,
            align: align.double_value(&[]),
            ce: ce.double_value(&[]),
            kl: kl.double_value(&[]),
            lr,
            grad_norm,
            teacher_s,
            student_s,
        };
        self.log.push(entry.clone());
        Ok(entry)
    }

    /// The image tokens of `examples`' images (the part asked for), rows in order.
    fn image_features(&self, examples: &[Encoded], part: ImagePart) -> Result<Option<Tensor>> {
        let Some(images) = self.images else {
            return Ok(None);
        };
        let paths: Vec<&std::path::PathBuf> = examples
            .iter()
            .flat_map(|e| {
                let range = match part {
                    ImagePart::Demos => 0..e.demo_images,
                    ImagePart::Query => e.demo_images..e.images.len(),
                    ImagePart::All => 0..e.images.len(),
                };
                e.images[range].iter()
            })
            .collect();
        images.features(&paths)
    }

    fn image_tokens<'t>(&self, features: Option<&'t Tensor>) -> Option<ImageTokens<'t>> {
        let images = self.images?;
        features.map(|features| ImageTokens {
            token_id: images.token_id,
            features,
        })
    }

    /// Writes a checkpoint: parameters, optimiser moments, sampler state, step and log.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut tensors = self.shift.named_tensors();
        for (i, (name, _, _)) in self.shift.params.iter().enumerate() {
            tensors.push((format!("opt.m.{name}"), self.opt.m[i].shallow_clone()));
            tensors.push((format!("opt.v.{name}"), self.opt.v[i].shallow_clone()));
        }
        let mut meta = self
            .shift
            .metadata(&self.base.fingerprint(), &self.model.config);
        meta.insert("train.step".into(), self.step.to_string());
        meta.insert("train.opt_t".into(), self.opt.t.to_string());
        meta.insert("train.rng".into(), self.rng.state.to_string());
        meta.insert(
            "train.config".into(),
            serde_json::to_string(&self.cfg).unwrap_or_default(),
        );
        meta.insert(
            "train.log".into(),
            serde_json::to_string(&self.log).unwrap_or_default(),
        );
        Ok(write_atomically(
            path,
            &crate::safetensors_bytes(&tensors, meta)?,
        )?)
    }

    /// Continues from a checkpoint written by [`Trainer::save_checkpoint`] with the same config.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let (shift, meta, extra) = Shift::load(path, self.base, self.model.device)?;
        let err = |m: &str| TrainerError::Other(format!("checkpoint {}: {m}", path.display()));
        let saved: TrainConfig = serde_json::from_str(
            meta.get("train.config")
                .ok_or_else(|| err("no training config"))?,
        )
        .map_err(|e| err(&e.to_string()))?;
        if serde_json::to_value(&saved).ok() != serde_json::to_value(&self.cfg).ok() {
            return Err(err(
                "was written with other training settings; pass the same options to resume",
            ));
        }
        let num = |k: &str| -> Result<u64> {
            meta.get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| err(&format!("no {k}")))
        };
        for (i, (name, _, _)) in shift.params.iter().enumerate() {
            let m = extra
                .get(&format!("opt.m.{name}"))
                .ok_or_else(|| err("optimiser state missing"))?;
            let v = extra
                .get(&format!("opt.v.{name}"))
                .ok_or_else(|| err("optimiser state missing"))?;
            self.opt.m[i] = m.to_device(self.model.device);
            self.opt.v[i] = v.to_device(self.model.device);
        }
        self.shift = shift;
        self.step = num("train.step")? as usize;
        self.opt.t = num("train.opt_t")? as i64;
        self.rng = SplitMix64::new(num("train.rng")?);
        self.log = serde_json::from_str(meta.get("train.log").map_or("[]", |s| s.as_str()))
            .unwrap_or_default();
        Ok(())
    }

    /// Metadata recorded in the final heads file.
    pub fn heads_metadata(&self) -> HashMap<String, String> {
        let mut meta = HashMap::new();
        meta.insert(
            "train.config".into(),
            serde_json::to_string(&self.cfg).unwrap_or_default(),
        );
        meta.insert("train.task".into(), self.task.path.display().to_string());
        meta.insert("train.steps_done".into(), self.step.to_string());
        meta
    }
}
