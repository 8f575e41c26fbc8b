//! mimic's own attention kernel, an ONNX Runtime custom operator (`ai.mimic:MimicAttention`)
//! for the CPU provider: grouped-query attention over a past key/value cache, with the MimIC
//! head computed inside it.
//!
//! Inputs, as the opset-23 `Attention` operator takes them in 3-D form: queries `[B, S, H D]`
//! and new keys and values `[B, S, KV D]` (after rotary embedding), an additive float mask
//! `[B | 1, 1, S, T]` (`T = P + S`), the past keys and values `[B, KV, P, D]`; then, for MimIC,
//! optional `w [1 | B, H, D]`, `b [1 | B, H]` and `u` shaped as `w` (one set for the batch or
//! one per row). Outputs: the heads `[B, S, H D]`, the present keys and values
//! `[B, KV, T, D]`. Attributes: `scale`,
//! `q_num_heads`, `kv_num_heads`, and `form` (0 additive, 1 convex; read only with heads).
//!
//! Per query head `h` and position `i`, with `s_ij = scale q_i . k_j + mask_ij` over the
//! present keys: `LSE_i = log sum_j e^(s_ij)`, `h_i = softmax(s_i) V`; with heads,
//! `mu_i = sigmoid(w . q_i + b - LSE_i)` and `o_i = h_i + mu_i u` (additive) or
//! `(1 - mu_i) h_i + mu_i u` (convex): DESIGN.md section 2, computed as the trainer does
//! instead of through extra key/value slots, value channels and an epilogue.
//!
//! Query head `h` reads KV head `h / (H / KV)`. The exponentials come from a polynomial that
//! the compiler vectorizes ([`exp_in_place`], relative error below 1e-7); the dot products
//! and weighted sums from 8-lane loops compiled for AVX2 and FMA where the CPU has them.
use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

/// The custom operator domain of mimic's kernels, and the attention operator's name in it
/// ([`mimic_models::kernel_op`], which the compiler emits too).
pub use mimic_models::kernel_op::{ATTENTION, DOMAIN};

/// Held while a session that registers [`DOMAIN`] is built (see `CompiledModel::load`).
pub static REGISTRATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The operator domain to register with the builder of a session whose graph uses it.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?.add(MimicAttention)
}

/// The operator's descriptor.
pub struct MimicAttention;

/// One node's attributes.
pub struct AttentionKernel {
    scale: f32,
    heads: usize,
    kv_heads: usize,
    convex: bool,
}

impl Operator for MimicAttention {
    type Kernel<'a> = AttentionKernel;

    fn name(&self) -> &str {
        ATTENTION
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        let f = TensorElementType::Float32;
        let required = (0..6).map(move |_| OperatorInput::required(f));
        required.chain((0..3).map(move |_| OperatorInput::optional(f)))
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        let f = TensorElementType::Float32;
        (0..3).map(move |_| OperatorOutput::required(f))
    }

    fn create_kernel<'a>(&self, info: &KernelContext<'a>) -> ort::Result<AttentionKernel> {
        let int = |name: &str| {
            info.get::<i64>(name)
                .filter(|&v| v > 0)
                .ok_or_else(|| ort::Error::new(format!("{ATTENTION}: attribute {name} missing")))
        };
        let (heads, kv_heads) = (int("q_num_heads")? as usize, int("kv_num_heads")? as usize);
        if heads % kv_heads != 0 {
            return Err(ort::Error::new(format!(
                "{ATTENTION}: {heads} query heads do not group over {kv_heads} KV heads"
            )));
        }
        Ok(AttentionKernel {
            scale: info
                .get::<f32>("scale")
                .ok_or_else(|| ort::Error::new(format!("{ATTENTION}: attribute scale missing")))?,
            heads,
            kv_heads,
            convex: info.get::<i64>("form").unwrap_or(0) == 1,
        })
    }
}

/// The sizes one call works on.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    seq: usize,
    past: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// The mask's batch (1: broadcast).
    mask_batch: usize,
    /// Rows of the heads' parameters: 1 (shared by the batch) or the batch.
    heads_rows: usize,
}

impl Dims {
    fn total(&self) -> usize {
        self.past + self.seq
    }
}

/// A MimIC head's parameters as the node received them.
struct Slot<'a> {
    w: &'a [f32],
    b: &'a [f32],
    u: &'a [f32],
    convex: bool,
}

fn fail(msg: String) -> ort::Error {
    ort::Error::new(format!("{ATTENTION}: {msg}"))
}

impl Kernel for AttentionKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| {
            ctx.input(i)?
                .ok_or_else(|| fail(format!("input {i} missing")))
        };
        let (q, k, v, mask, past_k, past_v) = (
            input(0)?,
            input(1)?,
            input(2)?,
            input(3)?,
            input(4)?,
            input(5)?,
        );
        let (q_shape, q) = q.try_extract_tensor::<f32>()?;
        let (k_shape, k) = k.try_extract_tensor::<f32>()?;
        let (_, v) = v.try_extract_tensor::<f32>()?;
        let (mask_shape, mask) = mask.try_extract_tensor::<f32>()?;
        let (past_shape, past_k) = past_k.try_extract_tensor::<f32>()?;
        let (_, past_v) = past_v.try_extract_tensor::<f32>()?;
        let (heads, kv_heads) = (self.heads, self.kv_heads);
        if q_shape.len() != 3 || past_shape.len() != 4 || mask_shape.len() != 4 {
            return Err(fail(format!(
                "expects 3-D queries, a 4-D mask and 4-D past keys, got {q_shape:?}, {mask_shape:?}, {past_shape:?}"
            )));
        }
        let head_dim = q_shape[2] as usize / heads;
        let mut dims = Dims {
            batch: q_shape[0] as usize,
            seq: q_shape[1] as usize,
            past: past_shape[2] as usize,
            heads,
            kv_heads,
            head_dim,
            mask_batch: mask_shape[0] as usize,
            heads_rows: 1,
        };
        let t = dims.total();
        let kv_width = kv_heads * head_dim;
        let expect_kv = [dims.batch as i64, dims.seq as i64, kv_width as i64];
        let expect_past = [
            dims.batch as i64,
            kv_heads as i64,
            dims.past as i64,
            head_dim as i64,
        ];
        if q_shape[2] as usize != heads * head_dim
            || k_shape[..] != expect_kv
            || v.len() != k.len()
            || past_shape[..] != expect_past
            || past_v.len() != past_k.len()
            || !(mask_shape[0] == 1 || mask_shape[0] == dims.batch as i64)
            || mask_shape[1] != 1
            || mask_shape[2] != dims.seq as i64
            || mask_shape[3] != t as i64
        {
            return Err(fail(format!(
                "shapes do not agree: queries {q_shape:?}, keys {k_shape:?}, mask {mask_shape:?}, past {past_shape:?}"
            )));
        }
        let (w, b, u) = (ctx.input(6)?, ctx.input(7)?, ctx.input(8)?);
        let slot = match (&w, &b, &u) {
            (Some(w), Some(b), Some(u)) => {
                let (w_shape, w) = w.try_extract_tensor::<f32>()?;
                let (_, b) = b.try_extract_tensor::<f32>()?;
                let (_, u) = u.try_extract_tensor::<f32>()?;
                let rows = if w_shape.len() == 3 {
                    w_shape[0] as usize
                } else {
                    1
                };
                dims.heads_rows = rows;
                if !(rows == 1 || rows == dims.batch)
                    || w.len() != rows * heads * head_dim
                    || u.len() != w.len()
                    || b.len() != rows * heads
                {
                    return Err(fail(format!(
                        "MimIC heads shaped {w_shape:?} do not fit {heads} heads of {head_dim} for batch {}",
                        dims.batch
                    )));
                }
                Some(Slot {
                    w,
                    b,
                    u,
                    convex: self.convex,
                })
            }
            (None, None, None) => None,
            _ => return Err(fail("MimIC heads need all of w, b and u".into())),
        };
        let present_shape = [dims.batch, kv_heads, t, head_dim].map(|x| x as i64);
        let mut present_k = ctx
            .output(1, present_shape.to_vec())?
            .ok_or_else(|| fail("present key output missing".into()))?;
        let mut present_v = ctx
            .output(2, present_shape.to_vec())?
            .ok_or_else(|| fail("present value output missing".into()))?;
        let (_, present_k) = present_k.try_extract_tensor_mut::<f32>()?;
        let (_, present_v) = present_v.try_extract_tensor_mut::<f32>()?;
        append_cache(&dims, past_k, k, present_k);
        append_cache(&dims, past_v, v, present_v);
        let mut y = ctx
            .output(0, q_shape.to_vec())?
            .ok_or_else(|| fail("output missing".into()))?;
        let (_, y) = y.try_extract_tensor_mut::<f32>()?;
        let call = Call {
            d: dims,
            scale: self.scale,
            q,
            keys: present_k,
            values: present_v,
            mask,
            slot,
            out: SharedOut(y.as_mut_ptr(), y.len()),
        };
        // Each task writes the rows of one (batch, head) pair only.
        let work = |task: usize| attend_head(&call, task);
        let tasks = dims.batch * heads;
        // Below a few thousand key rows a call is cheaper on one thread than handed out.
        if tasks * dims.seq * t < 4096 {
            (0..tasks).for_each(work);
        } else {
            ctx.par_for(tasks, tasks, work)?;
        }
        Ok(())
    }
}

/// Query rows a prefill takes at a time ([`attend_head_prefill`]).
const ROWS: usize = 32;

/// A mask value at or below which a key is hidden: its weight `e^(s - max)` is 0 in float32
/// for any score a model produces beside a visible key (the compiler's masks use -30000).
const HIDDEN: f32 = -1.0e4;

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
struct SharedOut(*mut f32, usize);
// SAFETY: every task writes only the rows of its own (batch, head) pair.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// `present[b, g] = past[b, g] ++ new[b, :, g]`.
fn append_cache(d: &Dims, past: &[f32], new: &[f32], present: &mut [f32]) {
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
struct Call<'a> {
    d: Dims,
    scale: f32,
    q: &'a [f32],
    /// The present keys and values, `[B, KV, T, D]`.
    keys: &'a [f32],
    values: &'a [f32],
    mask: &'a [f32],
    slot: Option<Slot<'a>>,
    out: SharedOut,
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
fn attend_head(c: &Call, task: usize) {
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

/// The inner loops, compiled twice: for AVX2 with FMA, chosen at run time where the CPU has
/// them, and for the baseline target.
mod simd {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    /// Below this `e^x` is 0: its float32 value would be subnormal.
    const EXP_MIN: f32 = -87.0;

    fn avx2() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `e^x` in place: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-7 Taylor polynomial
    /// in `r`, and `2^n` written into the exponent bits; 0 below [`EXP_MIN`].
    #[inline(always)]
    pub(super) fn exp_in_place(x: &mut [f32]) {
        for v in x.iter_mut() {
            let xc = v.max(EXP_MIN);
            let n = xc.mul_add(LOG2E, 0.5).floor();
            let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
            let mut p: f32 = 1.0 / 5040.0;
            for c in [
                1.0 / 720.0,
                1.0 / 120.0,
                1.0 / 24.0,
                1.0 / 6.0,
                0.5,
                1.0,
                1.0,
            ] {
                p = p.mul_add(r, c);
            }
            let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
            *v = if *v < EXP_MIN { 0.0 } else { p * two_n };
        }
    }

    #[inline(always)]
    fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for j in 0..8 {
                acc[j] = x[j].mul_add(y[j], acc[j]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    #[inline(always)]
    fn scores_softmax_body(
        q: &[f32],
        keys: &[f32],
        dim: usize,
        scale: f32,
        mask: &[f32],
        out: &mut [f32],
    ) -> (f32, f32) {
        for ((o, key), m) in out.iter_mut().zip(keys.chunks_exact(dim)).zip(mask) {
            *o = dot_lanes(q, key).mul_add(scale, *m);
        }
        softmax_body(out)
    }

    #[inline(always)]
    fn weighted_sum_body(p: &[f32], values: &[f32], dim: usize, acc: &mut [f32]) {
        for (&pt, v) in p.iter().zip(values.chunks_exact(dim)) {
            acc.iter_mut()
                .zip(v)
                .for_each(|(a, &x)| *a = pt.mul_add(x, *a));
        }
    }

    #[inline(always)]
    fn softmax_body(x: &mut [f32]) -> (f32, f32) {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sums = [0f32; 8];
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            c.iter_mut().for_each(|v| *v -= max);
            exp_in_place(c);
            sums.iter_mut().zip(c.iter()).for_each(|(s, v)| *s += v);
        }
        let rest = chunks.into_remainder();
        rest.iter_mut().for_each(|v| *v -= max);
        exp_in_place(rest);
        (max, sums.iter().sum::<f32>() + rest.iter().sum::<f32>())
    }

    /// Defines `pub(super) fn $name`, which runs `$body` compiled for AVX2 with FMA where the
    /// CPU has them, and compiled for the baseline target elsewhere.
    macro_rules! dispatched {
        ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident) => {
            $(#[$doc])*
            pub(super) fn $name($($arg: $ty),*) -> $ret {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn fast($($arg: $ty),*) -> $ret {
                        $body($($arg),*)
                    }
                    if avx2() {
                        // SAFETY: the CPU has AVX2 and FMA.
                        return unsafe { fast($($arg),*) };
                    }
                }
                $body($($arg),*)
            }
        };
    }

    dispatched! {
        /// The scores `scale q . k_j + mask_j` of every key, turned into `e^(s_j - max)`;
        /// returns the max and the sum.
        fn scores_softmax(q: &[f32], keys: &[f32], dim: usize, scale: f32, mask: &[f32], out: &mut [f32]) -> (f32, f32) = scores_softmax_body
    }
    dispatched! {
        /// `e^(x_j - max)` in place; returns the max and the sum.
        fn softmax(x: &mut [f32]) -> (f32, f32) = softmax_body
    }
    dispatched! {
        /// `acc += sum_j p_j v_j`.
        fn weighted_sum(p: &[f32], values: &[f32], dim: usize, acc: &mut [f32]) -> () = weighted_sum_body
    }
    dispatched! {
        /// `a . b`.
        fn dot(a: &[f32], b: &[f32]) -> f32 = dot_lanes
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn exp_is_within_two_ulps() {
            let mut worst = 0f64;
            let mut x = -87.0f32;
            while x < 1.0 {
                let mut v = [x; 8];
                super::exp_in_place(&mut v);
                let want = (x as f64).exp();
                worst = worst.max(((v[0] as f64) - want).abs() / want);
                x += 0.00731;
            }
            assert!(worst < 2.4e-7, "worst relative error {worst:e}");
            let mut v = [-88.0f32, -1e30, f32::MIN, -87.5];
            super::exp_in_place(&mut v);
            assert_eq!(v, [0.0; 4]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A float64 reference of one call: scores over the keys a mask leaves visible (as a
    /// -30000 mask hides them), softmax, and the MimIC head of DESIGN.md section 2.
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
                        mask[(bi * d.seq + s) * t + j] = -30000.0;
                    }
                }
            }
            mask[(d.seq) * t] = -30000.0; // row 1's first key is padding
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
