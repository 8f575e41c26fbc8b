use std::path::PathBuf;

use anyhow::{bail, Result};
use mimic_compiler::cross::CrossKv;
use mimic_compiler::{AttentionImpl, CompileOptions, Dtype, HeadsSource, Pass};
use mimic_models::contract::WeightFormat;
use mimic_models::Method;

use super::AnyModel;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// A heads file from `mimic train` to fold into the graph (MimIC, LIVE, or LoRA merged);
    /// it must have been made for the model.
    #[command(flatten)]
    heads: super::HeadsArgs,
    /// Make the heads graph inputs (`heads.*`, one set per batch row) instead of folding one
    /// file in: one compiled model serves many tasks. The method comes from `--method`, or
    /// from `--heads`' file.
    #[arg(long)]
    heads_as_inputs: bool,
    /// The method of `--heads-as-inputs` graphs (not lora: LoRA merges into the weights).
    #[arg(long, value_parser = super::one_of::<Method>(super::values::METHOD))]
    method: Option<Method>,
    /// `fused` (the opset-23 Attention operator), `unfused` (MatMul-Softmax-MatMul) or
    /// `kernel` (mimic's CPU kernel, `ai.mimic:MimicAttention`, which `mimic run` and the
    /// runtime register; float32, CPU); default: kernel for `--ep cpu` in fp32, else fused.
    #[arg(long, value_parser = super::one_of::<AttentionImpl>(super::values::ATTENTION))]
    attention: Option<AttentionImpl>,
    /// fp32, or fp16: runs the float16 pass (products, attention and the KV cache in fp16;
    /// the residual stream, normalisation, softmax, rotary angles, LIVE and MimIC's
    /// arithmetic stay fp32). The same as naming `float16` in `--passes`.
    #[arg(long, default_value = "fp32", value_parser = super::one_of::<Dtype>(super::values::DTYPE))]
    dtype: Dtype,
    /// The execution provider the model is compiled for (chooses the default attention).
    #[arg(long, default_value = "cpu", value_parser = super::one_of::<mimic_runtime::ExecutionProvider>(super::values::EP))]
    ep: mimic_runtime::ExecutionProvider,
    /// Graph passes to run, in order; `none` for none. float16 runs after the others but
    /// before dead-nodes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "constant-folding,dead-nodes",
        value_parser = super::one_of::<PassChoice>(PASS_CHOICES)
    )]
    passes: Vec<PassChoice>,
    /// Emit logits for every position instead of the last one only.
    #[arg(long)]
    all_logits: bool,
    /// A cross-attention decoder's (Idefics') image keys and values: `once` per prompt, by
    /// `cross_kv.onnx` (the decoder takes them as inputs), or `every-step`, projected from the
    /// latents in every decoder pass as transformers does (for comparison).
    #[arg(long, default_value = "once", value_parser = super::one_of::<CrossKv>(super::values::CROSS_KV))]
    cross_kv: CrossKv,
    /// `source`: a GGUF model's Q4_0, Q4_1 and Q8_0 weights stay 4- and 8-bit blocks
    /// (ONNX Runtime's `MatMulNBits`, computing exactly the dequantised weights the trainer
    /// uses), except those the heads' fold rewrites and in float16 graphs; `f32`: every weight
    /// float32.
    #[arg(long, default_value = "source", value_parser = super::one_of::<WeightFormat>(super::values::WEIGHTS))]
    weights: WeightFormat,
    /// Output folder (written under a temporary name, then renamed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// A graph pass, or `none`.
#[derive(Debug, Clone, Copy)]
struct PassChoice(Option<Pass>);

const PASS_CHOICES: &[&str] = &[
    "constant-folding",
    "attention-fusion",
    "dead-nodes",
    "float16",
    "none",
];

impl std::str::FromStr for PassChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(PassChoice(None)),
            _ => s.parse().map(|p| PassChoice(Some(p))),
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let any = a.model.open_any()?;
    let model = any.decoder();
    let heads = a.heads.read(model)?;
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
    let passes: Vec<Pass> = a.passes.iter().filter_map(|p| p.0).collect();
    let mut opts = CompileOptions {
        attention: AttentionImpl::Fused,
        dtype: a.dtype,
        last_only: !a.all_logits,
        passes,
        embeds_input: false,
        cross_kv: a.cross_kv,
        weights: a.weights,
    };
    // The float16 pass named in --passes makes an fp16 graph as --dtype fp16 does.
    opts.attention = a
        .attention
        .unwrap_or(super::default_attention(a.ep, opts.effective_dtype()));
    let t = std::time::Instant::now();
    let bar = super::spinner(format!(
        "compiling {} ({:?} attention)",
        model.source.display(),
        opts.attention
    ));
    let contract = match &any {
        AnyModel::Text(m) => mimic_compiler::compile_model(m, source, &opts, &a.out),
        AnyModel::Vision(v) => mimic_compiler::compile_vlm(v, source, &opts, &a.out),
    };
    bar.finish_and_clear();
    let contract = contract?;
    let heads = match &contract.heads {
        None => "no heads".to_string(),
        Some(h) if h.inputs.is_empty() => format!("{} heads folded", h.method.name()),
        Some(h) => format!("{} heads as inputs", h.method.name()),
    };
    let graphs = match &contract.vision {
        None => String::new(),
        Some(v) => format!(
            ", {} with {} and {}, {} tokens per image",
            v.config.architecture.name(),
            v.vision_model,
            v.embed_model
                .as_deref()
                .or(v.cross_kv_model.as_deref())
                .unwrap_or("-"),
            v.tokens_per_image
        ),
    };
    println!(
        "compiled {} -> {} ({} layers, {heads}, attention {}, logits {}, passes [{}]{graphs}) in {:.1}s",
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
