//! Heads files: what the trainer fits on a frozen model and the compiler folds into it.
//!
//! A heads file is safetensors: the method's tensors plus metadata naming the method, the base
//! model's fingerprint and the shapes. This module reads one without libtorch (the compiler
//! and the runtime need it) and checks it against the model it is meant for.
//!
//! Tensors per method (`L` layers, `H` query heads, `D` head size):
//! - MimIC (additive or convex): `mimic.w [L, H, D]`, `mimic.b [L, H]`, `mimic.u [L, H, D]`;
//! - LIVE: `live.v [L, hidden]`, `live.a [L]`;
//! - LoRA: `lora.model.layers.{l}.{target}.A [rank, in]` and `.B [out, rank]` per target.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::weights::{
    map_file, read_safetensors_with_metadata, safetensors_from_bytes, safetensors_metadata,
    HostTensor,
};

/// Which method, and for MimIC which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// MimIC, additive form: `o = h + mu u`.
    Mimic,
    /// MimIC, convex (virtual-slot) form: `o = (1 - mu) h + mu u`.
    MimicConvex,
    Live,
    Lora,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mimic" | "mimic-additive" => Ok(Self::Mimic),
            "mimic-convex" => Ok(Self::MimicConvex),
            "live" => Ok(Self::Live),
            "lora" => Ok(Self::Lora),
            _ => Err(format!(
                "unknown method `{s}` (mimic, mimic-convex, live, lora)"
            )),
        }
    }
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mimic => "mimic",
            Self::MimicConvex => "mimic-convex",
            Self::Live => "live",
            Self::Lora => "lora",
        }
    }

    pub fn is_mimic(self) -> bool {
        matches!(self, Self::Mimic | Self::MimicConvex)
    }
}

/// LoRA settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Projection names within a layer, e.g. `self_attn.q_proj`.
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            targets: vec!["self_attn.q_proj".into(), "self_attn.v_proj".into()],
        }
    }
}

/// The projections LoRA may target: a decoder layer's, and a gated cross-attention block's
/// (`cross_attn.*`, Idefics: the published MimIC code's PEFT config names q/k/v/o_proj by
/// suffix, which matches these too).
pub const LORA_TARGETS: [&str; 11] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
    "cross_attn.q_proj",
    "cross_attn.k_proj",
    "cross_attn.v_proj",
    "cross_attn.o_proj",
];

/// Checks LoRA target names against the projections a layer has.
pub fn check_lora_targets(targets: &[String]) -> std::result::Result<(), String> {
    for t in targets {
        if !LORA_TARGETS.contains(&t.as_str()) {
            return Err(format!(
                "unknown LoRA target `{t}` (one of {LORA_TARGETS:?})"
            ));
        }
    }
    Ok(())
}

/// Checks LoRA targets against `cfg`: a gated cross-attention target needs a decoder that
/// has those blocks.
pub fn check_lora_targets_for(
    cfg: &LlamaConfig,
    targets: &[String],
) -> std::result::Result<(), String> {
    check_lora_targets(targets)?;
    match targets.iter().find(|t| t.starts_with("cross_attn.")) {
        Some(t) if cfg.cross_attention.is_none() => Err(format!(
            "LoRA target `{t}` needs gated cross-attention blocks (Idefics); this decoder has none"
        )),
        _ => Ok(()),
    }
}

/// `(out, in)` of a layer's (or a gated block's) projection.
pub fn projection_shape(cfg: &LlamaConfig, target: &str) -> (usize, usize) {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let cross_in = cfg.cross_attention.as_ref().map_or(h, |x| x.kv_input_dim);
    match target {
        "self_attn.q_proj" | "cross_attn.q_proj" => (q, h),
        "self_attn.k_proj" | "self_attn.v_proj" => (kv, h),
        "cross_attn.k_proj" | "cross_attn.v_proj" => (q, cross_in),
        "self_attn.o_proj" | "cross_attn.o_proj" => (h, q),
        "mlp.gate_proj" | "mlp.up_proj" => (i, h),
        "mlp.down_proj" => (h, i),
        _ => (h, h),
    }
}

/// Every module LoRA adapts, with its `(out, in)`: each target in each decoder layer
/// (`model.layers.{l}.{target}`), a `cross_attn.*` target in each gated block
/// (`model.gated_cross_attn_layers.{j}.{target}`).
pub fn lora_modules(cfg: &LlamaConfig, lora: &LoraConfig) -> Vec<(String, (usize, usize))> {
    let mut v = Vec::new();
    for layer in 0..cfg.num_layers {
        for t in lora
            .targets
            .iter()
            .filter(|t| !t.starts_with("cross_attn."))
        {
            v.push((
                format!("model.layers.{layer}.{t}"),
                projection_shape(cfg, t),
            ));
        }
    }
    if let Some(x) = &cfg.cross_attention {
        for j in 0..x.num_blocks(cfg.num_layers) {
            for t in lora.targets.iter().filter(|t| t.starts_with("cross_attn.")) {
                v.push((
                    crate::config::cross_block_name(j, t),
                    projection_shape(cfg, t),
                ));
            }
        }
    }
    v
}

/// The tensors a method's file holds for `cfg`, with their shapes, in file order.
pub fn expected_tensors(
    method: Method,
    cfg: &LlamaConfig,
    lora: &LoraConfig,
) -> Vec<(String, Vec<usize>)> {
    let (l, h, d) = (cfg.num_layers, cfg.num_heads, cfg.head_dim);
    match method {
        Method::Mimic | Method::MimicConvex => vec![
            ("mimic.w".into(), vec![l, h, d]),
            ("mimic.b".into(), vec![l, h]),
            ("mimic.u".into(), vec![l, h, d]),
        ],
        Method::Live => vec![
            ("live.v".into(), vec![l, cfg.hidden_size]),
            ("live.a".into(), vec![l]),
        ],
        Method::Lora => lora_modules(cfg, lora)
            .into_iter()
            .flat_map(|(module, (out, inp))| {
                [
                    (format!("lora.{module}.A"), vec![lora.rank, inp]),
                    (format!("lora.{module}.B"), vec![out, lora.rank]),
                ]
            })
            .collect(),
    }
}

/// A heads file read on the host and checked against its model.
#[derive(Debug, Clone)]
pub struct Heads {
    pub path: PathBuf,
    pub method: Method,
    pub lora: Option<LoraConfig>,
    pub tensors: BTreeMap<String, HostTensor>,
    pub metadata: HashMap<String, String>,
    /// The file's other tensors (a training checkpoint's optimiser state), unchecked.
    pub other: BTreeMap<String, HostTensor>,
}

impl Heads {
    /// Reads `path` and checks that it was made for the model with `fingerprint` and `cfg`:
    /// method known, fingerprint equal, every tensor present with the shape the model implies.
    pub fn read(path: &Path, fingerprint: &str, cfg: &LlamaConfig) -> Result<Heads> {
        Self::from_bytes(path, &map_file(path)?, fingerprint, cfg)
    }

    /// [`Heads::read`] on a heads file held in memory; `path` only names it in errors.
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        fingerprint: &str,
        cfg: &LlamaConfig,
    ) -> Result<Heads> {
        let err = |msg: String| ModelError::format(path, format!("heads file: {msg}"));
        // The metadata first: a file that is not a heads file is named as such, whatever
        // its tensors hold.
        let metadata = safetensors_metadata(path, bytes)?;
        let method: Method = metadata
            .get("mimic.method")
            .ok_or_else(|| err("no `mimic.method` in its metadata: not a mimic heads file".into()))?
            .parse()
            .map_err(err)?;
        let got = metadata
            .get("mimic.fingerprint")
            .map(String::as_str)
            .unwrap_or("(none)");
        if got != fingerprint {
            return Err(err(format!(
                "made for a model with fingerprint {got}, but this model has fingerprint {fingerprint}"
            )));
        }
        let lora: Option<LoraConfig> = match metadata.get("mimic.lora") {
            Some(s) => {
                Some(serde_json::from_str(s).map_err(|e| err(format!("bad LoRA settings: {e}")))?)
            }
            None if method == Method::Lora => {
                return Err(err("a LoRA file without `mimic.lora` settings".into()))
            }
            None => None,
        };
        if let Some(l) = &lora {
            check_lora_targets_for(cfg, &l.targets).map_err(err)?;
            if l.rank == 0 {
                return Err(err("LoRA rank 0".into()));
            }
        }
        let (mut tensors, _) = safetensors_from_bytes(path, bytes)?;
        let mut kept = BTreeMap::new();
        for (name, shape) in
            expected_tensors(method, cfg, lora.as_ref().unwrap_or(&LoraConfig::default()))
        {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| err(format!("tensor {name} missing")))?;
            if t.shape != shape {
                return Err(err(format!(
                    "tensor {name} has shape {:?}, this model needs {shape:?}",
                    t.shape
                )));
            }
            if let Some(x) = t.data.iter().find(|x| !x.is_finite()) {
                return Err(err(format!("tensor {name} holds a non-finite value ({x})")));
            }
            kept.insert(name, t);
        }
        Ok(Heads {
            path: path.to_path_buf(),
            method,
            lora,
            tensors: kept,
            metadata,
            other: tensors,
        })
    }

    /// A tensor the method has (checked on read).
    pub fn tensor(&self, name: &str) -> &HostTensor {
        &self.tensors[name]
    }

    /// Layer `layer`'s rows of an `[L, ..]` tensor.
    pub fn layer(&self, name: &str, layer: usize) -> &[f32] {
        let t = self.tensor(name);
        let n = t.data.len() / t.shape[0];
        &t.data[layer * n..(layer + 1) * n]
    }

    /// LIVE's shift of layer `layer`, `a_l v_l`.
    pub fn live_shift(&self, layer: usize) -> Vec<f32> {
        let a = self.layer("live.a", layer)[0];
        self.layer("live.v", layer).iter().map(|v| a * v).collect()
    }

    /// `W + (alpha / r) B A` for each LoRA target weight, by weight name.
    pub fn lora_merged(&self, weights: &crate::Weights) -> Result<BTreeMap<String, HostTensor>> {
        self.lora_merged_where(weights, |_| true)
    }

    /// [`Heads::lora_merged`] for the target weights `merge` names (by weight name) only.
    pub fn lora_merged_where(
        &self,
        weights: &crate::Weights,
        merge: impl Fn(&str) -> bool,
    ) -> Result<BTreeMap<String, HostTensor>> {
        let mut out = BTreeMap::new();
        let Some(lora) = &self.lora else {
            return Ok(out);
        };
        let scale = (lora.alpha / lora.rank as f64) as f32;
        let r = lora.rank;
        for (name, a) in &self.tensors {
            let Some(module) = name
                .strip_prefix("lora.")
                .and_then(|n| n.strip_suffix(".A"))
            else {
                continue;
            };
            let weight = format!("{module}.weight");
            if !merge(&weight) {
                continue;
            }
            let b = self.tensor(&format!("lora.{module}.B"));
            let w = weights.get(&weight)?;
            let (rows, cols) = (w.shape[0], w.shape[1]);
            let mut data = w.data.clone();
            for i in 0..rows {
                let brow = &b.data[i * r..(i + 1) * r];
                let out_row = &mut data[i * cols..(i + 1) * cols];
                for (k, &bik) in brow.iter().enumerate() {
                    let coef = bik * scale;
                    let arow = &a.data[k * cols..(k + 1) * cols];
                    for (o, &akj) in out_row.iter_mut().zip(arow) {
                        *o += coef * akj;
                    }
                }
            }
            out.insert(
                format!("{module}.weight"),
                HostTensor::new(w.shape.clone(), data),
            );
        }
        Ok(out)
    }
}

/// A score that gives a key no weight, finite so that sums with it stay finite.
pub const NO_WEIGHT: f32 = -1e30;

/// Value channels a fused MimIC graph adds per head: none (convex), or two (additive): one
/// that is 1 for real keys (the output channel is the real keys' weight, `1 - mu` up to the
/// slot's share) and one that is nonzero for the slot only (its output channel, divided by
/// the sum of both, is `mu`).
pub fn extra_value_channels(convex: bool) -> usize {
    if convex {
        0
    } else {
        2
    }
}

/// Whether a fused MimIC graph scores its slots' bias `b` through the keys: queries get a
/// channel of ones and keys one more channel, so a slot key `sqrt(D) [w, b]` scores
/// `w . q + b`. The convex form needs it (its slot's weight must be `mu` itself); so does
/// a float16 cache, which cannot hold `e^b` for `b` above 11. The additive form in float32
/// leaves queries and keys `D` wide: its slot scores `w . q` and carries `e^b` in its `mu`
/// value channel instead, which the epilogue's division by both extra channels turns into
/// `mu` exactly (see [`cache_slots`]).
pub fn bias_in_key(convex: bool, fp16: bool) -> bool {
    convex || fp16
}

/// The largest `b` whose `e^b` a float32 additive slot carries (`e^80` keeps the attention
/// sums finite); a larger `b` is clamped, which moves `mu` by more than 1e-7 only where
/// `w . q - LSE` is below -63. Trained heads stay within a few units of 0.
pub const MAX_VALUE_BIAS: f32 = 80.0;

/// The slot's value in the real keys' channel: not 0 but a floor, so that a padding row,
/// which puts all its weight on the slot, divides by a positive number. Small enough to
/// change the divisor by a relative 1e-30 times the slot's share over the real keys' in
/// float32. A float16 cache cannot hold so small a floor (its least value, 2^-24, is larger
/// than the `1 - mu` trained heads reach), so there the floor is 0 and the graph clamps the
/// divisor instead.
pub fn keep_floor(fp16: bool) -> f32 {
    if fp16 {
        0.0
    } else {
        1e-30
    }
}

/// The MimIC slots a KV-cache starts with when a fused graph carries them in its cache, for
/// one layer: keys `[kv_heads, G, key_dim]` and values `[kv_heads, G, Dv]`. `key_dim` is the
/// graph's (its contract's): `D + 1` where the slots score their bias through the keys
/// ([`bias_in_key`] at compile time), `D` otherwise. Taking it from the graph keeps the
/// slots in step with whichever layout a folder was compiled with.
///
/// Query head `h = kv * G + j` owns slot `j` of KV head `kv`; the mask hides it from the
/// group's other heads. Its key is `sqrt(D) [w_h, b_h]` (against the query `[q, 1]` with
/// scale `1 / sqrt(D)` it scores `f = w_h . q + b_h`) or `sqrt(D) w_h` (it scores
/// `w_h . q`). Its value is `u_h` (convex, `Dv = D`) or `[0, .., 0, keep_floor, c]`
/// (additive, `Dv = D + 2`, real values carrying `[1, 0]`), with `c` 1 when the key scores
/// `b` and `e^b` when it does not: attention then returns, per head, `[E h, E + floor F,
/// c F] / (E + F)`, with `E` the real keys' summed exponentials and `F` the slot's, and the
/// last channel over the sum of the two extra ones is `e^b e^(w.q) / (E + e^b e^(w.q))`
/// either way, which is `mu`. Without heads the slot scores [`NO_WEIGHT`] (or carries
/// `c = 0`, so that `mu = 0`) and the model is the base model.
pub fn cache_slots(
    heads: Option<&Heads>,
    convex: bool,
    fp16: bool,
    key_dim: usize,
    cfg: &LlamaConfig,
    layer: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (h, kv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let g = h / kv;
    let root = (d as f32).sqrt();
    let dv = d + extra_value_channels(convex);
    let in_key = key_dim > d;
    let mut keys = vec![0f32; h * key_dim];
    let mut values = vec![0f32; h * dv];
    for head in 0..h {
        // Row (kv, j) of [kv, G, ..] is row kv * G + j = head.
        let key = &mut keys[head * key_dim..(head + 1) * key_dim];
        let value = &mut values[head * dv..(head + 1) * dv];
        let mut slot_weight = 1.0;
        match heads {
            Some(hs) => {
                let w = &hs.layer("mimic.w", layer)[head * d..(head + 1) * d];
                for (k, x) in key.iter_mut().zip(w) {
                    *k = root * x;
                }
                let b = hs.layer("mimic.b", layer)[head];
                if in_key {
                    key[d] = root * b;
                } else {
                    slot_weight = b.min(MAX_VALUE_BIAS).exp();
                }
                if convex {
                    let u = &hs.layer("mimic.u", layer)[head * d..(head + 1) * d];
                    value[..d].copy_from_slice(u);
                }
            }
            None if in_key => key[d] = NO_WEIGHT,
            None => slot_weight = 0.0,
        }
        if !convex {
            value[d] = keep_floor(fp16);
            value[d + 1] = slot_weight;
        }
    }
    debug_assert_eq!(keys.len(), kv * g * key_dim);
    (keys, values)
}

/// The file beside a compiled model that holds its folded heads' cache slots.
pub const SLOTS_FILE: &str = "slots.safetensors";

/// Every layer's [`cache_slots`] as safetensors bytes: `layers.{l}.key` `[kv, G, Dk]` and
/// `layers.{l}.value` `[kv, G, Dv]`.
pub fn cache_slots_bytes(
    heads: &Heads,
    convex: bool,
    fp16: bool,
    cfg: &LlamaConfig,
) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let (kv, g, d) = (
        cfg.num_kv_heads,
        cfg.num_heads / cfg.num_kv_heads,
        cfg.head_dim,
    );
    let dv = d + extra_value_channels(convex);
    let mut data = Vec::new();
    let dk = d + bias_in_key(convex, fp16) as usize;
    for l in 0..cfg.num_layers {
        let (k, v) = cache_slots(Some(heads), convex, fp16, dk, cfg, l);
        let bytes = |x: Vec<f32>| x.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
        data.push((format!("layers.{l}.key"), vec![kv, g, dk], bytes(k)));
        data.push((format!("layers.{l}.value"), vec![kv, g, dv], bytes(v)));
    }
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, shape, b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|t| (n.clone(), t))
                .map_err(|e| crate::ModelError::Other(format!("cache slots: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::tensor::serialize(views, None)
        .map_err(|e| crate::ModelError::Other(format!("cache slots: {e}")))
}

/// Reads [`SLOTS_FILE`]: per layer, keys and values.
pub fn read_cache_slots(path: &Path, layers: usize) -> Result<Vec<(HostTensor, HostTensor)>> {
    let (mut t, _) = read_safetensors_with_metadata(path)?;
    (0..layers)
        .map(|l| {
            let mut take = |n: String| {
                t.remove(&n).ok_or_else(|| ModelError::Tensor {
                    path: path.to_path_buf(),
                    tensor: n,
                    msg: "missing".into(),
                })
            };
            Ok((
                take(format!("layers.{l}.key"))?,
                take(format!("layers.{l}.value"))?,
            ))
        })
        .collect()
}
