//! `mimic verify`: a compiled model in ONNX Runtime against the trainer's forward (with the
//! same heads) on the same prompts: greedy tokens and logits, step by step.
use std::path::PathBuf;

use anyhow::Result;
use mimic_compiler::AttentionImpl;
#[cfg(feature = "torch")]
use mimic_models::vlm::inputs::EncoderInputs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// A heads file from `mimic train` (without it, the base model is checked).
    #[command(flatten)]
    heads: super::HeadsArgs,
    /// Attention forms to compile and check.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fused,unfused,kernel",
        value_parser = super::one_of::<AttentionImpl>(super::values::ATTENTION)
    )]
    attention: Vec<AttentionImpl>,
    /// Prompts: a task's test queries (zero-shot, with the template) instead of the 20 built-in
    /// prompts; a JSON file of {"input", "output"} pairs or a built-in task set's name.
    #[arg(long, value_name = "FILE|NAME")]
    task: Option<PathBuf>,
    /// Prompts from a benchmark's evaluation split instead (with their images, in the
    /// model's MimIC shot).
    #[command(flatten)]
    dataset: super::benchmark::DatasetArgs,
    /// Prompt template of `--task`, with `{input}` and then `{output}`.
    #[arg(long, default_value = mimic_models::prompt::DEFAULT_TEMPLATE)]
    template: String,
    /// How many prompts.
    #[arg(long, default_value_t = 20)]
    prompts: usize,
    /// Greedy steps per prompt.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// fp32 or fp16 compiled models.
    #[arg(long, default_value = "fp32", value_parser = super::one_of::<mimic_compiler::Dtype>(super::values::DTYPE))]
    dtype: mimic_compiler::Dtype,
    /// The compiled models' weights: `source` (a GGUF's 4-bit blocks kept, `MatMulNBits`) or
    /// `f32`.
    #[arg(long, default_value = "source", value_parser = super::one_of::<mimic_models::contract::WeightFormat>(super::values::WEIGHTS))]
    weights: mimic_models::contract::WeightFormat,
    /// Fail (exit status 3) when the logits' relative error exceeds this (default 1e-4 for
    /// fp32, 1e-2 for fp16). fp32 must also give identical greedy tokens; fp16 reports
    /// agreement.
    #[arg(long)]
    tolerance: Option<f32>,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    #[command(flatten)]
    json: super::JsonArgs,
}

#[cfg(feature = "torch")]
#[derive(Debug, serde::Serialize)]
struct Row {
    attention: String,
    prompts: usize,
    steps: usize,
    identical_tokens: usize,
    max_relative_error: f32,
    first_difference: Option<String>,
}

#[cfg(feature = "torch")]
pub fn run(a: Args) -> Result<()> {
    use anyhow::Context;
    use mimic_compiler::CompileOptions;
    use mimic_models::generate::relative_error as rel_err;
    use mimic_models::vlm::request::image_tokens;
    use mimic_runtime::{CompiledModel, OnnxLm, SessionOptions};
    use mimic_trainer::shift::Shift;
    use mimic_trainer::TorchLm;
    use std::io::Write;

    let _guard = tch::no_grad_guard();
    a.threads.apply_to_torch();
    let any = a.model.open_any()?;
    let model = any.decoder();
    let tok = model.tokenizer()?;
    let heads = a.heads.read(model)?;
    let shift = match &heads {
        Some(h) => Some(Shift::from_heads(h, &model.config, tch::Device::Cpu)?.0),
        None => None,
    };
    let vision = match &any {
        super::AnyModel::Vision(v) => Some(v.as_ref()),
        super::AnyModel::Text(_) => None,
    };
    let torch = super::TorchModels::new(&any, tch::Device::Cpu, None)?;
    let vlm = &torch.vlm;
    // Each prompt's ids, and for a vision-language model its images' encoder inputs.
    let task = match (&a.task, a.dataset.dataset) {
        (Some(path), _) => {
            use mimic_models::task::{Task, Template};
            Some((
                Task::load(path, Template::new(&a.template)?, a.prompts, 0)?,
                path.display().to_string(),
            ))
        }
        (None, Some(dataset)) => {
            let Some(v) = vision else {
                anyhow::bail!(
                    "--dataset {} asks questions about images: it needs a vision-language model",
                    dataset.name()
                );
            };
            let template = super::benchmark::default_template(dataset, v.config.architecture);
            let (task, _) = a.dataset.load(
                dataset,
                &template,
                v.config.architecture,
                0,
                Some(a.prompts),
            )?;
            Some((task, dataset.name().to_string()))
        }
        (None, None) => None,
    };
    let prompts: Vec<(Vec<u32>, Option<EncoderInputs>)> = match &task {
        Some((task, name)) => {
            use mimic_models::task::{start_token, Encoded};
            let start = start_token(tok);
            let expansion = vision
                .map(|v| Ok::<_, anyhow::Error>(image_tokens(&v.config, super::vlm_processor(v)?)))
                .transpose()?;
            task.test
                .iter()
                .take(a.prompts)
                .map(|q| {
                    let e =
                        Encoded::with_image_tokens(tok, start, &task.template, &[], q, expansion)?;
                    let inputs = match vision {
                        Some(v) if !q.images.is_empty() => Some(
                            prompt_images(v, &q.images)
                                .with_context(|| format!("{name}: the images of {:?}", q.input))?,
                        ),
                        _ => None,
                    };
                    Ok((e.prompt(), inputs))
                })
                .collect::<Result<_>>()?
        }
        None => {
            if vision.is_some() {
                tracing::warn!(
                    "no --task: checking text prompts without images (a task with images \
                     checks the image encoder too)"
                );
            }
            mimic_models::prompt::SAMPLE_PROMPTS
                .iter()
                .take(a.prompts)
                .map(|p| Ok((tok.encode(p)?, None)))
                .collect::<Result<_>>()?
        }
    };
    // The trainer's image tokens of each prompt.
    let torch_features: Vec<Option<tch::Tensor>> = prompts
        .iter()
        .map(|(_, inputs)| match (vlm, inputs) {
            (Some(v), Some(i)) => Ok(Some(v.encode_images(i, false)?.hidden)),
            _ => Ok(None),
        })
        .collect::<Result<_>>()?;
    let exact_tokens = a.dtype == mimic_compiler::Dtype::Fp32;
    let tolerance = a.tolerance.unwrap_or(match a.dtype {
        mimic_compiler::Dtype::Fp32 => 1e-4,
        mimic_compiler::Dtype::Fp16 => 1e-2,
    });
    let tm = torch.decoder();
    let shifts = shift.as_ref().map(|s| s.shifts()).unwrap_or_default();
    let checked = a
        .attention
        .iter()
        .filter(|&&at| !(at == AttentionImpl::Kernel && a.dtype == mimic_compiler::Dtype::Fp16))
        .count();
    let bar = indicatif::ProgressBar::new((prompts.len() * (1 + checked)) as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} prompts {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("trainer's forward");
    let mut reference = Vec::with_capacity(prompts.len());
    for ((p, _), features) in prompts.iter().zip(&torch_features) {
        let mut lm = TorchLm::with_shifts(tm, shifts);
        if let (Some(v), Some(f)) = (vlm, features) {
            let ids: Vec<i64> = p.iter().map(|&t| t as i64).collect();
            let ids = tch::Tensor::from_slice(&ids).view([1, -1]);
            let tokens = v.image_tokens(&ids, f)?;
            lm.images = Some((tokens.token_id, f.shallow_clone()));
        }
        reference.push(mimic_models::generate::greedy_with_logits(
            &mut lm, p, a.steps,
        )?);
        bar.inc(1);
    }
    let mut rows = Vec::new();
    for &attention in &a.attention {
        if attention == AttentionImpl::Kernel && a.dtype == mimic_compiler::Dtype::Fp16 {
            // mimic's kernel is float32 only: nothing to check in float16.
            tracing::info!("kernel attention skipped: float32 only");
            continue;
        }
        let opts = CompileOptions {
            attention,
            dtype: a.dtype,
            last_only: true,
            weights: a.weights,
            ..Default::default()
        };
        bar.set_message(format!("{attention:?} attention: compiling"));
        let dir = super::compiled_any_for(&any, heads.as_ref(), &opts)?;
        let mut cm = CompiledModel::load(
            &dir,
            &SessionOptions {
                threads: a.threads.threads,
                ..Default::default()
            },
        )?;
        bar.set_message(format!("{attention:?} attention"));
        let mut row = Row {
            attention: format!("{attention:?} {}", a.dtype.name()).to_lowercase(),
            prompts: prompts.len(),
            steps: a.steps,
            identical_tokens: 0,
            max_relative_error: 0.0,
            first_difference: None,
        };
        for ((p, inputs), (want_tokens, want_logits)) in prompts.iter().zip(&reference) {
            if let Some(inputs) = inputs {
                let features = cm.encode_images(inputs)?;
                cm.set_images(features)?;
            }
            let (tokens, logits) =
                mimic_models::generate::greedy_with_logits(&mut OnnxLm::new(&mut cm), p, a.steps)?;
            // Logits compare while both have seen the same tokens.
            let same = tokens
                .iter()
                .zip(want_tokens)
                .take_while(|(x, y)| x == y)
                .count();
            for (x, y) in logits.iter().zip(want_logits).take(same + 1) {
                row.max_relative_error = row.max_relative_error.max(rel_err(x, y));
            }
            if same == tokens.len() {
                row.identical_tokens += 1;
            } else if row.first_difference.is_none() {
                row.first_difference = Some(format!(
                    "{:?}: onnx {:?}, torch {:?}",
                    tok.decode(p)?.chars().take(200).collect::<String>(),
                    tok.decode(&tokens)?,
                    tok.decode(want_tokens)?
                ));
            }
            bar.inc(1);
        }
        rows.push(row);
    }
    bar.finish_and_clear();
    let mut out = a.json.table();
    let what = match &a.heads.heads {
        Some(p) => format!("{} with {}", model.source.display(), p.display()),
        None => model.source.display().to_string(),
    };
    writeln!(
        out,
        "{what}: ONNX Runtime ({} weights) against the trainer's forward",
        a.weights.name()
    )?;
    writeln!(
        out,
        "| {:<12} | {:>7} | {:>5} | {:>16} | {:>18} |",
        "attention", "prompts", "steps", "identical tokens", "max rel. error"
    )?;
    writeln!(
        out,
        "|{:-<14}|{:->9}|{:->7}|{:->18}|{:->20}|",
        "", "", "", "", ""
    )?;
    for r in &rows {
        writeln!(
            out,
            "| {:<12} | {:>7} | {:>5} | {:>16} | {:>18.2e} |",
            r.attention,
            r.prompts,
            r.steps,
            format!("{}/{}", r.identical_tokens, r.prompts),
            r.max_relative_error
        )?;
        if let Some(d) = &r.first_difference {
            writeln!(out, "  first difference ({}): {d}", r.attention)?;
        }
    }
    let passed = !rows.iter().any(|r| {
        r.max_relative_error > tolerance || (exact_tokens && r.identical_tokens < r.prompts)
    });
    a.json.write(&serde_json::json!({
        "model": model.source,
        "heads": a.heads.heads,
        "tolerance": tolerance,
        "passed": passed,
        "rows": rows
    }))?;
    if let Some(r) = rows.iter().find(|r| {
        r.max_relative_error > tolerance || (exact_tokens && r.identical_tokens < r.prompts)
    }) {
        return Err(super::CheckFailed(format!(
            "verification failed: {} attention: relative error {:.2e} (tolerance {:.0e}), identical tokens on {}/{} prompts",
            r.attention,
            r.max_relative_error,
            tolerance,
            r.identical_tokens,
            r.prompts
        ))
        .into());
    }
    Ok(())
}

/// The encoder inputs of a prompt's images, processed by the model's image processor.
#[cfg(feature = "torch")]
fn prompt_images(
    v: &mimic_models::vlm::VisionLanguageModel,
    paths: &[impl AsRef<std::path::Path>],
) -> Result<EncoderInputs> {
    Ok(mimic_models::vlm::request::images_inputs(
        &v.config,
        super::vlm_processor(v)?,
        paths,
    )?)
}

#[cfg(not(feature = "torch"))]
pub fn run(_: Args) -> Result<()> {
    anyhow::bail!("this mimic was built without the `torch` feature: verify compares against the trainer's libtorch forward")
}
