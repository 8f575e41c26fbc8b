//! Rescale and normalise 8-bit RGB into channels-first float32, as transformers' numpy
//! `rescale` (uint8 -> float64, times the factor, -> float32) and `normalize` (float32
//! `(x - mean) / std` with mean and std cast to float32) compute it.
use ::image::RgbImage;

/// What happens to each u8 value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// `rescale_factor` when `do_rescale`.
    pub rescale: Option<f64>,
    /// `(image_mean, image_std)` when `do_normalize`.
    pub mean_std: Option<([f32; 3], [f32; 3])>,
}

impl Normalization {
    /// The 256 possible outputs per channel: the pipeline is a function of the u8 value.
    pub fn table(&self) -> [[f32; 256]; 3] {
        let mut t = [[0f32; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                let mut x = match self.rescale {
                    Some(s) => (v as f64 * s) as f32,
                    None => v as f32,
                };
                if let Some((mean, std)) = self.mean_std {
                    x = (x - mean[c]) / std[c];
                }
                *out = x;
            }
        }
        t
    }
}

/// Writes `img` channels-first into `out`, a `[3, out_h, out_w]` plane set (row stride
/// `out_w`), at the top-left; the rest of `out` is left as it is (the processors' zero
/// padding).
pub fn write_chw(
    img: &RgbImage,
    norm: &Normalization,
    out: &mut [f32],
    out_h: usize,
    out_w: usize,
) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    assert!(w <= out_w && h <= out_h && out.len() == 3 * out_h * out_w);
    let table = norm.table();
    let raw = img.as_raw();
    for y in 0..h {
        for x in 0..w {
            let p = &raw[(y * w + x) * 3..(y * w + x) * 3 + 3];
            for c in 0..3 {
                out[c * out_h * out_w + y * out_w + x] = table[c][p[c] as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_mean_std_maps_to_minus_one_one() {
        let n = Normalization {
            rescale: Some(1.0 / 255.0),
            mean_std: Some(([0.5; 3], [0.5; 3])),
        };
        let t = n.table();
        assert_eq!(t[0][0], -1.0);
        assert_eq!(t[1][255], 1.0);
    }
}
