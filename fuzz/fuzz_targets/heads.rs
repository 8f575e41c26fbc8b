//! A heads file (safetensors with mimic metadata), checked against a tiny model: 2 layers,
//! 2 heads of 4, hidden 8. The fingerprint is taken from the file itself so that the fuzzer
//! gets past that check.
#![no_main]
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mimic_models::weights::safetensors_metadata;
use mimic_models::{Heads, LlamaConfig};

fn config() -> &'static LlamaConfig {
    static CFG: OnceLock<LlamaConfig> = OnceLock::new();
    CFG.get_or_init(|| {
        let v = serde_json::json!({
            "model_type": "llama", "vocab_size": 16, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 4
        });
        LlamaConfig::from_hf_value(&v, Path::new("config.json")).expect("the fuzz config")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-heads.safetensors");
    let fingerprint = safetensors_metadata(path, data)
        .ok()
        .and_then(|m| m.get("mimic.fingerprint").cloned())
        .unwrap_or_default();
    let _ = Heads::from_bytes(path, data, &fingerprint, config());
});
