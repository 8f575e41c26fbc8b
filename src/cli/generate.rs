use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use mimic_compiler::{AttentionImpl, CompileOptions};
use mimic_models::generate::{greedy, CausalLm, Generation};
use mimic_models::image::processor::ImageProcessor;
use mimic_models::tokenizer::{StreamDecoder, TextTokenizer};
use mimic_models::vlm::inputs::EncoderInputs;
use mimic_models::vlm::prompt::count_image_placeholders;
use mimic_models::vlm::request::{folder_processor, image_prompt};
use mimic_models::vlm::VlmConfig;
use mimic_runtime::OnnxLm;

/// Which backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The trainer's forward on libtorch.
    Torch,
    /// The model compiled to ONNX, run by ONNX Runtime.
    Onnx,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// A compiled folder to run instead of a model (ONNX backend).
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    compiled: Option<PathBuf>,
    /// The text to continue. For a vision-language model, `<image>` marks where each
    /// `--image` goes (without any, the images go before the text).
    #[arg(long)]
    prompt: String,
    /// An image for a vision-language model's prompt (PNG or JPEG); repeat for several, in
    /// the order of the prompt's `<image>` placeholders.
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<PathBuf>,
    /// A heads file from `mimic train`: folded into the compiled graph (onnx) or applied as the
    /// trainer applies it (torch).
    #[command(flatten)]
    heads: super::HeadsArgs,
    /// Attention form of the compiled graph (onnx, when compiling); default: as `mimic
    /// compile` picks for `--ep` (kernel on the CPU, fused otherwise).
    #[arg(long, value_parser = super::one_of::<AttentionImpl>(super::values::ATTENTION))]
    attention: Option<AttentionImpl>,
    /// `torch` (the trainer's forward on libtorch) or `onnx` (compiled, in ONNX Runtime).
    #[arg(long, value_enum, default_value = "onnx")]
    backend: BackendKind,
    /// Tokens to generate at most (generation also stops at an end-of-sequence token).
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[command(flatten)]
    device: super::DeviceArgs,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    /// How ONNX Runtime runs (`--backend onnx`).
    #[command(flatten)]
    runtime: super::RuntimeArgs,
}

/// Streams generated text to stdout as tokens come, then reports the speed on stderr.
/// `prompt` is what the model reads (image tokens expanded), `shown` what is echoed.
fn stream<M: CausalLm>(
    lm: &mut M,
    tok: &TextTokenizer,
    prompt: &str,
    shown: &str,
    max_new: usize,
    eos: &[u32],
) -> Result<Generation>
where
    M::Error: std::error::Error + Send + Sync + 'static,
{
    let ids = tok.encode(prompt)?;
    if ids.len() + max_new > lm.max_positions() {
        bail!(
            "prompt of {} tokens plus {} new tokens is longer than the model's context of {}",
            ids.len(),
            max_new,
            lm.max_positions()
        );
    }
    let mut out = std::io::stdout().lock();
    write!(out, "{shown}")?;
    out.flush()?;
    let mut dec = StreamDecoder::new(tok);
    let mut decode_err = None;
    let g = greedy(lm, &ids, max_new, eos, |id| match dec.push(id) {
        Ok(text) => {
            let _ = write!(out, "{text}");
            let _ = out.flush();
        }
        Err(e) => decode_err = Some(e),
    })?;
    writeln!(out)?;
    if let Some(e) = decode_err {
        return Err(e.into());
    }
    let decode_tps = (g.tokens.len().saturating_sub(1)) as f64 / g.decode_s.max(1e-9);
    eprintln!(
        "[{} prompt tokens, {} new; prefill {:.1} ms, decode {:.1} tokens/s]",
        ids.len(),
        g.tokens.len(),
        g.prefill_s * 1e3,
        decode_tps
    );
    Ok(g)
}

/// The model's prompt: the text with its images' tokens expanded, and the images' encoder
/// inputs (none for a text model, or a vision-language model asked without images).
fn prepare(
    a: &Args,
    vision: Option<(&VlmConfig, &ImageProcessor)>,
) -> Result<(String, Option<EncoderInputs>)> {
    match vision {
        Some((cfg, processor)) if !a.images.is_empty() => {
            let p = image_prompt(cfg, processor, &a.prompt, &a.images)?;
            Ok((p.text, Some(p.inputs)))
        }
        Some(_) if count_image_placeholders(&a.prompt) > 0 => bail!(
            "the prompt has {} <image> placeholders but no --image was given",
            count_image_placeholders(&a.prompt)
        ),
        None if !a.images.is_empty() => {
            bail!("--image is for vision-language models; this is a text model")
        }
        _ => Ok((a.prompt.clone(), None)),
    }
}

pub fn run(a: Args) -> Result<()> {
    match a.backend {
        BackendKind::Onnx => {
            let (dir, tok) = match &a.compiled {
                Some(dir) => {
                    if !dir.is_dir() {
                        bail!(
                            "{}: not found (a folder written by `mimic compile`)",
                            dir.display()
                        );
                    }
                    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
                    (dir.clone(), tok)
                }
                None => {
                    let model = a.model.open_any()?;
                    if let super::AnyModel::Text(_) = model {
                        prepare(&a, None)?;
                    }
                    let opts = CompileOptions {
                        attention: a.attention.unwrap_or(super::default_attention(
                            a.runtime.ep,
                            mimic_compiler::Dtype::Fp32,
                        )),
                        last_only: true,
                        ..Default::default()
                    };
                    let heads = a.heads.read(model.decoder())?;
                    let dir = super::compiled_any_for(&model, heads.as_ref(), &opts)?;
                    (dir, model.decoder().tokenizer()?.clone())
                }
            };
            let mut compiled = a.runtime.load(&dir, &a.threads)?;
            let (prompt, inputs) = match compiled.contract.vision.clone() {
                Some(v) => prepare(&a, Some((&v.config, &folder_processor(&dir)?)))?,
                None => prepare(&a, None)?,
            };
            if let Some(inputs) = &inputs {
                let features = compiled.encode_images(inputs)?;
                compiled.set_images(features)?;
            }
            let eos = compiled.contract.eos_token_ids.clone();
            stream(
                &mut OnnxLm::new(&mut compiled),
                &tok,
                &prompt,
                &a.prompt,
                a.max_new_tokens,
                &eos,
            )?;
        }
        BackendKind::Torch => run_torch(&a)?,
    }
    Ok(())
}

#[cfg(feature = "torch")]
fn run_torch(a: &Args) -> Result<()> {
    use mimic_trainer::TorchLm;
    if a.compiled.is_some() {
        bail!("--compiled runs on the ONNX backend; drop --backend torch");
    }
    let any = a.model.open_any()?;
    let model = any.decoder();
    a.threads.apply_to_torch();
    let device = a.device.torch()?;
    let shift = match &a.heads.heads {
        Some(p) => Some(mimic_trainer::shift::Shift::load(p, model, device)?.0),
        None => None,
    };
    let _guard = tch::no_grad_guard();
    // A vision-language model: its image encoder's tokens for the prompt.
    let (prompt, inputs) = match &any {
        super::AnyModel::Vision(v) => prepare(a, Some((&v.config, super::vlm_processor(v)?)))?,
        super::AnyModel::Text(_) => prepare(a, None)?,
    };
    let torch = super::TorchModels::new(&any, device, None)?;
    let features = match (&torch.vlm, &inputs) {
        (Some(v), Some(i)) => Some(v.encode_images(i, false)?.hidden),
        _ => None,
    };
    let tm = torch.decoder();
    let tok = model.tokenizer()?;
    let mut eos = tok.eos_ids().to_vec();
    eos.extend(&model.config.eos_token_ids);
    let shifts = shift.as_ref().map(|s| s.shifts()).unwrap_or_default();
    let mut lm = TorchLm::with_shifts(tm, shifts);
    if let (Some(v), Some(f)) = (&torch.vlm, &features) {
        lm.images = Some((v.config.image_token_id as i64, f.shallow_clone()));
    }
    stream(&mut lm, tok, &prompt, &a.prompt, a.max_new_tokens, &eos)?;
    Ok(())
}

#[cfg(not(feature = "torch"))]
fn run_torch(_: &Args) -> Result<()> {
    bail!("this mimic was built without the `torch` feature; use --backend onnx")
}
