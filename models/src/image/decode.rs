//! Decoding PNG and JPEG files, and converting decoded images to 8-bit RGB.
use std::io::Cursor;
use std::path::Path;

use ::image::{DynamicImage, ImageFormat, ImageReader, Rgb, RgbImage};

use crate::error::{ModelError, Result};

/// Reads and decodes a PNG or JPEG file. Errors name the file and the problem: unreadable,
/// not an image, an unsupported format, a truncated or corrupt file.
pub fn load_image(path: impl AsRef<Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    decode_image(&bytes, path)
}

/// Decodes PNG or JPEG bytes; `path` only names the source in errors.
pub fn decode_image(bytes: &[u8], path: impl AsRef<Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    if bytes.is_empty() {
        return Err(ModelError::image(path, "empty file, not an image"));
    }
    let format = ::image::guess_format(bytes).map_err(|_| {
        ModelError::image(
            path,
            "not a PNG or JPEG image (unrecognised file signature)",
        )
    })?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(ModelError::image(
            path,
            format!("{format:?} images are not supported (PNG and JPEG only)"),
        ));
    }
    ImageReader::with_format(Cursor::new(bytes), format)
        .decode()
        .map_err(|e| {
            ModelError::image(
                path,
                format!("cannot decode the {format:?} image (truncated or corrupt?): {e}"),
            )
        })
}

/// 8-bit RGB the way transformers' `convert_to_rgb` makes it (5.x, the PIL processors): an
/// image with an alpha channel is composited onto opaque white with PIL's `alpha_composite`
/// arithmetic; grayscale is replicated to three channels (PIL `convert("RGB")`).
///
/// 16-bit images keep their high byte (PIL does so for 16-bit RGB PNGs; for 16-bit grayscale
/// PIL clips at 255 instead, which is not reproduced).
pub fn to_rgb(img: &DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(b) => b.clone(),
        DynamicImage::ImageLuma8(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let l = b.get_pixel(x, y).0[0];
            Rgb([l, l, l])
        }),
        DynamicImage::ImageLumaA8(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let [l, a] = b.get_pixel(x, y).0;
            let v = over_white(l, a);
            Rgb([v, v, v])
        }),
        DynamicImage::ImageRgba8(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let [r, g, bl, a] = b.get_pixel(x, y).0;
            Rgb([over_white(r, a), over_white(g, a), over_white(bl, a)])
        }),
        DynamicImage::ImageRgb16(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let p = b.get_pixel(x, y).0;
            Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
        }),
        DynamicImage::ImageLuma16(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let l = (b.get_pixel(x, y).0[0] >> 8) as u8;
            Rgb([l, l, l])
        }),
        DynamicImage::ImageLumaA16(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let [l, a] = b.get_pixel(x, y).0;
            let v = over_white((l >> 8) as u8, (a >> 8) as u8);
            Rgb([v, v, v])
        }),
        DynamicImage::ImageRgba16(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let p = b.get_pixel(x, y).0.map(|v| (v >> 8) as u8);
            Rgb([
                over_white(p[0], p[3]),
                over_white(p[1], p[3]),
                over_white(p[2], p[3]),
            ])
        }),
        other if other.color().has_alpha() => {
            let b = other.to_rgba8();
            RgbImage::from_fn(b.width(), b.height(), |x, y| {
                let [r, g, bl, a] = b.get_pixel(x, y).0;
                Rgb([over_white(r, a), over_white(g, a), over_white(bl, a)])
            })
        }
        other => other.to_rgb8(),
    }
}

/// PIL's plain `convert("RGB")`: alpha is dropped, grayscale replicated (transformers 4.4x's
/// `convert_to_rgb`, which MimIC's pinned version ran).
pub fn pil_convert_rgb(img: &DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgb16(_) => to_rgb(img),
        DynamicImage::ImageLumaA8(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let l = b.get_pixel(x, y).0[0];
            Rgb([l, l, l])
        }),
        DynamicImage::ImageLumaA16(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let l = (b.get_pixel(x, y).0[0] >> 8) as u8;
            Rgb([l, l, l])
        }),
        DynamicImage::ImageRgba16(b) => RgbImage::from_fn(b.width(), b.height(), |x, y| {
            let p = b.get_pixel(x, y).0;
            Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
        }),
        other => {
            let b = other.to_rgba8();
            RgbImage::from_fn(b.width(), b.height(), |x, y| {
                let [r, g, bl, _] = b.get_pixel(x, y).0;
                Rgb([r, g, bl])
            })
        }
    }
}

/// One channel of PIL's `alpha_composite(white, src)` (libImaging/AlphaComposite.c with an
/// opaque white destination): integer arithmetic with 7 fractional bits.
fn over_white(c: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    const PRECISION_BITS: u32 = 7;
    let (c, a) = (c as u32, a as u32);
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let tmp = c * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    let div255 = ((tmp >> 8) + tmp) >> 8;
    (div255 >> PRECISION_BITS).min(255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_and_transparent_alpha() {
        for c in [0u8, 1, 77, 128, 254, 255] {
            assert_eq!(over_white(c, 255), c);
            assert_eq!(over_white(c, 0), 255);
        }
    }
}
