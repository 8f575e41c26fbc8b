//! The Llama-family decoder (Llama, Mistral, Qwen2), written once over [`Backend`].
//!
//! ```text
//! h = embed(ids)          (image tokens in place of <image>'s, in a vision-language model)
//! for each layer l:
//!     x = rms_norm(h);  q, k, v = x Wq (+bq), x Wk (+bk), x Wv (+bv)
//!     q, k = rotary(q), rotary(k);  a = attention(q, k, v) Wo
//!     h = h + a
//!     x = rms_norm(h);  h = h + (silu(x Wgate) * x Wup) Wdown
//! logits = rms_norm(h) Wlm
//! ```
//!
//! Idefics adds gated cross-attention blocks that read image latents `z`: before layer `l`
//! with `l % interval == 0`, block `j = l / interval` runs
//!
//! ```text
//! x = rms_norm(h);  q = x Wq;  k, v = z Wk, z Wv    (q, k RMS-normed per head; no rotary)
//! h = h + tanh(alpha_cross) * (cross_attention(q, k, v) Wo)   (zero for tokens seeing no image)
//! x = rms_norm(h);  h = h + tanh(alpha_dense) * (silu(x Wgate) * x Wup) Wdown
//! ```
use crate::backend::{AttentionSpec, Backend, CrossAttentionSpec, Site};
use crate::config::{cross_block_name, GatedCrossAttention, LlamaConfig};

/// Runs the decoder over the backend's input ids and returns its logits.
pub fn forward<B: Backend>(cfg: &LlamaConfig, b: &mut B) -> B::Tensor {
    let mut h = b.input_embeds("model.embed_tokens.weight");
    let (cos, sin) = b.rotary_tables(&cfg.rope_inv_freq(), 1.0);
    for layer in 0..cfg.num_layers {
        if let Some(x) = &cfg.cross_attention {
            if let Some(block) = x.block_before(layer, cfg.num_layers) {
                h = gated_cross_attention(cfg, x, b, block, h);
            }
        }
        h = decoder_layer(cfg, b, layer, h, &cos, &sin);
    }
    let h = b.rms_norm(&h, "model.norm.weight", cfg.rms_norm_eps);
    b.logits(&h, cfg.lm_head_name())
}

fn decoder_layer<B: Backend>(
    cfg: &LlamaConfig,
    b: &mut B,
    layer: usize,
    h: B::Tensor,
    cos: &B::Tensor,
    sin: &B::Tensor,
) -> B::Tensor {
    let p = |s: &str| format!("model.layers.{layer}.{s}");
    let (nh, nkv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);

    let x = b.rms_norm(&h, &p("input_layernorm.weight"), cfg.rms_norm_eps);
    let names = [
        p("self_attn.q_proj"),
        p("self_attn.k_proj"),
        p("self_attn.v_proj"),
    ];
    let [q, k, v]: [B::Tensor; 3] = b
        .linears(&x, &[&names[0], &names[1], &names[2]], cfg.qkv_bias)
        .try_into()
        .unwrap_or_else(|_| unreachable!("three projections in, three out"));
    let q = b.split_heads(&q, nh, d);
    let k = b.split_heads(&k, nkv, d);
    let v = b.split_heads(&v, nkv, d);
    let q = b.apply_rotary(&q, cos, sin);
    let k = b.apply_rotary(&k, cos, sin);
    let spec = AttentionSpec {
        layer,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: d,
        window: cfg.sliding_window[layer],
    };
    let a = b.attention(&q, &k, &v, &spec);
    let a = b.merge_heads(&a, nh, d);
    let a = b.linear(&a, &p("self_attn.o_proj"), cfg.o_bias);
    let a = b.observe(layer, Site::AttnOutput, a);
    let h = b.add(&h, &a);

    let x = b.rms_norm(&h, &p("post_attention_layernorm.weight"), cfg.rms_norm_eps);
    let names = [p("mlp.gate_proj"), p("mlp.up_proj")];
    let [gate, up]: [B::Tensor; 2] = b
        .linears(&x, &[&names[0], &names[1]], false)
        .try_into()
        .unwrap_or_else(|_| unreachable!("two projections in, two out"));
    let gate = b.silu(&gate);
    let m = b.mul(&gate, &up);
    let m = b.linear(&m, &p("mlp.down_proj"), false);
    let m = b.observe(layer, Site::MlpOutput, m);
    let h = b.add(&h, &m);
    b.observe(layer, Site::LayerOutput, h)
}

/// The keys and values `[b, heads, latents, d]` of block `block` over image latents `z`
/// `[b, latents, kv_input_dim]`.
pub fn cross_keys_values<B: Backend>(
    cfg: &LlamaConfig,
    x: &GatedCrossAttention,
    b: &mut B,
    block: usize,
    z: &B::Tensor,
) -> (B::Tensor, B::Tensor) {
    let p = |s: &str| cross_block_name(block, s);
    let (nh, d) = (cfg.num_heads, cfg.head_dim);
    let names = [p("cross_attn.k_proj"), p("cross_attn.v_proj")];
    let [k, v]: [B::Tensor; 2] = b
        .linears(z, &[&names[0], &names[1]], false)
        .try_into()
        .unwrap_or_else(|_| unreachable!("two projections in, two out"));
    let k = b.split_heads(&k, nh, d);
    let v = b.split_heads(&v, nh, d);
    let k = match x.qk_norms {
        true => b.head_rms_norm(&k, &p("cross_attn.k_layer_norm.weight"), cfg.rms_norm_eps),
        false => k,
    };
    (k, v)
}

/// Gated cross-attention block `block` (Idefics' `IdeficsGatedCrossAttentionLayer`).
fn gated_cross_attention<B: Backend>(
    cfg: &LlamaConfig,
    x: &GatedCrossAttention,
    b: &mut B,
    block: usize,
    h: B::Tensor,
) -> B::Tensor {
    let p = |s: &str| cross_block_name(block, s);
    let (nh, d, eps) = (cfg.num_heads, cfg.head_dim, cfg.rms_norm_eps);

    let (k, v) = b.cross_keys_values(block, |b, z| cross_keys_values(cfg, x, b, block, z));
    let y = b.rms_norm(&h, &p("input_layernorm.weight"), eps);
    let q = b.linear(&y, &p("cross_attn.q_proj"), false);
    let q = b.split_heads(&q, nh, d);
    let q = match x.qk_norms {
        true => b.head_rms_norm(&q, &p("cross_attn.q_layer_norm.weight"), eps),
        false => q,
    };
    let spec = CrossAttentionSpec {
        block,
        num_heads: nh,
        head_dim: d,
        latents_per_image: x.latents_per_image,
    };
    let a = b.cross_attention(&q, &k, &v, &spec);
    let a = b.merge_heads(&a, nh, d);
    let a = b.linear(&a, &p("cross_attn.o_proj"), false);
    let a = b.gate(&a, &p("alpha_cross_attn"));
    let h = b.add(&h, &a);

    let y = b.rms_norm(&h, &p("post_attention_layernorm.weight"), eps);
    let names = [p("mlp.gate_proj"), p("mlp.up_proj")];
    let [gate, up]: [B::Tensor; 2] = b
        .linears(&y, &[&names[0], &names[1]], false)
        .try_into()
        .unwrap_or_else(|_| unreachable!("two projections in, two out"));
    let gate = b.silu(&gate);
    let m = b.mul(&gate, &up);
    let m = b.linear(&m, &p("mlp.down_proj"), false);
    let m = b.gate(&m, &p("alpha_dense"));
    b.add(&h, &m)
}
