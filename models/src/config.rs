//! The decoder configuration of the Llama family (Llama, Mistral, Qwen2), read from an HF
//! `config.json` or from GGUF metadata.
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// The architectures this decoder definition covers. They differ only in details the config
/// carries: Qwen2 has q/k/v biases, Mistral a sliding attention window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "llamaforcausallm" => Some(Self::Llama),
            "mistral" | "mistralforcausallm" => Some(Self::Mistral),
            "qwen2" | "qwen2forcausallm" => Some(Self::Qwen2),
            _ => None,
        }
    }
}

/// How rotary frequencies are derived from `rope_theta` (HF's `rope_scaling.rope_type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// `inv_freq[i] = theta^(-2i/d)`.
    Default,
    /// Positions divided by `factor` (equivalently, frequencies).
    Linear { factor: f64 },
    /// Llama 3.1: long wavelengths divided by `factor`, short kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj (Llama's `attention_bias` also covers it).
    pub o_bias: bool,
    /// Per-layer sliding attention window (query index minus key index must stay below it).
    pub sliding_window: Vec<Option<usize>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// Gated cross-attention blocks reading image latents (Idefics); `None` for a plain
    /// decoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_attention: Option<GatedCrossAttention>,
}

/// The shape of a gated cross-attention gate `alpha` (Idefics' `alpha_type`): the block adds
/// `tanh(alpha) * x` to the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlphaType {
    /// One number per gate (`[1]`).
    Float,
    /// One number per channel (`[1, 1, hidden]`).
    Vector,
}

impl AlphaType {
    /// The type an HF `alpha_type` names; `None` for any other (transformers refuses those).
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "float" => Some(Self::Float),
            "vector" => Some(Self::Vector),
            _ => None,
        }
    }
}

/// Idefics' gated cross-attention blocks: before decoder layer `l` with
/// `l % interval == 0`, block `l / interval` lets the text attend to the image latents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatedCrossAttention {
    /// `cross_layer_interval`.
    pub interval: usize,
    /// Width of the image latents the keys and values are projected from (the vision
    /// tower's `embed_dim`).
    pub kv_input_dim: usize,
    /// Latents per image (the perceiver's `n_latents`, or the tower's positions without it).
    pub latents_per_image: usize,
    /// RMS norms on each head's queries and keys (`qk_layer_norms`).
    pub qk_norms: bool,
    pub alpha: AlphaType,
    /// The `<image>` token: where each image's span starts in a prompt.
    pub image_token_id: u32,
}

impl GatedCrossAttention {
    /// The number of blocks of a decoder with `num_layers` layers.
    pub fn num_blocks(&self, num_layers: usize) -> usize {
        num_layers / self.interval
    }

    /// The block that runs before decoder layer `layer`, if one does.
    pub fn block_before(&self, layer: usize, num_layers: usize) -> Option<usize> {
        let block = layer / self.interval;
        (layer.is_multiple_of(self.interval) && block < self.num_blocks(num_layers))
            .then_some(block)
    }
}

/// The tensor names of gated cross-attention block `block`.
pub fn cross_block_name(block: usize, s: &str) -> String {
    format!("model.gated_cross_attn_layers.{block}.{s}")
}

/// More decoder layers than any published model has (the largest have a few hundred). The
/// per-layer settings are allocated from the layer count, so a larger count in a config is
/// refused as corrupt before anything is allocated.
pub const MAX_LAYERS: usize = 4096;

/// Refuses a layer count above [`MAX_LAYERS`] (read from `key` of the file at `path`).
fn check_layer_count(num_layers: usize, key: &str, path: &Path) -> Result<()> {
    if num_layers > MAX_LAYERS {
        return Err(ModelError::format(
            path,
            format!("{key} is {num_layers}, more than the {MAX_LAYERS} layers mimic accepts"),
        ));
    }
    Ok(())
}

fn get_usize(v: &Value, key: &str, path: &Path) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| ModelError::format(path, format!("missing or non-integer field `{key}`")))
}

fn opt_f64(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => vec![],
    }
}

fn parse_rope_scaling(obj: Option<&Value>, path: &Path) -> Result<RopeScaling> {
    let Some(obj) = obj.filter(|o| o.is_object()) else {
        return Ok(RopeScaling::Default);
    };
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let f = |k: &str| {
        opt_f64(obj, k)
            .ok_or_else(|| ModelError::format(path, format!("rope scaling `{kind}` lacks `{k}`")))
    };
    match kind {
        "default" => Ok(RopeScaling::Default),
        "linear" => Ok(RopeScaling::Linear {
            factor: f("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: f("factor")?,
            low_freq_factor: f("low_freq_factor")?,
            high_freq_factor: f("high_freq_factor")?,
            original_max_position_embeddings: f("original_max_position_embeddings")?,
        }),
        other => Err(ModelError::format(
            path,
            format!("unsupported rope scaling type `{other}` (supported: default, linear, llama3)"),
        )),
    }
}

impl LlamaConfig {
    /// Reads an HF `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(path, format!("invalid JSON: {e}")))?;
        Self::from_hf_value(&v, path)
    }

    pub fn from_hf_value(v: &Value, path: &Path) -> Result<Self> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| ModelError::format(path, "missing field `model_type`"))?;
        let architecture =
            Architecture::parse(model_type).ok_or_else(|| ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: model_type.to_string(),
            })?;
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(ModelError::format(
                    path,
                    format!("unsupported hidden_act `{act}` (only silu)"),
                ));
            }
        }
        let hidden_size = get_usize(v, "hidden_size", path)?;
        let num_heads = get_usize(v, "num_attention_heads", path)?;
        let num_kv_heads = v
            .get("num_key_value_heads")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(num_heads);
        let head_dim = v
            .get("head_dim")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(hidden_size / num_heads.max(1));
        let num_layers = get_usize(v, "num_hidden_layers", path)?;
        check_layer_count(num_layers, "num_hidden_layers", path)?;
        // transformers 5 nests rope settings under `rope_parameters`; 4.x keeps them flat.
        let rope_params = v.get("rope_parameters").filter(|p| p.is_object());
        let rope_theta = opt_f64(v, "rope_theta")
            .or_else(|| rope_params.and_then(|p| opt_f64(p, "rope_theta")))
            .unwrap_or(10000.0);
        let rope_scaling = match v.get("rope_scaling").filter(|o| o.is_object()) {
            Some(s) => parse_rope_scaling(Some(s), path)?,
            None => parse_rope_scaling(rope_params, path)?,
        };
        let window = match architecture {
            Architecture::Mistral => v.get("sliding_window").and_then(Value::as_u64),
            Architecture::Qwen2
                if v.get("use_sliding_window").and_then(Value::as_bool) == Some(true) =>
            {
                return Err(ModelError::format(
                    path,
                    "Qwen2 use_sliding_window=true is not supported yet",
                ));
            }
            _ => None,
        };
        let attention_bias = v
            .get("attention_bias")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if v.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            return Err(ModelError::format(path, "mlp_bias=true is not supported"));
        }
        let cfg = LlamaConfig {
            architecture,
            vocab_size: get_usize(v, "vocab_size", path)?,
            hidden_size,
            intermediate_size: get_usize(v, "intermediate_size", path)?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: opt_f64(v, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: v
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .unwrap_or(4096) as usize,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            qkv_bias: architecture == Architecture::Qwen2 || attention_bias,
            o_bias: attention_bias,
            sliding_window: vec![window.map(|w| w as usize); num_layers],
            bos_token_id: token_ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(v.get("eos_token_id")),
            cross_attention: None,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads the decoder configuration from GGUF metadata (`{arch}.block_count` and friends).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let path = g.path.as_path();
        let arch_name = g.get_str("general.architecture")?;
        let architecture =
            Architecture::parse(arch_name).ok_or_else(|| ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                arch: arch_name.to_string(),
            })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let u = |k: &str| g.get_u64(&key(k)).map(|x| x as usize);
        let hidden_size = u("embedding_length")?;
        let num_heads = u("attention.head_count")?;
        let num_kv_heads = u("attention.head_count_kv").unwrap_or(num_heads);
        let num_layers = u("block_count")?;
        check_layer_count(num_layers, &key("block_count"), path)?;
        let head_dim = u("rope.dimension_count").unwrap_or(hidden_size / num_heads.max(1));
        let vocab_size = match g.get("tokenizer.ggml.tokens").and_then(|t| t.as_array()) {
            Some(tokens) => tokens.len(),
            None => u("vocab_size")?,
        };
        let rope_scaling = match g.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            None | Some("none") => RopeScaling::Default,
            Some("linear") => RopeScaling::Linear {
                factor: g.get_f64(&key("rope.scaling.factor"))?,
            },
            Some(other) => {
                return Err(ModelError::format(
                    path,
                    format!("unsupported GGUF rope scaling `{other}`"),
                ))
            }
        };
        let window = u("attention.sliding_window").ok();
        let cfg = LlamaConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: g.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: g.get_f64(&key("rope.freq_base")).unwrap_or(10000.0),
            rope_scaling,
            max_position_embeddings: u("context_length").unwrap_or(4096),
            tie_word_embeddings: g.tensor("output.weight").is_none(),
            qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
            o_bias: g.tensor("blk.0.attn_output.bias").is_some(),
            sliding_window: vec![window; num_layers],
            bos_token_id: g
                .get_u64("tokenizer.ggml.bos_token_id")
                .ok()
                .map(|x| x as u32),
            eos_token_ids: g
                .get_u64("tokenizer.ggml.eos_token_id")
                .ok()
                .map(|x| vec![x as u32])
                .unwrap_or_default(),
            cross_attention: None,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The HF `config.json` object of this configuration (what [`LlamaConfig::from_hf_value`]
    /// reads back to an equal configuration), for writing a model folder.
    pub fn to_hf_value(&self) -> Value {
        let (model_type, class) = match self.architecture {
            Architecture::Llama => ("llama", "LlamaForCausalLM"),
            Architecture::Mistral => ("mistral", "MistralForCausalLM"),
            Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        };
        let rope = match self.rope_scaling {
            RopeScaling::Default => serde_json::json!({"rope_type": "default"}),
            RopeScaling::Linear { factor } => {
                serde_json::json!({"rope_type": "linear", "factor": factor})
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
        };
        let mut rope_parameters = rope.clone();
        rope_parameters["rope_theta"] = serde_json::json!(self.rope_theta);
        let mut v = serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope_parameters,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.o_bias,
            "mlp_bias": false,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": match self.eos_token_ids.as_slice() {
                [one] => serde_json::json!(one),
                many => serde_json::json!(many),
            },
        });
        if self.rope_scaling != RopeScaling::Default {
            v["rope_scaling"] = rope;
        }
        if let Some(Some(w)) = self.sliding_window.first() {
            v["sliding_window"] = serde_json::json!(w);
        }
        v
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(ModelError::format(path, msg));
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_layers == 0 {
            return bad("head and layer counts must be positive".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim
            ));
        }
        Ok(())
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Rotary inverse frequencies, `d/2` of them, after the configured scaling.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64))
            .collect();
        let scaled: Vec<f64> = match &self.rope_scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_ctx,
            } => {
                let low_freq_wavelen = old_ctx / low_freq_factor;
                let high_freq_wavelen = old_ctx / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            let smooth = (old_ctx / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }

    /// Every tensor the decoder reads, with its shape, in HF names and layout.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let (qd, kvd) = (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        );
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..self.num_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            out.push((p("input_layernorm.weight"), vec![h]));
            out.push((p("self_attn.q_proj.weight"), vec![qd, h]));
            out.push((p("self_attn.k_proj.weight"), vec![kvd, h]));
            out.push((p("self_attn.v_proj.weight"), vec![kvd, h]));
            if self.qkv_bias {
                out.push((p("self_attn.q_proj.bias"), vec![qd]));
                out.push((p("self_attn.k_proj.bias"), vec![kvd]));
                out.push((p("self_attn.v_proj.bias"), vec![kvd]));
            }
            out.push((p("self_attn.o_proj.weight"), vec![h, qd]));
            if self.o_bias {
                out.push((p("self_attn.o_proj.bias"), vec![h]));
            }
            out.push((p("post_attention_layernorm.weight"), vec![h]));
            out.push((p("mlp.gate_proj.weight"), vec![i, h]));
            out.push((p("mlp.up_proj.weight"), vec![i, h]));
            out.push((p("mlp.down_proj.weight"), vec![h, i]));
        }
        if let Some(x) = &self.cross_attention {
            let alpha = match x.alpha {
                AlphaType::Float => vec![1],
                AlphaType::Vector => vec![1, 1, h],
            };
            let inner = self.num_heads * self.head_dim;
            for j in 0..x.num_blocks(self.num_layers) {
                let p = |s: &str| cross_block_name(j, s);
                out.push((p("alpha_cross_attn"), alpha.clone()));
                out.push((p("alpha_dense"), alpha.clone()));
                out.push((p("input_layernorm.weight"), vec![h]));
                out.push((p("cross_attn.q_proj.weight"), vec![inner, h]));
                out.push((p("cross_attn.k_proj.weight"), vec![inner, x.kv_input_dim]));
                out.push((p("cross_attn.v_proj.weight"), vec![inner, x.kv_input_dim]));
                out.push((p("cross_attn.o_proj.weight"), vec![h, inner]));
                if x.qk_norms {
                    out.push((p("cross_attn.q_layer_norm.weight"), vec![self.head_dim]));
                    out.push((p("cross_attn.k_layer_norm.weight"), vec![self.head_dim]));
                }
                out.push((p("post_attention_layernorm.weight"), vec![h]));
                out.push((p("mlp.gate_proj.weight"), vec![i, h]));
                out.push((p("mlp.up_proj.weight"), vec![i, h]));
                out.push((p("mlp.down_proj.weight"), vec![h, i]));
            }
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        out
    }

    /// The name of the output projection's weight (the embedding table when tied).
    pub fn lm_head_name(&self) -> &'static str {
        if self.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        }
    }
}
