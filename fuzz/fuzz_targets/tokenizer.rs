//! A Hugging Face tokenizer.json, loaded from a file as mimic loads it (the sibling
//! configuration files are absent), then used once to encode and decode.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mimic_models::tokenizer::TextTokenizer;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("tokenizer.json");
    std::fs::write(&path, data).expect("writing the input");
    if let Ok(tok) = TextTokenizer::from_file(&path) {
        if let Ok(ids) = tok.encode("Hello, world! 123") {
            let _ = tok.decode(&ids);
        }
    }
});
