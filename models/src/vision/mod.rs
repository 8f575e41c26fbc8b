//! Vision towers, the image encoders of the vision-language models, written once over
//! [`backend::VisionBackend`] as the decoder is over [`crate::backend::Backend`].
//!
//! * [`backend`]: the operations a vision transformer needs.
//! * [`patches`]: patch masks and bucketed position ids of padded batches (Idefics2/3).
//! * [`siglip`]: the SigLIP vision transformer (Idefics2, Idefics3 / SmolVLM, LLaVA-interleave).
pub mod backend;
pub mod patches;
pub mod siglip;

pub use backend::{Activation, VisionAttentionSpec, VisionBackend};
pub use siglip::{Features, SiglipVision, SiglipVisionConfig};
