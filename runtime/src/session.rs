//! A compiled folder loaded into an ONNX Runtime session, run with a key/value cache.
use std::path::{Path, PathBuf};

use mimic_models::contract::{
    past_key, past_value, present_key, present_value, AttentionImpl, Contract, ATTENTION_MASK,
    IMAGE_SLOTS, INPUTS_EMBEDS, INPUT_IDS, LOGITS, MODEL_FILE, POSITION_IDS,
};
use mimic_models::generate::CausalLm;
use mimic_models::vision::io::IMAGE_FEATURES;
use mimic_models::vlm::inputs::EncoderInputs;
use mimic_models::HostTensor;
use ort::session::SessionInputValue;
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::{DynValue, Tensor};

use crate::cross::{CrossShape, CrossState};
use crate::heads::HeadsBatch;
use crate::vision::VisionModel;
use crate::{Result, RuntimeError};

/// Which ONNX Runtime execution provider runs the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
    TensorRt,
}

impl std::str::FromStr for ExecutionProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "tensorrt" | "trt" => Ok(Self::TensorRt),
            _ => Err(format!(
                "unknown execution provider `{s}` (cpu, cuda, tensorrt)"
            )),
        }
    }
}

impl ExecutionProvider {
    /// The name ONNX Runtime lists it under.
    pub fn ort_name(self) -> &'static str {
        match self {
            Self::Cpu => "CPUExecutionProvider",
            Self::Cuda => "CUDAExecutionProvider",
            Self::TensorRt => "TensorrtExecutionProvider",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Intra-op threads; 0 lets ONNX Runtime choose (one per core). Sessions of the same
    /// count share the process's pool ([`crate::environment`]).
    pub threads: usize,
    pub provider: ExecutionProvider,
    /// Run on CPU when the requested provider is missing instead of failing.
    pub fallback_cpu: bool,
    /// TensorRT: build fp16 engines.
    pub tensorrt_fp16: bool,
    /// TensorRT: where built engines are cached (default: `trt-cache` in the compiled folder).
    pub tensorrt_cache: Option<PathBuf>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: 0,
            provider: ExecutionProvider::Cpu,
            fallback_cpu: false,
            tensorrt_fp16: false,
            tensorrt_cache: None,
        }
    }
}

/// The per-layer `present.*` outputs of the last run, fed back as `past_key_values.*`.
pub struct KvState {
    layers: Vec<(DynValue, DynValue)>,
    /// The attention mask covering every cached position.
    mask: Vec<i64>,
    /// A cross-attention decoder's images so far.
    cross: Option<CrossState>,
}

impl KvState {
    /// Cached positions (of a batch-1 state; the mask's length per row otherwise times rows).
    pub fn len(&self) -> usize {
        self.mask.len()
    }

    /// The state of a new batch whose row `i` is a copy of this one's row `rows[i]` (beam
    /// search reordering its beams).
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvState> {
        // A float32 cache, or the float16 one of an fp16 graph.
        let gather = |value: &DynValue| match value.try_extract_tensor::<f32>() {
            Ok(_) => gather_rows::<f32>(value, rows),
            Err(_) => gather_rows::<half::f16>(value, rows),
        };
        let batch = self.layers.first().map_or(1, |(k, _)| {
            k.shape().first().copied().unwrap_or(1).max(1) as usize
        });
        let per_row = self.mask.len() / batch;
        let mask = rows
            .iter()
            .flat_map(|&r| self.mask[r * per_row..(r + 1) * per_row].iter().copied())
            .collect();
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((gather(k)?, gather(v)?)))
            .collect::<Result<_>>()?;
        let cross = self
            .cross
            .as_ref()
            .map(|c| c.select_rows(rows))
            .transpose()?;
        Ok(KvState {
            layers,
            mask,
            cross,
        })
    }
    pub fn is_empty(&self) -> bool {
        self.mask.is_empty()
    }
}

/// The tensor whose row `i` (along the first axis) is `value`'s row `rows[i]`.
pub(crate) fn gather_rows<T>(value: &DynValue, rows: &[usize]) -> Result<DynValue>
where
    T: ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static,
{
    let (shape, data) = value.try_extract_tensor::<T>()?;
    let mut dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let per = dims[1..].iter().product::<usize>();
    let out: Vec<T> = rows
        .iter()
        .flat_map(|&r| data[r * per..(r + 1) * per].iter().copied())
        .collect();
    dims[0] = rows.len();
    Ok(Tensor::from_array((dims, out))?.into_dyn())
}

/// What one run returns.
pub struct RunOutput {
    /// `[batch, positions, vocab]` with positions 1 for last-only graphs.
    pub logits: Vec<f32>,
    pub logits_shape: Vec<usize>,
    pub state: KvState,
}

/// A compiled folder with its ONNX Runtime session.
pub struct CompiledModel {
    pub dir: PathBuf,
    pub contract: Contract,
    session: Session,
    pub provider: ExecutionProvider,
    /// The `heads.*` inputs of a heads-as-inputs graph; `None` runs every row without heads.
    heads: Option<HeadsBatch>,
    /// The cache slots of folded fused MimIC heads, per layer (keys, values).
    folded_slots: Vec<(Vec<f32>, Vec<f32>)>,
    /// A vision-language model's image encoder and embedding graphs.
    vision: Option<VisionGraphs>,
}

/// The two graphs beside a vision-language model's decoder, and the image tokens waiting for
/// the next run.
struct VisionGraphs {
    encoder: VisionModel,
    /// The embedding graph (image tokens in place of `<image>`'s).
    embed: Option<Session>,
    /// A cross-attention decoder's shape, and its cross graph (none when the decoder
    /// projects the latents itself).
    cross: Option<(Option<Session>, CrossShape)>,
    /// `[n_image_tokens, hidden]`, for the next run's `<image>` tokens; a cross-attention
    /// decoder's latents `[n_images, latents, kv_input_dim]`.
    pending: Option<HostTensor>,
}

impl CompiledModel {
    /// Loads `dir/model.onnx` with the contract beside it.
    pub fn load(dir: &Path, opts: &SessionOptions) -> Result<Self> {
        let info = crate::init_onnxruntime()?;
        let contract = Contract::read(dir).map_err(|e| RuntimeError::Other(e.to_string()))?;
        let model_path = dir.join(MODEL_FILE);
        if !model_path.is_file() {
            return Err(RuntimeError::File {
                path: model_path,
                msg: "not found".into(),
            });
        }
        let mut provider = opts.provider;
        if !info.providers.iter().any(|p| p == provider.ort_name()) {
            if opts.fallback_cpu {
                tracing::warn!(
                    requested = provider.ort_name(),
                    "provider unavailable, falling back to CPU"
                );
                provider = ExecutionProvider::Cpu;
            } else {
                return Err(RuntimeError::Other(format!(
                    "execution provider {} is not in this ONNX Runtime ({}; has {:?}); pass --fallback cpu to run on CPU",
                    provider.ort_name(),
                    info.library.display(),
                    info.providers
                )));
            }
        }
        let (env, shared_pool) = crate::environment::environment(opts.threads)?;
        let mut builder =
            Session::builder(env)?.with_optimization_level(GraphOptimizationLevel::Level3)?;
        // mimic's own operators, for graphs compiled with `--attention kernel`.
        let kernel = contract.attention == AttentionImpl::Kernel;
        if kernel {
            if provider != ExecutionProvider::Cpu {
                tracing::warn!(
                    provider = provider.ort_name(),
                    "mimic's attention kernel runs on the CPU; compile with --attention fused for this provider"
                );
            }
            builder = builder.with_operators(crate::kernel::domain()?)?;
        }
        if !shared_pool {
            builder = builder
                .with_independent_thread_pool()?
                .with_intra_threads(opts.threads)?;
        }
        // Diagnostics: ONNX Runtime's per-node profile, and the graph after its own fusions.
        if let Ok(prefix) = std::env::var("MIMIC_ORT_PROFILE") {
            builder = builder.with_profiling(&prefix)?;
        }
        if let Ok(path) = std::env::var("MIMIC_ORT_OPTIMIZED_MODEL") {
            builder = builder.with_optimized_model_path(&path)?;
        }
        builder = match provider {
            ExecutionProvider::Cpu => builder,
            ExecutionProvider::Cuda => builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])?,
            ExecutionProvider::TensorRt => {
                let cache = opts
                    .tensorrt_cache
                    .clone()
                    .unwrap_or_else(|| dir.join("trt-cache"));
                builder.with_execution_providers([ort::ep::TensorRT::default()
                    .with_engine_cache(true)
                    .with_engine_cache_path(cache.display().to_string())
                    .with_fp16(opts.tensorrt_fp16)
                    .build()
                    .error_on_failure()])?
            }
        };
        let folded_slots = match &contract.heads {
            Some(h) if !h.per_request() && contract.kv_cache.slots > 0 => {
                let path = dir.join(mimic_models::heads::SLOTS_FILE);
                mimic_models::heads::read_cache_slots(&path, contract.kv_cache.num_layers)
                    .map_err(|e| RuntimeError::Other(e.to_string()))?
                    .into_iter()
                    .map(|(k, v)| (k.data, v.data))
                    .collect()
            }
            _ => vec![],
        };
        // ONNX Runtime adds a custom domain to a process-wide table as a session is built,
        // and two sessions doing so at once can collide: build those one at a time.
        let _one_at_a_time = kernel.then(|| crate::kernel::REGISTRATION.lock());
        let session = builder
            .commit_from_file(&model_path)
            .map_err(|e| RuntimeError::File {
                path: model_path.clone(),
                msg: format!("ONNX Runtime cannot load it: {e}"),
            })?;
        let vision = match &contract.vision {
            None => None,
            Some(v) => {
                let cpu = SessionOptions {
                    provider: ExecutionProvider::Cpu,
                    ..opts.clone()
                };
                let embed = v
                    .embed_model
                    .as_ref()
                    .map(|f| crate::vision::cpu_session(&dir.join(f), &cpu))
                    .transpose()?;
                let cross = match (&v.cross_kv_model, CrossShape::of(&v.config.text)) {
                    (Some(f), Some(shape)) => {
                        Some((Some(crate::vision::cpu_session(&dir.join(f), &cpu)?), shape))
                    }
                    (None, Some(shape)) => Some((None, shape)),
                    (None, None) => None,
                    (Some(_), None) => {
                        return Err(RuntimeError::File {
                            path: dir.join(mimic_models::contract::CONTRACT_FILE),
                            msg: "names a cross graph (cross_kv_model) for a decoder without \
                                  cross-attention"
                                .into(),
                        })
                    }
                };
                if embed.is_none() && cross.is_none() {
                    return Err(RuntimeError::File {
                        path: dir.join(mimic_models::contract::CONTRACT_FILE),
                        msg: "a vision-language model needs an embedding graph (embed_model)"
                            .into(),
                    });
                }
                Some(VisionGraphs {
                    encoder: VisionModel::load(dir, &cpu)?,
                    embed,
                    cross,
                    pending: None,
                })
            }
        };
        Ok(CompiledModel {
            dir: dir.to_path_buf(),
            contract,
            session,
            provider,
            heads: None,
            folded_slots,
            vision,
        })
    }

    /// Whether this is a vision-language model (it takes images).
    pub fn takes_images(&self) -> bool {
        self.vision.is_some()
    }

    /// Runs the image encoder: the image tokens `[n_images, tokens_per_image, hidden]` of
    /// `inputs`' images. An error on a text model.
    pub fn encode_images(&mut self, inputs: &EncoderInputs) -> Result<HostTensor> {
        let dir = self.dir.display().to_string();
        let v = self.vision.as_mut().ok_or_else(|| {
            RuntimeError::Other(format!("{dir} is a text model: it takes no images"))
        })?;
        let patches = match (&inputs.position_ids, &inputs.patch_mask) {
            (Some(ids), Some(mask)) => Some((ids.as_slice(), mask.as_slice())),
            _ => None,
        };
        Ok(v.encoder.run(&inputs.pixel_values, patches)?.hidden)
    }

    /// The image tokens (`[n_images, tokens_per_image, hidden]` or `[n_tokens, hidden]`) that
    /// the next run puts in place of its `<image>` tokens, in order.
    pub fn set_images(&mut self, features: HostTensor) -> Result<()> {
        let dir = self.dir.display().to_string();
        let v = self.vision.as_mut().ok_or_else(|| {
            RuntimeError::Other(format!("{dir} is a text model: it takes no images"))
        })?;
        v.pending = Some(features);
        Ok(())
    }

    /// `inputs_embeds` of a vision-language model's run: its embedding graph over `ids`
    /// with the pending image tokens, whose count must match the `<image>` tokens.
    fn input_embeds(&mut self, batch: usize, ids: &[i64]) -> Result<Option<DynValue>> {
        let Some(v) = self.vision.as_mut() else {
            return Ok(None);
        };
        let Some(embed) = v.embed.as_mut() else {
            // A cross-attention decoder takes input ids.
            return Ok(None);
        };
        let vc = self
            .contract
            .vision
            .as_ref()
            .expect("vision graphs imply a contract");
        let hidden = vc.config.text.hidden_size;
        let image_id = vc.config.image_token_id as i64;
        let placeholders = ids.iter().filter(|&&t| t == image_id).count();
        let features = v.pending.take();
        let rows = features.as_ref().map_or(0, |f| f.data.len() / hidden);
        if placeholders != rows {
            let per_image = vc.tokens_per_image.max(1);
            return Err(RuntimeError::Other(format!(
                "the prompt holds {placeholders} image tokens ({} images' worth at {per_image}                  per image) but {} images were given",
                placeholders as f64 / per_image as f64,
                rows / per_image
            )));
        }
        let data = features.map(|f| f.data).unwrap_or_default();
        let seq = ids.len() / batch.max(1);
        let inputs: Vec<(String, DynValue)> = vec![
            (
                INPUT_IDS.into(),
                Tensor::from_array(([batch, seq], ids.to_vec()))?.into_dyn(),
            ),
            (
                IMAGE_FEATURES.into(),
                Tensor::from_array(([rows, hidden], data))?.into_dyn(),
            ),
        ];
        let mut out = embed.run(inputs)?;
        let embeds = out
            .remove(INPUTS_EMBEDS)
            .ok_or_else(|| RuntimeError::Other(format!("output {INPUTS_EMBEDS} missing")))?;
        Ok(Some(embeds))
    }

    /// Whether the graph takes heads as inputs.
    pub fn takes_heads(&self) -> bool {
        self.contract
            .heads
            .as_ref()
            .is_some_and(|h| h.per_request())
    }

    /// The heads of the rows of the next runs (one per row, or one for every row); `None`
    /// entries run without heads. An error on a graph without heads inputs.
    pub fn set_heads(&mut self, rows: &[Option<&mimic_models::Heads>]) -> Result<()> {
        if !self.takes_heads() {
            return Err(RuntimeError::Other(format!(
                "{} was not compiled with --heads-as-inputs: its heads are fixed",
                self.dir.display()
            )));
        }
        self.heads = Some(HeadsBatch::new(&self.contract, rows)?);
        Ok(())
    }

    /// The heads of `batch` rows: those set, or none for every row.
    /// (Borrowed when set for exactly this batch: `run` asks at every step.)
    fn heads_for(&self, batch: usize) -> Result<std::borrow::Cow<'_, HeadsBatch>> {
        use std::borrow::Cow;
        match &self.heads {
            Some(h) if h.rows == batch => Ok(Cow::Borrowed(h)),
            Some(h) => h.for_batch(batch).map(Cow::Owned),
            None => HeadsBatch::new(&self.contract, &vec![None; batch]).map(Cow::Owned),
        }
    }

    /// An empty cache for `batch` rows: no entries, or just the MimIC slots of a fused graph
    /// (those folded in, or each row's heads as set by [`CompiledModel::set_heads`]).
    pub fn empty_state(&self, batch: usize) -> Result<KvState> {
        let kv = &self.contract.kv_cache;
        let (key_dim, value_dim) = (kv.key_dim, kv.value_dim);
        let slots = kv.slots;
        let per_request = match (slots, self.takes_heads()) {
            (0, _) | (_, false) => None,
            (_, true) => Some(self.heads_for(batch)?),
        };
        let mut layers = Vec::with_capacity(kv.num_layers);
        for l in 0..kv.num_layers {
            let (keys, values) = match (&per_request, slots) {
                (_, 0) => (vec![], vec![]),
                (Some(h), _) => h.slots[l].clone(),
                (None, _) => {
                    let (k, v) = &self.folded_slots[l];
                    (k.repeat(batch), v.repeat(batch))
                }
            };
            let k_shape = [batch, kv.num_kv_heads, slots, key_dim];
            let v_shape = [batch, kv.num_kv_heads, slots, value_dim];
            layers.push(if self.contract.is_fp16() {
                let half = |x: Vec<f32>| x.into_iter().map(half::f16::from_f32).collect::<Vec<_>>();
                (
                    Tensor::from_array((k_shape, half(keys)))?.into_dyn(),
                    Tensor::from_array((v_shape, half(values)))?.into_dyn(),
                )
            } else {
                (
                    Tensor::from_array((k_shape, keys))?.into_dyn(),
                    Tensor::from_array((v_shape, values))?.into_dyn(),
                )
            });
        }
        Ok(KvState {
            layers,
            mask: vec![],
            cross: None,
        })
    }

    /// Runs one step for batch 1: `ids` appended to the cached sequence (all real tokens).
    pub fn step(&mut self, ids: &[u32], state: KvState) -> Result<RunOutput> {
        let past = state.len();
        let positions: Vec<i64> = (past..past + ids.len()).map(|p| p as i64).collect();
        let mut mask = state.mask.clone();
        mask.extend(std::iter::repeat_n(1i64, ids.len()));
        let ids: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
        self.run(1, &ids, &mask, &positions, state)
    }

    /// Runs the graph: `ids` and `positions` `[batch, seq]`, `mask` `[batch, past + seq]`.
    pub fn run(
        &mut self,
        batch: usize,
        ids: &[i64],
        mask: &[i64],
        positions: &[i64],
        state: KvState,
    ) -> Result<RunOutput> {
        let seq = ids.len() / batch.max(1);
        let total = mask.len() / batch.max(1);
        let max = self.contract.max_positions;
        if total > max {
            return Err(RuntimeError::Other(format!(
                "sequence of {total} tokens is longer than the model's context of {max}"
            )));
        }
        let n = self.contract.kv_cache.num_layers;
        let KvState {
            layers: past_layers,
            mask: past_mask,
            cross,
        } = state;
        let cross = self.advance_cross(cross, batch, ids, mask, past_mask.is_empty())?;
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(4 + 2 * n);
        match self.input_embeds(batch, ids)? {
            Some(embeds) => inputs.push((INPUTS_EMBEDS.into(), embeds.into())),
            None => inputs.push((
                INPUT_IDS.into(),
                Tensor::from_array(([batch, seq], ids.to_vec()))?
                    .into_dyn()
                    .into(),
            )),
        }
        if let Some((state, slots)) = &cross {
            inputs.push((
                IMAGE_SLOTS.into(),
                Tensor::from_array(([batch, seq], slots.clone()))?
                    .into_dyn()
                    .into(),
            ));
            for (name, value) in state.graph_inputs() {
                inputs.push((name, value.into()));
            }
        }
        inputs.push((
            ATTENTION_MASK.into(),
            Tensor::from_array(([batch, total], mask.to_vec()))?
                .into_dyn()
                .into(),
        ));
        inputs.push((
            POSITION_IDS.into(),
            Tensor::from_array(([batch, seq], positions.to_vec()))?
                .into_dyn()
                .into(),
        ));
        for (l, (k, v)) in past_layers.into_iter().enumerate() {
            inputs.push((past_key(l), k.into()));
            inputs.push((past_value(l), v.into()));
        }
        let takes_inputs = self
            .contract
            .heads
            .as_ref()
            .is_some_and(|h| !h.inputs.is_empty());
        if takes_inputs {
            let heads = self.heads_for(batch)?;
            for (name, dims, data) in &heads.tensors {
                let value = Tensor::from_array((dims.clone(), data.clone()))?.into_dyn();
                inputs.push((name.clone(), value.into()));
            }
        }
        let mut outputs = self.session.run(inputs)?;
        let (shape, logits) = outputs[LOGITS].try_extract_tensor::<f32>()?;
        let logits_shape = shape.iter().map(|&d| d as usize).collect();
        let logits = logits.to_vec();
        let mut layers = Vec::with_capacity(n);
        for l in 0..n {
            let missing =
                |name: String| RuntimeError::Other(format!("graph output {name} missing"));
            let k = outputs
                .remove(present_key(l))
                .ok_or_else(|| missing(present_key(l)))?;
            let v = outputs
                .remove(present_value(l))
                .ok_or_else(|| missing(present_value(l)))?;
            layers.push((k, v));
        }
        drop(outputs);
        Ok(RunOutput {
            logits,
            logits_shape,
            state: KvState {
                layers,
                mask: mask.to_vec(),
                cross: cross.map(|(c, _)| c),
            },
        })
    }

    /// A cross-attention decoder's images for a run: the pending latents' keys and values
    /// added to the state (a new state for a new sequence), and the slot each new token
    /// reads. `None` for other models. A run with cached tokens and no pending images feeds
    /// generated tokens ([`crate::cross`]).
    fn advance_cross(
        &mut self,
        cross: Option<CrossState>,
        batch: usize,
        ids: &[i64],
        mask: &[i64],
        new_sequence: bool,
    ) -> Result<Option<(CrossState, Vec<i64>)>> {
        let Some(v) = self.vision.as_mut() else {
            return Ok(None);
        };
        let Some((session, shape)) = v.cross.as_mut() else {
            return Ok(None);
        };
        let mut state = match cross {
            Some(c) => c,
            None => CrossState::empty(shape, batch, session.is_none())?,
        };
        let latents = v.pending.take();
        let generating = !new_sequence && latents.is_none();
        let seq = ids.len() / batch.max(1);
        let total = mask.len() / batch.max(1);
        // The mask's entries for the new tokens, row by row.
        let real: Vec<i64> = mask
            .chunks(total.max(1))
            .flat_map(|row| row[total - seq..].iter().copied())
            .collect();
        let vc = self
            .contract
            .vision
            .as_ref()
            .expect("vision graphs imply a contract");
        let slots = state.advance(
            session.as_mut(),
            shape,
            latents,
            ids,
            &real,
            batch,
            vc.config.image_token_id,
            &self.contract.config.eos_token_ids,
            generating,
        )?;
        Ok(Some((state, slots)))
    }
}

/// Greedy generation through ONNX Runtime, batch 1.
pub struct OnnxLm<'m> {
    pub model: &'m mut CompiledModel,
    state: Option<KvState>,
}

impl<'m> OnnxLm<'m> {
    pub fn new(model: &'m mut CompiledModel) -> Self {
        OnnxLm { model, state: None }
    }
}

impl mimic_models::beam::BeamLm for OnnxLm<'_> {
    type Error = RuntimeError;

    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        self.state = None;
        CausalLm::extend(self, prompt)
    }

    fn step(&mut self, parents: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let state = match self.state.take() {
            Some(s) => s.select_rows(parents)?,
            None => {
                return Err(RuntimeError::Other(
                    "beam search step before its prompt".into(),
                ))
            }
        };
        let batch = tokens.len();
        let past = state.len() / batch.max(1);
        // Every beam continues the prompt's one row: its mask, and the new token.
        let mut mask = Vec::with_capacity(batch * (past + 1));
        for row in state.mask.chunks(past) {
            mask.extend_from_slice(row);
            mask.push(1);
        }
        let positions = vec![past as i64; batch];
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let out = self.model.run(batch, &ids, &mask, &positions, state)?;
        let vocab = *out.logits_shape.last().unwrap_or(&0);
        let rows = out.logits.len() / vocab.max(1);
        let per = rows / batch.max(1);
        let logits = (0..batch)
            .map(|i| out.logits[(i * per + per - 1) * vocab..(i * per + per) * vocab].to_vec())
            .collect();
        self.state = Some(out.state);
        Ok(logits)
    }
}

impl CausalLm for OnnxLm<'_> {
    type Error = RuntimeError;

    fn reset(&mut self) {
        self.state = None;
    }

    fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let state = match self.state.take() {
            Some(s) => s,
            None => self.model.empty_state(1)?,
        };
        let out = self.model.step(ids, state)?;
        let vocab = *out.logits_shape.last().unwrap_or(&0);
        let last = out.logits[out.logits.len() - vocab..].to_vec();
        self.state = Some(out.state);
        Ok(last)
    }

    fn max_positions(&self) -> usize {
        self.model.contract.max_positions
    }
}
