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

/// Batches per window of requests sorted by length together.
const WINDOW_BATCHES: usize = 16;

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
    /// Serve every valid request even when others are invalid (a malformed line, unknown
    /// heads, an image that does not decode, a prompt longer than the context): each invalid
    /// one gets its error in the results, and the exit status is 1 if there was any. Without
    /// it, the first invalid request stops the run before anything is served.
    #[arg(long)]
    keep_going: bool,
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
    /// Why the request was not served (`--keep-going`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A request as read: its fields, or why its line could not be read, with what is known of
/// it for the results.
type ReadRequest = std::result::Result<Request, (Request, String)>;

/// The requests of `--prompt` and `--prompts-file`, in order, each read or refused (a line
/// that is no request object, heads that `--heads` does not name).
fn read_requests(a: &Args, names: &BTreeMap<String, Heads>) -> Result<Vec<ReadRequest>> {
    let mut reqs: Vec<ReadRequest> = Vec::new();
    for p in &a.prompts {
        match p.split_once(':') {
            Some((name, text)) if names.contains_key(name) => reqs.push(Ok(Request {
                heads: Some(name.to_string()),
                prompt: text.to_string(),
                images: vec![],
            })),
            _ => reqs.push(Ok(Request {
                heads: None,
                prompt: p.clone(),
                images: vec![],
            })),
        }
    }
    if let Some(path) = &a.prompts_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read prompts file {}", path.display()))?;
        // Image paths are relative to the prompts file.
        let base = path.parent().unwrap_or(Path::new("."));
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Request>(line) {
                Ok(mut r) => {
                    for image in &mut r.images {
                        if image.is_relative() {
                            *image = base.join(&*image);
                        }
                    }
                    reqs.push(Ok(r));
                }
                Err(e) => {
                    let unread = Request {
                        heads: None,
                        prompt: line.chars().take(80).collect(),
                        images: vec![],
                    };
                    let msg = format!(
                        "{} line {}: not a {{\"heads\", \"prompt\"}} object: {e}",
                        path.display(),
                        i + 1
                    );
                    reqs.push(Err((unread, msg)));
                }
            }
        }
    }
    // Heads that --heads does not name make a read request a refused one.
    let reqs: Vec<ReadRequest> = reqs
        .into_iter()
        .map(|r| match r {
            Ok(req) => match req.heads.as_ref().filter(|n| !names.contains_key(*n)) {
                Some(n) => {
                    let msg = format!(
                        "prompt {} asks for heads `{n}`, but --heads names {:?}",
                        quoted(&req.prompt),
                        names.keys().collect::<Vec<_>>()
                    );
                    Err((req, msg))
                }
                None => Ok(req),
            },
            refused => refused,
        })
        .collect();
    if reqs.is_empty() {
        bail!("no prompts: give --prompt or --prompts-file");
    }
    Ok(reqs)
}

/// A read request made ready to run: its prompt text (images' placeholders expanded) and
/// token ids; or why it cannot run. The images are decoded here to check them, and again
/// when their batch runs, so that memory does not grow with the number of requests.
/// A prompt as error messages quote it: its first 60 characters.
fn quoted(prompt: &str) -> String {
    if prompt.chars().count() > 60 {
        format!("{:?}…", prompt.chars().take(60).collect::<String>())
    } else {
        format!("{prompt:?}")
    }
}

fn prepare(
    r: &Request,
    a: &Args,
    contract: &mimic_models::contract::Contract,
    processor: Option<&mimic_models::image::ImageProcessor>,
    tok: &TextTokenizer,
) -> std::result::Result<Vec<u32>, String> {
    let text = match (&contract.vision, processor) {
        (Some(v), Some(p)) if !r.images.is_empty() => {
            image_prompt(&v.config, p, &r.prompt, &r.images)
                .map_err(|e| format!("prompt {}: {e}", quoted(&r.prompt)))?
                .text
        }
        (None, _) if !r.images.is_empty() => {
            return Err(format!(
                "prompt {} has images, but {} is a text model",
                quoted(&r.prompt),
                a.compiled.display()
            ))
        }
        _ => r.prompt.clone(),
    };
    let ids = tok
        .encode(&text)
        .map_err(|e| format!("prompt {}: {e}", quoted(&r.prompt)))?;
    if ids.is_empty() {
        return Err(format!("prompt {} is empty", quoted(&r.prompt)));
    }
    if ids.len() + a.max_new_tokens > contract.max_positions {
        return Err(format!(
            "prompt {} of {} tokens plus {} new tokens is longer than the model's context of {}",
            quoted(&r.prompt),
            ids.len(),
            a.max_new_tokens,
            contract.max_positions
        ));
    }
    Ok(ids)
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
    let processor = match &contract.vision {
        Some(_) if reqs.iter().flatten().any(|r| !r.images.is_empty()) => {
            Some(folder_processor(&a.compiled)?)
        }
        _ => None,
    };
    // Every request checked and tokenized before any is served: without --keep-going the
    // first invalid one stops the run; with it, it gets its error in the results.
    let mut results: Vec<Option<Completion>> = (0..reqs.len()).map(|_| None).collect();
    let mut ready: Vec<(usize, &Request, Vec<u32>)> = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let (req, prepared) = match r {
            Ok(req) => (req, prepare(req, &a, &contract, processor.as_ref(), &tok)),
            Err((req, msg)) => (req, Err(msg.clone())),
        };
        match prepared {
            Ok(ids) => ready.push((i, req, ids)),
            Err(msg) if a.keep_going => {
                tracing::warn!("request {}: {msg}", i + 1);
                results[i] = Some(Completion {
                    heads: req.heads.clone(),
                    prompt: req.prompt.clone(),
                    completion: String::new(),
                    error: Some(msg),
                });
            }
            Err(msg) => bail!(msg),
        }
    }
    let failed = reqs.len() - ready.len();
    let bar = indicatif::ProgressBar::new(ready.len() as u64);
    let t0 = std::time::Instant::now();
    let mut new_tokens = 0usize;
    // Requests are taken a window at a time, in input order (the first served first, and
    // memory set by the longest prompts seen so far, not by the longest of all), and within
    // a window batches are cut in order of prompt length, so they pad least; results keep
    // the input order. A batch's images are decoded and encoded when it runs.
    let window = a.batch.max(1) * WINDOW_BATCHES;
    let order: Vec<usize> = ready
        .chunks(window)
        .enumerate()
        .flat_map(|(w, chunk)| {
            mimic_runtime::batch::by_length(chunk.iter().map(|(_, _, ids)| ids.len()))
                .into_iter()
                .map(move |j| w * window + j)
        })
        .collect();
    for rows in order.chunks(a.batch.max(1)) {
        let chunk: Vec<&(usize, &Request, Vec<u32>)> = rows.iter().map(|&j| &ready[j]).collect();
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|(_, _, ids)| ids.clone()).collect();
        if model.takes_heads() {
            let heads: Vec<Option<&Heads>> = chunk
                .iter()
                .map(|(_, r, _)| r.heads.as_ref().map(|n| &names[n]))
                .collect();
            model.set_heads(&heads)?;
        }
        // The batch's image tokens, row after row (the order of its `<image>` tokens).
        if let (Some(v), Some(p)) = (&contract.vision, &processor) {
            let mut features = Vec::new();
            for (_, r, _) in chunk.iter().filter(|(_, r, _)| !r.images.is_empty()) {
                let ip = image_prompt(&v.config, p, &r.prompt, &r.images)
                    .with_context(|| format!("prompt {}", quoted(&r.prompt)))?;
                features.push(model.encode_images(&ip.inputs)?);
            }
            if let Some(tokens) = HostTensor::concat_rows(&features) {
                model.set_images(tokens)?;
            }
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
        for ((i, r, _), toks) in chunk.iter().zip(outs) {
            new_tokens += toks.len();
            let toks: Vec<u32> = toks.into_iter().filter(|t| !eos.contains(t)).collect();
            let mut text = tok.decode(&toks)?;
            if a.stop_at_newline {
                text = text.split('\n').next().unwrap_or_default().to_string();
            }
            results[*i] = Some(Completion {
                heads: r.heads.clone(),
                prompt: r.prompt.clone(),
                completion: text,
                error: None,
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
        let completion = match &r.error {
            Some(e) => format!("error: {e}"),
            None => r.completion.clone(),
        };
        writeln!(
            out,
            "| {:<12} | {:<40} | {:<30} |",
            r.heads.as_deref().unwrap_or("(none)"),
            short(&r.prompt, 40),
            short(&completion, 30)
        )?;
    }
    let served = results.len() - failed;
    eprintln!(
        "[{served} prompts in batches of {}, {new_tokens} new tokens, {:.2}s, {:.1} prompts/s{}]",
        a.batch,
        secs,
        served as f64 / secs.max(1e-9),
        if failed > 0 {
            format!("; {failed} invalid, not served")
        } else {
            String::new()
        }
    );
    a.json.write(&serde_json::json!({
        "compiled": a.compiled,
        "results": results,
        "served": served,
        "invalid": failed,
        "seconds": secs
    }))?;
    if failed > 0 {
        bail!(
            "{failed} of {} requests were invalid (their errors are in the results)",
            results.len()
        );
    }
    Ok(())
}
