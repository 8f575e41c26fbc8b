//! The default model's GGUF blocks kept in the compiled graph (`--weights source`): every
//! Q4_1 projection as ONNX Runtime's `MatMulNBits`, the Q8_0 embedding's rows gathered from
//! their blocks and the tied output head as their two 4-bit halves. The blocks' values are exactly the dequantised weights the trainer
//! uses (every tensor, bit for bit); the compiled model against the float32 one and against
//! the trainer's forward: the same greedy tokens on the 20 built-in prompts, logits within
//! 1e-4 relative (`max|a - b| / max|b|`); the folder under half the size.
#![cfg(feature = "torch")]
mod common;

use common::*;
use mimic_compiler::{compile_model, AttentionImpl, CompileOptions, HeadsSource};
use mimic_models::contract::WeightFormat;
use mimic_models::prompt::SAMPLE_PROMPTS as PROMPTS;
use mimic_models::quant::BlockKind;
use mimic_models::Model;
use mimic_runtime::{CompiledModel, OnnxLm, SessionOptions};
use mimic_trainer::{TorchLm, TorchModel};

const TOL: f32 = 1e-4;

fn folder_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn gguf_blocks_are_the_dequantised_weights_and_compile_exactly() {
    let model = Model::open(&default_model()).unwrap();
    let blocks = &model.weights.blocks;
    // 30 layers x 7 projections in Q4_1, and the Q8_0 embedding (rows of q/k unpermuted).
    assert_eq!(blocks.len(), 211);
    for (name, w) in blocks {
        assert_eq!(w.values(), model.weights.tensors[name].data, "{name}");
    }
    assert_eq!(blocks["model.embed_tokens.weight"].kind, BlockKind::Q8_0);

    let tmp = tempfile::tempdir().unwrap();
    let compile = |weights: WeightFormat| {
        let dir = tmp.path().join(weights.name());
        let opts = CompileOptions {
            attention: AttentionImpl::Kernel,
            weights,
            ..Default::default()
        };
        let contract = compile_model(&model, HeadsSource::None, &opts, &dir).unwrap();
        (dir, contract)
    };
    let (src, contract) = compile(WeightFormat::Source);
    let (f32_dir, plain) = compile(WeightFormat::F32);
    assert!(plain.block_weights.is_empty());
    // Every projection as 4-bit blocks; the embedding's rows from its 8-bit blocks, and the
    // tied output head as their two 4-bit halves.
    assert_eq!(contract.block_weights.len(), 211);
    let q4 = contract
        .block_weights
        .iter()
        .filter(|(_, k)| *k == BlockKind::Q4_1)
        .count();
    assert_eq!(q4, 210);
    let (small, large) = (folder_bytes(&src), folder_bytes(&f32_dir));
    eprintln!("compiled folder: source {small} bytes, f32 {large} bytes");
    assert!(small * 2 < large, "{small} vs {large}");

    let tok = model.tokenizer().unwrap();
    let tm = TorchModel::new(&model, tch::Device::Cpu).unwrap();
    let opts = SessionOptions::default();
    let mut q = CompiledModel::load(&src, &opts).unwrap();
    let mut f = CompiledModel::load(&f32_dir, &opts).unwrap();
    let (mut vs_f32, mut vs_torch) = (0f32, 0f32);
    for prompt in PROMPTS {
        let ids = tok.encode(prompt).unwrap();
        use mimic_models::generate::greedy_with_logits as run;
        let (qt, ql) = run(&mut OnnxLm::new(&mut q), &ids, 8).unwrap();
        let (ft, fl) = run(&mut OnnxLm::new(&mut f), &ids, 8).unwrap();
        let (tt, tl) = run(&mut TorchLm::new(&tm), &ids, 8).unwrap();
        assert_eq!(qt, ft, "blocks vs f32 tokens for {prompt:?}");
        assert_eq!(qt, tt, "blocks vs trainer tokens for {prompt:?}");
        for ((a, b), c) in ql.iter().zip(&fl).zip(&tl) {
            vs_f32 = vs_f32.max(rel_err(a, b));
            vs_torch = vs_torch.max(rel_err(a, c));
        }
    }
    eprintln!(
        "20 prompts x 8 steps: blocks vs f32 graph {vs_f32:.2e}, vs the trainer {vs_torch:.2e}"
    );
    assert!(vs_f32 <= TOL && vs_torch <= TOL, "{vs_f32:e} {vs_torch:e}");
}

#[test]
fn lora_heads_over_blocks_stay_a_low_rank_product() {
    // LoRA on q and v of the default model: the blocks stay blocks (the update is its own
    // product, as the trainer computes it), and the compiled model matches the trainer.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("lora");
    succeeds(&[
        "train",
        "--task",
        "country-capital",
        "--method",
        "lora",
        "--steps",
        "3",
        "--lr",
        "0.05",
        "--threads",
        "2",
        "--out",
        run.to_str().unwrap(),
    ]);
    let heads = run.join("heads.safetensors");
    let out = tmp.path().join("compiled");
    succeeds(&[
        "compile",
        "--heads",
        heads.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let contract = mimic_models::contract::Contract::read(&out).unwrap();
    assert_eq!(
        contract.block_weights.len(),
        211,
        "LoRA's projections stayed blocks"
    );
    let json = tmp.path().join("verify.json");
    succeeds(&[
        "verify",
        "--heads",
        heads.to_str().unwrap(),
        "--attention",
        "kernel",
        "--prompts",
        "6",
        "--steps",
        "6",
        "--threads",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["passed"], true, "{v}");
    let err = v["rows"][0]["max_relative_error"].as_f64().unwrap();
    eprintln!("LoRA over blocks vs the trainer: {err:.2e}");
    assert!(err <= 1e-4, "{v}");
}
