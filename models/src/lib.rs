//! Model architectures written once over a tensor-operation trait ([`backend::Backend`]), with
//! loaders for Hugging Face folders and GGUF files, tokenizers, and the default model.
pub mod backend;
pub mod batch;
pub mod beam;
pub mod config;
pub mod contract;
pub mod datasets;
pub mod default_model;
pub mod error;
pub mod files;
pub mod generate;
pub mod gguf;
pub mod heads;
pub mod image;
pub mod kernel_op;
pub mod llama;
pub mod prompt;
pub mod quant;
pub mod rng;
pub mod task;
pub mod tokenizer;
pub mod vision;
pub mod vlm;
pub mod weights;

pub use config::{Architecture, LlamaConfig};
pub use default_model::Model;
pub use error::{ModelError, Result};
pub use heads::{Heads, Method};
pub use weights::{HostTensor, Weights};
