//! `mimic compile`: a model to a folder with `model.onnx`, its external weights
//! `model.onnx.data`, `tokenizer.json` and the contract `mimic.json` that the runtime reads.
//! The folder is written under a temporary name and renamed into place when complete.
use std::path::{Path, PathBuf};

use mimic_models::contract::{
    AttentionImpl, Contract, Dtype, HeadsContract, KvCacheLayout, Logits, CONTRACT_FILE,
    CONTRACT_VERSION, DATA_FILE, MODEL_FILE, PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE,
    TOKENIZER_FILE,
};
use mimic_models::{llama, Model};
use prost::Message;

use crate::emit::OnnxBackend;
use crate::fold::{heads_inputs, HeadsSource};
use crate::graph::{GraphBuilder, IR_VERSION, OPSET};
use crate::onnx::{GraphProto, ModelProto, OperatorSetIdProto};
use crate::passes::{run_passes, Pass};
use crate::{CompileError, Result};

#[derive(Debug, Clone)]
pub struct CompileOptions {
    pub attention: AttentionImpl,
    /// float32, or float16: the [`Pass::Float16`] pass runs after the others (products,
    /// attention and the KV cache in float16; the residual stream, normalisation, softmax,
    /// log-sum-exp, rotary angles, LIVE and MimIC's arithmetic stay float32; logits leave in
    /// float32). Naming the pass in `passes` means float16 too.
    pub dtype: Dtype,
    /// Logits of the last position only (generation) instead of every position.
    pub last_only: bool,
    /// Graph passes run on the emitted graph, in order.
    pub passes: Vec<Pass>,
    /// The decoder takes `inputs_embeds` instead of `input_ids` (a vision-language model's,
    /// set by [`crate::vlm::compile_vlm`]).
    pub embeds_input: bool,
    /// Where a cross-attention decoder (Idefics) gets its gated blocks' keys and values.
    pub cross_kv: crate::cross::CrossKv,
    /// Keep a GGUF source's quantised blocks (`source`) or write float32.
    pub weights: mimic_models::contract::WeightFormat,
}

/// The passes run unless asked otherwise: attention fusion is left out, because `--attention`
/// already chooses the form (it is for graphs emitted or imported unfused).
pub const DEFAULT_PASSES: [Pass; 2] = [Pass::ConstantFolding, Pass::DeadNodes];

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            attention: AttentionImpl::Fused,
            dtype: Dtype::Fp32,
            last_only: true,
            passes: DEFAULT_PASSES.to_vec(),
            embeds_input: false,
            cross_kv: Default::default(),
            weights: Default::default(),
        }
    }
}

/// Checks that heads can be compiled the way asked.
fn check_heads(heads: &HeadsSource) -> Result<()> {
    if let HeadsSource::Inputs(mimic_models::Method::Lora) = heads {
        return Err(CompileError::Other(
            "LoRA is merged into the weights; it cannot be a graph input (heads as inputs: mimic, mimic-convex, live)".into(),
        ));
    }
    Ok(())
}

impl CompileOptions {
    /// The type of the compiled model: float16 when `dtype` says so or the pass is named.
    pub fn effective_dtype(&self) -> Dtype {
        match self.passes.contains(&Pass::Float16) {
            true => Dtype::Fp16,
            false => self.dtype,
        }
    }

    /// Whether the graph is converted to float16.
    pub fn is_fp16(&self) -> bool {
        self.effective_dtype() == Dtype::Fp16
    }

    /// The passes run, in order: those asked for, float16 last but before dead-node removal.
    pub fn pass_order(&self) -> Vec<Pass> {
        let mut passes: Vec<Pass> = self
            .passes
            .iter()
            .copied()
            .filter(|&p| p != Pass::Float16)
            .collect();
        if self.is_fp16() {
            let at = passes
                .iter()
                .position(|&p| p == Pass::DeadNodes)
                .unwrap_or(passes.len());
            passes.insert(at, Pass::Float16);
        }
        passes
    }
}

/// Builds the ONNX model of `model` (with `heads`), weights written to `data_path`: streamed
/// there as they are emitted, or, when the float16 pass rewrites them, after the passes.
pub fn emit_model(
    model: &Model,
    heads: HeadsSource,
    opts: &CompileOptions,
    data_path: Option<&Path>,
) -> Result<ModelProto> {
    check_heads(&heads)?;
    let fp16 = opts.is_fp16();
    if fp16 && opts.attention == AttentionImpl::Kernel {
        return Err(CompileError::Other(
            "--attention kernel is float32 only (mimic's CPU kernel); use fused or unfused for --dtype fp16".into(),
        ));
    }
    let g = GraphBuilder::new(if fp16 { None } else { data_path })?;
    let mut backend = OnnxBackend::new(g, &model.config, &model.weights, heads, opts)?;
    llama::forward(&model.config, &mut backend);
    if let Some(e) = backend.take_error() {
        return Err(e);
    }
    let mut graph = backend.g.finish("mimic")?;
    run_passes(&mut graph, &opts.pass_order());
    if let (true, Some(path)) = (fp16, data_path) {
        crate::graph::externalize(&mut graph, path)?;
    }
    finish_model(graph)
}

/// The model around a finished graph: the default opset (and mimic's kernel domain when the
/// graph uses it), the producer, and the structural check; its first problems are the error.
pub(crate) fn finish_model(graph: GraphProto) -> Result<ModelProto> {
    let mut opset_import = vec![OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(OPSET),
    }];
    let kernel = mimic_models::kernel_op::DOMAIN;
    if graph
        .node
        .iter()
        .any(|n| n.domain.as_deref() == Some(kernel))
    {
        opset_import.push(OperatorSetIdProto {
            domain: Some(kernel.into()),
            version: Some(mimic_models::kernel_op::DOMAIN_VERSION),
        });
    }
    let ms = crate::blocks::MS_DOMAIN;
    if graph.node.iter().any(|n| n.domain.as_deref() == Some(ms)) {
        opset_import.push(OperatorSetIdProto {
            domain: Some(ms.into()),
            version: Some(1),
        });
    }
    let m = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import,
        producer_name: Some("mimic".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    };
    let problems = crate::check::check_model(&m);
    if !problems.is_empty() {
        let mut text = problems
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if problems.len() > 5 {
            text.push_str(&format!("; and {} more", problems.len() - 5));
        }
        return Err(CompileError::Check(text));
    }
    Ok(m)
}

/// Compiles `model` with `heads` into `out` (replaced if it exists) and returns the contract
/// written.
pub fn compile_model(
    model: &Model,
    heads: HeadsSource,
    opts: &CompileOptions,
    out: &Path,
) -> Result<Contract> {
    check_heads(&heads)?;
    write_folder_atomically(out, |dir| write_folder(model, heads, opts, dir))
}

/// Runs `write` on a temporary folder beside `out` and renames it into place (replacing
/// `out`) when it succeeds; removes it when it fails. Processes writing the same `out` at
/// once each write their own temporary folder; the last rename wins, whole. A killed run's
/// temporary folder is removed by the next.
pub(crate) fn write_folder_atomically<T>(
    out: &Path,
    write: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    mimic_models::files::create_dir_all(&parent)?;
    let name = out
        .file_name()
        .ok_or_else(|| CompileError::Other(format!("{}: not a folder name", out.display())))?
        .to_string_lossy()
        .to_string();
    if out.exists() && !out.is_dir() {
        return Err(CompileError::Other(format!(
            "{}: exists and is not a folder",
            out.display()
        )));
    }
    mimic_models::files::remove_stale_partials(&parent, &name);
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let value = match write(&tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            // Name the output, not the temporary folder it was being written in.
            return Err(match e {
                CompileError::Io { path, error } => CompileError::Io {
                    path: match path.strip_prefix(&tmp) {
                        Ok(p) if !p.as_os_str().is_empty() => out.join(p),
                        Ok(_) => out.to_path_buf(),
                        Err(_) => path,
                    },
                    error,
                },
                e => e,
            });
        }
    };
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    // Another process may put its `out` in place between our two renames: then move that
    // one aside too and try again.
    let mut tries = 0;
    loop {
        match std::fs::rename(out, &old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(CompileError::io(out, e));
            }
        }
        let _ = std::fs::remove_dir_all(&old);
        match std::fs::rename(&tmp, out) {
            Ok(()) => return Ok(value),
            Err(_) if tries < 10 && out.is_dir() => tries += 1,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(CompileError::io(out, e));
            }
        }
    }
}

/// Writes `mimic.json`.
pub(crate) fn write_contract(path: &Path, contract: &Contract) -> Result<()> {
    let text =
        serde_json::to_string_pretty(contract).map_err(|e| CompileError::Other(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| CompileError::io(path, e))
}

pub(crate) fn write_folder(
    model: &Model,
    heads: HeadsSource,
    opts: &CompileOptions,
    dir: &Path,
) -> Result<Contract> {
    std::fs::create_dir_all(dir).map_err(|e| CompileError::io(dir, e))?;
    let m = emit_model(model, heads, opts, Some(&dir.join(DATA_FILE)))?;
    let model_path = dir.join(MODEL_FILE);
    std::fs::write(&model_path, m.encode_to_vec()).map_err(|e| CompileError::io(&model_path, e))?;
    let cfg = &model.config;
    let tok = model.tokenizer.as_ref();
    if let Some(t) = tok {
        t.save(&dir.join(TOKENIZER_FILE))?;
    }
    let mut eos = tok.map(|t| t.eos_ids().to_vec()).unwrap_or_default();
    for id in &cfg.eos_token_ids {
        if !eos.contains(id) {
            eos.push(*id);
        }
    }
    let (slots, key_dim, value_dim) =
        crate::fold::cache_layout(heads.method(), opts.attention, opts.is_fp16(), cfg);
    if let (HeadsSource::Folded(h), true) = (&heads, slots > 0) {
        let convex = h.method == mimic_models::Method::MimicConvex;
        let path = dir.join(mimic_models::heads::SLOTS_FILE);
        let fp16 = opts.is_fp16();
        let bytes = mimic_models::heads::cache_slots_bytes(h, convex, fp16, cfg)?;
        std::fs::write(&path, bytes).map_err(|e| CompileError::io(&path, e))?;
    }
    let graph = m.graph.as_ref().expect("emit_model builds a graph");
    let names =
        |v: &[crate::onnx::ValueInfoProto]| v.iter().filter_map(|x| x.name.clone()).collect();
    let contract = Contract {
        contract_version: CONTRACT_VERSION,
        producer: format!("mimic {}", env!("CARGO_PKG_VERSION")),
        source: mimic_models::contract::recorded_name(&model.source),
        fingerprint: model.fingerprint(),
        config: cfg.clone(),
        attention: opts.attention,
        logits: if opts.last_only {
            Logits::Last
        } else {
            Logits::All
        },
        inputs: names(&graph.input),
        outputs: names(&graph.output),
        kv_cache: KvCacheLayout {
            num_layers: cfg.num_layers,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            slots,
            key_dim,
            value_dim,
            past_key: PAST_KEY.into(),
            past_value: PAST_VALUE.into(),
            present_key: PRESENT_KEY.into(),
            present_value: PRESENT_VALUE.into(),
        },
        eos_token_ids: eos,
        bos_token_id: tok.and_then(|t| t.bos_id()).or(cfg.bos_token_id),
        chat_template: tok.and_then(|t| t.chat_template().map(String::from)),
        max_positions: cfg.max_position_embeddings,
        heads: heads_contract(&heads, cfg, opts.attention),
        passes: opts
            .pass_order()
            .iter()
            .map(|p| p.name().to_string())
            .collect(),
        dtype: opts.effective_dtype(),
        block_weights: crate::blocks::kept(graph, &model.weights),
        vision: None,
    };
    write_contract(&dir.join(CONTRACT_FILE), &contract)?;
    Ok(contract)
}

/// What the contract says of the heads: which method, folded from which file, or taken as
/// which inputs.
fn heads_contract(
    heads: &HeadsSource,
    cfg: &mimic_models::LlamaConfig,
    attention: AttentionImpl,
) -> Option<HeadsContract> {
    match heads {
        HeadsSource::None => None,
        HeadsSource::Folded(h) => Some(HeadsContract {
            method: h.method,
            folded_from: Some(mimic_models::contract::recorded_name(&h.path)),
            inputs: vec![],
        }),
        HeadsSource::Inputs(m) => Some(HeadsContract {
            method: *m,
            folded_from: None,
            inputs: heads_inputs(*m, cfg, attention),
        }),
    }
}
