//! mimic's own attention kernel, an ONNX Runtime custom operator (`ai.mimic:MimicAttention`)
//! for the CPU provider: grouped-query attention over a past key/value cache, with the MimIC
//! head computed inside it.
//!
//! Inputs, as the opset-23 `Attention` operator takes them in 3-D form: queries `[B, S, H D]`
//! and new keys and values `[B, S, KV D]` (after rotary embedding), an additive float mask
//! `[B | 1, 1, S, T]` (`T = P + S`), the past keys and values `[B, KV, P, D]`; then, for MimIC,
//! optional `w [1 | B, H, D]`, `b [1 | B, H]` and `u` shaped as `w` (one set for the batch or
//! one per row). Outputs: the heads `[B, S, H D]`, the present keys and values
//! `[B, KV, T, D]`. Attributes: `scale`,
//! `q_num_heads`, `kv_num_heads`, and `form` (0 additive, 1 convex; read only with heads).
//! The names and counts are [`mimic_models::kernel_op`]'s, which the compiler emits too.
//!
//! Per query head `h` and position `i`, with `s_ij = scale q_i . k_j + mask_ij` over the
//! present keys: `LSE_i = log sum_j e^(s_ij)`, `h_i = softmax(s_i) V`; with heads,
//! `mu_i = sigmoid(w . q_i + b - LSE_i)` and `o_i = h_i + mu_i u` (additive) or
//! `(1 - mu_i) h_i + mu_i u` (convex): docs/design.md section 2 ("The MimIC math"), computed
//! as the trainer does instead of through extra key/value slots, value channels and an
//! epilogue.
//!
//! Query head `h` reads KV head `h / (H / KV)`. The exponentials come from a polynomial that
//! the compiler vectorizes (`simd::exp_in_place`, relative error below 1e-7); the dot products
//! and weighted sums from 8-lane loops compiled for AVX2 and FMA where the CPU has them.
//!
//! - `op`: the operator's binding to ONNX Runtime (registration, attributes, the inputs'
//!   shapes checked, outputs allocated, the work handed out);
//! - `math`: the attention itself, per (batch, query head), decode and prefill, with the
//!   MimIC head;
//! - `simd`: the inner loops and the polynomial `exp`.
use ort::operator::OperatorDomain;

mod math;
mod op;
mod simd;

pub use mimic_models::kernel_op::{ATTENTION, DOMAIN};
pub use op::{AttentionKernel, MimicAttention};

/// Held while a session that registers [`DOMAIN`] is built (see `CompiledModel::load`).
pub static REGISTRATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The operator domain to register with the builder of a session whose graph uses it.
pub fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?.add(MimicAttention)
}
