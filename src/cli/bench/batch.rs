//! The serving side of `mimic bench`: a task's test queries answered in batches (greedy, short
//! answers of a fixed length, read up to the newline) by the base model zero-shot, the model
//! with MimIC heads folded in, and the base model prompted with demonstrations; queries per
//! second, tokens processed per query and exact match, side by side in one run.
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use mimic_models::tokenizer::TextTokenizer;
use mimic_runtime::CompiledModel;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct BatchRow {
    pub method: String,
    pub batch: usize,
    pub queries: usize,
    /// Queries per second of the median round.
    pub queries_per_s: f64,
    /// Queries per second of each round, in order.
    pub rounds_queries_per_s: Vec<f64>,
    /// Mean seconds per query of the median round (at batch 1, the per-query latency).
    pub seconds_per_query: f64,
    /// Mean prompt tokens plus generated tokens per query (padding not counted).
    pub tokens_per_query: f64,
    pub exact_match: f64,
}

/// One way of answering: a compiled model and the prompts it gets.
pub struct Contender<'a> {
    pub method: String,
    pub dir: &'a Path,
    /// Per query: the prompt and the expected answer.
    pub queries: Vec<(Vec<u32>, String)>,
}

/// Answers every query of every contender in batches of `batch`, after one warm-up batch
/// each, `rounds` times over. Batches are cut from the queries in order of prompt length, so
/// they pad least. Contenders take turns batch by batch, so the machine's drift falls on all
/// alike; each contender's rate is that of its median round. Each contender has `copies`
/// sessions loaded in mirrored order ([`super::harness::load_mirrored`]), which take the
/// batches in turn.
/// Every answer is exactly `answer_tokens` long (the same work for every method); accuracy
/// reads the answer up to its first newline.
pub fn time_batched(
    contenders: &[Contender],
    tok: &TextTokenizer,
    batch: usize,
    answer_tokens: usize,
    threads: usize,
    rounds: usize,
    copies: usize,
) -> Result<Vec<BatchRow>> {
    let opts = mimic_runtime::SessionOptions {
        threads,
        ..Default::default()
    };
    let pad = tok.pad_id().unwrap_or(0);
    let never = |_: usize, _: &[u32]| false;
    let dirs: Vec<&Path> = contenders.iter().map(|c| c.dir).collect();
    let mut models: Vec<Vec<CompiledModel>> = super::harness::load_mirrored(&dirs, copies, &opts)?;
    for (c, sessions) in contenders.iter().zip(models.iter_mut()) {
        let warm: Vec<Vec<u32>> = c.queries.iter().take(batch).map(|q| q.0.clone()).collect();
        for m in sessions.iter_mut() {
            mimic_runtime::batch::greedy_batch(m, &warm, answer_tokens, pad, never)?;
        }
    }
    let rounds = rounds.max(1);
    let mut seconds = vec![vec![0f64; rounds]; contenders.len()];
    let mut answers: Vec<Vec<Vec<u32>>> = contenders
        .iter()
        .map(|c| vec![Vec::new(); c.queries.len()])
        .collect();
    let orders: Vec<Vec<usize>> = contenders
        .iter()
        .map(|c| mimic_runtime::batch::by_length(c.queries.iter().map(|q| q.0.len())))
        .collect();
    let chunks = contenders
        .iter()
        .map(|c| c.queries.len())
        .max()
        .unwrap_or(0)
        .div_ceil(batch);
    let methods = contenders.len();
    for (turn, (round, i)) in (0..rounds)
        .flat_map(|r| (0..chunks).map(move |i| (r, i)))
        .enumerate()
    {
        // The methods take each batch in an order that rotates batch by batch, so none
        // always runs right after the same other one.
        for j in (0..methods).map(|k| (k + turn) % methods) {
            let (c, sessions) = (&contenders[j], &mut models[j]);
            let copies = sessions.len();
            let m = &mut sessions[(round + i) % copies];
            let rows: Vec<usize> = orders[j]
                .iter()
                .skip(i * batch)
                .take(batch)
                .copied()
                .collect();
            if rows.is_empty() {
                continue;
            }
            let chunk: Vec<Vec<u32>> = rows.iter().map(|&r| c.queries[r].0.clone()).collect();
            let t0 = Instant::now();
            let out = mimic_runtime::batch::greedy_batch(m, &chunk, answer_tokens, pad, never)?;
            seconds[j][round] += t0.elapsed().as_secs_f64();
            for (r, ids) in rows.into_iter().zip(out) {
                answers[j][r] = ids;
            }
        }
    }
    let mut rows = Vec::new();
    for (j, c) in contenders.iter().enumerate() {
        let mut exact = 0usize;
        let mut tokens = 0usize;
        for ((prompt, expected), ids) in c.queries.iter().zip(&answers[j]) {
            tokens += prompt.len() + ids.len();
            let text = tok.decode(ids)?;
            let cut = text.split('\n').next().unwrap_or_default();
            exact += (cut.trim() == expected.trim()) as usize;
        }
        let n = c.queries.len().max(1) as f64;
        let median = super::harness::median(&mut seconds[j].clone());
        rows.push(BatchRow {
            method: c.method.clone(),
            batch,
            queries: c.queries.len(),
            queries_per_s: n / median,
            rounds_queries_per_s: seconds[j].iter().map(|s| n / s).collect(),
            seconds_per_query: median / n,
            tokens_per_query: tokens as f64 / n,
            exact_match: exact as f64 / n,
        });
    }
    Ok(rows)
}
