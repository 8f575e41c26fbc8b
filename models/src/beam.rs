//! Beam search as transformers runs it (`generate(num_beams=B, length_penalty=L,
//! early_stopping=E)`), over any model that can run its beams as a batch and reorder their
//! caches ([`BeamLm`]).
//!
//! The rules are transformers 5.x's (`GenerationMixin._beam_search`). Each step: every running
//! beam's next-token log-probabilities (float32 `log_softmax`) are added to its score; the
//! best `max(2, 1 + n_eos) * B` candidates over all beams are taken in order (ties: the lower
//! flat index first). A candidate "hits" when it ends in an end-of-sequence token or reaches
//! `max_new_tokens`; a hit ranked among the first `B` becomes a finished hypothesis scored
//! `score / len^L`, `len` the tokens generated (the end token included, and kept); the best
//! `B` others run on. At the first step the beams are identical, and only the first counts (the
//! others start at -1e9). Finished hypotheses keep the best `B`. After a step the search stops
//! at `max_new_tokens`, or once `B` hypotheses are finished and (`early_stopping` false) the
//! best running beam's score normalised by the current length is no better than the worst of
//! them (true: at once; never: judged at `max_new_tokens` when `L > 0`). The hypotheses come
//! best first.
use serde::{Deserialize, Serialize};

/// A model whose beams run as one batch, each with its own key/value cache.
pub trait BeamLm {
    type Error;
    /// Forgets any cache, feeds `prompt` as one sequence and returns its last logits.
    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, Self::Error>;
    /// Makes beam `i`'s cache a copy of the current beam `parents[i]`'s (the first call's
    /// parents all index the prompt's one sequence), feeds `tokens[i]` to beam `i`, and
    /// returns each beam's logits.
    fn step(&mut self, parents: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>, Self::Error>;
}

/// When the search may stop before `max_new_tokens` (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlyStopping {
    /// `False`: once no running beam can beat the finished ones at its current length.
    #[default]
    Heuristic,
    /// `True`: as soon as `num_beams` hypotheses are finished.
    Done,
    /// `"never"`: as `Heuristic`, but a positive length penalty is judged at the longest length.
    Never,
}

/// Beam search settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BeamConfig {
    pub num_beams: usize,
    /// The exponent of the length a finished hypothesis's score is divided by.
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    pub max_new_tokens: usize,
}

/// A finished hypothesis: its tokens (generated part) and its length-normalised score.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    pub tokens: Vec<u32>,
    pub score: f64,
}

/// The finished hypotheses, the best `num_beams` of them.
struct Finished {
    num_beams: usize,
    length_penalty: f64,
    early_stopping: EarlyStopping,
    max_new_tokens: usize,
    hyps: Vec<Hypothesis>,
    worst: f64,
}

impl Finished {
    fn add(&mut self, tokens: Vec<u32>, sum_logprobs: f64, generated: usize) {
        let score = sum_logprobs / (generated as f64).powf(self.length_penalty);
        if self.hyps.len() < self.num_beams || score > self.worst {
            self.hyps.push(Hypothesis { tokens, score });
            if self.hyps.len() > self.num_beams {
                // Drop the worst (the first of equals), the next worst becomes the bar.
                let mut order: Vec<usize> = (0..self.hyps.len()).collect();
                order.sort_by(|&a, &b| self.hyps[a].score.total_cmp(&self.hyps[b].score));
                self.worst = self.hyps[order[1]].score;
                self.hyps.remove(order[0]);
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    fn is_done(&self, best_running: f64, generated: usize) -> bool {
        if self.hyps.len() < self.num_beams {
            return false;
        }
        let len = match self.early_stopping {
            EarlyStopping::Done => return true,
            EarlyStopping::Never if self.length_penalty > 0.0 => self.max_new_tokens,
            _ => generated,
        };
        best_running / (len as f64).powf(self.length_penalty) <= self.worst
    }
}

/// `log_softmax` in float32, as torch computes it on the CPU (max subtracted, the sum of
/// exponentials accumulated in float32).
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&x| x - lse).collect()
}

/// One prompt's beam search, a step at a time: [`BeamSearch::advance`] takes the logits of
/// its running beams and says which beams to run next and on which tokens, so that one
/// driver can run a single search ([`beam_search`]) or the searches of many prompts as one
/// batch ([`crate::batch::beam_search_batch`]).
pub struct BeamSearch<'e> {
    num_beams: usize,
    max_new_tokens: usize,
    eos: &'e [u32],
    finished: Finished,
    /// The running beams' generated tokens and scores.
    beams: Vec<Vec<u32>>,
    scores: Vec<f32>,
    /// Candidates kept each step: `max(2, 1 + n_eos) * num_beams`.
    keep: usize,
    step: usize,
    done: bool,
}

impl<'e> BeamSearch<'e> {
    pub fn new(cfg: &BeamConfig, eos: &'e [u32]) -> Self {
        let b = cfg.num_beams.max(1);
        BeamSearch {
            num_beams: b,
            max_new_tokens: cfg.max_new_tokens,
            eos,
            finished: Finished {
                num_beams: b,
                length_penalty: cfg.length_penalty,
                early_stopping: cfg.early_stopping,
                max_new_tokens: cfg.max_new_tokens,
                hyps: Vec::new(),
                worst: 1e9,
            },
            beams: vec![Vec::new(); b],
            // At the first step the beams are identical: only the first counts.
            scores: (0..b).map(|i| if i == 0 { 0.0 } else { -1e9 }).collect(),
            keep: 2usize.max(1 + eos.len()) * b,
            step: 0,
            done: cfg.max_new_tokens == 0,
        }
    }

    /// Whether the search has ended (no more steps to run).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One step from `logits`, the next-token logits of each running beam (at the first step,
    /// the prompt's one row). Returns the beams to run next, as (parent row in `logits`,
    /// token) pairs, or `None` once the search has ended.
    pub fn advance(&mut self, logits: &[Vec<f32>]) -> Option<Vec<(usize, u32)>> {
        if self.done || logits.is_empty() {
            self.done = true;
            return None;
        }
        let b = self.num_beams;
        // The first step's rows are all the prompt's one row.
        let rows_in = logits.len();
        let row_logits = |row: usize| &logits[if rows_in == 1 { 0 } else { row }];
        let vocab = logits[0].len();
        let mut candidates: Vec<(f32, usize)> = Vec::with_capacity(b * vocab);
        for row in 0..b {
            for (t, lp) in log_softmax(row_logits(row)).into_iter().enumerate() {
                candidates.push((lp + self.scores[row], row * vocab + t));
            }
        }
        let keep = self.keep.min(candidates.len());
        let by_rank = |a: &(f32, usize), c: &(f32, usize)| c.0.total_cmp(&a.0).then(a.1.cmp(&c.1));
        candidates.select_nth_unstable_by(keep - 1, by_rank);
        candidates.truncate(keep);
        candidates.sort_by(by_rank);
        // A candidate "hits" when it ends in an end token or reaches `max_new_tokens`; hits
        // ranked among the first `b` are finished, the best `b` others run on.
        let step = self.step;
        self.step += 1;
        let last = step + 1 == self.max_new_tokens;
        let mut next: Vec<(usize, u32, f32)> = Vec::with_capacity(b);
        for (rank, &(score, flat)) in candidates.iter().enumerate() {
            let (row, token) = (flat / vocab, (flat % vocab) as u32);
            if last || self.eos.contains(&token) {
                if rank < b {
                    let mut tokens = self.beams[row].clone();
                    tokens.push(token);
                    self.finished.add(tokens, score as f64, step + 1);
                }
            } else if next.len() < b {
                next.push((row, token, score));
            }
        }
        // The best running beam, normalised, against the worst finished hypothesis.
        if last || next.is_empty() || self.finished.is_done(next[0].2 as f64, step + 1) {
            self.done = true;
            return None;
        }
        self.beams = next
            .iter()
            .map(|&(row, token, _)| {
                let mut t = self.beams[row].clone();
                t.push(token);
                t
            })
            .collect();
        self.scores = next.iter().map(|&(_, _, s)| s).collect();
        Some(
            next.iter()
                .map(|&(row, token, _)| (if rows_in == 1 { 0 } else { row }, token))
                .collect(),
        )
    }

    /// The finished hypotheses, best first (at most `num_beams`); of equal scores the one
    /// added last, as transformers' stable sort and pop.
    pub fn hypotheses(self) -> Vec<Hypothesis> {
        let mut hyps: Vec<(usize, Hypothesis)> =
            self.finished.hyps.into_iter().enumerate().collect();
        hyps.sort_by(|(i, a), (j, c)| c.score.total_cmp(&a.score).then(j.cmp(i)));
        hyps.into_iter().map(|(_, h)| h).collect()
    }
}

/// The hypotheses of a beam search from `prompt`, best first (at most `num_beams`).
pub fn beam_search<M: BeamLm>(
    lm: &mut M,
    prompt: &[u32],
    cfg: &BeamConfig,
    eos: &[u32],
) -> Result<Vec<Hypothesis>, M::Error> {
    let mut search = BeamSearch::new(cfg, eos);
    if search.is_done() {
        return Ok(vec![]);
    }
    let mut logits = vec![lm.start(prompt)?];
    while let Some(next) = search.advance(&logits) {
        let (parents, tokens): (Vec<usize>, Vec<u32>) = next.into_iter().unzip();
        logits = lm.step(&parents, &tokens)?;
    }
    Ok(search.hypotheses())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed next-token table: logits depend on the last token only.
    struct Table {
        table: Vec<Vec<f32>>,
        beams: Vec<u32>,
    }
    impl BeamLm for Table {
        type Error = ();
        fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, ()> {
            self.beams = vec![*prompt.last().unwrap()];
            Ok(self.table[self.beams[0] as usize].clone())
        }
        fn step(&mut self, parents: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>, ()> {
            assert!(parents.iter().all(|&p| p < self.beams.len()));
            self.beams = tokens.to_vec();
            Ok(tokens
                .iter()
                .map(|&t| self.table[t as usize].clone())
                .collect())
        }
    }

    fn probs(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn a_lower_first_step_can_win_overall() {
        // Greedy takes 1 (0.6) then 0.5; beam search finds 2 (0.4) then 3 (0.9): 0.36 > 0.30.
        let table = vec![
            probs(&[0.01, 0.6, 0.38, 0.01]),
            probs(&[0.5, 0.2, 0.2, 0.1]),
            probs(&[0.05, 0.025, 0.025, 0.9]),
            probs(&[0.25, 0.25, 0.25, 0.25]),
        ];
        let mut m = Table {
            table,
            beams: vec![],
        };
        let cfg = BeamConfig {
            num_beams: 2,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            max_new_tokens: 2,
        };
        let hyps = beam_search(&mut m, &[0], &cfg, &[]).unwrap();
        assert_eq!(hyps[0].tokens, vec![2, 3]);
        let want = ((0.38f32).ln() + (0.9f32).ln()) as f64 / 2.0;
        assert!((hyps[0].score - want).abs() < 1e-6, "{}", hyps[0].score);
        assert_eq!(hyps.len(), 2);
    }

    #[test]
    fn end_tokens_finish_hypotheses_with_their_length() {
        // Token 3 ends: from 0, "3" at once (0.5) beats any longer path under a strong
        // length penalty of 0 (sum of log-probabilities).
        let table = vec![
            probs(&[0.1, 0.2, 0.2, 0.5]),
            probs(&[0.1, 0.7, 0.1, 0.1]),
            probs(&[0.1, 0.1, 0.7, 0.1]),
            probs(&[0.25, 0.25, 0.25, 0.25]),
        ];
        let mut m = Table {
            table,
            beams: vec![],
        };
        let cfg = BeamConfig {
            num_beams: 2,
            length_penalty: 0.0,
            early_stopping: EarlyStopping::Heuristic,
            max_new_tokens: 5,
        };
        let hyps = beam_search(&mut m, &[0], &cfg, &[3]).unwrap();
        assert_eq!(hyps[0].tokens, vec![3]);
        assert!((hyps[0].score - (0.5f32).ln() as f64).abs() < 1e-6);
    }
}
