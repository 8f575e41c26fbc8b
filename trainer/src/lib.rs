//! The libtorch side of mimic: the model definition executed eagerly with autograd
//! ([`torch_backend`]), with the hooks training needs (record activations, shift attention).
pub mod eval;
pub mod optim;
pub mod rng;
pub mod shift;
pub mod task;
pub mod torch_backend;
pub mod train;

pub use torch_backend::{
    AttentionShift, Forward, ForwardOutput, KvCache, SiteShift, TorchLm, TorchModel,
};

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

/// Reads only the string metadata of a safetensors file.
pub fn read_safetensors_metadata(
    path: &std::path::Path,
) -> Result<std::collections::HashMap<String, String>> {
    use std::io::Read;
    let err = |msg: String| TrainerError::Other(format!("{}: {msg}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| err("not a safetensors file: too short".into()))?;
    let n = u64::from_le_bytes(len);
    let size = f.metadata().map_err(|e| err(e.to_string()))?.len();
    if n > size.saturating_sub(8) || n > 100 << 20 {
        return Err(err(format!("not a safetensors file: header of {n} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| err(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| err(format!("not a safetensors file: {e}")))?;
    Ok(v.get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// Reads float32 tensors and metadata from safetensors bytes.
pub fn read_safetensors(
    path: &std::path::Path,
) -> Result<(
    std::collections::HashMap<String, tch::Tensor>,
    std::collections::HashMap<String, String>,
)> {
    let err = |msg: String| TrainerError::Other(format!("{}: {msg}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let mut out = std::collections::HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(err(format!(
                "tensor {name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let shape: Vec<i64> = view.shape().iter().map(|&x| x as i64).collect();
        out.insert(name, tch::Tensor::from_slice(&v).view(shape.as_slice()));
    }
    Ok((out, meta))
}
