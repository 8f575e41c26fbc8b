//! Float16 conversion (`--dtype fp16` runs it; `--passes ...,float16` too).
//!
//! Pattern: every node that computes on float32 values, except operators that need float32's
//! range or precision ([`KEEP_OPS`]: normalisation, softmax, log-sum-exp, L2 norms,
//! exponentials, angles) and nodes marked [`PRECISION_KEY`] = `fp32` (the emitter marks the
//! residual stream, the rotary angles, MimIC's arithmetic and LIVE). `Cast`, `Shape` and
//! `Constant` nodes are left as they are.
//! Binds: the float32 inputs and outputs of those nodes, the initializers they read, and the
//! graph inputs and outputs the caller names (the KV cache, [`is_cache`]).
//! Rewrite: the nodes compute in float16; an initializer read only by them is stored in
//! float16 (clamped to its finite range), one read by both kinds gets a float16 copy; a
//! `Cast` is inserted wherever a value crosses between the two precisions (one per value and
//! direction); the named graph inputs and outputs become float16, every other graph input and
//! output keeps its type (a `Cast` produces it where needed).
use std::collections::{HashMap, HashSet};

use crate::onnx::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};

use super::{op, types};
use crate::graph::attr_int;

/// The metadata key of a node's precision; value `fp32` keeps the node in float32.
pub const PRECISION_KEY: &str = "mimic.precision";

/// Operators kept in float32 wherever they are.
pub const KEEP_OPS: &[&str] = &[
    "RMSNormalization",
    "LayerNormalization",
    "Softmax",
    "ReduceLogSumExp",
    "ReduceL2",
    "ReduceSumSquare",
    "Exp",
    "Cos",
    "Sin",
    "Range",
];

/// Operators that read any type and compute nothing on their float inputs.
const TYPE_AGNOSTIC: &[&str] = &["Cast", "Shape", "Size", "Constant"];

/// The KV cache's graph inputs and outputs: float16 in a float16 graph.
pub fn is_cache(name: &str) -> bool {
    mimic_models::contract::is_kv_cache(name)
}

/// Whether the node is marked to stay in float32.
pub fn marked_fp32(n: &NodeProto) -> bool {
    n.metadata_props
        .iter()
        .any(|e| e.key.as_deref() == Some(PRECISION_KEY) && e.value.as_deref() == Some("fp32"))
}

/// Runs the pass with the KV cache as the float16 graph inputs and outputs; returns how
/// many nodes now compute in float16.
pub fn run(g: &mut GraphProto) -> usize {
    convert(g, is_cache)
}

const F32: i32 = DataType::Float as i32;
const F16: i32 = DataType::Float16 as i32;

/// Converts `g` to float16 but for the kept nodes; `half_io` names the graph inputs and
/// outputs that become float16.
pub fn convert(g: &mut GraphProto, half_io: impl Fn(&str) -> bool) -> usize {
    let types = types::infer(g);
    let is_f32 = |v: &str| types.get(v) == Some(&F32);
    let half: Vec<bool> = g
        .node
        .iter()
        .map(|n| {
            let kept =
                KEEP_OPS.contains(&op(n)) || TYPE_AGNOSTIC.contains(&op(n)) || marked_fp32(n);
            !kept && n.input.iter().chain(&n.output).any(|v| is_f32(v))
        })
        .collect();
    let converted = half.iter().filter(|&&h| h).count();
    if converted == 0 {
        return 0;
    }

    // The precision each value has after the rewrite, starting with graph inputs.
    let mut now: HashMap<String, i32> = HashMap::new();
    for v in g.input.iter_mut() {
        let Some(name) = v.name.clone() else { continue };
        if is_f32(&name) && half_io(&name) {
            types::set_declared(v, DataType::Float16);
            now.insert(name, F16);
        } else if let Some(&t) = types.get(&name) {
            now.insert(name, t);
        }
    }

    // Initializers: float16 in place when only float16 nodes compute on them.
    let mut readers: HashMap<&str, (usize, usize)> = HashMap::new(); // (half, float32) readers
    for (n, &h) in g.node.iter().zip(&half) {
        if TYPE_AGNOSTIC.contains(&op(n)) {
            continue;
        }
        for x in n.input.iter().filter(|x| is_f32(x)) {
            let e = readers.entry(x.as_str()).or_default();
            if h {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }
    let in_place: HashSet<String> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .filter(|n| is_f32(n) && matches!(readers.get(n.as_str()), Some(&(h, 0)) if h > 0))
        .collect();
    drop(readers);
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, t) in g.initializer.iter_mut().enumerate() {
        let Some(name) = t.name.clone() else { continue };
        if in_place.contains(&name) && to_f16(t) {
            now.insert(name.clone(), F16);
        } else if let Some(dt) = t.data_type {
            now.insert(name.clone(), dt);
        }
        index.insert(name, i);
    }

    // Graph outputs whose producer computes in the other precision: the producer writes
    // `<name>.<type>` and a Cast makes the output.
    let mut out_cast: HashMap<String, i32> = HashMap::new();
    for o in g.output.iter_mut() {
        let Some(name) = o.name.clone() else { continue };
        if !is_f32(&name) {
            continue;
        }
        let want = if half_io(&name) { F16 } else { F32 };
        if want == F16 {
            types::set_declared(o, DataType::Float16);
        }
        out_cast.insert(name, want);
    }

    let old = std::mem::take(&mut g.node);
    let mut nodes = Vec::with_capacity(old.len() + old.len() / 4);
    let mut casts: HashMap<(String, i32), String> = HashMap::new();
    // Graph outputs renamed at their producer, for the nodes after it that read them.
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut copies = Vec::new();
    for (mut n, h) in old.into_iter().zip(half) {
        let need = if h { F16 } else { F32 };
        for x in n.input.iter_mut() {
            if let Some(inner) = renamed.get(x.as_str()) {
                *x = inner.clone();
            }
        }
        if !TYPE_AGNOSTIC.contains(&op(&n)) {
            for x in n.input.iter_mut() {
                let t = match now.get(x.as_str()) {
                    Some(&t) if t == F32 || t == F16 => t,
                    _ => continue,
                };
                if t == need {
                    continue;
                }
                let key = (x.clone(), need);
                if let Some(c) = casts.get(&key) {
                    *x = c.clone();
                    continue;
                }
                let c = format!("{x}.{}", if need == F16 { "f16" } else { "f32" });
                let constant = index.get(x.as_str()).map(|&i| &g.initializer[i]);
                match constant.filter(|_| need == F16).cloned() {
                    // A constant read in both precisions: a float16 copy.
                    Some(mut copy) => {
                        copy.name = Some(c.clone());
                        if to_f16(&mut copy) {
                            copies.push(copy);
                        } else {
                            nodes.push(cast(x, &c, need));
                        }
                    }
                    None => nodes.push(cast(x, &c, need)),
                }
                now.insert(c.clone(), need);
                casts.insert(key, c.clone());
                *x = c;
            }
        }
        let produced = types::output_type(&n, |x| now.get(x).copied());
        let mut after = Vec::new();
        for o in n.output.iter_mut().filter(|o| !o.is_empty()) {
            // An output of unknown type is left as it is (and read as it is).
            let Some(t) = produced else { continue };
            match out_cast.get(o.as_str()) {
                Some(&want) if t != want && (t == F32 || t == F16) => {
                    let inner = format!("{o}.{}", if t == F16 { "f16" } else { "f32" });
                    after.push(cast(&inner, o, want));
                    now.insert(inner.clone(), t);
                    renamed.insert(o.clone(), inner.clone());
                    *o = inner;
                }
                _ => {
                    now.insert(o.clone(), t);
                }
            }
        }
        nodes.push(n);
        nodes.extend(after);
    }
    g.node = nodes;
    g.initializer.extend(copies);
    converted
}

fn cast(from: &str, to: &str, elem: i32) -> NodeProto {
    NodeProto {
        name: Some(format!("Cast_{to}")),
        op_type: Some("Cast".into()),
        input: vec![from.into()],
        output: vec![to.into()],
        attribute: vec![attr_int("to", elem as i64)],
        ..Default::default()
    }
}

/// Stores a float32 tensor as float16, clamped to float16's finite range (a mask's large
/// negative value stays finite). False (and unchanged) when its data is not in the proto.
fn to_f16(t: &mut TensorProto) -> bool {
    if t.data_type != Some(F32) {
        return false;
    }
    let values: Vec<f32> = match (&t.raw_data, t.float_data.is_empty()) {
        (Some(raw), _) => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        (None, false) => t.float_data.clone(),
        (None, true) if !t.external_data.is_empty() => return false,
        (None, true) => vec![],
    };
    let max = half::f16::MAX.to_f32();
    t.raw_data = Some(
        values
            .iter()
            .flat_map(|&x| half::f16::from_f32(x.clamp(-max, max)).to_le_bytes())
            .collect(),
    );
    t.float_data.clear();
    t.data_type = Some(F16);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{attr_int, value_info, Dim, GraphBuilder};
    use crate::onnx::StringStringEntryProto;

    fn count(g: &GraphProto, op_type: &str) -> usize {
        g.node.iter().filter(|n| op(n) == op_type).count()
    }

    fn init<'a>(g: &'a GraphProto, name: &str) -> &'a TensorProto {
        g.initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no initializer {name}"))
    }

    fn f16_values(t: &TensorProto) -> Vec<f32> {
        assert_eq!(t.data_type, Some(F16));
        t.raw_data
            .as_ref()
            .unwrap()
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()
    }

    /// `y = softmax(x W1) W2`: products in float16, softmax in float32, `y` stays float32.
    #[test]
    fn products_go_to_float16_and_softmax_stays_float32() {
        let mut b = GraphBuilder::new(None).unwrap();
        b.inputs.push(value_info(
            "x",
            DataType::Float,
            &[Dim::Fixed(1), Dim::Fixed(2)],
        ));
        let w1 = b.weight("w1", &[2, 2], &[1.0, 2.0, 3.0, 1e-3]).unwrap();
        let w2 = b.weight("w2", &[2, 1], &[0.5, -70000.0]).unwrap();
        let h = b.node("MatMul", &["x", &w1], vec![]);
        let p = b.node("Softmax", &[&h], vec![attr_int("axis", -1)]);
        b.node_named("MatMul", &[&p, &w2], &["y"], vec![]);
        b.outputs.push(value_info(
            "y",
            DataType::Float,
            &[Dim::Fixed(1), Dim::Fixed(1)],
        ));
        let mut g = b.finish("t").unwrap();
        assert_eq!(run(&mut g), 2, "the two MatMuls");
        // x -> f16, MatMul -> f32 for Softmax, back to f16, and y out in f32.
        assert_eq!(count(&g, "Cast"), 4);
        assert_eq!(f16_values(init(&g, "w1")), [1.0, 2.0, 3.0, 0.0010004044]);
        // Beyond float16's range: clamped to its largest finite value, not infinity.
        assert_eq!(f16_values(init(&g, "w2")), [0.5, -65504.0]);
        assert!(
            types::mismatches(&g).is_empty(),
            "{:?}",
            types::mismatches(&g)
        );
        let t = types::infer(&g);
        let softmax = g.node.iter().find(|n| op(n) == "Softmax").unwrap();
        assert_eq!(t[&softmax.input[0]], F32);
        assert_eq!(t["y"], F32, "the graph output keeps its type");
        assert_eq!(types::declared(&g.output[0]), Some(F32));
        assert_eq!(run(&mut g), 0, "a second run finds nothing in float32");
    }

    /// A node marked fp32 stays float32: its float16 input is cast up and its constant kept.
    #[test]
    fn marked_nodes_stay_float32_and_constants_read_twice_are_copied() {
        let mut b = GraphBuilder::new(None).unwrap();
        b.inputs
            .push(value_info("x", DataType::Float, &[Dim::Fixed(2)]));
        let c = b.scalar_f32(3.0);
        let m = b.node("Mul", &["x", &c], vec![]);
        b.node_named("Add", &[&m, &c], &["y"], vec![]);
        b.outputs
            .push(value_info("y", DataType::Float, &[Dim::Fixed(2)]));
        let mut g = b.finish("t").unwrap();
        g.node[1].metadata_props.push(StringStringEntryProto {
            key: Some(PRECISION_KEY.into()),
            value: Some("fp32".into()),
        });
        assert_eq!(run(&mut g), 1, "only the Mul");
        let t = types::infer(&g);
        let add = g.node.iter().find(|n| op(n) == "Add").unwrap();
        assert_eq!((t[&add.input[0]], t[&add.input[1]]), (F32, F32));
        let mul = g.node.iter().find(|n| op(n) == "Mul").unwrap();
        assert_eq!((t[&mul.input[0]], t[&mul.input[1]]), (F16, F16));
        // The constant: float32 for the Add, a float16 copy (not a Cast node) for the Mul.
        assert_eq!(init(&g, &c).data_type, Some(F32));
        assert_eq!(f16_values(init(&g, &mul.input[1])), [3.0]);
        // x cast down, the Mul's output cast up: two Casts.
        assert_eq!(count(&g, "Cast"), 2);
        assert!(
            types::mismatches(&g).is_empty(),
            "{:?}",
            types::mismatches(&g)
        );
    }

    /// The KV cache's inputs and outputs become float16, also where a float32 node makes the
    /// output; an output read inside the graph keeps its readers.
    #[test]
    fn cache_inputs_and_outputs_become_float16() {
        let mut b = GraphBuilder::new(None).unwrap();
        let d = [Dim::Fixed(1), Dim::Fixed(2)];
        b.inputs
            .push(value_info("past_key_values.0.key", DataType::Float, &d));
        b.inputs.push(value_info("k", DataType::Float, &d));
        b.inputs
            .push(value_info("past_key_values.1.key", DataType::Float, &d));
        b.node_named(
            "Concat",
            &["past_key_values.0.key", "k"],
            &["present.0.key"],
            vec![attr_int("axis", 0)],
        );
        // Layer 1's cache is made by a float32 (marked) node and read again inside.
        b.node_named(
            "Concat",
            &["past_key_values.1.key", "k"],
            &["present.1.key"],
            vec![attr_int("axis", 0)],
        );
        b.node_named("Neg", &["present.1.key"], &["y"], vec![]);
        b.outputs
            .push(value_info("present.0.key", DataType::Float, &d));
        b.outputs
            .push(value_info("present.1.key", DataType::Float, &d));
        b.outputs.push(value_info("y", DataType::Float, &d));
        let mut g = b.finish("t").unwrap();
        g.node[1].metadata_props.push(StringStringEntryProto {
            key: Some(PRECISION_KEY.into()),
            value: Some("fp32".into()),
        });
        run(&mut g);
        for v in g
            .input
            .iter()
            .filter(|v| is_cache(v.name.as_deref().unwrap()))
        {
            assert_eq!(types::declared(v), Some(F16));
        }
        let declared: Vec<_> = g.output.iter().map(types::declared).collect();
        assert_eq!(declared, [Some(F16), Some(F16), Some(F32)]);
        assert!(
            types::mismatches(&g).is_empty(),
            "{:?}",
            types::mismatches(&g)
        );
        let t = types::infer(&g);
        assert_eq!(
            (t["present.0.key"], t["present.1.key"], t["y"]),
            (F16, F16, F32)
        );
        // Neg reads the float32 value its producer made, not the cast output.
        let neg = g.node.iter().find(|n| op(n) == "Neg").unwrap();
        assert_ne!(neg.input[0], "present.1.key");
        // ... and that value is made before the Neg (the graph stays in topological order).
        let reader = g.node.iter().position(|n| op(n) == "Neg").unwrap();
        assert!(g.node[..reader]
            .iter()
            .any(|n| n.output.contains(&neg.input[0])));
    }
}
