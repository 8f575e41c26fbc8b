//! A GGUF file: header, metadata, tensor directory, every tensor dequantized, then what the
//! default model reads from it (the decoder config, the tokenizer, the weights in HF layout).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mimic_models::gguf::GgufFile;
use mimic_models::tokenizer::TextTokenizer;
use mimic_models::{LlamaConfig, Weights};

fuzz_target!(|data: &[u8]| {
    let Ok(g) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data) else {
        return;
    };
    for t in &g.tensors {
        let _ = g.tensor_f32(t);
    }
    let _ = TextTokenizer::from_gguf(&g);
    if let Ok(cfg) = LlamaConfig::from_gguf(&g) {
        let _ = Weights::from_gguf(&g, &cfg);
    }
});
