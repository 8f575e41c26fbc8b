//! Trained heads folded into the graph (DESIGN.md section 3).
//!
//! MimIC, per layer and query head, on post-rotary queries `q`: `f = w . q + b`,
//! `mu = sigmoid(f - LSE)` with LSE the log-sum-exp of the head's masked, scaled scores, and
//! `o = h + mu u` (additive) or `o = (1 - mu) h + mu u` (convex).
//!
//! - Fused, convex: one extra key/value slot per query head inside the `Attention` operator:
//!   key `sqrt(d) w` (already in the rotated frame), value `u`, and `b` added to the slot's
//!   score through the float mask. With `G` query heads per KV head, a KV head carries `G`
//!   slots, each masked for the other heads of its group. Softmax over real keys and the slot
//!   gives the slot weight `sigmoid(f - LSE)` exactly.
//! - Fused, additive: the same slot with value 0 and one extra value channel, 1 for real keys
//!   and 0 for the slot, so attention returns `[(1 - mu) h, 1 - mu]`; then
//!   `o = out / (1 - mu) + mu u`. (The channel is 1 - mu rather than mu: summed from the real
//!   keys' weights it stays accurate when mu is close to 1, where `1 - mu` from a mu channel
//!   loses every digit; trained heads reach such mu.)
//! - Unfused (both forms): the scores, their log-sum-exp, the softmax and `mu` as explicit
//!   nodes, as the trainer computes them.
//! - LIVE: `x' = (x + a v) |x| / |x + a v|` after each MLP.
//! - LoRA: merged into the projection weights before they are emitted (see [`crate::compile`]).
//!
//! The heads' numbers enter the graph either as initializers (folded) or as graph inputs with
//! a batch axis (`--heads-as-inputs`), one set per batch row; the nodes are the same.
use mimic_models::backend::AttentionSpec;
use mimic_models::{Heads, LlamaConfig, Method};

use crate::emit::{past_key, past_value, present_key, present_value, OnnxBackend, INPUT_IDS};
use crate::graph::{attr_float, attr_int, attr_ints, value_info, Dim};
use crate::onnx::tensor_proto::DataType;

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
pub fn heads_inputs(method: Method, cfg: &LlamaConfig) -> Vec<(&'static str, Vec<usize>)> {
    let (l, h, d) = (cfg.num_layers, cfg.num_heads, cfg.head_dim);
    match method {
        Method::Mimic | Method::MimicConvex => vec![
            ("heads.w", vec![l, h, d]),
            ("heads.b", vec![l, h]),
            ("heads.u", vec![l, h, d]),
        ],
        Method::Live => vec![("heads.live", vec![l, cfg.hidden_size])],
        Method::Lora => vec![],
    }
}

impl OnnxBackend<'_> {
    /// Declares the `heads.*` graph inputs of a heads-as-inputs graph.
    pub(crate) fn declare_heads_inputs(&mut self, method: Method, cfg: &LlamaConfig) {
        for (name, shape) in heads_inputs(method, cfg) {
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
                if let Err(e) = self.g.weight(&name, &dims, &data) {
                    self.error.get_or_insert(e);
                }
                name
            }
            HeadsSource::Inputs(_) => {
                let idx = self.g.scalar_i64(l as i64);
                self.g.node(
                    "Gather",
                    &[&format!("heads.{kind}"), &idx],
                    vec![attr_int("axis", 1)],
                )
            }
            HeadsSource::None => unreachable!("head_param without heads"),
        }
    }

    /// `[batch, dims..]` with the batch size of this pass, for Expand.
    fn batch_shape(&mut self, dims: &[i64]) -> String {
        let g = &mut self.g;
        let shape = g.node("Shape", &[INPUT_IDS], vec![]);
        let start = g.const_i64(&[0]);
        let end = g.const_i64(&[1]);
        let batch = g.node("Slice", &[&shape, &start, &end], vec![]);
        let rest = g.const_i64(dims);
        g.node("Concat", &[&batch, &rest], vec![attr_int("axis", 0)])
    }

    /// The attention mask with one column per slot in front: `[batch, heads, seq, G + total]`.
    /// Slot `j` of query head `h` scores `b_h` where `j == h mod G`, `float32::MIN` elsewhere.
    fn slot_mask(&mut self, base: &str, b: &str, spec: &AttentionSpec) -> String {
        let (h, g_size) = (spec.num_heads, spec.num_heads / spec.num_kv_heads);
        let mut sel = vec![f32::MIN; h * g_size];
        for head in 0..h {
            sel[head * g_size + head % g_size] = 0.0;
        }
        let g = &mut self.g;
        let sel = g.const_f32(&[1, h as i64, 1, g_size as i64], &sel);
        let axes = g.const_i64(&[2, 3]);
        let b = g.node("Unsqueeze", &[b, &axes], vec![]); // [B|1, H, 1, 1]
        let slots = g.node("Add", &[&b, &sel], vec![]); // [B|1, H, 1, G]
                                                        // Both parts broadcast to [B, H, T, ..]: the base mask has one head, the slots one row.
        let ids = g.node("Shape", &[INPUT_IDS], vec![]); // [B, T]
        let mask_shape = g.node("Shape", &[base], vec![]); // [B, 1, T, total]
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
        let slots = g.node("Expand", &[&slots, &slot_shape], vec![]);
        let base = g.node("Expand", &[base, &base_shape], vec![]);
        g.node("Concat", &[&slots, &base], vec![attr_int("axis", -1)])
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

    /// MimIC inside the `Attention` operator: slots prepended to the keys and values.
    pub(crate) fn attention_mimic_fused(
        &mut self,
        q: &str,
        k: &str,
        v: &str,
        spec: &AttentionSpec,
        convex: bool,
    ) -> String {
        let l = spec.layer;
        let base = self.mask(spec.window);
        let q = self.unpacked(q);
        let (keys, values) = self.present(k, v, l);
        let (w, b, u) = (
            self.head_param("w", l),
            self.head_param("b", l),
            self.head_param("u", l),
        );
        let mask = self.slot_mask(&base, &b, spec);
        let (kv, d) = (spec.num_kv_heads as i64, spec.head_dim as i64);
        let gs = (spec.num_heads / spec.num_kv_heads) as i64;
        let slot_shape = self.batch_shape(&[kv, gs, d]);
        let slot_shape_v = self.batch_shape(&[kv, gs, d + 1]);
        let g = &mut self.g;
        let grouped = g.const_i64(&[0, kv, gs, d]);
        let sqrt_d = g.scalar_f32((d as f32).sqrt());
        let slot_k = g.node("Mul", &[&w, &sqrt_d], vec![]);
        let slot_k = g.node("Reshape", &[&slot_k, &grouped], vec![]);
        let slot_k = g.node("Expand", &[&slot_k, &slot_shape], vec![]);
        let keys = g.node("Concat", &[&slot_k, &keys], vec![attr_int("axis", 2)]);
        let values = if convex {
            let slot_v = g.node("Reshape", &[&u, &grouped], vec![]);
            let slot_v = g.node("Expand", &[&slot_v, &slot_shape], vec![]);
            g.node("Concat", &[&slot_v, &values], vec![attr_int("axis", 2)])
        } else {
            // Real values get a channel of ones, the slots' values are all zero: that channel
            // of the output is 1 - mu, summed from the real keys' weights (accurate even when
            // mu is close to 1, where 1 minus a slot channel would cancel).
            let pads = g.const_i64(&[0, 0, 0, 0, 0, 0, 0, 1]);
            let one = g.scalar_f32(1.0);
            let padded = g.node("Pad", &[&values, &pads, &one], vec![]);
            let zero = g.scalar_f32(0.0);
            let slot_v = g.node("Expand", &[&zero, &slot_shape_v], vec![]);
            g.node("Concat", &[&slot_v, &padded], vec![attr_int("axis", 2)])
        };
        let scale = 1.0 / (d as f32).sqrt();
        let out = g.node(
            "Attention",
            &[&q, &keys, &values, &mask],
            vec![attr_int("is_causal", 0), attr_float("scale", scale)],
        ); // [B, H, T, D or D + 1]
        if convex {
            return out;
        }
        let split = g.const_i64(&[d, 1]);
        let parts = g.node_n("Split", &[&out, &split], 2, vec![attr_int("axis", -1)]);
        let (scaled_h, keep) = (&parts[0], &parts[1]);
        let one = g.scalar_f32(1.0);
        let mu = g.node("Sub", &[&one, keep], vec![]);
        // A padding row can put all weight on the slot (1 - mu = 0, and 0 in the numerator):
        // keep the quotient finite there.
        let tiny = g.scalar_f32(f32::MIN_POSITIVE);
        let keep = g.node("Max", &[keep, &tiny], vec![]);
        let h = g.node("Div", &[scaled_h, &keep], vec![]);
        let per_head = g.const_i64(&[0, spec.num_heads as i64, 1, d]);
        let u = g.node("Reshape", &[&u, &per_head], vec![]);
        let mu_u = g.node("Mul", &[&mu, &u], vec![]);
        g.node("Add", &[&h, &mu_u], vec![])
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
        let toward = if convex {
            g.node("Sub", &[&u, &out], vec![])
        } else {
            u
        };
        let step = g.node("Mul", &[&mu, &toward], vec![]);
        g.node("Add", &[&out, &step], vec![])
    }

    /// LIVE after the MLP of layer `l`, norm kept.
    pub(crate) fn live(&mut self, x: &str, l: usize) -> String {
        let shift = self.head_param("live", l); // [B|1, hidden]
        let g = &mut self.g;
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
        g.node("Div", &[&y, &shifted_norm], vec![])
    }
}
