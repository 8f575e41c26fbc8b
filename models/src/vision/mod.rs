//! Vision towers, the image encoders of the vision-language models, written once over
//! [`backend::VisionBackend`] as the decoder is over [`crate::backend::Backend`].
//!
//! * [`backend`]: the operations a vision transformer needs.
//! * [`patches`]: patch masks and bucketed position ids of padded batches (Idefics2/3).
//! * [`siglip`]: the SigLIP vision transformer (Idefics2, Idefics3 / SmolVLM, LLaVA-interleave).
pub mod backend;
pub mod patches;
pub mod siglip;

pub use backend::{Activation, ConnectorSite, VisionAttentionSpec, VisionBackend};
pub use siglip::{Features, SiglipVision, SiglipVisionConfig};

/// The inputs and outputs of a compiled vision tower (`compiler/src/vision.rs`).
pub mod io {
    /// The compiled tower inside its folder, and its weights beside it.
    pub const VISION_MODEL_FILE: &str = "vision.onnx";
    pub const VISION_DATA_FILE: &str = "vision.onnx.data";
    /// `[n_images, channels, height, width]` float32.
    pub const PIXEL_VALUES: &str = "pixel_values";
    /// `[n_images, n_patches]` int64 (padded batches only, [`super::patches`]).
    pub const PATCH_POSITION_IDS: &str = "patch_position_ids";
    /// `[n_images, n_patches]` int64, 1 for a real patch (padded batches only).
    pub const PATCH_ATTENTION_MASK: &str = "patch_attention_mask";
    /// `[n_images, n_patches, hidden]` float32.
    pub const IMAGE_HIDDEN_STATES: &str = "image_hidden_states";
    /// A vision-language model's image encoder (tower and connector): its output,
    /// `[n_images, tokens_per_image, text_hidden]` float32; and the embedding graph's input,
    /// `[n_image_tokens, text_hidden]`.
    pub const IMAGE_FEATURES: &str = "image_features";
    /// A vision-language model's embedding graph, and its weights.
    pub const EMBED_MODEL_FILE: &str = "embed.onnx";
    pub const EMBED_DATA_FILE: &str = "embed.onnx.data";
    /// A processor's config copied into a compiled folder.
    pub const PROCESSOR_FILE: &str = "preprocessor_config.json";

    /// The output holding `hidden_states[k]`, when the graph exposes them.
    pub fn hidden_state_output(k: usize) -> String {
        format!("hidden_states.{k}")
    }
}
