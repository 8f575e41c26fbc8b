//! Generation for a batch of prompts of different lengths through a compiled model: left-padded,
//! one row per prompt (or per beam), each row stopping on its own.
use mimic_models::batch::{keeps_every_row, left_padded, BatchLm};

use crate::session::{CompiledModel, KvState, RunOutput};
use crate::{Result, RuntimeError};

/// The indices of prompts of these lengths, shortest first (stable): batches cut from this
/// order pad least.
pub fn by_length(lengths: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let lengths: Vec<usize> = lengths.into_iter().collect();
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order
}

/// A compiled model running a batch of rows ([`BatchLm`]): the prompts left-padded with
/// `pad`, each row's attention mask and next position carried from step to step, rows
/// reordered (beam search) by gathering their caches.
pub struct OnnxBatch<'m> {
    pub model: &'m mut CompiledModel,
    pub pad: u32,
    state: Option<KvState>,
    /// `[rows, cached positions]`, 0 on padding.
    mask: Vec<i64>,
    next_pos: Vec<i64>,
}

impl<'m> OnnxBatch<'m> {
    pub fn new(model: &'m mut CompiledModel, pad: u32) -> Self {
        OnnxBatch {
            model,
            pad,
            state: None,
            mask: Vec::new(),
            next_pos: Vec::new(),
        }
    }

    /// Each row's last logits of a run over `rows` rows.
    fn last_logits(out: &RunOutput, rows: usize) -> Vec<Vec<f32>> {
        let vocab = *out.logits_shape.last().unwrap_or(&0);
        let per = out.logits.len() / vocab.max(1) / rows.max(1);
        (0..rows)
            .map(|i| out.logits[(i * per + per - 1) * vocab..(i * per + per) * vocab].to_vec())
            .collect()
    }
}

impl BatchLm for OnnxBatch<'_> {
    type Error = RuntimeError;

    fn start_batch(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(RuntimeError::Other(format!("prompt {i} is empty")));
        }
        if self.model.contract.logits != mimic_models::contract::Logits::Last {
            return Err(RuntimeError::Other(format!(
                "{}: batched generation needs a graph with last-position logits (compiled without --all-logits)",
                self.model.dir.display()
            )));
        }
        let batch = prompts.len();
        let (ids, mask, pos) = left_padded(prompts, self.pad);
        let state = self.model.empty_state(batch)?;
        let out = self.model.run(batch, &ids, &mask, &pos, state)?;
        self.mask = mask;
        self.next_pos = prompts.iter().map(|p| p.len() as i64).collect();
        let logits = Self::last_logits(&out, batch);
        self.state = Some(out.state);
        Ok(logits)
    }

    fn step_batch(&mut self, parents: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let Some(mut state) = self.state.take() else {
            return Err(RuntimeError::Other(
                "a batch step before its prompts".into(),
            ));
        };
        let rows = self.next_pos.len();
        let total = self.mask.len() / rows.max(1);
        if !keeps_every_row(parents, rows) {
            state = state.select_rows(parents)?;
            self.next_pos = parents.iter().map(|&p| self.next_pos[p]).collect();
        }
        // One more column: every row's new token is real.
        let mut mask = Vec::with_capacity(parents.len() * (total + 1));
        for &p in parents {
            mask.extend_from_slice(&self.mask[p * total..(p + 1) * total]);
            mask.push(1);
        }
        self.mask = mask;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let out = self
            .model
            .run(parents.len(), &ids, &self.mask, &self.next_pos, state)?;
        for p in &mut self.next_pos {
            *p += 1;
        }
        let logits = Self::last_logits(&out, parents.len());
        self.state = Some(out.state);
        Ok(logits)
    }
}

/// Greedy continuation of every prompt, at most `max_new` tokens each. `done(row, tokens)`
/// says when a row has finished (its end-of-sequence token, a newline, ...); finished rows
/// keep their place in the batch until every row is done. Returns each row's new tokens.
pub fn greedy_batch(
    model: &mut CompiledModel,
    prompts: &[Vec<u32>],
    max_new: usize,
    pad: u32,
    done: impl FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Vec<u32>>> {
    mimic_models::batch::greedy_batch(&mut OnnxBatch::new(model, pad), prompts, max_new, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_order_is_stable() {
        assert_eq!(by_length([3, 1, 2, 1, 3]), [1, 3, 2, 0, 4]);
    }
}
