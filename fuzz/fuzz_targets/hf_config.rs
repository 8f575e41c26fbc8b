//! A Hugging Face config.json, read as a text decoder (Llama, Mistral, Qwen2) and as a
//! vision-language model (Idefics2, Idefics3, LLaVA with its SigLIP tower).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mimic_models::vlm::config::VlmConfig;
use mimic_models::LlamaConfig;

fuzz_target!(|data: &[u8]| {
    // What from_hf_json does before from_hf_value: the text parsed as JSON.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let path = Path::new("config.json");
    let _ = LlamaConfig::from_hf_value(&v, path);
    let _ = VlmConfig::from_hf_value(&v, path);
});
