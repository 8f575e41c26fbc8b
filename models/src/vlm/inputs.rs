//! From a processor's output to the image encoder's inputs: the real images of a padded
//! batch, their patch masks and bucketed position ids (Idefics2/3), as transformers derives
//! them inside `get_image_features`.
use crate::error::{ModelError, Result};
use crate::image::processor::ProcessedImages;
use crate::vision::patches::{self, Bucketing, PatchRule};
use crate::vlm::config::{VlmArchitecture, VlmConfig};
use crate::weights::HostTensor;

/// What the image encoder takes for a batch of prompts' images.
#[derive(Debug, Clone)]
pub struct EncoderInputs {
    /// The real images in prompt order, `[n_images, channels, height, width]`.
    pub pixel_values: HostTensor,
    /// `[n_images, n_patches]`, 1 for a real patch (Idefics2/3 only).
    pub patch_mask: Option<Vec<i64>>,
    /// `[n_images, n_patches]` rows of the position table (Idefics2/3 only).
    pub position_ids: Option<Vec<i64>>,
    /// How many of the images belong to each prompt of the batch.
    pub images_per_prompt: Vec<usize>,
}

/// The encoder inputs of a processor's output. Idefics2/3 batches `[batch, max_images, 3, H, W]`
/// lose their padding images (every value exactly 0.0, transformers' rule) and get patch
/// masks from the pixel mask (Idefics2: every pixel of a patch real; Idefics3: any) and
/// position ids by `bucketing`. SigLIP batches `[n, 3, H, W]` pass through.
pub fn encoder_inputs(
    cfg: &VlmConfig,
    images: &ProcessedImages,
    bucketing: Bucketing,
) -> Result<EncoderInputs> {
    let px = &images.pixel_values;
    let bad = |msg: String| ModelError::Other(format!("image inputs: {msg}"));
    let patch = cfg.vision.patch_size;
    match cfg.architecture {
        VlmArchitecture::Idefics if px.shape.len() == 5 => {
            // IdeficsProcessor's `[batch, max_images, 3, H, W]`: padding images are all 0.0.
            let [batch, slots, c, h, w]: [usize; 5] =
                px.shape.clone().try_into().expect("five axes");
            let per_image = c * h * w;
            let mut data = Vec::new();
            let mut images_per_prompt = vec![0; batch];
            for (i, image) in px.data.chunks_exact(per_image.max(1)).enumerate() {
                if image.iter().all(|&x| x == 0.0) {
                    continue;
                }
                images_per_prompt[i / slots.max(1)] += 1;
                data.extend_from_slice(image);
            }
            let n = images_per_prompt.iter().sum::<usize>();
            Ok(EncoderInputs {
                pixel_values: HostTensor::new(vec![n, c, h, w], data),
                patch_mask: None,
                position_ids: None,
                images_per_prompt,
            })
        }
        VlmArchitecture::Llava | VlmArchitecture::Idefics => {
            if px.shape.len() != 4 {
                return Err(bad(format!(
                    "pixel values of shape {:?}, expected [n, 3, height, width]",
                    px.shape
                )));
            }
            Ok(EncoderInputs {
                pixel_values: px.clone(),
                patch_mask: None,
                position_ids: None,
                images_per_prompt: vec![px.shape[0]],
            })
        }
        VlmArchitecture::Idefics2 | VlmArchitecture::Idefics3 => {
            let [batch, slots, c, h, w]: [usize; 5] =
                px.shape.clone().try_into().map_err(|_| {
                    bad(format!(
                        "pixel values of shape {:?}, expected [batch, images, 3, height, width]",
                        px.shape
                    ))
                })?;
            // Sizes need not be whole patches: as transformers' stride-`patch` convolution and
            // mask unfolding do, the last partial row and column are dropped.
            if h < patch || w < patch {
                return Err(bad(format!(
                    "{h}x{w} images are smaller than one {patch}x{patch} patch"
                )));
            }
            let per_image = c * h * w;
            let mask = images.pixel_attention_mask.as_ref();
            if let Some(m) = mask {
                if m.shape != [batch, slots, h, w] {
                    return Err(bad(format!(
                        "pixel mask of shape {:?}, expected {:?}",
                        m.shape,
                        [batch, slots, h, w]
                    )));
                }
            }
            let mut data = Vec::new();
            let mut pixel_mask = Vec::new();
            let mut images_per_prompt = vec![0; batch];
            for (i, image) in px.data.chunks_exact(per_image).enumerate() {
                if image.iter().all(|&x| x == 0.0) {
                    continue;
                }
                images_per_prompt[i / slots] += 1;
                data.extend_from_slice(image);
                match mask {
                    Some(m) => pixel_mask.extend_from_slice(&m.data[i * h * w..][..h * w]),
                    None => pixel_mask.extend(std::iter::repeat_n(1u8, h * w)),
                }
            }
            let n = images_per_prompt.iter().sum::<usize>();
            let rule = match cfg.architecture {
                VlmArchitecture::Idefics2 => PatchRule::AllPixels,
                _ => PatchRule::AnyPixel,
            };
            let grid = patches::patch_mask_from_pixels(&pixel_mask, n, h, w, patch, rule);
            let (rows, cols) = (h / patch, w / patch);
            let ids = patches::bucketed_position_ids(
                &grid,
                n,
                rows,
                cols,
                cfg.vision.patches_per_side(),
                bucketing,
            );
            Ok(EncoderInputs {
                pixel_values: HostTensor::new(vec![n, c, h, w], data),
                patch_mask: Some(grid.iter().map(|&r| r as i64).collect()),
                position_ids: Some(ids),
                images_per_prompt,
            })
        }
    }
}
