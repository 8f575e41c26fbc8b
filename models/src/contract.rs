//! The contract of a compiled folder: what the compiler wrote and the runtime reads
//! (`mimic.json` beside `model.onnx`).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};

pub const MODEL_FILE: &str = "model.onnx";
pub const DATA_FILE: &str = "model.onnx.data";
pub const CONTRACT_FILE: &str = "mimic.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Bumped whenever the graph interface or the contract changes.
pub const CONTRACT_VERSION: u32 = 2;

/// What the runtime needs to know about a compiled folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Contract {
    pub contract_version: u32,
    pub producer: String,
    /// The model it was compiled from and that model's fingerprint.
    pub source: PathBuf,
    pub fingerprint: String,
    pub config: LlamaConfig,
    /// "fused" or "unfused".
    pub attention: String,
    /// "last" or "all": which positions `logits` covers.
    pub logits: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Per layer `[batch, kv_heads, seq, head_dim]` float32, fed back from `present.*` outputs.
    pub kv_cache: KvCacheLayout,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub chat_template: Option<String>,
    pub max_positions: usize,
    /// Trained heads compiled in, if any.
    #[serde(default)]
    pub heads: Option<HeadsContract>,
    /// The graph passes the compiler ran.
    #[serde(default)]
    pub passes: Vec<String>,
    /// "fp32" or "fp16": the type of weights, activations and the KV cache (logits are
    /// always float32). Empty in older contracts: fp32.
    #[serde(default)]
    pub dtype: String,
}

/// The heads of a compiled model: folded into its weights, or graph inputs the runtime feeds
/// per batch row from heads files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadsContract {
    pub method: crate::heads::Method,
    /// The heads file folded in; `None` when the heads are supplied per request (graph
    /// inputs, and for fused MimIC the cache slots).
    pub folded_from: Option<PathBuf>,
    /// Graph inputs `(name, shape after the batch axis)`; empty when folded.
    pub inputs: Vec<(String, Vec<usize>)>,
}

impl HeadsContract {
    /// Whether each request brings its own heads.
    pub fn per_request(&self) -> bool {
        self.folded_from.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KvCacheLayout {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Entries every cache starts with, per KV head (the MimIC slots of a fused graph);
    /// the attention mask covers only the entries after them.
    pub slots: usize,
    /// Channels of a cached key and value (`head_dim`, or more in fused MimIC graphs).
    pub key_dim: usize,
    pub value_dim: usize,
    pub past_key: String,
    pub past_value: String,
    pub present_key: String,
    pub present_value: String,
}

impl Contract {
    /// Whether the KV cache is float16.
    pub fn is_fp16(&self) -> bool {
        self.dtype == "fp16"
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(CONTRACT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let c: Contract = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(&path, format!("invalid contract: {e}")))?;
        if c.contract_version != CONTRACT_VERSION {
            return Err(ModelError::format(
                &path,
                format!(
                    "contract version {} but this build reads {CONTRACT_VERSION}; recompile",
                    c.contract_version
                ),
            ));
        }
        Ok(c)
    }
}
