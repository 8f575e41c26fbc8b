//! Image decoding and the vision-language image processors, matching transformers' PIL
//! ("slow") processors: decode (PNG, JPEG) -> RGB -> PIL-exact uint8 resize -> rescale ->
//! normalise -> channels-first float32, padded with a pixel mask where the processor pads.
//!
//! * [`decode`]: files and bytes to [`DynamicImage`], and the RGB conversions.
//! * [`resize`]: PIL's `Image.resize` (BILINEAR, BICUBIC, LANCZOS) on 8-bit RGB.
//! * [`normalize`]: rescale, mean/std, channels-first float32.
//! * [`config`]: `preprocessor_config.json` as typed configs.
//! * [`processor`]: SigLIP, Idefics2 and Idefics3 processors.
pub mod config;
pub mod decode;
pub mod normalize;
pub mod processor;
pub mod resize;

pub use ::image::{DynamicImage, RgbImage};
pub use config::{Idefics2Config, Idefics3Config, SiglipConfig};
pub use decode::{decode_image, load_image, pil_convert_rgb, to_rgb};
pub use processor::{ImageProcessor, PixelMask, ProcessedImages};
pub use resize::{resize, Filter};
