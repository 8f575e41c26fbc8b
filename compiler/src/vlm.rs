//! A vision-language model compiled into one folder of three graphs (the split ONNX Runtime
//! GenAI and optimum use):
//!
//! - `vision.onnx`: the image encoder, tower and connector ([`crate::vision`]):
//!   `pixel_values` (with Idefics2/3's patch ids and mask) to `image_features`;
//! - `embed.onnx`: `input_ids` and the prompt's image tokens to `inputs_embeds`, each
//!   `<image>` token's row replaced by the next image token in order;
//! - `model.onnx`: the decoder over `inputs_embeds`, with the KV cache and whatever heads
//!   were compiled in, exactly as a text model's ([`crate::compile`]).
//!
//! A cross-attention decoder (Idefics) has `cross_kv.onnx` in place of `embed.onnx`: the
//! image encoder's latents to each gated block's keys and values, which `model.onnx` (over
//! `input_ids`) takes with each token's image slot ([`crate::cross`]).
//!
//! `mimic.json` carries a [`VisionContract`] naming the other two graphs and the model's
//! configuration; the processor's `preprocessor_config.json` is copied beside them.
use std::path::Path;

use mimic_models::contract::{
    Contract, VisionContract, CONTRACT_FILE, CROSS_KV_DATA_FILE, CROSS_KV_MODEL_FILE,
};
use mimic_models::vision::io::{
    EMBED_DATA_FILE, EMBED_MODEL_FILE, IMAGE_FEATURES, PROCESSOR_FILE, VISION_MODEL_FILE,
};
use mimic_models::vlm::VisionLanguageModel;
use mimic_models::Model;
use prost::Message;

use crate::compile::{write_contract, write_folder_atomically, CompileOptions};
use crate::fold::HeadsSource;
use crate::graph::{attr_int, value_info, Dim, GraphBuilder};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::ModelProto;
use crate::{CompileError, Result};

/// The embedding graph: `input_ids [batch, seq]` and `image_features [n_tokens, hidden]` to
/// `inputs_embeds [batch, seq, hidden]`. With `is_image = (ids == image_token_id)` flattened,
/// `index = is_image * cumsum(is_image)` numbers the image positions from 1 (0 elsewhere), so
/// gathering from `[0; image_features]` puts the `k`-th image token at the `k`-th `<image>`
/// and works with no image tokens at all (a decode step).
pub fn emit_embed(
    decoder: &Model,
    image_token_id: u32,
    data_path: Option<&Path>,
) -> Result<ModelProto> {
    use mimic_models::contract::{INPUTS_EMBEDS, INPUT_IDS};
    use Dim::*;
    let cfg = &decoder.config;
    let hidden = cfg.hidden_size as i64;
    let mut g = GraphBuilder::new(data_path)?;
    g.inputs.push(value_info(
        INPUT_IDS,
        DataType::Int64,
        &[Named("batch"), Named("seq")],
    ));
    g.inputs.push(value_info(
        IMAGE_FEATURES,
        DataType::Float,
        &[Named("n_image_tokens"), Fixed(hidden)],
    ));
    g.outputs.push(value_info(
        INPUTS_EMBEDS,
        DataType::Float,
        &[Named("batch"), Named("seq"), Fixed(hidden)],
    ));
    let table = "model.embed_tokens.weight";
    let t = decoder.weights.get(table)?;
    let w = g.weight(table, &t.shape, &t.data)?;
    let emb = g.node("Gather", &[&w, INPUT_IDS], vec![attr_int("axis", 0)]);
    let token = g.scalar_i64(image_token_id as i64);
    let is_image = g.node("Equal", &[INPUT_IDS, &token], vec![]);
    let as_int = g.node(
        "Cast",
        &[&is_image],
        vec![attr_int("to", DataType::Int64 as i64)],
    );
    let flat_shape = g.const_i64(&[-1]);
    let flat = g.node("Reshape", &[&as_int, &flat_shape], vec![]);
    let axis = g.scalar_i64(0);
    let count = g.node("CumSum", &[&flat, &axis], vec![]);
    let index = g.node("Mul", &[&flat, &count], vec![]);
    let zero_row = g.const_f32(&[1, hidden], &vec![0.0; hidden as usize]);
    let rows = g.node(
        "Concat",
        &[&zero_row, IMAGE_FEATURES],
        vec![attr_int("axis", 0)],
    );
    let picked = g.node("Gather", &[&rows, &index], vec![attr_int("axis", 0)]);
    let shape = g.node("Shape", &[&emb], vec![]);
    let picked = g.node("Reshape", &[&picked, &shape], vec![]);
    let axes = g.const_i64(&[-1]);
    let at = g.node("Unsqueeze", &[&is_image, &axes], vec![]);
    let out = g.node("Where", &[&at, &picked, &emb], vec![]);
    g.node_named("Identity", &[&out], &[INPUTS_EMBEDS], vec![]);
    let graph = g.finish("mimic-embed")?;
    crate::compile::finish_model(graph)
}

/// Compiles a vision-language model with `heads` (on its language model) into `out`
/// (replaced if it exists) and returns the contract written.
pub fn compile_vlm(
    vlm: &VisionLanguageModel,
    heads: HeadsSource,
    opts: &CompileOptions,
    out: &Path,
) -> Result<Contract> {
    // A cross-attention decoder (Idefics) takes input ids; its images come as keys and
    // values from the cross graph.
    let cross = vlm.config.text.cross_attention.is_some();
    // With keys and values projected in every decoder pass there is no cross graph.
    let cross_graph = cross && opts.cross_kv == crate::cross::CrossKv::Inputs;
    let opts = CompileOptions {
        embeds_input: !cross,
        ..opts.clone()
    };
    write_folder_atomically(out, |dir| {
        let mut contract = crate::compile::write_folder(&vlm.decoder, heads, &opts, dir)?;
        crate::vision::compile_image_encoder(&vlm.encoder, dir)?;
        let images_graph = match (cross, cross_graph) {
            (false, _) => Some((
                emit_embed(
                    &vlm.decoder,
                    vlm.config.image_token_id,
                    Some(&dir.join(EMBED_DATA_FILE)),
                )?,
                EMBED_MODEL_FILE,
            )),
            (true, true) => Some((
                crate::cross::emit_cross_kv(
                    &vlm.decoder,
                    heads,
                    Some(&dir.join(CROSS_KV_DATA_FILE)),
                )?,
                CROSS_KV_MODEL_FILE,
            )),
            (true, false) => None,
        };
        if let Some((graph, file)) = images_graph {
            let path = dir.join(file);
            std::fs::write(&path, graph.encode_to_vec()).map_err(|e| CompileError::io(&path, e))?;
        }
        let processor = vlm.source.join(PROCESSOR_FILE);
        let processor = if processor.is_file() {
            let to = dir.join(PROCESSOR_FILE);
            std::fs::copy(&processor, &to).map_err(|e| CompileError::io(&to, e))?;
            Some(PROCESSOR_FILE.to_string())
        } else {
            None
        };
        contract.source = mimic_models::contract::recorded_name(&vlm.source);
        contract.vision = Some(VisionContract {
            config: vlm.config.clone(),
            vision_model: VISION_MODEL_FILE.into(),
            embed_model: (!cross).then(|| EMBED_MODEL_FILE.into()),
            cross_kv_model: cross_graph.then(|| CROSS_KV_MODEL_FILE.into()),
            processor,
            tokens_per_image: vlm.config.tokens_per_image(),
        });
        write_contract(&dir.join(CONTRACT_FILE), &contract)?;
        Ok(contract)
    })
}
