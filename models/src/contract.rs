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

// The graph interface (the layout Hugging Face exporters use), as the compiler emits it and
// the runtime feeds it.
pub const INPUT_IDS: &str = "input_ids";
/// A vision-language model's decoder takes its input embeddings instead of token ids
/// (`[batch, seq, hidden]` float32), made by the embedding graph ([`VisionContract`]).
pub const INPUTS_EMBEDS: &str = "inputs_embeds";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const POSITION_IDS: &str = "position_ids";
pub const LOGITS: &str = "logits";
/// The KV-cache inputs and outputs of each layer, `{layer}` standing for its index (as the
/// contract's [`KvCacheLayout`] records them).
pub const PAST_KEY: &str = "past_key_values.{layer}.key";
pub const PAST_VALUE: &str = "past_key_values.{layer}.value";
pub const PRESENT_KEY: &str = "present.{layer}.key";
pub const PRESENT_VALUE: &str = "present.{layer}.value";

fn of_layer(pattern: &str, layer: usize) -> String {
    pattern.replace("{layer}", &layer.to_string())
}
/// Layer `layer`'s [`PAST_KEY`] input.
pub fn past_key(layer: usize) -> String {
    of_layer(PAST_KEY, layer)
}
/// Layer `layer`'s [`PAST_VALUE`] input.
pub fn past_value(layer: usize) -> String {
    of_layer(PAST_VALUE, layer)
}
/// Layer `layer`'s [`PRESENT_KEY`] output.
/// Whether `name` is a KV-cache input or output (`past_key_values.*`, `present.*`).
pub fn is_kv_cache(name: &str) -> bool {
    [PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE]
        .iter()
        .filter_map(|pattern| pattern.split_once("{layer}"))
        .any(|(prefix, _)| name.starts_with(prefix))
}

pub fn present_key(layer: usize) -> String {
    of_layer(PRESENT_KEY, layer)
}
/// Layer `layer`'s [`PRESENT_VALUE`] output.
pub fn present_value(layer: usize) -> String {
    of_layer(PRESENT_VALUE, layer)
}

/// A cross-attention decoder's (Idefics') inputs: the image slot each new token reads
/// (`[batch, seq]` int64, -1 for none), and each gated block's keys and values over the
/// images' latents (`[batch, heads, n_image_keys, head_dim]`), computed once per prompt by
/// the cross graph from the latents; or, in a graph that recomputes them every step, the
/// latents themselves (`[batch, n_image_keys, kv_input_dim]`).
pub const IMAGE_SLOTS: &str = "image_slots";
pub const IMAGE_LATENTS: &str = "image_latents";
pub const CROSS_KEY: &str = "cross.{layer}.key";
pub const CROSS_VALUE: &str = "cross.{layer}.value";
/// The graph computing every block's cross keys and values from the latents.
pub const CROSS_KV_MODEL_FILE: &str = "cross_kv.onnx";
pub const CROSS_KV_DATA_FILE: &str = "cross_kv.onnx.data";

/// Gated cross-attention block `block`'s [`CROSS_KEY`].
pub fn cross_key(block: usize) -> String {
    of_layer(CROSS_KEY, block)
}
/// Gated cross-attention block `block`'s [`CROSS_VALUE`].
pub fn cross_value(block: usize) -> String {
    of_layer(CROSS_VALUE, block)
}

/// How a compiled graph holds its projection weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// As the source holds them: a GGUF file's Q4_0, Q4_1 and Q8_0 blocks stay blocks
    /// (`MatMulNBits`), everything else float32 (float16 in a float16 graph).
    #[default]
    Source,
    /// Every weight float32 (the source's dequantised values).
    F32,
}

impl WeightFormat {
    pub const ALL: &[Self] = &[Self::Source, Self::F32];

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Source => "source",
            WeightFormat::F32 => "f32",
        }
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "source" => Ok(Self::Source),
            "f32" => Ok(Self::F32),
            _ => Err(format!("unknown weight format `{s}` (source, f32)")),
        }
    }
}

/// The additive mask value that hides a key, in the compiled graphs' masks (and the value the
/// runtime's kernel is tested with). Not float32's minimum: the float16 pass stores it in
/// float16, where adding a score to a value near float16's limit would overflow to minus
/// infinity (and a row with every key hidden would turn into NaN). `exp(-30000)` is 0 in
/// float32 as in float16, so nothing else changes.
pub const MASK_MIN: f32 = -30000.0;

/// How attention is expressed in a compiled graph (`--attention`; the contract's
/// `attention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionImpl {
    /// The opset-23 `Attention` operator, with the cache as its past/present state.
    Fused,
    /// MatMul, Softmax, MatMul (grouped-query heads by reshaping queries, not copying keys).
    Unfused,
    /// mimic's own CPU kernel, the custom operator `ai.mimic:MimicAttention` that the runtime
    /// registers ([`crate::kernel_op`]): MimIC heads computed inside it, no cache slots, value
    /// channels or epilogue. Float32, CPU provider.
    Kernel,
}

impl AttentionImpl {
    /// Every form, in the order the command line lists them.
    pub const ALL: &[Self] = &[Self::Fused, Self::Unfused, Self::Kernel];

    /// The name on the command line and in the contract.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fused => "fused",
            Self::Unfused => "unfused",
            Self::Kernel => "kernel",
        }
    }
}

impl std::str::FromStr for AttentionImpl {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fused" => Ok(Self::Fused),
            "unfused" => Ok(Self::Unfused),
            "kernel" => Ok(Self::Kernel),
            _ => Err(format!("unknown attention `{s}` (fused, unfused, kernel)")),
        }
    }
}

impl std::fmt::Display for AttentionImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The floating-point type of a compiled model (`--dtype`; the contract's `dtype`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// Also what a contract without the field means.
    #[default]
    Fp32,
    Fp16,
}

impl Dtype {
    /// Every type, in the order the command line lists them.
    pub const ALL: &[Self] = &[Self::Fp32, Self::Fp16];

    /// The name on the command line and in the contract.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Fp32 => "fp32",
            Dtype::Fp16 => "fp16",
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" | "float32" => Ok(Dtype::Fp32),
            "fp16" | "float16" => Ok(Dtype::Fp16),
            _ => Err(format!("unknown dtype `{s}` (fp32, fp16)")),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which positions a compiled graph's `logits` output covers (the contract's `logits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Logits {
    /// The last position only (generation).
    Last,
    /// Every position (`--all-logits`).
    All,
}

impl Logits {
    /// The name in the contract.
    pub fn name(self) -> &'static str {
        match self {
            Logits::Last => "last",
            Logits::All => "all",
        }
    }
}

impl std::fmt::Display for Logits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the runtime needs to know about a compiled folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Contract {
    pub contract_version: u32,
    pub producer: String,
    /// The name of the model file or folder it was compiled from (a name, not a path: a
    /// compiled folder records no path of the machine that built it) and that model's
    /// fingerprint.
    pub source: PathBuf,
    pub fingerprint: String,
    pub config: LlamaConfig,
    /// "fused", "unfused" or "kernel".
    pub attention: AttentionImpl,
    /// "last" or "all": which positions `logits` covers.
    pub logits: Logits,
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
    /// always float32). Absent in older contracts: fp32.
    #[serde(default)]
    pub dtype: Dtype,
    /// The projections kept as 4- and 8-bit blocks (`MatMulNBits`): their weights' HF names
    /// and the block type. Empty: every weight float (as in older contracts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_weights: Vec<(String, crate::quant::BlockKind)>,
    /// A vision-language model's two other graphs; absent for a text model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<VisionContract>,
}

/// The three-graph split of a compiled vision-language model (the layout ONNX Runtime GenAI
/// and optimum use): the image encoder (tower and connector), the token embeddings with the
/// image tokens put in place of `<image>`'s, and the decoder (`model.onnx`) over
/// `inputs_embeds`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VisionContract {
    /// The whole model's configuration (architecture, tower, connector, image token).
    pub config: crate::vlm::VlmConfig,
    /// `pixel_values [n_images, 3, height, width]` (and for Idefics2/3 `patch_position_ids`,
    /// `patch_attention_mask [n_images, n_patches]`) to `image_features [n_images,
    /// tokens_per_image, hidden]`.
    pub vision_model: String,
    /// `input_ids [batch, seq]` and `image_features [n_image_tokens, hidden]` (image tokens in
    /// prompt order; zero rows for a decode step) to `inputs_embeds [batch, seq, hidden]`;
    /// `None` for a cross-attention decoder, which takes `input_ids`.
    #[serde(default)]
    pub embed_model: Option<String>,
    /// A cross-attention decoder's (Idefics') graph from `image_latents` to every gated
    /// block's keys and values ([`CROSS_KV_MODEL_FILE`]), run once per prompt; `None` for a
    /// cross-attention decoder compiled to take the latents and project them in every pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_kv_model: Option<String>,
    /// The image processor's `preprocessor_config.json`, copied into the folder.
    pub processor: Option<String>,
    /// Image tokens per image.
    pub tokens_per_image: usize,
}

/// The heads of a compiled model: folded into its weights, or graph inputs the runtime feeds
/// per batch row from heads files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadsContract {
    pub method: crate::heads::Method,
    /// The name of the heads file folded in; `None` when the heads are supplied per request
    /// (graph inputs, and for fused MimIC the cache slots).
    pub folded_from: Option<PathBuf>,
    /// Graph inputs `(name, shape after the batch axis)`; empty when folded.
    pub inputs: Vec<(HeadParam, Vec<usize>)>,
}

/// One of the heads' tensors, all layers together: MimIC's `w`, `b`, `u`, or LIVE's shift
/// `a v`. A heads-as-inputs graph takes it as the input `heads.{kind}` (`[batch, layers, ..]`);
/// a graph with heads folded in holds layer `l`'s part as the initializer `heads.{kind}.{l}`;
/// the heads file holds MimIC's as `mimic.{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadParam {
    #[serde(rename = "heads.w")]
    W,
    #[serde(rename = "heads.b")]
    B,
    #[serde(rename = "heads.u")]
    U,
    #[serde(rename = "heads.live")]
    Live,
}

impl HeadParam {
    /// `w`, `b`, `u` or `live`.
    pub fn kind(self) -> &'static str {
        match self {
            HeadParam::W => "w",
            HeadParam::B => "b",
            HeadParam::U => "u",
            HeadParam::Live => "live",
        }
    }

    /// The graph input's name, `heads.{kind}`.
    pub fn input_name(self) -> &'static str {
        match self {
            HeadParam::W => "heads.w",
            HeadParam::B => "heads.b",
            HeadParam::U => "heads.u",
            HeadParam::Live => "heads.live",
        }
    }
}

/// The last component of `path` (the whole path when it has none): what a contract records of
/// the files a folder was compiled from.
pub fn recorded_name(path: &Path) -> PathBuf {
    path.file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| path.to_path_buf())
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
        self.dtype == Dtype::Fp16
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(CONTRACT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        Self::from_json(&text, &path)
    }

    /// Parses the text of a contract file; `path` only names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let c: Contract = serde_json::from_str(text)
            .map_err(|e| ModelError::format(path, format!("invalid contract: {e}")))?;
        if c.contract_version != CONTRACT_VERSION {
            return Err(ModelError::format(
                path,
                format!(
                    "contract version {} but this build reads {CONTRACT_VERSION}; recompile",
                    c.contract_version
                ),
            ));
        }
        Ok(c)
    }
}
