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

/// The float16 pass, named in the pass list, is `--dtype fp16`: the same graph, float16
/// products and KV cache, float32 normalisation and softmax, logits within 1e-2 of
/// transformers' float32.
#[test]
fn float16_pass_converts_products_and_keeps_normalisation_in_float32() {
    use mimic_compiler::onnx::tensor_proto::DataType;
    use mimic_compiler::passes::types;
    use mimic_compiler::Dtype;
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures_dir().join("llama");
    let model = Model::open(&dir).unwrap();
    let reference = read_reference(&dir.join("reference.safetensors"));
    let compile = |opts: CompileOptions, tag: &str| {
        let out = tmp.path().join(tag);
        let contract = compile_model(&model, HeadsSource::None, &opts, &out).unwrap();
        assert_eq!(contract.dtype, Dtype::Fp16, "{tag}");
        assert_eq!(
            contract.passes,
            ["constant-folding", "float16", "dead-nodes"],
            "{tag}: float16 runs before dead-node removal"
        );
        out
    };
    let base = CompileOptions {
        attention: AttentionImpl::Unfused,
        last_only: false,
        ..Default::default()
    };
    let by_dtype = compile(
        CompileOptions {
            dtype: Dtype::Fp16,
            ..base.clone()
        },
        "dtype",
    );
    let by_pass = compile(
        CompileOptions {
            passes: vec![Pass::ConstantFolding, Pass::Float16, Pass::DeadNodes],
            ..base
        },
        "pass",
    );
    let ids = &reference["input_ids"];
    let (a, b) = (logits(&by_dtype, ids), logits(&by_pass, ids));
    assert_eq!(a, b, "the pass and --dtype fp16 make the same model");
    let err = rel_err(&a, &reference["logits"].f32);
    assert!(err <= 1e-2, "fp16 logits: {err:e}");
    assert!(
        err > 1e-6,
        "fp16 logits equal float32's ({err:e}): nothing converted"
    );
    eprintln!("llama fp16 by the pass: relative error {err:.2e}");

    let g = read_model(&by_pass.join("model.onnx"))
        .unwrap()
        .graph
        .unwrap();
    assert!(types::mismatches(&g).is_empty());
    let t = types::infer(&g);
    let (f32, f16) = (DataType::Float as i32, DataType::Float16 as i32);
    for n in &g.node {
        let op = n.op_type.as_deref().unwrap_or("");
        let input = t.get(&n.input[0]).copied();
        match op {
            "RMSNormalization" | "Softmax" => assert_eq!(input, Some(f32), "{op} input"),
            "MatMul" => assert_eq!(input, Some(f16), "MatMul input"),
            _ => {}
        }
    }
    let weights: Vec<_> = g
        .initializer
        .iter()
        .filter(|w| w.name.as_deref().is_some_and(|n| n.ends_with(".T")))
        .collect();
    assert!(!weights.is_empty());
    assert!(weights.iter().all(|w| w.data_type == Some(f16)));
    for v in g.input.iter().chain(&g.output) {
        let name = v.name.as_deref().unwrap();
        let want = if name.starts_with("past_key_values.") || name.starts_with("present.") {
            f16
        } else if name == "logits" {
            f32
        } else {
            continue;
        };
        assert_eq!(types::declared(v), Some(want), "{name}");
    }
}
