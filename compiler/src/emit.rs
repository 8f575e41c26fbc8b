//! The ONNX backend of the model definition: every [`Backend`] operation becomes graph nodes,
//! so `llama::forward` over an [`OnnxBackend`] is the model's ONNX graph.
//!
//! Graph interface (the layout Hugging Face exporters use):
//! - inputs `input_ids [batch, seq]`, `attention_mask [batch, total_seq]` (1 = token, 0 = pad,
//!   covering cached and new positions), `position_ids [batch, seq]`, and per layer
//!   `past_key_values.{l}.key|value [batch, kv_heads, past_seq, head_dim]`;
//! - outputs `logits [batch, seq or 1, vocab]` and `present.{l}.key|value
//!   [batch, kv_heads, total_seq, head_dim]`.
use std::collections::{HashMap, HashSet};

use mimic_models::backend::{AttentionSpec, Backend, Site};
use mimic_models::{LlamaConfig, Weights};

use crate::graph::{attr_float, attr_int, attr_ints, value_info, Dim, GraphBuilder};
use crate::onnx::tensor_proto::DataType;
use crate::Result;

/// How attention is expressed in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionImpl {
    /// The opset-23 `Attention` operator, with the cache as its past/present state.
    Fused,
    /// MatMul, Softmax, MatMul (grouped-query heads by reshaping queries, not copying keys).
    Unfused,
}

impl std::str::FromStr for AttentionImpl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fused" => Ok(Self::Fused),
            "unfused" => Ok(Self::Unfused),
            _ => Err(format!("unknown attention `{s}` (fused, unfused)")),
        }
    }
}

pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const POSITION_IDS: &str = "position_ids";
pub const LOGITS: &str = "logits";
pub fn past_key(l: usize) -> String {
    format!("past_key_values.{l}.key")
}
pub fn past_value(l: usize) -> String {
    format!("past_key_values.{l}.value")
}
pub fn present_key(l: usize) -> String {
    format!("present.{l}.key")
}
pub fn present_value(l: usize) -> String {
    format!("present.{l}.value")
}

/// Records the model as ONNX nodes. Weights are written as they are first used.
pub struct OnnxBackend<'w> {
    pub g: GraphBuilder,
    weights: &'w Weights,
    attention: AttentionImpl,
    last_only: bool,
    /// Weight names already emitted (in the layout the graph uses).
    emitted: HashSet<String>,
    /// Additive masks `[batch, 1, seq, total_seq]` by sliding window.
    masks: HashMap<Option<usize>, String>,
    error: Option<crate::CompileError>,
}

impl<'w> OnnxBackend<'w> {
    pub fn new(
        g: GraphBuilder,
        cfg: &LlamaConfig,
        weights: &'w Weights,
        attention: AttentionImpl,
        last_only: bool,
    ) -> Self {
        let mut b = OnnxBackend {
            g,
            weights,
            attention,
            last_only,
            emitted: HashSet::new(),
            masks: HashMap::new(),
            error: None,
        };
        b.declare_io(cfg);
        b
    }

    fn declare_io(&mut self, cfg: &LlamaConfig) {
        use Dim::*;
        let g = &mut self.g;
        g.inputs.push(value_info(
            INPUT_IDS,
            DataType::Int64,
            &[Named("batch"), Named("seq")],
        ));
        g.inputs.push(value_info(
            ATTENTION_MASK,
            DataType::Int64,
            &[Named("batch"), Named("total_seq")],
        ));
        g.inputs.push(value_info(
            POSITION_IDS,
            DataType::Int64,
            &[Named("batch"), Named("seq")],
        ));
        let kv = |seq| {
            [
                Named("batch"),
                Fixed(cfg.num_kv_heads as i64),
                Named(seq),
                Fixed(cfg.head_dim as i64),
            ]
        };
        for l in 0..cfg.num_layers {
            g.inputs
                .push(value_info(&past_key(l), DataType::Float, &kv("past_seq")));
            g.inputs
                .push(value_info(&past_value(l), DataType::Float, &kv("past_seq")));
        }
        let seq_out = if self.last_only {
            Fixed(1)
        } else {
            Named("seq")
        };
        g.outputs.push(value_info(
            LOGITS,
            DataType::Float,
            &[Named("batch"), seq_out, Fixed(cfg.vocab_size as i64)],
        ));
        for l in 0..cfg.num_layers {
            g.outputs.push(value_info(
                &present_key(l),
                DataType::Float,
                &kv("total_seq"),
            ));
            g.outputs.push(value_info(
                &present_value(l),
                DataType::Float,
                &kv("total_seq"),
            ));
        }
    }

    /// The first error met while emitting (a weight file that could not be written).
    pub fn take_error(&mut self) -> Option<crate::CompileError> {
        self.error.take()
    }

    /// A weight in HF layout, emitted once.
    fn weight(&mut self, name: &str) -> String {
        if self.emitted.insert(name.to_string()) {
            let t = self
                .weights
                .get(name)
                .expect("weights checked against the config");
            if let Err(e) = self.g.weight(name, &t.shape, &t.data) {
                self.error.get_or_insert(e);
            }
        }
        name.to_string()
    }

    /// A 2-D weight transposed to `[in, out]` for MatMul, emitted once.
    fn weight_t(&mut self, name: &str) -> String {
        let tname = format!("{name}.T");
        if self.emitted.insert(tname.clone()) {
            let t = self
                .weights
                .get(name)
                .expect("weights checked against the config")
                .transpose2();
            if let Err(e) = self.g.weight(&tname, &t.shape, &t.data) {
                self.error.get_or_insert(e);
            }
        }
        tname
    }

    /// `0` where a query may attend a key, `float32::MIN` elsewhere: keys must be real tokens,
    /// at or before the query's cache index `past + i`, and within the window.
    fn mask(&mut self, window: Option<usize>) -> String {
        if let Some(m) = self.masks.get(&window) {
            return m.clone();
        }
        let g = &mut self.g;
        let zero = g.scalar_i64(0);
        let one = g.scalar_i64(1);
        let shape_mask = g.node("Shape", &[ATTENTION_MASK], vec![]);
        let total = g.node("Gather", &[&shape_mask, &one], vec![attr_int("axis", 0)]);
        let shape_ids = g.node("Shape", &[INPUT_IDS], vec![]);
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
        let neg = g.scalar_f32(f32::MIN);
        let mask = g.node("Where", &[&allowed, &zero_f, &neg], vec![]);
        self.masks.insert(window, mask.clone());
        mask
    }

    fn attention_fused(&mut self, q: &str, k: &str, v: &str, spec: &AttentionSpec) -> String {
        let mask = self.mask(spec.window);
        let l = spec.layer;
        let y = self.g.fresh("attn");
        let scale = 1.0 / (spec.head_dim as f32).sqrt();
        self.g.node_named(
            "Attention",
            &[q, k, v, &mask, &past_key(l), &past_value(l)],
            &[&y, &present_key(l), &present_value(l)],
            vec![attr_int("is_causal", 0), attr_float("scale", scale)],
        );
        y
    }

    fn attention_unfused(&mut self, q: &str, k: &str, v: &str, spec: &AttentionSpec) -> String {
        let mask = self.mask(spec.window);
        let l = spec.layer;
        let g = &mut self.g;
        g.node_named(
            "Concat",
            &[&past_key(l), k],
            &[&present_key(l)],
            vec![attr_int("axis", 2)],
        );
        g.node_named(
            "Concat",
            &[&past_value(l), v],
            &[&present_value(l)],
            vec![attr_int("axis", 2)],
        );
        let (h, kv, d) = (
            spec.num_heads as i64,
            spec.num_kv_heads as i64,
            spec.head_dim as i64,
        );
        // Query head h reads KV head h / G: fold the G heads of a group into the query rows.
        let grouped = g.const_i64(&[0, kv, -1, d]);
        let qg = g.node("Reshape", &[q, &grouped], vec![]); // [B, KV, G*T, D]
        let kt = g.node(
            "Transpose",
            &[&present_key(l)],
            vec![attr_ints("perm", &[0, 1, 3, 2])],
        );
        let scores = g.node("MatMul", &[&qg, &kt], vec![]); // [B, KV, G*T, S]
        let per_head = g.const_i64(&[0, h, -1, 0]);
        let scores = g.node("Reshape", &[&scores, &per_head], vec![]); // [B, H, T, S]
        let scale = g.scalar_f32(1.0 / (d as f32).sqrt());
        let scores = g.node("Mul", &[&scores, &scale], vec![]);
        let scores = g.node("Add", &[&scores, &mask], vec![]);
        let probs = g.node("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let grouped_probs = g.const_i64(&[0, kv, -1, 0]);
        let probs = g.node("Reshape", &[&probs, &grouped_probs], vec![]); // [B, KV, G*T, S]
        let out = g.node("MatMul", &[&probs, &present_value(l)], vec![]); // [B, KV, G*T, D]
        let heads = g.const_i64(&[0, h, -1, d]);
        g.node("Reshape", &[&out, &heads], vec![])
    }
}

impl Backend for OnnxBackend<'_> {
    type Tensor = String;

    fn input_ids(&mut self) -> String {
        INPUT_IDS.into()
    }

    fn embed(&mut self, ids: &String, table: &str) -> String {
        let w = self.weight(table);
        self.g.node("Gather", &[&w, ids], vec![attr_int("axis", 0)])
    }

    fn linear(&mut self, x: &String, module: &str, bias: bool) -> String {
        let w = self.weight_t(&format!("{module}.weight"));
        let y = self.g.node("MatMul", &[x, &w], vec![]);
        if bias {
            let b = self.weight(&format!("{module}.bias"));
            self.g.node("Add", &[&y, &b], vec![])
        } else {
            y
        }
    }

    fn rms_norm(&mut self, x: &String, weight: &str, eps: f64) -> String {
        let w = self.weight(weight);
        // The Pow-ReduceMean-Add-Sqrt-Div-Mul pattern ONNX Runtime fuses into
        // SimplifiedLayerNormalization.
        let g = &mut self.g;
        let two = g.scalar_f32(2.0);
        let sq = g.node("Pow", &[x, &two], vec![]);
        let axes = g.const_i64(&[-1]);
        let mean = g.node("ReduceMean", &[&sq, &axes], vec![attr_int("keepdims", 1)]);
        let eps = g.scalar_f32(eps as f32);
        let var = g.node("Add", &[&mean, &eps], vec![]);
        let rms = g.node("Sqrt", &[&var], vec![]);
        let normed = g.node("Div", &[x, &rms], vec![]);
        g.node("Mul", &[&normed, &w], vec![])
    }

    fn silu(&mut self, x: &String) -> String {
        let s = self.g.node("Sigmoid", &[x], vec![]);
        self.g.node("Mul", &[x, &s], vec![])
    }

    fn mul(&mut self, a: &String, b: &String) -> String {
        self.g.node("Mul", &[a, b], vec![])
    }

    fn add(&mut self, a: &String, b: &String) -> String {
        self.g.node("Add", &[a, b], vec![])
    }

    fn split_heads(&mut self, x: &String, heads: usize, dim: usize) -> String {
        let shape = self.g.const_i64(&[0, 0, heads as i64, dim as i64]);
        let r = self.g.node("Reshape", &[x, &shape], vec![]);
        self.g
            .node("Transpose", &[&r], vec![attr_ints("perm", &[0, 2, 1, 3])])
    }

    fn merge_heads(&mut self, x: &String, heads: usize, dim: usize) -> String {
        let t = self
            .g
            .node("Transpose", &[x], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let shape = self.g.const_i64(&[0, 0, (heads * dim) as i64]);
        self.g.node("Reshape", &[&t, &shape], vec![])
    }

    fn rotary_tables(&mut self, inv_freq: &[f32], scaling: f32) -> (String, String) {
        let g = &mut self.g;
        let pos = g.node(
            "Cast",
            &[POSITION_IDS],
            vec![attr_int("to", DataType::Float as i64)],
        );
        let last = g.const_i64(&[-1]);
        let pos = g.node("Unsqueeze", &[&pos, &last], vec![]); // [B, T, 1]
        let mut doubled = inv_freq.to_vec();
        doubled.extend_from_slice(inv_freq);
        let inv = g.const_f32(&[doubled.len() as i64], &doubled);
        let emb = g.node("Mul", &[&pos, &inv], vec![]); // [B, T, D]
        let axis1 = g.const_i64(&[1]);
        let emb = g.node("Unsqueeze", &[&emb, &axis1], vec![]); // [B, 1, T, D]
        let mut cos = g.node("Cos", &[&emb], vec![]);
        let mut sin = g.node("Sin", &[&emb], vec![]);
        if scaling != 1.0 {
            let s = g.scalar_f32(scaling);
            cos = g.node("Mul", &[&cos, &s], vec![]);
            sin = g.node("Mul", &[&sin, &s], vec![]);
        }
        (cos, sin)
    }

    fn apply_rotary(&mut self, x: &String, cos: &String, sin: &String) -> String {
        let g = &mut self.g;
        let halves = g.node_n(
            "Split",
            &[x],
            2,
            vec![attr_int("axis", 3), attr_int("num_outputs", 2)],
        );
        let neg = g.node("Neg", &[&halves[1]], vec![]);
        let rotated = g.node("Concat", &[&neg, &halves[0]], vec![attr_int("axis", 3)]);
        let a = g.node("Mul", &[x, cos], vec![]);
        let b = g.node("Mul", &[&rotated, sin], vec![]);
        g.node("Add", &[&a, &b], vec![])
    }

    fn attention(&mut self, q: &String, k: &String, v: &String, spec: &AttentionSpec) -> String {
        match self.attention {
            AttentionImpl::Fused => self.attention_fused(q, k, v, spec),
            AttentionImpl::Unfused => self.attention_unfused(q, k, v, spec),
        }
    }

    fn observe(&mut self, _layer: usize, _site: Site, x: String) -> String {
        x
    }

    fn logits(&mut self, h: &String, weight: &str) -> String {
        let h = if self.last_only {
            let g = &mut self.g;
            let start = g.const_i64(&[-1]);
            let end = g.const_i64(&[i64::MAX]);
            let axes = g.const_i64(&[1]);
            g.node("Slice", &[h, &start, &end, &axes], vec![])
        } else {
            h.clone()
        };
        let w = self.weight_t(weight);
        self.g.node_named("MatMul", &[&h, &w], &[LOGITS], vec![]);
        LOGITS.into()
    }
}
