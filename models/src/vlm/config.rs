//! The configuration of a vision-language model: its language model (a [`LlamaConfig`]), its
//! SigLIP vision tower, and the connector between them, read from an HF `config.json` with
//! transformers' class defaults for the keys `save_pretrained` leaves out.
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{AlphaType, GatedCrossAttention, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::vision::backend::Activation;
use crate::vision::siglip::{Features, SiglipVisionConfig};

/// The vision-language architectures mimic runs (transformers class names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VlmArchitecture {
    /// `Idefics2ForConditionalGeneration`: SigLIP, SwiGLU projection and a perceiver
    /// resampler, Mistral.
    Idefics2,
    /// `Idefics3ForConditionalGeneration` (SmolVLM): SigLIP, pixel shuffle and a projection,
    /// Llama.
    Idefics3,
    /// `LlavaForConditionalGeneration` with a SigLIP tower (llava-interleave): a two-layer
    /// projector, Qwen2.
    Llava,
    /// `IdeficsForVisionText2Text` (Idefics v1): a CLIP tower, a perceiver resampler, and a
    /// Llama decoder whose gated cross-attention blocks read the image latents (the prompt's
    /// `<image>` token marks where an image is; its latents replace no embedding).
    Idefics,
}

impl VlmArchitecture {
    /// The architecture a config's `model_type` names, if it is one of these.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "idefics2" => Some(Self::Idefics2),
            "idefics3" | "smolvlm" => Some(Self::Idefics3),
            "llava" => Some(Self::Llava),
            "idefics" => Some(Self::Idefics),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Idefics2 => "idefics2",
            Self::Idefics3 => "idefics3",
            Self::Llava => "llava",
            Self::Idefics => "idefics",
        }
    }
}

/// Idefics2's perceiver resampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerceiverConfig {
    /// The text model's width (transformers overwrites the perceiver's with it).
    pub hidden_size: usize,
    pub n_latents: usize,
    pub depth: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub n_kv_heads: usize,
    pub rms_norm_eps: f64,
    pub activation: Activation,
}

impl PerceiverConfig {
    /// The perceiver MLP's width: four times the hidden size (not a config key).
    pub fn intermediate_size(&self) -> usize {
        4 * self.hidden_size
    }
}

/// Idefics' perceiver resampler (`IdeficsPerceiverResampler`): LayerNorms, bias-free
/// projections, a ReLU MLP four times the vision width, all at the vision width.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdeficsPerceiverConfig {
    pub n_latents: usize,
    pub depth: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    /// LayerNorms on each head's queries and keys (`qk_layer_norms_perceiver`).
    pub qk_layer_norms: bool,
}

/// Which of LLaVA's tower tokens reach the projector (`vision_feature_select_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeatureSelect {
    /// All of them (`full`; llava-interleave's SigLIP has no CLS token).
    Full,
    /// All but the first (`default`: a CLIP tower's CLS token).
    Default,
}

/// What turns the tower's output into text-width image tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Connector {
    /// `down(act(gate(x)) * up(x))` to the text width, then the perceiver: `n_latents` tokens
    /// per image.
    Idefics2 {
        projection_activation: Activation,
        projection_intermediate: usize,
        perceiver: PerceiverConfig,
    },
    /// Pixel shuffle by `scale_factor` (each `s x s` block of patches becomes one token of
    /// `s^2` times the width), then a bias-free projection.
    Idefics3 { scale_factor: usize },
    /// `linear_2(act(linear_1(hidden_states[feature_layer])))`.
    Llava {
        activation: Activation,
        /// Index into transformers' `hidden_states` (0 the embeddings; negative from the end).
        feature_layer: i64,
        select: FeatureSelect,
        bias: bool,
    },
    /// Idefics: the perceiver resampler (`use_resampler`), or the tower's output as it is;
    /// its output stays at the vision width, for the decoder's cross-attention.
    Idefics {
        perceiver: Option<IdeficsPerceiverConfig>,
    },
}

/// A vision-language model's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlmConfig {
    pub architecture: VlmArchitecture,
    pub text: LlamaConfig,
    pub vision: SiglipVisionConfig,
    pub connector: Connector,
    /// The `<image>` token whose embeddings the image features replace.
    pub image_token_id: u32,
}

impl VlmConfig {
    /// Reads an HF `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(path, format!("invalid JSON: {e}")))?;
        Self::from_hf_value(&v, path)
    }

    /// Whether a parsed `config.json` describes a vision-language model (it has a
    /// `vision_config` and a `model_type` of one of [`VlmArchitecture`]).
    pub fn is_vlm(v: &Value) -> bool {
        v.get("vision_config").is_some()
            && v.get("model_type")
                .and_then(Value::as_str)
                .and_then(VlmArchitecture::from_model_type)
                .is_some()
    }

    pub fn from_hf_value(v: &Value, path: &Path) -> Result<Self> {
        let bad = |msg: String| ModelError::format(path, msg);
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing field `model_type`".into()))?;
        let architecture = VlmArchitecture::from_model_type(model_type).ok_or_else(|| {
            bad(format!(
                "model_type `{model_type}` is not a supported vision-language model \
                 (idefics, idefics2, idefics3, llava)"
            ))
        })?;
        if architecture == VlmArchitecture::Idefics {
            return idefics_config(v, path);
        }
        let vision_value = v.get("vision_config").cloned().unwrap_or(Value::Null);
        let mut vision_value = match vision_value {
            Value::Object(o) => Value::Object(o),
            Value::Null => Value::Object(Default::default()),
            _ => return Err(bad("`vision_config` is not an object".into())),
        };
        // transformers forces the vision model type of Idefics2/3 whatever the file says.
        let forced = match architecture {
            VlmArchitecture::Idefics2 => Some("idefics2_vision"),
            VlmArchitecture::Idefics3 => Some("idefics3_vision"),
            VlmArchitecture::Llava | VlmArchitecture::Idefics => None,
        };
        if let (Some(t), Some(o)) = (forced, vision_value.as_object_mut()) {
            o.insert("model_type".into(), Value::String(t.into()));
        }
        if architecture == VlmArchitecture::Llava {
            let vt = vision_value.get("model_type").and_then(Value::as_str);
            if vt != Some("siglip_vision_model") {
                return Err(bad(format!(
                    "llava vision_config model_type {vt:?} is not supported (only \
                     siglip_vision_model, as llava-interleave uses)"
                )));
            }
            if vision_value.get("vision_use_head") == Some(&Value::Bool(true)) {
                tracing::debug!("llava vision_use_head is true; the pooling head is unused");
            }
        }
        let vision = SiglipVisionConfig::from_hf_value(&vision_value, path)?;

        let text = text_config(v, architecture, path)?;
        let image_token_id = v
            .get("image_token_id")
            .or_else(|| v.get("image_token_index"))
            .and_then(Value::as_u64)
            .unwrap_or(match architecture {
                VlmArchitecture::Idefics2 => 32_001,
                VlmArchitecture::Idefics3 => 128_257,
                VlmArchitecture::Llava | VlmArchitecture::Idefics => 32_000,
            }) as u32;
        if image_token_id as usize >= text.vocab_size {
            return Err(bad(format!(
                "image_token_id {image_token_id} is outside the text vocabulary ({})",
                text.vocab_size
            )));
        }
        let connector = match architecture {
            VlmArchitecture::Idefics2 => idefics2_connector(v, &text, path)?,
            VlmArchitecture::Idefics3 => {
                let s = v.get("scale_factor").and_then(Value::as_u64).unwrap_or(2) as usize;
                let side = vision.patches_per_side();
                if s == 0 || !side.is_multiple_of(s) {
                    return Err(bad(format!(
                        "scale_factor {s} does not divide the {side} patches a side"
                    )));
                }
                Connector::Idefics3 { scale_factor: s }
            }
            VlmArchitecture::Llava => llava_connector(v, &vision, path)?,
            VlmArchitecture::Idefics => unreachable!("read by idefics_config"),
        };
        Ok(VlmConfig {
            architecture,
            text,
            vision,
            connector,
            image_token_id,
        })
    }

    /// Image tokens each image becomes in the prompt (for an image of the tower's size).
    pub fn tokens_per_image(&self) -> usize {
        let patches = self.vision.num_positions();
        match &self.connector {
            Connector::Idefics2 { perceiver, .. } => perceiver.n_latents,
            Connector::Idefics3 { scale_factor } => patches / (scale_factor * scale_factor),
            Connector::Llava { select, .. } => match select {
                FeatureSelect::Full => patches,
                FeatureSelect::Default => patches - 1,
            },
            Connector::Idefics { perceiver } => perceiver.as_ref().map_or(patches, |p| p.n_latents),
        }
    }

    /// The width of the image encoder's output rows: the text width where they replace
    /// `<image>` embeddings, the vision width where a cross-attention decoder reads them.
    pub fn image_feature_width(&self) -> usize {
        match self.connector {
            Connector::Idefics { .. } => self.vision.hidden_size,
            _ => self.text.hidden_size,
        }
    }

    /// The tower output the connector takes.
    pub fn features(&self) -> Features {
        match &self.connector {
            Connector::Llava { feature_layer, .. } => {
                let l = self.vision.num_layers as i64;
                // Checked at load: -L-1 <= feature_layer <= L.
                let k = if *feature_layer < 0 {
                    l + 1 + feature_layer
                } else {
                    *feature_layer
                };
                Features::HiddenState(k as usize)
            }
            // The CLIP tower's last hidden state has no post_layernorm.
            _ => Features::LastHiddenState,
        }
    }

    /// Every connector tensor with its shape, under `prefix`.
    pub fn connector_tensors(&self, prefix: &str) -> Vec<(String, Vec<usize>)> {
        let (vh, th) = (self.vision.hidden_size, self.text.hidden_size);
        match &self.connector {
            Connector::Idefics2 {
                projection_intermediate: i,
                perceiver: p,
                ..
            } => {
                let mut v = vec![
                    (
                        format!("{prefix}modality_projection.gate_proj.weight"),
                        vec![*i, vh],
                    ),
                    (
                        format!("{prefix}modality_projection.up_proj.weight"),
                        vec![*i, vh],
                    ),
                    (
                        format!("{prefix}modality_projection.down_proj.weight"),
                        vec![th, *i],
                    ),
                    (
                        format!("{prefix}perceiver_resampler.latents"),
                        vec![p.n_latents, th],
                    ),
                    (format!("{prefix}perceiver_resampler.norm.weight"), vec![th]),
                ];
                let (q, kv, pi) = (
                    p.n_heads * p.head_dim,
                    p.n_kv_heads * p.head_dim,
                    p.intermediate_size(),
                );
                for l in 0..p.depth {
                    let n = |s: &str| format!("{prefix}perceiver_resampler.layers.{l}.{s}");
                    for norm in [
                        "input_latents_norm",
                        "input_context_norm",
                        "post_attention_layernorm",
                    ] {
                        v.push((n(&format!("{norm}.weight")), vec![th]));
                    }
                    v.push((n("self_attn.q_proj.weight"), vec![q, th]));
                    v.push((n("self_attn.k_proj.weight"), vec![kv, th]));
                    v.push((n("self_attn.v_proj.weight"), vec![kv, th]));
                    v.push((n("self_attn.o_proj.weight"), vec![th, q]));
                    v.push((n("mlp.gate_proj.weight"), vec![pi, th]));
                    v.push((n("mlp.up_proj.weight"), vec![pi, th]));
                    v.push((n("mlp.down_proj.weight"), vec![th, pi]));
                }
                v
            }
            Connector::Idefics3 { scale_factor } => vec![(
                format!("{prefix}modality_projection.proj.weight"),
                vec![th, vh * scale_factor * scale_factor],
            )],
            Connector::Idefics { perceiver: None } => vec![],
            Connector::Idefics { perceiver: Some(p) } => {
                let inner = p.n_heads * p.head_dim;
                let ln = |v: &mut Vec<(String, Vec<usize>)>, name: String, width: usize| {
                    v.push((format!("{name}.weight"), vec![width]));
                    v.push((format!("{name}.bias"), vec![width]));
                };
                let mut v = vec![(format!("{prefix}latents"), vec![p.n_latents, vh])];
                for i in 0..p.depth {
                    let n = |s: &str| format!("{prefix}blocks.{i}.{s}");
                    ln(&mut v, n("0.context_layer_norm"), vh);
                    ln(&mut v, n("0.latents_layer_norm"), vh);
                    if p.qk_layer_norms {
                        ln(&mut v, n("0.q_layer_norm"), p.head_dim);
                        ln(&mut v, n("0.k_layer_norm"), p.head_dim);
                    }
                    for m in ["q_proj", "k_proj", "v_proj"] {
                        v.push((n(&format!("0.{m}.weight")), vec![inner, vh]));
                    }
                    v.push((n("0.output_proj.weight"), vec![vh, inner]));
                    ln(&mut v, n("1.ln"), vh);
                    v.push((n("1.fc.weight"), vec![4 * vh, vh]));
                    v.push((n("1.c_proj.weight"), vec![vh, 4 * vh]));
                }
                ln(&mut v, format!("{prefix}layer_norm"), vh);
                v
            }
            Connector::Llava { bias, .. } => {
                let mut v = vec![
                    (format!("{prefix}linear_1.weight"), vec![th, vh]),
                    (format!("{prefix}linear_2.weight"), vec![th, th]),
                ];
                if *bias {
                    v.push((format!("{prefix}linear_1.bias"), vec![th]));
                    v.push((format!("{prefix}linear_2.bias"), vec![th]));
                }
                v
            }
        }
    }
}

/// The language model's config: `text_config` with the defaults each architecture gives it.
fn text_config(v: &Value, arch: VlmArchitecture, path: &Path) -> Result<LlamaConfig> {
    let mut t = match v.get("text_config") {
        Some(Value::Object(o)) => o.clone(),
        None | Some(Value::Null) => Default::default(),
        Some(_) => return Err(ModelError::format(path, "`text_config` is not an object")),
    };
    let (model_type, eps) = match arch {
        VlmArchitecture::Idefics2 => ("mistral", Some(1e-5)),
        VlmArchitecture::Idefics3 => ("llama", Some(1e-5)),
        VlmArchitecture::Llava | VlmArchitecture::Idefics => ("llama", None),
    };
    t.entry("model_type")
        .or_insert_with(|| Value::String(model_type.into()));
    if let Some(eps) = eps {
        t.entry("rms_norm_eps").or_insert_with(|| eps.into());
    }
    // The top level's tie_word_embeddings governs the whole model.
    if let Some(tie) = v.get("tie_word_embeddings") {
        t.insert("tie_word_embeddings".into(), tie.clone());
    }
    LlamaConfig::from_hf_value(&Value::Object(t), path).map_err(|e| match e {
        ModelError::Format { path, msg } => ModelError::Format {
            path,
            msg: format!("text_config: {msg}"),
        },
        ModelError::UnsupportedArchitecture { path, arch } => ModelError::Format {
            path,
            msg: format!(
                "text_config: unsupported architecture {arch:?} (supported: llama, mistral, qwen2)"
            ),
        },
        e => e,
    })
}

/// Idefics (v1): the text config is the top level (Llama-like, `additional_vocab_size` rows
/// after the vocabulary for `<fake_token_around_image>` and `<image>`), the vision config an
/// `IdeficsVisionConfig`, the perceiver's keys in `perceiver_config`, `use_resampler` at the
/// top level (what transformers reads).
fn idefics_config(v: &Value, path: &Path) -> Result<VlmConfig> {
    let bad = |msg: String| ModelError::format(path, msg);
    let mut vision_value = match v.get("vision_config") {
        Some(Value::Object(o)) => o.clone(),
        None | Some(Value::Null) => Default::default(),
        Some(_) => return Err(bad("`vision_config` is not an object".into())),
    };
    vision_value.insert("model_type".into(), Value::String("idefics_vision".into()));
    let vision = SiglipVisionConfig::from_hf_value(&Value::Object(vision_value), path)?;

    let int = |o: &Value, key: &str, default: usize| -> Result<usize> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("`{key}` is not an integer"))),
        }
    };
    let flag = |o: &Value, key: &str| o.get(key).and_then(Value::as_bool).unwrap_or(false);
    let Value::Object(top) = v else {
        return Err(bad("config.json is not an object".into()));
    };
    // IdeficsConfig's class defaults for the keys save_pretrained may leave out.
    let mut t = top.clone();
    t.insert("model_type".into(), Value::String("llama".into()));
    for (key, default) in [
        ("vocab_size", 32_000u64),
        ("hidden_size", 4096),
        ("intermediate_size", 11_008),
        ("num_hidden_layers", 32),
        ("num_attention_heads", 32),
        ("max_position_embeddings", 2048),
    ] {
        t.entry(key).or_insert_with(|| default.into());
    }
    t.entry("rms_norm_eps").or_insert_with(|| 1e-6.into());
    t.entry("bos_token_id").or_insert_with(|| 1.into());
    t.entry("eos_token_id").or_insert_with(|| 2.into());
    // Idefics' self-attention has as many key/value heads as query heads.
    t.remove("num_key_value_heads");
    let extra = int(v, "additional_vocab_size", 0)?;
    let vocab = int(v, "vocab_size", 32_000)?;
    t.insert("vocab_size".into(), (vocab + extra).into());
    let mut text = LlamaConfig::from_hf_value(&Value::Object(t), path)?;

    let alpha_name = v
        .get("alpha_type")
        .and_then(Value::as_str)
        .unwrap_or("float");
    let alpha = AlphaType::from_hf(alpha_name).ok_or_else(|| {
        bad(format!(
            "alpha_type `{alpha_name}` is not supported (float, vector; transformers knows no other)"
        ))
    })?;
    let interval = int(v, "cross_layer_interval", 1)?;
    if interval == 0 {
        return Err(bad("cross_layer_interval 0 is not a layer interval".into()));
    }
    let empty = Value::Object(Default::default());
    let p = v.get("perceiver_config").unwrap_or(&empty);
    let perceiver = match flag(v, "use_resampler") {
        false => None,
        true => Some(IdeficsPerceiverConfig {
            n_latents: int(p, "resampler_n_latents", 64)?,
            depth: int(p, "resampler_depth", 6)?,
            n_heads: int(p, "resampler_n_heads", 16)?,
            head_dim: int(p, "resampler_head_dim", 96)?,
            qk_layer_norms: flag(p, "qk_layer_norms_perceiver"),
        }),
    };
    if let Some(p) = &perceiver {
        if p.n_latents == 0 || p.n_heads == 0 || p.head_dim == 0 {
            return Err(bad(format!(
                "perceiver_config: {} latents of {} heads x {} is empty",
                p.n_latents, p.n_heads, p.head_dim
            )));
        }
    }
    let connector = Connector::Idefics { perceiver };
    let mut cfg = VlmConfig {
        architecture: VlmArchitecture::Idefics,
        text: text.clone(),
        vision,
        connector,
        // `<image>` is the second added token unless the tokenizer says otherwise
        // (VisionLanguageModel::open reads it there).
        image_token_id: (vocab + extra.min(2)).saturating_sub(1) as u32,
    };
    text.cross_attention = Some(GatedCrossAttention {
        interval,
        kv_input_dim: cfg.vision.hidden_size,
        latents_per_image: cfg.tokens_per_image(),
        qk_norms: flag(v, "qk_layer_norms"),
        alpha,
        image_token_id: cfg.image_token_id,
    });
    cfg.text = text;
    Ok(cfg)
}

fn idefics2_connector(v: &Value, text: &LlamaConfig, path: &Path) -> Result<Connector> {
    let empty = Value::Object(Default::default());
    let p = v.get("perceiver_config").unwrap_or(&empty);
    let int = |key: &str, default: usize| -> Result<usize> {
        match p.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_u64().map(|x| x as usize).ok_or_else(|| {
                ModelError::format(path, format!("perceiver_config `{key}` is not an integer"))
            }),
        }
    };
    let act_name = p
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    let activation = Activation::from_hf(act_name).ok_or_else(|| {
        ModelError::format(
            path,
            format!("perceiver_config `hidden_act` `{act_name}` is not supported"),
        )
    })?;
    // transformers: a perceiver hidden size other than the text's is overwritten by it,
    // and its rms_norm_eps with it.
    let own_hidden = int("hidden_size", 4096)?;
    let rms_norm_eps = if own_hidden == text.hidden_size {
        p.get("rms_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-6)
    } else {
        text.rms_norm_eps
    };
    let perceiver = PerceiverConfig {
        hidden_size: text.hidden_size,
        n_latents: int("resampler_n_latents", 64)?,
        depth: int("resampler_depth", 3)?,
        n_heads: int("resampler_n_heads", 16)?,
        head_dim: int("resampler_head_dim", 96)?,
        n_kv_heads: int("num_key_value_heads", 4)?,
        rms_norm_eps,
        activation,
    };
    if perceiver.n_kv_heads == 0 || !perceiver.n_heads.is_multiple_of(perceiver.n_kv_heads) {
        return Err(ModelError::format(
            path,
            format!(
                "perceiver resampler_n_heads {} is not a multiple of num_key_value_heads {}",
                perceiver.n_heads, perceiver.n_kv_heads
            ),
        ));
    }
    // The modality projection uses the text model's activation and width.
    let text_act = v
        .get("text_config")
        .and_then(|t| t.get("hidden_act"))
        .and_then(Value::as_str)
        .unwrap_or("silu");
    let projection_activation = Activation::from_hf(text_act).ok_or_else(|| {
        ModelError::format(
            path,
            format!("text_config `hidden_act` `{text_act}` is not supported"),
        )
    })?;
    Ok(Connector::Idefics2 {
        projection_activation,
        projection_intermediate: text.intermediate_size,
        perceiver,
    })
}

fn llava_connector(v: &Value, vision: &SiglipVisionConfig, path: &Path) -> Result<Connector> {
    let bad = |msg: String| Err(ModelError::format(path, msg));
    let act_name = v
        .get("projector_hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("gelu");
    let Some(activation) = Activation::from_hf(act_name) else {
        return bad(format!(
            "projector_hidden_act `{act_name}` is not supported"
        ));
    };
    let feature_layer = match v.get("vision_feature_layer") {
        None | Some(Value::Null) => -2,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(-2),
        Some(other) => {
            return bad(format!(
                "vision_feature_layer {other} is not supported (one layer index; lists of \
                 layers are not)"
            ))
        }
    };
    let l = vision.num_layers as i64;
    if feature_layer > l || feature_layer < -l - 1 {
        return bad(format!(
            "vision_feature_layer {feature_layer} is outside the tower's {l} layers"
        ));
    }
    let select = match v
        .get("vision_feature_select_strategy")
        .and_then(Value::as_str)
        .unwrap_or("default")
    {
        "full" => FeatureSelect::Full,
        "default" => FeatureSelect::Default,
        other => {
            return bad(format!(
                "vision_feature_select_strategy `{other}` is not supported (default, full)"
            ))
        }
    };
    let bias = v
        .get("multimodal_projector_bias")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    Ok(Connector::Llava {
        activation,
        feature_layer,
        select,
        bias,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#""text_config": {"model_type": "MT", "vocab_size": 100,
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}"#;

    fn parse(top: &str, text_type: &str) -> Result<VlmConfig> {
        let json = format!(
            "{{{top}, {}, \"vision_config\": {{\"hidden_size\": 32, \
             \"intermediate_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \
             \"image_size\": 32, \"patch_size\": 4, \"model_type\": \"siglip_vision_model\"}}}}",
            TEXT.replace("MT", text_type)
        );
        let v: Value = serde_json::from_str(&json).unwrap();
        VlmConfig::from_hf_value(&v, Path::new("config.json"))
    }

    #[test]
    fn idefics2_perceiver_takes_the_text_width() {
        let c = parse(
            r#""model_type": "idefics2", "image_token_id": 5,
               "perceiver_config": {"resampler_n_latents": 4, "resampler_depth": 2,
               "resampler_n_heads": 4, "resampler_head_dim": 8, "num_key_value_heads": 2}"#,
            "mistral",
        )
        .unwrap();
        assert_eq!(c.tokens_per_image(), 4);
        assert_eq!(c.vision.model_type, "idefics2_vision");
        let Connector::Idefics2 { perceiver, .. } = &c.connector else {
            panic!("{:?}", c.connector)
        };
        // 4096 (the default) differs from the text's 64: both width and eps come from text.
        assert_eq!(perceiver.hidden_size, 64);
        assert_eq!(perceiver.rms_norm_eps, c.text.rms_norm_eps);
        assert_eq!(c.connector_tensors("c.").len(), 5 + 2 * 10);
    }

    #[test]
    fn idefics3_shuffles_and_llava_selects() {
        let c = parse(r#""model_type": "idefics3", "image_token_id": 7"#, "llama").unwrap();
        // 8x8 patches, shuffled by 2: 16 tokens of 4 x 32 wide.
        assert_eq!(c.tokens_per_image(), 16);
        assert_eq!(c.connector_tensors("")[0].1, vec![64, 128]);
        let c = parse(
            r#""model_type": "llava", "image_token_index": 9, "vision_feature_layer": -1,
               "vision_feature_select_strategy": "full""#,
            "qwen2",
        )
        .unwrap();
        assert_eq!(c.tokens_per_image(), 64);
        assert_eq!(c.features(), Features::HiddenState(2));
        assert_eq!(c.image_token_id, 9);
    }

    #[test]
    fn unsupported_keys_are_errors_naming_them() {
        let e = parse(
            r#""model_type": "llava", "image_token_index": 9, "vision_feature_layer": [-2, -5]"#,
            "qwen2",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("vision_feature_layer") && e.contains("config.json"),
            "{e}"
        );
        let e = parse(
            r#""model_type": "llava", "image_token_index": 9,
               "vision_feature_select_strategy": "cls""#,
            "qwen2",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("vision_feature_select_strategy"), "{e}");
        let e = parse(
            r#""model_type": "idefics3", "image_token_id": 7, "scale_factor": 3"#,
            "llama",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("scale_factor 3"), "{e}");
        let e = parse(
            r#""model_type": "idefics2", "image_token_id": 500"#,
            "mistral",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("image_token_id 500"), "{e}");
        let e = parse(r#""model_type": "idefics2""#, "gemma")
            .unwrap_err()
            .to_string();
        assert!(e.contains("text_config"), "{e}");
    }
}
