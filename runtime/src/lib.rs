//! Executes compiled folders with ONNX Runtime: finding and loading the library
//! ([`environment`]), sessions with a key/value cache for generation ([`session`]), vision
//! towers ([`vision`]).
//! No libtorch here: a deployment needs ONNX Runtime and the compiled folder only.
pub mod batch;
pub mod cross;
pub mod environment;
pub mod heads;
pub mod kernel;
pub mod session;
pub mod vision;

pub use environment::{init_onnxruntime, OrtInfo};
pub use heads::HeadsBatch;
pub use session::{CompiledModel, ExecutionProvider, OnnxLm, SessionOptions};
pub use vision::VisionModel;

/// Errors of the runtime crate.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    #[error("{path}: {msg}")]
    File {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl<R> From<ort::Error<R>> for RuntimeError {
    fn from(e: ort::Error<R>) -> Self {
        // ort's builder errors carry the builder and are not Send + Sync: keep the message.
        RuntimeError::Ort(e.to_string())
    }
}
