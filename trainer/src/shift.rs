//! The adaptation methods the trainer fits on a frozen model, and their files.
//!
//! - MimIC, per layer `l` and query head `h`, on post-rotary queries `q`:
//!   `f = w_lh . q + b_lh`, `mu = sigmoid(f - LSE(q))` (LSE over the keys the query may see);
//!   additive form `o = h + mu u_lh` (published), convex form `o = (1 - mu) h + mu u_lh`
//!   (a virtual key/value slot).
//! - LIVE, per layer on the MLP output, norm kept: `o' = (o + a_l v_l) |o| / |o + a_l v_l|`.
//! - LoRA on chosen projections: `y += x A^T B^T alpha / r`.
//!
//! A file is safetensors: the trainable tensors plus metadata naming the method, the base
//! model's fingerprint and the shapes; loading onto another model is an error.
use std::collections::HashMap;
use std::path::Path;

use mimic_models::backend::Site;
use mimic_models::files::write_atomically;
use mimic_models::{Heads, HostTensor, LlamaConfig, Model};
use tch::{Device, Kind, Tensor};

use crate::torch_backend::{AttentionShift, LinearShift, Shifts, SiteShift};
use crate::{Result, TrainerError};

pub use mimic_models::heads::{LoraConfig, Method};

/// The trainable tensors of one method, by name. Every tensor is float32 on the model's
/// device; `decay` says whether weight decay applies (not to biases and scales).
pub struct Shift {
    pub method: Method,
    pub lora: Option<LoraConfig>,
    pub params: Vec<(String, Tensor, bool)>,
    index: HashMap<String, usize>,
}

impl Shift {
    fn from_params(
        method: Method,
        lora: Option<LoraConfig>,
        params: Vec<(String, Tensor, bool)>,
    ) -> Self {
        let index = params
            .iter()
            .enumerate()
            .map(|(i, (n, _, _))| (n.clone(), i))
            .collect();
        Shift {
            method,
            lora,
            params,
            index,
        }
    }

    fn get(&self, name: &str) -> &Tensor {
        &self.params[self.index[name]].1
    }

    /// Fresh parameters with the published initialisation, seeded.
    pub fn init(
        method: Method,
        cfg: &LlamaConfig,
        lora: &LoraConfig,
        device: Device,
        seed: u64,
    ) -> Self {
        tch::manual_seed(seed as i64);
        let (l, h, d) = (
            cfg.num_layers as i64,
            cfg.num_heads as i64,
            cfg.head_dim as i64,
        );
        let opts = (Kind::Float, device);
        let p = |t: Tensor| t.set_requires_grad(true);
        match method {
            Method::Mimic | Method::MimicConvex => Shift::from_params(
                method,
                None,
                vec![
                    (
                        "mimic.w".into(),
                        p(Tensor::randn([l, h, d], opts) * 0.02),
                        true,
                    ),
                    ("mimic.b".into(), p(Tensor::zeros([l, h], opts)), false),
                    (
                        "mimic.u".into(),
                        p(Tensor::randn([l, h, d], opts) * 0.001),
                        true,
                    ),
                ],
            ),
            Method::Live => Shift::from_params(
                method,
                None,
                vec![
                    (
                        "live.v".into(),
                        p(Tensor::randn([l, cfg.hidden_size as i64], opts) * 0.001),
                        true,
                    ),
                    ("live.a".into(), p(Tensor::ones([l], opts)), false),
                ],
            ),
            Method::Lora => {
                let mut params = vec![];
                for (module, (out, inp)) in mimic_models::heads::lora_modules(cfg, lora) {
                    let (out, inp) = (out as i64, inp as i64);
                    let bound = 1.0 / (inp as f64).sqrt();
                    let a = Tensor::rand([lora.rank as i64, inp], opts) * (2.0 * bound) - bound;
                    params.push((format!("lora.{module}.A"), p(a), true));
                    params.push((
                        format!("lora.{module}.B"),
                        p(Tensor::zeros([out, lora.rank as i64], opts)),
                        true,
                    ));
                }
                Shift::from_params(method, Some(lora.clone()), params)
            }
        }
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> i64 {
        self.params.iter().map(|(_, t, _)| t.numel() as i64).sum()
    }

    /// The hooks that apply this method in a forward pass.
    pub fn shifts(&self) -> Shifts<'_> {
        match self.method {
            Method::Mimic | Method::MimicConvex => Shifts {
                attention: Some(self),
                ..Default::default()
            },
            Method::Live => Shifts {
                site: Some(self),
                ..Default::default()
            },
            Method::Lora => Shifts {
                linear: Some(self),
                ..Default::default()
            },
        }
    }

    /// The metadata a heads file carries besides `extra`.
    pub fn metadata(&self, model_fingerprint: &str, cfg: &LlamaConfig) -> HashMap<String, String> {
        let mut meta = HashMap::new();
        meta.insert("mimic.format".into(), "1".into());
        meta.insert("mimic.method".into(), self.method.name().into());
        meta.insert("mimic.fingerprint".into(), model_fingerprint.into());
        meta.insert("mimic.layers".into(), cfg.num_layers.to_string());
        meta.insert("mimic.heads".into(), cfg.num_heads.to_string());
        meta.insert("mimic.head_dim".into(), cfg.head_dim.to_string());
        meta.insert("mimic.hidden".into(), cfg.hidden_size.to_string());
        if let Some(l) = &self.lora {
            meta.insert(
                "mimic.lora".into(),
                serde_json::to_string(l).unwrap_or_default(),
            );
        }
        meta
    }

    /// Named tensors for saving.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|(n, t, _)| (n.clone(), t.shallow_clone()))
            .collect()
    }

    /// Writes the tensors and metadata (to a temporary name, then renamed into place).
    pub fn save(
        &self,
        path: &Path,
        model_fingerprint: &str,
        cfg: &LlamaConfig,
        extra: &HashMap<String, String>,
    ) -> Result<()> {
        let mut meta = self.metadata(model_fingerprint, cfg);
        meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(write_atomically(
            path,
            &crate::safetensors_bytes(&self.named_tensors(), meta)?,
        )?)
    }

    /// Reads a file written by [`Shift::save`] (or a training checkpoint) and checks it was
    /// made for `model` ([`Heads::read`]: method, fingerprint, shapes). Returns the shift, the
    /// metadata and any other tensors in the file.
    pub fn load(path: &Path, model: &Model, device: Device) -> Result<LoadedShift> {
        let heads = Heads::read(path, &model.fingerprint(), &model.config)?;
        let (shift, other) = Shift::from_heads(&heads, &model.config, device)?;
        Ok((shift, heads.metadata, other))
    }

    /// The trainable shift of heads already read and checked, on `device`, with the file's
    /// other tensors (a checkpoint's optimiser state).
    pub fn from_heads(
        heads: &Heads,
        cfg: &LlamaConfig,
        device: Device,
    ) -> Result<(Shift, HashMap<String, Tensor>)> {
        let to_tch = |t: &HostTensor| -> Result<Tensor> {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            Ok(Tensor::f_from_slice(&t.data)?
                .f_reshape(&shape)?
                .f_to_device(device)?)
        };
        // Names, order and weight decay as a fresh init has them (the optimiser's order).
        let template = Shift::init(
            heads.method,
            cfg,
            heads.lora.as_ref().unwrap_or(&LoraConfig::default()),
            Device::Cpu,
            0,
        );
        let params = template
            .params
            .iter()
            .map(|(name, _, decay)| {
                let t = to_tch(heads.tensor(name))?.set_requires_grad(true);
                Ok((name.clone(), t, *decay))
            })
            .collect::<Result<Vec<_>>>()?;
        let other = heads
            .other
            .iter()
            .map(|(name, t)| Ok((name.clone(), to_tch(t)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok((
            Shift::from_params(heads.method, heads.lora.clone(), params),
            other,
        ))
    }
}

/// A loaded shift, its file's metadata, and the file's other tensors (optimiser state).
pub type LoadedShift = (Shift, HashMap<String, String>, HashMap<String, Tensor>);

/// Checks LoRA target names against the projections the model has.
pub fn check_lora_targets(cfg: &LlamaConfig, targets: &[String]) -> Result<()> {
    mimic_models::heads::check_lora_targets_for(cfg, targets).map_err(TrainerError::Other)
}

/// The MimIC head output from the ordinary one: `mu = sigmoid(f - LSE)`, then
/// `h + mu u` (additive) or `(1 - mu) h + mu u` (convex). Shapes broadcast: `h` `[b, H, s, d]`,
/// `lse` and `f` `[b, H, s, 1]`, `u` `[.., d]`.
pub fn mimic_combine(convex: bool, h: &Tensor, lse: &Tensor, f: &Tensor, u: &Tensor) -> Tensor {
    let mu = (f - lse).sigmoid();
    if convex {
        // 1 - mu as sigmoid(LSE - f), not by subtraction: accurate when mu is close to 1.
        let keep = (lse - f).sigmoid();
        keep * h + mu * u
    } else {
        h + mu * u
    }
}

impl AttentionShift for Shift {
    fn shift(&self, layer: usize, q: &Tensor, h: &Tensor, lse: &Tensor) -> Tensor {
        let (heads, d) = (q.size()[1], q.size()[3]);
        let w = self.get("mimic.w").get(layer as i64).view([1, heads, 1, d]);
        let b = self.get("mimic.b").get(layer as i64).view([1, heads, 1, 1]);
        let u = self.get("mimic.u").get(layer as i64).view([1, heads, 1, d]);
        let f = (q * w).sum_dim_intlist(-1, true, Kind::Float) + b;
        mimic_combine(self.method == Method::MimicConvex, h, lse, &f, &u)
    }
}

impl SiteShift for Shift {
    fn shift(&self, layer: usize, site: Site, x: Tensor) -> Tensor {
        if site != Site::MlpOutput {
            return x;
        }
        let v = self.get("live.v").get(layer as i64);
        let a = self.get("live.a").get(layer as i64);
        let shifted = &x + a * v;
        let norm = x.norm_scalaropt_dim(2, [-1], true);
        let shifted_norm = shifted.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
        shifted * norm / shifted_norm
    }
}

impl LinearShift for Shift {
    fn delta(&self, module: &str, x: &Tensor) -> Option<Tensor> {
        let lora = self.lora.as_ref()?;
        let a = self.index.get(&format!("lora.{module}.A"))?;
        let b = self.index.get(&format!("lora.{module}.B"))?;
        let scale = lora.alpha / lora.rank as f64;
        Some(
            x.matmul(&self.params[*a].1.tr())
                .matmul(&self.params[*b].1.tr())
                * scale,
        )
    }
}
