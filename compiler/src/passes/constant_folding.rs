//! Constant folding.
//!
//! Pattern: a node whose every input is a small constant (an initializer held inline, or the
//! output of a node already folded), of an operator evaluated here (elementwise arithmetic,
//! Reshape, Unsqueeze, Concat, Cast, Shape, Gather, Slice, Transpose, Expand, Range).
//! Binds: the constant inputs. Rewrite: the node is removed and its outputs become
//! initializers. Results over [`MAX_ELEMENTS`] are left alone, so folding never inflates the
//! model; weights in the external-data file are never read.
use std::collections::HashMap;

use super::{attr, op};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::{GraphProto, NodeProto, TensorProto};

/// The largest constant this pass creates.
pub const MAX_ELEMENTS: usize = 1 << 16;

#[derive(Debug, Clone, PartialEq)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
struct Const {
    shape: Vec<usize>,
    data: Data,
}

impl Const {
    fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    fn i64s(&self) -> Option<&[i64]> {
        match &self.data {
            Data::I64(v) => Some(v),
            Data::F32(_) => None,
        }
    }

    fn from_proto(t: &TensorProto) -> Option<Const> {
        if t.data_location == Some(crate::onnx::tensor_proto::DataLocation::External as i32) {
            return None;
        }
        let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let n: usize = shape.iter().product();
        if n > MAX_ELEMENTS {
            return None;
        }
        let raw = t.raw_data.as_deref();
        let data = match DataType::try_from(t.data_type?).ok()? {
            DataType::Float => Data::F32(match raw {
                Some(r) => r
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                None => t.float_data.clone(),
            }),
            DataType::Int64 => Data::I64(match raw {
                Some(r) => r
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
                None => t.int64_data.clone(),
            }),
            _ => return None,
        };
        let c = Const { shape, data };
        (c.len() == n).then_some(c)
    }

    fn to_proto(&self, name: &str) -> TensorProto {
        let (dtype, raw): (DataType, Vec<u8>) = match &self.data {
            Data::F32(v) => (
                DataType::Float,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Data::I64(v) => (
                DataType::Int64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        };
        TensorProto {
            name: Some(name.into()),
            dims: self.shape.iter().map(|&d| d as i64).collect(),
            data_type: Some(dtype as i32),
            raw_data: Some(raw),
            ..Default::default()
        }
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy broadcasting of two shapes.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let y = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// For each element of `out` (row-major), the index of the element of `shape` it reads.
fn broadcast_index(out: &[usize], shape: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let pad = out.len() - shape.len();
    let in_strides = strides(shape);
    let out_strides = strides(out);
    (0..n)
        .map(|flat| {
            let mut idx = 0;
            for (d, &os) in out_strides.iter().enumerate() {
                if d < pad {
                    continue;
                }
                let coord = (flat / os) % out[d];
                let dim = shape[d - pad];
                if dim != 1 {
                    idx += coord * in_strides[d - pad];
                }
            }
            idx
        })
        .collect()
}

fn gather_by<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().map(|&i| v[i]).collect()
}

fn binary(opname: &str, a: &Const, b: &Const) -> Option<Const> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let (ia, ib) = (
        broadcast_index(&shape, &a.shape),
        broadcast_index(&shape, &b.shape),
    );
    let data = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => {
            let f: fn(f32, f32) -> f32 = match opname {
                "Add" => |p, q| p + q,
                "Sub" => |p, q| p - q,
                "Mul" => |p, q| p * q,
                "Div" => |p, q| p / q,
                _ => return None,
            };
            Data::F32(ia.iter().zip(&ib).map(|(&i, &j)| f(x[i], y[j])).collect())
        }
        (Data::I64(x), Data::I64(y)) => {
            let f: fn(i64, i64) -> Option<i64> = match opname {
                "Add" => |p, q| p.checked_add(q),
                "Sub" => |p, q| p.checked_sub(q),
                "Mul" => |p, q| p.checked_mul(q),
                "Div" => |p, q| p.checked_div(q),
                _ => return None,
            };
            Data::I64(
                ia.iter()
                    .zip(&ib)
                    .map(|(&i, &j)| f(x[i], y[j]))
                    .collect::<Option<_>>()?,
            )
        }
        _ => return None,
    };
    Some(Const { shape, data })
}

fn with_data(c: &Const, shape: Vec<usize>, idx: &[usize]) -> Const {
    let data = match &c.data {
        Data::F32(v) => Data::F32(gather_by(v, idx)),
        Data::I64(v) => Data::I64(gather_by(v, idx)),
    };
    Const { shape, data }
}

fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let x = if a < 0 { a + r } else { a };
    (0..r).contains(&x).then_some(x as usize)
}

/// Evaluates one node on constant inputs; `None` when unsupported.
fn eval(n: &NodeProto, ins: &[&Const]) -> Option<Vec<Const>> {
    let int_attr = |name: &str| attr(n, name).and_then(|a| a.i);
    let one = |c: Const| Some(vec![c]);
    match (op(n), ins) {
        ("Add" | "Sub" | "Mul" | "Div", [a, b]) => one(binary(op(n), a, b)?),
        ("Neg" | "Sqrt" | "Cos" | "Sin" | "Identity", [a]) => match &a.data {
            Data::F32(v) => {
                let f: fn(f32) -> f32 = match op(n) {
                    "Neg" => |x| -x,
                    "Sqrt" => f32::sqrt,
                    "Cos" => f32::cos,
                    "Sin" => f32::sin,
                    _ => |x| x,
                };
                one(Const {
                    shape: a.shape.clone(),
                    data: Data::F32(v.iter().map(|&x| f(x)).collect()),
                })
            }
            Data::I64(v) => match op(n) {
                "Neg" => one(Const {
                    shape: a.shape.clone(),
                    data: Data::I64(v.iter().map(|x| -x).collect()),
                }),
                "Identity" => one((*a).clone()),
                _ => None,
            },
        },
        ("Cast", [a]) => {
            let to = DataType::try_from(int_attr("to")? as i32).ok()?;
            let data = match (&a.data, to) {
                (Data::F32(v), DataType::Float) => Data::F32(v.clone()),
                (Data::I64(v), DataType::Float) => Data::F32(v.iter().map(|&x| x as f32).collect()),
                (Data::I64(v), DataType::Int64) => Data::I64(v.clone()),
                (Data::F32(v), DataType::Int64) => Data::I64(v.iter().map(|&x| x as i64).collect()),
                _ => return None,
            };
            one(Const {
                shape: a.shape.clone(),
                data,
            })
        }
        ("Shape", [a]) if n.attribute.is_empty() => one(Const {
            shape: vec![a.shape.len()],
            data: Data::I64(a.shape.iter().map(|&d| d as i64).collect()),
        }),
        ("Reshape", [a, s]) => {
            let spec = s.i64s()?;
            let mut shape = Vec::with_capacity(spec.len());
            let mut infer = None;
            for (i, &d) in spec.iter().enumerate() {
                match d {
                    0 => shape.push(*a.shape.get(i)?),
                    -1 => {
                        infer = Some(i);
                        shape.push(1);
                    }
                    d if d > 0 => shape.push(d as usize),
                    _ => return None,
                }
            }
            let known: usize = shape.iter().product();
            if let Some(i) = infer {
                if known == 0 || a.len() % known != 0 {
                    return None;
                }
                shape[i] = a.len() / known;
            }
            (shape.iter().product::<usize>() == a.len()).then_some(())?;
            one(Const {
                shape,
                data: a.data.clone(),
            })
        }
        ("Unsqueeze", [a, axes]) => {
            let rank = a.shape.len() + axes.len();
            let mut axes: Vec<usize> = axes
                .i64s()?
                .iter()
                .map(|&x| axis(x, rank))
                .collect::<Option<_>>()?;
            axes.sort_unstable();
            let mut shape = a.shape.clone();
            for ax in axes {
                shape.insert(ax, 1);
            }
            one(Const {
                shape,
                data: a.data.clone(),
            })
        }
        ("Concat", ins) if !ins.is_empty() => {
            let rank = ins[0].shape.len();
            let ax = axis(int_attr("axis")?, rank)?;
            let outer: usize = ins[0].shape[..ax].iter().product();
            let mut shape = ins[0].shape.clone();
            shape[ax] = ins
                .iter()
                .map(|c| c.shape.get(ax).copied())
                .sum::<Option<usize>>()?;
            let mut f = Vec::new();
            let mut i = Vec::new();
            for o in 0..outer {
                for c in ins.iter() {
                    if c.shape.len() != rank {
                        return None;
                    }
                    let inner: usize = c.shape[ax..].iter().product();
                    match &c.data {
                        Data::F32(v) => f.extend_from_slice(&v[o * inner..(o + 1) * inner]),
                        Data::I64(v) => i.extend_from_slice(&v[o * inner..(o + 1) * inner]),
                    }
                }
            }
            let data = match (f.is_empty(), i.is_empty()) {
                (_, true) => Data::F32(f),
                (true, false) => Data::I64(i),
                _ => return None,
            };
            one(Const { shape, data })
        }
        ("Gather", [a, idx]) => {
            let ax = axis(int_attr("axis").unwrap_or(0), a.shape.len())?;
            let indices = idx.i64s()?;
            let dim = a.shape[ax] as i64;
            let outer: usize = a.shape[..ax].iter().product();
            let inner: usize = a.shape[ax + 1..].iter().product();
            let mut map = Vec::new();
            for o in 0..outer {
                for &k in indices {
                    let k = if k < 0 { k + dim } else { k };
                    if !(0..dim).contains(&k) {
                        return None;
                    }
                    let base = (o * a.shape[ax] + k as usize) * inner;
                    map.extend(base..base + inner);
                }
            }
            let mut shape = a.shape[..ax].to_vec();
            shape.extend(&idx.shape);
            shape.extend(&a.shape[ax + 1..]);
            one(with_data(a, shape, &map))
        }
        ("Slice", [a, starts, ends, rest @ ..]) if rest.len() <= 2 => {
            let rank = a.shape.len();
            let axes: Vec<usize> = match rest.first() {
                Some(x) => x
                    .i64s()?
                    .iter()
                    .map(|&v| axis(v, rank))
                    .collect::<Option<_>>()?,
                None => (0..starts.len()).collect(),
            };
            if let Some(steps) = rest.get(1) {
                if steps.i64s()?.iter().any(|&s| s != 1) {
                    return None;
                }
            }
            let mut lo = vec![0usize; rank];
            let mut hi = a.shape.clone();
            for (k, &ax) in axes.iter().enumerate() {
                let dim = a.shape[ax] as i64;
                let clamp = |v: i64| (if v < 0 { v + dim } else { v }).clamp(0, dim) as usize;
                lo[ax] = clamp(*starts.i64s()?.get(k)?);
                hi[ax] = clamp(*ends.i64s()?.get(k)?).max(lo[ax]);
            }
            let shape: Vec<usize> = (0..rank).map(|d| hi[d] - lo[d]).collect();
            let n: usize = shape.iter().product();
            let (src, dst) = (strides(&a.shape), strides(&shape));
            let map: Vec<usize> = (0..n)
                .map(|flat| {
                    (0..rank)
                        .map(|d| ((flat / dst[d]) % shape[d] + lo[d]) * src[d])
                        .sum()
                })
                .collect();
            one(with_data(a, shape, &map))
        }
        ("Transpose", [a]) => {
            let rank = a.shape.len();
            let perm: Vec<usize> = match attr(n, "perm") {
                Some(p) => p
                    .ints
                    .iter()
                    .map(|&x| axis(x, rank))
                    .collect::<Option<_>>()?,
                None => (0..rank).rev().collect(),
            };
            let shape: Vec<usize> = perm.iter().map(|&p| a.shape[p]).collect();
            let (src, dst) = (strides(&a.shape), strides(&shape));
            let map: Vec<usize> = (0..a.len())
                .map(|flat| {
                    (0..rank)
                        .map(|d| ((flat / dst[d]) % shape[d]) * src[perm[d]])
                        .sum()
                })
                .collect();
            one(with_data(a, shape, &map))
        }
        ("Expand", [a, s]) => {
            let target: Vec<usize> = s.i64s()?.iter().map(|&d| d.max(0) as usize).collect();
            let shape = broadcast_shape(&a.shape, &target)?;
            if shape.iter().product::<usize>() > MAX_ELEMENTS {
                return None;
            }
            let map = broadcast_index(&shape, &a.shape);
            one(with_data(a, shape, &map))
        }
        ("Range", [start, limit, delta]) => match (&start.data, &limit.data, &delta.data) {
            (Data::I64(s), Data::I64(l), Data::I64(d)) if d[0] != 0 => {
                let n = ((l[0] - s[0]) as f64 / d[0] as f64).ceil().max(0.0) as usize;
                (n <= MAX_ELEMENTS).then_some(())?;
                one(Const {
                    shape: vec![n],
                    data: Data::I64((0..n as i64).map(|i| s[0] + i * d[0]).collect()),
                })
            }
            _ => None,
        },
        _ => None,
    }
}

pub fn run(g: &mut GraphProto) -> usize {
    let mut consts: HashMap<String, Const> = g
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.clone()?, Const::from_proto(t)?)))
        .collect();
    // Graph inputs shadow initializers of the same name: those are not constant.
    for i in &g.input {
        if let Some(n) = &i.name {
            consts.remove(n);
        }
    }
    let mut folded = vec![false; g.node.len()];
    let mut new_inits = Vec::new();
    for (k, n) in g.node.iter().enumerate() {
        if !n.domain.as_deref().unwrap_or("").is_empty() {
            continue;
        }
        let ins: Option<Vec<&Const>> = n
            .input
            .iter()
            .map(|i| if i.is_empty() { None } else { consts.get(i) })
            .collect();
        let Some(ins) = ins else { continue };
        let Some(outs) = eval(n, &ins) else { continue };
        if outs.len() != n.output.len() || outs.iter().any(|c| c.len() > MAX_ELEMENTS) {
            continue;
        }
        folded[k] = true;
        for (name, c) in n.output.iter().zip(outs) {
            new_inits.push(c.to_proto(name));
            consts.insert(name.clone(), c);
        }
    }
    let count = folded.iter().filter(|&&f| f).count();
    let mut k = 0;
    g.node.retain(|_| {
        k += 1;
        !folded[k - 1]
    });
    // Keep only the new constants something still reads; dead-node removal drops the rest.
    let reads = super::use_counts(g);
    g.initializer.extend(
        new_inits
            .into_iter()
            .filter(|t| t.name.as_ref().is_some_and(|n| reads.contains_key(n))),
    );
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{attr_int, value_info, GraphBuilder};

    fn get(g: &GraphProto, name: &str) -> Const {
        Const::from_proto(
            g.initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(name))
                .expect("folded into an initializer"),
        )
        .unwrap()
    }

    #[test]
    fn folds_constant_chains_and_leaves_inputs_alone() {
        let mut b = GraphBuilder::new(None).unwrap();
        b.inputs.push(value_info("x", DataType::Float, &[]));
        let w = b.const_f32(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let two = b.scalar_f32(2.0);
        let scaled = b.node("Mul", &[&w, &two], vec![]); // [[2,4,6],[8,10,12]]
        let shape = b.const_i64(&[3, -1]);
        let r = b.node("Reshape", &[&scaled, &shape], vec![]); // [3, 2]
        let t = b.node("Transpose", &[&r], vec![]); // [2, 3]
        let axes = b.const_i64(&[0]);
        let u = b.node("Unsqueeze", &[&t, &axes], vec![]); // [1, 2, 3]
        let idx = b.scalar_i64(1);
        let row = b.node("Gather", &[&u, &idx], vec![attr_int("axis", 1)]); // [1, 3]
        b.node_named("Add", &["x", &row], &["y"], vec![]);
        b.outputs.push(value_info("y", DataType::Float, &[]));
        let mut g = b.finish("t").unwrap();
        assert_eq!(run(&mut g), 5);
        assert_eq!(g.node.len(), 1, "only the node reading the input remains");
        let c = get(&g, &row);
        assert_eq!(c.shape, [1, 3]);
        // Reshape [3,2] of [2,4,6,8,10,12] = [[2,4],[6,8],[10,12]]; transposed row 1 = [4,8,12].
        assert_eq!(c.data, Data::F32(vec![4., 8., 12.]));
    }

    #[test]
    fn broadcasting_and_slices() {
        let a = Const {
            shape: vec![2, 1],
            data: Data::I64(vec![10, 20]),
        };
        let b = Const {
            shape: vec![3],
            data: Data::I64(vec![1, 2, 3]),
        };
        let s = binary("Add", &a, &b).unwrap();
        assert_eq!(s.shape, [2, 3]);
        assert_eq!(s.data, Data::I64(vec![11, 12, 13, 21, 22, 23]));
        let node = NodeProto {
            op_type: Some("Slice".into()),
            ..Default::default()
        };
        let starts = Const {
            shape: vec![1],
            data: Data::I64(vec![1]),
        };
        let ends = Const {
            shape: vec![1],
            data: Data::I64(vec![i64::MAX]),
        };
        let axes = Const {
            shape: vec![1],
            data: Data::I64(vec![-1]),
        };
        let out = eval(&node, &[&s, &starts, &ends, &axes]).unwrap();
        assert_eq!(out[0].shape, [2, 2]);
        assert_eq!(out[0].data, Data::I64(vec![12, 13, 22, 23]));
    }
}
