//! Greedy generation for a batch of prompts of different lengths: left-padded, one row per
//! prompt, each row stopping on its own.
use mimic_models::generate::argmax;

use crate::session::CompiledModel;
use crate::{Result, RuntimeError};

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

/// The indices of prompts of these lengths, shortest first (stable): batches cut from this
/// order pad least.
pub fn by_length(lengths: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let lengths: Vec<usize> = lengths.into_iter().collect();
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order
}

/// Greedy continuation of every prompt, at most `max_new` tokens each. `done(row, tokens)`
/// says when a row has finished (its end-of-sequence token, a newline, ...); finished rows
/// keep their place in the batch until every row is done. Returns each row's new tokens.
pub fn greedy_batch(
    model: &mut CompiledModel,
    prompts: &[Vec<u32>],
    max_new: usize,
    pad: u32,
    mut done: impl FnMut(usize, &[u32]) -> bool,
) -> Result<Vec<Vec<u32>>> {
    let batch = prompts.len();
    let mut out = vec![Vec::new(); batch];
    if batch == 0 || max_new == 0 {
        return Ok(out);
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(RuntimeError::Other(format!("prompt {i} is empty")));
    }
    if model.contract.logits != mimic_models::contract::Logits::Last {
        return Err(RuntimeError::Other(format!(
            "{}: batched generation needs a graph with last-position logits (compiled without --all-logits)",
            model.dir.display()
        )));
    }
    let (ids, mut mask, pos) = left_padded(prompts, pad);
    let mut next_pos: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
    let state = model.empty_state(batch)?;
    let mut r = model.run(batch, &ids, &mask, &pos, state)?;
    let mut finished = vec![false; batch];
    loop {
        let vocab = *r.logits_shape.last().unwrap_or(&0);
        let mut step_ids = Vec::with_capacity(batch);
        for (row, logits) in r.logits.chunks(vocab).enumerate() {
            let t = if finished[row] {
                *out[row].last().unwrap_or(&pad)
            } else {
                let t = argmax(logits);
                out[row].push(t);
                finished[row] = done(row, &out[row]) || out[row].len() >= max_new;
                t
            };
            step_ids.push(t as i64);
        }
        if finished.iter().all(|&f| f) {
            return Ok(out);
        }
        // One more column: every row's new token is real (finished rows' are ignored).
        let total = mask.len() / batch;
        let mut grown = Vec::with_capacity(batch * (total + 1));
        for row in mask.chunks(total) {
            grown.extend_from_slice(row);
            grown.push(1);
        }
        mask = grown;
        let step_pos = next_pos.clone();
        for p in &mut next_pos {
            *p += 1;
        }
        r = model.run(batch, &step_ids, &mask, &step_pos, r.state)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_left_padded_with_positions_from_their_first_token() {
        let (ids, mask, pos) = left_padded(&[vec![5, 6, 7], vec![9]], 0);
        assert_eq!(ids, [5, 6, 7, 0, 0, 9]);
        assert_eq!(mask, [1, 1, 1, 0, 0, 1]);
        assert_eq!(pos, [0, 1, 2, 0, 0, 0]);
    }

    #[test]
    fn length_order_is_stable() {
        assert_eq!(by_length([3, 1, 2, 1, 3]), [1, 3, 2, 0, 4]);
    }
}
