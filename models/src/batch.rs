//! Generation for many prompts at once, over any backend that runs its rows as one batch
//! ([`BatchLm`]): greedy decoding with each row stopping on its own ([`greedy_batch`]), and
//! the beam searches of several prompts run side by side, every prompt's beams rows of the
//! same batch ([`beam_search_batch`]). Each prompt's tokens are those it would get alone:
//! the batch changes how the work is laid out, not what is decided.
use crate::beam::{BeamConfig, BeamSearch, Hypothesis};
use crate::generate::argmax;

/// A model that runs several sequences as the rows of one batch, each with its own cache.
pub trait BatchLm {
    type Error;
    /// Forgets any cached rows, feeds `prompts` as one batch (one row each; shorter prompts
    /// padded on the left) and returns each row's logits after its last token.
    fn start_batch(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, Self::Error>;
    /// Makes row `i` of the new batch a copy of the current row `parents[i]` (rows no parent
    /// names are dropped, a row named twice is copied), feeds `tokens[i]` to row `i`, and
    /// returns each new row's logits.
    fn step_batch(
        &mut self,
        parents: &[usize],
        tokens: &[u32],
    ) -> Result<Vec<Vec<f32>>, Self::Error>;
}

/// The prompts' token ids laid out for one run: `[batch, longest]` ids left-padded with
/// `pad`, the mask (0 on padding), and each token's position among its row's real tokens.
pub fn left_padded(prompts: &[Vec<u32>], pad: u32) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let n = prompts.len() * longest;
    let (mut ids, mut mask, mut pos) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for p in prompts {
        let padding = longest - p.len();
        ids.extend(std::iter::repeat_n(pad as i64, padding));
        mask.extend(std::iter::repeat_n(0i64, padding));
        pos.extend(std::iter::repeat_n(0i64, padding));
        ids.extend(p.iter().map(|&t| t as i64));
        mask.extend(std::iter::repeat_n(1i64, p.len()));
        pos.extend(0..p.len() as i64);
    }
    (ids, mask, pos)
}

/// Whether `parents` keeps the `rows` rows of a batch as they are (each named once, in
/// order): then a backend need not reorder its cache.
pub fn keeps_every_row(parents: &[usize], rows: usize) -> bool {
    parents.len() == rows && parents.iter().enumerate().all(|(i, &p)| i == p)
}

/// Greedy continuation of every prompt, at most `max_new` tokens each. `done(row, tokens)`
/// says when a row has finished (its end-of-sequence token, a newline, ...); finished rows
/// keep their place in the batch, fed their last token again, until every row is done (so
/// that per-row inputs such as per-request heads keep their rows). Returns each row's new
/// tokens.
pub fn greedy_batch<M: BatchLm>(
    lm: &mut M,
    prompts: &[Vec<u32>],
    max_new: usize,
    mut done: impl FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Vec<u32>>, M::Error> {
    let batch = prompts.len();
    let mut out = vec![Vec::new(); batch];
    if batch == 0 || max_new == 0 {
        return Ok(out);
    }
    let mut logits = lm.start_batch(prompts)?;
    let mut finished = vec![false; batch];
    let rows: Vec<usize> = (0..batch).collect();
    loop {
        let mut step = Vec::with_capacity(batch);
        for (row, l) in logits.iter().enumerate() {
            let t = if finished[row] {
                *out[row].last().unwrap_or(&0)
            } else {
                let t = argmax(l);
                out[row].push(t);
                finished[row] = done(row, &out[row]) || out[row].len() >= max_new;
                t
            };
            step.push(t);
        }
        if finished.iter().all(|&f| f) {
            return Ok(out);
        }
        logits = lm.step_batch(&rows, &step)?;
    }
}

/// The beam search of each prompt (as [`crate::beam::beam_search`] runs it alone), all of
/// them in one batch: every running search's beams are rows of it, a search's rows dropping
/// out when it ends. Returns each prompt's hypotheses, best first.
pub fn beam_search_batch<M: BatchLm>(
    lm: &mut M,
    prompts: &[Vec<u32>],
    cfg: &BeamConfig,
    eos: &[u32],
) -> Result<Vec<Vec<Hypothesis>>, M::Error> {
    let mut searches: Vec<BeamSearch> = prompts.iter().map(|_| BeamSearch::new(cfg, eos)).collect();
    if prompts.is_empty() || searches.iter().all(BeamSearch::is_done) {
        return Ok(searches.into_iter().map(BeamSearch::hypotheses).collect());
    }
    let mut logits = lm.start_batch(prompts)?;
    // The running searches in batch order, with the number of rows each holds.
    let mut running: Vec<(usize, usize)> = (0..prompts.len()).map(|q| (q, 1)).collect();
    loop {
        let (mut parents, mut tokens, mut next_running) = (Vec::new(), Vec::new(), Vec::new());
        let mut offset = 0;
        for &(q, rows) in &running {
            if let Some(next) = searches[q].advance(&logits[offset..offset + rows]) {
                next_running.push((q, next.len()));
                for (parent, token) in next {
                    parents.push(offset + parent);
                    tokens.push(token);
                }
            }
            offset += rows;
        }
        if next_running.is_empty() {
            break;
        }
        logits = lm.step_batch(&parents, &tokens)?;
        running = next_running;
    }
    Ok(searches.into_iter().map(BeamSearch::hypotheses).collect())
}

/// How a batch of answers is decoded: greedily, or by beam search (the best hypothesis).
#[derive(Debug, Clone, Copy)]
pub enum BatchDecoding<'c> {
    Greedy { max_new: usize },
    Beam(&'c BeamConfig),
}

/// Each prompt's new tokens: greedy (stopping where `done` says, or at `eos`) or the best
/// beam-search hypothesis (stopping at `eos`, the end token kept as the search keeps it).
pub fn answer_batch<M: BatchLm>(
    lm: &mut M,
    prompts: &[Vec<u32>],
    decoding: BatchDecoding,
    eos: &[u32],
    mut done: impl FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Vec<u32>>, M::Error> {
    match decoding {
        BatchDecoding::Greedy { max_new } => greedy_batch(lm, prompts, max_new, |row, toks| {
            toks.last().is_some_and(|t| eos.contains(t)) || done(row, toks)
        }),
        BatchDecoding::Beam(cfg) => Ok(beam_search_batch(lm, prompts, cfg, eos)?
            .into_iter()
            .map(|hyps| {
                hyps.into_iter()
                    .next()
                    .map(|h| h.tokens)
                    .unwrap_or_default()
            })
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beam::{beam_search, BeamLm, EarlyStopping};

    /// Logits that depend on a row's whole sequence (a hash of it), so that a row fed
    /// another row's cache or token gives other answers.
    fn logits_of(seq: &[u32], vocab: usize) -> Vec<f32> {
        let mut h: u64 = 1469598103934665603;
        for &t in seq {
            h = (h ^ t as u64).wrapping_mul(1099511628211);
        }
        (0..vocab)
            .map(|i| {
                let x = (h ^ (i as u64).wrapping_mul(0x9E3779B97F4A7C15))
                    .wrapping_mul(0xBF58476D1CE4E5B9);
                (x >> 40) as f32 / (1u64 << 24) as f32 * 4.0
            })
            .collect()
    }

    /// A model whose rows are sequences (its "cache"); one call counts as one batch.
    struct Sequences {
        vocab: usize,
        rows: Vec<Vec<u32>>,
        calls: usize,
    }
    impl BatchLm for Sequences {
        type Error = ();
        fn start_batch(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ()> {
            self.calls += 1;
            self.rows = prompts.to_vec();
            Ok(self.rows.iter().map(|s| logits_of(s, self.vocab)).collect())
        }
        fn step_batch(&mut self, parents: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>, ()> {
            self.calls += 1;
            self.rows = parents
                .iter()
                .zip(tokens)
                .map(|(&p, &t)| {
                    let mut s = self.rows[p].clone();
                    s.push(t);
                    s
                })
                .collect();
            Ok(self.rows.iter().map(|s| logits_of(s, self.vocab)).collect())
        }
    }
    impl BeamLm for Sequences {
        type Error = ();
        fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, ()> {
            Ok(self.start_batch(&[prompt.to_vec()])?.remove(0))
        }
        fn step(&mut self, parents: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>, ()> {
            self.step_batch(parents, tokens)
        }
    }

    fn model() -> Sequences {
        Sequences {
            vocab: 12,
            rows: vec![],
            calls: 0,
        }
    }

    #[test]
    fn prompts_are_left_padded_with_positions_from_their_first_token() {
        let (ids, mask, pos) = left_padded(&[vec![5, 6, 7], vec![9]], 0);
        assert_eq!(ids, [5, 6, 7, 0, 0, 9]);
        assert_eq!(mask, [1, 1, 1, 0, 0, 1]);
        assert_eq!(pos, [0, 1, 2, 0, 0, 0]);
    }

    #[test]
    fn batched_beam_searches_equal_the_searches_alone() {
        let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![4], vec![5, 6], vec![7, 8, 9, 10]];
        for (beams, eos, penalty, early) in [
            (3, vec![0], 0.0, EarlyStopping::Heuristic),
            (2, vec![0, 11], 1.0, EarlyStopping::Done),
            (4, vec![3], 2.0, EarlyStopping::Never),
        ] {
            let cfg = BeamConfig {
                num_beams: beams,
                length_penalty: penalty,
                early_stopping: early,
                max_new_tokens: 7,
            };
            let mut m = model();
            let batched = beam_search_batch(&mut m, &prompts, &cfg, &eos).unwrap();
            for (p, got) in prompts.iter().zip(&batched) {
                let alone = beam_search(&mut model(), p, &cfg, &eos).unwrap();
                assert_eq!(got, &alone, "prompt {p:?}, {beams} beams");
                assert!(!alone.is_empty());
            }
            // One batch a step, not one per prompt.
            assert!(m.calls <= 7, "{} calls", m.calls);
        }
    }

    #[test]
    fn greedy_rows_stop_on_their_own_and_equal_greedy_alone() {
        let prompts: Vec<Vec<u32>> = vec![vec![1, 2], vec![3], vec![4, 5, 6]];
        let mut m = model();
        // Row 1 stops after 2 tokens; the others run to 5.
        let out =
            greedy_batch(&mut m, &prompts, 5, |row, toks| row == 1 && toks.len() == 2).unwrap();
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [5, 2, 5]);
        for (p, got) in prompts.iter().zip(&out) {
            let mut seq = p.clone();
            for &t in got {
                assert_eq!(t, argmax(&logits_of(&seq, 12)));
                seq.push(t);
            }
        }
    }

    #[test]
    fn answers_end_at_an_end_token() {
        let prompts: Vec<Vec<u32>> = vec![vec![1, 2], vec![3]];
        let first = argmax(&logits_of(&prompts[0], 12));
        let out = answer_batch(
            &mut model(),
            &prompts,
            BatchDecoding::Greedy { max_new: 6 },
            &[first],
            |_, _| false,
        )
        .unwrap();
        assert_eq!(out[0], [first]);
    }
}
