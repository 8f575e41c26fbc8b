//! The tensor operations a vision transformer is written against, apart from the decoder's
//! [`crate::backend::Backend`] (whose input is token ids, whose attention is causal with a
//! key/value cache, and whose output is logits). A backend executes them (libtorch, in the
//! trainer) or records them as graph nodes, so each vision tower is written once.
//!
//! Weights are named as in [`crate::backend`]: `linear(x, "vision_model.encoder.layers.0.mlp.fc1",
//! ..)` reads `{module}.weight` and `{module}.bias` in the backend's own layout.

/// The activation of a vision MLP (its config's `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`: `gelu_pytorch_tanh` (SigLIP,
    /// Idefics2/3), also written `gelu_new` and `gelu_fast`.
    GeluTanh,
    /// `0.5 x (1 + erf(x / sqrt(2)))`: `gelu`.
    Gelu,
    /// `x * sigmoid(x)`: `silu` (the SwiGLU MLPs of Idefics2's connector).
    Silu,
    /// `max(x, 0)`: `relu` (Idefics' perceiver MLP).
    Relu,
}

impl Activation {
    /// The activation an HF `hidden_act` names, if it is one of these.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::Gelu),
            "silu" | "swish" => Some(Activation::Silu),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }
}

/// Shape facts of one bidirectional attention: an encoder layer's self-attention, or a
/// perceiver layer's attention of latents over image patches and latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisionAttentionSpec {
    pub layer: usize,
    pub num_heads: usize,
    /// Query head `h` reads key/value head `h / (num_heads / num_kv_heads)`.
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Keys after the image's patches that every query sees (the perceiver's latents); 0 for
    /// the encoder, whose keys are the patches alone.
    pub extra_keys: usize,
}

/// Where a connector's intermediate results can be observed (parity checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectorSite {
    /// Idefics2's modality projection (SwiGLU, vision width to text width).
    ModalityProjection,
    /// The latents after perceiver layer `i`.
    PerceiverLayer(usize),
    /// Idefics3's pixel shuffle, before the projection.
    PixelShuffle,
    /// The tower's output as the connector receives it (`last_hidden_state`, or LLaVA's
    /// selected layer and tokens).
    Features,
}

/// Tensor operations over image batches `[n_images, ..]`. Infallible: a backend checks its
/// weights and inputs before a forward pass starts.
pub trait VisionBackend {
    type Tensor;

    /// The images of this pass, `[n_images, channels, height, width]`, float32.
    fn pixel_values(&mut self) -> Self::Tensor;
    /// The position-embedding row of each patch, `[n_images, n_patches]` (patches row-major):
    /// `0..n_patches` for fixed-size images; the bucketed ids of Idefics2/3 for padded ones.
    fn patch_position_ids(&mut self) -> Self::Tensor;
    /// Non-overlapping patches through a `Conv2d` with kernel = stride = `patch`
    /// (`{module}.weight` `[hidden, channels, patch, patch]`, with `bias` `{module}.bias`
    /// `[hidden]`), flattened row-major: `[n, channels, H, W] -> [n, (H / patch) (W / patch),
    /// hidden]`.
    fn patch_embed(
        &mut self,
        pixels: &Self::Tensor,
        module: &str,
        patch: usize,
        bias: bool,
    ) -> Self::Tensor;
    /// Rows of the table `table` (`[rows, hidden]`) for `ids`: `[n, seq, hidden]`.
    fn embed(&mut self, ids: &Self::Tensor, table: &str) -> Self::Tensor;
    /// `x W^T + b` for the HF `nn.Linear` named `module` (weight `{module}.weight`, `[out, in]`).
    fn linear(&mut self, x: &Self::Tensor, module: &str, bias: bool) -> Self::Tensor;
    /// Several projections of the same input (q/k/v): backends may fuse them into one matrix
    /// product.
    fn linears(&mut self, x: &Self::Tensor, modules: &[&str], bias: bool) -> Vec<Self::Tensor> {
        modules.iter().map(|m| self.linear(x, m, bias)).collect()
    }
    /// `(x - mean(x)) / sqrt(var(x) + eps) * weight + bias` over the last axis (biased
    /// variance), for the HF `nn.LayerNorm` named `module`.
    fn layer_norm(&mut self, x: &Self::Tensor, module: &str, eps: f64) -> Self::Tensor;
    fn activation(&mut self, x: &Self::Tensor, act: Activation) -> Self::Tensor;
    fn add(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// `[n, seq, heads * dim] -> [n, heads, seq, dim]`.
    fn split_heads(&mut self, x: &Self::Tensor, heads: usize, dim: usize) -> Self::Tensor;
    /// `[n, heads, seq, dim] -> [n, seq, heads * dim]`.
    fn merge_heads(&mut self, x: &Self::Tensor, heads: usize, dim: usize) -> Self::Tensor;
    /// Bidirectional attention of every patch over the valid patches of its image (all of
    /// them unless the backend holds a patch mask), scale `head_dim^-0.5`, softmax in float32:
    /// `[n, heads, seq, dim]` each, returns `[n, heads, seq, dim]`.
    fn attention(
        &mut self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        spec: &VisionAttentionSpec,
    ) -> Self::Tensor;
    /// Called with each hidden state in transformers' `hidden_states` numbering (0: the
    /// embeddings, `l + 1`: encoder layer `l`'s output); returns it, recorded or changed.
    fn observe(&mut self, hidden_state: usize, x: Self::Tensor) -> Self::Tensor;

    // Connector operations.

    /// `x / sqrt(mean(x^2) + eps) * weight` over the last axis (in float32).
    fn rms_norm(&mut self, x: &Self::Tensor, weight: &str, eps: f64) -> Self::Tensor;
    fn mul(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// `[n, s1, d]` and `[n, s2, d]` -> `[n, s1 + s2, d]`.
    fn concat_seq(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    /// The parameter `name` (`[rows, d]`, or `[d]` as one row) repeated for each image:
    /// `[n, rows, d]`.
    fn broadcast_param(&mut self, name: &str) -> Self::Tensor;
    /// `[n, ..] -> [n, dims..]` (row-major, as torch `view`).
    fn reshape_rows(&mut self, x: &Self::Tensor, dims: &[usize]) -> Self::Tensor;
    /// Axes reordered (`perm[i]` is the input axis of output axis `i`; axis 0 stays first).
    fn permute(&mut self, x: &Self::Tensor, perm: &[usize]) -> Self::Tensor;
    /// `[n, s, d] -> [n, s - k, d]`: the first `k` tokens dropped.
    fn skip_tokens(&mut self, x: &Self::Tensor, k: usize) -> Self::Tensor;
    /// Called with a connector's intermediate results; returns them, recorded or changed.
    fn observe_connector(&mut self, _site: ConnectorSite, x: Self::Tensor) -> Self::Tensor {
        x
    }
}
