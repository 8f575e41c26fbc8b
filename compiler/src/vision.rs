//! The ONNX backend of the vision towers: every [`VisionBackend`] operation becomes graph
//! nodes, so `siglip::forward` over an [`OnnxVision`] is the tower's ONNX graph.
//!
//! Graph interface ([`mimic_models::vision::io`]):
//! - input `pixel_values [n_images, channels, height, width]` float32;
//! - with `variable_size` (Idefics2/3), inputs `patch_position_ids [n_images, n_patches]` and
//!   `patch_attention_mask [n_images, n_patches]` (int64, 1 = real patch), both computed on
//!   the host ([`mimic_models::vision::patches`]); without it the ids are `0..n_patches`, a
//!   constant, and images must have the config's size;
//! - output `image_hidden_states [n_images, n_patches, hidden]`, and with `hidden_states`
//!   set, `hidden_states.{k}` for each hidden state the tower passes through.
//!
//! Weights are written in the model's HF names, linear weights transposed to `[in, out]`
//! for MatMul (`{name}.T`).
use std::collections::HashSet;
use std::path::Path;

use mimic_models::vision::backend::{Activation, VisionAttentionSpec, VisionBackend};
use mimic_models::vision::io::{
    hidden_state_output, IMAGE_FEATURES, IMAGE_HIDDEN_STATES, PATCH_ATTENTION_MASK,
    PATCH_POSITION_IDS, PIXEL_VALUES, VISION_DATA_FILE, VISION_MODEL_FILE,
};
use mimic_models::vision::siglip::{self, Features, SiglipVision};
use mimic_models::vlm::{connector, ImageEncoder, VlmArchitecture};
use mimic_models::Weights;
use prost::Message;

use crate::graph::{attr_float, attr_int, attr_ints, attr_string, value_info, Dim, GraphBuilder};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::ModelProto;
use crate::{CompileError, Result};

/// What the vision graph computes and takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisionCompileOptions {
    pub features: Features,
    /// Padded batches of images of any size: position ids and the patch mask are inputs.
    pub variable_size: bool,
    /// Every hidden state is also a graph output (for parity checks).
    pub hidden_states: bool,
}

impl Default for VisionCompileOptions {
    fn default() -> Self {
        VisionCompileOptions {
            features: Features::LastHiddenState,
            variable_size: false,
            hidden_states: false,
        }
    }
}

/// Records the tower as ONNX nodes. Weights are written as they are first used.
pub struct OnnxVision<'w> {
    pub g: GraphBuilder,
    weights: &'w Weights,
    num_positions: usize,
    variable_size: bool,
    hidden_states: bool,
    emitted: HashSet<String>,
    /// The additive key mask `[n, 1, 1, patches]`, built on first use.
    mask: Option<String>,
    error: Option<CompileError>,
}

impl<'w> OnnxVision<'w> {
    pub fn new(g: GraphBuilder, tower: &'w SiglipVision, opts: &VisionCompileOptions) -> Self {
        let mut b = OnnxVision {
            g,
            weights: &tower.weights,
            num_positions: tower.config.num_positions(),
            variable_size: opts.variable_size,
            hidden_states: opts.hidden_states,
            emitted: HashSet::new(),
            mask: None,
            error: None,
        };
        use Dim::*;
        let cfg = &tower.config;
        b.g.inputs.push(value_info(
            PIXEL_VALUES,
            DataType::Float,
            &[
                Named("n_images"),
                Fixed(cfg.num_channels as i64),
                Named("height"),
                Named("width"),
            ],
        ));
        if opts.variable_size {
            for name in [PATCH_POSITION_IDS, PATCH_ATTENTION_MASK] {
                b.g.inputs.push(value_info(
                    name,
                    DataType::Int64,
                    &[Named("n_images"), Named("n_patches")],
                ));
            }
        }
        let hidden = [
            Named("n_images"),
            Named("n_patches"),
            Fixed(cfg.hidden_size as i64),
        ];
        if opts.hidden_states {
            let last = match opts.features {
                Features::LastHiddenState => cfg.num_layers,
                Features::HiddenState(k) => k.min(cfg.num_layers),
            };
            for k in 0..=last {
                b.g.outputs.push(value_info(
                    &hidden_state_output(k),
                    DataType::Float,
                    &hidden,
                ));
            }
        }
        b
    }

    fn keep_error(&mut self, r: Result<String>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }

    /// A weight in HF layout, emitted once.
    fn weight(&mut self, name: &str) -> String {
        if self.emitted.insert(name.to_string()) {
            let t = self.weights.get(name).expect("weights checked at load");
            let r = self.g.weight(name, &t.shape, &t.data);
            self.keep_error(r);
        }
        name.to_string()
    }

    /// A 2-D weight transposed to `[in, out]` for MatMul, emitted once.
    fn weight_t(&mut self, name: &str) -> String {
        let tname = format!("{name}.T");
        if self.emitted.insert(tname.clone()) {
            let t = self
                .weights
                .get(name)
                .expect("weights checked at load")
                .transpose2();
            let r = self.g.weight(&tname, &t.shape, &t.data);
            self.keep_error(r);
        }
        tname
    }

    /// The additive key mask from `patch_attention_mask`: 0 on real patches, the float32
    /// minimum on padding, `[n, 1, 1, patches]`.
    fn key_mask(&mut self) -> String {
        if let Some(m) = &self.mask {
            return m.clone();
        }
        let real = self.g.node(
            "Cast",
            &[PATCH_ATTENTION_MASK],
            vec![attr_int("to", DataType::Bool as i64)],
        );
        let zero = self.g.scalar_f32(0.0);
        let min = self.g.scalar_f32(f32::MIN);
        let add = self.g.node("Where", &[&real, &zero, &min], vec![]);
        let axes = self.g.const_i64(&[1, 2]);
        let m = self.g.node("Unsqueeze", &[&add, &axes], vec![]);
        self.mask = Some(m.clone());
        m
    }
}

impl VisionBackend for OnnxVision<'_> {
    type Tensor = String;

    fn pixel_values(&mut self) -> String {
        PIXEL_VALUES.into()
    }

    fn patch_position_ids(&mut self) -> String {
        if self.variable_size {
            return PATCH_POSITION_IDS.into();
        }
        // `[1, patches]`: the gathered rows broadcast over the images.
        let ids: Vec<i64> = (0..self.num_positions as i64).collect();
        let ids = self.g.const_i64(&ids);
        let axes = self.g.const_i64(&[0]);
        self.g.node("Unsqueeze", &[&ids, &axes], vec![])
    }

    fn patch_embed(&mut self, pixels: &String, module: &str, patch: usize, bias: bool) -> String {
        let w = self.weight(&format!("{module}.weight"));
        let mut inputs = vec![pixels.clone(), w];
        if bias {
            inputs.push(self.weight(&format!("{module}.bias")));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let p = patch as i64;
        let conv = self.g.node(
            "Conv",
            &inputs,
            vec![
                attr_ints("kernel_shape", &[p, p]),
                attr_ints("strides", &[p, p]),
            ],
        );
        // [n, hidden, H/p, W/p] -> [n, hidden, patches] -> [n, patches, hidden]
        let shape = self.g.const_i64(&[0, 0, -1]);
        let flat = self.g.node("Reshape", &[&conv, &shape], vec![]);
        self.g
            .node("Transpose", &[&flat], vec![attr_ints("perm", &[0, 2, 1])])
    }

    fn embed(&mut self, ids: &String, table: &str) -> String {
        let w = self.weight(table);
        self.g.node("Gather", &[&w, ids], vec![attr_int("axis", 0)])
    }

    fn linear(&mut self, x: &String, module: &str, bias: bool) -> String {
        let w = self.weight_t(&format!("{module}.weight"));
        let y = self.g.node("MatMul", &[x, &w], vec![]);
        if !bias {
            return y;
        }
        let b = self.weight(&format!("{module}.bias"));
        self.g.node("Add", &[&y, &b], vec![])
    }

    fn layer_norm(&mut self, x: &String, module: &str, eps: f64) -> String {
        let w = self.weight(&format!("{module}.weight"));
        let b = self.weight(&format!("{module}.bias"));
        self.g.node(
            "LayerNormalization",
            &[x, &w, &b],
            vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)],
        )
    }

    fn activation(&mut self, x: &String, act: Activation) -> String {
        let approximate = match act {
            Activation::GeluTanh => "tanh",
            Activation::Gelu => "none",
            Activation::Silu => {
                let s = self.g.node("Sigmoid", &[x], vec![]);
                return self.g.node("Mul", &[x, &s], vec![]);
            }
            Activation::Relu => return self.g.node("Relu", &[x], vec![]),
        };
        self.g
            .node("Gelu", &[x], vec![attr_string("approximate", approximate)])
    }

    fn add(&mut self, a: &String, b: &String) -> String {
        self.g.node("Add", &[a, b], vec![])
    }

    fn split_heads(&mut self, x: &String, heads: usize, dim: usize) -> String {
        let shape = self.g.const_i64(&[0, 0, heads as i64, dim as i64]);
        let r = self.g.node("Reshape", &[x, &shape], vec![]);
        self.g
            .node("Transpose", &[&r], vec![attr_ints("perm", &[0, 2, 1, 3])])
    }

    fn merge_heads(&mut self, x: &String, heads: usize, dim: usize) -> String {
        let t = self
            .g
            .node("Transpose", &[x], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let shape = self.g.const_i64(&[0, 0, (heads * dim) as i64]);
        self.g.node("Reshape", &[&t, &shape], vec![])
    }

    fn attention(
        &mut self,
        q: &String,
        k: &String,
        v: &String,
        spec: &VisionAttentionSpec,
    ) -> String {
        let (k, v) = if spec.num_kv_heads == spec.num_heads {
            (k.clone(), v.clone())
        } else {
            let group = (spec.num_heads / spec.num_kv_heads) as i64;
            (
                self.repeat_kv(k, group, spec),
                self.repeat_kv(v, group, spec),
            )
        };
        let kt = self
            .g
            .node("Transpose", &[&k], vec![attr_ints("perm", &[0, 1, 3, 2])]);
        let scores = self.g.node("MatMul", &[q, &kt], vec![]);
        let scale = self.g.scalar_f32(1.0 / (spec.head_dim as f32).sqrt());
        let mut scores = self.g.node("Mul", &[&scores, &scale], vec![]);
        if self.variable_size {
            let mut mask = self.key_mask();
            if spec.extra_keys > 0 {
                // The perceiver's latents follow the patches as keys, always visible.
                let pads = self
                    .g
                    .const_i64(&[0, 0, 0, 0, 0, 0, 0, spec.extra_keys as i64]);
                mask = self.g.node("Pad", &[&mask, &pads], vec![]);
            }
            scores = self.g.node("Add", &[&scores, &mask], vec![]);
        }
        let probs = self
            .g
            .node("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        self.g.node("MatMul", &[&probs, &v], vec![])
    }

    fn observe(&mut self, hidden_state: usize, x: String) -> String {
        if self.hidden_states {
            let name = hidden_state_output(hidden_state);
            self.g.node_named("Identity", &[&x], &[&name], vec![]);
        }
        x
    }

    fn rms_norm(&mut self, x: &String, weight: &str, eps: f64) -> String {
        let w = self.weight(weight);
        self.g.node(
            "RMSNormalization",
            &[x, &w],
            vec![
                attr_int("axis", -1),
                attr_float("epsilon", eps as f32),
                attr_int("stash_type", 1),
            ],
        )
    }

    fn mul(&mut self, a: &String, b: &String) -> String {
        self.g.node("Mul", &[a, b], vec![])
    }

    fn concat_seq(&mut self, a: &String, b: &String) -> String {
        self.g.node("Concat", &[a, b], vec![attr_int("axis", 1)])
    }

    fn broadcast_param(&mut self, name: &str) -> String {
        let w = self.weight(name);
        let shape = &self
            .weights
            .get(name)
            .expect("weights checked at load")
            .shape;
        // A 1-D parameter (CLIP's class embedding) is one row.
        let rows = match shape[..] {
            [d] => self.g.const_i64(&[1, d as i64]),
            _ => self.g.const_i64(&[shape[0] as i64, shape[1] as i64]),
        };
        let n = self.g.node(
            "Shape",
            &[PIXEL_VALUES],
            vec![attr_int("start", 0), attr_int("end", 1)],
        );
        let target = self
            .g
            .node("Concat", &[&n, &rows], vec![attr_int("axis", 0)]);
        self.g.node("Expand", &[&w, &target], vec![])
    }

    fn reshape_rows(&mut self, x: &String, dims: &[usize]) -> String {
        let mut shape = vec![0i64];
        shape.extend(dims.iter().map(|&d| d as i64));
        let shape = self.g.const_i64(&shape);
        self.g.node("Reshape", &[x, &shape], vec![])
    }

    fn permute(&mut self, x: &String, perm: &[usize]) -> String {
        let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        self.g
            .node("Transpose", &[x], vec![attr_ints("perm", &perm)])
    }

    fn skip_tokens(&mut self, x: &String, k: usize) -> String {
        let starts = self.g.const_i64(&[k as i64]);
        let ends = self.g.const_i64(&[i64::MAX]);
        let axes = self.g.const_i64(&[1]);
        self.g.node("Slice", &[x, &starts, &ends, &axes], vec![])
    }
}

impl OnnxVision<'_> {
    /// Key/value heads repeated for grouped queries: `[n, kv, s, d] -> [n, kv * group, s, d]`,
    /// query head `h` reading KV head `h / group`.
    fn repeat_kv(&mut self, x: &str, group: i64, spec: &VisionAttentionSpec) -> String {
        let axes = self.g.const_i64(&[2]);
        let x = self.g.node("Unsqueeze", &[x, &axes], vec![]);
        let reps = self.g.const_i64(&[1, 1, group, 1, 1]);
        let x = self.g.node("Expand", &[&x, &reps], vec![]);
        let shape = self
            .g
            .const_i64(&[0, spec.num_heads as i64, -1, spec.head_dim as i64]);
        self.g.node("Reshape", &[&x, &shape], vec![])
    }
}

/// The tower's ONNX model; large weights go to `data_path` when given.
pub fn emit_vision(
    tower: &SiglipVision,
    opts: &VisionCompileOptions,
    data_path: Option<&Path>,
) -> Result<ModelProto> {
    let g = GraphBuilder::new(data_path)?;
    let mut b = OnnxVision::new(g, tower, opts);
    let out = siglip::forward(&tower.config, &tower.prefix, opts.features, &mut b);
    let dims = [
        Dim::Named("n_images"),
        Dim::Named("n_patches"),
        Dim::Fixed(tower.config.hidden_size as i64),
    ];
    b.finish(&out, IMAGE_HIDDEN_STATES, &dims)
}

/// A vision-language model's image encoder (tower and connector) as an ONNX model, output
/// [`IMAGE_FEATURES`] `[n_images, tokens_per_image, width]` (the text width; Idefics' latents
/// keep the vision width); Idefics2/3 encoders take padded batches (`variable_size`).
pub fn emit_image_encoder(
    encoder: &ImageEncoder,
    hidden_states: bool,
    data_path: Option<&Path>,
) -> Result<ModelProto> {
    let cfg = &encoder.config;
    let opts = VisionCompileOptions {
        features: cfg.features(),
        variable_size: matches!(
            cfg.architecture,
            VlmArchitecture::Idefics2 | VlmArchitecture::Idefics3
        ),
        hidden_states,
    };
    let g = GraphBuilder::new(data_path)?;
    let mut b = OnnxVision::new(g, &encoder.tower, &opts);
    let out = connector::image_features(
        cfg,
        &encoder.tower.prefix,
        &encoder.connector_prefix,
        &mut b,
    );
    let dims = [
        Dim::Named("n_images"),
        Dim::Fixed(cfg.tokens_per_image() as i64),
        Dim::Fixed(cfg.image_feature_width() as i64),
    ];
    b.finish(&out, IMAGE_FEATURES, &dims)
}

impl OnnxVision<'_> {
    /// The graph's output `name` (`dims`) from the value `out`, and the checked model.
    fn finish(mut self, out: &str, name: &str, dims: &[Dim]) -> Result<ModelProto> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.g
            .outputs
            .insert(0, value_info(name, DataType::Float, dims));
        self.g.node_named("Identity", &[out], &[name], vec![]);
        let graph = self.g.finish("mimic-vision")?;
        crate::compile::finish_model(graph)
    }
}

/// Writes a vision-language model's image encoder as `dir/vision.onnx` (weights in
/// `dir/vision.onnx.data`).
pub fn compile_image_encoder(encoder: &ImageEncoder, dir: &Path) -> Result<()> {
    write_image_encoder(encoder, false, dir)
}

/// [`compile_image_encoder`], exposing every hidden state of the tower when `hidden_states`
/// is set (parity checks).
pub fn write_image_encoder(encoder: &ImageEncoder, hidden_states: bool, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CompileError::io(dir, e))?;
    let m = emit_image_encoder(encoder, hidden_states, Some(&dir.join(VISION_DATA_FILE)))?;
    let path = dir.join(VISION_MODEL_FILE);
    std::fs::write(&path, m.encode_to_vec()).map_err(|e| CompileError::io(&path, e))
}

/// Writes the tower as `dir/vision.onnx` (weights in `dir/vision.onnx.data`).
pub fn compile_vision(tower: &SiglipVision, opts: &VisionCompileOptions, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CompileError::io(dir, e))?;
    let m = emit_vision(tower, opts, Some(&dir.join(VISION_DATA_FILE)))?;
    let path = dir.join(VISION_MODEL_FILE);
    std::fs::write(&path, m.encode_to_vec()).map_err(|e| CompileError::io(&path, e))
}
