//! The uncertainty of accuracies measured on a finite set of queries: a confidence interval per
//! figure, and a paired test between two methods answering the same queries.
//!
//! With 100 queries one standard error of an accuracy near 0.5 is 5 points, so a table of
//! point estimates cannot tell a 5-point difference from noise; these say how sure a figure is.
use serde::{Deserialize, Serialize};

/// z of the two-sided 95% normal interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval of `successes` out of `n` at normal quantile `z`:
///
/// ```text
/// centre = (p + z^2 / 2n) / (1 + z^2 / n)
/// half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)
/// ```
///
/// Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at 0 or n
/// successes. `(0, 1)` for `n = 0`.
pub fn wilson(successes: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (successes as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The exact (binomial) McNemar test of two methods on the same queries: `only_a` queries
/// right by A alone, `only_b` by B alone. Under the hypothesis that both are equally accurate
/// each discordant query is a fair coin, so the two-sided p-value is
///
/// ```text
/// p = min(1, 2 * sum_{i <= min(b, c)} C(b + c, i) / 2^(b + c))
/// ```
///
/// 1 when no query is discordant.
pub fn mcnemar_exact(only_a: usize, only_b: usize) -> f64 {
    let n = only_a + only_b;
    if n == 0 {
        return 1.0;
    }
    let k = only_a.min(only_b);
    // Sum of binomial probabilities in log space: C(n, i) 2^-n for i = 0..=k.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_c = 0.0f64; // ln C(n, 0)
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// Two methods' answers to the same queries, compared query by query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    pub a: String,
    pub b: String,
    pub queries: usize,
    /// Queries A got right and B did not.
    pub only_a: usize,
    /// Queries B got right and A did not.
    pub only_b: usize,
    /// Accuracy of A minus accuracy of B.
    pub difference: f64,
    /// Two-sided exact McNemar p-value of "A and B are equally accurate".
    pub p_value: f64,
}

impl PairedComparison {
    /// Compares `a` and `b`, each a query's correctness in the same query order.
    pub fn new(a: (&str, &[bool]), b: (&str, &[bool])) -> Self {
        assert_eq!(a.1.len(), b.1.len(), "paired answers to the same queries");
        let only_a = a.1.iter().zip(b.1).filter(|(x, y)| **x && !**y).count();
        let only_b = a.1.iter().zip(b.1).filter(|(x, y)| !**x && **y).count();
        let n = a.1.len();
        PairedComparison {
            a: a.0.to_string(),
            b: b.0.to_string(),
            queries: n,
            only_a,
            only_b,
            difference: (only_a as f64 - only_b as f64) / n.max(1) as f64,
            p_value: mcnemar_exact(only_a, only_b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_hand_computed_intervals() {
        // 46 of 100: centre (0.46 + 1.9208/100) / 1.038415 = 0.46148, half 0.09587.
        let (lo, hi) = wilson(46, 100, Z95);
        assert!(
            (lo - 0.365_61).abs() < 1e-4 && (hi - 0.557_35).abs() < 1e-4,
            "{lo} {hi}"
        );
        // Bounds stay in [0, 1] and are not empty at the extremes.
        let (lo, hi) = wilson(0, 10, Z95);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.277_5).abs() < 1e-4, "{hi}");
        let (lo, hi) = wilson(10, 10, Z95);
        assert!(
            (lo - 0.722_5).abs() < 1e-4 && (hi - 1.0).abs() < 1e-12,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0, Z95), (0.0, 1.0));
    }

    #[test]
    fn mcnemar_matches_the_binomial_tail() {
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        // 0 vs 5: 2 * 2^-5.
        assert!((mcnemar_exact(0, 5) - 0.0625).abs() < 1e-12);
        // 2 vs 10: 2 * (1 + 12 + 66) / 4096.
        assert!((mcnemar_exact(2, 10) - 158.0 / 4096.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(10, 2), mcnemar_exact(2, 10));
        // Large counts stay finite: 400 vs 600 is far from equal.
        let p = mcnemar_exact(400, 600);
        assert!(p > 0.0 && p < 1e-9, "{p}");
    }

    #[test]
    fn paired_comparison_counts_discordant_queries() {
        let a = [true, true, false, false, true];
        let b = [true, false, true, false, false];
        let c = PairedComparison::new(("mimic", &a), ("icl-8", &b));
        assert_eq!((c.only_a, c.only_b, c.queries), (2, 1, 5));
        assert!((c.difference - 0.2).abs() < 1e-12);
        assert!((c.p_value - 1.0).abs() < 1e-12);
    }
}
