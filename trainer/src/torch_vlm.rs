//! A vision-language model on libtorch: the image encoder ([`TorchVision`] with its connector)
//! and the language model ([`TorchModel`]), whose prefill takes the image tokens in place of
//! the `<image>` embeddings ([`ImageTokens`]).
use std::collections::HashMap;
use std::path::PathBuf;

use mimic_models::image::processor::ImageProcessor;
use mimic_models::vlm::inputs::EncoderInputs;
use mimic_models::vlm::prompt::ImageTokens as PromptImageTokens;
use mimic_models::vlm::request::{image_tokens, images_inputs};
use mimic_models::vlm::{VisionLanguageModel, VlmConfig};
use tch::{Device, Kind, Tensor};

use crate::torch_backend::{ImageTokens, TorchModel};
use crate::torch_vision::{TorchVision, VisionOutput};
use crate::{Result, TrainerError};

/// A vision-language model's weights on a device, float32.
pub struct TorchVlm {
    pub config: VlmConfig,
    pub decoder: TorchModel,
    pub encoder: TorchVision,
}

impl TorchVlm {
    pub fn new(model: &VisionLanguageModel, device: Device) -> Result<Self> {
        Ok(TorchVlm {
            config: model.config.clone(),
            decoder: TorchModel::new(&model.decoder, device)?,
            encoder: TorchVision::encoder(&model.encoder, device)?,
        })
    }

    /// The image tokens of `inputs`' images, `[n_images, tokens_per_image, text_hidden]`, with
    /// the tower's hidden states and the connector's steps when `record` is set.
    pub fn encode_images(&self, inputs: &EncoderInputs, record: bool) -> Result<VisionOutput> {
        self.encoder.encode_inputs(inputs, record)
    }

    /// The [`ImageTokens`] of a prefill over `ids` (`[batch, seq]`) with these image tokens,
    /// after checking that the prompts hold one `<image>` run per image: an error says how
    /// many placeholders and images there are.
    pub fn image_tokens<'a>(&self, ids: &Tensor, features: &'a Tensor) -> Result<ImageTokens<'a>> {
        let token_id = self.config.image_token_id as i64;
        let placeholders = i64::try_from(ids.eq(token_id).sum(Kind::Int64))?;
        let images = features.size()[0];
        if let Some(x) = &self.config.text.cross_attention {
            // One <image> token an image; its latents go to the cross-attention.
            let latents = (x.latents_per_image * x.kv_input_dim) as i64;
            let given = features.numel() as i64 / latents;
            if placeholders != given {
                return Err(TrainerError::Other(format!(
                    "the prompts hold {placeholders} <image> tokens but {given} images were given"
                )));
            }
            return Ok(ImageTokens { token_id, features });
        }
        let per_image = self.config.tokens_per_image() as i64;
        let rows = features.numel() as i64 / self.config.text.hidden_size as i64;
        if placeholders != rows {
            return Err(TrainerError::Other(format!(
                "the prompts hold {placeholders} image tokens ({} images' worth at {per_image} \
                 per image) but {images} images were given",
                placeholders as f64 / per_image as f64
            )));
        }
        Ok(ImageTokens { token_id, features })
    }
}

/// The image tokens of every image a task names, computed once by the frozen image encoder
/// (MimIC trains the language model's heads only), for the prompts that carry them.
pub struct TaskImages {
    pub token_id: i64,
    /// How the prompts' `<image>` placeholders expand.
    pub expansion: PromptImageTokens,
    /// `[tokens, hidden]` per image (`tokens_per_image`, five times that when Idefics2 splits
    /// images), on the model's device.
    by_path: HashMap<PathBuf, Tensor>,
}

impl TaskImages {
    /// Encodes each of `paths` (once each) with `processor` and `vlm`'s encoder.
    pub fn encode<'p>(
        vlm: &TorchVlm,
        processor: &ImageProcessor,
        paths: impl IntoIterator<Item = &'p PathBuf>,
    ) -> Result<Self> {
        let _guard = tch::no_grad_guard();
        let mut by_path = HashMap::new();
        for path in paths {
            if by_path.contains_key(path) {
                continue;
            }
            let inputs = images_inputs(&vlm.config, processor, std::slice::from_ref(path))?;
            let features = vlm.encode_images(&inputs, false)?.hidden;
            // [images, tokens, hidden] -> [images * tokens, hidden]: one image, or Idefics2's
            // five when its processor splits.
            let hidden = *features.size().last().unwrap_or(&1);
            by_path.insert(path.clone(), features.reshape([-1, hidden]));
        }
        Ok(TaskImages {
            token_id: vlm.config.image_token_id as i64,
            expansion: image_tokens(&vlm.config, processor),
            by_path,
        })
    }

    /// Image tokens given directly (`[tokens, hidden]` per path), for tests and callers that
    /// encode elsewhere.
    pub fn from_features(features: impl IntoIterator<Item = (PathBuf, Tensor)>) -> Self {
        TaskImages {
            token_id: 0,
            expansion: PromptImageTokens::Llava { per_image: 1 },
            by_path: features.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// The image tokens of `paths` in order, `[n * tokens, hidden]`; `None` for no images.
    pub fn features(&self, paths: &[&PathBuf]) -> Result<Option<Tensor>> {
        if paths.is_empty() {
            return Ok(None);
        }
        let parts = paths
            .iter()
            .map(|p| {
                self.by_path.get(*p).ok_or_else(|| {
                    TrainerError::Other(format!("image {} was not encoded", p.display()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Tensor::cat(&parts, 0)))
    }
}
