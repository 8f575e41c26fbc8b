//! The SigLIP vision transformer (SigLIP, and the vision towers of Idefics2, Idefics3 /
//! SmolVLM and LLaVA-interleave), written once over [`VisionBackend`].
//!
//! ```text
//! h = conv_patch(pixels) + position_embedding[position_ids]        hidden_states[0]
//! for each layer l:
//!     x = layer_norm1(h);  q, k, v = x Wq + bq, x Wk + bk, x Wv + bv
//!     h = h + attention(q, k, v) Wo + bo        (bidirectional, scale head_dim^-0.5)
//!     x = layer_norm2(h);  h = h + gelu_tanh(x W1 + b1) W2 + b2   hidden_states[l + 1]
//! last_hidden_state = post_layernorm(h)
//! ```
//!
//! Idefics' CLIP tower differs in its embeddings ([`TowerLayout::Clip`]): a class token before
//! the patches, a bias-free patch convolution, `pre_layrnorm` before the first layer, and no
//! `post_layernorm` on the output (transformers applies it to the pooled class token only).
//!
//! Tensor names are transformers' under a prefix: `vision_model.` (`SiglipVisionModel` on
//! disk), `model.vision_model.` (Idefics2/3), `vision_tower.vision_model.` (LLaVA).
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::vision::backend::{Activation, VisionAttentionSpec, VisionBackend};
use crate::weights::Weights;

/// The two ViT layouts the towers here have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TowerLayout {
    /// SigLIP: patches alone, a biased patch convolution, `post_layernorm` on the output.
    #[default]
    Siglip,
    /// CLIP (`idefics_vision`): `[class; patches]`, a bias-free patch convolution,
    /// `pre_layrnorm` before the encoder, `num_patches + 1` positions.
    Clip,
}

/// A SigLIP-style vision config: a standalone `SiglipVisionModel` config, or the
/// `vision_config` of a vision-language model, with transformers' class defaults for keys
/// `save_pretrained` left out (they differ by `model_type`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SiglipVisionConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub activation: Activation,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub layout: TowerLayout,
}

impl SiglipVisionConfig {
    /// Reads `config.json`: its `vision_config` if it has one, else the whole file.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(path, format!("invalid JSON: {e}")))?;
        Self::from_hf_value(v.get("vision_config").unwrap_or(&v), path)
    }

    /// A vision config object (what `vision_config` holds).
    pub fn from_hf_value(v: &Value, path: &Path) -> Result<Self> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("siglip_vision_model");
        // transformers' class defaults: SiglipVisionConfig, Idefics2VisionConfig,
        // Idefics3VisionConfig (hidden, intermediate, layers, heads, patch).
        let defaults = match model_type {
            "siglip_vision_model" => (768, 3072, 12, 12, 16),
            "idefics2_vision" => (768, 3072, 12, 12, 32),
            "idefics3_vision" => (1152, 3072, 12, 16, 32),
            // IdeficsVisionConfig: CLIP ViT-H/14's layout, width under `embed_dim`.
            "idefics_vision" => (768, 5120, 32, 16, 14),
            other => {
                return Err(ModelError::format(
                    path,
                    format!(
                        "vision model_type `{other}` is not a SigLIP vision tower \
                         (siglip_vision_model, idefics2_vision, idefics3_vision, \
                         idefics_vision)"
                    ),
                ))
            }
        };
        let int = |key: &str, default: usize| -> Result<usize> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x.as_u64().map(|x| x as usize).ok_or_else(|| {
                    ModelError::format(path, format!("vision config `{key}` is not an integer"))
                }),
            }
        };
        let clip = model_type == "idefics_vision";
        let act_name = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or(if clip { "gelu" } else { "gelu_pytorch_tanh" });
        let activation = Activation::from_hf(act_name).ok_or_else(|| {
            ModelError::format(
                path,
                format!(
                    "vision `hidden_act` `{act_name}` is not supported (gelu_pytorch_tanh, gelu)"
                ),
            )
        })?;
        let cfg = SiglipVisionConfig {
            model_type: model_type.to_string(),
            hidden_size: match clip {
                true => int("embed_dim", int("hidden_size", defaults.0)?)?,
                false => int("hidden_size", defaults.0)?,
            },
            intermediate_size: int("intermediate_size", defaults.1)?,
            num_layers: int("num_hidden_layers", defaults.2)?,
            num_heads: int("num_attention_heads", defaults.3)?,
            num_channels: int("num_channels", 3)?,
            image_size: int("image_size", 224)?,
            patch_size: int("patch_size", defaults.4)?,
            activation,
            layer_norm_eps: v
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(if clip { 1e-5 } else { 1e-6 }),
            layout: match clip {
                true => TowerLayout::Clip,
                false => TowerLayout::Siglip,
            },
        };
        let bad = |msg: String| Err(ModelError::format(path, msg));
        if cfg.num_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_heads) {
            return bad(format!(
                "vision hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_heads
            ));
        }
        if cfg.patch_size == 0 || cfg.image_size < cfg.patch_size {
            return bad(format!(
                "vision image_size {} and patch_size {} give no patch",
                cfg.image_size, cfg.patch_size
            ));
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Patches per side of an `image_size` image, and so of the position-embedding grid.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches of an `image_size` image.
    pub fn num_patches(&self) -> usize {
        self.patches_per_side() * self.patches_per_side()
    }

    /// Rows of the position-embedding table, and tokens the tower outputs per image: the
    /// patches, and CLIP's class token.
    pub fn num_positions(&self) -> usize {
        match self.layout {
            TowerLayout::Siglip => self.num_patches(),
            TowerLayout::Clip => self.num_patches() + 1,
        }
    }

    /// Every tensor the tower reads, with its shape, under `prefix`.
    pub fn expected_tensors(&self, prefix: &str) -> Vec<(String, Vec<usize>)> {
        let (h, i, p) = (self.hidden_size, self.intermediate_size, self.patch_size);
        let mut v = vec![
            (
                format!("{prefix}embeddings.patch_embedding.weight"),
                vec![h, self.num_channels, p, p],
            ),
            (
                format!("{prefix}embeddings.position_embedding.weight"),
                vec![self.num_positions(), h],
            ),
        ];
        match self.layout {
            TowerLayout::Siglip => {
                v.push((format!("{prefix}embeddings.patch_embedding.bias"), vec![h]));
            }
            TowerLayout::Clip => {
                v.push((format!("{prefix}embeddings.class_embedding"), vec![h]));
                v.push((format!("{prefix}pre_layrnorm.weight"), vec![h]));
                v.push((format!("{prefix}pre_layrnorm.bias"), vec![h]));
            }
        }
        for l in 0..self.num_layers {
            let n = |s: &str| format!("{prefix}encoder.layers.{l}.{s}");
            for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                v.push((n(&format!("self_attn.{m}.weight")), vec![h, h]));
                v.push((n(&format!("self_attn.{m}.bias")), vec![h]));
            }
            for m in ["layer_norm1", "layer_norm2"] {
                v.push((n(&format!("{m}.weight")), vec![h]));
                v.push((n(&format!("{m}.bias")), vec![h]));
            }
            v.push((n("mlp.fc1.weight"), vec![i, h]));
            v.push((n("mlp.fc1.bias"), vec![i]));
            v.push((n("mlp.fc2.weight"), vec![h, i]));
            v.push((n("mlp.fc2.bias"), vec![h]));
        }
        v.push((format!("{prefix}post_layernorm.weight"), vec![h]));
        v.push((format!("{prefix}post_layernorm.bias"), vec![h]));
        v
    }
}

/// Where the tower's tensors live in the checkpoints this project reads: a standalone
/// `SiglipVisionModel`, Idefics2/3, LLaVA on the hub (`vision_tower.vision_model.`), LLaVA
/// as transformers 5.x saves it (`vision_tower.`) and names it in memory.
pub const KNOWN_PREFIXES: [&str; 7] = [
    "vision_model.",
    "model.vision_model.",
    "vision_tower.vision_model.",
    "model.vision_tower.vision_model.",
    "vision_tower.",
    "model.vision_tower.",
    "",
];

/// A loaded SigLIP vision tower: config, the prefix its tensors carry, and the weights.
pub struct SiglipVision {
    pub config: SiglipVisionConfig,
    pub prefix: String,
    pub weights: Weights,
    pub source: PathBuf,
}

impl SiglipVision {
    /// Opens an HF folder (`config.json` and safetensors) holding a SigLIP vision tower, alone
    /// or inside a vision-language model, and checks the tower's tensors and shapes.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = SiglipVisionConfig::from_hf_json(&dir.join("config.json"))?;
        let weights = Weights::from_hf_dir(dir)?;
        let prefix = KNOWN_PREFIXES
            .iter()
            .find(|p| {
                weights
                    .tensors
                    .contains_key(&format!("{p}embeddings.patch_embedding.weight"))
            })
            .ok_or_else(|| {
                ModelError::format(
                    dir,
                    "no vision tower: no `*embeddings.patch_embedding.weight` under a known \
                     prefix (vision_model., model.vision_model., vision_tower.vision_model.)",
                )
            })?
            .to_string();
        weights.check_shapes(config.expected_tensors(&prefix))?;
        Ok(SiglipVision {
            config,
            prefix,
            weights,
            source: dir.to_path_buf(),
        })
    }
}

/// Which hidden state the tower returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Features {
    /// After every layer and `post_layernorm` (`last_hidden_state`; Idefics2/3).
    LastHiddenState,
    /// `hidden_states[k]`: 0 the embeddings, `k` the output of layer `k - 1`, without
    /// `post_layernorm` (LLaVA's `vision_feature_layer`; -1 is `num_layers`). Layers after
    /// it do not run.
    HiddenState(usize),
}

/// Runs the tower over the backend's pixel values: `[n_images, n_patches, hidden]`.
pub fn forward<B: VisionBackend>(
    cfg: &SiglipVisionConfig,
    prefix: &str,
    features: Features,
    b: &mut B,
) -> B::Tensor {
    let pixels = b.pixel_values();
    let clip = cfg.layout == TowerLayout::Clip;
    let patches = b.patch_embed(
        &pixels,
        &format!("{prefix}embeddings.patch_embedding"),
        cfg.patch_size,
        !clip,
    );
    let tokens = match clip {
        true => {
            let class = b.broadcast_param(&format!("{prefix}embeddings.class_embedding"));
            b.concat_seq(&class, &patches)
        }
        false => patches,
    };
    let ids = b.patch_position_ids();
    let pos = b.embed(
        &ids,
        &format!("{prefix}embeddings.position_embedding.weight"),
    );
    let h = b.add(&tokens, &pos);
    let h = match clip {
        true => b.layer_norm(&h, &format!("{prefix}pre_layrnorm"), cfg.layer_norm_eps),
        false => h,
    };
    let mut h = b.observe(0, h);
    let layers = match features {
        Features::LastHiddenState => cfg.num_layers,
        Features::HiddenState(k) => k.min(cfg.num_layers),
    };
    for layer in 0..layers {
        h = encoder_layer(cfg, prefix, b, layer, h);
    }
    match features {
        Features::LastHiddenState if !clip => {
            b.layer_norm(&h, &format!("{prefix}post_layernorm"), cfg.layer_norm_eps)
        }
        Features::LastHiddenState => h,
        Features::HiddenState(_) => h,
    }
}

fn encoder_layer<B: VisionBackend>(
    cfg: &SiglipVisionConfig,
    prefix: &str,
    b: &mut B,
    layer: usize,
    h: B::Tensor,
) -> B::Tensor {
    let p = |s: &str| format!("{prefix}encoder.layers.{layer}.{s}");
    let (nh, d, eps) = (cfg.num_heads, cfg.head_dim(), cfg.layer_norm_eps);

    let x = b.layer_norm(&h, &p("layer_norm1"), eps);
    let names = [
        p("self_attn.q_proj"),
        p("self_attn.k_proj"),
        p("self_attn.v_proj"),
    ];
    let [q, k, v]: [B::Tensor; 3] = b
        .linears(&x, &[&names[0], &names[1], &names[2]], true)
        .try_into()
        .unwrap_or_else(|_| unreachable!("three projections in, three out"));
    let q = b.split_heads(&q, nh, d);
    let k = b.split_heads(&k, nh, d);
    let v = b.split_heads(&v, nh, d);
    let spec = VisionAttentionSpec {
        layer,
        num_heads: nh,
        num_kv_heads: nh,
        head_dim: d,
        extra_keys: 0,
    };
    let a = b.attention(&q, &k, &v, &spec);
    let a = b.merge_heads(&a, nh, d);
    let a = b.linear(&a, &p("self_attn.out_proj"), true);
    let h = b.add(&h, &a);

    let x = b.layer_norm(&h, &p("layer_norm2"), eps);
    let m = b.linear(&x, &p("mlp.fc1"), true);
    let m = b.activation(&m, cfg.activation);
    let m = b.linear(&m, &p("mlp.fc2"), true);
    let h = b.add(&h, &m);
    b.observe(layer + 1, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SiglipVisionConfig> {
        let v: Value = serde_json::from_str(json).unwrap();
        SiglipVisionConfig::from_hf_value(v.get("vision_config").unwrap_or(&v), Path::new("c"))
    }

    #[test]
    fn defaults_follow_the_model_type() {
        let s = parse(r#"{"model_type": "siglip_vision_model"}"#).unwrap();
        assert_eq!((s.hidden_size, s.patch_size, s.num_heads), (768, 16, 12));
        assert_eq!(s.activation, Activation::GeluTanh);
        let i2 = parse(r#"{"vision_config": {"model_type": "idefics2_vision"}}"#).unwrap();
        assert_eq!((i2.hidden_size, i2.patch_size), (768, 32));
        let i3 = parse(r#"{"vision_config": {"model_type": "idefics3_vision"}}"#).unwrap();
        assert_eq!(
            (i3.hidden_size, i3.num_heads, i3.patch_size),
            (1152, 16, 32)
        );
    }

    #[test]
    fn llava_interleave_vision_config() {
        let c = parse(
            r#"{"vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152,
                "image_size": 384, "intermediate_size": 4304, "num_attention_heads": 16,
                "num_hidden_layers": 26, "patch_size": 14, "vision_use_head": false}}"#,
        )
        .unwrap();
        assert_eq!(c.patches_per_side(), 27);
        assert_eq!(c.num_positions(), 729);
        assert_eq!(c.head_dim(), 72);
        // 3 embedding tensors, 16 per layer, 2 for post_layernorm.
        assert_eq!(c.expected_tensors("v.").len(), 3 + 16 * 26 + 2);
    }

    #[test]
    fn unsupported_configs_are_errors() {
        assert!(parse(r#"{"model_type": "clip_vision_model"}"#).is_err());
        let clip = parse(r#"{"model_type": "idefics_vision", "embed_dim": 40, "num_attention_heads": 4, "image_size": 32, "patch_size": 4}"#).unwrap();
        assert_eq!(
            (clip.hidden_size, clip.layout, clip.activation),
            (40, TowerLayout::Clip, Activation::Gelu)
        );
        // 8 x 8 patches and the class token.
        assert_eq!(clip.num_positions(), 65);
        assert!(parse(r#"{"hidden_act": "quick_gelu"}"#).is_err());
        assert!(parse(r#"{"hidden_size": 30, "num_attention_heads": 4}"#).is_err());
    }
}
