//! CIDEr-D exactly as pycocoevalcap 1.2 (`cider/cider_scorer.py`) computes it.
//!
//! Inputs are tokenized captions (see [`crate::ptb`]); they are split on whitespace as
//! Python's `str.split()` does. Document frequencies come from the evaluated set's references
//! only, so an image's score depends on the other images scored with it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{py_split, MetricsError};

/// n-gram orders 1..=N.
pub const N: usize = 4;
/// The Gaussian length-penalty width.
pub const SIGMA: f64 = 6.0;

/// Corpus CIDEr-D and the per-image scores, in input order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CiderScores {
    /// Mean of `per_image`.
    pub corpus: f64,
    /// One score per image.
    pub per_image: Vec<f64>,
}

type Gram<'a> = Vec<&'a str>;

/// n-gram counts of one caption in first-occurrence order (order 1 first, then 2, ...), as
/// pycocoevalcap's `precook` builds its dict; the order only changes float summation order.
fn precook(s: &str) -> Vec<(Gram<'_>, f64)> {
    let words: Vec<&str> = py_split(s).collect();
    let mut index: HashMap<Gram<'_>, usize> = HashMap::new();
    let mut out: Vec<(Gram<'_>, f64)> = Vec::new();
    for k in 1..=N {
        if words.len() < k {
            break;
        }
        for i in 0..=words.len() - k {
            let g = words[i..i + k].to_vec();
            match index.get(&g) {
                Some(&j) => out[j].1 += 1.0,
                None => {
                    index.insert(g.clone(), out.len());
                    out.push((g, 1.0));
                }
            }
        }
    }
    out
}

struct Vector<'a> {
    /// Per order: n-gram -> tf-idf weight, plus insertion order.
    vec: [Vec<(Gram<'a>, f64)>; N],
    map: [HashMap<Gram<'a>, f64>; N],
    norm: [f64; N],
    /// pycocoevalcap's "length": the number of bigrams (sum of order-2 term frequencies).
    length: f64,
}

fn counts2vec<'a>(
    counts: &[(Gram<'a>, f64)],
    df: &HashMap<Gram<'a>, f64>,
    ref_len: f64,
) -> Vector<'a> {
    let mut vec: [Vec<(Gram<'a>, f64)>; N] = Default::default();
    let mut map: [HashMap<Gram<'a>, f64>; N] = Default::default();
    let mut norm = [0.0f64; N];
    let mut length = 0.0;
    for (g, tf) in counts {
        let d = df.get(g).copied().unwrap_or(0.0).max(1.0).ln();
        let n = g.len() - 1;
        let v = tf * (ref_len - d);
        vec[n].push((g.clone(), v));
        map[n].insert(g.clone(), v);
        norm[n] += v.powi(2);
        if n == 1 {
            length += tf;
        }
    }
    for x in norm.iter_mut() {
        *x = x.sqrt();
    }
    Vector {
        vec,
        map,
        norm,
        length,
    }
}

fn sim(h: &Vector<'_>, r: &Vector<'_>) -> [f64; N] {
    let delta = h.length - r.length;
    let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    let mut val = [0.0f64; N];
    for (n, v) in val.iter_mut().enumerate() {
        for (g, vh) in &h.vec[n] {
            let vr = r.map[n].get(g).copied().unwrap_or(0.0);
            *v += vh.min(vr) * vr;
        }
        if h.norm[n] != 0.0 && r.norm[n] != 0.0 {
            *v /= h.norm[n] * r.norm[n];
        }
        *v *= penalty;
    }
    val
}

/// CIDEr-D of `hypotheses[i]` against `references[i]` for every image `i` (pycocoevalcap's
/// `Cider().compute_score(gts, res)` with one hypothesis per image).
pub fn cider_d<H, R>(hypotheses: &[H], references: &[Vec<R>]) -> Result<CiderScores, MetricsError>
where
    H: AsRef<str>,
    R: AsRef<str>,
{
    if hypotheses.is_empty() {
        return Err(MetricsError::Empty("CIDEr-D"));
    }
    if hypotheses.len() != references.len() {
        return Err(MetricsError::Invalid(format!(
            "CIDEr-D: {} hypotheses for {} reference sets",
            hypotheses.len(),
            references.len()
        )));
    }
    if let Some(i) = references.iter().position(|r| r.is_empty()) {
        return Err(MetricsError::Invalid(format!(
            "CIDEr-D: image {i} has no reference"
        )));
    }
    let ctest: Vec<_> = hypotheses.iter().map(|h| precook(h.as_ref())).collect();
    let crefs: Vec<Vec<_>> = references
        .iter()
        .map(|rs| rs.iter().map(|r| precook(r.as_ref())).collect())
        .collect();

    // Document frequency: images whose reference set contains the n-gram.
    let mut df: HashMap<Gram<'_>, f64> = HashMap::new();
    for refs in &crefs {
        let mut seen: std::collections::HashSet<&Gram<'_>> = std::collections::HashSet::new();
        for r in refs {
            for (g, _) in r {
                if seen.insert(g) {
                    *df.entry(g.clone()).or_insert(0.0) += 1.0;
                }
            }
        }
    }
    let ref_len = (crefs.len() as f64).ln();

    let per_image: Vec<f64> = ctest
        .iter()
        .zip(&crefs)
        .map(|(test, refs)| {
            let h = counts2vec(test, &df, ref_len);
            let mut score = [0.0f64; N];
            for r in refs {
                let rv = counts2vec(r, &df, ref_len);
                for (s, v) in score.iter_mut().zip(sim(&h, &rv)) {
                    *s += v;
                }
            }
            let mut avg = score.iter().sum::<f64>() / N as f64;
            avg /= refs.len() as f64;
            avg * 10.0
        })
        .collect();
    let corpus = per_image.iter().sum::<f64>() / per_image.len() as f64;
    Ok(CiderScores { corpus, per_image })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precook_counts_in_order() {
        let c = precook("a b a b");
        let grams: Vec<String> = c
            .iter()
            .map(|(g, n)| format!("{}:{n}", g.join(" ")))
            .collect();
        assert_eq!(
            grams,
            [
                "a:2",
                "b:2",
                "a b:2",
                "b a:1",
                "a b a:1",
                "b a b:1",
                "a b a b:1"
            ]
        );
    }

    #[test]
    fn one_image_scores_zero() {
        // ref_len = ln(1) = 0: every weight is 0.
        let s = cider_d(&["a cat"], &[vec!["a cat"]]).unwrap();
        assert_eq!(s.per_image, [0.0]);
    }

    #[test]
    fn hand_checked_two_images() {
        // Image 0: hyp "a b" == its only ref "a b"; image 1: hyp "c" vs ref "d".
        // ref_len = ln 2. Image 0's unigrams a, b and bigram "a b" have df 1: weight ln 2 each.
        // sim_1 = (ln2^2 + ln2^2) / (sqrt(2) ln2)^2 = 1, sim_2 = 1, sim_3 = sim_4 = 0
        // (empty vectors), same bigram length: score = 10 * (1 + 1) / 4 = 5.
        let s = cider_d(&["a b", "c"], &[vec!["a b"], vec!["d"]]).unwrap();
        assert!((s.per_image[0] - 5.0).abs() < 1e-12, "{:?}", s);
        assert_eq!(s.per_image[1], 0.0);
        assert!((s.corpus - 2.5).abs() < 1e-12);
    }

    #[test]
    fn bigram_length_penalty() {
        // Hyp "a b" vs ref "a b c d e f g h": length counts bigrams (1 vs 7): delta 6.
        let s = cider_d(
            &["a b c d e f g h", "z"],
            &[vec!["a b c d e f g h"], vec!["y"]],
        )
        .unwrap();
        assert!((s.per_image[0] - 10.0).abs() < 1e-12);
        let t = cider_d(&["a b", "z"], &[vec!["a b c d e f g h"], vec!["y"]]).unwrap();
        // Only the overlap on orders 1 and 2; the penalty uses delta = 1 - 7 = -6.
        let ln2 = 2f64.ln();
        let s1 = 2.0 * ln2 * ln2 / ((2f64).sqrt() * ln2 * (8f64).sqrt() * ln2);
        let s2 = ln2 * ln2 / (ln2 * (7f64).sqrt() * ln2);
        let pen = (-(36.0) / 72.0f64).exp();
        let want = 10.0 * (s1 + s2) * pen / 4.0;
        assert!(
            (t.per_image[0] - want).abs() < 1e-12,
            "{} vs {want}",
            t.per_image[0]
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(cider_d::<&str, &str>(&[], &[]).is_err());
        assert!(cider_d(&["a"], &[Vec::<&str>::new()]).is_err());
        assert!(cider_d(&["a", "b"], &[vec!["a"]]).is_err());
    }
}
