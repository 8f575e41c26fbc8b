//! Greedy decoding over any backend that can extend a sequence by some tokens and return the
//! logits of its last position, keeping its own key/value cache.

/// A causal language model with a key/value cache of the sequence fed so far.
pub trait CausalLm {
    type Error;
    /// Forgets the cached sequence.
    fn reset(&mut self);
    /// Appends `ids` to the cached sequence and returns the logits after its last token.
    fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>, Self::Error>;
    /// The longest sequence (prompt plus generated tokens) the model accepts.
    fn max_positions(&self) -> usize;
}

/// Index of the largest logit (the first one on ties, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// What a generation produced.
#[derive(Debug, Clone, Default)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// Seconds spent on the prompt (prefill) and on the later tokens (decode).
    pub prefill_s: f64,
    pub decode_s: f64,
}

/// Greedy decoding: feed the prompt, then the argmax token, until `max_new_tokens` or one of
/// `eos`. `on_token` sees each new token as it comes.
pub fn greedy<M: CausalLm>(
    model: &mut M,
    prompt: &[u32],
    max_new_tokens: usize,
    eos: &[u32],
    mut on_token: impl FnMut(u32),
) -> Result<Generation, M::Error> {
    model.reset();
    let mut out = Generation::default();
    if max_new_tokens == 0 {
        return Ok(out);
    }
    let t0 = std::time::Instant::now();
    let mut logits = model.extend(prompt)?;
    out.prefill_s = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    loop {
        let next = argmax(&logits);
        out.tokens.push(next);
        on_token(next);
        if eos.contains(&next) || out.tokens.len() >= max_new_tokens {
            break;
        }
        logits = model.extend(&[next])?;
    }
    out.decode_s = t1.elapsed().as_secs_f64();
    Ok(out)
}

/// Greedy tokens and, for each, the logits it was chosen from.
pub type StepLogits = (Vec<u32>, Vec<Vec<f32>>);

/// Greedy decoding of exactly `steps` tokens (no end-of-sequence stop), with the logits each
/// token was chosen from: for comparing two runs of a model step by step.
pub fn greedy_with_logits<M: CausalLm>(
    lm: &mut M,
    prompt: &[u32],
    steps: usize,
) -> Result<StepLogits, M::Error> {
    lm.reset();
    let mut logits = lm.extend(prompt)?;
    let (mut tokens, mut all) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for _ in 0..steps {
        let next = argmax(&logits);
        tokens.push(next);
        all.push(logits);
        logits = lm.extend(&[next])?;
    }
    Ok((tokens, all))
}

/// `max |a - b| / max |b|`: the relative error this project quotes, over a whole tensor.
pub fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    diff / scale.max(1e-30)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Predicts `last + 1`, so greedy output is predictable.
    struct Counter {
        seen: Vec<u32>,
    }
    impl CausalLm for Counter {
        type Error = ();
        fn reset(&mut self) {
            self.seen.clear();
        }
        fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>, ()> {
            self.seen.extend_from_slice(ids);
            let mut l = vec![0.0; 10];
            l[(*self.seen.last().unwrap() as usize + 1) % 10] = 1.0;
            Ok(l)
        }
        fn max_positions(&self) -> usize {
            100
        }
    }

    #[test]
    fn greedy_follows_argmax_and_stops_at_eos() {
        let mut m = Counter { seen: vec![] };
        let g = greedy(&mut m, &[3], 10, &[7], |_| {}).unwrap();
        assert_eq!(g.tokens, vec![4, 5, 6, 7]);
        assert_eq!(m.seen, vec![3, 4, 5, 6]);
        let g = greedy(&mut m, &[3], 2, &[], |_| {}).unwrap();
        assert_eq!(g.tokens, vec![4, 5]);
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }
}
