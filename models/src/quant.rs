//! Block-quantised weights kept as a GGUF file holds them, for graphs that compute with them
//! directly (ONNX Runtime's `MatMulNBits`), beside the float32 copy [`crate::Weights`] holds
//! for the trainer.
//!
//! Each row (an output channel) is blocks of 32 inputs with their own scale `d`:
//!
//! | GGUF | block | value | `MatMulNBits` |
//! |---|---|---|---|
//! | Q4_0 | `d: f16, qs: [u8; 16]` | `d (q - 8)` | 4 bits, no zero points (8) |
//! | Q4_1 | `d: f16, m: f16, qs: [u8; 16]` | `d q + m` | 4 bits, zero points 0, plus `m` per block |
//! | Q8_0 | `d: f16, qs: [i8; 32]` | `d q` | 8 bits of `q + 128`, no zero points (128) |
//!
//! GGUF puts element `j < 16` of a 4-bit block in the low nibble of byte `j` and element
//! `j + 16` in its high nibble; `MatMulNBits` wants elements `2k` and `2k + 1` in byte `k`'s low
//! and high nibbles: [`BlockWeight::packed`] reorders them. The graph then computes, per weight,
//! `(q - zp) * d`, exactly the dequantised weight for Q4_0 and Q8_0. Q4_1's `m` is no integer
//! zero point, and ONNX Runtime's CPU kernel takes float zero points only on a path twenty
//! times slower: its blocks go in with zero points 0 (`d q`), and the graph adds each block's
//! `m` times the sum of the block's inputs ([`BlockWeight::minimums`]), a product 32 times
//! smaller.
use half::f16;

/// The GGUF block types kept as blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockKind {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl BlockKind {
    /// Bytes per block of [`BLOCK`] elements.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockKind::Q4_0 => 18,
            BlockKind::Q4_1 => 20,
            BlockKind::Q8_0 => 34,
        }
    }

    /// Bits per element in `MatMulNBits`.
    pub fn bits(self) -> usize {
        match self {
            BlockKind::Q4_0 | BlockKind::Q4_1 => 4,
            BlockKind::Q8_0 => 8,
        }
    }
}

/// Elements per block.
pub const BLOCK: usize = 32;

/// A `[rows, cols]` weight as GGUF blocks, rows in the model's (HF) order.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockWeight {
    pub kind: BlockKind,
    pub rows: usize,
    pub cols: usize,
    /// `rows * cols / 32` blocks of `kind.block_bytes()` bytes, row after row.
    pub blocks: Vec<u8>,
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

impl BlockWeight {
    /// `None` when `cols` is not whole blocks or the data's length does not fit the shape.
    pub fn new(kind: BlockKind, rows: usize, cols: usize, blocks: Vec<u8>) -> Option<Self> {
        let ok = cols.is_multiple_of(BLOCK)
            && blocks.len() == rows * (cols / BLOCK) * kind.block_bytes();
        ok.then_some(BlockWeight {
            kind,
            rows,
            cols,
            blocks,
        })
    }

    pub fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    fn each_block(&self) -> impl Iterator<Item = &[u8]> {
        self.blocks.chunks_exact(self.kind.block_bytes())
    }

    /// `MatMulNBits`' `B`: `[rows, blocks_per_row, 32 * bits / 8]` bytes.
    pub fn packed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rows * self.cols * self.kind.bits() / 8);
        for b in self.each_block() {
            match self.kind {
                BlockKind::Q4_0 | BlockKind::Q4_1 => {
                    let qs = &b[self.kind.block_bytes() - 16..];
                    // Element e: byte e % 16, low nibble for e < 16, high for e >= 16.
                    let q = |e: usize| match e < 16 {
                        true => qs[e] & 0x0F,
                        false => qs[e - 16] >> 4,
                    };
                    out.extend((0..16).map(|k| q(2 * k) | (q(2 * k + 1) << 4)));
                }
                BlockKind::Q8_0 => {
                    out.extend(b[2..34].iter().map(|&q| (q as i8 as i16 + 128) as u8))
                }
            }
        }
        out
    }

    /// Q8_0 as two 4-bit weights, since `q + 128 = 16 h + l` with nibbles `h` and `l`:
    /// `d q = 16 d (h - 8) + d l`. Returns `(h, l)` packed as [`Self::packed`] packs 4 bits
    /// (`MatMulNBits`: `h` with scales `16 d` and its default zero point 8, `l` with scales `d`
    /// and zero points 0). `None` for the 4-bit kinds.
    pub fn q8_nibbles(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.kind != BlockKind::Q8_0 {
            return None;
        }
        let u = self.packed();
        let pack = |f: fn(u8) -> u8| -> Vec<u8> {
            u.chunks_exact(2)
                .map(|p| f(p[0]) | (f(p[1]) << 4))
                .collect()
        };
        Some((pack(|x| x >> 4), pack(|x| x & 0x0F)))
    }

    /// Each block's scale `d`, `[rows * blocks_per_row]`.
    pub fn scales(&self) -> Vec<f32> {
        self.each_block().map(|b| f16_at(b, 0)).collect()
    }

    /// `MatMulNBits`' zero points where they are not its default (8 for 4 bits, 128 for 8):
    /// Q4_1's zeros, two 4-bit zero points a byte, `[rows * ceil(blocks_per_row / 2)]`.
    pub fn zero_points(&self) -> Option<Vec<u8>> {
        (self.kind == BlockKind::Q4_1)
            .then(|| vec![0; self.rows * self.blocks_per_row().div_ceil(2)])
    }

    /// Q4_1's minimum `m` of each block, `[rows, blocks_per_row]`: added to the product as
    /// `m` times the sum of the block's inputs.
    pub fn minimums(&self) -> Option<Vec<f32>> {
        (self.kind == BlockKind::Q4_1).then(|| self.each_block().map(|b| f16_at(b, 2)).collect())
    }

    /// The weights the graph computes with: `(q - zp) d (+ m)` per element, `[rows, cols]`.
    pub fn values(&self) -> Vec<f32> {
        let scales = self.scales();
        let mins = self.minimums();
        let zp = match self.kind {
            BlockKind::Q4_0 => 8.0,
            BlockKind::Q4_1 => 0.0,
            BlockKind::Q8_0 => 128.0,
        };
        let packed = self.packed();
        let per_block = BLOCK * self.kind.bits() / 8;
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for (i, bytes) in packed.chunks_exact(per_block).enumerate() {
            let (d, m) = (scales[i], mins.as_ref().map_or(0.0, |m| m[i]));
            match self.kind.bits() {
                4 => {
                    for &byte in bytes {
                        out.push((f32::from(byte & 0x0F) - zp) * d + m);
                        out.push((f32::from(byte >> 4) - zp) * d + m);
                    }
                }
                _ => out.extend(bytes.iter().map(|&u| (f32::from(u) - zp) * d + m)),
            }
        }
        out
    }

    /// The same weight with its rows reordered: row `i` of the result is row `order[i]`.
    pub fn with_rows(&self, order: &[usize]) -> BlockWeight {
        let width = self.blocks_per_row() * self.kind.block_bytes();
        let blocks = order
            .iter()
            .flat_map(|&r| self.blocks[r * width..(r + 1) * width].iter().copied())
            .collect();
        BlockWeight {
            blocks,
            ..self.clone()
        }
    }

    /// Several weights of one kind and width stacked by rows (q/k/v into one product).
    pub fn stack(parts: &[&BlockWeight]) -> Option<BlockWeight> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.kind != first.kind || p.cols != first.cols)
        {
            return None;
        }
        Some(BlockWeight {
            kind: first.kind,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            blocks: parts
                .iter()
                .flat_map(|p| p.blocks.iter().copied())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    /// Two rows of two blocks each, with every nibble/byte distinct.
    fn weight(kind: BlockKind) -> (BlockWeight, Vec<f32>) {
        let mut blocks = Vec::new();
        for b in 0..4u8 {
            blocks.extend(h(0.25 * f32::from(b + 1)));
            if kind == BlockKind::Q4_1 {
                blocks.extend(h(-0.5 + 0.125 * f32::from(b)));
            }
            match kind {
                BlockKind::Q8_0 => blocks.extend((0..32u8).map(|j| (j * 7 + b * 13) ^ 0x80)),
                _ => blocks.extend((0..16u8).map(|j| j.wrapping_mul(7).wrapping_add(b * 3))),
            }
        }
        let ty = match kind {
            BlockKind::Q4_0 => GgmlType::Q4_0,
            BlockKind::Q4_1 => GgmlType::Q4_1,
            BlockKind::Q8_0 => GgmlType::Q8_0,
        };
        let mut want = vec![0f32; 128];
        crate::gguf::dequant::dequantize(ty, &blocks, &mut want);
        (BlockWeight::new(kind, 2, 64, blocks).unwrap(), want)
    }

    #[test]
    fn matmul_nbits_values_are_the_dequantised_weights() {
        for kind in [BlockKind::Q4_0, BlockKind::Q4_1, BlockKind::Q8_0] {
            let (w, want) = weight(kind);
            assert_eq!(w.values(), want, "{kind:?}");
            assert_eq!(w.packed().len(), 2 * 64 * kind.bits() / 8);
            assert_eq!(w.scales().len(), 4);
        }
    }

    #[test]
    fn q8_0_is_two_4_bit_weights() {
        let (w, want) = weight(BlockKind::Q8_0);
        let (h, l) = w.q8_nibbles().unwrap();
        let d = w.scales();
        let mut got = Vec::new();
        for (i, (hb, lb)) in h.chunks_exact(16).zip(l.chunks_exact(16)).enumerate() {
            for (&hh, &ll) in hb.iter().zip(lb) {
                for shift in [0, 4] {
                    let (hn, ln) = (f32::from((hh >> shift) & 15), f32::from((ll >> shift) & 15));
                    got.push(16.0 * d[i] * (hn - 8.0) + d[i] * ln);
                }
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn rows_reorder_and_stack_as_blocks() {
        let (w, want) = weight(BlockKind::Q8_0);
        let swapped = w.with_rows(&[1, 0]).values();
        assert_eq!(swapped[..64], want[64..]);
        let both = BlockWeight::stack(&[&w, &w]).unwrap();
        assert_eq!(both.rows, 4);
        assert_eq!(both.values()[128..], want[..]);
        let (q4, _) = weight(BlockKind::Q4_0);
        assert!(BlockWeight::stack(&[&w, &q4]).is_none());
    }

    #[test]
    fn a_q4_1_block_of_scale_zero_is_its_minimum() {
        let mut blocks = Vec::new();
        blocks.extend(h(0.0));
        blocks.extend(h(0.5));
        blocks.extend([0x5Au8; 16]);
        let w = BlockWeight::new(BlockKind::Q4_1, 1, 32, blocks).unwrap();
        assert_eq!(w.values(), vec![0.5; 32]);
        assert_eq!(w.zero_points(), Some(vec![0]));
    }
}
