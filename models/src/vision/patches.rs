//! Patch masks and position ids of padded image batches (Idefics2, Idefics3 / SmolVLM),
//! computed on the host so that every backend takes them as inputs.
//!
//! For an image with `nb_h x nb_w` real patches, patch `(i, j)` takes the row
//! `bucket(i / nb_h) * S + bucket(j / nb_w)` of the `S x S` position table
//! (`S = image_size / patch_size`), where `bucket` counts the boundaries
//! `arange(1/S, 1, 1/S)` at or below its argument (`bucketize(right=True)`). Padded patches
//! take row 0. The fractions are float32, and transformers computes them two ways
//! ([`Bucketing`]) that pick different buckets for a few sizes (3 of the 3,214 patch
//! coordinates of the 26, 27 and 70 grids), so both are ported to the bit.

/// How the fractions `i / nb` are computed: transformers changed it between 4.x and 5.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucketing {
    /// transformers 4.4x (what MimIC ran): `torch.arange(0, 1 - 1e-6, 1 / nb)` with the
    /// step a float32 tensor (`nb` is the mask's sum).
    Transformers4,
    /// transformers 5.x: `arange(rows, float32) * (1.0 / nb)` clamped to `1 - 1e-6`.
    Transformers5,
}

/// `torch.arange(start, .., step)` of `len` float32 values as libtorch fills them on the
/// CPU: in runs of two 8-wide vectors, each vector `f32(f32(start + step * base) + j * step)`
/// (`base` its first index), the remainder one by one as `f32(start + step * i)`, all in
/// float64. Checked bit for bit against torch 2.11 (tests/vision_positions.rs).
fn torch_arange_f32(start: f64, step: f64, len: usize) -> Vec<f32> {
    const VEC: usize = 8;
    let vectorized = len / (2 * VEC) * (2 * VEC);
    (0..len)
        .map(|i| {
            if i < vectorized {
                let base = i / VEC * VEC;
                let b = (start + step * base as f64) as f32;
                (b as f64 + (i - base) as f64 * step) as f32
            } else {
                (start + step * i as f64) as f32
            }
        })
        .collect()
}

/// `torch.arange(1/S, 1.0, 1/S)` in float32: `ceil((1 - 1/S) / (1/S))` values (in float64,
/// so 27 of them for S = 27).
pub fn boundaries(grid: usize) -> Vec<f32> {
    let step = 1.0 / grid as f64;
    let len = ((1.0 - step) / step).ceil().max(0.0) as usize;
    torch_arange_f32(step, step, len)
}

/// The buckets of the first `len` patches along a side of `real` real patches (indices at
/// or past `real` are padding; their buckets are not used).
fn side_buckets(real: usize, len: usize, bounds: &[f32], rule: Bucketing) -> Vec<i64> {
    let step = 1.0f32 / real as f32;
    let coords: Vec<f32> = match rule {
        Bucketing::Transformers4 => {
            let n = ((1.0 - 1e-6) / step as f64).ceil() as usize;
            let mut c = torch_arange_f32(0.0, step as f64, n);
            c.resize(len.max(n), 0.0);
            c
        }
        Bucketing::Transformers5 => {
            let max = (1.0f64 - 1e-6) as f32;
            (0..len).map(|i| (i as f32 * step).min(max)).collect()
        }
    };
    coords[..len]
        .iter()
        .map(|&x| bounds.partition_point(|&b| b <= x) as i64)
        .collect()
}
/// Position ids `[n_images, rows * cols]` of a batch of patch grids `[n_images, rows, cols]`
/// (`true` for a real patch), for a position table of `grid x grid`. Real patches count from
/// the top left, as the processors pad bottom and right: an image's real rows are those
/// real in its first column, its real columns those real in its first row.
pub fn bucketed_position_ids(
    patch_mask: &[bool],
    n_images: usize,
    rows: usize,
    cols: usize,
    grid: usize,
    rule: Bucketing,
) -> Vec<i64> {
    assert_eq!(patch_mask.len(), n_images * rows * cols, "patch mask shape");
    let bounds = boundaries(grid);
    let mut out = vec![0i64; patch_mask.len()];
    for (mask, ids) in patch_mask
        .chunks_exact(rows * cols)
        .zip(out.chunks_exact_mut(rows * cols))
    {
        let nb_h = (0..rows).filter(|&r| mask[r * cols]).count();
        let nb_w = (0..cols).filter(|&c| mask[c]).count();
        if nb_h == 0 || nb_w == 0 {
            continue; // no real patch: every id stays 0
        }
        let bh = side_buckets(nb_h, rows, &bounds, rule);
        let bw = side_buckets(nb_w, cols, &bounds, rule);
        for r in 0..rows {
            for c in 0..cols {
                if mask[r * cols + c] {
                    ids[r * cols + c] = bh[r] * grid as i64 + bw[c];
                }
            }
        }
    }
    out
}

/// When a patch counts as real, given its pixels' mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchRule {
    /// All its pixels are real (Idefics2: `unfold(..).sum() == patch^2`).
    AllPixels,
    /// Any of its pixels is (Idefics3 / SmolVLM: `unfold(..).sum() > 0`).
    AnyPixel,
}

/// The patch mask of a pixel mask `[n_images, height, width]` (nonzero = real pixel):
/// `[n_images, height / patch, width / patch]`, row-major.
pub fn patch_mask_from_pixels(
    pixel_mask: &[u8],
    n_images: usize,
    height: usize,
    width: usize,
    patch: usize,
    rule: PatchRule,
) -> Vec<bool> {
    assert_eq!(
        pixel_mask.len(),
        n_images * height * width,
        "pixel mask shape"
    );
    let (rows, cols) = (height / patch, width / patch);
    let mut out = Vec::with_capacity(n_images * rows * cols);
    for img in pixel_mask.chunks_exact(height * width) {
        for r in 0..rows {
            for c in 0..cols {
                let mut pixels = (0..patch)
                    .flat_map(|y| img[(r * patch + y) * width + c * patch..][..patch].iter());
                out.push(match rule {
                    PatchRule::AllPixels => pixels.all(|&p| p != 0),
                    PatchRule::AnyPixel => pixels.any(|&p| p != 0),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_counts_follow_float64_arange() {
        // (1 - 1/27) / (1/27) rounds above 26 in float64: torch.arange gives 27 boundaries.
        assert_eq!(boundaries(26).len(), 25);
        assert_eq!(boundaries(27).len(), 27);
        assert_eq!(boundaries(70).len(), 69);
        assert_eq!(boundaries(8), [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875]);
    }

    #[test]
    fn full_images_count_up() {
        for rule in [Bucketing::Transformers4, Bucketing::Transformers5] {
            let ids = bucketed_position_ids(&[true; 2 * 4 * 4], 2, 4, 4, 4, rule);
            let want: Vec<i64> = (0..16).chain(0..16).collect();
            assert_eq!(ids, want);
        }
    }

    #[test]
    fn padded_patches_take_row_zero() {
        // 2x3 real patches of a 4x4 grid over a 4x4 table: rows spread to 0, 2; columns
        // to 0, 1, 2 (bucket(j / 3) for j = 0, 1, 2: 0, 1.33 -> 1, 2.67 -> 2).
        let mut mask = [false; 16];
        for r in 0..2 {
            for c in 0..3 {
                mask[r * 4 + c] = true;
            }
        }
        for rule in [Bucketing::Transformers4, Bucketing::Transformers5] {
            let ids = bucketed_position_ids(&mask, 1, 4, 4, 4, rule);
            assert_eq!(&ids[..4], &[0, 1, 2, 0]);
            assert_eq!(&ids[4..8], &[8, 9, 10, 0]);
            assert!(ids[8..].iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn patches_from_pixels_idefics2_all_idefics3_any() {
        // One 4x6 image, patch 2: the last pixel column is padding, and one pixel of the
        // top-left patch.
        let mut px = vec![1u8; 4 * 6];
        for y in 0..4 {
            px[y * 6 + 5] = 0;
        }
        px[6] = 0; // (1, 0)
        let m = patch_mask_from_pixels(&px, 1, 4, 6, 2, PatchRule::AllPixels);
        assert_eq!(m, [false, true, false, true, true, false]);
        // Idefics3: one real pixel is enough.
        let m = patch_mask_from_pixels(&px, 1, 4, 6, 2, PatchRule::AnyPixel);
        assert_eq!(m, [true; 6]);
    }
}
