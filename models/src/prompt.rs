//! Prompt templates for in-context learning tasks.

/// The default template: a demonstration is the whole of it, a query the part before
/// `{output}`.
pub const DEFAULT_TEMPLATE: &str = "Q: {input}\nA: {output}\n\n";
