//! A structural check of an emitted model before it is written: versions ONNX Runtime 1.30
//! accepts, every value defined before use, every output produced, known operators with a
//! plausible number of inputs, initializers whose data matches their shape, and element types
//! that agree (an operator's inputs, a graph output's declared type).
use std::collections::HashSet;

use crate::graph::{IR_VERSION, KERNEL_ATTENTION, KERNEL_DOMAIN, KERNEL_DOMAIN_VERSION, OPSET};
use crate::onnx::{tensor_proto::DataLocation, tensor_proto::DataType, ModelProto};

/// Operators the emitter may use, with their (min, max) input counts.
const OPERATORS: &[(&str, usize, usize)] = &[
    ("Add", 2, 2),
    ("And", 2, 2),
    ("Attention", 3, 7),
    ("Cast", 1, 1),
    ("Concat", 1, usize::MAX),
    ("Conv", 2, 3),
    ("Cos", 1, 1),
    ("CumSum", 2, 2),
    ("Div", 2, 2),
    ("Equal", 2, 2),
    ("Exp", 1, 1),
    ("Expand", 2, 2),
    ("Gather", 2, 2),
    ("Gelu", 1, 1),
    ("GreaterOrEqual", 2, 2),
    ("Identity", 1, 1),
    ("Less", 2, 2),
    ("LayerNormalization", 2, 3),
    ("LessOrEqual", 2, 2),
    ("MatMul", 2, 2),
    ("Max", 1, usize::MAX),
    ("Mul", 2, 2),
    ("Neg", 1, 1),
    ("Pad", 2, 4),
    ("Pow", 2, 2),
    ("Range", 3, 3),
    ("ReduceL2", 1, 2),
    ("ReduceLogSumExp", 1, 2),
    ("ReduceMean", 1, 2),
    ("ReduceSum", 1, 2),
    ("RMSNormalization", 2, 2),
    ("Relu", 1, 1),
    ("Reshape", 2, 2),
    ("RotaryEmbedding", 3, 4),
    ("Shape", 1, 1),
    ("Sigmoid", 1, 1),
    ("Sin", 1, 1),
    ("Slice", 3, 5),
    ("Softmax", 1, 1),
    ("Split", 1, 2),
    ("Sqrt", 1, 1),
    ("Sub", 2, 2),
    ("Tanh", 1, 1),
    ("Transpose", 1, 1),
    ("Unsqueeze", 2, 2),
    ("Where", 3, 3),
];

/// The highest IR version and default-domain opset ONNX Runtime 1.30 loads.
const MAX_IR: i64 = 13;
const MAX_OPSET: i64 = 26;

fn element_size(dtype: i32) -> Option<usize> {
    match DataType::try_from(dtype).ok()? {
        DataType::Float | DataType::Int32 => Some(4),
        DataType::Int64 | DataType::Double => Some(8),
        DataType::Float16 | DataType::Bfloat16 => Some(2),
        DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
        _ => None,
    }
}

/// Returns every problem found (empty when the model passes).
pub fn check_model(model: &ModelProto) -> Vec<String> {
    let mut problems = Vec::new();
    let ir = model.ir_version.unwrap_or(0);
    if !(IR_VERSION..=MAX_IR).contains(&ir) {
        problems.push(format!("IR version {ir} outside {IR_VERSION}..={MAX_IR}"));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.as_deref().unwrap_or("").is_empty())
        .and_then(|o| o.version);
    match opset {
        Some(v) if (OPSET..=MAX_OPSET).contains(&v) => {}
        other => problems.push(format!(
            "default-domain opset {other:?} outside {OPSET}..={MAX_OPSET}"
        )),
    }
    let Some(graph) = &model.graph else {
        problems.push("model has no graph".into());
        return problems;
    };
    let mut defined: HashSet<&str> = HashSet::new();
    for vi in &graph.input {
        let name = vi.name.as_deref().unwrap_or("");
        if vi.r#type.is_none() {
            problems.push(format!("graph input {name} has no type"));
        }
        defined.insert(name);
    }
    for t in &graph.initializer {
        let name = t.name.as_deref().unwrap_or("");
        if !defined.insert(name) {
            problems.push(format!("initializer {name} defined twice"));
        }
        let numel: i64 = t.dims.iter().product();
        if t.dims.iter().any(|&d| d < 0) {
            problems.push(format!(
                "initializer {name} has a negative dimension {:?}",
                t.dims
            ));
            continue;
        }
        let Some(size) = t.data_type.and_then(element_size) else {
            problems.push(format!(
                "initializer {name} has an unsupported type {:?}",
                t.data_type
            ));
            continue;
        };
        let expected = numel as usize * size;
        let actual = if t.data_location == Some(DataLocation::External as i32) {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some("length"))
                .and_then(|e| e.value.as_deref()?.parse::<usize>().ok())
        } else {
            t.raw_data.as_ref().map(Vec::len)
        };
        if actual != Some(expected) {
            problems.push(format!(
                "initializer {name}: {actual:?} bytes of data for shape {:?} ({expected} expected)",
                t.dims
            ));
        }
    }
    let kernel_imported = model.opset_import.iter().any(|o| {
        o.domain.as_deref() == Some(KERNEL_DOMAIN) && o.version == Some(KERNEL_DOMAIN_VERSION)
    });
    for node in &graph.node {
        let op = node.op_type.as_deref().unwrap_or("");
        let domain = node.domain.as_deref().unwrap_or("");
        let label = format!("node {} ({op})", node.name.as_deref().unwrap_or("?"));
        if domain.is_empty() {
            match OPERATORS.iter().find(|(name, _, _)| *name == op) {
                None => problems.push(format!("{label}: operator not in the emitter's set")),
                Some((_, lo, hi)) if node.input.len() < *lo || node.input.len() > *hi => problems
                    .push(format!(
                        "{label}: {} inputs, expected {lo}..={hi}",
                        node.input.len()
                    )),
                _ => {}
            }
        } else if domain == KERNEL_DOMAIN {
            // mimic's kernel: the Attention operator's six inputs, with MimIC heads nine.
            use mimic_models::kernel_op::{HEADS_INPUTS, INPUTS, OUTPUTS};
            let with_heads = INPUTS + HEADS_INPUTS;
            if op != KERNEL_ATTENTION {
                problems.push(format!("{label}: not an operator of domain {domain}"));
            } else if ![INPUTS, with_heads].contains(&node.input.len())
                || node.output.len() != OUTPUTS
            {
                problems.push(format!(
                    "{label}: {} inputs and {} outputs, expected {INPUTS} or {with_heads} and {OUTPUTS}",
                    node.input.len(),
                    node.output.len()
                ));
            }
            if !kernel_imported {
                problems.push(format!(
                    "{label}: domain {domain} version {KERNEL_DOMAIN_VERSION} is not imported"
                ));
            }
        } else if domain == crate::blocks::MS_DOMAIN {
            // ONNX Runtime's contrib operators the emitter uses: MatMulNBits (A, B, scales,
            // zero points).
            if op != "MatMulNBits" || !(3..=4).contains(&node.input.len()) {
                problems.push(format!(
                    "{label}: not an operator of domain {domain} the emitter uses (MatMulNBits, 3-4 inputs)"
                ));
            }
            if !model
                .opset_import
                .iter()
                .any(|o| o.domain.as_deref() == Some(crate::blocks::MS_DOMAIN))
            {
                problems.push(format!("{label}: domain {domain} is not imported"));
            }
        } else {
            problems.push(format!("{label}: unknown operator domain {domain}"));
        }
        for input in &node.input {
            if !input.is_empty() && !defined.contains(input.as_str()) {
                problems.push(format!(
                    "{label}: input {input} is used before it is defined"
                ));
            }
        }
        for output in &node.output {
            if !output.is_empty() && !defined.insert(output.as_str()) {
                problems.push(format!("{label}: output {output} is defined twice"));
            }
        }
    }
    for vi in &graph.output {
        let name = vi.name.as_deref().unwrap_or("");
        if !defined.contains(name) {
            problems.push(format!("graph output {name} is never produced"));
        }
        if vi.r#type.is_none() {
            problems.push(format!("graph output {name} has no type"));
        }
    }
    problems.extend(crate::passes::types::mismatches(graph));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{value_info, Dim, GraphBuilder};
    use crate::onnx::OperatorSetIdProto;

    fn model(g: GraphBuilder) -> ModelProto {
        ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            }],
            graph: Some(g.finish("t").unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_well_formed_graph_and_names_each_problem() {
        let mut g = GraphBuilder::new(None).unwrap();
        g.inputs
            .push(value_info("x", DataType::Float, &[Dim::Named("n")]));
        let y = g.node("Sigmoid", &["x"], vec![]);
        g.node_named("Neg", &[&y], &["out"], vec![]);
        g.outputs
            .push(value_info("out", DataType::Float, &[Dim::Named("n")]));
        assert!(check_model(&model(g)).is_empty());

        let mut g = GraphBuilder::new(None).unwrap();
        g.inputs
            .push(value_info("x", DataType::Float, &[Dim::Named("n")]));
        g.node_named("Neg", &["nowhere"], &["a"], vec![]);
        g.node_named("FancyOp", &["x"], &["b"], vec![]);
        g.node_named("Add", &["x"], &["c"], vec![]);
        g.outputs
            .push(value_info("out", DataType::Float, &[Dim::Named("n")]));
        let mut m = model(g);
        m.ir_version = Some(14);
        let problems = check_model(&m).join("\n");
        for needle in [
            "IR version 14",
            "nowhere is used before",
            "FancyOp",
            "1 inputs",
            "out is never produced",
        ] {
            assert!(
                problems.contains(needle),
                "missing {needle:?} in:\n{problems}"
            );
        }
    }

    #[test]
    fn flags_inputs_of_different_types_and_outputs_of_another_type() {
        let mut g = GraphBuilder::new(None).unwrap();
        g.inputs
            .push(value_info("x", DataType::Float, &[Dim::Named("n")]));
        g.inputs
            .push(value_info("h", DataType::Float16, &[Dim::Named("n")]));
        g.node_named("Add", &["x", "h"], &["y"], vec![]);
        g.node_named("Neg", &["h"], &["z"], vec![]);
        g.outputs
            .push(value_info("y", DataType::Float, &[Dim::Named("n")]));
        g.outputs
            .push(value_info("z", DataType::Float, &[Dim::Named("n")]));
        let problems = check_model(&model(g)).join("\n");
        assert!(problems.contains("input h is FLOAT16"), "{problems}");
        assert!(
            problems.contains("z is declared FLOAT but computed FLOAT16"),
            "{problems}"
        );
    }

    #[test]
    fn flags_initializer_data_of_the_wrong_size() {
        let mut g = GraphBuilder::new(None).unwrap();
        let w = g.weight("w", &[2, 3], &[0.0; 6]).unwrap();
        g.node_named("Neg", &[&w], &["out"], vec![]);
        g.outputs.push(value_info(
            "out",
            DataType::Float,
            &[Dim::Fixed(2), Dim::Fixed(3)],
        ));
        let mut m = model(g);
        assert!(check_model(&m).is_empty());
        m.graph.as_mut().unwrap().initializer[0].dims = vec![2, 4];
        assert!(check_model(&m)[0].contains("initializer w"));
    }
}
