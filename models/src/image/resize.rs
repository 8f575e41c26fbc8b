//! PIL's `Image.resize` for 8-bit RGB (libImaging/Resample.c): a separable convolution,
//! horizontal pass first, each pass rounded and clamped to u8. When downscaling the filter's
//! support is widened by the scale factor; weights are normalised to sum 1 in f64, then turned
//! into 22-bit fixed point (`PRECISION_BITS = 32 - 8 - 2`).
use ::image::RgbImage;

/// The resampling filters of the processors here, with PIL's numbering
/// (`PIL.Image.Resampling`: LANCZOS 1, BILINEAR 2, BICUBIC 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
    Lanczos,
}

impl Filter {
    /// The filter for a PIL resampling code; None for NEAREST (0), BOX (4), HAMMING (5) and
    /// anything else, which are not implemented.
    pub fn from_pil(code: i64) -> Option<Filter> {
        match code {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output position: the first input index and the fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    weights: Vec<Vec<i32>>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box [0, in_size).
fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) truncates toward zero; a negative start clamps to 0 either way.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..n)
            .map(|x| filter.eval(((x + xmin) as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            for v in &mut k {
                *v /= ww;
            }
        }
        let fixed = k
            .iter()
            .map(|&v| {
                let s = v * (1u32 << PRECISION_BITS) as f64;
                if v < 0.0 {
                    (s - 0.5) as i32
                } else {
                    (s + 0.5) as i32
                }
            })
            .collect();
        bounds.push((xmin, n));
        weights.push(fixed);
    }
    Coeffs { bounds, weights }
}

#[inline]
fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes 8-bit RGB to `width` x `height` exactly as PIL's `Image.resize((width, height),
/// filter)` does (no `reducing_gap`, whole-image box). Same size returns a copy, as PIL does.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) || out_w == 0 || out_h == 0 || in_w == 0 || in_h == 0 {
        return if (in_w, in_h) == (out_w, out_h) {
            img.clone()
        } else {
            RgbImage::new(width, height)
        };
    }
    let horiz = coeffs(in_w, out_w, filter);
    let vert = coeffs(in_h, out_h, filter);
    let src = img.as_raw();

    // Horizontal pass over the rows the vertical pass reads.
    let (rows_from, tmp, tmp_w) = if in_w != out_w {
        let first = vert.bounds[0].0;
        let last = vert.bounds[out_h - 1].0 + vert.bounds[out_h - 1].1;
        let mut tmp = vec![0u8; (last - first) * out_w * 3];
        for (ty, y) in (first..last).enumerate() {
            let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
            let out = &mut tmp[ty * out_w * 3..(ty + 1) * out_w * 3];
            for xx in 0..out_w {
                let (xmin, n) = horiz.bounds[xx];
                let k = &horiz.weights[xx];
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (x, &w) in k.iter().enumerate().take(n) {
                    let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    acc[0] += p[0] as i64 * w as i64;
                    acc[1] += p[1] as i64 * w as i64;
                    acc[2] += p[2] as i64 * w as i64;
                }
                out[xx * 3] = clip8(acc[0]);
                out[xx * 3 + 1] = clip8(acc[1]);
                out[xx * 3 + 2] = clip8(acc[2]);
            }
        }
        (first, tmp, out_w)
    } else {
        (0, src.to_vec(), in_w)
    };
    if in_h == out_h {
        return RgbImage::from_raw(width, height, tmp).expect("buffer size");
    }
    // Vertical pass.
    let mut out = vec![0u8; out_w * out_h * 3];
    let stride = tmp_w * 3;
    for yy in 0..out_h {
        let (ymin, n) = vert.bounds[yy];
        let ymin = ymin - rows_from;
        let k = &vert.weights[yy];
        let orow = &mut out[yy * stride..(yy + 1) * stride];
        for (i, o) in orow.iter_mut().enumerate() {
            let mut acc = 1i64 << (PRECISION_BITS - 1);
            for (y, &w) in k.iter().enumerate().take(n) {
                acc += tmp[(ymin + y) * stride + i] as i64 * w as i64;
            }
            *o = clip8(acc);
        }
    }
    RgbImage::from_raw(width, height, out).expect("buffer size")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for f in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            for (i, o) in [(100, 37), (37, 100), (5, 5), (1, 9)] {
                let c = coeffs(i, o, f);
                for k in &c.weights {
                    let s: i64 = k.iter().map(|&v| v as i64).sum();
                    assert!(
                        (s - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                        "{f:?} {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(13, 7, ::image::Rgb([200, 3, 255]));
        for f in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            let out = resize(&img, 29, 4, f);
            assert!(out.pixels().all(|p| p.0 == [200, 3, 255]), "{f:?}");
        }
    }
}
