//! Self-attention in the graph, in the form `--attention` names, each with its base-model and
//! its MimIC variant (docs/design.md section 3, "Attention forms and the fold"):
//!
//! - [`fused`]: the opset-23 `Attention` operator over the KV cache; MimIC as extra cache
//!   slots and value channels, with an epilogue for the additive form;
//! - [`unfused`]: MatMul, Softmax, MatMul; MimIC with its log-sum-exp and `mu` as explicit
//!   nodes, as the trainer computes them;
//! - [`kernel`]: mimic's own CPU operator, `ai.mimic:MimicAttention`, which computes MimIC
//!   itself.
//!
//! [`emit`] is the one entry point (the ONNX backend's `attention`); this module also holds
//! what the forms share: the masks, the scaled and masked scores, the weighted values and the
//! KV-cache concatenation.
//!
//! MimIC, per layer and query head, on post-rotary queries `q`: `f = w . q + b`,
//! `mu = sigmoid(f - LSE)` with LSE the log-sum-exp of the head's masked, scaled scores, and
//! `o = h + mu u` (additive) or `o = (1 - mu) h + mu u` (convex).
use std::collections::HashMap;

use mimic_models::backend::AttentionSpec;
use mimic_models::contract::{
    past_key, past_value, present_key, present_value, AttentionImpl, ATTENTION_MASK, MASK_MIN,
};
use mimic_models::Method;

use crate::emit::{OnnxBackend, Value};
use crate::graph::{attr_int, attr_ints, GraphBuilder};
use crate::onnx::tensor_proto::DataType;

pub mod fused;
pub mod kernel;
pub mod unfused;

/// The form of MimIC heads, where a graph has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MimicForm {
    /// `o = h + mu u`.
    Additive,
    /// `o = (1 - mu) h + mu u`.
    Convex,
}

impl MimicForm {
    /// The form of `method`'s heads; `None` for the base model and for other methods.
    pub fn of(method: Option<Method>) -> Option<Self> {
        match method? {
            Method::Mimic => Some(MimicForm::Additive),
            Method::MimicConvex => Some(MimicForm::Convex),
            Method::Live | Method::Lora => None,
        }
    }

    pub fn is_convex(self) -> bool {
        self == MimicForm::Convex
    }
}

/// A sliding window (`None`: the whole context).
type Window = Option<usize>;

/// The additive attention masks of a graph, each built once per sliding window and shared by
/// the layers with that window.
#[derive(Debug, Default)]
pub struct Masks {
    /// `[batch, 1, seq, total_seq]`: the model's mask ([`mask`]).
    keys: HashMap<Window, String>,
    /// `[batch, heads, seq, G + total_seq]`: fused MimIC's, over the cache slots and the keys
    /// ([`fused::slot_mask`]).
    slots: HashMap<Window, String>,
}

/// What one layer's attention reads: the queries `q` and new keys `k` (both rotated), the new
/// values `v`, and the layer's shape facts.
#[derive(Debug, Clone, Copy)]
pub struct Operands<'a> {
    pub q: &'a Value,
    pub k: &'a Value,
    pub v: &'a Value,
    pub spec: &'a AttentionSpec,
}

/// Layer `spec.layer`'s attention over queries `q` and new keys and values `k`, `v`, in the
/// backend's form, with the backend's MimIC heads if it has any: `[batch, heads, seq, dim]`
/// (packed or not, as the returned [`Value`] says). Also produces the layer's `present.*`
/// outputs.
pub(crate) fn emit(
    b: &mut OnnxBackend,
    q: &Value,
    k: &Value,
    v: &Value,
    spec: &AttentionSpec,
) -> Value {
    let x = Operands { q, k, v, spec };
    let mimic = MimicForm::of(b.heads.method());
    match b.attention {
        AttentionImpl::Fused => fused::attention(b, x, mimic),
        AttentionImpl::Unfused => unfused::attention(b, x, mimic),
        AttentionImpl::Kernel => kernel::attention(b, x, mimic),
    }
}

/// The scores' scale, `1 / sqrt(head_dim)`.
fn scale(spec: &AttentionSpec) -> f32 {
    1.0 / (spec.head_dim as f32).sqrt()
}

/// Records `message` as the backend's error unless `q`, `k` and `v` are all packed.
fn expect_packed(b: &mut OnnxBackend, qkv: [&Value; 3], message: &str) {
    if !qkv.iter().all(|x| x.packed.is_some()) {
        b.error
            .get_or_insert(crate::CompileError::Other(message.into()));
    }
}

/// `0` where a query may attend a key, [`MASK_MIN`] elsewhere, `[batch, 1, seq, total_seq]`:
/// keys must be real tokens, at or before the query's cache index `past + i`, and within the
/// window. Built once per window.
pub(crate) fn mask(b: &mut OnnxBackend, window: Window) -> String {
    if let Some(m) = b.masks.keys.get(&window) {
        return m.clone();
    }
    let zero = b.g.scalar_i64(0);
    let one = b.g.scalar_i64(1);
    let shape_mask = b.g.node("Shape", &[ATTENTION_MASK], vec![]);
    let total =
        b.g.node("Gather", &[&shape_mask, &one], vec![attr_int("axis", 0)]);
    let shape_ids = b.token_shape();
    let g = &mut b.g;
    let seq = g.node("Gather", &[&shape_ids, &one], vec![attr_int("axis", 0)]);
    let past = g.node("Sub", &[&total, &seq], vec![]);
    let k_idx = g.node("Range", &[&zero, &total, &one], vec![]); // [S]
    let q_idx = g.node("Range", &[&past, &total, &one], vec![]); // [T]
    let axes1 = g.const_i64(&[1]);
    let q_col = g.node("Unsqueeze", &[&q_idx, &axes1], vec![]); // [T, 1]
    let mut allowed = g.node("LessOrEqual", &[&k_idx, &q_col], vec![]); // [T, S]
    if let Some(w) = window {
        let dist = g.node("Sub", &[&q_col, &k_idx], vec![]);
        let w = g.scalar_i64(w as i64);
        let near = g.node("Less", &[&dist, &w], vec![]);
        allowed = g.node("And", &[&allowed, &near], vec![]);
    }
    let pad = g.node(
        "Cast",
        &[ATTENTION_MASK],
        vec![attr_int("to", DataType::Bool as i64)],
    );
    let axes12 = g.const_i64(&[1, 2]);
    let pad = g.node("Unsqueeze", &[&pad, &axes12], vec![]); // [B, 1, 1, S]
    let allowed = g.node("And", &[&allowed, &pad], vec![]); // [B, 1, T, S]
    let zero_f = g.scalar_f32(0.0);
    let neg = g.scalar_f32(MASK_MIN);
    let mask = g.node("Where", &[&allowed, &zero_f, &neg], vec![]);
    b.masks.keys.insert(window, mask.clone());
    mask
}

/// The KV cache of layer `l` with the new keys and values appended, `past ++ new`: the
/// `present.*` outputs, `[B, KV, S, D]`, whose names it returns.
fn present(b: &mut OnnxBackend, k: &Value, v: &Value, l: usize) -> (String, String) {
    let (k, v) = (b.unpacked(k), b.unpacked(v));
    let g = &mut b.g;
    g.node_named(
        "Concat",
        &[&past_key(l), &k],
        &[&present_key(l)],
        vec![attr_int("axis", 2)],
    );
    g.node_named(
        "Concat",
        &[&past_value(l), &v],
        &[&present_value(l)],
        vec![attr_int("axis", 2)],
    );
    (present_key(l), present_value(l))
}

/// The scores `q . k / sqrt(D) + mask`, `[B, H, T, S]`, of queries `q` `[B, H, T, D]` against
/// the keys `[B, KV, S, D]`. Query head `h` reads KV head `h / G`: the `G` heads of a group
/// are folded into the query rows, not the keys copied.
fn scores(g: &mut GraphBuilder, q: &str, keys: &str, mask: &str, spec: &AttentionSpec) -> String {
    let (h, kv, d) = (
        spec.num_heads as i64,
        spec.num_kv_heads as i64,
        spec.head_dim as i64,
    );
    let grouped = g.const_i64(&[0, kv, -1, d]);
    let qg = g.node("Reshape", &[q, &grouped], vec![]); // [B, KV, G*T, D]
    let kt = g.node("Transpose", &[keys], vec![attr_ints("perm", &[0, 1, 3, 2])]);
    let scores = g.node("MatMul", &[&qg, &kt], vec![]); // [B, KV, G*T, S]
    let per_head = g.const_i64(&[0, h, -1, 0]);
    let scores = g.node("Reshape", &[&scores, &per_head], vec![]); // [B, H, T, S]
    let inv_sqrt_d = g.scalar_f32(scale(spec));
    let scores = g.node("Mul", &[&scores, &inv_sqrt_d], vec![]);
    g.node("Add", &[&scores, mask], vec![])
}

/// The weights `probs` `[B, H, T, S]` applied to the values `[B, KV, S, D]`: `[B, H, T, D]`.
fn weighted_values(
    g: &mut GraphBuilder,
    probs: &str,
    values: &str,
    spec: &AttentionSpec,
) -> String {
    let (h, kv, d) = (
        spec.num_heads as i64,
        spec.num_kv_heads as i64,
        spec.head_dim as i64,
    );
    let grouped_probs = g.const_i64(&[0, kv, -1, 0]);
    let probs = g.node("Reshape", &[probs, &grouped_probs], vec![]); // [B, KV, G*T, S]
    let out = g.node("MatMul", &[&probs, values], vec![]); // [B, KV, G*T, D]
    let heads = g.const_i64(&[0, h, -1, d]);
    g.node("Reshape", &[&out, &heads], vec![])
}
