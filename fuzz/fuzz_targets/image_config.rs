//! An image processor's preprocessor_config.json (SigLIP, Idefics2, Idefics3), then one small
//! image processed with it: a size the config lets through must not size an allocation past
//! what an image may need.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mimic_models::image::{DynamicImage, ImageProcessor, RgbImage};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = ImageProcessor::from_json(text, "preprocessor_config.json") {
            let pixels = RgbImage::from_raw(3, 2, (0..18u8).map(|i| i * 14).collect());
            let image = DynamicImage::ImageRgb8(pixels.expect("3 x 2 x 3 bytes"));
            let _ = p.process(&[image]);
        }
    }
});
