//! Dead-node removal.
//!
//! Pattern: a node none of whose outputs reaches a graph output; an initializer no node reads.
//! Binds: nothing. Rewrite: remove them (repeating until nothing changes).
use std::collections::HashSet;

use crate::onnx::GraphProto;

pub fn run(g: &mut GraphProto) -> usize {
    // Walk back from the graph outputs.
    let producers = super::producers(g);
    let mut live: HashSet<usize> = HashSet::new();
    let mut stack: Vec<String> = g.output.iter().filter_map(|o| o.name.clone()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v.clone()) {
            continue;
        }
        if let Some(&i) = producers.get(&v) {
            if live.insert(i) {
                stack.extend(g.node[i].input.iter().filter(|x| !x.is_empty()).cloned());
            }
        }
    }
    let before = g.node.len() + g.initializer.len();
    let mut i = 0;
    g.node.retain(|_| {
        i += 1;
        live.contains(&(i - 1))
    });
    let read: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(g.output.iter().filter_map(|o| o.name.as_deref()))
        .collect();
    let kept: Vec<_> = g
        .initializer
        .drain(..)
        .filter(|t| t.name.as_deref().is_some_and(|n| read.contains(n)))
        .collect();
    g.initializer = kept;
    before - g.node.len() - g.initializer.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{value_info, GraphBuilder};
    use crate::onnx::tensor_proto::DataType;

    #[test]
    fn removes_what_no_output_reads() {
        let mut b = GraphBuilder::new(None).unwrap();
        b.inputs.push(value_info("x", DataType::Float, &[]));
        let used = b.node("Neg", &["x"], vec![]);
        let c = b.scalar_f32(2.0);
        let dead = b.node("Mul", &["x", &c], vec![]);
        let _deader = b.node("Neg", &[&dead], vec![]);
        b.node_named("Neg", &[&used], &["y"], vec![]);
        b.outputs.push(value_info("y", DataType::Float, &[]));
        let mut g = b.finish("t").unwrap();
        assert_eq!(g.node.len(), 4);
        let removed = run(&mut g);
        // Two nodes and the constant only they read.
        assert_eq!(removed, 3);
        assert_eq!(g.node.len(), 2);
        assert!(g.initializer.is_empty());
        assert_eq!(run(&mut g), 0, "a second run finds nothing");
    }
}
