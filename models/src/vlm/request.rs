//! One prompt with its images, ready for a vision-language model: the text with each
//! `<image>` expanded as the model's processor expands it, and the image encoder's inputs.
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::image::decode::load_image;
use crate::image::processor::ImageProcessor;
use crate::vision::patches::Bucketing;
use crate::vlm::config::{VlmArchitecture, VlmConfig};
use crate::vlm::inputs::{encoder_inputs, EncoderInputs};
use crate::vlm::prompt::{
    check_image_count, count_image_placeholders, ImageTokens, IMAGE_PLACEHOLDER,
};

/// A prompt's text, expanded, and its images' encoder inputs.
#[derive(Debug, Clone)]
pub struct ImagePrompt {
    /// The prompt with every `<image>` replaced by the model's image token run.
    pub text: String,
    pub inputs: EncoderInputs,
}

/// How `cfg`'s processor expands one `<image>`: Idefics2 into five images' tokens when its
/// processor splits images (MimIC turns splitting off), the others unsplit.
pub fn image_tokens(cfg: &VlmConfig, processor: &ImageProcessor) -> ImageTokens {
    let per_image = cfg.tokens_per_image();
    match cfg.architecture {
        VlmArchitecture::Idefics2 => ImageTokens::Idefics2 {
            per_image,
            split: processor.splits_images(),
        },
        VlmArchitecture::Idefics3 => ImageTokens::Idefics3 {
            per_image,
            split: false,
        },
        VlmArchitecture::Llava => ImageTokens::Llava { per_image },
        VlmArchitecture::Idefics => ImageTokens::Idefics,
    }
}

/// The prompt `text` with the images at `paths`, one per `<image>` in order. A prompt without
/// any `<image>` gets one per image at its start; otherwise the counts must match.
pub fn image_prompt(
    cfg: &VlmConfig,
    processor: &ImageProcessor,
    text: &str,
    paths: &[PathBuf],
) -> Result<ImagePrompt> {
    if paths.is_empty() {
        return Err(ModelError::Other(
            "a vision-language model's prompt needs at least one image (--image FILE)".into(),
        ));
    }
    let text = match count_image_placeholders(text) {
        0 => format!("{}{text}", IMAGE_PLACEHOLDER.repeat(paths.len())),
        _ => {
            check_image_count(text, paths.len()).map_err(|e| ModelError::Other(e.to_string()))?;
            text.to_string()
        }
    };
    let inputs = images_inputs(cfg, processor, paths)?;
    let text = image_tokens(cfg, processor)
        .expand(&text)
        .map_err(|e| ModelError::Other(e.to_string()))?;
    Ok(ImagePrompt { text, inputs })
}

/// The encoder inputs of the images at `paths` (one prompt's), decoded and processed by
/// `processor`; errors name the file that does not decode.
pub fn images_inputs(
    cfg: &VlmConfig,
    processor: &ImageProcessor,
    paths: &[impl AsRef<Path>],
) -> Result<EncoderInputs> {
    let images = paths.iter().map(load_image).collect::<Result<Vec<_>>>()?;
    let processed = processor.process(&images)?;
    encoder_inputs(cfg, &processed, Bucketing::Transformers5)
}

/// The processor of a model folder or compiled folder: its `preprocessor_config.json`.
pub fn folder_processor(dir: &Path) -> Result<ImageProcessor> {
    let path = dir.join(crate::vision::io::PROCESSOR_FILE);
    if !path.is_file() {
        return Err(ModelError::format(
            &path,
            "missing: a vision-language model needs its image processor's config",
        ));
    }
    ImageProcessor::from_file(&path)
}
