//! The timing harness: the bandwidth bound, prompts of a given length, one backend timed
//! alone, and ONNX Runtime sessions loaded in mirrored order and timed in lockstep.
use std::time::Instant;

use anyhow::{bail, Result};
use mimic_models::Model;
use mimic_runtime::{CompiledModel, OnnxLm, SessionOptions};

use super::{Args, Row};

/// Bytes of float32 weights a decode step reads: every matrix and norm once, and the output
/// projection (the embedding table when tied); the embedding lookup reads one row only.
pub fn weight_bytes_per_token(model: &Model) -> u64 {
    let cfg = &model.config;
    let embed = (cfg.vocab_size * cfg.hidden_size) as u64;
    let total = model.weights.num_params() as u64;
    let read = if cfg.tie_word_embeddings {
        total
    } else {
        total - embed
    };
    4 * read
}

/// Bytes a decode step reads with `--weights source`, where the graph keeps blocks: half a
/// byte a weight and a float32 scale a block (Q4_1 also a float32 minimum and a 4-bit zero
/// point), a Q8_0 product twice that (its two 4-bit halves); float32 for the rest. The
/// embedding's rows are a gather; a tied output head reads the table.
pub fn source_weight_bytes_per_token(model: &Model) -> u64 {
    use mimic_models::quant::{BlockKind, BLOCK};
    let cfg = &model.config;
    let mut bytes = 0u64;
    for (name, t) in &model.weights.tensors {
        let n = t.data.len() as u64;
        let blocks = n / BLOCK as u64;
        let embedding = name == "model.embed_tokens.weight";
        bytes += match (model.weights.blocks.get(name).map(|w| w.kind), embedding) {
            (_, true) if !cfg.tie_word_embeddings => 0,
            (Some(BlockKind::Q4_0), _) => n / 2 + blocks * 4,
            (Some(BlockKind::Q4_1), _) => n / 2 + blocks * 9,
            (Some(BlockKind::Q8_0), _) => n + blocks * 8 + blocks / 2,
            (None, _) => 4 * n,
        };
    }
    bytes
}

/// Read bandwidth in GB/s: `threads` threads summing disjoint parts of a 1 GiB buffer, best of 5.
pub fn measure_bandwidth(threads: usize) -> f64 {
    let n = (1usize << 30) / 4;
    let buf: Vec<f32> = vec![1.0; n];
    let chunk = n.div_ceil(threads.max(1));
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let sum: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || c.chunks(16).map(|v| v.iter().sum::<f32>()).sum::<f32>()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        std::hint::black_box(sum);
        best = best.max((n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// A prompt of exactly `len` tokens: a plain English text repeated and cut.
pub fn prompt_ids(model: &Model, len: usize) -> Result<Vec<u32>> {
    let text =
        "The history of the city goes back many centuries, to a small settlement on the river \
                where traders met to exchange grain, salt and cloth. ";
    let one = model.tokenizer()?.encode(text)?;
    if one.is_empty() {
        bail!("tokenizer produced no tokens");
    }
    Ok(one.iter().cycle().take(len).copied().collect())
}

#[cfg(feature = "torch")]
pub fn time_backend<M: mimic_models::generate::CausalLm>(
    name: &str,
    lm: &mut M,
    prompts: &[Vec<u32>],
    a: &Args,
) -> Result<Vec<Row>>
where
    M::Error: std::error::Error + Send + Sync + 'static,
{
    let mut rows = Vec::new();
    for ids in prompts {
        let mut prefill = Vec::new();
        let mut decode = Vec::new();
        for it in 0..a.warmup + a.iterations {
            // No EOS: every run decodes exactly `new_tokens`.
            let g = mimic_models::generate::greedy(lm, ids, a.new_tokens, &[], |_| {})?;
            if it >= a.warmup {
                prefill.push(g.prefill_s * 1e3);
                decode.push((g.tokens.len() - 1) as f64 / g.decode_s);
            }
        }
        let row = Row {
            backend: name.into(),
            prompt_len: ids.len(),
            prompt_tokens: ids.len(),
            new_tokens: a.new_tokens,
            prefill_ms: median(&mut prefill),
            decode_tok_s: median(&mut decode),
        };
        tracing::info!(?row, "measured");
        rows.push(row);
    }
    Ok(rows)
}

/// Loads `copies` sessions of each folder, in mirrored order (the folders forward, then
/// backward, ...); returns each folder's sessions. Sessions built later run a few percent
/// faster on the machines measured (the same folder too: it goes with when ONNX Runtime
/// prepacks the weights), so every backend gets early and late ones alike.
pub fn load_mirrored(
    dirs: &[&std::path::Path],
    copies: usize,
    opts: &SessionOptions,
) -> Result<Vec<Vec<CompiledModel>>> {
    let mut out: Vec<Vec<CompiledModel>> = dirs.iter().map(|_| Vec::new()).collect();
    for copy in 0..copies.max(1) {
        let order: Vec<usize> = match copy % 2 {
            0 => (0..dirs.len()).collect(),
            _ => (0..dirs.len()).rev().collect(),
        };
        for i in order {
            out[i].push(CompiledModel::load(dirs[i], opts)?);
        }
    }
    Ok(out)
}

/// Times ONNX backends in lockstep. For each prompt and iteration every session prefills in
/// turn (its backend's demonstration prefix, if any, before the prompt); then they decode one
/// token each in turn, the order rotating step by step, so the machine's drift falls on all
/// of them alike down to the scale of one step. They share the process's ONNX Runtime thread
/// pool ([`mimic_runtime::environment`]), so none leaves workers spinning on the cores the
/// next one needs. Every run decodes exactly `new_tokens` (no EOS). A backend's decode rate
/// in an iteration is over all its sessions ([`load_mirrored`]); medians over iterations.
pub fn time_interleaved(
    onnx: &mut [(String, Vec<CompiledModel>, Vec<u32>)],
    prompts: &[Vec<u32>],
    a: &Args,
) -> Result<Vec<Row>> {
    use mimic_models::generate::{argmax, CausalLm};
    let mut rows = Vec::new();
    let backends = onnx.len();
    // Each backend's sessions each decode `new_tokens - 1` steps an iteration.
    let steps: Vec<usize> = onnx
        .iter()
        .map(|o| o.1.len() * a.new_tokens.saturating_sub(1))
        .collect();
    for ids in prompts {
        let mut prefill = vec![Vec::new(); backends];
        let mut decode = vec![Vec::new(); backends];
        let full: Vec<Vec<u32>> = onnx
            .iter()
            .map(|(_, _, prefix)| [prefix.as_slice(), ids].concat())
            .collect();
        for it in 0..a.warmup + a.iterations {
            // Every session with the backend it belongs to.
            let mut lms: Vec<(usize, OnnxLm)> = onnx
                .iter_mut()
                .enumerate()
                .flat_map(|(b, o)| o.1.iter_mut().map(move |m| (b, OnnxLm::new(m))))
                .collect();
            let n = lms.len();
            let mut logits = vec![Vec::new(); n];
            // Prefills too take turns in an order that rotates iteration by iteration.
            for i in (0..n).map(|k| (k + it) % n) {
                let (b, lm) = &mut lms[i];
                let t = Instant::now();
                logits[i] = lm.extend(&full[*b])?;
                if it >= a.warmup {
                    prefill[*b].push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            let mut seconds = vec![0f64; backends];
            for step in 1..a.new_tokens {
                for i in (0..n).map(|k| (k + step) % n) {
                    let next = argmax(&logits[i]);
                    let (b, lm) = &mut lms[i];
                    let t = Instant::now();
                    logits[i] = lm.extend(&[next])?;
                    seconds[*b] += t.elapsed().as_secs_f64();
                }
            }
            if it >= a.warmup && a.new_tokens > 1 {
                for b in 0..backends {
                    decode[b].push(steps[b] as f64 / seconds[b]);
                }
            }
        }
        for (i, (name, _, prefix)) in onnx.iter().enumerate() {
            let row = Row {
                backend: name.clone(),
                prompt_len: ids.len(),
                prompt_tokens: prefix.len() + ids.len(),
                new_tokens: a.new_tokens,
                prefill_ms: median(&mut prefill[i]),
                decode_tok_s: median(&mut decode[i]),
            };
            tracing::info!(?row, "measured");
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The middle value (NaN for none).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}
