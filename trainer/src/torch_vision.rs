//! The vision towers executed by libtorch: [`TorchVision`] holds a SigLIP tower's weights on
//! a device, and one forward pass is a [`VisionBackend`] over `tch::Tensor`.
use std::collections::HashMap;

use std::collections::BTreeMap;

use mimic_models::vision::backend::{
    Activation, ConnectorSite, VisionAttentionSpec, VisionBackend,
};
use mimic_models::vision::siglip::{self, Features, SiglipVision, SiglipVisionConfig};
use mimic_models::vlm::inputs::EncoderInputs;
use mimic_models::vlm::{connector, ImageEncoder, VlmConfig};
use tch::{Device, Kind, Tensor};

use crate::torch_backend::{fused_name, stack_rows};
use crate::{Result, TrainerError};

/// A SigLIP vision tower's weights on a device, float32, in HF layout (under its prefix),
/// and a vision-language model's connector when it is one's image encoder.
pub struct TorchVision {
    pub config: SiglipVisionConfig,
    pub prefix: String,
    /// The model's config and the connector's tensor prefix.
    connector: Option<(VlmConfig, String)>,
    params: HashMap<String, Tensor>,
    pub device: Device,
}

/// One forward pass's inputs and options.
pub struct VisionForward<'a> {
    /// `[n_images, channels, height, width]` float32; height and width multiples of the patch.
    pub pixel_values: &'a Tensor,
    /// `[n_images, n_patches]` int64; `0..n_patches` when `None`, which needs images of the
    /// config's `image_size` (no position interpolation).
    pub position_ids: Option<&'a Tensor>,
    /// `[n_images, n_patches]`, nonzero for a real patch: padded patches are masked as keys.
    /// All patches are real when `None`.
    pub patch_mask: Option<&'a Tensor>,
    pub features: Features,
    /// Return every hidden state (`hidden_states[0..=k]` in transformers' numbering).
    pub record: bool,
}

impl<'a> VisionForward<'a> {
    pub fn new(pixel_values: &'a Tensor) -> Self {
        VisionForward {
            pixel_values,
            position_ids: None,
            patch_mask: None,
            features: Features::LastHiddenState,
            record: false,
        }
    }
}

pub struct VisionOutput {
    /// `[n_images, n_patches, hidden]` from the tower; from [`TorchVision::encode`], the
    /// image tokens `[n_images, tokens_per_image, text_hidden]`.
    pub hidden: Tensor,
    /// The hidden states the pass went through, by index, when `record` was set.
    pub hidden_states: Vec<Tensor>,
    /// The connector's intermediate results, when `record` was set.
    pub connector: BTreeMap<ConnectorSite, Tensor>,
}

impl TorchVision {
    /// Copies a loaded tower's tensors onto `device`, each layer's q/k/v weights and biases
    /// stacked into one matrix (the single ones are views of it).
    pub fn new(tower: &SiglipVision, device: Device) -> Result<Self> {
        Self::with_tensors(tower, None, device)
    }

    /// A vision-language model's image encoder: the tower and the connector.
    pub fn encoder(encoder: &ImageEncoder, device: Device) -> Result<Self> {
        Self::with_tensors(
            &encoder.tower,
            Some((encoder.config.clone(), encoder.connector_prefix.clone())),
            device,
        )
    }

    fn with_tensors(
        tower: &SiglipVision,
        connector: Option<(VlmConfig, String)>,
        device: Device,
    ) -> Result<Self> {
        let cfg = &tower.config;
        let mut params = HashMap::new();
        let mut names = cfg.expected_tensors(&tower.prefix);
        if let Some((vlm, prefix)) = &connector {
            names.extend(vlm.connector_tensors(prefix));
        }
        for (name, _) in names {
            let t = tower.weights.get(&name)?;
            let shape: Vec<i64> = t.shape.iter().map(|&x| x as i64).collect();
            let tensor = Tensor::f_from_slice(&t.data)?
                .f_reshape(&shape)?
                .f_to_device(device)?;
            params.insert(name, tensor);
        }
        for l in 0..cfg.num_layers {
            let qkv: Vec<String> = ["q_proj", "k_proj", "v_proj"]
                .iter()
                .map(|m| format!("{}encoder.layers.{l}.self_attn.{m}", tower.prefix))
                .collect();
            for suffix in [".weight", ".bias"] {
                stack_rows(&mut params, &qkv, suffix);
            }
        }
        Ok(TorchVision {
            config: cfg.clone(),
            prefix: tower.prefix.clone(),
            connector,
            params,
            device,
        })
    }

    /// The tensors training updates, in a fixed order (by name): every tensor except the
    /// single q/k/v ones, which are views of their stacked matrix.
    fn trainable_names(&self) -> Vec<String> {
        let mut views = std::collections::HashSet::new();
        for name in self.params.keys().filter(|n| n.contains('+')) {
            let (modules, suffix) = name
                .rsplit_once('.')
                .map(|(m, s)| (m, format!(".{s}")))
                .unwrap_or((name, String::new()));
            // `a.q_proj+a.k_proj+a.v_proj.weight`: each module, then the suffix.
            for m in modules.split('+') {
                views.insert(format!("{m}{suffix}"));
            }
        }
        let mut names: Vec<String> = self
            .params
            .keys()
            .filter(|n| !views.contains(*n))
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Marks the trainable tensors as requiring gradients and returns them (handles to the
    /// same tensors), in [`TorchVision::trainable_params`]' order.
    pub fn make_trainable(&mut self) -> Vec<Tensor> {
        let names = self.trainable_names();
        names
            .iter()
            .map(|n| {
                let t = self.params[n].detach().set_requires_grad(true);
                self.params.insert(n.clone(), t.shallow_clone());
                t
            })
            .collect()
    }

    /// The trainable tensors by name (handles sharing their storage and gradients).
    pub fn trainable_params(&self) -> Vec<(String, Tensor)> {
        self.trainable_names()
            .into_iter()
            .map(|n| {
                let t = self.params[&n].shallow_clone();
                (n, t)
            })
            .collect()
    }

    /// Overwrites the trainable tensors with `values`, in [`TorchVision::trainable_params`]'
    /// order (a resumed run).
    pub fn load_trainable(&mut self, values: &[Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let names = self.trainable_names();
        if names.len() != values.len() {
            return Err(TrainerError::Other(format!(
                "{} tensors given for {} trainable ones",
                values.len(),
                names.len()
            )));
        }
        for (n, v) in names.iter().zip(values) {
            let mut p = self.params[n].shallow_clone();
            if p.size() != v.size() {
                return Err(TrainerError::Other(format!(
                    "{n}: shape {:?}, expected {:?}",
                    v.size(),
                    p.size()
                )));
            }
            p.f_copy_(v)?;
        }
        Ok(())
    }

    /// The tower's and connector's tensors under their HF names (the single q/k/v ones, not
    /// the stacked matrices), detached, in name order.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .params
            .iter()
            .filter(|(n, _)| !n.contains('+'))
            .map(|(n, t)| (n.clone(), t.detach()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn param(&self, name: &str) -> &Tensor {
        // `new` copied every tensor the config implies, checked by `SiglipVision::open`.
        self.params
            .get(name)
            .unwrap_or_else(|| panic!("vision weight {name} missing after load-time check"))
    }

    /// Runs the tower; errors on inputs whose shapes do not fit the config.
    pub fn forward(&self, f: &VisionForward) -> Result<VisionOutput> {
        let mut pass = self.pass(f)?;
        let hidden = siglip::forward(&self.config, &self.prefix, f.features, &mut pass);
        Ok(pass.output(hidden))
    }

    /// Runs the tower and the connector (`f.features` is the model's own): the image tokens
    /// `[n_images, tokens_per_image, text_hidden]`. Errors on a bare tower.
    pub fn encode(&self, f: &VisionForward) -> Result<VisionOutput> {
        let Some((vlm, prefix)) = &self.connector else {
            return Err(TrainerError::Other(
                "this vision tower has no connector (not a vision-language model's)".into(),
            ));
        };
        let mut pass = self.pass(f)?;
        let hidden = connector::image_features(vlm, &self.prefix, prefix, &mut pass);
        Ok(pass.output(hidden))
    }

    /// [`TorchVision::encode`] on a vision-language model's encoder inputs (host tensors).
    pub fn encode_inputs(&self, inputs: &EncoderInputs, record: bool) -> Result<VisionOutput> {
        let Some((vlm, _)) = &self.connector else {
            return Err(TrainerError::Other(
                "this vision tower has no connector (not a vision-language model's)".into(),
            ));
        };
        let shape: Vec<i64> = inputs
            .pixel_values
            .shape
            .iter()
            .map(|&x| x as i64)
            .collect();
        let pixels = Tensor::f_from_slice(&inputs.pixel_values.data)?.f_reshape(&shape)?;
        let rows = |v: &Vec<i64>| -> Result<Tensor> {
            let n = shape[0];
            Ok(Tensor::f_from_slice(v)?.f_reshape([n, v.len() as i64 / n.max(1)])?)
        };
        let position_ids = inputs.position_ids.as_ref().map(rows).transpose()?;
        let patch_mask = inputs.patch_mask.as_ref().map(rows).transpose()?;
        let mut f = VisionForward::new(&pixels);
        f.position_ids = position_ids.as_ref();
        f.patch_mask = patch_mask.as_ref();
        f.features = vlm.features();
        f.record = record;
        self.encode(&f)
    }

    /// A pass over checked inputs.
    fn pass(&self, f: &VisionForward) -> Result<TorchVisionPass<'_>> {
        let cfg = &self.config;
        let size = f.pixel_values.size();
        let bad = |msg: String| Err(TrainerError::Other(format!("vision input: {msg}")));
        if size.len() != 4 || size[1] != cfg.num_channels as i64 {
            return bad(format!(
                "pixel_values of shape {size:?}, expected [n, {}, height, width]",
                cfg.num_channels
            ));
        }
        // A partial last row or column of patches is dropped, as the stride-`patch`
        // convolution drops it in transformers.
        let p = cfg.patch_size as i64;
        if size[2] < p || size[3] < p {
            return bad(format!(
                "image {}x{} is smaller than one {p}x{p} patch",
                size[2], size[3]
            ));
        }
        let (n, patches) = (size[0], (size[2] / p) * (size[3] / p));
        let position_ids = match f.position_ids {
            Some(ids) => {
                if ids.size() != [n, patches] {
                    return bad(format!(
                        "position_ids of shape {:?}, expected [{n}, {patches}]",
                        ids.size()
                    ));
                }
                ids.to_kind(Kind::Int64).to_device(self.device)
            }
            None => {
                if patches != cfg.num_patches() as i64 {
                    return bad(format!(
                        "{}x{} images give {patches} patches, the position table has {} \
                         (pass position ids; interpolation is not supported)",
                        size[2],
                        size[3],
                        cfg.num_patches()
                    ));
                }
                // Every position, CLIP's class token's first.
                let positions = cfg.num_positions() as i64;
                Tensor::arange(positions, (Kind::Int64, self.device))
                    .unsqueeze(0)
                    .expand([n, positions], false)
            }
        };
        let mask = match f.patch_mask {
            Some(m) => {
                if m.size() != [n, patches] {
                    return bad(format!(
                        "patch_mask of shape {:?}, expected [{n}, {patches}]",
                        m.size()
                    ));
                }
                let valid = m.ne(0).to_device(self.device);
                // transformers drops the mask when every patch is real.
                if bool::try_from(valid.all())? {
                    None
                } else {
                    let zeros = Tensor::zeros([1], (Kind::Float, self.device));
                    Some(
                        zeros
                            .where_scalarother(&valid, f32::MIN as f64)
                            .view([n, 1, 1, patches]),
                    )
                }
            }
            None => None,
        };
        Ok(TorchVisionPass {
            model: self,
            pixels: f.pixel_values.to_kind(Kind::Float).to_device(self.device),
            position_ids,
            mask,
            record: f.record,
            hidden_states: Vec::new(),
            connector: BTreeMap::new(),
        })
    }
}

struct TorchVisionPass<'m> {
    model: &'m TorchVision,
    pixels: Tensor,
    position_ids: Tensor,
    /// Additive key mask `[n, 1, 1, patches]`, when some patches are padding.
    mask: Option<Tensor>,
    record: bool,
    hidden_states: Vec<Tensor>,
    connector: BTreeMap<ConnectorSite, Tensor>,
}

impl TorchVisionPass<'_> {
    fn output(self, hidden: Tensor) -> VisionOutput {
        VisionOutput {
            hidden,
            hidden_states: self.hidden_states,
            connector: self.connector,
        }
    }
}

impl VisionBackend for TorchVisionPass<'_> {
    type Tensor = Tensor;

    fn pixel_values(&mut self) -> Tensor {
        self.pixels.shallow_clone()
    }

    fn patch_position_ids(&mut self) -> Tensor {
        self.position_ids.shallow_clone()
    }

    fn patch_embed(&mut self, pixels: &Tensor, module: &str, patch: usize, bias: bool) -> Tensor {
        let w = self.model.param(&format!("{module}.weight"));
        let b = bias.then(|| self.model.param(&format!("{module}.bias")));
        let p = patch as i64;
        // [n, hidden, H/p, W/p] -> [n, patches, hidden]
        pixels
            .conv2d(w, b, [p, p], [0, 0], [1, 1], 1)
            .flatten(2, 3)
            .transpose(1, 2)
    }

    fn embed(&mut self, ids: &Tensor, table: &str) -> Tensor {
        Tensor::embedding(self.model.param(table), ids, -1, false, false)
    }

    fn linear(&mut self, x: &Tensor, module: &str, bias: bool) -> Tensor {
        let w = self.model.param(&format!("{module}.weight"));
        let b = bias.then(|| self.model.param(&format!("{module}.bias")));
        x.linear(w, b)
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
        self.linear(x, &fused, bias).split_with_sizes(&sizes, -1)
    }

    fn layer_norm(&mut self, x: &Tensor, module: &str, eps: f64) -> Tensor {
        let w = self.model.param(&format!("{module}.weight"));
        let b = self.model.param(&format!("{module}.bias"));
        let width = *x.size().last().expect("activations have a last axis");
        x.layer_norm([width], Some(w), Some(b), eps, false)
    }

    fn activation(&mut self, x: &Tensor, act: Activation) -> Tensor {
        match act {
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Gelu => x.gelu("none"),
            Activation::Silu => x.silu(),
            Activation::Relu => x.relu(),
        }
    }

    fn add(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a + b
    }

    fn split_heads(&mut self, x: &Tensor, heads: usize, dim: usize) -> Tensor {
        crate::torch_backend::split_heads(x, heads, dim)
    }

    fn merge_heads(&mut self, x: &Tensor, heads: usize, dim: usize) -> Tensor {
        crate::torch_backend::merge_heads(x, heads, dim)
    }

    fn attention(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        spec: &VisionAttentionSpec,
    ) -> Tensor {
        let scale = 1.0 / (spec.head_dim as f64).sqrt();
        // The perceiver's latents follow the patches as keys, always visible.
        let mask = self.mask.as_ref().map(|m| {
            if spec.extra_keys == 0 {
                return m.shallow_clone();
            }
            let n = m.size()[0];
            let zeros = Tensor::zeros([n, 1, 1, spec.extra_keys as i64], (Kind::Float, m.device()));
            Tensor::cat(&[m, &zeros], -1)
        });
        let gqa = spec.num_heads != spec.num_kv_heads;
        Tensor::scaled_dot_product_attention(q, k, v, mask.as_ref(), 0.0, false, scale, gqa)
    }

    fn observe(&mut self, hidden_state: usize, x: Tensor) -> Tensor {
        if self.record {
            debug_assert_eq!(self.hidden_states.len(), hidden_state);
            self.hidden_states.push(x.shallow_clone());
        }
        x
    }

    fn rms_norm(&mut self, x: &Tensor, weight: &str, eps: f64) -> Tensor {
        crate::torch_backend::rms_norm(x, self.model.param(weight), eps)
    }

    fn mul(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a * b
    }

    fn concat_seq(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        Tensor::cat(&[a, b], 1)
    }

    fn broadcast_param(&mut self, name: &str) -> Tensor {
        let n = self.pixels.size()[0];
        let p = self.model.param(name);
        let p = match p.dim() {
            1 => p.unsqueeze(0),
            _ => p.shallow_clone(),
        };
        p.unsqueeze(0).expand([n, p.size()[0], p.size()[1]], false)
    }

    fn reshape_rows(&mut self, x: &Tensor, dims: &[usize]) -> Tensor {
        let mut shape = vec![x.size()[0]];
        shape.extend(dims.iter().map(|&d| d as i64));
        x.reshape(&shape)
    }

    fn permute(&mut self, x: &Tensor, perm: &[usize]) -> Tensor {
        let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        x.permute(&perm)
    }

    fn skip_tokens(&mut self, x: &Tensor, k: usize) -> Tensor {
        let s = x.size()[1];
        x.narrow(1, k as i64, s - k as i64)
    }

    fn observe_connector(&mut self, site: ConnectorSite, x: Tensor) -> Tensor {
        if self.record {
            self.connector.insert(site, x.shallow_clone());
        }
        x
    }
}
