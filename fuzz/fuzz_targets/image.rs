//! An image file (PNG or JPEG), decoded and converted to 8-bit RGB both ways.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mimic_models::image::{decode_image, pil_convert_rgb, to_rgb};

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_image(data, "fuzz.png") {
        let _ = to_rgb(&img);
        let _ = pil_convert_rgb(&img);
    }
});
