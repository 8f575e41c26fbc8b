//! A safetensors weights file: header, metadata, dtypes, offsets, conversion to float32.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mimic_models::weights::safetensors_from_bytes;

fuzz_target!(|data: &[u8]| {
    let _ = safetensors_from_bytes(Path::new("fuzz.safetensors"), data);
});
