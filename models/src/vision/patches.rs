//! Patch masks and position ids of padded image batches (Idefics2, Idefics3 / SmolVLM),
//! computed on the host so that every backend takes them as inputs.
//!
//! transformers (`Idefics2VisionEmbeddings.forward`, 5.24): for an image with `nb_h x nb_w`
//! real patches, patch `(i, j)` takes the row `bucket(i / nb_h) * S + bucket(j / nb_w)` of
//! the `S x S` position table (`S = image_size / patch_size`), where `bucket` counts the
//! boundaries `arange(1/S, 1, 1/S)` at or below its argument (`bucketize(right=True)`) after a
//! clamp to `1 - 1e-6`. All of it in float32, as transformers computes it (the boundaries in
//! float64 then rounded, as `torch.arange` fills float32 tensors), so that float rounding
//! picks the same buckets. Padded patches take row 0.

/// `torch.arange(1/S, 1.0, 1/S)` in float32: length `ceil((1 - 1/S) / (1/S))` and values
/// `1/S + i/S` computed in float64 (libtorch's accumulation type for float32 on the CPU).
fn boundaries(grid: usize) -> Vec<f32> {
    let step = 1.0 / grid as f64;
    let len = ((1.0 - step) / step).ceil().max(0.0) as usize;
    (0..len).map(|i| (step + step * i as f64) as f32).collect()
}

/// The buckets of the first `len` patches along a side of `real` real patches.
fn side_buckets(real: usize, len: usize, bounds: &[f32]) -> Vec<i64> {
    let step = 1.0f32 / real as f32;
    let max = (1.0f64 - 1e-6) as f32;
    (0..len)
        .map(|i| {
            let x = (i as f32 * step).min(max);
            bounds.partition_point(|&b| b <= x) as i64
        })
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
        let bh = side_buckets(nb_h, rows, &bounds);
        let bw = side_buckets(nb_w, cols, &bounds);
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

/// The patch mask of a pixel mask `[n_images, height, width]` (nonzero = real pixel): a
/// patch is real only if all its pixels are (Idefics2/3's `unfold(...).sum() == patch^2`).
/// `[n_images, height / patch, width / patch]`, row-major.
pub fn patch_mask_from_pixels(
    pixel_mask: &[u8],
    n_images: usize,
    height: usize,
    width: usize,
    patch: usize,
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
                let real = (0..patch).all(|y| {
                    let row = &img[(r * patch + y) * width + c * patch..][..patch];
                    row.iter().all(|&p| p != 0)
                });
                out.push(real);
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
        let ids = bucketed_position_ids(&[true; 2 * 4 * 4], 2, 4, 4, 4);
        let want: Vec<i64> = (0..16).chain(0..16).collect();
        assert_eq!(ids, want);
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
        let ids = bucketed_position_ids(&mask, 1, 4, 4, 4);
        assert_eq!(&ids[..4], &[0, 1, 2, 0]);
        assert_eq!(&ids[4..8], &[8, 9, 10, 0]);
        assert!(ids[8..].iter().all(|&x| x == 0));
    }

    #[test]
    fn a_patch_is_real_only_if_all_its_pixels_are() {
        // One 4x6 image, patch 2: the last pixel column is padding, and one pixel of the
        // top-left patch.
        let mut px = vec![1u8; 4 * 6];
        for y in 0..4 {
            px[y * 6 + 5] = 0;
        }
        px[6] = 0; // (1, 0)
        let m = patch_mask_from_pixels(&px, 1, 4, 6, 2);
        assert_eq!(m, [false, true, false, true, true, false]);
    }
}
