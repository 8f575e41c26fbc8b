//! Trained heads folded into the graph (docs/design.md section 3, "Attention forms and the
//! fold").
//!
//! MimIC, per layer and query head, on post-rotary queries `q`: `f = w . q + b`,
//! `mu = sigmoid(f - LSE)` with LSE the log-sum-exp of the head's masked, scaled scores, and
//! `o = h + mu u` (additive) or `o = (1 - mu) h + mu u` (convex).
//!
//! - Fused: one extra key/value slot per query head inside the `Attention` operator, living
//!   at the front of the KV cache (the runtime starts every cache with them). A slot's key is
//!   `sqrt(d) w`, in the rotated frame, never rotated itself. With `G` query heads per KV
//!   head, a KV head carries `G` slots, each masked for the other heads of its group.
//!   - convex: the slot's key is `sqrt(d) [w, b]` against queries `[q, 1]` (new keys get a 0
//!     channel), so it scores `f = w . q + b`, and softmax over real keys and the slot gives
//!     it the weight `sigmoid(f - LSE)` exactly; its value is `u`;
//!   - additive: two value channels, `[1, 0]` for real keys and `[floor, e^b]` for the slot
//!     (whose other channels are 0), the slot scoring `w . q`: attention returns per head
//!     `[E h, E + floor F, e^b F] / (E + F)` (`E` the real keys' summed exponentials, `F`
//!     the slot's), and dividing the first part by the first extra channel, and the second
//!     extra channel by the sum of both, gives `h` and `e^b F / (E + e^b F) = mu`; then
//!     `o = h + mu u`. The real keys' weight is summed from their own channel, so `h` stays
//!     accurate as `mu` nears 1, which trained heads reach (`1 - mu` subtracted from `mu`
//!     would lose every digit); the floor keeps a padding row, all of whose weight is on the
//!     slot, from dividing 0 by 0 (float16 graphs clamp the divisor instead, see
//!     [`mimic_models::heads::keep_floor`]). Carrying `e^b` in the value leaves queries and
//!     keys `d` wide. A float16 cache cannot hold `e^b` for every `b`, so float16 graphs
//!     score `b` through the key as the convex form does and give the slot's channel 1
//!     ([`mimic_models::heads::bias_in_key`]); the epilogue is the same. With folded heads
//!     it is a Gather, a small MatMul and a Div that leave `[h, _, mu]` per head, and
//!     `o_proj` carries `W_o u` as an extra weight row per head, so it adds `mu W_o u` itself
//!     (`additive_divided`); with heads as inputs `u` differs by row, and the epilogue
//!     splits the channels and adds `mu u` before `o_proj`.
//!
//!   Carrying the slots in the cache keeps decoding as cheap as the base model's: nothing is
//!   concatenated to, or padded in, the cache at each step.
//! - Unfused (both forms): the scores, their log-sum-exp, the softmax and `mu` as explicit
//!   nodes, as the trainer computes them.
//! - LIVE: `x' = (x + a v) |x| / |x + a v|` after each MLP.
//! - LoRA: merged into the projection weights before they are emitted
//!   ([`mimic_models::Heads::lora_merged`], applied when the ONNX backend is built).
//!
//! The heads' numbers enter the graph either as initializers (folded) or as graph inputs with
//! a batch axis (`--heads-as-inputs`), one set per batch row, gathered per layer; fused MimIC
//! takes `w` and `b` (and the convex `u`) through the cache slots the runtime fills per row.
use mimic_models::backend::AttentionSpec;
use mimic_models::{Heads, LlamaConfig, Method};

use crate::emit::{
    past_key, past_value, present_key, present_value, AttentionImpl, OnnxBackend, INPUT_IDS,
};
use crate::graph::{attr_float, attr_int, attr_ints, value_info, Dim};
use crate::onnx::tensor_proto::DataType;
use mimic_models::contract::MASK_MIN;

/// Whether a graph carries MimIC slots in its cache, and of which form: `Some(convex)` for
/// fused MimIC, `None` otherwise.
fn slot_form(method: Option<Method>, attention: AttentionImpl) -> Option<bool> {
    match (method?, attention) {
        (Method::Mimic, AttentionImpl::Fused) => Some(false),
        (Method::MimicConvex, AttentionImpl::Fused) => Some(true),
        _ => None,
    }
}

/// The KV-cache layout a graph needs: `(slots, key_dim, value_dim)` per KV head. Fused MimIC
/// graphs start their cache with `G` slots; their keys are one wider where the slots score
/// their bias through them ([`mimic_models::heads::bias_in_key`]), and additive values are
/// two wider.
pub fn cache_layout(
    method: Option<Method>,
    attention: AttentionImpl,
    fp16: bool,
    cfg: &LlamaConfig,
) -> (usize, usize, usize) {
    use mimic_models::heads::{bias_in_key, extra_value_channels};
    let (d, g) = (cfg.head_dim, cfg.num_heads / cfg.num_kv_heads);
    let Some(convex) = slot_form(method, attention) else {
        return (0, d, d);
    };
    (
        g,
        d + bias_in_key(convex, fp16) as usize,
        d + extra_value_channels(convex),
    )
}

/// Where the heads' numbers come from.
#[derive(Debug, Clone, Copy)]
pub enum HeadsSource<'h> {
    /// The base model.
    None,
    /// Folded in as initializers.
    Folded(&'h Heads),
    /// Graph inputs `heads.*` with a leading batch axis: the heads of each request.
    Inputs(Method),
}

impl HeadsSource<'_> {
    pub fn method(&self) -> Option<Method> {
        match self {
            HeadsSource::None => None,
            HeadsSource::Folded(h) => Some(h.method),
            HeadsSource::Inputs(m) => Some(*m),
        }
    }
}

/// Graph input names of `--heads-as-inputs` graphs, with their per-row shapes after the batch
/// axis. MimIC: `w`, `b`, `u` as in the heads file; LIVE: the product `a v` per layer.
///
/// A fused MimIC graph carries `w`, `b` (and the convex form's `u`) in its KV-cache slots,
/// which the runtime fills per row: only the additive form's `u` remains an input.
pub fn heads_inputs(
    method: Method,
    cfg: &LlamaConfig,
    attention: AttentionImpl,
) -> Vec<(&'static str, Vec<usize>)> {
    let (l, h, d) = (cfg.num_layers, cfg.num_heads, cfg.head_dim);
    match (method, attention) {
        (Method::Mimic, AttentionImpl::Fused) => vec![("heads.u", vec![l, h, d])],
        (Method::MimicConvex, AttentionImpl::Fused) => vec![],
        (Method::Mimic | Method::MimicConvex, AttentionImpl::Unfused | AttentionImpl::Kernel) => {
            vec![
                ("heads.w", vec![l, h, d]),
                ("heads.b", vec![l, h]),
                ("heads.u", vec![l, h, d]),
            ]
        }
        (Method::Live, _) => vec![("heads.live", vec![l, cfg.hidden_size])],
        (Method::Lora, _) => vec![],
    }
}

impl OnnxBackend<'_> {
    /// Declares the `heads.*` graph inputs of a heads-as-inputs graph.
    pub(crate) fn declare_heads_inputs(&mut self, method: Method, cfg: &LlamaConfig) {
        for (name, shape) in heads_inputs(method, cfg, self.attention) {
            let mut dims = vec![Dim::Named("batch")];
            dims.extend(shape.iter().map(|&s| Dim::Fixed(s as i64)));
            self.g.inputs.push(value_info(name, DataType::Float, &dims));
        }
    }

    /// Layer `l`'s part of a heads tensor: `[1, rest..]` folded or `[batch, rest..]` from the
    /// graph input. `kind` is `w`, `b`, `u` or `live`.
    fn head_param(&mut self, kind: &str, l: usize) -> String {
        match self.heads {
            HeadsSource::Folded(h) => {
                let name = format!("heads.{kind}.{l}");
                let (data, rest) = match kind {
                    "live" => (h.live_shift(l), vec![h.tensor("live.v").shape[1]]),
                    _ => {
                        let t = h.tensor(&format!("mimic.{kind}"));
                        (
                            h.layer(&format!("mimic.{kind}"), l).to_vec(),
                            t.shape[1..].to_vec(),
                        )
                    }
                };
                let mut dims = vec![1];
                dims.extend(rest);
                self.put_weight(&name, &dims, &data);
                name
            }
            HeadsSource::Inputs(_) => {
                // Inputs are float32 whatever the graph's type, and read in float32.
                let idx = self.g.scalar_i64(l as i64);
                let mark = self.g.mark();
                let x = self.g.node(
                    "Gather",
                    &[&format!("heads.{kind}"), &idx],
                    vec![attr_int("axis", 1)],
                );
                self.g.keep_fp32_since(mark);
                x
            }
            HeadsSource::None => unreachable!("head_param without heads"),
        }
    }

    /// The mask of a graph whose cache starts with `G` slots per KV head:
    /// `[batch, heads, seq, G + total]`, built once per window. Slot `j` is visible to query
    /// head `h` only where `j == h mod G`; the real keys keep the model's mask.
    fn slot_mask(&mut self, spec: &AttentionSpec) -> String {
        let key = format!("slot_mask{:?}", spec.window);
        if let Some(v) = self.memo.get(&key) {
            return v.clone();
        }
        let base = self.mask(spec.window);
        let (h, g_size) = (spec.num_heads, spec.num_heads / spec.num_kv_heads);
        let mut sel = vec![MASK_MIN; h * g_size];
        for head in 0..h {
            sel[head * g_size + head % g_size] = 0.0;
        }
        let g = &mut self.g;
        let sel = g.const_f32(&[1, h as i64, 1, g_size as i64], &sel);
        let ids = g.node("Shape", &[INPUT_IDS], vec![]); // [B, T]
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
        self.memo.insert(key, mask.clone());
        mask
    }

    /// For fused MimIC's q/k/v projections, the values of the channels each head gets:
    /// queries `[1]` and keys `[0]` where the slots score their bias through the keys
    /// ([`mimic_models::heads::bias_in_key`]: the slot key's `b` reads the queries' 1),
    /// values `[1, 0]` in the additive form (the real keys' and the slot's channels) and none
    /// in the convex form. `None` for other projections or graphs.
    pub(crate) fn slot_channels(&self, modules: &[&str]) -> Option<[Vec<f32>; 3]> {
        let is_qkv = modules.len() == 3
            && modules[0].ends_with("self_attn.q_proj")
            && modules[1].ends_with("self_attn.k_proj")
            && modules[2].ends_with("self_attn.v_proj");
        if !is_qkv {
            return None;
        }
        let convex = slot_form(self.heads.method(), self.attention)?;
        let values = if convex { vec![] } else { vec![1.0, 0.0] };
        if mimic_models::heads::bias_in_key(convex, self.fp16_guards) {
            Some([vec![1.0], vec![0.0], values])
        } else {
            Some([vec![], vec![], values])
        }
    }

    /// The q/k/v projections with the extra channels per head built into the weights: zero
    /// weight rows after each head's rows and the channels' values in the bias, so one MatMul
    /// (and one Add) yields the widened heads with no Pad in the graph.
    pub(crate) fn linears_widened(
        &mut self,
        x: &str,
        modules: &[&str],
        bias: bool,
        fills: [Vec<f32>; 3],
    ) -> Vec<String> {
        let d = self.head_dim;
        let tname = format!("{}.slots.T", modules.join("+"));
        let (mut rows, mut cols, mut data) = (0, 0, Vec::new());
        let mut bias_data = Vec::new();
        let mut sizes = Vec::new();
        for (m, fill) in modules.iter().zip(&fills) {
            let w = self
                .weights_for(&format!("{m}.weight"))
                .expect("weights checked against the config")
                .clone();
            let b = if bias {
                self.weights_for(&format!("{m}.bias"))
                    .map(|t| t.data.clone())
            } else {
                None
            };
            let b = b.unwrap_or_else(|| vec![0.0; w.shape[0]]);
            cols = w.shape[1];
            let out = w.shape[0];
            let e = fill.len();
            for head in 0..out / d {
                data.extend_from_slice(&w.data[head * d * cols..(head + 1) * d * cols]);
                data.extend(std::iter::repeat_n(0.0, e * cols));
                bias_data.extend_from_slice(&b[head * d..(head + 1) * d]);
                bias_data.extend_from_slice(fill);
            }
            rows += out / d * (d + e);
            sizes.push((out / d * (d + e)) as i64);
        }
        let t = mimic_models::HostTensor::new(vec![rows, cols], data).transpose2();
        self.put_weight(&tname, &t.shape, &t.data);
        let bname = format!("{}.slots.bias", modules.join("+"));
        self.put_weight(&bname, &[bias_data.len()], &bias_data);
        let g = &mut self.g;
        let y = g.node("MatMul", &[x, &tname], vec![]);
        let y = g.node("Add", &[&y, &bname], vec![]);
        let split = g.const_i64(&sizes);
        let outs = g.node_n("Split", &[&y, &split], 3, vec![attr_int("axis", -1)]);
        for (o, fill) in outs.iter().zip(&fills) {
            if !fill.is_empty() {
                self.widened.insert(o.clone(), fill.len());
            }
        }
        outs
    }

    /// The new keys/values appended to the cache: the `present.*` outputs, `[B, KV, S, D]`.
    fn present(&mut self, k: &str, v: &str, l: usize) -> (String, String) {
        let (k, v) = (self.unpacked(k), self.unpacked(v));
        let g = &mut self.g;
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

    /// MimIC inside the `Attention` operator, the slots living at the front of the KV cache
    /// (see [`mimic_models::heads::cache_slots`]). Where the slots score their bias through
    /// the keys, queries get a channel of ones and new keys a channel of zeros, so a slot key
    /// `sqrt(D) [w, b]` scores `w . q + b`, and the cache's keys are `D + 1` wide. Additive:
    /// values get the two channels of the module docs and attention returns per head `h`
    /// scaled by the real keys' weight, that weight, and the slot's weight times its `mu`
    /// channel.
    pub(crate) fn attention_mimic_fused(
        &mut self,
        q: &str,
        k: &str,
        v: &str,
        spec: &AttentionSpec,
        convex: bool,
    ) -> String {
        let l = spec.layer;
        let (h, kv, d) = (spec.num_heads, spec.num_kv_heads, spec.head_dim);
        if ![q, k, v].iter().all(|x| self.packed.contains_key(*x)) {
            self.error.get_or_insert(crate::CompileError::Other(
                "MimIC fused attention expects packed q/k/v".into(),
            ));
        }
        let mask = self.slot_mask(spec);
        // The projections carry the extra channels (see `linears_widened`).
        let in_key = mimic_models::heads::bias_in_key(convex, self.fp16_guards) as usize;
        let expected = [(q, in_key), (k, in_key), (v, 2 * !convex as usize)];
        if expected
            .iter()
            .any(|(x, n)| self.widened.get(*x).copied().unwrap_or(0) != *n)
        {
            self.error.get_or_insert(crate::CompileError::Other(
                "MimIC fused attention expects q/k/v projections with the slot channels".into(),
            ));
        }
        let g = &mut self.g;
        let y = g.fresh("attn");
        let attrs = vec![
            attr_int("is_causal", 0),
            attr_float("scale", 1.0 / (d as f32).sqrt()),
            attr_int("q_num_heads", h as i64),
            attr_int("kv_num_heads", kv as i64),
        ];
        let (past_k, past_v) = (past_key(l), past_value(l));
        let inputs = [q, k, v, mask.as_str(), past_k.as_str(), past_v.as_str()];
        let mark = g.mark();
        g.node_named(
            "Attention",
            &inputs,
            &[&y, &present_key(l), &present_value(l)],
            attrs,
        );
        if convex {
            self.packed.insert(y.clone(), (h, d));
            return y;
        }
        // Additive: attention and epilogue stay float32 in a float16 graph. The output
        // channels are `(1 - mu) h` and `1 - mu` (up to the floor), and trained heads reach
        // mu so close to 1 that float16 would hold them as subnormals with a few bits left.
        if let HeadsSource::Folded(_) = self.heads {
            return self.additive_divided(&y, spec, mark);
        }
        let u = self.head_param("u", l); // [B, H, D]
        let g = &mut self.g;
        let per_head = g.const_i64(&[0, 0, h as i64, (d + 2) as i64]);
        let y = g.node("Reshape", &[&y, &per_head], vec![]); // [B, T, H, D + 2]
        let split = g.const_i64(&[d as i64, 1, 1]);
        let parts = g.node_n("Split", &[&y, &split], 3, vec![attr_int("axis", -1)]);
        // The real keys' channel is at least the slot's floor times its weight, so never 0 (a
        // padding row puts all its weight on the slot); float16 caches have no floor, and the
        // divisor is clamped. `mu` is the slot's channel over the sum of both.
        let (scaled_h, weighted) = (&parts[0], &parts[2]);
        let both = g.node("Add", &[&parts[1], weighted], vec![]);
        let keep = if self.fp16_guards {
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
        self.packed.insert(out.clone(), (h, d));
        out
    }

    /// Attention through mimic's own kernel, `ai.mimic:MimicAttention` (see
    /// `mimic_runtime::kernel`): the `Attention` operator's six inputs and, for MimIC heads
    /// (`mimic` is `Some(convex)`), `w`, `b` and `u` of the layer, folded (`[1, H, ..]`) or
    /// per batch row (`[B, H, ..]`). The kernel computes `mu` and the head's output itself, so
    /// the cache has no slots and the projections no extra channels.
    pub(crate) fn attention_kernel(
        &mut self,
        q: &str,
        k: &str,
        v: &str,
        spec: &AttentionSpec,
        mimic: Option<bool>,
    ) -> String {
        let l = spec.layer;
        if ![q, k, v].iter().all(|x| self.packed.contains_key(*x)) {
            self.error.get_or_insert(crate::CompileError::Other(
                "the mimic attention kernel expects packed q/k/v".into(),
            ));
        }
        let mask = self.mask(spec.window);
        let (past_k, past_v) = (past_key(l), past_value(l));
        let mut inputs = vec![
            q.to_string(),
            k.to_string(),
            v.to_string(),
            mask,
            past_k,
            past_v,
        ];
        let mut attrs = vec![
            attr_float("scale", 1.0 / (spec.head_dim as f32).sqrt()),
            attr_int("q_num_heads", spec.num_heads as i64),
            attr_int("kv_num_heads", spec.num_kv_heads as i64),
        ];
        if let Some(convex) = mimic {
            for kind in ["w", "b", "u"] {
                inputs.push(self.head_param(kind, l));
            }
            attrs.push(attr_int("form", convex as i64));
        }
        let y = self.g.fresh("attn");
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.g.node_in_domain(
            mimic_models::kernel_op::DOMAIN,
            mimic_models::kernel_op::ATTENTION,
            &refs,
            &[&y, &present_key(l), &present_value(l)],
            attrs,
        );
        self.packed
            .insert(y.clone(), (spec.num_heads, spec.head_dim));
        y
    }

    /// The additive form's epilogue with folded heads: attention's `[k h, k, m]` per head (`k`
    /// the real keys' weight plus the slot's floor times its weight, `m` the slot's weight
    /// times its `mu` channel) divided by `[k; D] ++ [k + m; 2]`. One Gather takes the two
    /// extra channels of every head, one small MatMul spreads them into that divisor, and one
    /// Div gives `[h, k / (k + m), m / (k + m)]`: the heads' outputs and their `mu` (see
    /// [`mimic_models::heads::cache_slots`]). The `o_proj` that follows reads
    /// these widened heads ([`Self::o_proj_weight_adding_mu`]) and adds `mu W_o u` itself, so the
    /// epilogue is three small nodes with no reshapes, split or broadcast products.
    fn additive_divided(&mut self, y: &str, spec: &AttentionSpec, mark: usize) -> String {
        let (h, d) = (spec.num_heads, spec.head_dim);
        let w = d + 2;
        let g = &mut self.g;
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
        if self.fp16_guards {
            // Float16 caches have no floor: a padding row would divide 0 by 0.
            let tiny = g.scalar_f32(f32::MIN_POSITIVE);
            divisor = g.node("Max", &[&divisor, &tiny], vec![]);
        }
        let out = g.node("Div", &[y, &divisor], vec![]);
        g.keep_fp32_since(mark);
        self.packed.insert(out.clone(), (h, w));
        self.adds_mu.insert(out.clone(), spec.layer);
        out
    }

    /// The `o_proj` weight, `[in, out]` for MatMul, over [`Self::additive_divided`]'s heads
    /// `[h, _, mu]`: per head `i` the rows `W_o^(i)`, a zero row and `W_o^(i) u_i`, so the
    /// product is `W_o (h + mu u)`.
    pub(crate) fn o_proj_weight_adding_mu(&mut self, x: &str, module: &str) -> String {
        let l = self.adds_mu[x];
        let HeadsSource::Folded(heads) = self.heads else {
            unreachable!("o_proj_weight_adding_mu without folded heads")
        };
        let d = self.head_dim;
        let name = format!("{module}.weight+mimic.u.T");
        let wt = self
            .weights_for(&format!("{module}.weight"))
            .expect("weights checked against the config")
            .transpose2(); // [H D, hidden]
        let (inner, out) = (wt.shape[0], wt.shape[1]);
        let u = heads.layer("mimic.u", l); // [H, D]
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
        self.put_weight(&name, &[data.len() / out, out], &data);
        name
    }

    /// MimIC with explicit nodes: scores, log-sum-exp, softmax, `mu`, then the form's epilogue.
    pub(crate) fn attention_mimic_unfused(
        &mut self,
        q: &str,
        k: &str,
        v: &str,
        spec: &AttentionSpec,
        convex: bool,
    ) -> String {
        let l = spec.layer;
        let mask = self.mask(spec.window);
        let q = self.unpacked(q);
        let (keys, values) = self.present(k, v, l);
        let (w, b, u) = (
            self.head_param("w", l),
            self.head_param("b", l),
            self.head_param("u", l),
        );
        let (h, kv, d) = (
            spec.num_heads as i64,
            spec.num_kv_heads as i64,
            spec.head_dim as i64,
        );
        let g = &mut self.g;
        // All in float32 (in a float16 graph too), as the trainer computes it.
        let mark = g.mark();
        let grouped = g.const_i64(&[0, kv, -1, d]);
        let qg = g.node("Reshape", &[&q, &grouped], vec![]); // [B, KV, G*T, D]
        let kt = g.node(
            "Transpose",
            &[&keys],
            vec![attr_ints("perm", &[0, 1, 3, 2])],
        );
        let scores = g.node("MatMul", &[&qg, &kt], vec![]);
        let per_head = g.const_i64(&[0, h, -1, 0]);
        let scores = g.node("Reshape", &[&scores, &per_head], vec![]); // [B, H, T, S]
        let scale = g.scalar_f32(1.0 / (d as f32).sqrt());
        let scores = g.node("Mul", &[&scores, &scale], vec![]);
        let scores = g.node("Add", &[&scores, &mask], vec![]);
        let last = g.const_i64(&[-1]);
        let lse = g.node(
            "ReduceLogSumExp",
            &[&scores, &last],
            vec![attr_int("keepdims", 1)],
        ); // [B, H, T, 1]
        let probs = g.node("Sub", &[&scores, &lse], vec![]);
        let probs = g.node("Exp", &[&probs], vec![]);
        let grouped_probs = g.const_i64(&[0, kv, -1, 0]);
        let probs = g.node("Reshape", &[&probs, &grouped_probs], vec![]);
        let out = g.node("MatMul", &[&probs, &values], vec![]);
        let heads = g.const_i64(&[0, h, -1, d]);
        let out = g.node("Reshape", &[&out, &heads], vec![]); // [B, H, T, D]

        // f = w . q + b per query head.
        let w_col = g.const_i64(&[0, h, d, 1]);
        let w = g.node("Reshape", &[&w, &w_col], vec![]);
        let f = g.node("MatMul", &[&q, &w], vec![]); // [B, H, T, 1]
        let b_shape = g.const_i64(&[0, h, 1, 1]);
        let b = g.node("Reshape", &[&b, &b_shape], vec![]);
        let f = g.node("Add", &[&f, &b], vec![]);
        let logit = g.node("Sub", &[&f, &lse], vec![]);
        let mu = g.node("Sigmoid", &[&logit], vec![]);
        let u_shape = g.const_i64(&[0, h, 1, d]);
        let u = g.node("Reshape", &[&u, &u_shape], vec![]);
        let mu_u = g.node("Mul", &[&mu, &u], vec![]);
        let h = if convex {
            // 1 - mu as sigmoid(LSE - f), as the trainer computes it.
            let keep_logit = g.node("Sub", &[&lse, &f], vec![]);
            let keep = g.node("Sigmoid", &[&keep_logit], vec![]);
            g.node("Mul", &[&keep, &out], vec![])
        } else {
            out
        };
        let y = g.node("Add", &[&h, &mu_u], vec![]);
        g.keep_fp32_since(mark);
        y
    }

    /// LIVE after the MLP of layer `l`, norm kept.
    pub(crate) fn live(&mut self, x: &str, l: usize) -> String {
        let shift = self.head_param("live", l); // [B|1, hidden]
        let g = &mut self.g;
        // In float32 in a float16 graph too: a float16 sum of squares overflows.
        let mark = g.mark();
        let axis1 = g.const_i64(&[1]);
        let shift = g.node("Unsqueeze", &[&shift, &axis1], vec![]); // [B|1, 1, hidden]
        let shifted = g.node("Add", &[x, &shift], vec![]);
        let last = g.const_i64(&[-1]);
        let keep = vec![attr_int("keepdims", 1)];
        let norm = g.node("ReduceL2", &[x, &last], keep.clone());
        let shifted_norm = g.node("ReduceL2", &[&shifted, &last], keep);
        let floor = g.scalar_f32(1e-12);
        let shifted_norm = g.node("Max", &[&shifted_norm, &floor], vec![]);
        let y = g.node("Mul", &[&shifted, &norm], vec![]);
        let y = g.node("Div", &[&y, &shifted_norm], vec![]);
        g.keep_fp32_since(mark);
        y
    }
}
