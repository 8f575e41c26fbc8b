//! An image processor's preprocessor_config.json (SigLIP, Idefics2, Idefics3).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mimic_models::image::ImageProcessor;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ImageProcessor::from_json(text, "preprocessor_config.json");
    }
});
