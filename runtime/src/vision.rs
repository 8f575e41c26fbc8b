//! A compiled vision tower (`vision.onnx`, see `compiler/src/vision.rs`) in an ONNX Runtime
//! session: pixel values in, image hidden states out.
use std::path::Path;

use mimic_models::vision::io::{
    hidden_state_output, IMAGE_FEATURES, IMAGE_HIDDEN_STATES, PATCH_ATTENTION_MASK,
    PATCH_POSITION_IDS, PIXEL_VALUES, VISION_MODEL_FILE,
};
use mimic_models::HostTensor;
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::{DynValue, Tensor};

use crate::session::{ExecutionProvider, SessionOptions};
use crate::{Result, RuntimeError};

/// A vision tower's or image encoder's session (CPU).
pub struct VisionModel {
    session: Session,
}

/// A CPU session over the graph at `path`, sharing the process's thread pool where it can.
pub(crate) fn cpu_session(path: &Path, opts: &SessionOptions) -> Result<Session> {
    crate::init_onnxruntime()?;
    if !path.is_file() {
        return Err(RuntimeError::File {
            path: path.to_path_buf(),
            msg: "not found".into(),
        });
    }
    let (env, shared_pool) = crate::environment::environment(opts.threads)?;
    let mut builder =
        Session::builder(env)?.with_optimization_level(GraphOptimizationLevel::Level3)?;
    if !shared_pool {
        builder = builder
            .with_independent_thread_pool()?
            .with_intra_threads(opts.threads)?;
    }
    builder
        .commit_from_file(path)
        .map_err(|e| RuntimeError::File {
            path: path.to_path_buf(),
            msg: format!("ONNX Runtime cannot load it: {e}"),
        })
}

/// One run's outputs.
pub struct VisionOutput {
    /// `[n_images, n_patches, hidden]`.
    pub hidden: HostTensor,
    /// `hidden_states[k]` by `k`, when the graph exposes them.
    pub hidden_states: Vec<HostTensor>,
}

fn host(value: &DynValue) -> Result<HostTensor> {
    let (shape, data) = value.try_extract_tensor::<f32>()?;
    Ok(HostTensor::new(
        shape.iter().map(|&d| d as usize).collect(),
        data.to_vec(),
    ))
}

impl VisionModel {
    /// Loads `dir/vision.onnx`.
    pub fn load(dir: &Path, opts: &SessionOptions) -> Result<Self> {
        if opts.provider != ExecutionProvider::Cpu {
            return Err(RuntimeError::Other(
                "vision towers run on the CPU provider only, for now".into(),
            ));
        }
        let session = cpu_session(&dir.join(VISION_MODEL_FILE), opts)?;
        Ok(VisionModel { session })
    }

    /// Runs the tower on `pixel_values [n, channels, height, width]`; a graph compiled for
    /// padded batches also takes the patches' position ids and mask (`[n, n_patches]` each).
    pub fn run(
        &mut self,
        pixel_values: &HostTensor,
        patches: Option<(&[i64], &[i64])>,
    ) -> Result<VisionOutput> {
        let mut inputs: Vec<(String, DynValue)> = vec![(
            PIXEL_VALUES.into(),
            Tensor::from_array((pixel_values.shape.clone(), pixel_values.data.clone()))?.into_dyn(),
        )];
        if let Some((ids, mask)) = patches {
            let n = pixel_values.shape.first().copied().unwrap_or(0);
            let per = ids.len() / n.max(1);
            inputs.push((
                PATCH_POSITION_IDS.into(),
                Tensor::from_array(([n, per], ids.to_vec()))?.into_dyn(),
            ));
            inputs.push((
                PATCH_ATTENTION_MASK.into(),
                Tensor::from_array(([n, per], mask.to_vec()))?.into_dyn(),
            ));
        }
        let mut outputs = self.session.run(inputs)?;
        // A tower's hidden states, or an image encoder's image tokens.
        let hidden = outputs
            .remove(IMAGE_HIDDEN_STATES)
            .or_else(|| outputs.remove(IMAGE_FEATURES))
            .ok_or_else(|| {
                RuntimeError::Other(format!(
                    "output {IMAGE_HIDDEN_STATES} or {IMAGE_FEATURES} missing"
                ))
            })?;
        let hidden = host(&hidden)?;
        let mut hidden_states = Vec::new();
        while let Some(v) = outputs.remove(hidden_state_output(hidden_states.len())) {
            hidden_states.push(host(&v)?);
        }
        Ok(VisionOutput {
            hidden,
            hidden_states,
        })
    }
}
