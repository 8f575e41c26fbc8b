//! The ONNX backend of the model definition: every [`Backend`] operation becomes graph nodes,
//! so `llama::forward` over an [`OnnxBackend`] is the model's ONNX graph.
//!
//! Graph interface (the layout Hugging Face exporters use, named in
//! [`mimic_models::contract`]):
//! - inputs `input_ids [batch, seq]`, `attention_mask [batch, total_seq]` (1 = token, 0 = pad,
//!   covering cached and new positions), `position_ids [batch, seq]`, and per layer
//!   `past_key_values.{l}.key|value [batch, kv_heads, past_seq, head_dim]`;
//! - outputs `logits [batch, seq or 1, vocab]` and `present.{l}.key|value
//!   [batch, kv_heads, total_seq, head_dim]`.
//!
//! Attention is written by [`crate::attention`], the heads other than MimIC by
//! [`crate::fold`].
use std::collections::{BTreeMap, HashSet};

use mimic_models::backend::{AttentionSpec, Backend, CrossAttentionSpec, Site};
use mimic_models::contract::{
    past_key, past_value, present_key, present_value, AttentionImpl, ATTENTION_MASK, INPUTS_EMBEDS,
    INPUT_IDS, LOGITS, POSITION_IDS,
};
use mimic_models::{HostTensor, LlamaConfig, Method, Weights};

use crate::attention::{fused, Masks};
use crate::fold::HeadsSource;
use crate::graph::{attr_float, attr_int, attr_ints, value_info, Dim, GraphBuilder};
use crate::onnx::tensor_proto::DataType;

/// A value of the graph being emitted: its name, and what the emitter knows of it that the
/// graph's types do not say (how its heads are laid out, whether it is the residual stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Value {
    pub name: String,
    /// Heads kept packed as `[batch, seq, heads * dim]` where the model definition means
    /// `[batch, heads, seq, dim]`: `split_heads` only marks them, and the `RotaryEmbedding`
    /// and `Attention` operators read that layout directly, which saves a Reshape and a
    /// Transpose per projection ([`OnnxBackend::unpacked`] gives the 4-D layout).
    pub packed: Option<Packed>,
    /// Channels each head carries after the model's own (fused MimIC's q, k and v, see
    /// [`fused::slot_channels`]); 0 for every other value.
    pub extra_channels: usize,
    /// Set on fused additive MimIC's attention output of this layer, `[h, _, mu]` per head:
    /// its `o_proj` adds `mu W_o u` itself ([`fused::o_proj_weight_adding_mu`]).
    pub adds_mu_of_layer: Option<usize>,
    /// On the residual stream. Its Adds are marked float32, so that in a float16 graph every
    /// layer adds its attention and MLP outputs to the stream in float32 (and normalises it in
    /// float32), and rounding does not accumulate over the layers.
    pub residual: bool,
}

/// How a packed value's heads are laid out: `heads` of `dim` channels each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    pub heads: usize,
    pub dim: usize,
}

impl Value {
    /// A value with nothing known of it beyond its name.
    pub fn new(name: impl Into<String>) -> Self {
        Value {
            name: name.into(),
            ..Default::default()
        }
    }

    /// A value whose `heads` heads of `dim` channels are packed `[batch, seq, heads * dim]`.
    pub fn packed(name: impl Into<String>, heads: usize, dim: usize) -> Self {
        Value {
            packed: Some(Packed { heads, dim }),
            ..Value::new(name)
        }
    }
}

/// An initializer the backend derives from the model's weights (written once).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Initializer {
    /// A weight as the model holds it, under its Hugging Face name.
    Weight(String),
    /// 2-D weights `[out_i, in]` stacked along `out` and transposed to `[in, sum(out_i)]`
    /// for MatMul, named `a+b.T`.
    Transposed(Vec<String>),
    /// Biases concatenated, named `a+b`.
    Biases(Vec<String>),
}

impl Initializer {
    fn name(&self) -> String {
        match self {
            Initializer::Weight(name) => name.clone(),
            Initializer::Transposed(names) => format!("{}.T", names.join("+")),
            Initializer::Biases(names) => names.join("+"),
        }
    }
}

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

/// Folded LoRA heads merged into their projections' weights, except those a graph keeping
/// blocks computes from its blocks (LoRA stays a low-rank product there, [`crate::blocks`]).
fn merged_lora(
    heads: HeadsSource,
    weights: &Weights,
    keep_blocks: bool,
) -> crate::Result<BTreeMap<String, HostTensor>> {
    Ok(match heads {
        HeadsSource::Folded(h) if h.method == Method::Lora => h
            .lora_merged_where(weights, |w| {
                !(keep_blocks && weights.blocks.contains_key(w))
            })?,
        _ => BTreeMap::new(),
    })
}

/// Records the model as ONNX nodes. Weights are written as they are first used.
pub struct OnnxBackend<'w> {
    pub g: GraphBuilder,
    pub(crate) weights: &'w Weights,
    pub(crate) attention: AttentionImpl,
    last_only: bool,
    /// Initializers written from the model's weights.
    emitted: HashSet<Initializer>,
    /// The attention masks, built once per window and shared by the layers.
    pub(crate) masks: Masks,
    /// Trained heads folded in or taken as inputs.
    pub(crate) heads: HeadsSource<'w>,
    /// Weights replaced before emission (LoRA merged into its projections).
    merged: BTreeMap<String, HostTensor>,
    pub(crate) head_dim: usize,
    pub(crate) error: Option<crate::CompileError>,
    /// The graph is to be converted to float16: guard what float16 caches cannot hold (the
    /// additive MimIC divisor is clamped, see [`mimic_models::heads::keep_floor`], and the
    /// slots score their bias through the keys, see [`mimic_models::heads::bias_in_key`]).
    pub fp16_guards: bool,
    /// The graph takes `inputs_embeds` instead of `input_ids` (a vision-language model's
    /// decoder).
    pub(crate) embeds_input: bool,
    /// Where a cross-attention decoder's keys and values come from ([`crate::cross`]).
    pub(crate) cross_kv: crate::cross::CrossKv,
    /// The cross-attention mask and read gate, built once.
    pub(crate) cross_mask: Option<(String, String)>,
    /// Projections the model holds as GGUF blocks stay blocks ([`crate::blocks`]).
    pub(crate) keep_blocks: bool,
    /// The weights whose blocks are written.
    pub(crate) emitted_blocks: HashSet<String>,
}

impl<'w> OnnxBackend<'w> {
    /// A backend that declares no inputs or outputs (a graph of a few of the model's
    /// operations, such as [`crate::cross::emit_cross_kv`]), with LoRA heads merged into the
    /// weights it reads.
    pub(crate) fn bare(
        g: GraphBuilder,
        cfg: &LlamaConfig,
        weights: &'w Weights,
        heads: HeadsSource<'w>,
    ) -> crate::Result<Self> {
        let merged = merged_lora(heads, weights, false)?;
        Ok(OnnxBackend {
            g,
            weights,
            attention: AttentionImpl::Unfused,
            last_only: true,
            emitted: HashSet::new(),
            masks: Masks::default(),
            heads: HeadsSource::None,
            merged,
            head_dim: cfg.head_dim,
            error: None,
            fp16_guards: false,
            embeds_input: false,
            cross_kv: crate::cross::CrossKv::Inputs,
            cross_mask: None,
            keep_blocks: false,
            emitted_blocks: HashSet::new(),
        })
    }

    pub fn new(
        g: GraphBuilder,
        cfg: &LlamaConfig,
        weights: &'w Weights,
        heads: HeadsSource<'w>,
        opts: &crate::CompileOptions,
    ) -> crate::Result<Self> {
        let cross_kv = opts.cross_kv;
        let (attention, last_only) = (opts.attention, opts.last_only);
        let (fp16_guards, embeds_input) = (opts.is_fp16(), opts.embeds_input);
        let keep_blocks =
            opts.weights == mimic_models::contract::WeightFormat::Source && !fp16_guards;
        let merged = merged_lora(heads, weights, keep_blocks)?;
        let mut b = OnnxBackend {
            g,
            weights,
            attention,
            last_only,
            emitted: HashSet::new(),
            masks: Masks::default(),
            heads,
            merged,
            head_dim: cfg.head_dim,
            error: None,
            fp16_guards,
            embeds_input,
            cross_kv,
            cross_mask: None,
            keep_blocks,
            emitted_blocks: HashSet::new(),
        };
        b.declare_io(cfg);
        if let Some(x) = &cfg.cross_attention {
            crate::cross::declare_inputs(&mut b, x, cfg.num_heads, cfg.num_layers);
        }
        if let HeadsSource::Inputs(method) = heads {
            b.declare_heads_inputs(method, cfg);
        }
        Ok(b)
    }

    fn declare_io(&mut self, cfg: &LlamaConfig) {
        use Dim::*;
        let g = &mut self.g;
        g.inputs.push(match self.embeds_input {
            false => value_info(INPUT_IDS, DataType::Int64, &[Named("batch"), Named("seq")]),
            true => value_info(
                INPUTS_EMBEDS,
                DataType::Float,
                &[Named("batch"), Named("seq"), Fixed(cfg.hidden_size as i64)],
            ),
        });
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

    /// `[batch, seq]` of this pass's new tokens, as a graph value.
    pub(crate) fn token_shape(&mut self) -> String {
        match self.embeds_input {
            false => self.g.node("Shape", &[INPUT_IDS], vec![]),
            true => self.g.node(
                "Shape",
                &[INPUTS_EMBEDS],
                vec![attr_int("start", 0), attr_int("end", 2)],
            ),
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
    pub(crate) fn weight(&mut self, name: &str) -> String {
        let init = Initializer::Weight(name.to_string());
        if self.emitted.insert(init) {
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
        let init = Initializer::Transposed(names.iter().map(|n| n.to_string()).collect());
        let tname = init.name();
        if self.emitted.insert(init) {
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
        let init = Initializer::Biases(names.iter().map(|n| n.to_string()).collect());
        let name = init.name();
        if self.emitted.insert(init) {
            let mut data = Vec::new();
            for n in names {
                data.extend_from_slice(&self.weights.get(n).expect("weights checked").data);
            }
            self.put_weight(&name, &[data.len()], &data);
        }
        name
    }

    /// `[batch, seq, heads * dim] -> [batch, heads, seq, dim]` for values still packed.
    pub(crate) fn unpacked(&mut self, x: &Value) -> String {
        match x.packed {
            Some(Packed { heads, dim }) => {
                let shape = self.g.const_i64(&[0, 0, heads as i64, dim as i64]);
                let r = self.g.node("Reshape", &[&x.name, &shape], vec![]);
                self.g
                    .node("Transpose", &[&r], vec![attr_ints("perm", &[0, 2, 1, 3])])
            }
            None => x.name.clone(),
        }
    }
}

impl Backend for OnnxBackend<'_> {
    type Tensor = Value;

    fn input_ids(&mut self) -> Value {
        Value::new(INPUT_IDS)
    }

    fn input_embeds(&mut self, table: &str) -> Value {
        if !self.embeds_input {
            let ids = self.input_ids();
            return self.embed(&ids, table);
        }
        Value {
            residual: true,
            ..Value::new(INPUTS_EMBEDS)
        }
    }

    fn embed(&mut self, ids: &Value, table: &str) -> Value {
        let h = match crate::blocks::embed(self, &ids.name, table) {
            Some(h) => h,
            None => {
                let w = self.weight(table);
                self.g
                    .node("Gather", &[&w, &ids.name], vec![attr_int("axis", 0)])
            }
        };
        Value {
            residual: true,
            ..Value::new(h)
        }
    }

    fn linear(&mut self, x: &Value, module: &str, bias: bool) -> Value {
        let weight = format!("{module}.weight");
        let blocks = match x.adds_mu_of_layer {
            Some(_) => None,
            None => crate::blocks::matmul(self, &x.name, &[&weight], None),
        };
        let y = match blocks {
            // LoRA over blocks: its own low-rank product.
            Some(y) => match crate::blocks::lora_delta(self, &x.name, module) {
                Some(d) => self.g.node("Add", &[&y, &d], vec![]),
                None => y,
            },
            None => {
                let w = match x.adds_mu_of_layer {
                    Some(layer) => fused::o_proj_weight_adding_mu(self, layer, module),
                    None => self.weight_t(&weight),
                };
                self.g.node("MatMul", &[&x.name, &w], vec![])
            }
        };
        if bias {
            let b = self.weight(&format!("{module}.bias"));
            Value::new(self.g.node("Add", &[&y, &b], vec![]))
        } else {
            Value::new(y)
        }
    }

    fn linears(&mut self, x: &Value, modules: &[&str], bias: bool) -> Vec<Value> {
        if let Some(fills) = fused::slot_channels(self, modules) {
            return fused::linears_widened(self, x, modules, bias, fills);
        }
        let weights: Vec<String> = modules.iter().map(|m| format!("{m}.weight")).collect();
        let refs: Vec<&str> = weights.iter().map(String::as_str).collect();
        let blocks = crate::blocks::matmul(self, &x.name, &refs, None);
        let over_blocks = blocks.is_some();
        let mut y = match blocks {
            Some(y) => y,
            None => {
                let w = self.weights_t(&refs);
                self.g.node("MatMul", &[&x.name, &w], vec![])
            }
        };
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
        let outs = self.g.node_n(
            "Split",
            &[&y, &split],
            modules.len(),
            vec![attr_int("axis", -1)],
        );
        outs.into_iter()
            .zip(modules)
            .map(|(y, m)| match over_blocks {
                // LoRA over blocks: each adapted projection's own low-rank product.
                true => match crate::blocks::lora_delta(self, &x.name, m) {
                    Some(d) => Value::new(self.g.node("Add", &[&y, &d], vec![])),
                    None => Value::new(y),
                },
                false => Value::new(y),
            })
            .collect()
    }

    fn rms_norm(&mut self, x: &Value, weight: &str, eps: f64) -> Value {
        let w = self.weight(weight);
        // stash_type 1: the mean of squares is computed in float32 whatever the input type
        // (and the float16 pass keeps the operator in float32).
        Value::new(self.g.node(
            "RMSNormalization",
            &[&x.name, &w],
            vec![
                attr_int("axis", -1),
                attr_float("epsilon", eps as f32),
                attr_int("stash_type", 1),
            ],
        ))
    }

    fn silu(&mut self, x: &Value) -> Value {
        let s = self.g.node("Sigmoid", &[&x.name], vec![]);
        Value::new(self.g.node("Mul", &[&x.name, &s], vec![]))
    }

    fn mul(&mut self, a: &Value, b: &Value) -> Value {
        Value::new(self.g.node("Mul", &[&a.name, &b.name], vec![]))
    }

    fn add(&mut self, a: &Value, b: &Value) -> Value {
        let mark = self.g.mark();
        let y = self.g.node("Add", &[&a.name, &b.name], vec![]);
        let residual = a.residual || b.residual;
        if residual {
            // A layer's output joins the residual stream, in float32.
            self.g.keep_fp32_since(mark);
        }
        Value {
            residual,
            ..Value::new(y)
        }
    }

    fn split_heads(&mut self, x: &Value, heads: usize, dim: usize) -> Value {
        let dim = dim + x.extra_channels;
        Value {
            packed: Some(Packed { heads, dim }),
            ..x.clone()
        }
    }

    fn merge_heads(&mut self, x: &Value, heads: usize, dim: usize) -> Value {
        if x.packed.is_some() {
            return x.clone();
        }
        let t = self.g.node(
            "Transpose",
            &[&x.name],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let shape = self.g.const_i64(&[0, 0, (heads * dim) as i64]);
        Value::new(self.g.node("Reshape", &[&t, &shape], vec![]))
    }

    fn rotary_tables(&mut self, inv_freq: &[f32], scaling: f32) -> (Value, Value) {
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
        (Value::new(cos), Value::new(sin))
    }

    fn apply_rotary(&mut self, x: &Value, cos: &Value, sin: &Value) -> Value {
        // interleaved 0: the rotate-half convention of HF Llama.
        let mut attrs = vec![attr_int("interleaved", 0)];
        if let Some(p) = x.packed {
            attrs.push(attr_int("num_heads", p.heads as i64));
            if x.extra_channels > 0 {
                // The extra channels pass through unrotated.
                let rotated = p.dim - x.extra_channels;
                attrs.push(attr_int("rotary_embedding_dim", rotated as i64));
            }
        }
        let y = self
            .g
            .node("RotaryEmbedding", &[&x.name, &cos.name, &sin.name], attrs);
        Value {
            packed: x.packed,
            extra_channels: x.extra_channels,
            ..Value::new(y)
        }
    }

    fn attention(&mut self, q: &Value, k: &Value, v: &Value, spec: &AttentionSpec) -> Value {
        crate::attention::emit(self, q, k, v, spec)
    }

    fn gate(&mut self, x: &Value, alpha: &str) -> Value {
        crate::cross::gate(self, x, alpha)
    }

    fn head_rms_norm(&mut self, x: &Value, weight: &str, eps: f64) -> Value {
        crate::cross::head_rms_norm(self, x, weight, eps)
    }

    fn cross_keys_values<F>(&mut self, block: usize, project: F) -> (Value, Value)
    where
        F: FnOnce(&mut Self, &Value) -> (Value, Value),
    {
        crate::cross::keys_values(self, block, project)
    }

    fn cross_attention(
        &mut self,
        q: &Value,
        k: &Value,
        v: &Value,
        spec: &CrossAttentionSpec,
    ) -> Value {
        crate::cross::attention(self, q, k, v, spec.head_dim, spec.latents_per_image)
    }

    fn observe(&mut self, layer: usize, site: Site, x: Value) -> Value {
        if site == Site::MlpOutput && self.heads.method() == Some(Method::Live) {
            self.live(&x, layer)
        } else {
            x
        }
    }

    fn logits(&mut self, h: &Value, weight: &str) -> Value {
        let h = if self.last_only {
            let g = &mut self.g;
            let start = g.const_i64(&[-1]);
            let end = g.const_i64(&[i64::MAX]);
            let axes = g.const_i64(&[1]);
            g.node("Slice", &[&h.name, &start, &end, &axes], vec![])
        } else {
            h.name.clone()
        };
        if crate::blocks::matmul(self, &h, &[weight], Some(LOGITS)).is_none() {
            let w = self.weight_t(weight);
            // Logits leave the graph in float32 (in a float16 graph too, see
            // `float16::is_cache`).
            self.g.node_named("MatMul", &[&h, &w], &[LOGITS], vec![]);
        }
        Value::new(LOGITS)
    }
}
