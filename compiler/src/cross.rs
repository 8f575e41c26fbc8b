//! Idefics' gated cross-attention in the decoder graph ([`crate::emit::OnnxBackend`]), and the
//! graph that computes its keys and values once per prompt.
//!
//! The decoder takes `image_slots [batch, seq]` (the slot of `latents_per_image` keys each
//! new token reads, -1 for none) and, per block, `cross.{j}.key|value [batch, heads,
//! n_image_keys, head_dim]` from `cross_kv.onnx` ([`emit_cross_kv`]), which the runtime runs
//! once when a prompt's images arrive: a decode step then costs no cross-attention
//! projection. [`CrossKv::Recomputed`] instead takes `image_latents` and projects them in
//! every pass, as transformers does (for comparison).
//!
//! ```text
//! key_slot[k] = k / latents_per_image
//! mask[b, 0, s, k] = 0 if key_slot[k] == image_slots[b, s] else MASK_MIN
//! out = softmax(q k^T * d^-0.5 + mask) v * (image_slots >= 0)
//! ```
use std::path::Path;

use mimic_models::config::GatedCrossAttention;
use mimic_models::contract::{cross_key, cross_value, IMAGE_LATENTS, IMAGE_SLOTS, MASK_MIN};
use mimic_models::{llama, Model};

use crate::emit::{OnnxBackend, Value};
use crate::fold::HeadsSource;
use crate::graph::{attr_float, attr_int, attr_ints, value_info, Dim, GraphBuilder};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::ModelProto;
use crate::Result;

/// Where a cross-attention decoder graph gets its blocks' keys and values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CrossKv {
    /// As inputs, computed once per prompt by `cross_kv.onnx`.
    #[default]
    Inputs,
    /// Projected from `image_latents` in every pass (transformers' way).
    Recomputed,
}

impl CrossKv {
    pub fn name(self) -> &'static str {
        match self {
            CrossKv::Inputs => "once",
            CrossKv::Recomputed => "every-step",
        }
    }
}

impl std::str::FromStr for CrossKv {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "once" => Ok(CrossKv::Inputs),
            "every-step" => Ok(CrossKv::Recomputed),
            _ => Err(format!("unknown cross-kv `{s}` (once, every-step)")),
        }
    }
}

/// Declares a cross-attention decoder's extra inputs.
pub(crate) fn declare_inputs(
    b: &mut OnnxBackend,
    x: &GatedCrossAttention,
    heads: usize,
    num_layers: usize,
) {
    use Dim::*;
    let g = &mut b.g;
    g.inputs.push(value_info(
        IMAGE_SLOTS,
        DataType::Int64,
        &[Named("batch"), Named("seq")],
    ));
    match b.cross_kv {
        CrossKv::Inputs => {
            for j in 0..x.num_blocks(num_layers) {
                for name in [cross_key(j), cross_value(j)] {
                    let dims = [
                        Named("batch"),
                        Fixed(heads as i64),
                        Named("n_image_keys"),
                        Fixed(b.head_dim as i64),
                    ];
                    g.inputs.push(value_info(&name, DataType::Float, &dims));
                }
            }
        }
        CrossKv::Recomputed => g.inputs.push(value_info(
            IMAGE_LATENTS,
            DataType::Float,
            &[
                Named("batch"),
                Named("n_image_keys"),
                Fixed(x.kv_input_dim as i64),
            ],
        )),
    }
}

/// Block `block`'s keys and values: the inputs, or `project` of the latents.
pub(crate) fn keys_values<'w, F>(
    b: &mut OnnxBackend<'w>,
    block: usize,
    project: F,
) -> (Value, Value)
where
    F: FnOnce(&mut OnnxBackend<'w>, &Value) -> (Value, Value),
{
    match b.cross_kv {
        CrossKv::Inputs => (Value::new(cross_key(block)), Value::new(cross_value(block))),
        CrossKv::Recomputed => project(b, &Value::new(IMAGE_LATENTS)),
    }
}

/// The additive mask `[batch, 1, seq, n_image_keys]` and the read gate `[batch, 1, seq, 1]`,
/// built once per graph from `image_slots` and the keys' length.
fn mask_and_reads(b: &mut OnnxBackend, k: &str, latents: usize) -> (String, String) {
    if let Some(m) = &b.cross_mask {
        return m.clone();
    }
    let g = &mut b.g;
    let n = g.node(
        "Shape",
        &[k],
        vec![attr_int("start", 2), attr_int("end", 3)],
    );
    let zero = g.const_i64(&[0]);
    let one = g.const_i64(&[1]);
    let scalar = g.const_i64(&[]);
    let n0 = g.node("Reshape", &[&n, &scalar], vec![]);
    let z0 = g.node("Reshape", &[&zero, &scalar], vec![]);
    let o0 = g.node("Reshape", &[&one, &scalar], vec![]);
    let keys = g.node("Range", &[&z0, &n0, &o0], vec![]);
    let per = g.const_i64(&[latents as i64]);
    let key_slots = g.node("Div", &[&keys, &per], vec![]);
    let shape = g.const_i64(&[1, 1, 1, -1]);
    let key_slots = g.node("Reshape", &[&key_slots, &shape], vec![]);
    let axes = g.const_i64(&[1, 3]);
    let slots = g.node("Unsqueeze", &[IMAGE_SLOTS, &axes], vec![]);
    let allowed = g.node("Equal", &[&key_slots, &slots], vec![]);
    let open = g.scalar_f32(0.0);
    let shut = g.scalar_f32(MASK_MIN);
    let mask = g.node("Where", &[&allowed, &open, &shut], vec![]);
    let zero_slot = g.const_i64(&[0]);
    let reads = g.node("GreaterOrEqual", &[&slots, &zero_slot], vec![]);
    let reads = g.node(
        "Cast",
        &[&reads],
        vec![attr_int("to", DataType::Float as i64)],
    );
    b.cross_mask = Some((mask.clone(), reads.clone()));
    (mask, reads)
}

/// Cross-attention of `q` over one block's keys and values (see the module's formula).
pub(crate) fn attention(
    b: &mut OnnxBackend,
    q: &Value,
    k: &Value,
    v: &Value,
    head_dim: usize,
    latents: usize,
) -> Value {
    let q = b.unpacked(q);
    let k = b.unpacked(k);
    let v = b.unpacked(v);
    let (mask, reads) = mask_and_reads(b, &k, latents);
    let g = &mut b.g;
    let kt = g.node("Transpose", &[&k], vec![attr_ints("perm", &[0, 1, 3, 2])]);
    let scores = g.node("MatMul", &[&q, &kt], vec![]);
    let scale = g.scalar_f32(1.0 / (head_dim as f32).sqrt());
    let scores = g.node("Mul", &[&scores, &scale], vec![]);
    let scores = g.node("Add", &[&scores, &mask], vec![]);
    let p = g.node("Softmax", &[&scores], vec![attr_int("axis", -1)]);
    let out = g.node("MatMul", &[&p, &v], vec![]);
    Value::new(g.node("Mul", &[&out, &reads], vec![]))
}

/// RMS norm over each head's channels (`x` `[batch, heads, seq, d]`).
pub(crate) fn head_rms_norm(b: &mut OnnxBackend, x: &Value, weight: &str, eps: f64) -> Value {
    let x = b.unpacked(x);
    let w = b.weight(weight);
    Value::new(b.g.node(
        "RMSNormalization",
        &[&x, &w],
        vec![
            attr_int("axis", -1),
            attr_float("epsilon", eps as f32),
            attr_int("stash_type", 1),
        ],
    ))
}

/// `x * tanh(alpha)`.
pub(crate) fn gate(b: &mut OnnxBackend, x: &Value, alpha: &str) -> Value {
    let w = b.weight(alpha);
    let t = b.g.node("Tanh", &[&w], vec![]);
    Value::new(b.g.node("Mul", &[&x.name, &t], vec![]))
}

/// The cross graph: `image_latents [batch, n_image_keys, kv_input_dim]` to every block's
/// `cross.{j}.key|value` (the decoder's inputs), with folded LoRA heads on the cross
/// projections merged in.
pub fn emit_cross_kv(
    model: &Model,
    heads: HeadsSource,
    data_path: Option<&Path>,
) -> Result<ModelProto> {
    use Dim::*;
    let cfg = &model.config;
    let x = cfg.cross_attention.as_ref().ok_or_else(|| {
        crate::CompileError::Other("the model has no cross-attention blocks".into())
    })?;
    let g = GraphBuilder::new(data_path)?;
    let mut b = OnnxBackend::bare(g, cfg, &model.weights, heads)?;
    b.g.inputs.push(value_info(
        IMAGE_LATENTS,
        DataType::Float,
        &[
            Named("batch"),
            Named("n_image_keys"),
            Fixed(x.kv_input_dim as i64),
        ],
    ));
    let z = Value::new(IMAGE_LATENTS);
    for j in 0..x.num_blocks(cfg.num_layers) {
        let (k, v) = llama::cross_keys_values(cfg, x, &mut b, j, &z);
        for (t, name) in [(k, cross_key(j)), (v, cross_value(j))] {
            let t = b.unpacked(&t);
            b.g.node_named("Identity", &[&t], &[&name], vec![]);
            let dims = [
                Named("batch"),
                Fixed(cfg.num_heads as i64),
                Named("n_image_keys"),
                Fixed(cfg.head_dim as i64),
            ];
            b.g.outputs.push(value_info(&name, DataType::Float, &dims));
        }
    }
    if let Some(e) = b.take_error() {
        return Err(e);
    }
    let mut graph = b.g.finish("mimic_cross_kv")?;
    crate::passes::run_passes(&mut graph, &crate::compile::DEFAULT_PASSES);
    crate::compile::finish_model(graph)
}
