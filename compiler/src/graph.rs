//! A small builder of ONNX graphs: nodes with generated value names, constants, and weights
//! written to an external-data file as they are added (so a large model never sits twice in
//! memory).
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_proto::DataType,
    tensor_shape_proto::dimension::Value as DimValue, tensor_shape_proto::Dimension, type_proto,
    AttributeProto, GraphProto, NodeProto, StringStringEntryProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use crate::{CompileError, Result};

/// ONNX IR version written (ONNX Runtime 1.30 reads up to 13; opset 23 needs 11).
pub const IR_VERSION: i64 = 11;
/// Default-domain opset: 23 brings the `Attention` operator.
pub const OPSET: i64 = 23;
/// The custom operator domain of mimic's runtime kernels (`mimic_runtime::kernel`), its
/// version, and the attention operator in it ([`mimic_models::kernel_op`]).
pub use mimic_models::kernel_op::{
    ATTENTION as KERNEL_ATTENTION, DOMAIN as KERNEL_DOMAIN, DOMAIN_VERSION as KERNEL_DOMAIN_VERSION,
};
/// Weights at or above this many bytes go to the external-data file.
const EXTERNAL_MIN_BYTES: usize = 1024;
/// External tensors start at multiples of this, so ONNX Runtime can map them.
const EXTERNAL_ALIGN: u64 = 4096;

/// A dimension of a graph input or output: fixed, or named and dynamic.
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

pub fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => DimValue::DimValue(*n),
                Dim::Named(s) => DimValue::DimParam((*s).into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds one graph. Values are named by the builder unless a caller names them.
pub struct GraphBuilder {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
    counter: usize,
    consts: HashMap<(i32, Vec<i64>, Vec<u8>), String>,
    external: Option<ExternalData>,
}

/// The external-data file being written beside the model.
struct ExternalData {
    path: PathBuf,
    /// File name recorded in the model (relative to model.onnx).
    location: String,
    file: std::io::BufWriter<std::fs::File>,
    offset: u64,
}

impl ExternalData {
    fn create(p: &Path) -> Result<Self> {
        let file = std::fs::File::create(p).map_err(|e| CompileError::io(p, e))?;
        Ok(ExternalData {
            path: p.to_path_buf(),
            location: p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("model.onnx.data")
                .into(),
            file: std::io::BufWriter::with_capacity(1 << 22, file),
            offset: 0,
        })
    }

    /// Appends `bytes` (aligned) and points `t` at them.
    fn append(&mut self, t: &mut TensorProto, bytes: &[u8]) -> Result<()> {
        let pad = (EXTERNAL_ALIGN - self.offset % EXTERNAL_ALIGN) % EXTERNAL_ALIGN;
        let path = self.path.clone();
        let io = |e| CompileError::io(&path, e);
        self.file.write_all(&vec![0u8; pad as usize]).map_err(io)?;
        self.offset += pad;
        self.file.write_all(bytes).map_err(io)?;
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            entry("location", self.location.clone()),
            entry("offset", self.offset.to_string()),
            entry("length", bytes.len().to_string()),
        ];
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| CompileError::io(&self.path, e))
    }
}

/// Moves the graph's large in-line initializers to the external-data file `path` (for a
/// graph built in memory, so that passes could rewrite its weights first).
pub fn externalize(g: &mut GraphProto, path: &Path) -> Result<()> {
    let mut ext = ExternalData::create(path)?;
    for t in g.initializer.iter_mut() {
        if t.raw_data
            .as_ref()
            .is_some_and(|r| r.len() >= EXTERNAL_MIN_BYTES)
        {
            let bytes = t.raw_data.take().unwrap_or_default();
            ext.append(t, &bytes)?;
        }
    }
    ext.flush()
}

impl GraphBuilder {
    /// A builder whose large weights go to `data_path` (recorded as its file name), or stay
    /// in the graph without one.
    pub fn new(data_path: Option<&Path>) -> Result<Self> {
        let external = data_path.map(ExternalData::create).transpose()?;
        Ok(GraphBuilder {
            nodes: vec![],
            initializers: vec![],
            inputs: vec![],
            outputs: vec![],
            counter: 0,
            consts: HashMap::new(),
            external,
        })
    }

    /// The number of nodes so far: with [`GraphBuilder::keep_fp32_since`], marks the nodes
    /// added after it.
    pub fn mark(&self) -> usize {
        self.nodes.len()
    }

    /// Marks the nodes added since `mark` to stay in float32 when the float16 pass converts
    /// the graph ([`crate::passes::float16::PRECISION_KEY`]).
    pub fn keep_fp32_since(&mut self, mark: usize) {
        for n in &mut self.nodes[mark..] {
            n.metadata_props.push(StringStringEntryProto {
                key: Some(crate::passes::float16::PRECISION_KEY.into()),
                value: Some("fp32".into()),
            });
        }
    }

    pub fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a node with named outputs.
    pub fn node_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        self.counter += 1;
        self.nodes.push(NodeProto {
            name: Some(format!("{op}_{}", self.counter)),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// Adds a node of a custom operator domain with named outputs.
    pub fn node_in_domain(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        self.node_named(op, inputs, outputs, attrs);
        if let Some(n) = self.nodes.last_mut() {
            n.domain = Some(domain.into());
        }
    }

    /// Adds a node with one output and returns its name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.node_named(op, inputs, &[&out], attrs);
        out
    }

    /// Adds a node with `n` outputs and returns their names.
    pub fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        n: usize,
        attrs: Vec<AttributeProto>,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..n)
            .map(|_| self.fresh(&op.to_ascii_lowercase()))
            .collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.node_named(op, inputs, &refs, attrs);
        outs
    }

    fn constant(&mut self, dtype: DataType, dims: &[i64], raw: Vec<u8>) -> String {
        let key = (dtype as i32, dims.to_vec(), raw);
        if let Some(name) = self.consts.get(&key) {
            return name.clone();
        }
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(dtype as i32),
            raw_data: Some(key.2.clone()),
            ..Default::default()
        });
        self.consts.insert(key, name.clone());
        name
    }

    /// A 1-D int64 constant.
    pub fn const_i64(&mut self, v: &[i64]) -> String {
        let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.constant(DataType::Int64, &[v.len() as i64], raw)
    }

    /// A scalar int64 constant.
    pub fn scalar_i64(&mut self, v: i64) -> String {
        self.constant(DataType::Int64, &[], v.to_le_bytes().to_vec())
    }

    /// A float32 constant of the given shape.
    pub fn const_f32(&mut self, dims: &[i64], v: &[f32]) -> String {
        let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.constant(DataType::Float, dims, raw)
    }

    pub fn scalar_f32(&mut self, v: f32) -> String {
        self.const_f32(&[], &[v])
    }

    /// A named float32 weight; large ones are appended to the external-data file.
    pub fn weight(&mut self, name: &str, dims: &[usize], data: &[f32]) -> Result<String> {
        self.weight_bytes(name, DataType::Float, dims, bytemuck_f32(data))
    }

    /// A named weight of `dtype` given as its little-endian bytes (uint8 blocks of quantised
    /// weights); large ones are appended to the external-data file.
    pub fn weight_bytes(
        &mut self,
        name: &str,
        dtype: DataType,
        dims: &[usize],
        bytes: &[u8],
    ) -> Result<String> {
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        let mut t = TensorProto {
            name: Some(name.into()),
            dims,
            data_type: Some(dtype as i32),
            ..Default::default()
        };
        match self.external.as_mut() {
            Some(ext) if bytes.len() >= EXTERNAL_MIN_BYTES => ext.append(&mut t, bytes)?,
            _ => t.raw_data = Some(bytes.to_vec()),
        }
        self.initializers.push(t);
        Ok(name.to_string())
    }

    /// Flushes the external-data file and returns the graph.
    pub fn finish(mut self, name: &str) -> Result<GraphProto> {
        if let Some(ext) = self.external.as_mut() {
            ext.flush()?;
        }
        Ok(GraphProto {
            name: Some(name.into()),
            node: self.nodes,
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        })
    }
}

/// Little-endian bytes of an f32 slice (x86-64 and aarch64 are little-endian).
fn bytemuck_f32(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the length is exact.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) }
}

/// Reads an ONNX model file.
pub fn read_model(path: &Path) -> Result<crate::onnx::ModelProto> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| CompileError::io(path, e))?;
    crate::onnx::ModelProto::decode(bytes.as_slice()).map_err(|e| {
        CompileError::Other(format!("{}: not a valid ONNX model: {e}", path.display()))
    })
}
