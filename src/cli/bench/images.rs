//! `mimic bench --dataset` on a vision-language model: what a question about an image costs,
//! zero-shot, prompted with demonstrations (each with its image: nine images a query at 8
//! shots) and with MimIC heads folded in, one at a time and in batches, all through the
//! compiled three-graph folder in ONNX Runtime. Greedy answers, each ending at its newline or
//! the template's end marker, as `mimic eval --backend onnx` answers. Each figure is the
//! median of `--batch-rounds` passes over the same `--batch-queries` questions; the image
//! encoder's share (preprocessing included) is timed apart.
use anyhow::{bail, Result};
use serde::Serialize;

use super::Args;

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
pub struct ImageRow {
    pub method: String,
    pub batch: usize,
    pub queries: usize,
    /// Queries per second of the median round.
    pub queries_per_s: f64,
    pub rounds_queries_per_s: Vec<f64>,
    /// Seconds per query of the median round (at batch 1, the per-query latency).
    pub seconds_per_query: f64,
    /// The image encoder's share of the median round's time.
    pub encoder_share: f64,
    pub images_per_query: f64,
    pub prompt_tokens: f64,
    pub exact_match: f64,
}

#[cfg(feature = "torch")]
pub fn run(a: &Args) -> Result<()> {
    use anyhow::Context;
    use mimic_trainer::eval::{Decoding, EvalRun, Prompting};
    use std::io::Write;

    let Some(dataset) = a.dataset.dataset else {
        bail!("the image benchmark needs --dataset");
    };
    let any = a.model.open_any()?;
    let crate::cli::AnyModel::Vision(vision) = &any else {
        bail!(
            "--dataset {} asks questions about images: give a vision-language model (--model DIR)",
            dataset.name()
        );
    };
    let model = any.decoder();
    let tok = model.tokenizer()?;
    let template = crate::cli::benchmark::default_template(dataset, vision.config.architecture);
    let (task, _) = a.dataset.load(
        dataset,
        &template,
        vision.config.architecture,
        0,
        Some(a.batch_queries),
    )?;
    let heads = a.heads.read(model)?;
    let shift = match &heads {
        Some(h) => {
            Some(mimic_trainer::shift::Shift::from_heads(h, &model.config, tch::Device::Cpu)?.0)
        }
        None => None,
    };
    let mut methods: Vec<(Prompting, Option<&mimic_models::Heads>)> = vec![
        (Prompting::ZeroShot, None),
        (Prompting::InContext(a.shots), None),
    ];
    if let (Some(h), Some(s)) = (&heads, &shift) {
        methods.push((Prompting::Shifted(s), Some(h)));
    }
    let decoding = Decoding {
        max_new: a.answer_tokens,
        seed: 0,
        beam: None,
    };
    let attention = a.batched_attention.unwrap_or(crate::cli::default_attention(
        mimic_runtime::ExecutionProvider::Cpu,
        mimic_compiler::Dtype::Fp32,
    ));
    let opts = mimic_compiler::CompileOptions {
        attention,
        last_only: true,
        ..Default::default()
    };
    let session = mimic_runtime::SessionOptions {
        threads: a.threads.threads,
        ..Default::default()
    };
    let mut rows = Vec::new();
    for &batch in &a.batch_sizes {
        for (prompting, heads) in &methods {
            let dir = crate::cli::compiled_any_for(&any, *heads, &opts)?;
            let mut compiled = mimic_runtime::CompiledModel::load(&dir, &session)
                .with_context(|| format!("cannot load {}", dir.display()))?;
            let run = EvalRun::new(prompting, decoding);
            // One untimed pass over a batch's worth of questions: sessions warm up.
            let mut warm = task.clone();
            warm.test.truncate(batch.max(1));
            crate::cli::eval::evaluate_compiled(
                &mut compiled,
                Some(vision),
                tok,
                &warm,
                &run,
                batch,
                |_, _| {},
            )?;
            let mut rounds = Vec::new();
            for round in 0..a.batch_rounds.max(1) {
                let (r, _) = crate::cli::eval::evaluate_compiled(
                    &mut compiled,
                    Some(vision),
                    tok,
                    &task,
                    &run,
                    batch,
                    |_, _| {},
                )?;
                eprintln!(
                    "{} batch {batch} round {round}: {:.2} queries/s",
                    run.method,
                    r.queries as f64 / r.seconds
                );
                rounds.push(r);
            }
            let rates: Vec<f64> = rounds
                .iter()
                .map(|r| r.queries as f64 / r.seconds)
                .collect();
            rounds.sort_by(|x, y| x.seconds.total_cmp(&y.seconds));
            let median = &rounds[rounds.len() / 2];
            let n = median.queries.max(1) as f64;
            rows.push(ImageRow {
                method: run.method.clone(),
                batch,
                queries: median.queries,
                queries_per_s: n / median.seconds,
                rounds_queries_per_s: rates,
                seconds_per_query: median.seconds / n,
                encoder_share: median.encoder_seconds / median.seconds,
                images_per_query: (run.shots + 1) as f64,
                prompt_tokens: median.mean_prompt_tokens,
                exact_match: median.exact_match,
            });
        }
    }
    let mut out = a.json.table();
    writeln!(
        out,
        "| {:<12} | {:>5} | {:>7} | {:>9} | {:>9} | {:>7} | {:>6} | {:>13} | {:>5} |",
        "method",
        "batch",
        "queries",
        "queries/s",
        "s/query",
        "encoder",
        "images",
        "prompt tokens",
        "exact"
    )?;
    writeln!(
        out,
        "|{:-<14}|{:->7}|{:->9}|{:->11}|{:->11}|{:->9}|{:->8}|{:->15}|{:->7}|",
        "", "", "", "", "", "", "", "", ""
    )?;
    for r in &rows {
        writeln!(
            out,
            "| {:<12} | {:>5} | {:>7} | {:>9.2} | {:>9.3} | {:>6.1}% | {:>6} | {:>13.1} | {:>5.2} |",
            r.method,
            r.batch,
            r.queries,
            r.queries_per_s,
            r.seconds_per_query,
            100.0 * r.encoder_share,
            r.images_per_query,
            r.prompt_tokens,
            r.exact_match
        )?;
    }
    writeln!(
        out,
        "greedy, ONNX Runtime ({} attention), {} threads; median of {} rounds; encoder: the \
         image encoder's share of the time, preprocessing included",
        attention.name(),
        a.threads.resolved(),
        a.batch_rounds.max(1)
    )?;
    a.json.write(&serde_json::json!({
        "model": vision.source,
        "dataset": dataset.name(),
        "threads": a.threads.resolved(),
        "rows": rows,
    }))?;
    Ok(())
}

#[cfg(not(feature = "torch"))]
pub fn run(_: &Args) -> Result<()> {
    bail!("this mimic was built without the `torch` feature: the image benchmark runs the evaluation loop")
}
