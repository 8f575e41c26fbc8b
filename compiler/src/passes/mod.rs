//! Graph passes over an emitted model, each a separate unit: a pattern, what it binds, and
//! the rewrite. `mimic compile --passes` turns each on or off.
//!
//! - [`constant_folding`]: a node whose inputs are all small constants becomes a constant;
//! - [`dead_nodes`]: nodes and initializers that no graph output depends on are removed;
//! - [`attention_fusion`]: MatMul-Softmax-MatMul attention (scale, mask, grouped heads) becomes
//!   one `Attention` operator;
//! - [`float16`]: the graph computes in float16 but for what needs float32 (normalisation,
//!   softmax, the residual stream, MimIC's arithmetic), the KV cache in float16.
//!
//! [`types`] infers every value's element type, for the float16 pass and the structural check.
pub mod attention_fusion;
pub mod constant_folding;
pub mod dead_nodes;
pub mod float16;
pub mod types;

use std::collections::HashMap;

use crate::onnx::{AttributeProto, GraphProto, NodeProto};

/// A pass by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pass {
    ConstantFolding,
    AttentionFusion,
    DeadNodes,
    Float16,
}

impl std::str::FromStr for Pass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant-folding" | "fold" => Ok(Self::ConstantFolding),
            "attention-fusion" | "fuse-attention" => Ok(Self::AttentionFusion),
            "dead-nodes" | "dce" => Ok(Self::DeadNodes),
            "float16" | "fp16" => Ok(Self::Float16),
            _ => Err(format!(
                "unknown pass `{s}` (constant-folding, attention-fusion, dead-nodes, float16)"
            )),
        }
    }
}

impl Pass {
    /// Every pass that keeps the graph's float32 (all but [`Pass::Float16`]).
    pub const ALL: [Pass; 3] = [
        Pass::ConstantFolding,
        Pass::AttentionFusion,
        Pass::DeadNodes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pass::ConstantFolding => "constant-folding",
            Pass::AttentionFusion => "attention-fusion",
            Pass::DeadNodes => "dead-nodes",
            Pass::Float16 => "float16",
        }
    }

    /// Runs the pass; returns how many rewrites it made.
    pub fn run(self, g: &mut GraphProto) -> usize {
        match self {
            Pass::ConstantFolding => constant_folding::run(g),
            Pass::AttentionFusion => attention_fusion::run(g),
            Pass::DeadNodes => dead_nodes::run(g),
            Pass::Float16 => float16::run(g),
        }
    }
}

/// What each pass did, in order.
pub fn run_passes(g: &mut GraphProto, passes: &[Pass]) -> Vec<(Pass, usize)> {
    let mut report = Vec::new();
    for &p in passes {
        let n = p.run(g);
        tracing::info!(
            pass = p.name(),
            rewrites = n,
            nodes = g.node.len(),
            "graph pass"
        );
        report.push((p, n));
    }
    report
}

/// The node producing each value, by value name.
pub(crate) fn producers(g: &GraphProto) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in &n.output {
            m.insert(o.clone(), i);
        }
    }
    m
}

/// How many node inputs and graph outputs read each value.
pub(crate) fn use_counts(g: &GraphProto) -> HashMap<String, usize> {
    let mut m: HashMap<String, usize> = HashMap::new();
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            *m.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &g.output {
        if let Some(name) = &o.name {
            *m.entry(name.clone()).or_default() += 1;
        }
    }
    m
}

pub(crate) fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

pub(crate) fn op(n: &NodeProto) -> &str {
    n.op_type.as_deref().unwrap_or("")
}
