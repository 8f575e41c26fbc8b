//! Vision-language models: a SigLIP vision tower, a connector, and a Llama-family language
//! model whose `<image>` token embeddings are replaced by the connector's image tokens.
//!
//! * [`config`]: the architectures' configs (Idefics, Idefics2, Idefics3 / SmolVLM, LLaVA).
//! * [`idefics`]: Idefics' image attention rule (which image each token's cross-attention
//!   reads) and its decoupled embeddings.
//! * [`connector`]: the connectors, written once over
//!   [`crate::vision::backend::VisionBackend`].
//!
//! [`VisionLanguageModel::open`] reads an HF folder and splits it in two: the language model,
//! its tensors renamed to the decoder's names (`model.layers.*`, `lm_head.weight`) so that
//! every text-model stage (heads, fold, compile) runs on it unchanged, and the image encoder
//! (tower and connector) under transformers' own names.
pub mod assemble;
pub mod config;
pub mod connector;
pub mod idefics;
pub mod inputs;
pub mod prompt;
pub mod request;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::default_model::Model;
use crate::error::{ModelError, Result};
use crate::image::processor::ImageProcessor;
use crate::tokenizer::TextTokenizer;
use crate::vision::siglip::{SiglipVision, KNOWN_PREFIXES};
use crate::vlm::prompt::IMAGE_PLACEHOLDER;
use crate::weights::Weights;

pub use config::{Connector, FeatureSelect, PerceiverConfig, VlmArchitecture, VlmConfig};

/// Where the language model's tensors live on disk (transformers 4.x and 5.x names), and the
/// decoder name each prefix becomes.
const TEXT_PREFIXES: [(&str, &str); 5] = [
    ("model.text_model.", "model."),
    ("language_model.model.", "model."),
    ("model.language_model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("lm_head.", "lm_head."),
];

/// Idefics' image encoder tensors; all its other tensors are the decoder's.
const IDEFICS_IMAGE_PREFIXES: [&str; 2] = ["model.vision_model.", "model.perceiver_resampler."];

/// Where the connector's tensors live on disk.
const CONNECTOR_PREFIXES: [&str; 5] = [
    "model.connector.",
    "connector.",
    "multi_modal_projector.",
    "model.multi_modal_projector.",
    "model.perceiver_resampler.",
];

/// An image encoder: the vision tower and the connector, with their weights.
pub struct ImageEncoder {
    pub config: VlmConfig,
    /// The tower, its weights holding the connector's too.
    pub tower: SiglipVision,
    pub connector_prefix: String,
}

/// A loaded vision-language model.
pub struct VisionLanguageModel {
    pub config: VlmConfig,
    /// The language model, in the decoder's tensor names, with the tokenizer.
    pub decoder: Model,
    pub encoder: ImageEncoder,
    /// `preprocessor_config.json`'s processor, when the folder has one.
    pub processor: Option<ImageProcessor>,
    pub source: PathBuf,
}

impl VisionLanguageModel {
    /// A short hash of the model's config and its image encoder's weights (the tower's and the
    /// connector's: names and their first 8,192 values each); the language model has its own
    /// ([`Model::fingerprint`]). Two models that share a language model but not an encoder
    /// differ here.
    pub fn encoder_fingerprint(&self) -> String {
        let mut h = crate::default_model::Fnv64::default();
        h.write(format!("{:?}", self.config).as_bytes());
        for (name, t) in &self.encoder.tower.weights.tensors {
            h.write(name.as_bytes());
            for x in t.data.iter().take(8192) {
                h.write(&x.to_le_bytes());
            }
        }
        format!("{:016x}", h.0)
    }

    /// Opens an HF folder (config.json, safetensors or a sharded index, tokenizer.json,
    /// preprocessor_config.json) and checks every tensor the config implies.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::NotFound {
                path: dir.to_path_buf(),
            });
        }
        let _span = tracing::info_span!("load_vlm", path = %dir.display()).entered();
        let config = VlmConfig::from_hf_json(&dir.join("config.json"))?;
        let weights = Weights::from_hf_dir(dir)?;
        let (mut text, image) = split_weights(weights, &config, dir)?;
        if config.architecture == VlmArchitecture::Idefics {
            idefics::merge_decoupled(&mut text, &config.text)?;
        }
        text.check_against(&config.text)?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = if tok_path.exists() {
            Some(TextTokenizer::from_file(&tok_path)?)
        } else {
            None
        };
        let mut config = config;
        if config.architecture == VlmArchitecture::Idefics {
            if let Some(id) = tokenizer
                .as_ref()
                .and_then(|t| t.token_to_id(IMAGE_PLACEHOLDER))
            {
                config.image_token_id = id;
                if let Some(x) = config.text.cross_attention.as_mut() {
                    x.image_token_id = id;
                }
            }
        }
        let decoder = Model {
            config: config.text.clone(),
            weights: text,
            tokenizer,
            source: dir.to_path_buf(),
        };
        let encoder = ImageEncoder::from_weights(&config, image, dir)?;
        let pre = dir.join("preprocessor_config.json");
        let processor = if pre.exists() {
            Some(ImageProcessor::from_file(&pre)?)
        } else {
            None
        };
        tracing::info!(
            architecture = config.architecture.name(),
            text_params = decoder.weights.num_params(),
            image_params = encoder.tower.weights.num_params(),
            "vision-language model loaded"
        );
        Ok(VisionLanguageModel {
            config,
            decoder,
            encoder,
            processor,
            source: dir.to_path_buf(),
        })
    }

    /// Whether `dir` holds a vision-language model (its config.json says so).
    pub fn is_vlm_dir(dir: &Path) -> bool {
        std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .is_some_and(|v| VlmConfig::is_vlm(&v))
    }
}

impl ImageEncoder {
    /// The tower and connector from the non-text tensors of a checkpoint.
    fn from_weights(config: &VlmConfig, weights: Weights, dir: &Path) -> Result<Self> {
        let has = |name: String| weights.tensors.contains_key(&name);
        let tower_prefix = KNOWN_PREFIXES
            .iter()
            .find(|p| !p.is_empty() && has(format!("{p}embeddings.patch_embedding.weight")))
            .ok_or_else(|| {
                ModelError::format(
                    dir,
                    "no vision tower: no `*embeddings.patch_embedding.weight` under a known \
                     prefix (model.vision_model., vision_tower.vision_model.)",
                )
            })?
            .to_string();
        // A connector without weights (Idefics without its resampler) has no prefix.
        let connector_prefix = match config.connector_tensors("").first() {
            None => String::new(),
            Some((first, _)) => CONNECTOR_PREFIXES
                .iter()
                .find(|p| has(format!("{p}{first}")))
                .ok_or_else(|| {
                    ModelError::format(
                        dir,
                        format!(
                            "no {} connector: no `{first}` under a known prefix ({})",
                            config.architecture.name(),
                            CONNECTOR_PREFIXES.join(", ")
                        ),
                    )
                })?
                .to_string(),
        };
        weights.check_shapes(config.vision.expected_tensors(&tower_prefix))?;
        weights.check_shapes(config.connector_tensors(&connector_prefix))?;
        Ok(ImageEncoder {
            config: config.clone(),
            tower: SiglipVision {
                config: config.vision.clone(),
                prefix: tower_prefix,
                weights,
                source: dir.to_path_buf(),
            },
            connector_prefix,
        })
    }
}

/// The language model's tensors (renamed to the decoder's names) and the rest.
fn split_weights(weights: Weights, config: &VlmConfig, dir: &Path) -> Result<(Weights, Weights)> {
    let mut text = BTreeMap::new();
    let mut image = BTreeMap::new();
    let idefics = config.architecture == VlmArchitecture::Idefics;
    for (name, t) in weights.tensors {
        // Idefics keeps the decoder's own names; its image encoder is the tower and the
        // perceiver.
        let text_name = match idefics {
            true => {
                (!IDEFICS_IMAGE_PREFIXES.iter().any(|p| name.starts_with(p))).then(|| name.clone())
            }
            false => TEXT_PREFIXES
                .iter()
                .find(|(from, _)| name.starts_with(from))
                .map(|(from, to)| format!("{to}{}", &name[from.len()..])),
        };
        match text_name {
            Some(renamed) => {
                if text.insert(renamed.clone(), t).is_some() {
                    return Err(ModelError::format(
                        dir,
                        format!("tensor `{renamed}` appears under two names (`{name}`)"),
                    ));
                }
            }
            None => {
                image.insert(name, t);
            }
        }
    }
    if config.text.tie_word_embeddings {
        text.remove("lm_head.weight");
    }
    let source = weights.source;
    Ok((
        Weights {
            tensors: text,
            source: source.clone(),
            blocks: Default::default(),
        },
        Weights {
            tensors: image,
            source,
            blocks: Default::default(),
        },
    ))
}
