//! The contract of a compiled folder, mimic.json.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mimic_models::contract::Contract;

fuzz_target!(|data: &[u8]| {
    // The reader takes the file as UTF-8 text (read_to_string).
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Contract::from_json(text, Path::new("mimic.json"));
    }
});
