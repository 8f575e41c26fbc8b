//! Fused attention: the opset-23 `Attention` operator, with the layer's KV cache as its
//! past/present state.
//!
//! MimIC here is one extra key/value slot per query head inside the operator, living at the
//! front of the KV cache (the runtime starts every cache with them). A slot's key is
//! `sqrt(d) w`, in the rotated frame, never rotated itself. With `G` query heads per KV head,
//! a KV head carries `G` slots, each masked for the other heads of its group ([`slot_mask`]).
//! - convex: the slot's key is `sqrt(d) [w, b]` against queries `[q, 1]` (new keys get a 0
//!   channel), so it scores `f = w . q + b`, and softmax over real keys and the slot gives it
//!   the weight `sigmoid(f - LSE)` exactly; its value is `u`;
//! - additive: two value channels, `[1, 0]` for real keys and `[floor, e^b]` for the slot
//!   (whose other channels are 0), the slot scoring `w . q`: attention returns per head
//!   `[E h, E + floor F, e^b F] / (E + F)` (`E` the real keys' summed exponentials, `F` the
//!   slot's), and dividing the first part by the first extra channel, and the second extra
//!   channel by the sum of both, gives `h` and `e^b F / (E + e^b F) = mu`; then
//!   `o = h + mu u`. The real keys' weight is summed from their own channel, so `h` stays
//!   accurate as `mu` nears 1, which trained heads reach (`1 - mu` subtracted from `mu` would
//!   lose every digit); the floor keeps a padding row, all of whose weight is on the slot,
//!   from dividing 0 by 0 (float16 graphs clamp the divisor instead, see
//!   [`mimic_models::heads::keep_floor`]). Carrying `e^b` in the value leaves queries and
//!   keys `d` wide. A float16 cache cannot hold `e^b` for every `b`, so float16 graphs score
//!   `b` through the key as the convex form does and give the slot's channel 1
//!   ([`mimic_models::heads::bias_in_key`]); the epilogue is the same. With folded heads it
//!   is a Gather, a small MatMul and a Div that leave `[h, _, mu]` per head, and `o_proj`
//!   carries `W_o u` as an extra weight row per head, so it adds `mu W_o u` itself
//!   ([`additive_divided`]); with heads as inputs `u` differs by row, and the epilogue splits
//!   the channels and adds `mu u` before `o_proj` ([`additive_epilogue`]).
//!
//! The extra channels are built into the q/k/v projections' weights ([`slot_channels`],
//! [`linears_widened`]). Carrying the slots in the cache keeps decoding as cheap as the base
//! model's: nothing is concatenated to, or padded in, the cache at each step.
use mimic_models::backend::AttentionSpec;
use mimic_models::contract::{
    past_key, past_value, present_key, present_value, AttentionImpl, MASK_MIN,
};
use mimic_models::heads::bias_in_key;
use mimic_models::Method;

use super::{expect_packed, MimicForm, Operands};
use crate::emit::{OnnxBackend, Packed, Value};
use crate::fold::HeadsSource;
use crate::graph::{attr_float, attr_int, GraphBuilder};
use mimic_models::contract::HeadParam;

/// The form of the MimIC slots a graph carries in its cache: fused MimIC's, `None` otherwise.
pub(crate) fn slot_form(method: Option<Method>, attention: AttentionImpl) -> Option<MimicForm> {
    match attention {
        AttentionImpl::Fused => MimicForm::of(method),
        AttentionImpl::Unfused | AttentionImpl::Kernel => None,
    }
}

/// Fused attention of one layer, with the MimIC slots of `mimic` heads.
pub(super) fn attention(b: &mut OnnxBackend, x: Operands, mimic: Option<MimicForm>) -> Value {
    match mimic {
        None => base(b, x),
        Some(form) => with_slots(b, x, form),
    }
}

/// The layer's `Attention` node, output `y`: queries `q`, new keys and values `k`, `v` and
/// the additive `mask`, over the layer's past keys and values; outputs `y` and the present
/// keys and values. `packed`: `q`, `k` and `v` are `[B, S, heads * D]` (the operator's 3-D
/// form, which needs the head counts), else `[B, heads, S, D]`.
fn attention_node(
    g: &mut GraphBuilder,
    y: &str,
    [q, k, v]: [&str; 3],
    mask: &str,
    spec: &AttentionSpec,
    packed: bool,
) {
    let l = spec.layer;
    let mut attrs = vec![
        attr_int("is_causal", 0),
        attr_float("scale", super::scale(spec)),
    ];
    if packed {
        attrs.push(attr_int("q_num_heads", spec.num_heads as i64));
        attrs.push(attr_int("kv_num_heads", spec.num_kv_heads as i64));
    }
    let (past_k, past_v) = (past_key(l), past_value(l));
    g.node_named(
        "Attention",
        &[q, k, v, mask, &past_k, &past_v],
        &[y, &present_key(l), &present_value(l)],
        attrs,
    );
}

/// The base model: one `Attention` node.
fn base(b: &mut OnnxBackend, Operands { q, k, v, spec }: Operands) -> Value {
    let mask = super::mask(b, spec.window);
    let y = b.g.fresh("attn");
    let all_packed = [q, k, v].iter().all(|x| x.packed.is_some());
    let (q, k, v) = if all_packed {
        (q.name.clone(), k.name.clone(), v.name.clone())
    } else {
        (b.unpacked(q), b.unpacked(k), b.unpacked(v))
    };
    attention_node(&mut b.g, &y, [&q, &k, &v], &mask, spec, all_packed);
    if all_packed {
        Value::packed(y, spec.num_heads, spec.head_dim)
    } else {
        Value::new(y)
    }
}

/// MimIC inside the `Attention` operator, the slots living at the front of the KV cache
/// (see [`mimic_models::heads::cache_slots`]). Where the slots score their bias through the
/// keys, queries get a channel of ones and new keys a channel of zeros, so a slot key
/// `sqrt(D) [w, b]` scores `w . q + b`, and the cache's keys are `D + 1` wide. Additive:
/// values get the two channels of the module docs and attention returns per head `h` scaled
/// by the real keys' weight, that weight, and the slot's weight times its `mu` channel.
fn with_slots(b: &mut OnnxBackend, Operands { q, k, v, spec }: Operands, form: MimicForm) -> Value {
    let (h, d) = (spec.num_heads, spec.head_dim);
    expect_packed(b, [q, k, v], "MimIC fused attention expects packed q/k/v");
    let mask = slot_mask(b, spec);
    // The projections carry the extra channels (see `linears_widened`).
    let convex = form.is_convex();
    let in_key = bias_in_key(convex, b.fp16_guards) as usize;
    let expected = [(q, in_key), (k, in_key), (v, 2 * !convex as usize)];
    if expected.iter().any(|(x, n)| x.extra_channels != *n) {
        b.error.get_or_insert(crate::CompileError::Other(
            "MimIC fused attention expects q/k/v projections with the slot channels".into(),
        ));
    }
    let y = b.g.fresh("attn");
    let mark = b.g.mark();
    let qkv = [q.name.as_str(), k.name.as_str(), v.name.as_str()];
    attention_node(&mut b.g, &y, qkv, &mask, spec, true);
    if convex {
        return Value::packed(y, h, d);
    }
    // Additive: attention and epilogue stay float32 in a float16 graph. The output channels
    // are `(1 - mu) h` and `1 - mu` (up to the floor), and trained heads reach mu so close
    // to 1 that float16 would hold them as subnormals with a few bits left.
    if let HeadsSource::Folded(_) = b.heads {
        return additive_divided(b, &y, spec, mark);
    }
    additive_epilogue(b, &y, spec, mark)
}

/// The mask of a graph whose cache starts with `G` slots per KV head:
/// `[batch, heads, seq, G + total]`, built once per window. Slot `j` is visible to query
/// head `h` only where `j == h mod G`; the real keys keep the model's mask.
fn slot_mask(b: &mut OnnxBackend, spec: &AttentionSpec) -> String {
    if let Some(v) = b.masks.slots.get(&spec.window) {
        return v.clone();
    }
    let base = super::mask(b, spec.window);
    let (h, g_size) = (spec.num_heads, spec.num_heads / spec.num_kv_heads);
    let mut sel = vec![MASK_MIN; h * g_size];
    for head in 0..h {
        sel[head * g_size + head % g_size] = 0.0;
    }
    let sel = b.g.const_f32(&[1, h as i64, 1, g_size as i64], &sel);
    let ids = b.token_shape(); // [B, T]
    let g = &mut b.g;
    let mask_shape = g.node("Shape", &[&base], vec![]); // [B, 1, T, total]
    let (start, end) = (g.const_i64(&[3]), g.const_i64(&[4]));
    let total = g.node("Slice", &[&mask_shape, &start, &end], vec![]);
    let (start, end) = (g.const_i64(&[0]), g.const_i64(&[1]));
    let batch = g.node("Slice", &[&ids, &start, &end], vec![]);
    let (start, end) = (g.const_i64(&[1]), g.const_i64(&[2]));
    let seq = g.node("Slice", &[&ids, &start, &end], vec![]);
    let heads = g.const_i64(&[h as i64]);
    let group = g.const_i64(&[g_size as i64]);
    let axis0 = vec![attr_int("axis", 0)];
    let slot_shape = g.node("Concat", &[&batch, &heads, &seq, &group], axis0.clone());
    let base_shape = g.node("Concat", &[&batch, &heads, &seq, &total], axis0);
    let slots = g.node("Expand", &[&sel, &slot_shape], vec![]);
    let base = g.node("Expand", &[&base, &base_shape], vec![]);
    let mask = g.node("Concat", &[&slots, &base], vec![attr_int("axis", -1)]);
    b.masks.slots.insert(spec.window, mask.clone());
    mask
}

/// For fused MimIC's q/k/v projections, the values of the channels each head gets:
/// queries `[1]` and keys `[0]` where the slots score their bias through the keys
/// ([`mimic_models::heads::bias_in_key`]: the slot key's `b` reads the queries' 1), values
/// `[1, 0]` in the additive form (the real keys' and the slot's channels) and none in the
/// convex form. `None` for other projections or graphs.
pub(crate) fn slot_channels(b: &OnnxBackend, modules: &[&str]) -> Option<[Vec<f32>; 3]> {
    let is_qkv = modules.len() == 3
        && modules[0].ends_with("self_attn.q_proj")
        && modules[1].ends_with("self_attn.k_proj")
        && modules[2].ends_with("self_attn.v_proj");
    if !is_qkv {
        return None;
    }
    let convex = slot_form(b.heads.method(), b.attention)?.is_convex();
    let values = if convex { vec![] } else { vec![1.0, 0.0] };
    if bias_in_key(convex, b.fp16_guards) {
        Some([vec![1.0], vec![0.0], values])
    } else {
        Some([vec![], vec![], values])
    }
}

/// The q/k/v projections with the extra channels per head built into the weights: zero
/// weight rows after each head's rows and the channels' values in the bias, so one MatMul
/// (and one Add) yields the widened heads with no Pad in the graph.
pub(crate) fn linears_widened(
    b: &mut OnnxBackend,
    x: &Value,
    modules: &[&str],
    bias: bool,
    fills: [Vec<f32>; 3],
) -> Vec<Value> {
    let d = b.head_dim;
    let tname = format!("{}.slots.T", modules.join("+"));
    let (mut rows, mut cols, mut data) = (0, 0, Vec::new());
    let mut bias_data = Vec::new();
    let mut sizes = Vec::new();
    for (m, fill) in modules.iter().zip(&fills) {
        let w = b
            .weights_for(&format!("{m}.weight"))
            .expect("weights checked against the config")
            .clone();
        let bias_row = if bias {
            b.weights_for(&format!("{m}.bias")).map(|t| t.data.clone())
        } else {
            None
        };
        let bias_row = bias_row.unwrap_or_else(|| vec![0.0; w.shape[0]]);
        cols = w.shape[1];
        let out = w.shape[0];
        let e = fill.len();
        for head in 0..out / d {
            data.extend_from_slice(&w.data[head * d * cols..(head + 1) * d * cols]);
            data.extend(std::iter::repeat_n(0.0, e * cols));
            bias_data.extend_from_slice(&bias_row[head * d..(head + 1) * d]);
            bias_data.extend_from_slice(fill);
        }
        rows += out / d * (d + e);
        sizes.push((out / d * (d + e)) as i64);
    }
    let t = mimic_models::HostTensor::new(vec![rows, cols], data).transpose2();
    b.put_weight(&tname, &t.shape, &t.data);
    let bname = format!("{}.slots.bias", modules.join("+"));
    b.put_weight(&bname, &[bias_data.len()], &bias_data);
    let g = &mut b.g;
    let y = g.node("MatMul", &[&x.name, &tname], vec![]);
    let y = g.node("Add", &[&y, &bname], vec![]);
    let split = g.const_i64(&sizes);
    let outs = g.node_n("Split", &[&y, &split], 3, vec![attr_int("axis", -1)]);
    outs.into_iter()
        .zip(&fills)
        .map(|(o, fill)| Value {
            extra_channels: fill.len(),
            ..Value::new(o)
        })
        .collect()
}

/// The additive form's epilogue with heads as inputs (`u` differs by row): attention's
/// `[(1 - mu) h, k, m]` per head split, `h` and `mu` divided out, and `mu u` added before
/// `o_proj`. Float32 from `mark` on.
fn additive_epilogue(b: &mut OnnxBackend, y: &str, spec: &AttentionSpec, mark: usize) -> Value {
    let (h, d) = (spec.num_heads, spec.head_dim);
    let u = b.head_param(HeadParam::U, spec.layer); // [B, H, D]
    let fp16_guards = b.fp16_guards;
    let g = &mut b.g;
    let per_head = g.const_i64(&[0, 0, h as i64, (d + 2) as i64]);
    let y = g.node("Reshape", &[y, &per_head], vec![]); // [B, T, H, D + 2]
    let split = g.const_i64(&[d as i64, 1, 1]);
    let parts = g.node_n("Split", &[&y, &split], 3, vec![attr_int("axis", -1)]);
    // The real keys' channel is at least the slot's floor times its weight, so never 0 (a
    // padding row puts all its weight on the slot); float16 caches have no floor, and the
    // divisor is clamped. `mu` is the slot's channel over the sum of both.
    let (scaled_h, weighted) = (&parts[0], &parts[2]);
    let both = g.node("Add", &[&parts[1], weighted], vec![]);
    let keep = if fp16_guards {
        let tiny = g.scalar_f32(f32::MIN_POSITIVE);
        g.node("Max", &[&parts[1], &tiny], vec![])
    } else {
        parts[1].clone()
    };
    let heads_out = g.node("Div", &[scaled_h, &keep], vec![]);
    let mu = g.node("Div", &[weighted, &both], vec![]);
    let axis1 = g.const_i64(&[1]);
    let u = g.node("Unsqueeze", &[&u, &axis1], vec![]); // [B|1, 1, H, D]
    let mu_u = g.node("Mul", &[&mu, &u], vec![]);
    let out = g.node("Add", &[&heads_out, &mu_u], vec![]);
    let packed = g.const_i64(&[0, 0, (h * d) as i64]);
    let out = g.node("Reshape", &[&out, &packed], vec![]);
    g.keep_fp32_since(mark);
    Value::packed(out, h, d)
}

/// The additive form's epilogue with folded heads: attention's `[k h, k, m]` per head (`k`
/// the real keys' weight plus the slot's floor times its weight, `m` the slot's weight times
/// its `mu` channel) divided by `[k; D] ++ [k + m; 2]`. One Gather takes the two extra
/// channels of every head, one small MatMul spreads them into that divisor, and one Div
/// gives `[h, k / (k + m), m / (k + m)]`: the heads' outputs and their `mu` (see
/// [`mimic_models::heads::cache_slots`]). The `o_proj` that follows reads these widened
/// heads ([`o_proj_weight_adding_mu`]) and adds `mu W_o u` itself, so the epilogue is three
/// small nodes with no reshapes, split or broadcast products. Float32 from `mark` on.
fn additive_divided(b: &mut OnnxBackend, y: &str, spec: &AttentionSpec, mark: usize) -> Value {
    let (h, d) = (spec.num_heads, spec.head_dim);
    let w = d + 2;
    let fp16_guards = b.fp16_guards;
    let g = &mut b.g;
    let channels: Vec<i64> = (0..h)
        .flat_map(|i| [(i * w + d) as i64, (i * w + d + 1) as i64])
        .collect();
    let channels = g.const_i64(&channels);
    let mut spread = vec![0f32; 2 * h * h * w];
    for i in 0..h {
        let (keep, mu) = spread[2 * i * h * w..(2 * i + 2) * h * w].split_at_mut(h * w);
        keep[i * w..i * w + d + 2].fill(1.0);
        mu[i * w + d..i * w + d + 2].fill(1.0);
    }
    let spread = g.const_f32(&[2 * h as i64, (h * w) as i64], &spread);
    let extra = g.node("Gather", &[y, &channels], vec![attr_int("axis", -1)]); // [B, T, 2H]
    let mut divisor = g.node("MatMul", &[&extra, &spread], vec![]); // [B, T, H (D + 2)]
    if fp16_guards {
        // Float16 caches have no floor: a padding row would divide 0 by 0.
        let tiny = g.scalar_f32(f32::MIN_POSITIVE);
        divisor = g.node("Max", &[&divisor, &tiny], vec![]);
    }
    let out = g.node("Div", &[y, &divisor], vec![]);
    g.keep_fp32_since(mark);
    Value {
        packed: Some(Packed { heads: h, dim: w }),
        adds_mu_of_layer: Some(spec.layer),
        ..Value::new(out)
    }
}

/// The `o_proj` weight of `layer`, `[in, out]` for MatMul, over [`additive_divided`]'s heads
/// `[h, _, mu]`: per head `i` the rows `W_o^(i)`, a zero row and `W_o^(i) u_i`, so the
/// product is `W_o (h + mu u)`.
pub(crate) fn o_proj_weight_adding_mu(b: &mut OnnxBackend, layer: usize, module: &str) -> String {
    let HeadsSource::Folded(heads) = b.heads else {
        unreachable!("o_proj_weight_adding_mu without folded heads")
    };
    let d = b.head_dim;
    let name = format!("{module}.weight+mimic.u.T");
    let wt = b
        .weights_for(&format!("{module}.weight"))
        .expect("weights checked against the config")
        .transpose2(); // [H D, hidden]
    let (inner, out) = (wt.shape[0], wt.shape[1]);
    let u = heads.layer("mimic.u", layer); // [H, D]
    let mut data = Vec::with_capacity((inner + 2 * inner / d) * out);
    for (rows, u) in wt.data.chunks(d * out).zip(u.chunks(d)) {
        data.extend_from_slice(rows);
        data.extend(std::iter::repeat_n(0.0, out));
        let mut wu = vec![0f32; out];
        for (row, &uc) in rows.chunks(out).zip(u) {
            wu.iter_mut().zip(row).for_each(|(acc, &w)| *acc += w * uc);
        }
        data.extend(wu);
    }
    b.put_weight(&name, &[data.len() / out, out], &data);
    name
}
