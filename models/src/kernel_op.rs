//! mimic's attention kernel as a graph operator: the names and arities the compiler emits
//! (`--attention kernel`) and the runtime registers (`mimic_runtime::kernel`), defined once.
//!
//! The node takes the opset-23 `Attention` operator's [`INPUTS`] inputs (queries, new keys,
//! new values, the additive mask, past keys, past values) and, with MimIC heads, their `w`,
//! `b` and `u` ([`HEADS_INPUTS`] more); it has [`OUTPUTS`] outputs (the heads, the present
//! keys and values).

/// The custom operator domain of mimic's runtime kernels.
pub const DOMAIN: &str = "ai.mimic";
/// The version of [`DOMAIN`] a graph imports.
pub const DOMAIN_VERSION: i64 = 1;
/// The attention operator's name in [`DOMAIN`].
pub const ATTENTION: &str = "MimicAttention";
/// Inputs of every node: `q, k, v, mask, past_key, past_value`.
pub const INPUTS: usize = 6;
/// Inputs a node with MimIC heads takes after [`INPUTS`]: `w, b, u`.
pub const HEADS_INPUTS: usize = 3;
/// Outputs: the heads, the present keys, the present values.
pub const OUTPUTS: usize = 3;
/// The attribute that names the MimIC form of a node with heads: 0 additive, 1 convex.
pub const FORM: &str = "form";
