//! Idefics2/3's bucketed position ids (computed on the host, for every backend) against
//! torch's float32 arithmetic as transformers 5.24 and 4.4x use it
//! (tests/fixtures/vision/idefics2, written by scripts/make_vision_fixtures.py). No libtorch
//! needed.
mod common;

use common::*;
use mimic_models::vision::patches::{boundaries, bucketed_position_ids, Bucketing};

const GRIDS: [usize; 3] = [26, 27, 70];

#[test]
fn boundaries_equal_torch_arange_bit_for_bit() {
    let reference = read_reference(&fixtures_dir().join("vision/idefics2/reference.safetensors"));
    for grid in GRIDS {
        let want = &reference[&format!("boundaries_{grid}")].f32;
        let got = boundaries(grid);
        assert_eq!(got.len(), want.len(), "grid {grid}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "grid {grid} boundary {i}: {a} vs {b}"
            );
        }
    }
}

/// The bucketing at the grid sizes of the real checkpoints (26, 27 and 70 patches a side),
/// for every count of real patches along a side, under both transformers versions' rules.
#[test]
fn bucketed_position_ids_match_transformers_at_real_grid_sizes() {
    let reference = read_reference(&fixtures_dir().join("vision/idefics2/reference.safetensors"));
    let mut differ = 0;
    for grid in GRIDS {
        let v5 = &reference[&format!("buckets_{grid}")];
        let v4 = &reference[&format!("buckets_v4_{grid}")];
        for real in 1..=grid {
            // One image with `real` rows and `real` columns of real patches: row 0's ids are
            // the column buckets.
            let mut mask = vec![false; grid * grid];
            for r in 0..real {
                for c in 0..real {
                    mask[r * grid + c] = true;
                }
            }
            let row = (real - 1) * grid..(real - 1) * grid + real;
            for (rule, table) in [
                (Bucketing::Transformers5, v5),
                (Bucketing::Transformers4, v4),
            ] {
                let want = &table.i64[row.clone()];
                let ids = bucketed_position_ids(&mask, 1, grid, grid, grid, rule);
                let got: Vec<i64> = (0..real).map(|c| ids[c]).collect();
                assert_eq!(
                    got, want,
                    "{rule:?} grid {grid}, {real} real patches (columns)"
                );
                let got: Vec<i64> = (0..real).map(|r| ids[r * grid] / grid as i64).collect();
                assert_eq!(
                    got, want,
                    "{rule:?} grid {grid}, {real} real patches (rows)"
                );
            }
            differ += (0..real)
                .filter(|&i| v4.i64[row.start + i] != v5.i64[row.start + i])
                .count();
        }
    }
    // The two rules really differ, so each table tests its own rule.
    assert_eq!(differ, 3, "coordinates where 4.x and 5.x buckets differ");
}
