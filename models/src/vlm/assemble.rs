//! A vision-language model put together from parts: a language model (the default SmolLM2,
//! or any Llama-family [`Model`]) and an image encoder (a SigLIP tower and Idefics3's pixel
//! shuffle and projection), written as an HF folder in transformers'
//! `Idefics3ForConditionalGeneration` layout (the architecture of SmolVLM).
//!
//! The language model gains three special tokens (`<fake_token_around_image>`, `<image>`,
//! `<global-img>`, the Idefics3 processor's), their embedding rows set to the mean of the
//! existing rows, so they stay unremarkable as outputs of the tied head. `mimic align` trains
//! the encoder; [`write_folder`] writes the result.
use std::path::Path;

use serde_json::{json, Value};

use crate::default_model::Model;
use crate::error::{ModelError, Result};
use crate::rng::SplitMix64;
use crate::vision::backend::Activation;
use crate::vision::siglip::SiglipVisionConfig;
use crate::vlm::VlmConfig;
use crate::weights::{HostTensor, Weights};

/// The Idefics3 processor's image tokens, in the order they are added to the vocabulary.
pub const IMAGE_WRAPPER: &str = "<fake_token_around_image>";
pub const IMAGE_TOKEN: &str = "<image>";
pub const GLOBAL_IMAGE: &str = "<global-img>";

/// Where the encoder's tensors live in the folder (transformers 5's names).
pub const TOWER_PREFIX: &str = "model.vision_model.";
pub const CONNECTOR_PREFIX: &str = "model.connector.";

/// The image encoder's shape: the SigLIP tower and the pixel shuffle's factor.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSpec {
    pub vision: SiglipVisionConfig,
    pub scale_factor: usize,
}

impl EncoderSpec {
    /// A small tower for 64x64 images (easy-VQA's): 8x8 patches of 8 pixels, 4 layers of width
    /// 128, and a pixel shuffle by 2, so each image is 16 tokens of the language model.
    pub fn small() -> Self {
        EncoderSpec {
            vision: SiglipVisionConfig {
                model_type: "idefics3_vision".into(),
                hidden_size: 128,
                intermediate_size: 512,
                num_layers: 4,
                num_heads: 4,
                num_channels: 3,
                image_size: 64,
                patch_size: 8,
                activation: Activation::GeluTanh,
                layer_norm_eps: 1e-6,
                layout: Default::default(),
            },
            scale_factor: 2,
        }
    }

    pub fn tokens_per_image(&self) -> usize {
        let side = self.vision.image_size / self.vision.patch_size;
        side * side / (self.scale_factor * self.scale_factor)
    }
}

/// `model` with the image tokens added after its vocabulary (tokenizer, config and embedding
/// rows; a separate head grows too), and the `<image>` id.
pub fn with_image_tokens(model: &Model) -> Result<(Model, u32)> {
    let tok = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| ModelError::format(&model.source, "the language model has no tokenizer"))?;
    let (tokenizer, ids) = tok.with_special_tokens(&[IMAGE_WRAPPER, IMAGE_TOKEN, GLOBAL_IMAGE]);
    let rows = ids.iter().map(|&i| i as usize + 1).max().unwrap_or(0);
    let added = rows.saturating_sub(model.config.vocab_size);
    let mut config = model.config.clone();
    config.vocab_size += added;
    let mut weights = model.weights.clone();
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        if let Some(t) = weights.tensors.get_mut(name) {
            *t = grow_rows(t, added);
        }
    }
    let grown = Model {
        config,
        weights,
        tokenizer: Some(tokenizer),
        source: model.source.clone(),
    };
    grown.weights.check_against(&grown.config)?;
    Ok((grown, ids[1]))
}

/// The folder's `config.json` for the language model `text` (already holding the image
/// tokens) and the encoder `spec`.
pub fn config_value(text: &Model, image_token_id: u32, spec: &EncoderSpec) -> Value {
    let v = &spec.vision;
    let pad = text.tokenizer.as_ref().and_then(|t| t.pad_id());
    let mut text_config = text.config.to_hf_value();
    text_config["pad_token_id"] = json!(pad);
    json!({
        "architectures": ["Idefics3ForConditionalGeneration"],
        "model_type": "idefics3",
        "image_token_id": image_token_id,
        "scale_factor": spec.scale_factor,
        "tie_word_embeddings": text.config.tie_word_embeddings,
        "pad_token_id": pad,
        "text_config": text_config,
        "vision_config": {
            "model_type": "idefics3_vision",
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_layers,
            "num_attention_heads": v.num_heads,
            "num_channels": v.num_channels,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": v.layer_norm_eps,
            "attention_dropout": 0.0,
        },
        "dtype": "float32",
    })
}

/// The folder's `preprocessor_config.json`: images resized to the tower's size (longest edge),
/// not split, scaled to `[-1, 1]`.
pub fn processor_value(spec: &EncoderSpec) -> Value {
    let size = spec.vision.image_size;
    json!({
        "image_processor_type": "Idefics3ImageProcessor",
        "do_convert_rgb": true,
        "do_resize": true,
        "size": {"longest_edge": size},
        "max_image_size": {"longest_edge": size},
        "resample": 1,
        "do_image_splitting": false,
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pad": true,
    })
}

/// The model's [`VlmConfig`], as a reader of the folder's `config.json` sees it.
pub fn vlm_config(text: &Model, image_token_id: u32, spec: &EncoderSpec) -> Result<VlmConfig> {
    VlmConfig::from_hf_value(
        &config_value(text, image_token_id, spec),
        Path::new("config.json"),
    )
}

/// Fresh encoder weights under the folder's names: linear and position tables normal with
/// standard deviation 0.02, the patch convolution LeCun-normal, layer norms the identity, and
/// the projection scaled so that its outputs start at the spread of the language model's
/// embedding rows (`embed_std`). Deterministic in `seed`.
pub fn init_encoder(config: &VlmConfig, embed_std: f64, seed: u64) -> Weights {
    let mut rng = SplitMix64::new(seed);
    let mut names = config.vision.expected_tensors(TOWER_PREFIX);
    names.extend(config.connector_tensors(CONNECTOR_PREFIX));
    let mut tensors = std::collections::BTreeMap::new();
    for (name, shape) in names {
        let n: usize = shape.iter().product();
        let fill = |std: f64, rng: &mut SplitMix64| -> Vec<f32> {
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        };
        let data = if name.ends_with(".bias") {
            vec![0.0; n]
        } else if name.contains("layer_norm") || name.contains("layernorm") {
            vec![1.0; n]
        } else if name.contains("patch_embedding") {
            let fan_in: usize = shape[1..].iter().product();
            fill(1.0 / (fan_in as f64).sqrt(), &mut rng)
        } else if name.starts_with(CONNECTOR_PREFIX) {
            fill(embed_std / (shape[1] as f64).sqrt(), &mut rng)
        } else {
            fill(0.02, &mut rng)
        };
        tensors.insert(name, HostTensor::new(shape, data));
    }
    Weights {
        tensors,
        source: "init".into(),
        blocks: Default::default(),
    }
}

/// The language model's tensors under the folder's names (`model.text_model.*`, `lm_head`).
/// The head is written even when tied, so a reader that does not tie finds the same values.
pub fn text_tensors(text: &Model) -> Result<Vec<(String, HostTensor)>> {
    let mut out = Vec::new();
    for (name, t) in &text.weights.tensors {
        let renamed = match name.strip_prefix("model.") {
            Some(rest) => format!("model.text_model.{rest}"),
            None => name.clone(),
        };
        out.push((renamed, t.clone()));
    }
    if text.config.tie_word_embeddings {
        let embed = text.weights.get("model.embed_tokens.weight")?;
        out.push(("lm_head.weight".into(), embed.clone()));
    }
    Ok(out)
}

/// `t` (`[rows, width]`) with `extra` rows of its column means appended.
fn grow_rows(t: &HostTensor, extra: usize) -> HostTensor {
    let (rows, width) = (t.shape[0], t.shape[1]);
    let mut mean = vec![0.0f64; width];
    for r in 0..rows {
        for (m, x) in mean.iter_mut().zip(&t.data[r * width..(r + 1) * width]) {
            *m += *x as f64;
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / rows as f64) as f32).collect();
    let mut data = t.data.clone();
    for _ in 0..extra {
        data.extend_from_slice(&mean);
    }
    HostTensor::new(vec![rows + extra, width], data)
}

/// The standard deviation of the embedding table's entries.
pub fn embedding_std(model: &Model) -> Result<f64> {
    let e = model.weights.get("model.embed_tokens.weight")?;
    let n = e.data.len() as f64;
    let mean = e.data.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = e
        .data
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    Ok(var.sqrt())
}

/// Safetensors bytes of float32 tensors, with string metadata.
pub fn safetensors_bytes(
    tensors: &[(String, HostTensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| {
            TensorView::new(safetensors::Dtype::F32, t.shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| ModelError::Other(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, metadata)
        .map_err(|e| ModelError::Other(format!("serializing safetensors: {e}")))
}

/// Writes the HF folder `out`: config.json, model.safetensors (language model and encoder),
/// tokenizer.json and tokenizer_config.json, preprocessor_config.json and
/// generation_config.json. Everything is written into a temporary folder beside `out` and
/// renamed into place, replacing an earlier folder only once the new one is complete.
pub fn write_folder(
    out: &Path,
    text: &Model,
    image_token_id: u32,
    spec: &EncoderSpec,
    encoder: &Weights,
) -> Result<()> {
    let tokenizer = text
        .tokenizer
        .as_ref()
        .ok_or_else(|| ModelError::format(&text.source, "the language model has no tokenizer"))?;
    let config = vlm_config(text, image_token_id, spec)?;
    let mut expected = config.vision.expected_tensors(TOWER_PREFIX);
    expected.extend(config.connector_tensors(CONNECTOR_PREFIX));
    encoder.check_shapes(expected.clone())?;
    let name = out
        .file_name()
        .ok_or_else(|| ModelError::Other(format!("{}: not a folder name", out.display())))?
        .to_string_lossy()
        .to_string();
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    let result = (|| -> Result<()> {
        let write_json = |file: &str, v: &Value| -> Result<()> {
            let path = tmp.join(file);
            let text = serde_json::to_string_pretty(v)
                .map_err(|e| ModelError::format(&path, e.to_string()))?;
            std::fs::write(&path, text).map_err(|e| ModelError::io(&path, e))
        };
        write_json("config.json", &config_value(text, image_token_id, spec))?;
        write_json("preprocessor_config.json", &processor_value(spec))?;
        write_json(
            "generation_config.json",
            &json!({
                "bos_token_id": text.config.bos_token_id,
                "eos_token_id": text.config.eos_token_ids,
                "pad_token_id": tokenizer.pad_id(),
            }),
        )?;
        tokenizer.save(&tmp.join("tokenizer.json"))?;
        let mut tensors = text_tensors(text)?;
        for (name, _) in &expected {
            tensors.push((name.clone(), encoder.get(name)?.clone()));
        }
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = safetensors_bytes(&tensors, Some(meta))?;
        let path = tmp.join("model.safetensors");
        std::fs::write(&path, bytes).map_err(|e| ModelError::io(&path, e))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp);
        ModelError::io(out, e)
    })
}

/// The encoder's tensors alone (`vision.safetensors`, what `mimic align` trains and what
/// the repository ships), read back with the shapes `config` implies.
pub fn read_encoder(path: &Path, config: &VlmConfig) -> Result<Weights> {
    let (tensors, _) = crate::weights::read_safetensors_with_metadata(path)?;
    let weights = Weights {
        tensors,
        source: path.to_path_buf(),
        blocks: Default::default(),
    };
    let mut expected = config.vision.expected_tensors(TOWER_PREFIX);
    expected.extend(config.connector_tensors(CONNECTOR_PREFIX));
    weights.check_shapes(expected.clone())?;
    if weights.tensors.len() != expected.len() {
        let unknown: Vec<&String> = weights
            .tensors
            .keys()
            .filter(|k| !expected.iter().any(|(n, _)| n == *k))
            .collect();
        return Err(ModelError::format(
            path,
            format!("tensors that are not this encoder's: {unknown:?}"),
        ));
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_spec_gives_sixteen_tokens_per_image() {
        assert_eq!(EncoderSpec::small().tokens_per_image(), 16);
    }

    #[test]
    fn grown_rows_are_the_column_means() {
        let t = HostTensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 6.0]);
        let g = grow_rows(&t, 2);
        assert_eq!(g.shape, vec![4, 2]);
        assert_eq!(g.data, vec![1.0, 2.0, 3.0, 6.0, 2.0, 4.0, 2.0, 4.0]);
    }
}
