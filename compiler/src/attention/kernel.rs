//! Attention through mimic's own kernel, `ai.mimic:MimicAttention` ([`mimic_models::kernel_op`];
//! `mimic_runtime::kernel` computes it): one node a layer, with the `Attention` operator's six
//! inputs and, for MimIC heads, the layer's `w`, `b` and `u`. The kernel computes `mu` and the
//! head's output itself, so the cache has no slots and the projections no extra channels.
use mimic_models::contract::{past_key, past_value, present_key, present_value};
use mimic_models::kernel_op;

use super::{expect_packed, MimicForm, Operands};
use crate::emit::{OnnxBackend, Value};
use crate::graph::{attr_float, attr_int};
use mimic_models::contract::HeadParam;

/// The kernel's node of one layer: with `mimic` heads, their `w`, `b` and `u`, folded
/// (`[1, H, ..]`) or per batch row (`[B, H, ..]`), and the form as an attribute.
pub(super) fn attention(
    b: &mut OnnxBackend,
    Operands { q, k, v, spec }: Operands,
    mimic: Option<MimicForm>,
) -> Value {
    let l = spec.layer;
    expect_packed(
        b,
        [q, k, v],
        "the mimic attention kernel expects packed q/k/v",
    );
    let mask = super::mask(b, spec.window);
    let mut inputs = vec![
        q.name.clone(),
        k.name.clone(),
        v.name.clone(),
        mask,
        past_key(l),
        past_value(l),
    ];
    let mut attrs = vec![
        attr_float("scale", super::scale(spec)),
        attr_int("q_num_heads", spec.num_heads as i64),
        attr_int("kv_num_heads", spec.num_kv_heads as i64),
    ];
    if let Some(form) = mimic {
        for param in [HeadParam::W, HeadParam::B, HeadParam::U] {
            inputs.push(b.head_param(param, l));
        }
        attrs.push(attr_int(kernel_op::FORM, form.is_convex() as i64));
    }
    let y = b.g.fresh("attn");
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    b.g.node_in_domain(
        kernel_op::DOMAIN,
        kernel_op::ATTENTION,
        &refs,
        &[&y, &present_key(l), &present_value(l)],
        attrs,
    );
    Value::packed(y, spec.num_heads, spec.head_dim)
}
