//! Parsing of a GGUF header: magic, version, metadata and the tensor directory, every length
//! and count checked against the bytes left in the file before anything is allocated.
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::{
    GgmlType, GgufTensorInfo, MetaValue, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_NESTING, MAX_DIMS,
};
use crate::error::{ModelError, Result};

/// What the header holds.
pub(super) struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<GgufTensorInfo>,
    pub data_offset: usize,
    pub alignment: u64,
}

/// A bounds-checked little-endian reader over the header bytes. Every read names what it was
/// reading, so a truncated or corrupt file says where it went wrong.
struct Parser<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn error(&self, msg: impl Into<String>) -> ModelError {
        ModelError::format(self.path, msg)
    }

    fn take(&mut self, n: usize, what: &dyn fmt::Display) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "the file ends ({} bytes) in the middle of {what} at offset {}: it is truncated or corrupt",
                self.bytes.len(),
                self.pos
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn fmt::Display) -> Result<[u8; N]> {
        let b = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn fmt::Display) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn fmt::Display) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count or length that must fit in the rest of the file, at `min_bytes` per element.
    fn count(&mut self, min_bytes: usize, what: &dyn fmt::Display) -> Result<usize> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_bytes))
            .is_some_and(|bytes| bytes <= self.remaining());
        if !fits {
            return Err(self.error(format!(
                "{what} is {n}, more than the {} bytes left in the file can hold: the file is truncated or corrupt",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn fmt::Display) -> Result<String> {
        let len = self.count(1, &format_args!("the length of {what}"))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.error(format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
        let what = format_args!("the value of {key}");
        let what = &what;
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(what)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.error(format!("{key}: invalid bool byte {b}"))),
            },
            8 => MetaValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(self.error(format!(
                        "{key}: arrays nested deeper than {MAX_ARRAY_NESTING} levels"
                    )));
                }
                let elem = self.u32(&format_args!("the element type of {key}"))?;
                let min = min_value_size(elem).ok_or_else(|| {
                    self.error(format!("{key}: unknown array element type {elem}"))
                })?;
                let n = self.count(min, &format_args!("the element count of array {key}"))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(what)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.error(format!("{key}: unknown metadata value type {other}"))),
        })
    }
}

/// The fewest bytes a value of GGUF value type `ty` takes, `None` for an unknown type.
fn min_value_size(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,     // the length of an empty string
        9 => 4 + 8, // element type and count of an empty array
        _ => return None,
    })
}

pub(super) fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let mut p = Parser {
        path,
        bytes,
        pos: 0,
    };
    if bytes.len() < 4 || bytes[..4] != GGUF_MAGIC {
        let start = &bytes[..bytes.len().min(4)];
        return Err(p.error(format!(
            "not a GGUF file: it starts with {start:?}, not the magic bytes \"GGUF\""
        )));
    }
    p.pos = 4;
    let version = p.u32(&"the version")?;
    match version {
        2 | 3 => {}
        1 => return Err(p.error("GGUF version 1 is not supported (only 2 and 3)")),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(p.error("big-endian GGUF files are not supported"))
        }
        v => return Err(p.error(format!("unsupported GGUF version {v} (only 2 and 3)"))),
    }
    // Each tensor entry takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset)
    // bytes, and each metadata entry at least 8 (key length) + 4 (type) + 1 (value).
    let tensor_count = p.count(24, &"the tensor count")?;
    let kv_count = p.count(13, &"the metadata entry count")?;

    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let key = p.string(&format_args!("the key of metadata entry {i}"))?;
        let ty = p.u32(&format_args!("the value type of {key}"))?;
        let value = p.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(p.error(format!("metadata key {key} appears twice")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 30 => a,
            _ => {
                return Err(p.error(format!(
                    "general.alignment must be a power of two, found {v:?}"
                )))
            }
        },
    };

    let mut tensors = Vec::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let name = p.string(&format_args!("the name of tensor {i}"))?;
        let n_dims = p.u32(&format_args!("the dimension count of tensor {name}"))? as usize;
        if n_dims > MAX_DIMS {
            return Err(p.error(format!(
                "tensor {name}: {n_dims} dimensions (ggml allows at most {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(p.u64(&format_args!("the dimensions of tensor {name}"))?);
        }
        let ggml_type = GgmlType::from_id(p.u32(&format_args!("the type of tensor {name}"))?);
        let offset = p.u64(&format_args!("the data offset of tensor {name}"))?;
        tensors.push(GgufTensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }

    // The data section starts at the next multiple of the alignment. A file without tensors may
    // end before that padding.
    let data_offset = p.pos.div_ceil(alignment as usize) * alignment as usize;
    if !tensors.is_empty() && data_offset > bytes.len() {
        return Err(p.error(format!(
            "the file ends ({} bytes) before its tensor data starts (offset {data_offset}): it is truncated",
            bytes.len()
        )));
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        data_offset,
        alignment,
    })
}
