//! The benchmark's report: the decode table, the batched table, and the ratios the targets
//! are stated in.
use std::io::Write;

use super::batch::BatchRow;
use super::Report;

pub fn print_table(out: &mut dyn Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "weights read per token: {:.1} MB; measured read bandwidth ({} threads): {:.1} GB/s; bound: {:.1} tokens/s",
        r.weight_bytes_per_token as f64 / 1e6,
        r.threads,
        r.bandwidth_gb_s,
        r.bound_tok_s
    )?;
    if r.rows.iter().any(|x| x.backend.ends_with("@source")) {
        writeln!(
            out,
            "@source rows (4-bit blocks kept): {:.1} MB read per token; bound: {:.1} tokens/s",
            r.source_bytes_per_token as f64 / 1e6,
            r.source_bound_tok_s
        )?;
    }
    let bound = |backend: &str| match backend.ends_with("@source") {
        true => r.source_bound_tok_s,
        false => r.bound_tok_s,
    };
    let base = |len: usize| {
        r.rows
            .iter()
            .find(|x| x.backend == "transformers-eager" && x.prompt_len == len)
            .map(|x| x.decode_tok_s)
    };
    writeln!(
        out,
        "| {:<24} | {:>6} | {:>6} | {:>4} | {:>11} | {:>11} | {:>9} | {:>14} |",
        "backend",
        "prompt",
        "tokens",
        "new",
        "prefill ms",
        "decode t/s",
        "% bound",
        "x transformers"
    )?;
    writeln!(
        out,
        "|{:-<26}|{:->8}|{:->8}|{:->6}|{:->13}|{:->13}|{:->11}|{:->16}|",
        "", "", "", "", "", "", "", ""
    )?;
    for x in &r.rows {
        let ratio =
            base(x.prompt_len).map_or("-".to_string(), |b| format!("{:.2}x", x.decode_tok_s / b));
        writeln!(
            out,
            "| {:<24} | {:>6} | {:>6} | {:>4} | {:>11.1} | {:>11.1} | {:>8.0}% | {:>14} |",
            x.backend,
            x.prompt_len,
            x.prompt_tokens,
            x.new_tokens,
            x.prefill_ms,
            x.decode_tok_s,
            100.0 * x.decode_tok_s / bound(&x.backend),
            ratio
        )?;
    }
    Ok(())
}

pub fn print_batch_table(out: &mut dyn Write, rows: &[BatchRow]) -> std::io::Result<()> {
    writeln!(
        out,
        "| {:<18} | {:>5} | {:>7} | {:>10} | {:>24} | {:>10} | {:>14} | {:>11} |",
        "method",
        "batch",
        "queries",
        "queries/s",
        "each round",
        "ms/query",
        "tokens/query",
        "exact match"
    )?;
    writeln!(
        out,
        "|{:-<20}|{:->7}|{:->9}|{:->12}|{:->26}|{:->12}|{:->16}|{:->13}|",
        "", "", "", "", "", "", "", ""
    )?;
    for r in rows {
        let each: Vec<String> = r
            .rounds_queries_per_s
            .iter()
            .map(|q| format!("{q:.2}"))
            .collect();
        writeln!(
            out,
            "| {:<18} | {:>5} | {:>7} | {:>10.2} | {:>24} | {:>10.1} | {:>14.1} | {:>11.3} |",
            r.method,
            r.batch,
            r.queries,
            r.queries_per_s,
            each.join(" / "),
            r.seconds_per_query * 1e3,
            r.tokens_per_query,
            r.exact_match
        )?;
    }
    Ok(())
}

/// The comparisons the compiler issue sets targets for, from this run's rows.
pub fn print_targets(out: &mut dyn Write, r: &Report) -> std::io::Result<()> {
    let decode = |backend: &str, len: usize| {
        r.rows
            .iter()
            .find(|x| x.backend == backend && x.prompt_len == len)
    };
    let mut lens: Vec<usize> = r.rows.iter().map(|x| x.prompt_len).collect();
    lens.sort_unstable();
    lens.dedup();
    for len in lens {
        for (suffix, form) in [("", "fused"), ("-kernel", "through mimic's kernel")] {
            let (b, m) = (
                decode(&format!("onnx{suffix}"), len),
                decode(&format!("onnx-mimic{suffix}"), len),
            );
            if let (Some(b), Some(m)) = (b, m) {
                writeln!(
        out,
                    "prompt {len}: MimIC {form} decode costs {:+.1}% over the base model {form} (target at most +3%); prefill {:.2}x",
                    100.0 * (b.decode_tok_s / m.decode_tok_s - 1.0),
                    m.prefill_ms / b.prefill_ms
                )?;
            }
        }
        // Attention forms against each other: `a` over `b`, as `a/b`.
        for (a, b, what, ratio) in [
            ("onnx-kernel", "onnx", "base", "kernel/fused"),
            ("onnx-mimic-kernel", "onnx-mimic", "MimIC", "kernel/fused"),
            ("onnx", "onnx-unfused", "base", "fused/unfused"),
            ("onnx-mimic", "onnx-mimic-unfused", "MimIC", "fused/unfused"),
        ] {
            if let (Some(x), Some(y)) = (decode(a, len), decode(b, len)) {
                writeln!(
        out,
                    "prompt {len}: {what} {ratio} decode speed {:.2}x, prefill time {:.2}x (CPU execution provider)",
                    x.decode_tok_s / y.decode_tok_s,
                    x.prefill_ms / y.prefill_ms
                )?;
            }
        }
    }
    let batched = |method: &str, batch: usize| {
        r.batched
            .iter()
            .find(|x| x.method.starts_with(method) && x.batch == batch)
    };
    // Ratios within each round too: the methods ran interleaved in it.
    let per_round = |a: &BatchRow, b: &BatchRow, f: &dyn Fn(f64) -> String| {
        a.rounds_queries_per_s
            .iter()
            .zip(&b.rounds_queries_per_s)
            .map(|(x, y)| f(x / y))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    if let (Some(b), Some(m)) = (batched("zero-shot", 1), batched("mimic", 1)) {
        writeln!(
        out,
            "batch 1: MimIC per-query latency {:.3}x the base model's (target at most 1.03x); per round {}",
            m.seconds_per_query / b.seconds_per_query,
            per_round(b, m, &|x| format!("{x:.3}x"))
        )?;
    }
    let largest = r.batched.iter().map(|x| x.batch).max().unwrap_or(0);
    if let (Some(m), Some(i)) = (batched("mimic", largest), batched("icl", largest)) {
        let speedup = m.queries_per_s / i.queries_per_s;
        let tokens = i.tokens_per_query / m.tokens_per_query;
        writeln!(
        out,
            "batch {largest}: MimIC {:.2}x the queries/s of in-context prompting, which processes {:.2}x the tokens per query: {:.0}% of that ratio (target at least 80%; per round {}); exact match {:.3} vs {:.3}",
            speedup,
            tokens,
            100.0 * speedup / tokens,
            per_round(m, i, &|x| format!("{:.0}%", 100.0 * x / tokens)),
            m.exact_match,
            i.exact_match
        )?;
    }
    Ok(())
}
