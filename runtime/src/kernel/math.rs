//! The attention of one (batch, query head) pair, as [`super::op`] hands the pairs out: the
//! scores over the present keys, their softmax and log-sum-exp, the weighted values and the
//! MimIC head (docs/design.md section 2, "The MimIC math"); one query position at a time
//! (decode) or blocks of them through matrix products (prefill). The inner loops are
//! [`super::simd`]'s.
use super::simd;

/// The sizes one call works on.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub(super) batch: usize,
    pub(super) seq: usize,
    pub(super) past: usize,
    pub(super) heads: usize,
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
    /// The mask's batch (1: broadcast).
    pub(super) mask_batch: usize,
    /// Rows of the heads' parameters: 1 (shared by the batch) or the batch.
    pub(super) heads_rows: usize,
}

impl Dims {
    pub(super) fn total(&self) -> usize {
        self.past + self.seq
    }
}

/// A MimIC head's parameters as the node received them.
pub(super) struct Slot<'a> {
    pub(super) w: &'a [f32],
    pub(super) b: &'a [f32],
    pub(super) u: &'a [f32],
    pub(super) convex: bool,
}

/// Query rows a prefill takes at a time ([`attend_head_prefill`]).
const ROWS: usize = 32;

/// A mask value at or below which a key is hidden: its weight `e^(s - max)` is 0 in float32
/// for any score a model produces beside a visible key (the compiler's masks use
/// [`mimic_models::contract::MASK_MIN`], well below it).
const HIDDEN: f32 = -1.0e4;
// The compiler's masked keys are hidden here too.
const _: () = assert!(mimic_models::contract::MASK_MIN <= HIDDEN && HIDDEN < 0.0);

/// How many keys a query row must score: up to its last visible one, since the keys after it
/// (the future, in a causal prefill) weigh nothing. A row with no visible key keeps all of
/// them, as ONNX Runtime's `Attention` does.
fn visible_keys(mask_row: &[f32]) -> usize {
    mask_row
        .iter()
        .rposition(|&m| m > HIDDEN)
        .map_or(mask_row.len(), |last| last + 1)
}

/// The output buffer, shared by tasks that write disjoint rows of it.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32, pub(super) usize);
// SAFETY: every task writes only the rows of its own (batch, head) pair.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// `present[b, g] = past[b, g] ++ new[b, :, g]`.
pub(super) fn append_cache(d: &Dims, past: &[f32], new: &[f32], present: &mut [f32]) {
    let (dim, t) = (d.head_dim, d.total());
    for bi in 0..d.batch {
        for g in 0..d.kv_heads {
            let from = (bi * d.kv_heads + g) * d.past * dim;
            let to = (bi * d.kv_heads + g) * t * dim;
            present[to..to + d.past * dim].copy_from_slice(&past[from..from + d.past * dim]);
            for s in 0..d.seq {
                let src = (bi * d.seq + s) * d.kv_heads * dim + g * dim;
                let dst = to + (d.past + s) * dim;
                present[dst..dst + dim].copy_from_slice(&new[src..src + dim]);
            }
        }
    }
}

/// One call's inputs, shared by its tasks.
pub(super) struct Call<'a> {
    pub(super) d: Dims,
    pub(super) scale: f32,
    pub(super) q: &'a [f32],
    /// The present keys and values, `[B, KV, T, D]`.
    pub(super) keys: &'a [f32],
    pub(super) values: &'a [f32],
    pub(super) mask: &'a [f32],
    pub(super) slot: Option<Slot<'a>>,
    pub(super) out: SharedOut,
}

impl Slot<'_> {
    /// Turns a head's output `h` (in `o`) into MimIC's, for the query `query` whose scores'
    /// log-sum-exp is `lse`: `h + mu u`, or `(1 - mu) h + mu u` (convex), with
    /// `mu = sigmoid(w . q + b - LSE)` of the head's parameters at `param`.
    fn apply(&self, param: usize, query: &[f32], lse: f32, o: &mut [f32]) {
        let dim = o.len();
        let (w, u) = (&self.w[param * dim..][..dim], &self.u[param * dim..][..dim]);
        let f = simd::dot(w, query) + self.b[param];
        let mu = 1.0 / (1.0 + (lse - f).exp());
        // `1 - mu` as its own sigmoid: exact where `mu` nears 1.
        let keep = if self.convex {
            1.0 / (1.0 + (f - lse).exp())
        } else {
            1.0
        };
        for (o, uc) in o.iter_mut().zip(u) {
            *o = *o * keep + mu * uc;
        }
    }
}

/// One (batch, query head) pair: every query position's head output.
pub(super) fn attend_head(c: &Call, task: usize) {
    let d = &c.d;
    let (bi, hi) = (task / d.heads, task % d.heads);
    let (dim, t) = (d.head_dim, d.total());
    let g = hi / (d.heads / d.kv_heads);
    let base = (bi * d.kv_heads + g) * t * dim;
    let (keys, values) = (&c.keys[base..][..t * dim], &c.values[base..][..t * dim]);
    let param = (bi % d.heads_rows) * d.heads + hi;
    if d.seq > 1 {
        return attend_head_prefill(c, bi, hi, param, keys, values);
    }
    let row = bi * d.heads * dim + hi * dim;
    let query = &c.q[row..row + dim];
    let mask_row = &c.mask[(bi % d.mask_batch) * t..][..t];
    let visible = visible_keys(mask_row);
    let mut scores = vec![0f32; visible];
    let (max, sum) =
        simd::scores_softmax(query, keys, dim, c.scale, &mask_row[..visible], &mut scores);
    debug_assert!(row + dim <= c.out.1);
    // SAFETY: `row` is this task's own row of the output (see `SharedOut`).
    let o = unsafe { std::slice::from_raw_parts_mut(c.out.0.add(row), dim) };
    o.fill(0.0);
    simd::weighted_sum(&scores, values, dim, o);
    let inv = 1.0 / sum;
    o.iter_mut().for_each(|x| *x *= inv);
    if let Some(sl) = &c.slot {
        sl.apply(param, query, max + sum.ln(), o);
    }
}

/// [`attend_head`] for several query positions (a prefill): per block of [`ROWS`] positions
/// the scores and the weighted values as two matrix products (`matrixmultiply`'s SGEMM) over
/// the keys the block can see, the softmax between them and the MimIC head after them row
/// by row. `keys` and `values` are the pair's KV head, `[T, D]`.
fn attend_head_prefill(c: &Call, bi: usize, hi: usize, param: usize, keys: &[f32], values: &[f32]) {
    let d = &c.d;
    let (dim, t, s) = (d.head_dim, d.total(), d.seq);
    let row_stride = d.heads * dim;
    let first = bi * s * row_stride + hi * dim;
    let masks = &c.mask[(bi % d.mask_batch) * s * t..][..s * t];
    let mut scores = vec![0f32; ROWS * t];
    // Blocks of query rows, each against the keys up to its last visible one: a causal
    // prefill leaves out most of the future it would otherwise multiply by zero weights.
    for r0 in (0..s).step_by(ROWS) {
        let rows = ROWS.min(s - r0);
        let block = &masks[r0 * t..(r0 + rows) * t];
        let visible = block.chunks_exact(t).map(visible_keys).max().unwrap_or(t);
        let scores = &mut scores[..rows * t];
        scores.copy_from_slice(block);
        let q0 = first + r0 * row_stride;
        // SAFETY: the strides describe this head's query rows ([rows, dim], row stride H D),
        // the visible keys transposed ([dim, visible]) and `scores` ([rows, visible], row
        // stride t), all within their slices.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                dim,
                visible,
                c.scale,
                c.q[q0..].as_ptr(),
                row_stride as isize,
                1,
                keys.as_ptr(),
                1,
                dim as isize,
                1.0,
                scores.as_mut_ptr(),
                t as isize,
                1,
            );
        }
        let mut lse = [0f32; ROWS];
        for (row, l) in scores.chunks_exact_mut(t).zip(&mut lse) {
            let row = &mut row[..visible];
            let (max, sum) = simd::softmax(row);
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|p| *p *= inv);
            *l = max + sum.ln();
        }
        debug_assert!(q0 + (rows - 1) * row_stride + dim <= c.out.1);
        // SAFETY: the output rows of this (batch, head) pair ([rows, dim], row stride H D)
        // are this task's own (see `SharedOut`); the weights are [rows, visible].
        unsafe {
            matrixmultiply::sgemm(
                rows,
                visible,
                dim,
                1.0,
                scores.as_ptr(),
                t as isize,
                1,
                values.as_ptr(),
                dim as isize,
                1,
                0.0,
                c.out.0.add(q0),
                row_stride as isize,
                1,
            );
        }
        if let Some(sl) = &c.slot {
            for (i, &l) in lse[..rows].iter().enumerate() {
                let row = q0 + i * row_stride;
                // SAFETY: as above.
                let o = unsafe { std::slice::from_raw_parts_mut(c.out.0.add(row), dim) };
                sl.apply(param, &c.q[row..row + dim], l, o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimic_models::contract::MASK_MIN;

    /// A float64 reference of one call: scores over the keys a mask leaves visible (as a
    /// [`MASK_MIN`] mask hides them), softmax, and the MimIC head of docs/design.md section 2.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        d: &Dims,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        mask: &[f32],
        scale: f32,
        slot: Option<&Slot>,
    ) -> Vec<f64> {
        let (dim, t) = (d.head_dim, d.total());
        let mut out = vec![0f64; d.batch * d.seq * d.heads * dim];
        for bi in 0..d.batch {
            for hi in 0..d.heads {
                let g = hi / (d.heads / d.kv_heads);
                let base = (bi * d.kv_heads + g) * t * dim;
                for s in 0..d.seq {
                    let row = (bi * d.seq + s) * d.heads * dim + hi * dim;
                    let qr = &q[row..row + dim];
                    let sc: Vec<f64> = (0..t)
                        .map(|j| {
                            let k = &keys[base + j * dim..base + (j + 1) * dim];
                            let dot: f64 =
                                qr.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum();
                            dot * scale as f64
                                + mask[((bi % d.mask_batch) * d.seq + s) * t + j] as f64
                        })
                        .collect();
                    let max = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - max).exp()).sum();
                    let lse = max + z.ln();
                    for c in 0..dim {
                        let h: f64 = (0..t)
                            .map(|j| (sc[j] - max).exp() / z * values[base + j * dim + c] as f64)
                            .sum();
                        out[row + c] = match slot {
                            None => h,
                            Some(sl) => {
                                let p = (bi % d.heads_rows) * d.heads + hi;
                                let w = &sl.w[p * dim..(p + 1) * dim];
                                let f: f64 = w
                                    .iter()
                                    .zip(qr)
                                    .map(|(a, b)| *a as f64 * *b as f64)
                                    .sum::<f64>()
                                    + sl.b[p] as f64;
                                let mu = 1.0 / (1.0 + (lse - f).exp());
                                let u = sl.u[p * dim + c] as f64;
                                if sl.convex {
                                    (1.0 - mu) * h + mu * u
                                } else {
                                    h + mu * u
                                }
                            }
                        };
                    }
                }
            }
        }
        out
    }

    fn numbers(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every (batch, head) task against the float64 reference, one position (decode) and
    /// several (prefill, the matrix products, in one block of rows and in two): grouped heads, a head size that is not a
    /// multiple of 8 (the loops' remainders), a causal mask over a past with a padded first
    /// key in one row, heads shared by the batch and per row, both forms.
    #[test]
    fn heads_match_a_float64_reference() {
        let cases = [
            (1, false, false),
            (1, false, true),
            (2, false, true),
            (2, true, true),
        ];
        for (seq, (heads_rows, convex, with_slot)) in
            [1, 3].into_iter().flat_map(|s| cases.map(|c| (s, c)))
        {
            let d = Dims {
                batch: 2,
                seq,
                past: 5,
                heads: 4,
                kv_heads: 2,
                head_dim: 12,
                mask_batch: 2,
                heads_rows,
            };
            let (dim, t) = (d.head_dim, d.total());
            let q = numbers(d.batch * d.seq * d.heads * dim, 1);
            let keys = numbers(d.batch * d.kv_heads * t * dim, 2);
            let values = numbers(keys.len(), 3);
            let mut mask = vec![0f32; d.mask_batch * d.seq * t];
            for bi in 0..d.batch {
                for s in 0..d.seq {
                    for j in d.past + s + 1..t {
                        mask[(bi * d.seq + s) * t + j] = MASK_MIN;
                    }
                }
            }
            mask[(d.seq) * t] = MASK_MIN; // row 1's first key is padding
            let w: Vec<f32> = numbers(heads_rows * d.heads * dim, 4)
                .iter()
                .map(|x| 3.0 * x)
                .collect();
            let b = numbers(heads_rows * d.heads, 5);
            let u = numbers(w.len(), 6);
            let slot = Slot {
                w: &w,
                b: &b,
                u: &u,
                convex,
            };
            let slot = with_slot.then_some(slot);
            let want = reference(&d, &q, &keys, &values, &mask, 0.3, slot.as_ref());
            let mut got = vec![0f32; want.len()];
            let call = Call {
                d,
                scale: 0.3,
                q: &q,
                keys: &keys,
                values: &values,
                mask: &mask,
                slot,
                out: SharedOut(got.as_mut_ptr(), got.len()),
            };
            for task in 0..d.batch * d.heads {
                attend_head(&call, task);
            }
            let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()))
                / scale;
            assert!(
                err < 1e-6,
                "seq {seq} rows {heads_rows} convex {convex} slot {with_slot}: {err:e}"
            );
        }
    }

    #[test]
    fn a_masked_key_is_hidden() {
        assert_eq!(visible_keys(&[0.0, MASK_MIN, 0.0, MASK_MIN]), 3);
        assert_eq!(
            visible_keys(&[MASK_MIN; 3]),
            3,
            "no visible key: all of them"
        );
    }

    #[test]
    fn the_cache_appends_new_keys_after_the_past() {
        let d = Dims {
            batch: 1,
            seq: 2,
            past: 1,
            heads: 2,
            kv_heads: 2,
            head_dim: 2,
            mask_batch: 1,
            heads_rows: 1,
        };
        // past [b, g, p, d]; new [b, s, g d]
        let past = [1.0, 2.0, 3.0, 4.0];
        let new = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut present = [0f32; 12];
        append_cache(&d, &past, &new, &mut present);
        assert_eq!(
            present,
            [1.0, 2.0, 5.0, 6.0, 9.0, 10.0, 3.0, 4.0, 7.0, 8.0, 11.0, 12.0]
        );
    }
}
