//! Dequantization of GGUF's block types into float32.
//!
//! Each quantized type stores blocks of consecutive elements of a row. The formulas follow
//! ggml's reference dequantizers (ggml-quants.c), computed in f32 in the same order so that the
//! results are bit-identical to ggml and to the `gguf` Python package.
use half::f16;

use super::{GgmlType, QK_K};

/// Converts `data` (whole blocks of `ty`) into `out`, which holds exactly the elements of those
/// blocks. Callers check the lengths and that `ty` is supported ([`GgmlType::can_dequantize`]).
pub(crate) fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (y, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (y, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *y = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        // bf16 is the top half of an f32.
        GgmlType::BF16 => {
            for (y, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *y = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        GgmlType::F64 => {
            for (y, b) in out.iter_mut().zip(data.chunks_exact(8)) {
                *y = f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32;
            }
        }
        GgmlType::I8 => {
            for (y, &b) in out.iter_mut().zip(data) {
                *y = f32::from(b as i8);
            }
        }
        GgmlType::I16 => {
            for (y, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *y = f32::from(i16::from_le_bytes([b[0], b[1]]));
            }
        }
        GgmlType::I32 => {
            for (y, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *y = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32;
            }
        }
        GgmlType::Q4_0 => dequantize_q4_0(data, out),
        GgmlType::Q4_1 => dequantize_q4_1(data, out),
        GgmlType::Q5_0 => dequantize_q5_0(data, out),
        GgmlType::Q5_1 => dequantize_q5_1(data, out),
        GgmlType::Q8_0 => dequantize_q8_0(data, out),
        GgmlType::Q2_K => dequantize_q2_k(data, out),
        GgmlType::Q3_K => dequantize_q3_k(data, out),
        GgmlType::Q4_K => dequantize_q4_k(data, out),
        GgmlType::Q5_K => dequantize_q5_k(data, out),
        GgmlType::Q6_K => dequantize_q6_k(data, out),
        _ => {}
    }
}

/// The f16 at byte `i` of a block, widened to f32.
#[inline(always)]
fn f16_at(block: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[i], block[i + 1]])).to_f32()
}

/// Q4_0, 18 bytes per 32 elements: `d: f16, qs: [u8; 16]`.
/// Element `j < 16` is the low nibble of `qs[j]`, element `j + 16` its high nibble;
/// `y = d * (q - 8)`.
fn dequantize_q4_0(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(block, 0);
        let qs = &block[2..18];
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            lo[j] = d * f32::from((qs[j] & 0x0F) as i8 - 8);
            hi[j] = d * f32::from((qs[j] >> 4) as i8 - 8);
        }
    }
}

/// Q4_1, 20 bytes per 32 elements: `d: f16, m: f16, qs: [u8; 16]`, nibbles as in Q4_0;
/// `y = d * q + m`.
fn dequantize_q4_1(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(block, 0);
        let m = f16_at(block, 2);
        let qs = &block[4..20];
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            lo[j] = d * f32::from(qs[j] & 0x0F) + m;
            hi[j] = d * f32::from(qs[j] >> 4) + m;
        }
    }
}

/// Q5_0, 22 bytes per 32 elements: `d: f16, qh: u32, qs: [u8; 16]`. The low four bits of
/// element `j` are nibbles as in Q4_0, the fifth bit is bit `j` of `qh`; `y = d * (q - 16)`.
fn dequantize_q5_0(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(22).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(block, 0);
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let qs = &block[6..22];
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + 16)) & 1) as u8;
            lo[j] = d * f32::from(((qs[j] & 0x0F) | (h0 << 4)) as i8 - 16);
            hi[j] = d * f32::from(((qs[j] >> 4) | (h1 << 4)) as i8 - 16);
        }
    }
}

/// Q5_1, 24 bytes per 32 elements: `d: f16, m: f16, qh: u32, qs: [u8; 16]`, bits as in Q5_0;
/// `y = d * q + m`.
fn dequantize_q5_1(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(24).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(block, 0);
        let m = f16_at(block, 2);
        let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
        let qs = &block[8..24];
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + 16)) & 1) as u8;
            lo[j] = d * f32::from((qs[j] & 0x0F) | (h0 << 4)) + m;
            hi[j] = d * f32::from((qs[j] >> 4) | (h1 << 4)) + m;
        }
    }
}

/// Q8_0, 34 bytes per 32 elements: `d: f16, qs: [i8; 32]`; `y = d * q`.
fn dequantize_q8_0(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(block, 0);
        for (y, &q) in y.iter_mut().zip(&block[2..34]) {
            *y = d * f32::from(q as i8);
        }
    }
}

/// Q2_K, 84 bytes per 256 elements: `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16`.
/// Sixteen sub-blocks of 16; sub-block `j` has scale `d * (scales[j] & 15)` and min
/// `dmin * (scales[j] >> 4)`. Each half of 128 elements uses 32 bytes of `qs`: element
/// `32 * s + l` of the half is bits `2s..2s+2` of byte `l`. `y = scale * q - min`.
fn dequantize_q2_k(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(84).zip(out.chunks_exact_mut(QK_K)) {
        let scales = &block[0..16];
        let qs = &block[16..80];
        let d = f16_at(block, 80);
        let dmin = f16_at(block, 82);
        for (i, y16) in y.chunks_exact_mut(16).enumerate() {
            let (half, shift, l0) = (i / 8, 2 * ((i % 8) / 2), 16 * (i % 2));
            let dl = d * f32::from(scales[i] & 0x0F);
            let ml = dmin * f32::from(scales[i] >> 4);
            let q = &qs[32 * half + l0..32 * half + l0 + 16];
            for (y, &b) in y16.iter_mut().zip(q) {
                *y = dl * f32::from((b >> shift) & 3) - ml;
            }
        }
    }
}

/// Q3_K, 110 bytes per 256 elements: `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16`.
/// Sixteen 6-bit signed scales (stored minus 32): the low four bits of scale `j` are nibble
/// `j / 8` of `scales[j % 8]`, the high two bits are bits `2 * (j / 4)..` of `scales[8 + j % 4]`.
/// The low two bits of each element are laid out as in Q2_K; element `i` subtracts 4 when
/// bit `i / 32` of `hmask[i % 32]` is clear. `y = d * scale * q`.
fn dequantize_q3_k(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(110).zip(out.chunks_exact_mut(QK_K)) {
        let hmask = &block[0..32];
        let qs = &block[32..96];
        let sc = &block[96..108];
        let d = f16_at(block, 108);
        for (i, y16) in y.chunks_exact_mut(16).enumerate() {
            let low = if i < 8 { sc[i] & 0x0F } else { sc[i - 8] >> 4 };
            let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
            let dl = d * f32::from((low | (high << 4)) as i8 - 32);
            let (half, shift, l0) = (i / 8, 2 * ((i % 8) / 2), 16 * (i % 2));
            let q = &qs[32 * half + l0..32 * half + l0 + 16];
            let hbit = i / 2; // which bit of hmask: element index / 32
            for (l, (y, &b)) in y16.iter_mut().zip(q).enumerate() {
                let low2 = ((b >> shift) & 3) as i8;
                let missing_high = (((hmask[l0 + l] >> hbit) & 1) ^ 1) as i8;
                *y = dl * f32::from(low2 - 4 * missing_high);
            }
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K block, packed in 12 bytes:
/// for `j < 4` they are the low six bits of bytes `j` and `j + 4`; for `j >= 4` the low nibble
/// (scale) and high nibble (min) of byte `j + 4`, topped with the high two bits of bytes `j - 4`
/// and `j`.
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K, 144 bytes per 256 elements: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`.
/// Eight sub-blocks of 32 with scale `d * sc` and min `dmin * m` ([`scale_min_k4`]). Each 32
/// bytes of `qs` hold two sub-blocks: the low nibbles, then the high nibbles.
/// `y = scale * q - min`.
fn dequantize_q4_k(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(144).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(block, 0);
        let dmin = f16_at(block, 2);
        let scales = &block[4..16];
        let qs = &block[16..144];
        for (j, y32) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(j, scales);
            let dl = d * f32::from(sc);
            let ml = dmin * f32::from(m);
            let shift = 4 * (j % 2);
            let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            for (y, &b) in y32.iter_mut().zip(q) {
                *y = dl * f32::from((b >> shift) & 0x0F) - ml;
            }
        }
    }
}

/// Q5_K, 176 bytes per 256 elements: `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32],
/// qs: [u8; 128]`. As Q4_K, with a fifth bit: bit `j` of `qh[l]` for element `l` of sub-block `j`.
fn dequantize_q5_k(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(176).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(block, 0);
        let dmin = f16_at(block, 2);
        let scales = &block[4..16];
        let qh = &block[16..48];
        let qs = &block[48..176];
        for (j, y32) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(j, scales);
            let dl = d * f32::from(sc);
            let ml = dmin * f32::from(m);
            let shift = 4 * (j % 2);
            let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            for ((y, &b), &h) in y32.iter_mut().zip(q).zip(qh) {
                let v = ((b >> shift) & 0x0F) | (((h >> j) & 1) << 4);
                *y = dl * f32::from(v) - ml;
            }
        }
    }
}

/// Q6_K, 210 bytes per 256 elements: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`.
/// Each half of 128 elements uses 64 bytes of `ql` and 32 of `qh`: element `r` of the half takes
/// nibble `r / 64` of `ql[r % 64]` as its low four bits and bits `2 * (r / 32)..` of `qh[r % 32]`
/// as its high two. `y = d * scales[i / 16] * (q - 32)`.
fn dequantize_q6_k(data: &[u8], out: &mut [f32]) {
    for (block, y) in data.chunks_exact(210).zip(out.chunks_exact_mut(QK_K)) {
        let ql = &block[0..128];
        let qh = &block[128..192];
        let scales = &block[192..208];
        let d = f16_at(block, 208);
        for (i, y16) in y.chunks_exact_mut(16).enumerate() {
            let dl = d * f32::from(scales[i] as i8);
            let (half, r0) = (i / 8, 16 * (i % 8));
            let (lshift, hshift) = (4 * (r0 / 64), 2 * (r0 / 32));
            let ql = &ql[64 * half + r0 % 64..64 * half + r0 % 64 + 16];
            let qh = &qh[32 * half + r0 % 32..32 * half + r0 % 32 + 16];
            for ((y, &lo), &hi) in y16.iter_mut().zip(ql).zip(qh) {
                let q = ((lo >> lshift) & 0x0F) | (((hi >> hshift) & 3) << 4);
                *y = dl * f32::from(q as i8 - 32);
            }
        }
    }
}
