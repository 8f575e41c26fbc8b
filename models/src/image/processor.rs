//! The image processors: SigLIP (llava-interleave-qwen), Idefics2, Idefics3 (SmolVLM).
use std::path::Path;

use ::image::{imageops, DynamicImage, RgbImage};

use super::config::{
    Common, Idefics2Config, Idefics2Size, Idefics3Config, Idefics3Size, Raw, SiglipConfig,
};
use super::decode::to_rgb;
use super::normalize::write_chw;
use super::resize::resize;
use crate::error::{ModelError, Result};
use crate::weights::HostTensor;

/// One of the supported processors, read from a `preprocessor_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageProcessor {
    Siglip(SiglipConfig),
    Idefics2(Idefics2Config),
    Idefics3(Idefics3Config),
}

/// 1 on real pixels, 0 on padding; `shape` is `[batch, max_images, height, width]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PixelMask {
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// A processor's output.
#[derive(Clone, Debug)]
pub struct ProcessedImages {
    /// SigLIP: `[images, 3, height, width]`; Idefics2/3: `[batch, max_images, 3, height,
    /// width]`, missing images all zero.
    pub pixel_values: HostTensor,
    /// Idefics2/3 only.
    pub pixel_attention_mask: Option<PixelMask>,
}

impl ImageProcessor {
    /// Reads a `preprocessor_config.json`; errors name the file and the key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses config JSON text; `path` names it in errors.
    pub fn from_json(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let raw = Raw::parse(text, path)?;
        let ty = raw.processor_type()?;
        let base = ty
            .strip_suffix("Fast")
            .or_else(|| ty.strip_suffix("Pil"))
            .unwrap_or(&ty);
        match base {
            "SiglipImageProcessor" => Ok(Self::Siglip(SiglipConfig::from_raw(&raw)?)),
            "IdeficsImageProcessor" => Ok(Self::Siglip(SiglipConfig::from_raw_idefics(&raw)?)),
            "Idefics2ImageProcessor" => Ok(Self::Idefics2(Idefics2Config::from_raw(&raw)?)),
            "Idefics3ImageProcessor" => Ok(Self::Idefics3(Idefics3Config::from_raw(&raw)?)),
            other => Err(ModelError::format(
                path,
                format!(
                    "key \"image_processor_type\": {other:?} is not supported (SiglipImageProcessor, \
                     IdeficsImageProcessor, Idefics2ImageProcessor, Idefics3ImageProcessor are)"
                ),
            )),
        }
    }

    /// Whether each image becomes several (Idefics2's four quadrants and the whole image).
    pub fn splits_images(&self) -> bool {
        matches!(self, Self::Idefics2(c) if c.do_image_splitting)
    }

    fn common(&self) -> &Common {
        match self {
            Self::Siglip(c) => &c.common,
            Self::Idefics2(c) => &c.common,
            Self::Idefics3(c) => &c.common,
        }
    }

    /// One prompt's images. SigLIP: a batch `[n, 3, H, W]`; Idefics2/3: one sample
    /// `[1, n (x5 when splitting), 3, H, W]` with its mask.
    pub fn process(&self, images: &[DynamicImage]) -> Result<ProcessedImages> {
        self.process_batch(&[images.to_vec()])
    }

    /// A batch of samples, each a list of images (transformers' nested list). SigLIP flattens
    /// them into one `[total, 3, H, W]`.
    pub fn process_batch(&self, samples: &[Vec<DynamicImage>]) -> Result<ProcessedImages> {
        if samples.iter().all(|s| s.is_empty()) {
            return Err(ModelError::Other("image processor: no images given".into()));
        }
        let common = self.common();
        let rgb = samples
            .iter()
            .map(|s| s.iter().map(|im| rgb_input(common, im)).collect())
            .collect::<Result<Vec<Vec<RgbImage>>>>()?;
        match self {
            Self::Siglip(c) => {
                let imgs: Vec<RgbImage> = rgb
                    .into_iter()
                    .flatten()
                    .map(|im| resize_if(common, &im, c.height, c.width))
                    .collect();
                let (h, w) = (c.height as usize, c.width as usize);
                let mut data = vec![0f32; imgs.len() * 3 * h * w];
                for (im, out) in imgs.iter().zip(data.chunks_mut(3 * h * w)) {
                    // do_resize false: the images must already share one size.
                    if (im.height() as usize, im.width() as usize) != (h, w) {
                        return Err(ModelError::Other(format!(
                            "SiglipImageProcessor: do_resize is false and an image is {}x{}, not {w}x{h}",
                            im.width(),
                            im.height()
                        )));
                    }
                    write_chw(im, &common.norm, out, h, w);
                }
                Ok(ProcessedImages {
                    pixel_values: HostTensor::new(vec![imgs.len(), 3, h, w], data),
                    pixel_attention_mask: None,
                })
            }
            Self::Idefics2(c) => {
                let resized = rgb
                    .iter()
                    .map(|s| {
                        s.iter()
                            .flat_map(|im| {
                                if c.do_image_splitting {
                                    split_idefics2(im)
                                } else {
                                    vec![im.clone()]
                                }
                            })
                            .map(|im| {
                                let (h, w) = idefics2_size(&c.size, im.height(), im.width());
                                resize_if(common, &im, h, w)
                            })
                            .collect()
                    })
                    .collect::<Vec<Vec<_>>>();
                Ok(pad_batch(common, &resized))
            }
            Self::Idefics3(c) => {
                let m = c.max_image_size;
                let resized = rgb
                    .iter()
                    .map(|s| {
                        s.iter()
                            .map(|im| {
                                let im = if common.do_resize {
                                    let (h, w) = idefics3_size(&c.size, im.height(), im.width());
                                    resize(im, w, h, common.resample)
                                } else {
                                    im.clone()
                                };
                                // Without splitting the image is squashed to max_image_size.
                                resize(&im, m, m, common.resample)
                            })
                            .collect()
                    })
                    .collect::<Vec<Vec<_>>>();
                Ok(pad_batch(common, &resized))
            }
        }
    }
}

fn rgb_input(common: &Common, im: &DynamicImage) -> Result<RgbImage> {
    if im.width() == 0 || im.height() == 0 {
        return Err(ModelError::Other(
            "image processor: an empty (0-pixel) image".into(),
        ));
    }
    match im {
        DynamicImage::ImageRgb8(b) => Ok(b.clone()),
        _ if common.do_convert_rgb => Ok(to_rgb(im)),
        other => Err(ModelError::Other(format!(
            "image processor: do_convert_rgb is false and an image is {:?}, not 8-bit RGB",
            other.color()
        ))),
    }
}

fn resize_if(common: &Common, im: &RgbImage, height: u32, width: u32) -> RgbImage {
    if common.do_resize {
        resize(im, width, height, common.resample)
    } else {
        im.clone()
    }
}

/// Idefics2's `get_resize_output_image_size`: (height, width).
pub fn idefics2_size(size: &Idefics2Size, height: u32, width: u32) -> (u32, u32) {
    match *size {
        Idefics2Size::Fixed { height, width } => (height, width),
        Idefics2Size::Edges { shortest, longest } => {
            let (mut h, mut w) = (height, width);
            let aspect = w as f64 / h as f64;
            if w >= h && w > longest {
                w = longest;
                h = (w as f64 / aspect) as u32;
            } else if h > w && h > longest {
                h = longest;
                w = (h as f64 * aspect) as u32;
            }
            (h.max(shortest), w.max(shortest))
        }
    }
}

/// Idefics3's `get_resize_output_image_size`: the long side to `longest` (even short side),
/// then capped at 4096. (height, width).
pub fn idefics3_size(size: &Idefics3Size, height: u32, width: u32) -> (u32, u32) {
    let longest = match *size {
        Idefics3Size::Fixed { height, width } => return (height, width),
        Idefics3Size::LongestEdge(l) => l,
    };
    let (mut h, mut w) = (height, width);
    let aspect = w as f64 / h as f64;
    if w >= h {
        w = longest;
        h = (w as f64 / aspect) as u32;
        if h % 2 != 0 {
            h += 1;
        }
    } else {
        h = longest;
        w = (h as f64 * aspect) as u32;
        if w % 2 != 0 {
            w += 1;
        }
    }
    let (mut h, mut w) = (h.max(1), w.max(1));
    const MAX_IMAGE_SIZE: u32 = 4096;
    let aspect = w as f64 / h as f64;
    if w >= h && w > MAX_IMAGE_SIZE {
        w = MAX_IMAGE_SIZE;
        h = (w as f64 / aspect) as u32;
    } else if h > w && h > MAX_IMAGE_SIZE {
        h = MAX_IMAGE_SIZE;
        w = (h as f64 * aspect) as u32;
    }
    (h.max(1), w.max(1))
}

/// Idefics2's `split_images`: four quadrants (split at w//2, h//2), then the whole image.
fn split_idefics2(im: &RgbImage) -> Vec<RgbImage> {
    let (w, h) = (im.width(), im.height());
    let (mw, mh) = (w / 2, h / 2);
    let crop = |x, y, cw, ch| imageops::crop_imm(im, x, y, cw, ch).to_image();
    vec![
        crop(0, 0, mw, mh),
        crop(mw, 0, w - mw, mh),
        crop(0, mh, mw, h - mh),
        crop(mw, mh, w - mw, h - mh),
        im.clone(),
    ]
}

/// Rescale, normalise and pad every image to the batch's largest height and width (bottom and
/// right, zeros after normalisation), with the pixel mask; missing images are all zero.
fn pad_batch(common: &Common, samples: &[Vec<RgbImage>]) -> ProcessedImages {
    let all = || samples.iter().flatten();
    let max_h = all().map(|im| im.height() as usize).max().unwrap_or(0);
    let max_w = all().map(|im| im.width() as usize).max().unwrap_or(0);
    let max_n = samples.iter().map(Vec::len).max().unwrap_or(0);
    let b = samples.len();
    let plane = max_h * max_w;
    let mut data = vec![0f32; b * max_n * 3 * plane];
    let mut mask = vec![0u8; b * max_n * plane];
    for (i, s) in samples.iter().enumerate() {
        for (j, im) in s.iter().enumerate() {
            let k = i * max_n + j;
            write_chw(
                im,
                &common.norm,
                &mut data[k * 3 * plane..(k + 1) * 3 * plane],
                max_h,
                max_w,
            );
            let m = &mut mask[k * plane..(k + 1) * plane];
            for y in 0..im.height() as usize {
                m[y * max_w..y * max_w + im.width() as usize].fill(1);
            }
        }
    }
    ProcessedImages {
        pixel_values: HostTensor::new(vec![b, max_n, 3, max_h, max_w], data),
        pixel_attention_mask: Some(PixelMask {
            shape: vec![b, max_n, max_h, max_w],
            data: mask,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idefics2_rules() {
        let e = Idefics2Size::Edges {
            shortest: 378,
            longest: 980,
        };
        assert_eq!(idefics2_size(&e, 133, 200), (378, 378));
        assert_eq!(idefics2_size(&e, 1000, 2000), (490, 980));
        assert_eq!(idefics2_size(&e, 2000, 999), (980, 489));
        assert_eq!(idefics2_size(&e, 500, 600), (500, 600));
    }

    #[test]
    fn idefics3_rules() {
        let l = Idefics3Size::LongestEdge(1456);
        assert_eq!(idefics3_size(&l, 133, 200), (968, 1456));
        assert_eq!(idefics3_size(&l, 259, 167), (1456, 938));
        // The short side is truncated, then rounded up to even: int(1456 * 3 / 5) = 873 -> 874.
        assert_eq!(idefics3_size(&l, 5, 3), (1456, 874));
    }
}
