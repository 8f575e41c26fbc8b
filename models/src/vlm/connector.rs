//! The connectors between a vision tower and a language model, written once over
//! [`VisionBackend`]: each turns the tower's output `[n_images, n_patches, vision_hidden]`
//! into the image tokens `[n_images, tokens_per_image, text_hidden]` that replace the
//! prompt's `<image>` embeddings.
//!
//! ```text
//! Idefics2:  x = down(silu(gate(v)) * up(v))                      modality projection
//!            z = latents                                          [n_latents, text_hidden]
//!            per layer: c = rms(x); l = rms(z)
//!                       z = z + attn(q = l Wq, k/v = [c; l] Wk/Wv) Wo   (GQA, patch mask)
//!                       z = z + down(silu(gate(rms(z))) * up(rms(z)))
//!            out = rms(z)
//! Idefics3:  out = pixel_shuffle(v, s) Wproj                     s x s patches -> 1 token
//! LLaVA:     out = linear_2(gelu(linear_1(hidden_states[k])))     (first token dropped for
//!                                                                  the `default` strategy)
//! Idefics:   z = latents                                          [n_latents, vision_hidden]
//!            per block: c = ln(v); l = ln(z)
//!                       z = z + attn(q = l Wq, k/v = [c; l] Wk/Wv) Wo   (q, k LayerNormed
//!                                                                        per head)
//!                       z = z + relu(ln(z) Wfc) Wc_proj
//!            out = ln(z)          at the vision width: the decoder's cross-attention reads it
//! ```
//!
//! Tensor names are transformers' under a prefix: `model.connector.` (Idefics2/3 on disk),
//! `multi_modal_projector.` or `model.multi_modal_projector.` (LLaVA, 4.x and 5.x names).
use crate::vision::backend::{Activation, ConnectorSite, VisionAttentionSpec, VisionBackend};
use crate::vision::siglip;
use crate::vlm::config::{
    Connector, FeatureSelect, IdeficsPerceiverConfig, PerceiverConfig, VlmConfig,
};

/// The image tokens of the backend's images: the tower (under `tower_prefix`) and the
/// connector (under `connector_prefix`).
pub fn image_features<B: VisionBackend>(
    cfg: &VlmConfig,
    tower_prefix: &str,
    connector_prefix: &str,
    b: &mut B,
) -> B::Tensor {
    let h = siglip::forward(&cfg.vision, tower_prefix, cfg.features(), b);
    forward(cfg, connector_prefix, b, h)
}

/// The connector over the tower's output `h`.
pub fn forward<B: VisionBackend>(
    cfg: &VlmConfig,
    prefix: &str,
    b: &mut B,
    h: B::Tensor,
) -> B::Tensor {
    let h = match &cfg.connector {
        Connector::Llava {
            select: FeatureSelect::Default,
            ..
        } => b.skip_tokens(&h, 1),
        _ => h,
    };
    let h = b.observe_connector(ConnectorSite::Features, h);
    match &cfg.connector {
        Connector::Idefics2 {
            projection_activation,
            perceiver,
            ..
        } => {
            let x = swiglu(
                b,
                &h,
                &format!("{prefix}modality_projection"),
                *projection_activation,
            );
            let x = b.observe_connector(ConnectorSite::ModalityProjection, x);
            perceiver_resampler(b, perceiver, &format!("{prefix}perceiver_resampler."), &x)
        }
        Connector::Idefics3 { scale_factor } => {
            let x = pixel_shuffle(
                b,
                &h,
                cfg.vision.patches_per_side(),
                *scale_factor,
                cfg.vision.hidden_size,
            );
            let x = b.observe_connector(ConnectorSite::PixelShuffle, x);
            b.linear(&x, &format!("{prefix}modality_projection.proj"), false)
        }
        Connector::Idefics { perceiver: None } => h,
        Connector::Idefics { perceiver: Some(p) } => idefics_perceiver(b, p, prefix, &h),
        Connector::Llava {
            activation, bias, ..
        } => {
            let x = b.linear(&h, &format!("{prefix}linear_1"), *bias);
            let x = b.activation(&x, *activation);
            b.linear(&x, &format!("{prefix}linear_2"), *bias)
        }
    }
}

/// `down(act(gate(x)) * up(x))`, bias-free (Idefics2's MLPs).
fn swiglu<B: VisionBackend>(b: &mut B, x: &B::Tensor, module: &str, act: Activation) -> B::Tensor {
    let names = [format!("{module}.gate_proj"), format!("{module}.up_proj")];
    let [gate, up]: [B::Tensor; 2] = b
        .linears(x, &[&names[0], &names[1]], false)
        .try_into()
        .unwrap_or_else(|_| unreachable!("two projections in, two out"));
    let gate = b.activation(&gate, act);
    let m = b.mul(&gate, &up);
    b.linear(&m, &format!("{module}.down_proj"), false)
}

/// Idefics3's pixel shuffle, as transformers writes it: `[n, side^2, d]` read as
/// `[n, side, side / s, d s]`, rows and columns swapped, read as `[n, side / s, side / s, d s^2]`,
/// swapped back: `[n, side^2 / s^2, d s^2]`.
fn pixel_shuffle<B: VisionBackend>(
    b: &mut B,
    x: &B::Tensor,
    side: usize,
    s: usize,
    d: usize,
) -> B::Tensor {
    let x = b.reshape_rows(x, &[side, side / s, d * s]);
    let x = b.permute(&x, &[0, 2, 1, 3]);
    let x = b.reshape_rows(&x, &[side / s, side / s, d * s * s]);
    let x = b.permute(&x, &[0, 2, 1, 3]);
    b.reshape_rows(&x, &[(side / s) * (side / s), d * s * s])
}

/// Idefics2's perceiver resampler over `context` (the projected patches).
fn perceiver_resampler<B: VisionBackend>(
    b: &mut B,
    p: &PerceiverConfig,
    prefix: &str,
    context: &B::Tensor,
) -> B::Tensor {
    let eps = p.rms_norm_eps;
    let mut z = b.broadcast_param(&format!("{prefix}latents"));
    for layer in 0..p.depth {
        let n = |s: &str| format!("{prefix}layers.{layer}.{s}");
        let l = b.rms_norm(&z, &n("input_latents_norm.weight"), eps);
        let c = b.rms_norm(context, &n("input_context_norm.weight"), eps);
        let kv_in = b.concat_seq(&c, &l);
        let q = b.linear(&l, &n("self_attn.q_proj"), false);
        let names = [n("self_attn.k_proj"), n("self_attn.v_proj")];
        let [k, v]: [B::Tensor; 2] = b
            .linears(&kv_in, &[&names[0], &names[1]], false)
            .try_into()
            .unwrap_or_else(|_| unreachable!("two projections in, two out"));
        let q = b.split_heads(&q, p.n_heads, p.head_dim);
        let k = b.split_heads(&k, p.n_kv_heads, p.head_dim);
        let v = b.split_heads(&v, p.n_kv_heads, p.head_dim);
        let spec = VisionAttentionSpec {
            layer,
            num_heads: p.n_heads,
            num_kv_heads: p.n_kv_heads,
            head_dim: p.head_dim,
            extra_keys: p.n_latents,
        };
        let a = b.attention(&q, &k, &v, &spec);
        let a = b.merge_heads(&a, p.n_heads, p.head_dim);
        let a = b.linear(&a, &n("self_attn.o_proj"), false);
        z = b.add(&z, &a);
        let x = b.rms_norm(&z, &n("post_attention_layernorm.weight"), eps);
        let m = swiglu(b, &x, &n("mlp"), p.activation);
        z = b.add(&z, &m);
        z = b.observe_connector(ConnectorSite::PerceiverLayer(layer), z);
    }
    b.rms_norm(&z, &format!("{prefix}norm.weight"), eps)
}

/// Idefics' perceiver resampler (`IdeficsPerceiverResampler`) over `context` (the tower's
/// last hidden state, class token included). LayerNorm eps is PyTorch's default, 1e-5.
fn idefics_perceiver<B: VisionBackend>(
    b: &mut B,
    p: &IdeficsPerceiverConfig,
    prefix: &str,
    context: &B::Tensor,
) -> B::Tensor {
    const EPS: f64 = 1e-5;
    let mut z = b.broadcast_param(&format!("{prefix}latents"));
    for block in 0..p.depth {
        let n = |s: &str| format!("{prefix}blocks.{block}.{s}");
        let c = b.layer_norm(context, &n("0.context_layer_norm"), EPS);
        let l = b.layer_norm(&z, &n("0.latents_layer_norm"), EPS);
        let kv_in = b.concat_seq(&c, &l);
        let q = b.linear(&l, &n("0.q_proj"), false);
        let names = [n("0.k_proj"), n("0.v_proj")];
        let [k, v]: [B::Tensor; 2] = b
            .linears(&kv_in, &[&names[0], &names[1]], false)
            .try_into()
            .unwrap_or_else(|_| unreachable!("two projections in, two out"));
        let q = b.split_heads(&q, p.n_heads, p.head_dim);
        let k = b.split_heads(&k, p.n_heads, p.head_dim);
        let v = b.split_heads(&v, p.n_heads, p.head_dim);
        let (q, k) = match p.qk_layer_norms {
            true => (
                b.layer_norm(&q, &n("0.q_layer_norm"), EPS),
                b.layer_norm(&k, &n("0.k_layer_norm"), EPS),
            ),
            false => (q, k),
        };
        let spec = VisionAttentionSpec {
            layer: block,
            num_heads: p.n_heads,
            num_kv_heads: p.n_heads,
            head_dim: p.head_dim,
            extra_keys: p.n_latents,
        };
        let a = b.attention(&q, &k, &v, &spec);
        let a = b.merge_heads(&a, p.n_heads, p.head_dim);
        let a = b.linear(&a, &n("0.output_proj"), false);
        z = b.add(&z, &a);
        let x = b.layer_norm(&z, &n("1.ln"), EPS);
        let x = b.linear(&x, &n("1.fc"), false);
        let x = b.activation(&x, Activation::Relu);
        let x = b.linear(&x, &n("1.c_proj"), false);
        z = b.add(&z, &x);
        z = b.observe_connector(ConnectorSite::PerceiverLayer(block), z);
    }
    b.layer_norm(&z, &format!("{prefix}layer_norm"), EPS)
}
