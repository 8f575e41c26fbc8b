//! From a model and trained heads to an ONNX folder the runtime executes: [`emit`] records
//! the model definition as ONNX nodes, [`attention`] writes each layer's attention in the
//! form asked for (fused, unfused, or mimic's kernel, each with MimIC heads or without),
//! [`fold`] brings the other heads in (LIVE, LoRA, heads as graph inputs), [`graph`] builds
//! protobuf graphs with weights as external data, [`check`] verifies the result before it
//! is written, and [`compile`] writes the folder with its contract. [`vision`] emits the
//! vision towers and image encoders the same way, and [`vlm`] a vision-language model's
//! folder of three graphs.
pub mod attention;
pub mod blocks;
pub mod check;
pub mod compile;
pub mod cross;
pub mod emit;
pub mod fold;
pub mod graph;
pub mod passes;
pub mod vision;
pub mod vlm;

/// The ONNX protobuf types, generated from the vendored `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use compile::{compile_model, CompileOptions, DEFAULT_PASSES};
pub use fold::HeadsSource;
pub use mimic_models::contract::{AttentionImpl, Contract, Dtype};
pub use passes::Pass;
pub use vlm::compile_vlm;

/// Errors of the compiler crate.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Model(#[from] mimic_models::ModelError),
    /// The I/O error in the message only, not as a source too: `{:#}` would print it twice.
    #[error("{path}: {error}")]
    Io {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("emitted graph failed its structural check: {0}")]
    Check(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = CompileError> = std::result::Result<T, E>;

impl CompileError {
    pub fn io(path: impl Into<std::path::PathBuf>, error: std::io::Error) -> Self {
        CompileError::Io {
            path: path.into(),
            error,
        }
    }
}
