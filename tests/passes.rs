//! The graph passes on whole compiled models: the output is unchanged (against the
//! transformers reference, 1e-4) and the graph is smaller. Attention fusion turns every
//! layer's MatMul-Softmax-MatMul of an unfused graph into one `Attention` operator.
mod common;

use common::*;
use mimic_compiler::graph::read_model;
use mimic_compiler::{compile_model, AttentionImpl, CompileOptions, HeadsSource, Pass};
use mimic_models::Model;
use mimic_runtime::{CompiledModel, SessionOptions};

fn count(dir: &std::path::Path, op: &str) -> (usize, usize) {
    let m = read_model(&dir.join("model.onnx")).unwrap();
    let g = m.graph.unwrap();
    let n = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some(op))
        .count();
    (g.node.len(), n)
}

fn logits(dir: &std::path::Path, ids: &Ref) -> Vec<f32> {
    let mut m = CompiledModel::load(dir, &SessionOptions::default()).unwrap();
    let (b, s) = (ids.shape[0], ids.shape[1]);
    let pos: Vec<i64> = (0..b).flat_map(|_| 0..s as i64).collect();
    let state = m.empty_state(b).unwrap();
    m.run(b, &ids.i64, &vec![1; b * s], &pos, state)
        .unwrap()
        .logits
}

#[test]
fn passes_keep_the_output_and_shrink_the_graph() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = Model::open(&dir).unwrap();
        let reference = read_reference(&dir.join("reference.safetensors"));
        let layers = model.config.num_layers;
        let compile = |passes: Vec<Pass>, tag: &str| {
            let out = tmp.path().join(format!("{name}-{tag}"));
            let opts = CompileOptions {
                attention: AttentionImpl::Unfused,
                last_only: false,
                passes,
                ..Default::default()
            };
            compile_model(&model, HeadsSource::None, &opts, &out).unwrap();
            out
        };
        let plain = compile(vec![], "none");
        let all = compile(Pass::ALL.to_vec(), "all");
        let (nodes_plain, attn_plain) = count(&plain, "Attention");
        let (nodes_all, attn_all) = count(&all, "Attention");
        assert_eq!(attn_plain, 0, "{name}: the unfused graph has no Attention");
        assert_eq!(attn_all, layers, "{name}: one fused Attention per layer");
        assert!(
            nodes_all < nodes_plain,
            "{name}: {nodes_all} >= {nodes_plain} nodes"
        );
        let want = &reference["logits"].f32;
        for out in [&plain, &all] {
            let err = rel_err(&logits(out, &reference["input_ids"]), want);
            assert!(err <= 1e-4, "{name} {}: {err:e}", out.display());
        }
        eprintln!(
            "{name}: {nodes_plain} nodes unfused -> {nodes_all} after the passes ({attn_all} Attention)"
        );
    }
}
