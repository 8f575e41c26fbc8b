//! Unfused attention: the scores, the softmax and the weighted values as MatMul, Softmax and
//! MatMul (grouped-query heads by reshaping queries, not copying keys), the KV cache
//! concatenated explicitly. MimIC as the trainer computes it: the scores' log-sum-exp and
//! `mu` as explicit nodes, then the form's epilogue.
use mimic_models::backend::AttentionSpec;

use super::{MimicForm, Operands};
use crate::emit::{OnnxBackend, Value};
use crate::graph::attr_int;
use mimic_models::contract::HeadParam;

/// A layer's operands as the unfused forms read them: queries `[B, H, T, D]`, the present
/// keys and values `[B, KV, S, D]` and the mask.
struct Unpacked<'a> {
    q: &'a str,
    keys: &'a str,
    values: &'a str,
    mask: &'a str,
    spec: &'a AttentionSpec,
}

/// Unfused attention of one layer, with `mimic` heads.
pub(super) fn attention(
    b: &mut OnnxBackend,
    Operands { q, k, v, spec }: Operands,
    mimic: Option<MimicForm>,
) -> Value {
    let mask = super::mask(b, spec.window);
    let q = b.unpacked(q);
    let (keys, values) = super::present(b, k, v, spec.layer);
    let x = Unpacked {
        q: &q,
        keys: &keys,
        values: &values,
        mask: &mask,
        spec,
    };
    match mimic {
        None => base(b, x),
        Some(form) => with_mu(b, x, form),
    }
}

/// The base model: softmax of the scores, applied to the values.
fn base(b: &mut OnnxBackend, x: Unpacked) -> Value {
    let g = &mut b.g;
    let scores = super::scores(g, x.q, x.keys, x.mask, x.spec);
    // Softmax stays float32 in a float16 graph (the pass keeps the operator).
    let probs = g.node("Softmax", &[&scores], vec![attr_int("axis", -1)]);
    Value::new(super::weighted_values(g, &probs, x.values, x.spec))
}

/// MimIC with explicit nodes: scores, log-sum-exp, softmax, `mu`, then the form's epilogue.
fn with_mu(b: &mut OnnxBackend, x: Unpacked, form: MimicForm) -> Value {
    let Unpacked {
        q,
        keys,
        values,
        mask,
        spec,
    } = x;
    let l = spec.layer;
    let (w, bias, u) = (
        b.head_param(HeadParam::W, l),
        b.head_param(HeadParam::B, l),
        b.head_param(HeadParam::U, l),
    );
    let (h, d) = (spec.num_heads as i64, spec.head_dim as i64);
    let g = &mut b.g;
    // All in float32 (in a float16 graph too), as the trainer computes it.
    let mark = g.mark();
    let scores = super::scores(g, q, keys, mask, spec);
    let last = g.const_i64(&[-1]);
    let lse = g.node(
        "ReduceLogSumExp",
        &[&scores, &last],
        vec![attr_int("keepdims", 1)],
    ); // [B, H, T, 1]
    let probs = g.node("Sub", &[&scores, &lse], vec![]);
    let probs = g.node("Exp", &[&probs], vec![]);
    let out = super::weighted_values(g, &probs, values, spec); // [B, H, T, D]

    // f = w . q + b per query head.
    let w_col = g.const_i64(&[0, h, d, 1]);
    let w = g.node("Reshape", &[&w, &w_col], vec![]);
    let f = g.node("MatMul", &[q, &w], vec![]); // [B, H, T, 1]
    let b_shape = g.const_i64(&[0, h, 1, 1]);
    let bias = g.node("Reshape", &[&bias, &b_shape], vec![]);
    let f = g.node("Add", &[&f, &bias], vec![]);
    let logit = g.node("Sub", &[&f, &lse], vec![]);
    let mu = g.node("Sigmoid", &[&logit], vec![]);
    let u_shape = g.const_i64(&[0, h, 1, d]);
    let u = g.node("Reshape", &[&u, &u_shape], vec![]);
    let mu_u = g.node("Mul", &[&mu, &u], vec![]);
    let heads = match form {
        MimicForm::Convex => {
            // 1 - mu as sigmoid(LSE - f), as the trainer computes it.
            let keep_logit = g.node("Sub", &[&lse, &f], vec![]);
            let keep = g.node("Sigmoid", &[&keep_logit], vec![]);
            g.node("Mul", &[&keep, &out], vec![])
        }
        MimicForm::Additive => out,
    };
    let y = g.node("Add", &[&heads, &mu_u], vec![]);
    g.keep_fp32_since(mark);
    Value::new(y)
}
