//! Heads fed per request to a graph compiled with `--heads-as-inputs`: each batch row gets the
//! `heads.*` inputs of its own heads file, or none (the base model's behaviour).
use mimic_models::contract::{Contract, HeadParam};
use mimic_models::heads::cache_slots;
use mimic_models::{Heads, Method};

use crate::{Result, RuntimeError};

/// The `heads.*` input tensors of one batch: `(name, [batch, ..], values)`.
#[derive(Debug, Clone)]
pub struct HeadsBatch {
    pub rows: usize,
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// For fused MimIC graphs, the rows' cache slots per layer: keys `[rows, kv, G, key_dim]`
    /// and values `[rows, kv, G, value_dim]`, flattened.
    pub slots: Vec<(Vec<f32>, Vec<f32>)>,
}

/// One row's values of input `param` when it has no heads: MimIC `w = u = 0` and `b` at the
/// float minimum (the slot gets no weight, `mu = 0`); LIVE a zero shift.
fn neutral(param: HeadParam, len: usize) -> Vec<f32> {
    let fill = if param == HeadParam::B { f32::MIN } else { 0.0 };
    vec![fill; len]
}

/// One row's values of input `param` from a heads file.
fn from_file(h: &Heads, param: HeadParam) -> Vec<f32> {
    match param {
        HeadParam::W | HeadParam::B | HeadParam::U => {
            h.tensor(&format!("mimic.{}", param.kind())).data.clone()
        }
        HeadParam::Live => {
            let layers = h.tensor("live.a").shape[0];
            (0..layers).flat_map(|l| h.live_shift(l)).collect()
        }
    }
}

impl HeadsBatch {
    /// The inputs for `rows`, each a heads file of the graph's method or `None`.
    pub fn new(model: &Contract, rows: &[Option<&Heads>]) -> Result<Self> {
        let contract = model
            .heads
            .as_ref()
            .ok_or_else(|| RuntimeError::Other("the compiled model takes no heads".into()))?;
        for h in rows.iter().flatten() {
            if h.method != contract.method {
                return Err(RuntimeError::File {
                    path: h.path.clone(),
                    msg: format!(
                        "holds {} heads, but the graph takes {} heads as inputs",
                        h.method.name(),
                        contract.method.name()
                    ),
                });
            }
        }
        if contract.method == Method::Lora {
            return Err(RuntimeError::Other(
                "LoRA heads cannot be graph inputs".into(),
            ));
        }
        let tensors = contract
            .inputs
            .iter()
            .map(|&(param, ref shape)| {
                let len: usize = shape.iter().product();
                let mut data = Vec::with_capacity(len * rows.len());
                for row in rows {
                    match row {
                        Some(h) => data.extend(from_file(h, param)),
                        None => data.extend(neutral(param, len)),
                    }
                }
                let mut dims = vec![rows.len()];
                dims.extend(shape);
                (param.input_name().to_string(), dims, data)
            })
            .collect();
        let mut slots = Vec::new();
        if model.kv_cache.slots > 0 {
            let convex = contract.method == Method::MimicConvex;
            let (fp16, key_dim) = (model.is_fp16(), model.kv_cache.key_dim);
            for l in 0..model.kv_cache.num_layers {
                let (mut keys, mut values) = (Vec::new(), Vec::new());
                for row in rows {
                    let (k, v) = cache_slots(*row, convex, fp16, key_dim, &model.config, l);
                    keys.extend(k);
                    values.extend(v);
                }
                slots.push((keys, values));
            }
        }
        Ok(HeadsBatch {
            rows: rows.len(),
            tensors,
            slots,
        })
    }

    /// The same inputs for `batch` rows: a single row is repeated.
    pub fn for_batch(&self, batch: usize) -> Result<HeadsBatch> {
        if self.rows == batch {
            return Ok(self.clone());
        }
        if self.rows != 1 {
            return Err(RuntimeError::Other(format!(
                "heads given for {} rows, but the batch has {batch}",
                self.rows
            )));
        }
        let tensors = self
            .tensors
            .iter()
            .map(|(n, dims, data)| {
                let mut dims = dims.clone();
                dims[0] = batch;
                (n.clone(), dims, data.repeat(batch))
            })
            .collect();
        let slots = self
            .slots
            .iter()
            .map(|(k, v)| (k.repeat(batch), v.repeat(batch)))
            .collect();
        Ok(HeadsBatch {
            rows: batch,
            tensors,
            slots,
        })
    }
}
