//! The decoder executed by libtorch: [`TorchModel`] holds the weights on a device, and one
//! forward pass is a [`Backend`] over `tch::Tensor` that also keeps the key/value cache,
//! records activations at chosen [`Site`]s and applies attention shifts.
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use mimic_models::backend::{AttentionSpec, Backend, CrossAttentionSpec, Site};
use mimic_models::config::GatedCrossAttention;
use mimic_models::generate::CausalLm;
use mimic_models::vlm::idefics::ImageSlots;
use mimic_models::{llama, LlamaConfig, Model};
use tch::{Device, IndexOp, Kind, Tensor};

use crate::Result;

/// A change to one layer's attention output computed from the quantities MimIC uses:
/// queries `q` `[b, heads, s, d]` (after rotary), the ordinary head output `h` `[b, heads, s, d]`
/// and the masked log-sum-exp of the scores `lse` `[b, heads, s, 1]`.
pub trait AttentionShift {
    fn shift(&self, layer: usize, q: &Tensor, h: &Tensor, lse: &Tensor) -> Tensor;
}

/// A change to an activation at a [`Site`] (LIVE acts on the MLP output).
pub trait SiteShift {
    fn shift(&self, layer: usize, site: Site, x: Tensor) -> Tensor;
}

/// An addition to a linear layer's output, by module name (LoRA: `x A^T B^T * alpha / r`).
pub trait LinearShift {
    fn delta(&self, module: &str, x: &Tensor) -> Option<Tensor>;
}

/// The shifts one forward pass applies (none by default).
#[derive(Clone, Copy, Default)]
pub struct Shifts<'a> {
    pub attention: Option<&'a dyn AttentionShift>,
    pub site: Option<&'a dyn SiteShift>,
    pub linear: Option<&'a dyn LinearShift>,
}

/// A decoder's weights on a device, float32, in HF layout.
pub struct TorchModel {
    pub config: LlamaConfig,
    params: HashMap<String, Tensor>,
    /// bfloat16 copies of the linear layers' weights and biases, each made on first use by a
    /// [`Forward`] with `matmul: Kind::BFloat16`.
    bf16: RefCell<HashMap<String, Tensor>>,
    pub device: Device,
}

/// Keys and values of the sequence so far, per layer `[b, kv_heads, len, d]`, and which of
/// those positions are real tokens (`[b, len]`, 1) rather than padding (0).
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    key_mask: Option<Tensor>,
    /// The images a cross-attention decoder (Idefics) has read so far.
    cross: CrossCache,
}

/// Batch-1 keys and values `[1, heads, len, d]` as `b` rows: broadcast views (the next pass
/// concatenates its keys onto them, copying once).
fn repeat_pairs(pairs: &[Option<(Tensor, Tensor)>], b: i64) -> Vec<Option<(Tensor, Tensor)>> {
    pairs
        .iter()
        .map(|l| {
            l.as_ref().map(|(k, v)| {
                (
                    k.expand([b, -1, -1, -1], false),
                    v.expand([b, -1, -1, -1], false),
                )
            })
        })
        .collect()
}

/// A cross-attention decoder's images so far: each gated block's keys and values over them,
/// computed once when the images arrive, and where they sit ([`ImageSlots`]). A pass whose
/// rows bring different numbers of images pads them with zero latents, which no token reads.
#[derive(Default)]
struct CrossCache {
    /// Per block, `[b, heads, n_slots * latents, d]` each.
    blocks: Vec<Option<(Tensor, Tensor)>>,
    slots: ImageSlots,
}

impl CrossCache {
    fn select_rows(&mut self, idx: &Tensor, rows: &[usize]) {
        for (k, v) in self.blocks.iter_mut().flatten() {
            *k = k.index_select(0, idx);
            *v = v.index_select(0, idx);
        }
        if self.slots.rows() > 0 {
            self.slots = self.slots.select_rows(rows);
        }
    }

    /// A batch-1 prefix's images for `b` rows.
    fn repeat_batch(&self, b: i64) -> CrossCache {
        CrossCache {
            blocks: repeat_pairs(&self.blocks, b),
            slots: match self.slots.rows() {
                0 => ImageSlots::default(),
                _ => self.slots.select_rows(&vec![0; b as usize]),
            },
        }
    }
}

impl KvCache {
    /// Cached sequence length.
    pub fn len(&self) -> i64 {
        self.key_mask.as_ref().map_or(0, |m| m.size()[1])
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache of a batch-1 prefix repeated for `b` rows (demonstrations shared by a batch).
    pub fn repeat_batch(&self, b: i64) -> KvCache {
        KvCache {
            layers: repeat_pairs(&self.layers, b),
            key_mask: self.key_mask.as_ref().map(|m| m.expand([b, -1], false)),
            cross: self.cross.repeat_batch(b),
        }
    }

    /// Row `i` becomes a copy of row `rows[i]` (beam search reordering its beams).
    pub fn select_rows(&mut self, rows: &[usize]) {
        let Some(mask) = &self.key_mask else {
            return;
        };
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let idx = Tensor::from_slice(&idx).to_device(mask.device());
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(0, &idx);
            *v = v.index_select(0, &idx);
        }
        self.key_mask = Some(mask.index_select(0, &idx));
        self.cross.select_rows(&idx, rows);
    }

    /// Layer `l`'s cached keys and values (after rotary), `[b, kv_heads, len, d]`.
    pub fn layer(&self, l: usize) -> Option<(&Tensor, &Tensor)> {
        self.layers.get(l)?.as_ref().map(|(k, v)| (k, v))
    }
}

/// A vision-language model's images in a pass: image tokens that take the place of the
/// `<image>` token's embeddings, or, for a cross-attention decoder (Idefics), the latents its
/// gated blocks read, one image per `<image>` token.
#[derive(Clone, Copy)]
pub struct ImageTokens<'a> {
    pub token_id: i64,
    /// `[n_images, tokens_per_image, hidden]` (or `[n_tokens, hidden]`), in prompt order (the
    /// rows of a batch one after the other): as many rows in all as the pass's ids hold
    /// `token_id`s; for a cross-attention decoder `[n_images, latents, kv_input_dim]` (or
    /// `[n_images * latents, kv_input_dim]`), an image per `token_id`.
    pub features: &'a Tensor,
}

/// One forward pass's inputs and options.
pub struct Forward<'a> {
    /// `[b, s]` int64.
    pub ids: &'a Tensor,
    /// `[b, s]`, 1 for tokens and 0 for padding, of the new tokens only; all ones when `None`.
    pub attention_mask: Option<&'a Tensor>,
    /// `[b, s]`; by default the count of real tokens before each position.
    pub position_ids: Option<&'a Tensor>,
    /// Compute logits of the last `n` positions only (1 for generation); all when `None`.
    pub logits_last: Option<i64>,
    /// Sites whose activations are returned.
    pub record: &'a [Site],
    pub shifts: Shifts<'a>,
    /// The type the linear layers multiply in: `Kind::Float`, or `Kind::BFloat16` for about
    /// twice the speed where the CPU has bfloat16 dot products (AVX512-BF16, AMX) or on a GPU.
    /// Activations stay float32 between the layers, as under mixed-precision autocast.
    pub matmul: Kind,
    /// A vision-language model's image tokens for this pass.
    pub images: Option<ImageTokens<'a>>,
    /// The pass feeds generated tokens: in a cross-attention decoder each reads the image the
    /// last token read (as transformers' generate extends the image attention mask), where a
    /// prompt's tokens follow the processor's rule ([`ImageSlots::token_slots`]).
    pub generating: bool,
}

impl<'a> Forward<'a> {
    pub fn new(ids: &'a Tensor) -> Self {
        Forward {
            ids,
            attention_mask: None,
            position_ids: None,
            logits_last: None,
            record: &[],
            shifts: Shifts::default(),
            matmul: Kind::Float,
            images: None,
            generating: false,
        }
    }
}

pub struct ForwardOutput {
    /// `[b, s, vocab]`, or `[b, n, vocab]` with `logits_last: Some(n)`.
    pub logits: Tensor,
    pub recorded: BTreeMap<(usize, Site), Tensor>,
}

impl TorchModel {
    /// Copies a loaded model's weights onto `device`. Each layer's q/k/v and gate/up weights
    /// are stored as one matrix (named by [`fused_name`]), the single ones being views of it,
    /// so [`Backend::linears`] is one matrix product.
    pub fn new(model: &Model, device: Device) -> Result<Self> {
        let mut params = HashMap::new();
        for (name, t) in &model.weights.tensors {
            let shape: Vec<i64> = t.shape.iter().map(|&x| x as i64).collect();
            let tensor = Tensor::f_from_slice(&t.data)?
                .f_reshape(&shape)?
                .f_to_device(device)?;
            params.insert(name.clone(), tensor);
        }
        let cfg = &model.config;
        for l in 0..cfg.num_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let qkv = [
                p("self_attn.q_proj"),
                p("self_attn.k_proj"),
                p("self_attn.v_proj"),
            ];
            let gate_up = [p("mlp.gate_proj"), p("mlp.up_proj")];
            let mut groups = vec![(&qkv[..], ".weight")];
            if cfg.qkv_bias {
                groups.push((&qkv[..], ".bias"));
            }
            groups.push((&gate_up[..], ".weight"));
            for (modules, suffix) in groups {
                stack_rows(&mut params, modules, suffix);
            }
        }
        Ok(TorchModel {
            config: model.config.clone(),
            params,
            bf16: RefCell::default(),
            device,
        })
    }

    /// The bfloat16 copy of a linear layer's weight or bias.
    fn param_bf16(&self, name: &str) -> Tensor {
        self.bf16
            .borrow_mut()
            .entry(name.to_string())
            .or_insert_with(|| self.param(name).to_kind(Kind::BFloat16))
            .shallow_clone()
    }

    fn param(&self, name: &str) -> &Tensor {
        // Weights::check_against ran when the model was opened, so every name the
        // architecture asks for exists.
        self.params
            .get(name)
            .unwrap_or_else(|| panic!("weight {name} missing after load-time check"))
    }

    /// Runs the decoder, extending `cache` when given.
    pub fn forward(&self, f: &Forward, cache: Option<&mut KvCache>) -> ForwardOutput {
        let mut local = KvCache::default();
        let cache = cache.unwrap_or(&mut local);
        if cache.layers.len() != self.config.num_layers {
            cache.layers = (0..self.config.num_layers).map(|_| None).collect();
        }
        let (b, s) = (f.ids.size()[0], f.ids.size()[1]);
        let past = cache.len();
        let new_mask = match f.attention_mask {
            Some(m) => m.to_kind(Kind::Int64).to_device(self.device),
            None => Tensor::ones([b, s], (Kind::Int64, self.device)),
        };
        let key_mask = match &cache.key_mask {
            Some(old) => Tensor::cat(&[old, &new_mask], 1),
            None => new_mask.shallow_clone(),
        };
        let positions = match f.position_ids {
            Some(p) => p.to_device(self.device),
            None => (key_mask.cumsum(1, Kind::Int64) - 1)
                .clamp_min(0)
                .narrow(1, past, s),
        };
        let mask = additive_mask(&key_mask, past, s, None);
        cache.key_mask = Some(key_mask.shallow_clone());
        let cross = self.config.cross_attention.as_ref().map(|x| {
            let eos = &self.config.eos_token_ids;
            cross_inputs(x, eos, f, &new_mask, &mut cache.cross)
        });
        let mut run = TorchPass {
            model: self,
            forward: f,
            ids: f.ids.to_device(self.device),
            positions,
            key_mask,
            past,
            masks: HashMap::from([(None, mask)]),
            cache,
            recorded: BTreeMap::new(),
            cross,
        };
        let logits = llama::forward(&self.config, &mut run);
        ForwardOutput {
            logits,
            recorded: run.recorded,
        }
    }
}

/// What a cross-attention pass reads: the latents of the images it brings, and which slot
/// each of its tokens reads.
struct CrossInputs {
    /// `[b, new_slots * latents, kv_input_dim]`, when the pass brings images.
    new_latents: Option<Tensor>,
    /// `[b, 1, s, n_slots * latents]`: 0 where a token may read a latent, a large negative
    /// number elsewhere.
    mask: Tensor,
    /// `[b, 1, s, 1]`: 1 for a token that reads an image, 0 for one that reads none.
    reads: Tensor,
}

/// Advances each row's walk over the pass's tokens (padding skipped), gives the pass's
/// images slots, and builds the cross-attention mask. Callers check that the images match
/// the `<image>` tokens ([`TorchModel::check_cross_images`]); an image index without a slot
/// reads nothing.
fn cross_inputs(
    x: &GatedCrossAttention,
    eos: &[u32],
    f: &Forward,
    new_mask: &Tensor,
    cross: &mut CrossCache,
) -> CrossInputs {
    let device = new_mask.device();
    let (b, s) = (f.ids.size()[0], f.ids.size()[1]);
    let ids: Vec<i64> =
        Vec::try_from(f.ids.to_device(Device::Cpu).reshape([-1])).expect("token ids are int64");
    let real: Vec<i64> =
        Vec::try_from(new_mask.to_device(Device::Cpu).reshape([-1])).expect("the mask is int64");
    if cross.slots.rows() != b as usize {
        cross.slots = ImageSlots::new(b as usize, 0);
    }
    let latents = x.latents_per_image;
    let token_id = x.image_token_id;
    // This pass's images, row by row, each in a new slot.
    let counts = ImageSlots::image_counts(&ids, &real, b as usize, token_id);
    let new_latents = match f.images.filter(|_| counts.iter().any(|&c| c > 0)) {
        Some(images) => {
            let new_slots = cross.slots.add_images(&counts);
            let width = *images.features.size().last().expect("latents have a width");
            let all = images
                .features
                .reshape([-1, latents as i64, width])
                .to_device(device);
            let mut rows = Vec::new();
            let mut start = 0;
            for &c in &counts {
                let mine = all.narrow(0, start, c as i64);
                start += c as i64;
                let pad = Tensor::zeros(
                    [(new_slots - c) as i64, latents as i64, width],
                    (Kind::Float, device),
                );
                rows.push(Tensor::cat(&[mine, pad], 0).reshape([1, -1, width]));
            }
            Some(Tensor::cat(&rows, 0))
        }
        None => None,
    };
    // Which slot each token reads.
    let token_slots = cross
        .slots
        .token_slots(&ids, &real, f.generating, token_id, eos);
    let token_slots = Tensor::from_slice(&token_slots)
        .view([b, 1, s, 1])
        .to_device(device);
    let n_keys = (cross.slots.n_slots() * latents) as i64;
    let key_slots = Tensor::arange(n_keys, (Kind::Int64, device))
        .divide_scalar_mode(latents as i64, "floor")
        .view([1, 1, 1, n_keys]);
    let allowed = key_slots.eq_tensor(&token_slots);
    let zeros = Tensor::zeros([1], (Kind::Float, device));
    CrossInputs {
        new_latents,
        mask: zeros.where_scalarother(&allowed, f32::MIN as f64),
        reads: token_slots.ge(0).to_kind(Kind::Float),
    }
}

impl TorchModel {
    /// For a cross-attention decoder's prompt: one image (`latents` rows of `kv_input_dim`
    /// in `features`) per `<image>` token among `ids`; an error names both counts. Nothing to
    /// check for other decoders.
    pub fn check_cross_images(&self, ids: &Tensor, features: Option<&Tensor>) -> Result<()> {
        let Some(x) = &self.config.cross_attention else {
            return Ok(());
        };
        let tokens = i64::try_from(ids.eq(x.image_token_id as i64).sum(Kind::Int64))?;
        let per_image = (x.latents_per_image * x.kv_input_dim) as i64;
        let images = features.map_or(0, |f| f.numel() as i64 / per_image);
        if tokens != images {
            return Err(crate::TrainerError::Other(format!(
                "the prompt holds {tokens} <image> tokens but {images} images were given"
            )));
        }
        Ok(())
    }
}

/// The name under which [`TorchModel`] (and the vision tower) keeps the stacked weights of
/// several projections.
pub(crate) fn fused_name(modules: &[&str]) -> String {
    modules.join("+")
}

/// Stacks the `{module}{suffix}` tensors of `modules` into one (rows concatenated), kept under
/// [`fused_name`], and replaces each by a view of its rows, so that one matrix product serves
/// them all.
pub(crate) fn stack_rows<S: AsRef<str>>(
    params: &mut HashMap<String, Tensor>,
    modules: &[S],
    suffix: &str,
) {
    let names: Vec<String> = modules
        .iter()
        .map(|m| format!("{}{suffix}", m.as_ref()))
        .collect();
    let parts: Vec<&Tensor> = names.iter().map(|n| &params[n]).collect();
    let fused = Tensor::cat(&parts, 0);
    let mut start = 0;
    for n in &names {
        let rows = params[n].size()[0];
        params.insert(n.clone(), fused.narrow(0, start, rows));
        start += rows;
    }
    let refs: Vec<&str> = modules.iter().map(AsRef::as_ref).collect();
    params.insert(format!("{}{suffix}", fused_name(&refs)), fused);
}

/// `x / sqrt(mean(x^2) + eps) * weight` over the last axis (the decoder's and Idefics2's RMS
/// norms).
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    x * (var + eps).rsqrt() * weight
}

/// `[batch, seq, heads * dim] -> [batch, heads, seq, dim]`.
pub(crate) fn split_heads(x: &Tensor, heads: usize, dim: usize) -> Tensor {
    let (b, s) = (x.size()[0], x.size()[1]);
    x.view([b, s, heads as i64, dim as i64]).transpose(1, 2)
}

/// `[batch, heads, seq, dim] -> [batch, seq, heads * dim]`.
pub(crate) fn merge_heads(x: &Tensor, heads: usize, dim: usize) -> Tensor {
    let (b, s) = (x.size()[0], x.size()[2]);
    x.transpose(1, 2)
        .contiguous()
        .view([b, s, (heads * dim) as i64])
}

/// `0` where query `i` (cache index `past + i`) may see key `j`, a large negative number
/// elsewhere: `[b, 1, s, past + s]`. Keys must be real tokens, not later than the query, and
/// within `window` of it.
fn additive_mask(key_mask: &Tensor, past: i64, s: i64, window: Option<usize>) -> Tensor {
    let device = key_mask.device();
    let total = key_mask.size()[1];
    let q_idx = Tensor::arange_start(past, past + s, (Kind::Int64, device)).view([s, 1]);
    let k_idx = Tensor::arange(total, (Kind::Int64, device)).view([1, total]);
    let mut allowed = k_idx.le_tensor(&q_idx);
    if let Some(w) = window {
        allowed = allowed.logical_and(&(&q_idx - &k_idx).lt(w as i64));
    }
    let allowed = allowed
        .view([1, 1, s, total])
        .logical_and(&key_mask.ne(0).view([-1, 1, 1, total]));
    let zeros = Tensor::zeros([1], (Kind::Float, device));
    zeros.where_scalarother(&allowed, f32::MIN as f64)
}

/// Query head `h` reads KV head `h / group`: `[b, kv, s, d] -> [b, kv * group, s, d]`.
fn repeat_kv(x: &Tensor, group: i64) -> Tensor {
    if group == 1 {
        return x.shallow_clone();
    }
    x.repeat_interleave_self_int(group, 1, None)
}

impl TorchPass<'_, '_, '_> {
    /// `x W^T + b` for the weights stored under `module`, in the pass's matmul type.
    fn matmul(&self, x: &Tensor, module: &str, bias: bool) -> Tensor {
        let (weight, bias_name) = (format!("{module}.weight"), format!("{module}.bias"));
        if self.forward.matmul == Kind::BFloat16 {
            let w = self.model.param_bf16(&weight);
            let b = bias.then(|| self.model.param_bf16(&bias_name));
            x.to_kind(Kind::BFloat16)
                .linear(&w, b.as_ref())
                .to_kind(Kind::Float)
        } else {
            let w = self.model.param(&weight);
            let b = bias.then(|| self.model.param(&bias_name));
            x.linear(w, b)
        }
    }
}

struct TorchPass<'m, 'f, 'c> {
    model: &'m TorchModel,
    forward: &'f Forward<'f>,
    ids: Tensor,
    positions: Tensor,
    key_mask: Tensor,
    past: i64,
    masks: HashMap<Option<usize>, Tensor>,
    cache: &'c mut KvCache,
    recorded: BTreeMap<(usize, Site), Tensor>,
    cross: Option<CrossInputs>,
}

impl Backend for TorchPass<'_, '_, '_> {
    type Tensor = Tensor;

    fn input_ids(&mut self) -> Tensor {
        self.ids.shallow_clone()
    }

    fn embed(&mut self, ids: &Tensor, table: &str) -> Tensor {
        Tensor::embedding(self.model.param(table), ids, -1, false, false)
    }

    fn input_embeds(&mut self, table: &str) -> Tensor {
        let ids = self.ids.shallow_clone();
        let h = self.embed(&ids, table);
        match self.forward.images {
            // A cross-attention decoder reads its images in the gated blocks.
            _ if self.cross.is_some() => h,
            None => h,
            Some(images) => {
                let at = ids.eq(images.token_id).unsqueeze(-1);
                let features = images.features.to_device(self.model.device);
                h.masked_scatter(&at, &features)
            }
        }
    }

    fn linear(&mut self, x: &Tensor, module: &str, bias: bool) -> Tensor {
        let y = self.matmul(x, module, bias);
        match self.forward.shifts.linear.and_then(|s| s.delta(module, x)) {
            Some(d) => y + d,
            None => y,
        }
    }

    fn linears(&mut self, x: &Tensor, modules: &[&str], bias: bool) -> Vec<Tensor> {
        let fused = fused_name(modules);
        if !self.model.params.contains_key(&format!("{fused}.weight")) {
            return modules.iter().map(|m| self.linear(x, m, bias)).collect();
        }
        let sizes: Vec<i64> = modules
            .iter()
            .map(|m| self.model.param(&format!("{m}.weight")).size()[0])
            .collect();
        let y = self.matmul(x, &fused, bias);
        y.split_with_sizes(&sizes, -1)
            .into_iter()
            .zip(modules)
            .map(
                |(y, m)| match self.forward.shifts.linear.and_then(|s| s.delta(m, x)) {
                    Some(d) => y + d,
                    None => y,
                },
            )
            .collect()
    }

    fn rms_norm(&mut self, x: &Tensor, weight: &str, eps: f64) -> Tensor {
        rms_norm(x, self.model.param(weight), eps)
    }

    fn silu(&mut self, x: &Tensor) -> Tensor {
        x.silu()
    }

    fn mul(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a * b
    }

    fn add(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a + b
    }

    fn split_heads(&mut self, x: &Tensor, heads: usize, dim: usize) -> Tensor {
        split_heads(x, heads, dim)
    }

    fn merge_heads(&mut self, x: &Tensor, heads: usize, dim: usize) -> Tensor {
        merge_heads(x, heads, dim)
    }

    fn rotary_tables(&mut self, inv_freq: &[f32], scaling: f32) -> (Tensor, Tensor) {
        let inv = Tensor::from_slice(inv_freq).to_device(self.model.device);
        let freqs = self.positions.to_kind(Kind::Float).unsqueeze(-1) * inv;
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        ((emb.cos() * scaling as f64), (emb.sin() * scaling as f64))
    }

    fn apply_rotary(&mut self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let half = x.size()[3] / 2;
        let (x1, x2) = (x.narrow(3, 0, half), x.narrow(3, half, half));
        let rotated = Tensor::cat(&[&x2.neg(), &x1], 3);
        let (cos, sin) = (cos.unsqueeze(1), sin.unsqueeze(1));
        x * cos + rotated * sin
    }

    fn attention(&mut self, q: &Tensor, k: &Tensor, v: &Tensor, spec: &AttentionSpec) -> Tensor {
        let (k, v) = match self.cache.layers[spec.layer].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2), Tensor::cat(&[&pv, v], 2)),
            None => (k.shallow_clone(), v.shallow_clone()),
        };
        self.cache.layers[spec.layer] = Some((k.shallow_clone(), v.shallow_clone()));
        let s = q.size()[2];
        let (key_mask, past) = (&self.key_mask, self.past);
        let mask = self
            .masks
            .entry(spec.window)
            .or_insert_with(|| additive_mask(key_mask, past, s, spec.window));
        let group = (spec.num_heads / spec.num_kv_heads) as i64;
        let scale = 1.0 / (spec.head_dim as f64).sqrt();
        match self.forward.shifts.attention {
            None => Tensor::scaled_dot_product_attention(
                q,
                &k,
                &v,
                Some(&*mask),
                0.0,
                false,
                scale,
                group > 1,
            ),
            Some(shift) => {
                let (k, v) = (repeat_kv(&k, group), repeat_kv(&v, group));
                let scores = q.matmul(&k.transpose(-2, -1)) * scale + &*mask;
                let lse = scores.logsumexp([-1], true);
                let h = (scores - &lse).exp().matmul(&v);
                shift.shift(spec.layer, q, &h, &lse)
            }
        }
    }

    fn gate(&mut self, x: &Tensor, alpha: &str) -> Tensor {
        x * self.model.param(alpha).tanh()
    }

    fn head_rms_norm(&mut self, x: &Tensor, weight: &str, eps: f64) -> Tensor {
        rms_norm(x, self.model.param(weight), eps)
    }

    fn cross_keys_values<F>(&mut self, block: usize, project: F) -> (Tensor, Tensor)
    where
        F: FnOnce(&mut Self, &Tensor) -> (Tensor, Tensor),
    {
        let blocks = &mut self.cache.cross.blocks;
        if blocks.len() <= block {
            blocks.resize_with(block + 1, || None);
        }
        let new = self
            .cross
            .as_ref()
            .and_then(|c| c.new_latents.as_ref())
            .map(Tensor::shallow_clone);
        let old = self.cache.cross.blocks[block].take();
        let kv = match (old, new) {
            (old, Some(z)) => {
                let (k, v) = project(self, &z);
                match old {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2), Tensor::cat(&[&pv, &v], 2)),
                    None => (k, v),
                }
            }
            (Some(kv), None) => kv,
            (None, None) => {
                // No image yet: no keys, which no token reads.
                let b = self.ids.size()[0];
                let c = &self.model.config;
                let empty = Tensor::zeros(
                    [b, c.num_heads as i64, 0, c.head_dim as i64],
                    (Kind::Float, self.model.device),
                );
                (empty.shallow_clone(), empty)
            }
        };
        self.cache.cross.blocks[block] = Some((kv.0.shallow_clone(), kv.1.shallow_clone()));
        kv
    }

    fn cross_attention(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        spec: &CrossAttentionSpec,
    ) -> Tensor {
        let cross = self
            .cross
            .as_ref()
            .expect("a cross-attention decoder's pass has cross inputs");
        if k.size()[2] == 0 {
            return q.zeros_like();
        }
        let scale = 1.0 / (spec.head_dim as f64).sqrt();
        let a = Tensor::scaled_dot_product_attention(
            q,
            k,
            v,
            Some(&cross.mask),
            0.0,
            false,
            scale,
            false,
        );
        a * &cross.reads
    }

    fn observe(&mut self, layer: usize, site: Site, x: Tensor) -> Tensor {
        let x = match self.forward.shifts.site {
            Some(s) => s.shift(layer, site, x),
            None => x,
        };
        if self.forward.record.contains(&site) {
            self.recorded.insert((layer, site), x.shallow_clone());
        }
        x
    }

    fn logits(&mut self, h: &Tensor, weight: &str) -> Tensor {
        let h = match self.forward.logits_last {
            Some(n) => {
                let s = h.size()[1];
                h.narrow(1, s - n.min(s), n.min(s))
            }
            None => h.shallow_clone(),
        };
        // The product in the pass's matmul type; the logits leave in float32.
        let module = weight.strip_suffix(".weight").unwrap_or(weight);
        self.matmul(&h, module, false)
    }
}

/// Greedy generation on libtorch: a [`TorchModel`] with its own cache and shifts, batch 1.
pub struct TorchLm<'m> {
    pub model: &'m TorchModel,
    pub shifts: Shifts<'m>,
    /// A vision-language model's image token id and the prompt's image tokens
    /// (`[n, hidden]` or `[images, per_image, hidden]`), for the first `extend` after a reset.
    pub images: Option<(i64, Tensor)>,
    cache: KvCache,
}

impl<'m> TorchLm<'m> {
    pub fn new(model: &'m TorchModel) -> Self {
        Self::with_shifts(model, Shifts::default())
    }

    pub fn with_shifts(model: &'m TorchModel, shifts: Shifts<'m>) -> Self {
        TorchLm {
            model,
            shifts,
            images: None,
            cache: KvCache::default(),
        }
    }
}

impl mimic_models::beam::BeamLm for TorchLm<'_> {
    type Error = crate::TrainerError;

    fn start(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        self.cache = KvCache::default();
        CausalLm::extend(self, prompt)
    }

    fn step(&mut self, parents: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        step_rows(self.model, self.shifts, &mut self.cache, parents, tokens)
    }
}

/// A model's held image tokens (`(image token id, features)`) as a pass's input.
fn image_tokens(images: &Option<(i64, Tensor)>) -> Option<ImageTokens<'_>> {
    images.as_ref().map(|(token_id, features)| ImageTokens {
        token_id: *token_id,
        features,
    })
}

/// One more token for every row of a cached batch: row `i` becomes a copy of row
/// `parents[i]` (the rows stay as they are when `parents` names each in order), then is fed
/// `tokens[i]`; returns each row's logits.
fn step_rows(
    model: &TorchModel,
    shifts: Shifts,
    cache: &mut KvCache,
    parents: &[usize],
    tokens: &[u32],
) -> Result<Vec<Vec<f32>>> {
    let _guard = tch::no_grad_guard();
    let rows = cache.key_mask.as_ref().map_or(0, |m| m.size()[0]) as usize;
    if !mimic_models::batch::keeps_every_row(parents, rows) {
        cache.select_rows(parents);
    }
    let ids: Vec<i64> = tokens.iter().map(|&x| x as i64).collect();
    let ids = Tensor::f_from_slice(&ids)?
        .view([-1, 1])
        .to_device(model.device);
    let mut f = Forward::new(&ids);
    f.logits_last = Some(1);
    f.shifts = shifts;
    f.generating = true;
    let out = model.forward(&f, Some(cache));
    last_logits_rows(&out.logits)
}

/// Each row's last logits, on the CPU in float32.
fn last_logits_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let logits = logits
        .select(1, -1)
        .to_device(Device::Cpu)
        .to_kind(Kind::Float);
    (0..logits.size()[0])
        .map(|i| Ok(Vec::<f32>::try_from(&logits.get(i))?))
        .collect()
}

impl CausalLm for TorchLm<'_> {
    type Error = crate::TrainerError;

    fn reset(&mut self) {
        self.cache = KvCache::default();
    }

    fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let _guard = tch::no_grad_guard();
        let ids: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
        let ids = Tensor::f_from_slice(&ids)?
            .view([1, -1])
            .to_device(self.model.device);
        let mut f = Forward::new(&ids);
        f.logits_last = Some(1);
        f.shifts = self.shifts;
        // The first pass after a reset is the prompt; later ones feed generated tokens.
        match self.cache.is_empty() {
            true => {
                let features = self.images.as_ref().map(|(_, f)| f);
                self.model.check_cross_images(&ids, features)?;
                f.images = image_tokens(&self.images);
            }
            false => f.generating = true,
        }
        let out = self.model.forward(&f, Some(&mut self.cache));
        let logits = out
            .logits
            .i((0, 0))
            .to_device(Device::Cpu)
            .to_kind(Kind::Float);
        Ok(Vec::<f32>::try_from(&logits)?)
    }

    fn max_positions(&self) -> usize {
        self.model.config.max_position_embeddings
    }
}

/// The trainer's forward running a batch of rows ([`BatchLm`]): prompts left-padded, each
/// row's padding masked in its cache, rows reordered (beam search) by selecting cache rows.
pub struct TorchBatch<'m> {
    pub model: &'m TorchModel,
    pub shifts: Shifts<'m>,
    pub pad: u32,
    /// A vision-language model's image token id and the image tokens of every prompt of the
    /// next [`BatchLm::start_batch`], row after row (`[n, hidden]` or `[images, per_image,
    /// hidden]`).
    pub images: Option<(i64, Tensor)>,
    cache: KvCache,
}

impl<'m> TorchBatch<'m> {
    pub fn new(model: &'m TorchModel, shifts: Shifts<'m>, pad: u32) -> Self {
        TorchBatch {
            model,
            shifts,
            pad,
            images: None,
            cache: KvCache::default(),
        }
    }
}

impl mimic_models::batch::BatchLm for TorchBatch<'_> {
    type Error = crate::TrainerError;

    fn start_batch(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let _guard = tch::no_grad_guard();
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(crate::TrainerError::Other(format!("prompt {i} is empty")));
        }
        // Positions follow from the mask in the forward pass.
        let (ids, mask, _) = mimic_models::batch::left_padded(prompts, self.pad);
        let shape = [prompts.len() as i64, -1];
        let ids = Tensor::f_from_slice(&ids)?
            .view(shape)
            .to_device(self.model.device);
        let mask = Tensor::f_from_slice(&mask)?
            .view(shape)
            .to_device(self.model.device);
        self.cache = KvCache::default();
        let features = self.images.as_ref().map(|(_, f)| f);
        self.model.check_cross_images(&ids, features)?;
        let mut f = Forward::new(&ids);
        f.attention_mask = Some(&mask);
        f.logits_last = Some(1);
        f.shifts = self.shifts;
        f.images = image_tokens(&self.images);
        let out = self.model.forward(&f, Some(&mut self.cache));
        last_logits_rows(&out.logits)
    }

    fn step_batch(&mut self, parents: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        step_rows(self.model, self.shifts, &mut self.cache, parents, tokens)
    }
}
