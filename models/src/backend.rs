//! The tensor operations an architecture is written against. A backend either executes them
//! (libtorch, in the trainer) or records them as graph nodes (ONNX, in the compiler), so each
//! architecture is written once and both backends compute the same function.
//!
//! Weights are named, not passed: `linear(x, "model.layers.0.self_attn.q_proj", ..)` lets each
//! backend keep them in its own layout (libtorch `[out, in]`, ONNX MatMul `[in, out]`).

/// Where a decoder layer's activations can be observed (recorded, or shifted by a method such
/// as LIVE that acts on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// Self-attention output after `o_proj`, before the residual add.
    AttnOutput,
    /// MLP output, before the residual add.
    MlpOutput,
    /// The layer's output hidden state (residual stream).
    LayerOutput,
}

impl std::str::FromStr for Site {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "attn" | "attn-output" | "attention" => Ok(Site::AttnOutput),
            "mlp" | "mlp-output" => Ok(Site::MlpOutput),
            "layer" | "layer-output" | "residual" => Ok(Site::LayerOutput),
            _ => Err(format!("unknown site `{s}` (attn, mlp, layer)")),
        }
    }
}

/// Shape facts of one layer's self-attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionSpec {
    pub layer: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Keys more than `window - 1` positions before the query are masked (Mistral).
    pub window: Option<usize>,
}

/// Shape facts of a gated cross-attention block's attention over the image latents (Idefics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossAttentionSpec {
    pub block: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    /// Latents per image: the keys of image `i` are `i * latents_per_image ..` of a row's.
    pub latents_per_image: usize,
}

/// Tensor operations over activations `[batch, seq, ..]`. Infallible: a backend checks its
/// weights and inputs before a forward pass starts.
pub trait Backend {
    type Tensor;

    /// Token ids of this forward pass, `[batch, seq]`.
    fn input_ids(&mut self) -> Self::Tensor;
    /// Rows of the embedding table `table` (`[vocab, hidden]`) for `ids`: `[batch, seq, hidden]`.
    fn embed(&mut self, ids: &Self::Tensor, table: &str) -> Self::Tensor;
    /// The decoder's input embeddings `[batch, seq, hidden]`: the token embeddings, where a
    /// vision-language model's backend puts its image tokens in place of the `<image>`
    /// token's rows (or takes them whole as an input).
    fn input_embeds(&mut self, table: &str) -> Self::Tensor {
        let ids = self.input_ids();
        self.embed(&ids, table)
    }
    /// `x W^T + b` for the HF `nn.Linear` named `module` (weight `{module}.weight`, `[out, in]`).
    fn linear(&mut self, x: &Self::Tensor, module: &str, bias: bool) -> Self::Tensor;
    /// Several projections of the same input (q/k/v, gate/up): backends may fuse them into one
    /// matrix product.
    fn linears(&mut self, x: &Self::Tensor, modules: &[&str], bias: bool) -> Vec<Self::Tensor> {
        modules.iter().map(|m| self.linear(x, m, bias)).collect()
    }
    /// `x / sqrt(mean(x^2) + eps) * weight` over the last axis.
    fn rms_norm(&mut self, x: &Self::Tensor, weight: &str, eps: f64) -> Self::Tensor;
    /// `x * sigmoid(x)`.
    fn silu(&mut self, x: &Self::Tensor) -> Self::Tensor;
    fn mul(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    fn add(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// `[batch, seq, heads * dim] -> [batch, heads, seq, dim]`.
    fn split_heads(&mut self, x: &Self::Tensor, heads: usize, dim: usize) -> Self::Tensor;
    /// `[batch, heads, seq, dim] -> [batch, seq, heads * dim]`.
    fn merge_heads(&mut self, x: &Self::Tensor, heads: usize, dim: usize) -> Self::Tensor;
    /// Rotary tables for this pass's positions: `cos, sin` of `position * inv_freq`, multiplied
    /// by `scaling`, in whatever layout the backend's `apply_rotary` takes.
    fn rotary_tables(&mut self, inv_freq: &[f32], scaling: f32) -> (Self::Tensor, Self::Tensor);
    /// `x * cos + rotate_half(x) * sin` with `rotate_half([a | b]) = [-b | a]`; x `[b, h, s, d]`.
    fn apply_rotary(
        &mut self,
        x: &Self::Tensor,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
    ) -> Self::Tensor;
    /// Causal self-attention of one layer: queries `[b, heads, s, d]` (rotated), the new keys
    /// and values `[b, kv_heads, s, d]`, attending to the cached keys of earlier passes and
    /// the new ones (padding masked). Query head `h` reads KV head `h / (heads / kv_heads)`.
    /// Returns `[b, heads, s, d]`. This is where an attention shift (MimIC) applies.
    fn attention(
        &mut self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        spec: &AttentionSpec,
    ) -> Self::Tensor;
    /// `x * tanh(alpha)` for the gate parameter `alpha` (`[1]`, or `[1, 1, hidden]`).
    fn gate(&mut self, x: &Self::Tensor, alpha: &str) -> Self::Tensor;
    /// RMS norm over each head's channels: `x` `[b, heads, s, d]`, `weight` `[d]` (Idefics'
    /// q/k norms).
    fn head_rms_norm(&mut self, x: &Self::Tensor, weight: &str, eps: f64) -> Self::Tensor;
    /// The keys and values `[b, heads, latents, d]` of cross-attention block `block` over the
    /// pass's image latents: `project` applied to the latents `[b, latents, kv_input_dim]`,
    /// or what the backend already holds (computed once per prompt, or taken as inputs).
    fn cross_keys_values<F>(&mut self, block: usize, project: F) -> (Self::Tensor, Self::Tensor)
    where
        F: FnOnce(&mut Self, &Self::Tensor) -> (Self::Tensor, Self::Tensor),
        Self: Sized;
    /// Each token's queries `[b, heads, s, d]` attend to the latents of the one image it
    /// sees (the most recent image before it in its prompt, transformers' image attention
    /// mask); a token that sees no image gets zeros. Scale `head_dim^-0.5`, no rotary.
    fn cross_attention(
        &mut self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        spec: &CrossAttentionSpec,
    ) -> Self::Tensor;
    /// Called with each layer's activation at each [`Site`]; returns it, recorded or changed.
    fn observe(&mut self, layer: usize, site: Site, x: Self::Tensor) -> Self::Tensor;
    /// Output logits `h W^T` for the positions the backend wants (all, or the last).
    fn logits(&mut self, h: &Self::Tensor, weight: &str) -> Self::Tensor;
}
