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

use memmap2::Mmap;

use crate::error::{ModelError, Result};

pub(crate) mod dequant;
mod header;
use dequant::dequantize;
use header::{parse_header, Header};

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
        Self::from_mmap(path, mmap)
    }

    /// Reads a GGUF file held in memory, with the same checks as [`GgufFile::open`]; `path`
    /// only names it in errors. The bytes are copied into an anonymous map.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let mut map =
            memmap2::MmapMut::map_anon(bytes.len()).map_err(|e| ModelError::io(path, e))?;
        map.copy_from_slice(bytes);
        let mmap = map.make_read_only().map_err(|e| ModelError::io(path, e))?;
        Self::from_mmap(path, mmap)
    }

    fn from_mmap(path: &Path, mmap: Mmap) -> Result<Self> {
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
