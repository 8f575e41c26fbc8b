//! Attention fusion.
//!
//! Pattern (4-D heads `[batch, heads, seq, dim]`):
//! `MatMul(q, Transpose(K, perm [0, 1, 3, 2]))`, then an optional `Mul` by (or `Div` by) a
//! scalar constant, an optional `Add` of a mask, `Softmax` over the last axis, and
//! `MatMul(., V)`. Grouped-query attention as the compiler's unfused form writes it is matched
//! too: queries reshaped to `[batch, kv_heads, G * seq, dim]` before the first MatMul and the
//! scores reshaped per head around the softmax and back after the second.
//! Binds: `q`, `K`, `V`, the scale and the mask. Every intermediate value must have no other
//! reader. Rewrite: one `Attention` operator (opset 23, `is_causal = 0`, the bound scale and
//! mask), whose output replaces the last node's.
use std::collections::HashMap;

use super::{attr, op, producers, use_counts};
use crate::graph::{attr_float, attr_int};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::{GraphProto, NodeProto, TensorProto};

/// What a match binds.
#[derive(Debug)]
struct Bound {
    q: String,
    k: String,
    v: String,
    mask: Option<String>,
    scale: f32,
    /// The value the fused node produces (the last matched node's output).
    out: String,
    /// The matched nodes.
    nodes: Vec<usize>,
}

fn scalar_f32(t: &TensorProto) -> Option<f32> {
    if t.data_type != Some(DataType::Float as i32) || t.dims.iter().product::<i64>() != 1 {
        return None;
    }
    match t.raw_data.as_deref() {
        Some(r) if r.len() == 4 => Some(f32::from_le_bytes([r[0], r[1], r[2], r[3]])),
        _ => t.float_data.first().copied(),
    }
}

fn ints(t: &TensorProto) -> Option<Vec<i64>> {
    if t.data_type != Some(DataType::Int64 as i32) {
        return None;
    }
    Some(match t.raw_data.as_deref() {
        Some(r) => r
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        None => t.int64_data.clone(),
    })
}

struct Graph<'a> {
    g: &'a GraphProto,
    producer: HashMap<String, usize>,
    uses: HashMap<String, usize>,
    consts: HashMap<&'a str, &'a TensorProto>,
}

impl<'a> Graph<'a> {
    /// The node producing `value`, if `value` has exactly one reader.
    fn single_use_producer(&self, value: &str) -> Option<(usize, &'a NodeProto)> {
        if self.uses.get(value).copied() != Some(1) {
            return None;
        }
        let i = *self.producer.get(value)?;
        Some((i, &self.g.node[i]))
    }

    /// The node reading `value`, if it is the only reader.
    fn only_consumer(&self, value: &str) -> Option<(usize, &'a NodeProto)> {
        if self.uses.get(value).copied() != Some(1) {
            return None;
        }
        self.g
            .node
            .iter()
            .enumerate()
            .find(|(_, n)| n.input.iter().any(|i| i == value))
    }

    fn reshape_to(&self, n: &NodeProto) -> Option<Vec<i64>> {
        (op(n) == "Reshape")
            .then(|| self.consts.get(n.input.get(1)?.as_str()))
            .flatten()
            .and_then(|t| ints(t))
    }
}

fn try_match(gr: &Graph, softmax: usize) -> Option<Bound> {
    let g = gr.g;
    let sm = &g.node[softmax];
    let axis = attr(sm, "axis").and_then(|a| a.i).unwrap_or(-1);
    if axis != -1 && axis != 3 {
        return None;
    }
    let mut nodes = vec![softmax];
    // Backwards: [Add mask] <- [Mul|Div scale] <- [Reshape per head] <- MatMul(q, Transpose K).
    let mut value = sm.input.first()?.clone();
    let mut mask = None;
    let (mut i, mut n) = gr.single_use_producer(&value)?;
    if op(n) == "Add" {
        let (a, b) = (&n.input[0], &n.input[1]);
        let chain_first = gr
            .producer
            .get(a)
            .is_some_and(|&p| matches!(op(&g.node[p]), "Mul" | "Div" | "MatMul" | "Reshape"));
        let (chain, m) = if chain_first { (a, b) } else { (b, a) };
        mask = Some(m.clone());
        nodes.push(i);
        value = chain.clone();
        (i, n) = gr.single_use_producer(&value)?;
    }
    let mut scale = 1.0f32;
    if matches!(op(n), "Mul" | "Div") {
        let (a, b) = (&n.input[0], &n.input[1]);
        let (chain, c) = match (gr.consts.get(b.as_str()), gr.consts.get(a.as_str())) {
            (Some(c), _) => (a, *c),
            (None, Some(c)) if op(n) == "Mul" => (b, *c),
            _ => return None,
        };
        let s = scalar_f32(c)?;
        scale = if op(n) == "Mul" { s } else { 1.0 / s };
        nodes.push(i);
        value = chain.clone();
        (i, n) = gr.single_use_producer(&value)?;
    }
    let grouped = op(n) == "Reshape";
    if grouped {
        // [B, KV, G*T, S] -> [B, H, T, S]
        let to = gr.reshape_to(n)?;
        if to.len() != 4 || to[0] != 0 || to[2] != -1 || to[3] != 0 {
            return None;
        }
        nodes.push(i);
        value = n.input[0].clone();
        (i, n) = gr.single_use_producer(&value)?;
    }
    if op(n) != "MatMul" {
        return None;
    }
    nodes.push(i);
    let (qv, kt) = (&n.input[0], &n.input[1]);
    let (ti, tn) = gr.single_use_producer(kt)?;
    let perm = attr(tn, "perm")?.ints.clone();
    if op(tn) != "Transpose" || perm != [0, 1, 3, 2] {
        return None;
    }
    nodes.push(ti);
    let k = tn.input[0].clone();
    let q = if grouped {
        let (ri, rn) = gr.single_use_producer(qv)?;
        let to = gr.reshape_to(rn)?;
        if to.len() != 4 || to[0] != 0 || to[2] != -1 {
            return None;
        }
        nodes.push(ri);
        rn.input[0].clone()
    } else {
        qv.clone()
    };
    // Forwards: Softmax -> [Reshape grouped] -> MatMul(., V) -> [Reshape per head].
    let mut value = sm.output.first()?.clone();
    if grouped {
        let (ri, rn) = gr.only_consumer(&value)?;
        let to = gr.reshape_to(rn)?;
        if to.len() != 4 || to[0] != 0 || to[2] != -1 || to[3] != 0 {
            return None;
        }
        nodes.push(ri);
        value = rn.output[0].clone();
    }
    let (mi, mn) = gr.only_consumer(&value)?;
    if op(mn) != "MatMul" || mn.input[0] != value {
        return None;
    }
    nodes.push(mi);
    let v = mn.input[1].clone();
    let mut out = mn.output[0].clone();
    if grouped {
        let (ri, rn) = gr.only_consumer(&out)?;
        let to = gr.reshape_to(rn)?;
        if to.len() != 4 || to[0] != 0 || to[2] != -1 {
            return None;
        }
        nodes.push(ri);
        out = rn.output[0].clone();
    }
    Some(Bound {
        q,
        k,
        v,
        mask,
        scale,
        out,
        nodes,
    })
}

pub fn run(g: &mut GraphProto) -> usize {
    let bound: Vec<Bound> = {
        let gr = Graph {
            g,
            producer: producers(g),
            uses: use_counts(g),
            consts: g
                .initializer
                .iter()
                .filter_map(|t| Some((t.name.as_deref()?, t)))
                .collect(),
        };
        (0..g.node.len())
            .filter(|&i| op(&g.node[i]) == "Softmax")
            .filter_map(|i| try_match(&gr, i))
            .collect()
    };
    let mut remove = vec![false; g.node.len()];
    let mut replace: HashMap<usize, NodeProto> = HashMap::new();
    for (k, b) in bound.iter().enumerate() {
        if b.nodes.iter().any(|&i| remove[i]) {
            continue;
        }
        for &i in &b.nodes {
            remove[i] = true;
        }
        let mut inputs = vec![b.q.clone(), b.k.clone(), b.v.clone()];
        if let Some(m) = &b.mask {
            inputs.push(m.clone());
        }
        let last = *b.nodes.iter().max().expect("a match has nodes");
        replace.insert(
            last,
            NodeProto {
                name: Some(format!("FusedAttention_{k}")),
                op_type: Some("Attention".into()),
                input: inputs,
                output: vec![b.out.clone()],
                attribute: vec![attr_int("is_causal", 0), attr_float("scale", b.scale)],
                ..Default::default()
            },
        );
    }
    let count = replace.len();
    let old = std::mem::take(&mut g.node);
    for (i, n) in old.into_iter().enumerate() {
        if let Some(fused) = replace.remove(&i) {
            g.node.push(fused);
        } else if !remove[i] {
            g.node.push(n);
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{attr_ints, value_info, Dim, GraphBuilder};

    /// The plain (not grouped) pattern, with a Div scale and a mask.
    #[test]
    fn fuses_matmul_softmax_matmul() {
        let mut b = GraphBuilder::new(None).unwrap();
        let dims = [Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(3), Dim::Fixed(4)];
        for x in ["q", "k", "v"] {
            b.inputs.push(value_info(x, DataType::Float, &dims));
        }
        b.inputs.push(value_info("mask", DataType::Float, &[]));
        let kt = b.node("Transpose", &["k"], vec![attr_ints("perm", &[0, 1, 3, 2])]);
        let s = b.node("MatMul", &["q", &kt], vec![]);
        let two = b.scalar_f32(2.0);
        let s = b.node("Div", &[&s, &two], vec![]);
        let s = b.node("Add", &[&s, "mask"], vec![]);
        let p = b.node("Softmax", &[&s], vec![attr_int("axis", -1)]);
        b.node_named("MatMul", &[&p, "v"], &["y"], vec![]);
        b.outputs.push(value_info("y", DataType::Float, &dims));
        let mut g = b.finish("t").unwrap();
        assert_eq!(run(&mut g), 1);
        assert_eq!(g.node.len(), 1);
        let n = &g.node[0];
        assert_eq!(op(n), "Attention");
        assert_eq!(n.input, ["q", "k", "v", "mask"]);
        assert_eq!(n.output, ["y"]);
        assert_eq!(attr(n, "scale").and_then(|a| a.f), Some(0.5));
    }

    /// A softmax whose scores are read elsewhere too is left alone.
    #[test]
    fn leaves_shared_intermediates() {
        let mut b = GraphBuilder::new(None).unwrap();
        for x in ["q", "k", "v"] {
            b.inputs.push(value_info(x, DataType::Float, &[]));
        }
        let kt = b.node("Transpose", &["k"], vec![attr_ints("perm", &[0, 1, 3, 2])]);
        let s = b.node("MatMul", &["q", &kt], vec![]);
        let p = b.node("Softmax", &[&s], vec![attr_int("axis", -1)]);
        b.node_named("MatMul", &[&p, "v"], &["y"], vec![]);
        b.node_named("Identity", &[&s], &["scores"], vec![]);
        b.outputs.push(value_info("y", DataType::Float, &[]));
        b.outputs.push(value_info("scores", DataType::Float, &[]));
        let mut g = b.finish("t").unwrap();
        assert_eq!(run(&mut g), 0);
        assert_eq!(g.node.len(), 5);
    }
}
