//! A reader for GGUF files, llama.cpp's single-file model format (versions 2 and 3, little-endian).
//!
//! Layout of a file:
//!
//! ```text
//! magic "GGUF" | version: u32 | tensor_count: u64 | kv_count: u64
//! kv_count    x (key: string, value_type: u32, value)
//! tensor_count x (name: string, n_dims: u32, dims: [u64; n_dims], ggml_type: u32, offset: u64)
//! padding up to a multiple of `general.alignment` (default 32)
//! tensor data: each tensor at data_start + offset (offsets are multiples of the alignment)
//! ```
//!
//! A string is a `u64` byte length followed by UTF-8 bytes; an array is an element type (`u32`),
//! a count (`u64`) and the elements. `dims[0]` is the innermost (fastest-varying) dimension, so
//! the row-major shape that Hugging Face uses is the dims reversed.
//!
//! The file is memory-mapped: opening reads only the header, and tensor data is read when a
//! tensor is dequantized. Every length and count in the header is checked against the bytes that
//! are actually left in the file before anything is allocated, so a corrupt header gives a
//! [`ModelError::Format`] naming the file, never a huge allocation or a panic.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;

use crate::error::{ModelError, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: usize = 4;
/// Metadata arrays may nest; deeper nesting than this is treated as corruption (it would
/// otherwise let a crafted file exhaust the stack).
const MAX_ARRAY_NESTING: usize = 8;
/// Elements per super-block of the k-quant types.
const QK_K: usize = 256;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// Any integer that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer, as `i64` (a `u64` above `i64::MAX` gives `None`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Any number: floats, and integers converted to `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            MetaValue::I64(v) => Some(v as f64),
            MetaValue::U64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The GGUF name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "uint8",
            MetaValue::I8(_) => "int8",
            MetaValue::U16(_) => "uint16",
            MetaValue::I16(_) => "int16",
            MetaValue::U32(_) => "uint32",
            MetaValue::I32(_) => "int32",
            MetaValue::U64(_) => "uint64",
            MetaValue::I64(_) => "int64",
            MetaValue::F32(_) => "float32",
            MetaValue::F64(_) => "float64",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }
}

/// The element type of a tensor, as ggml numbers them (`enum ggml_type`).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    /// A type id this reader does not know; its tensors can be listed but not read.
    Unknown(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> GgmlType {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            other => Unknown(other),
        }
    }

    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            MXFP4 => 39,
            Unknown(id) => id,
        }
    }

    /// `(elements per block, bytes per block)`, or `None` for an unknown type.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        use GgmlType::*;
        Some(match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            F64 | I64 => (1, 8),
            Q4_0 => (32, 2 + 16),
            Q4_1 => (32, 2 + 2 + 16),
            Q5_0 => (32, 2 + 4 + 16),
            Q5_1 => (32, 2 + 2 + 4 + 16),
            Q8_0 => (32, 2 + 32),
            Q8_1 => (32, 2 + 2 + 32),
            Q2_K => (QK_K, QK_K / 16 + QK_K / 4 + 2 + 2),
            Q3_K => (QK_K, QK_K / 8 + QK_K / 4 + 12 + 2),
            Q4_K => (QK_K, 2 + 2 + 12 + QK_K / 2),
            Q5_K => (QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2),
            Q6_K => (QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2),
            Q8_K => (QK_K, 4 + QK_K + QK_K / 8),
            IQ2_XXS => (QK_K, 2 + QK_K / 4),
            IQ2_XS => (QK_K, 2 + QK_K / 4 + QK_K / 32),
            IQ3_XXS => (QK_K, 2 + QK_K / 4 + QK_K / 8),
            IQ1_S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4_NL => (32, 2 + 16),
            IQ3_S => (QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2_S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4_XS => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            IQ1_M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            TQ1_0 => (QK_K, 2 + 4 * 13),
            TQ2_0 => (QK_K, 2 + 64),
            MXFP4 => (32, 1 + 16),
            Unknown(_) => return None,
        })
    }

    /// Whether [`GgufFile::tensor_f32`] can convert tensors of this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16
                | BF16
                | F64
                | I8
                | I16
                | I32
                | Q4_0
                | Q4_1
                | Q5_0
                | Q5_1
                | Q8_0
                | Q2_K
                | Q3_K
                | Q4_K
                | Q5_K
                | Q6_K
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlType::Unknown(id) => write!(f, "unknown ggml type {id}"),
            other => fmt::Debug::fmt(other, f),
        }
    }
}

/// Where one tensor is and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// The row-major (Hugging Face) shape: the dims reversed. A GGUF `[576, 49152]` embedding is
    /// `[49152, 576]` here.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of elements (saturating; [`GgufFile::open`] rejects shapes that overflow).
    pub fn numel(&self) -> usize {
        self.checked_numel().unwrap_or(usize::MAX)
    }

    fn checked_numel(&self) -> Option<usize> {
        self.dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
    }

    /// The size of the tensor's data in bytes, `None` for an unknown type or a shape that does not
    /// split into whole blocks.
    pub fn byte_len(&self) -> Option<usize> {
        let (block, bytes) = self.ggml_type.block_layout()?;
        let row = *self.dims.first().unwrap_or(&1);
        if !row.is_multiple_of(block as u64) {
            return None;
        }
        (self.checked_numel()? / block).checked_mul(bytes)
    }
}

/// An open GGUF file: its metadata and tensor directory, with the tensor data memory-mapped.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<GgufTensorInfo>,
    mmap: Mmap,
    data_offset: usize,
    alignment: u64,
    index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("bytes", &self.mmap.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` and reads its header, checking it throughout: the magic, the version (2 or 3),
    /// that every count and length fits in the bytes left, the alignment, and that every tensor's
    /// data lies inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the map is read-only and private to this struct. Like every reader of a mapped
        // file, it assumes nobody truncates the file while it is open (that would fault on access).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let header = parse_header(path, &mmap)?;
        let Header {
            version,
            metadata,
            tensors,
            data_offset,
            alignment,
        } = header;
        let mut index = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if index.insert(t.name.clone(), i).is_some() {
                return Err(ModelError::format(
                    path,
                    format!("tensor {} is listed twice", t.name),
                ));
            }
        }
        let gguf = GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            mmap,
            data_offset,
            alignment,
            index,
        };
        for t in &gguf.tensors {
            gguf.check_tensor(t)?;
        }
        Ok(gguf)
    }

    /// The alignment of the tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The byte offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset as u64
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn get_required(&self, key: &str) -> Result<&MetaValue> {
        self.get(key)
            .ok_or_else(|| ModelError::format(&self.path, format!("metadata key {key} is missing")))
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &MetaValue) -> ModelError {
        let shown = match found {
            MetaValue::Array(a) => format!("an array of {} elements", a.len()),
            MetaValue::String(s) => format!("the string {s:?}"),
            other => format!("{} {other:?}", other.type_name()),
        };
        ModelError::format(
            &self.path,
            format!("metadata key {key}: expected {expected}, found {shown}"),
        )
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.get_required(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.get_required(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get_required(key)?;
        v.as_f64()
            .ok_or_else(|| self.wrong_type(key, "a number", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.get_required(key)?;
        v.as_bool().ok_or_else(|| self.wrong_type(key, "a bool", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&[MetaValue]> {
        let v = self.get_required(key)?;
        v.as_array()
            .ok_or_else(|| self.wrong_type(key, "an array", v))
    }

    /// `general.architecture`, e.g. "llama".
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn tensor_error(&self, info: &GgufTensorInfo, msg: String) -> ModelError {
        ModelError::format(&self.path, format!("tensor {}: {msg}", info.name))
    }

    /// Checks that `info` describes whole blocks that lie inside the file and returns its byte range.
    fn check_tensor(&self, info: &GgufTensorInfo) -> Result<Option<std::ops::Range<usize>>> {
        let numel = info
            .checked_numel()
            .ok_or_else(|| self.tensor_error(info, format!("shape {:?} overflows", info.dims)))?;
        if !info.offset.is_multiple_of(self.alignment) {
            return Err(self.tensor_error(
                info,
                format!(
                    "data offset {} is not a multiple of the alignment {}",
                    info.offset, self.alignment
                ),
            ));
        }
        let file_len = self.mmap.len() as u64;
        let start = (self.data_offset as u64).checked_add(info.offset);
        let Some((block, block_bytes)) = info.ggml_type.block_layout() else {
            // Size unknown: only the start can be checked.
            return match start {
                Some(s) if s <= file_len => Ok(None),
                _ => Err(self.tensor_error(
                    info,
                    format!(
                        "data offset {} lies past the end of the file ({file_len} bytes)",
                        info.offset
                    ),
                )),
            };
        };
        let row = *info.dims.first().unwrap_or(&1);
        if !row.is_multiple_of(block as u64) {
            return Err(self.tensor_error(
                info,
                format!(
                    "row length {row} is not a multiple of the {} block size {block}",
                    info.ggml_type
                ),
            ));
        }
        let len = (numel / block).checked_mul(block_bytes);
        let end = start.zip(len).and_then(|(s, l)| s.checked_add(l as u64));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len => Ok(Some(s as usize..e as usize)),
            _ => Err(self.tensor_error(
                info,
                format!(
                    "its {} data ({} bytes at offset {}) runs past the end of the file ({file_len} bytes): the file is truncated",
                    info.ggml_type,
                    len.map_or("too many".to_string(), |l| l.to_string()),
                    start.unwrap_or(u64::MAX),
                ),
            )),
        }
    }

    /// The raw bytes of a tensor, in its ggml encoding.
    pub fn tensor_data(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        match self.check_tensor(info)? {
            Some(range) => Ok(&self.mmap[range]),
            None => Err(self.unsupported(info)),
        }
    }

    fn unsupported(&self, info: &GgufTensorInfo) -> ModelError {
        ModelError::UnsupportedTensorType {
            path: self.path.clone(),
            tensor: info.name.clone(),
            dtype: info.ggml_type.to_string(),
        }
    }

    /// The tensor's values as `f32`, in row-major order (see [`GgufTensorInfo::shape`]).
    /// Supported: F32, F16, BF16, F64, I8, I16, I32, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
    /// Q4_K, Q5_K, Q6_K; any other type is a [`ModelError::UnsupportedTensorType`].
    pub fn tensor_f32(&self, info: &GgufTensorInfo) -> Result<Vec<f32>> {
        if !info.ggml_type.can_dequantize() {
            return Err(self.unsupported(info));
        }
        let data = self.tensor_data(info)?;
        let mut out = vec![0f32; info.numel()];
        dequantize(info.ggml_type, data, &mut out);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------------------------

struct Header {
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<GgufTensorInfo>,
    data_offset: usize,
    alignment: u64,
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

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
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

// ---------------------------------------------------------------------------------------------
// Dequantization
//
// Each quantized type stores blocks of consecutive elements of a row. The formulas follow ggml's
// reference dequantizers (ggml-quants.c), computed in f32 in the same order so that the results
// are bit-identical to ggml and to the `gguf` Python package.
// ---------------------------------------------------------------------------------------------

/// Converts `data` (whole blocks of `ty`) into `out`, which holds exactly the elements of those
/// blocks. Callers check the lengths and that `ty` is supported ([`GgmlType::can_dequantize`]).
fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) {
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
