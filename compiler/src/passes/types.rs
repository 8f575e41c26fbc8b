//! Element types of a graph's values, inferred from its inputs, initializers and operators:
//! what the float16 pass converts and what the structural check compares.
use std::collections::HashMap;

use crate::onnx::{tensor_proto::DataType, type_proto, GraphProto, NodeProto, ValueInfoProto};

use super::{attr, op};

/// The element type (`DataType as i32`) a value info declares, if any.
pub fn declared(v: &ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
    }
}

/// Sets the element type a value info declares.
pub fn set_declared(v: &mut ValueInfoProto, elem: DataType) {
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(elem as i32);
    }
}

/// The element type of a node's outputs given its inputs' (`None` where unknown).
pub fn output_type(n: &NodeProto, input: impl Fn(&str) -> Option<i32>) -> Option<i32> {
    let bool_t = DataType::Bool as i32;
    match op(n) {
        "Cast" => attr(n, "to").and_then(|a| a.i).map(|t| t as i32),
        "Shape" | "Size" => Some(DataType::Int64 as i32),
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "And" | "Or" | "Xor"
        | "Not" | "IsNaN" | "IsInf" => Some(bool_t),
        "Where" => n.input.get(1).and_then(|x| input(x)),
        "Constant" => attr(n, "value")
            .and_then(|a| a.t.as_ref())
            .and_then(|t| t.data_type),
        // Every other operator the emitter uses keeps its first input's type.
        _ => n
            .input
            .iter()
            .find(|x| !x.is_empty())
            .and_then(|x| input(x)),
    }
}

/// Every value's element type, from the graph inputs and initializers forward through the
/// nodes (which are in topological order).
pub fn infer(g: &GraphProto) -> HashMap<String, i32> {
    let mut types = HashMap::new();
    for v in &g.input {
        if let (Some(name), Some(t)) = (&v.name, declared(v)) {
            types.insert(name.clone(), t);
        }
    }
    for t in &g.initializer {
        if let (Some(name), Some(dt)) = (&t.name, t.data_type) {
            types.insert(name.clone(), dt);
        }
    }
    for n in &g.node {
        if let Some(t) = output_type(n, |x| types.get(x).copied()) {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                types.insert(o.clone(), t);
            }
        }
    }
    types
}

/// Inputs that an operator requires to share one element type (by position; `None` is
/// every input).
fn same_type_inputs(op: &str) -> Option<&'static [usize]> {
    match op {
        "Add" | "Sub" | "Mul" | "Div" | "MatMul" | "Max" | "Min" | "Concat" | "Sum" => Some(&[]),
        "Where" => Some(&[1, 2]),
        // Query, key, value and the past cache; the mask may be boolean.
        "Attention" => Some(&[0, 1, 2, 4, 5]),
        "RotaryEmbedding" => Some(&[0, 1, 2]),
        // mimic's kernel: float32 throughout.
        "MimicAttention" => Some(&[]),
        _ => None,
    }
}

/// Where the graph's types disagree: inputs of one operator that must share a type and do
/// not, and graph outputs whose declared type is not the one computed.
pub fn mismatches(g: &GraphProto) -> Vec<String> {
    let types = infer(g);
    let name = |t: i32| {
        DataType::try_from(t)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| t.to_string())
    };
    let mut problems = Vec::new();
    for n in &g.node {
        let Some(slots) = same_type_inputs(op(n)) else {
            continue;
        };
        let picked: Vec<(&String, i32)> = n
            .input
            .iter()
            .enumerate()
            .filter(|(i, x)| !x.is_empty() && (slots.is_empty() || slots.contains(i)))
            .filter_map(|(_, x)| types.get(x).map(|&t| (x, t)))
            .collect();
        if let Some((_, first)) = picked.first() {
            if let Some((x, t)) = picked.iter().find(|(_, t)| t != first) {
                problems.push(format!(
                    "{} `{}`: input {x} is {} where the others are {}",
                    op(n),
                    n.name.as_deref().unwrap_or(""),
                    name(*t),
                    name(*first)
                ));
            }
        }
    }
    for o in &g.output {
        let (Some(n), Some(want)) = (&o.name, declared(o)) else {
            continue;
        };
        if let Some(&got) = types.get(n) {
            if got != want {
                problems.push(format!(
                    "graph output {n} is declared {} but computed {}",
                    name(want),
                    name(got)
                ));
            }
        }
    }
    problems
}
