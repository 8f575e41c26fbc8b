//! Trained heads in the graph (docs/design.md section 3, "Attention forms and the fold"): where
//! their numbers come from (folded in, or graph inputs), the KV-cache layout they need, LIVE,
//! and LoRA.
//!
//! - MimIC acts inside attention: each attention form writes it with its base-model variant
//!   ([`crate::attention`]: fused, as extra cache slots and value channels with an epilogue;
//!   unfused, as explicit log-sum-exp and `mu` nodes; mimic's kernel, computing it itself).
//! - LIVE: `x' = (x + a v) |x| / |x + a v|` after each MLP ([`OnnxBackend::live`]).
//! - LoRA: merged into the projection weights before they are emitted
//!   ([`mimic_models::Heads::lora_merged`], applied when the ONNX backend is built).
//!
//! The heads' numbers enter the graph either as initializers (folded) or as graph inputs with
//! a batch axis (`--heads-as-inputs`), one set per batch row, gathered per layer
//! ([`OnnxBackend::head_param`]); fused MimIC takes `w` and `b` (and the convex `u`) through
//! the cache slots the runtime fills per row.
use mimic_models::contract::{AttentionImpl, HeadParam};
use mimic_models::{Heads, LlamaConfig, Method};

use crate::attention::fused::slot_form;
use crate::emit::{OnnxBackend, Value};
use crate::graph::{attr_int, value_info, Dim};
use crate::onnx::tensor_proto::DataType;

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
    let Some(form) = slot_form(method, attention) else {
        return (0, d, d);
    };
    let convex = form.is_convex();
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
) -> Vec<(HeadParam, Vec<usize>)> {
    let (l, h, d) = (cfg.num_layers, cfg.num_heads, cfg.head_dim);
    match (method, attention) {
        (Method::Mimic, AttentionImpl::Fused) => vec![(HeadParam::U, vec![l, h, d])],
        (Method::MimicConvex, AttentionImpl::Fused) => vec![],
        (Method::Mimic | Method::MimicConvex, AttentionImpl::Unfused | AttentionImpl::Kernel) => {
            vec![
                (HeadParam::W, vec![l, h, d]),
                (HeadParam::B, vec![l, h]),
                (HeadParam::U, vec![l, h, d]),
            ]
        }
        (Method::Live, _) => vec![(HeadParam::Live, vec![l, cfg.hidden_size])],
        (Method::Lora, _) => vec![],
    }
}

impl OnnxBackend<'_> {
    /// Declares the `heads.*` graph inputs of a heads-as-inputs graph.
    pub(crate) fn declare_heads_inputs(&mut self, method: Method, cfg: &LlamaConfig) {
        for (param, shape) in heads_inputs(method, cfg, self.attention) {
            let mut dims = vec![Dim::Named("batch")];
            dims.extend(shape.iter().map(|&s| Dim::Fixed(s as i64)));
            self.g
                .inputs
                .push(value_info(param.input_name(), DataType::Float, &dims));
        }
    }

    /// Layer `l`'s part of a heads tensor: `[1, rest..]` folded or `[batch, rest..]` from the
    /// graph input.
    pub(crate) fn head_param(&mut self, param: HeadParam, l: usize) -> String {
        let kind = param.kind();
        match self.heads {
            HeadsSource::Folded(h) => {
                let name = format!("heads.{kind}.{l}");
                let (data, rest) = match param {
                    HeadParam::Live => (h.live_shift(l), vec![h.tensor("live.v").shape[1]]),
                    HeadParam::W | HeadParam::B | HeadParam::U => {
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
                    &[param.input_name(), &idx],
                    vec![attr_int("axis", 1)],
                );
                self.g.keep_fp32_since(mark);
                x
            }
            HeadsSource::None => unreachable!("head_param without heads"),
        }
    }

    /// LIVE after the MLP of layer `l`, norm kept.
    pub(crate) fn live(&mut self, x: &Value, l: usize) -> Value {
        let shift = self.head_param(HeadParam::Live, l); // [B|1, hidden]
        let x = x.name.as_str();
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
        Value::new(y)
    }
}
