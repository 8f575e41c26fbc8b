//! The inner loops, compiled twice: for AVX2 with FMA, chosen at run time where the CPU has
//! them, and for the baseline target: dot products, weighted sums and softmax over 8 lanes,
//! and the polynomial `exp` they vectorize.
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Below this `e^x` is 0: its float32 value would be subnormal.
const EXP_MIN: f32 = -87.0;

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
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
