//! `mimic run`: a compiled folder serving many tasks. With a graph compiled with
//! `--heads-as-inputs`, each prompt names the heads it runs with (one file per task); prompts
//! are batched, each row with its own heads.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::io::Write;

use anyhow::{bail, Context, Result};
use mimic_models::tokenizer::TextTokenizer;
use mimic_models::vlm::request::{folder_processor, image_prompt};
use mimic_models::{Heads, HostTensor};

#[derive(clap::Args)]
pub struct Args {
    /// A folder written by `mimic compile`.
    #[arg(long, value_name = "DIR")]
    compiled: PathBuf,
    /// Heads per task, `NAME=FILE` (repeatable), for graphs compiled with --heads-as-inputs.
    #[arg(long = "heads", value_name = "NAME=FILE")]
    heads: Vec<String>,
    /// A prompt, `NAME:TEXT` to run it with the heads called NAME, or plain text for none
    /// (repeatable).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// A JSON-lines file of `{"heads": NAME or null, "prompt": TEXT}`, and for a
    /// vision-language model `"images": [FILE, ..]`, one per `<image>` in the prompt.
    #[arg(long, value_name = "FILE")]
    prompts_file: Option<PathBuf>,
    /// Rows per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens to generate per prompt at most.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Stop each answer at its first newline.
    #[arg(long)]
    stop_at_newline: bool,
    #[command(flatten)]
    runtime: super::RuntimeArgs,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    /// Every prompt and completion as JSON.
    #[command(flatten)]
    json: super::JsonArgs,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Request {
    #[serde(default)]
    heads: Option<String>,
    prompt: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    images: Vec<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct Completion {
    heads: Option<String>,
    prompt: String,
    completion: String,
}

fn read_requests(a: &Args, names: &BTreeMap<String, Heads>) -> Result<Vec<Request>> {
    let mut reqs = Vec::new();
    for p in &a.prompts {
        match p.split_once(':') {
            Some((name, text)) if names.contains_key(name) => reqs.push(Request {
                heads: Some(name.to_string()),
                prompt: text.to_string(),
                images: vec![],
            }),
            _ => reqs.push(Request {
                heads: None,
                prompt: p.clone(),
                images: vec![],
            }),
        }
    }
    if let Some(path) = &a.prompts_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read prompts file {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: Request = serde_json::from_str(line).with_context(|| {
                format!(
                    "{} line {}: not a {{\"heads\", \"prompt\"}} object",
                    path.display(),
                    i + 1
                )
            })?;
            // Image paths are relative to the prompts file.
            let base = path.parent().unwrap_or(Path::new("."));
            let mut r = r;
            for image in &mut r.images {
                if image.is_relative() {
                    *image = base.join(&*image);
                }
            }
            reqs.push(r);
        }
    }
    for r in &reqs {
        if let Some(n) = &r.heads {
            if !names.contains_key(n) {
                bail!(
                    "prompt {:?} asks for heads `{n}`, but --heads names {:?}",
                    r.prompt,
                    names.keys().collect::<Vec<_>>()
                );
            }
        }
    }
    if reqs.is_empty() {
        bail!("no prompts: give --prompt or --prompts-file");
    }
    Ok(reqs)
}

pub fn run(a: Args) -> Result<()> {
    let mut model = a.runtime.load(&a.compiled, &a.threads)?;
    let contract = model.contract.clone();
    let mut names = BTreeMap::new();
    for spec in &a.heads {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--heads {spec}: expected NAME=FILE");
        };
        let h = Heads::read(Path::new(file), &contract.fingerprint, &contract.config)?;
        if let Some(graph) = contract.heads.as_ref().filter(|g| g.per_request()) {
            if graph.method != h.method {
                bail!(
                    "{file}: holds {} heads, but {} takes {} heads",
                    h.method.name(),
                    a.compiled.display(),
                    graph.method.name()
                );
            }
        }
        names.insert(name.to_string(), h);
    }
    if !names.is_empty() && !model.takes_heads() {
        bail!(
            "{} was compiled without --heads-as-inputs: it cannot take --heads",
            a.compiled.display()
        );
    }
    let reqs = read_requests(&a, &names)?;
    let tok_path = a.compiled.join(mimic_models::contract::TOKENIZER_FILE);
    let tok = TextTokenizer::from_file(&tok_path)?;
    let mut eos = contract.eos_token_ids.clone();
    eos.sort_unstable();
    let pad = tok.pad_id().unwrap_or(0);
    let bar = indicatif::ProgressBar::new(reqs.len() as u64);
    let t0 = std::time::Instant::now();
    let mut new_tokens = 0usize;
    // A vision-language model: each prompt's images through the folder's image encoder,
    // its `<image>` placeholders expanded.
    let mut features: Vec<Option<HostTensor>> = Vec::with_capacity(reqs.len());
    let mut texts = Vec::with_capacity(reqs.len());
    let processor = match &contract.vision {
        Some(_) if reqs.iter().any(|r| !r.images.is_empty()) => {
            Some(folder_processor(&a.compiled)?)
        }
        _ => None,
    };
    for r in &reqs {
        match (&contract.vision, &processor) {
            (Some(v), Some(p)) if !r.images.is_empty() => {
                let ip = image_prompt(&v.config, p, &r.prompt, &r.images)
                    .with_context(|| format!("prompt {:?}", r.prompt))?;
                features.push(Some(model.encode_images(&ip.inputs)?));
                texts.push(ip.text);
            }
            (None, _) if !r.images.is_empty() => bail!(
                "prompt {:?} has images, but {} is a text model",
                r.prompt,
                a.compiled.display()
            ),
            _ => {
                features.push(None);
                texts.push(r.prompt.clone());
            }
        }
    }
    let encoded: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode(t))
        .collect::<Result<_, _>>()?;
    for (p, r) in encoded.iter().zip(&reqs) {
        if p.len() + a.max_new_tokens > contract.max_positions {
            bail!(
                "prompt {:?} of {} tokens plus {} new tokens is longer than the model's context of {}",
                r.prompt,
                p.len(),
                a.max_new_tokens,
                contract.max_positions
            );
        }
    }
    // Batches are cut in order of prompt length, so they pad least; results keep the input
    // order.
    let order = mimic_runtime::batch::by_length(encoded.iter().map(Vec::len));
    let mut results: Vec<Option<Completion>> = (0..reqs.len()).map(|_| None).collect();
    for rows in order.chunks(a.batch.max(1)) {
        let chunk: Vec<&Request> = rows.iter().map(|&i| &reqs[i]).collect();
        let prompts: Vec<Vec<u32>> = rows.iter().map(|&i| encoded[i].clone()).collect();
        if model.takes_heads() {
            let rows: Vec<Option<&Heads>> = chunk
                .iter()
                .map(|r| r.heads.as_ref().map(|n| &names[n]))
                .collect();
            model.set_heads(&rows)?;
        }
        // The batch's image tokens, row after row (the order of its `<image>` tokens).
        if let Some(tokens) =
            HostTensor::concat_rows(rows.iter().filter_map(|&i| features[i].as_ref()))
        {
            model.set_images(tokens)?;
        }
        let outs = mimic_runtime::batch::greedy_batch(
            &mut model,
            &prompts,
            a.max_new_tokens,
            pad,
            |_, toks| {
                eos.binary_search(toks.last().unwrap_or(&u32::MAX)).is_ok()
                    || (a.stop_at_newline
                        && tok.decode(toks).map(|t| t.contains('\n')).unwrap_or(false))
            },
        )?;
        for ((&i, r), toks) in rows.iter().zip(&chunk).zip(outs) {
            new_tokens += toks.len();
            let toks: Vec<u32> = toks.into_iter().filter(|t| !eos.contains(t)).collect();
            let mut text = tok.decode(&toks)?;
            if a.stop_at_newline {
                text = text.split('\n').next().unwrap_or_default().to_string();
            }
            results[i] = Some(Completion {
                heads: r.heads.clone(),
                prompt: r.prompt.clone(),
                completion: text,
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let results: Vec<Completion> = results.into_iter().flatten().collect();
    let secs = t0.elapsed().as_secs_f64();
    let mut out = a.json.table();
    writeln!(
        out,
        "| {:<12} | {:<40} | {:<30} |",
        "heads", "prompt", "completion"
    )?;
    writeln!(out, "|{:-<14}|{:-<42}|{:-<32}|", "", "", "")?;
    let short = |s: &str, n: usize| {
        let s = s.replace('\n', "\\n");
        if s.chars().count() > n {
            format!("{}…", s.chars().take(n - 1).collect::<String>())
        } else {
            s
        }
    };
    for r in &results {
        writeln!(
            out,
            "| {:<12} | {:<40} | {:<30} |",
            r.heads.as_deref().unwrap_or("(none)"),
            short(&r.prompt, 40),
            short(&r.completion, 30)
        )?;
    }
    eprintln!(
        "[{} prompts in batches of {}, {new_tokens} new tokens, {:.2}s, {:.1} prompts/s]",
        results.len(),
        a.batch,
        secs,
        results.len() as f64 / secs.max(1e-9)
    );
    a.json
        .write(&serde_json::json!({"compiled": a.compiled, "results": results, "seconds": secs}))?;
    Ok(())
}
