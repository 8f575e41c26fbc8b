//! Idefics2/3's bucketed position ids (computed on the host, for every backend) against
//! transformers' float32 arithmetic (tests/fixtures/vision/idefics2, written by
//! scripts/make_vision_fixtures.py). No libtorch needed.
mod common;

use common::*;
use mimic_models::vision::patches::bucketed_position_ids;

/// The bucketing at the grid sizes of the real checkpoints (26, 27 and 70 patches a side),
/// for every count of real patches along a side, against transformers' float32 arithmetic.
#[test]
fn bucketed_position_ids_match_transformers_at_real_grid_sizes() {
    let reference = read_reference(&fixtures_dir().join("vision/idefics2/reference.safetensors"));
    for grid in [26usize, 27, 70] {
        let table = &reference[&format!("buckets_{grid}")];
        for real in 1..=grid {
            // One image with `real` rows and `real` columns of real patches: row 0's ids are
            // the column buckets.
            let mut mask = vec![false; grid * grid];
            for r in 0..real {
                for c in 0..real {
                    mask[r * grid + c] = true;
                }
            }
            let ids = bucketed_position_ids(&mask, 1, grid, grid, grid);
            let want = &table.i64[(real - 1) * grid..(real - 1) * grid + real];
            let got: Vec<i64> = (0..real).map(|c| ids[c]).collect();
            assert_eq!(got, want, "grid {grid}, {real} real patches (columns)");
            let got: Vec<i64> = (0..real).map(|r| ids[r * grid] / grid as i64).collect();
            assert_eq!(got, want, "grid {grid}, {real} real patches (rows)");
        }
    }
}
