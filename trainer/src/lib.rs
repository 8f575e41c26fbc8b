//! The libtorch side of mimic: the model definition executed eagerly with autograd
//! ([`torch_backend`]), with the hooks training needs (record activations, shift attention).
pub mod align;
pub mod eval;
pub mod optim;
pub mod rices;
pub mod shift;
pub mod stats;
pub mod torch_backend;
pub mod torch_vision;
pub mod torch_vlm;
pub mod train;

// Tasks and the sampler need no libtorch: they live in the models crate.
pub use mimic_models::{rng, task};
pub use torch_backend::{
    AttentionShift, Forward, ForwardOutput, KvCache, SiteShift, TorchLm, TorchModel,
};
pub use torch_vision::{TorchVision, VisionForward, VisionOutput};
pub use torch_vlm::TorchVlm;

/// Errors of the trainer crate.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error(transparent)]
    Model(#[from] mimic_models::ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

/// `cuda` when libtorch was built and linked with CUDA and a device is visible, else `cpu`.
pub fn best_device() -> tch::Device {
    tch::Device::cuda_if_available()
}

/// Parses `cpu`, `cuda` or `cuda:N`, refusing CUDA when this libtorch cannot use it.
pub fn parse_device(s: &str) -> Result<tch::Device> {
    let dev = match s {
        "cpu" => tch::Device::Cpu,
        "cuda" => tch::Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => tch::Device::Cuda(n),
            None => {
                return Err(TrainerError::Other(format!(
                    "unknown device `{s}` (cpu, cuda, cuda:N)"
                )))
            }
        },
    };
    if let tch::Device::Cuda(n) = dev {
        let count = tch::Cuda::device_count();
        if !tch::Cuda::is_available() || n as i64 >= count {
            return Err(TrainerError::Other(format!(
                "device `{s}` requested but libtorch sees {count} CUDA device(s); \
                 build with `--features cuda` against a CUDA libtorch"
            )));
        }
    }
    Ok(dev)
}

/// Serialises float32 tensors with string metadata as safetensors bytes.
pub fn safetensors_bytes(
    tensors: &[(String, tch::Tensor)],
    meta: std::collections::HashMap<String, String>,
) -> Result<Vec<u8>> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let t = t
                .detach()
                .to_device(tch::Device::Cpu)
                .to_kind(tch::Kind::Float)
                .contiguous();
            let shape: Vec<usize> = t.size().iter().map(|&x| x as usize).collect();
            let v = Vec::<f32>::try_from(&t.view([-1]))?;
            Ok((
                n.clone(),
                shape,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ))
        })
        .collect::<Result<_>>()?;
    let views = data
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| TrainerError::Other(format!("{n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(meta)).map_err(|e| TrainerError::Other(e.to_string()))
}
