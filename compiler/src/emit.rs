//! The ONNX backend of the model definition: every [`Backend`] operation becomes graph nodes,
//! so `llama::forward` over an [`OnnxBackend`] is the model's ONNX graph.
//!
//! Graph interface (the layout Hugging Face exporters use):
//! - inputs `input_ids [batch, seq]`, `attention_mask [batch, total_seq]` (1 = token, 0 = pad,
//!   covering cached and new positions), `position_ids [batch, seq]`, and per layer
//!   `past_key_values.{l}.key|value [batch, kv_heads, past_seq, head_dim]`;
//! - outputs `logits [batch, seq or 1, vocab]` and `present.{l}.key|value
//!   [batch, kv_heads, total_seq, head_dim]`.
use std::collections::{BTreeMap, HashMap, HashSet};

use mimic_models::backend::{AttentionSpec, Backend, Site};
use mimic_models::contract::MASK_MIN;
pub use mimic_models::contract::{
    past_key, past_value, present_key, present_value, AttentionImpl, ATTENTION_MASK, INPUT_IDS,
    LOGITS, POSITION_IDS,
};
use mimic_models::{HostTensor, LlamaConfig, Method, Weights};

use crate::fold::HeadsSource;
use crate::graph::{attr_float, attr_int, attr_ints, value_info, Dim, GraphBuilder};
use crate::onnx::tensor_proto::DataType;

impl OnnxBackend<'_> {
    /// A weight by HF name (merged LoRA projections first), if the model has it.
    pub(crate) fn weights_for(&self, name: &str) -> Option<&HostTensor> {
        host_weight(&self.merged, self.weights, name)
    }
}

/// A weight by HF name: merged LoRA projections first, then the model's. A free function
/// so that it borrows the two maps, not the whole backend.
fn host_weight<'a>(
    merged: &'a BTreeMap<String, HostTensor>,
    weights: &'a Weights,
    name: &str,
) -> Option<&'a HostTensor> {
    merged.get(name).or_else(|| weights.get(name).ok())
}

/// Records the model as ONNX nodes. Weights are written as they are first used.
pub struct OnnxBackend<'w> {
    pub g: GraphBuilder,
    weights: &'w Weights,
    pub(crate) attention: AttentionImpl,
    last_only: bool,
    /// Weight names already emitted (in the layout the graph uses).
    emitted: HashSet<String>,
    /// Additive masks `[batch, 1, seq, total_seq]` by sliding window.
    masks: HashMap<Option<usize>, String>,
    /// Values that hold heads packed as `[batch, seq, heads * dim]`: `split_heads` only marks
    /// them, and the `RotaryEmbedding` and `Attention` operators read that layout directly,
    /// which saves a Reshape and a Transpose per projection.
    pub(crate) packed: HashMap<String, (usize, usize)>,
    /// Trained heads folded in or taken as inputs.
    pub(crate) heads: HeadsSource<'w>,
    /// Weights replaced before emission (LoRA merged into its projections).
    merged: BTreeMap<String, HostTensor>,
    /// Values built once and shared by every layer (shapes, broadcast masks), by key.
    pub(crate) memo: HashMap<String, String>,
    /// Values whose heads carry extra channels (fused MimIC's q, k and v), and how many.
    pub(crate) widened: HashMap<String, usize>,
    /// Additive MimIC attention outputs `[h, _, mu]` per head, by layer: their `o_proj` adds
    /// `mu W_o u` (see `additive_divided`).
    pub(crate) adds_mu: HashMap<String, usize>,
    pub(crate) head_dim: usize,
    pub(crate) error: Option<crate::CompileError>,
    /// The residual stream's values. Their Adds are marked float32, so that in a float16
    /// graph every layer adds its attention and MLP outputs to the stream in float32 (and
    /// normalises it in float32), and rounding does not accumulate over the layers.
    residual: HashSet<String>,
    /// The graph is to be converted to float16: guard what float16 caches cannot hold (the
    /// additive MimIC divisor is clamped, see [`mimic_models::heads::keep_floor`], and the
    /// slots score their bias through the keys, see [`mimic_models::heads::bias_in_key`]).
    pub fp16_guards: bool,
}

impl<'w> OnnxBackend<'w> {
    pub fn new(
        g: GraphBuilder,
        cfg: &LlamaConfig,
        weights: &'w Weights,
        attention: AttentionImpl,
        last_only: bool,
        heads: HeadsSource<'w>,
        fp16_guards: bool,
    ) -> crate::Result<Self> {
        let merged = match heads {
            HeadsSource::Folded(h) if h.method == Method::Lora => h.lora_merged(weights)?,
            _ => BTreeMap::new(),
        };
        let mut b = OnnxBackend {
            g,
            weights,
            attention,
            last_only,
            emitted: HashSet::new(),
            masks: HashMap::new(),
            packed: HashMap::new(),
            heads,
            merged,
            memo: HashMap::new(),
            widened: HashMap::new(),
            adds_mu: HashMap::new(),
            head_dim: cfg.head_dim,
            error: None,
            residual: HashSet::new(),
            fp16_guards,
        };
        b.declare_io(cfg);
        if let HeadsSource::Inputs(method) = heads {
            b.declare_heads_inputs(method, cfg);
        }
        Ok(b)
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
        let (slots, key_dim, value_dim) =
            crate::fold::cache_layout(self.heads.method(), self.attention, self.fp16_guards, cfg);
        // With slots at the front, the cache is longer than the attention mask.
        let (past, present) = match slots {
            0 => ("past_seq", "total_seq"),
            _ => ("past_cache_seq", "present_cache_seq"),
        };
        // The KV cache: float32 here, float16 after the float16 pass.
        let kv = |name: &str, seq, dim: usize| {
            let dims = [
                Named("batch"),
                Fixed(cfg.num_kv_heads as i64),
                Named(seq),
                Fixed(dim as i64),
            ];
            value_info(name, DataType::Float, &dims)
        };
        for l in 0..cfg.num_layers {
            g.inputs.push(kv(&past_key(l), past, key_dim));
            g.inputs.push(kv(&past_value(l), past, value_dim));
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
            g.outputs.push(kv(&present_key(l), present, key_dim));
            g.outputs.push(kv(&present_value(l), present, value_dim));
        }
    }

    /// The first error met while emitting (a weight file that could not be written).
    pub fn take_error(&mut self) -> Option<crate::CompileError> {
        self.error.take()
    }

    /// Writes a weight initializer; the first failure is kept for [`Self::take_error`].
    pub(crate) fn put_weight(&mut self, name: &str, dims: &[usize], data: &[f32]) {
        if let Err(e) = self.g.weight(name, dims, data) {
            self.error.get_or_insert(e);
        }
    }

    /// A weight in HF layout, emitted once.
    fn weight(&mut self, name: &str) -> String {
        if self.emitted.insert(name.to_string()) {
            let t = host_weight(&self.merged, self.weights, name)
                .expect("weights checked against the config");
            // `t` borrows `self.merged`: the graph and the error are borrowed apart.
            if let Err(e) = self.g.weight(name, &t.shape, &t.data) {
                self.error.get_or_insert(e);
            }
        }
        name.to_string()
    }

    /// A 2-D weight transposed to `[in, out]` for MatMul, emitted once.
    fn weight_t(&mut self, name: &str) -> String {
        self.weights_t(&[name])
    }

    /// 2-D weights `[out_i, in]` stacked along `out` and transposed to `[in, sum(out_i)]`, so
    /// one MatMul computes every projection.
    fn weights_t(&mut self, names: &[&str]) -> String {
        let tname = format!("{}.T", names.join("+"));
        if self.emitted.insert(tname.clone()) {
            let (mut rows, mut cols, mut data) = (0, 0, Vec::new());
            for name in names {
                let t = host_weight(&self.merged, self.weights, name)
                    .expect("weights checked against the config");
                rows += t.shape[0];
                cols = t.shape[1];
                data.extend_from_slice(&t.data);
            }
            let t = mimic_models::HostTensor::new(vec![rows, cols], data).transpose2();
            self.put_weight(&tname, &t.shape, &t.data);
        }
        tname
    }

    /// Biases concatenated, emitted once.
    fn biases(&mut self, names: &[&str]) -> String {
        let name = names.join("+");
        if self.emitted.insert(name.clone()) {
            let mut data = Vec::new();
            for n in names {
                data.extend_from_slice(&self.weights.get(n).expect("weights checked").data);
            }
            self.put_weight(&name, &[data.len()], &data);
        }
        name
    }

    /// `[batch, seq, heads * dim] -> [batch, heads, seq, dim]` for values still packed.
    pub(crate) fn unpacked(&mut self, x: &str) -> String {
        match self.packed.get(x).copied() {
            Some((heads, dim)) => {
                let shape = self.g.const_i64(&[0, 0, heads as i64, dim as i64]);
                let r = self.g.node("Reshape", &[x, &shape], vec![]);
                self.g
                    .node("Transpose", &[&r], vec![attr_ints("perm", &[0, 2, 1, 3])])
            }
            None => x.to_string(),
        }
    }

    /// `0` where a query may attend a key, [`MASK_MIN`] elsewhere: keys must be real tokens,
    /// at or before the query's cache index `past + i`, and within the window.
    pub(crate) fn mask(&mut self, window: Option<usize>) -> String {
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
        let neg = g.scalar_f32(MASK_MIN);
        let mask = g.node("Where", &[&allowed, &zero_f, &neg], vec![]);
        self.masks.insert(window, mask.clone());
        mask
    }

    fn attention_fused(&mut self, q: &str, k: &str, v: &str, spec: &AttentionSpec) -> String {
        let mask = self.mask(spec.window);
        let l = spec.layer;
        let y = self.g.fresh("attn");
        let scale = 1.0 / (spec.head_dim as f32).sqrt();
        let mut attrs = vec![attr_int("is_causal", 0), attr_float("scale", scale)];
        let all_packed = [q, k, v].iter().all(|x| self.packed.contains_key(*x));
        let (q, k, v) = if all_packed {
            attrs.push(attr_int("q_num_heads", spec.num_heads as i64));
            attrs.push(attr_int("kv_num_heads", spec.num_kv_heads as i64));
            (q.to_string(), k.to_string(), v.to_string())
        } else {
            (self.unpacked(q), self.unpacked(k), self.unpacked(v))
        };
        self.g.node_named(
            "Attention",
            &[&q, &k, &v, &mask, &past_key(l), &past_value(l)],
            &[&y, &present_key(l), &present_value(l)],
            attrs,
        );
        if all_packed {
            self.packed
                .insert(y.clone(), (spec.num_heads, spec.head_dim));
        }
        y
    }

    fn attention_unfused(&mut self, q: &str, k: &str, v: &str, spec: &AttentionSpec) -> String {
        let mask = self.mask(spec.window);
        let l = spec.layer;
        let (q, k, v) = (self.unpacked(q), self.unpacked(k), self.unpacked(v));
        let (q, k, v) = (q.as_str(), k.as_str(), v.as_str());
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
        // Softmax stays float32 in a float16 graph (the pass keeps the operator).
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
        let h = self.g.node("Gather", &[&w, ids], vec![attr_int("axis", 0)]);
        self.residual.insert(h.clone());
        h
    }

    fn linear(&mut self, x: &String, module: &str, bias: bool) -> String {
        let w = match self.adds_mu.contains_key(x) {
            true => self.o_proj_weight_adding_mu(x, module),
            false => self.weight_t(&format!("{module}.weight")),
        };
        let y = self.g.node("MatMul", &[x, &w], vec![]);
        if bias {
            let b = self.weight(&format!("{module}.bias"));
            self.g.node("Add", &[&y, &b], vec![])
        } else {
            y
        }
    }

    fn linears(&mut self, x: &String, modules: &[&str], bias: bool) -> Vec<String> {
        if let Some(fills) = self.slot_channels(modules) {
            return self.linears_widened(x, modules, bias, fills);
        }
        let weights: Vec<String> = modules.iter().map(|m| format!("{m}.weight")).collect();
        let refs: Vec<&str> = weights.iter().map(String::as_str).collect();
        let w = self.weights_t(&refs);
        let mut y = self.g.node("MatMul", &[x, &w], vec![]);
        if bias {
            let names: Vec<String> = modules.iter().map(|m| format!("{m}.bias")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let b = self.biases(&refs);
            y = self.g.node("Add", &[&y, &b], vec![]);
        }
        let sizes: Vec<i64> = weights
            .iter()
            .map(|w| self.weights.get(w).map_or(0, |t| t.shape[0] as i64))
            .collect();
        let split = self.g.const_i64(&sizes);
        self.g.node_n(
            "Split",
            &[&y, &split],
            modules.len(),
            vec![attr_int("axis", -1)],
        )
    }

    fn rms_norm(&mut self, x: &String, weight: &str, eps: f64) -> String {
        let w = self.weight(weight);
        // stash_type 1: the mean of squares is computed in float32 whatever the input type
        // (and the float16 pass keeps the operator in float32).
        self.g.node(
            "RMSNormalization",
            &[x, &w],
            vec![
                attr_int("axis", -1),
                attr_float("epsilon", eps as f32),
                attr_int("stash_type", 1),
            ],
        )
    }

    fn silu(&mut self, x: &String) -> String {
        let s = self.g.node("Sigmoid", &[x], vec![]);
        self.g.node("Mul", &[x, &s], vec![])
    }

    fn mul(&mut self, a: &String, b: &String) -> String {
        self.g.node("Mul", &[a, b], vec![])
    }

    fn add(&mut self, a: &String, b: &String) -> String {
        let mark = self.g.mark();
        let y = self.g.node("Add", &[a, b], vec![]);
        if self.residual.contains(a) || self.residual.contains(b) {
            // A layer's output joins the residual stream, in float32.
            self.g.keep_fp32_since(mark);
            self.residual.insert(y.clone());
        }
        y
    }

    fn split_heads(&mut self, x: &String, heads: usize, dim: usize) -> String {
        let dim = dim + self.widened.get(x).copied().unwrap_or(0);
        self.packed.insert(x.clone(), (heads, dim));
        x.clone()
    }

    fn merge_heads(&mut self, x: &String, heads: usize, dim: usize) -> String {
        if self.packed.contains_key(x) {
            return x.clone();
        }
        let t = self
            .g
            .node("Transpose", &[x], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let shape = self.g.const_i64(&[0, 0, (heads * dim) as i64]);
        self.g.node("Reshape", &[&t, &shape], vec![])
    }

    fn rotary_tables(&mut self, inv_freq: &[f32], scaling: f32) -> (String, String) {
        let g = &mut self.g;
        let mark = g.mark();
        let pos = g.node(
            "Cast",
            &[POSITION_IDS],
            vec![attr_int("to", DataType::Float as i64)],
        );
        let last = g.const_i64(&[-1]);
        let pos = g.node("Unsqueeze", &[&pos, &last], vec![]); // [B, T, 1]
        let inv = g.const_f32(&[inv_freq.len() as i64], inv_freq);
        // [B, T, D/2]: the cache layout of the RotaryEmbedding operator without position ids.
        let emb = g.node("Mul", &[&pos, &inv], vec![]);
        let mut cos = g.node("Cos", &[&emb], vec![]);
        let mut sin = g.node("Sin", &[&emb], vec![]);
        if scaling != 1.0 {
            let s = g.scalar_f32(scaling);
            cos = g.node("Mul", &[&cos, &s], vec![]);
            sin = g.node("Mul", &[&sin, &s], vec![]);
        }
        // Positions and angles in float32 (float16 holds integers exactly only to 2048).
        g.keep_fp32_since(mark);
        (cos, sin)
    }

    fn apply_rotary(&mut self, x: &String, cos: &String, sin: &String) -> String {
        // interleaved 0: the rotate-half convention of HF Llama.
        let mut attrs = vec![attr_int("interleaved", 0)];
        let packed = self.packed.get(x).copied();
        if let Some((heads, _)) = packed {
            attrs.push(attr_int("num_heads", heads as i64));
        }
        let widened = self.widened.get(x).copied();
        if let (Some(extra), Some((_, dim))) = (widened, packed) {
            // The extra channels pass through unrotated.
            attrs.push(attr_int("rotary_embedding_dim", (dim - extra) as i64));
        }
        let y = self.g.node("RotaryEmbedding", &[x, cos, sin], attrs);
        if let Some(p) = packed {
            self.packed.insert(y.clone(), p);
        }
        if let Some(extra) = widened {
            self.widened.insert(y.clone(), extra);
        }
        y
    }

    fn attention(&mut self, q: &String, k: &String, v: &String, spec: &AttentionSpec) -> String {
        let mimic = self.heads.method().filter(|m| m.is_mimic());
        match (self.attention, mimic) {
            (AttentionImpl::Fused, None) => self.attention_fused(q, k, v, spec),
            (AttentionImpl::Unfused, None) => self.attention_unfused(q, k, v, spec),
            (AttentionImpl::Fused, Some(m)) => {
                self.attention_mimic_fused(q, k, v, spec, m == Method::MimicConvex)
            }
            (AttentionImpl::Unfused, Some(m)) => {
                self.attention_mimic_unfused(q, k, v, spec, m == Method::MimicConvex)
            }
            (AttentionImpl::Kernel, m) => {
                self.attention_kernel(q, k, v, spec, m.map(|m| m == Method::MimicConvex))
            }
        }
    }

    fn observe(&mut self, layer: usize, site: Site, x: String) -> String {
        if site == Site::MlpOutput && self.heads.method() == Some(Method::Live) {
            self.live(&x, layer)
        } else {
            x
        }
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
        // Logits leave the graph in float32 (in a float16 graph too, see `float16::is_cache`).
        self.g.node_named("MatMul", &[&h, &w], &[LOGITS], vec![]);
        LOGITS.into()
    }
}
