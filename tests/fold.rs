//! Compiled heads against the trainer's shifted forward: every method (MimIC additive and
//! convex, LIVE, LoRA), fused and unfused attention, folded or as graph inputs, on the small
//! fixture models (grouped-query attention, biases, a sliding window).
//! Tolerance: relative error `max|a - b| / max|b|` at most 1e-4 in float32.
// These tests drive libtorch directly: the deployment build (no `torch` feature) has none.
#![cfg(feature = "torch")]
mod common;

use common::*;
use mimic_compiler::{compile_model, AttentionImpl, CompileOptions, Dtype, HeadsSource};
use mimic_models::{Heads, Method, Model};
use mimic_runtime::{CompiledModel, SessionOptions};
use mimic_trainer::shift::{LoraConfig, Shift};
use mimic_trainer::{Forward, TorchModel};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

const TOL: f32 = 1e-4;
const METHODS: [Method; 4] = [
    Method::Mimic,
    Method::MimicConvex,
    Method::Live,
    Method::Lora,
];

/// Heads of `method` with random values large enough to move the model (the published
/// initialisation is nearly the identity), saved for `model`.
fn random_heads(model: &Model, method: Method, seed: u64, dir: &Path) -> (Shift, PathBuf) {
    let lora = LoraConfig {
        targets: vec![
            "self_attn.q_proj".into(),
            "self_attn.v_proj".into(),
            "mlp.down_proj".into(),
        ],
        ..LoraConfig::default()
    };
    let shift = Shift::init(method, &model.config, &lora, Device::Cpu, seed);
    tch::no_grad(|| {
        for (name, t, _) in &shift.params {
            let scale = match name.as_str() {
                "mimic.w" => 0.5,
                "mimic.b" => 1.0,
                "live.a" => 1.0,
                _ => 0.3,
            };
            let mut t = t.shallow_clone();
            t.copy_(&(Tensor::randn_like(&t) * scale));
        }
    });
    let path = dir.join(format!("{}-{seed}.safetensors", method.name()));
    shift
        .save(
            &path,
            &model.fingerprint(),
            &model.config,
            &Default::default(),
        )
        .unwrap();
    (shift, path)
}

/// Values of `[batch, seq, width]` at the given (row, position) pairs.
fn gather(x: &[f32], seq: usize, width: usize, at: &[(usize, usize)]) -> Vec<f32> {
    at.iter()
        .flat_map(|&(b, s)| x[(b * seq + s) * width..(b * seq + s + 1) * width].to_vec())
        .collect()
}

/// A fixture model, its left-padded reference batch, and the trainer's forward on it.
struct Padded {
    name: String,
    model: Model,
    tm: TorchModel,
    ids: Ref,
    mask: Ref,
}

impl Padded {
    fn open(dir: &Path) -> Self {
        let model = Model::open(dir).unwrap();
        let mut reference = read_reference(&dir.join("reference.safetensors"));
        Padded {
            name: dir.file_name().unwrap().to_string_lossy().to_string(),
            tm: TorchModel::new(&model, Device::Cpu).unwrap(),
            model,
            ids: reference.remove("padded_input_ids").unwrap(),
            mask: reference.remove("padded_attention_mask").unwrap(),
        }
    }

    fn batch(&self) -> usize {
        self.ids.shape[0]
    }

    /// The real (not padding) positions, of every row or of one.
    fn real(&self, row: Option<usize>) -> Vec<(usize, usize)> {
        valid_positions(&self.mask.i64, self.batch())
            .into_iter()
            .filter(|p| row.is_none_or(|r| p.0 == r))
            .collect()
    }

    /// Logits `[batch, seq, vocab]` at the given positions.
    fn at(&self, x: &[f32], at: &[(usize, usize)]) -> Vec<f32> {
        gather(x, self.ids.shape[1], self.model.config.vocab_size, at)
    }

    /// The trainer's logits with `shift` applied (or none).
    fn trainer(&self, shift: Option<&Shift>) -> Vec<f32> {
        let _guard = tch::no_grad_guard();
        let shape: Vec<i64> = self.ids.shape.iter().map(|&d| d as i64).collect();
        let ids = Tensor::from_slice(&self.ids.i64).view(shape.as_slice());
        let mask = Tensor::from_slice(&self.mask.i64).view(shape.as_slice());
        let mut f = Forward::new(&ids);
        f.attention_mask = Some(&mask);
        if let Some(s) = shift {
            f.shifts = s.shifts();
        }
        to_vec(&self.tm.forward(&f, None).logits)
    }

    /// Compiles the model with `heads` into `out` (all logits) and runs the batch in ONNX
    /// Runtime, positions counted from the mask; `rows` are the per-row heads of a graph that
    /// takes heads as inputs (empty otherwise).
    fn compiled(
        &self,
        heads: HeadsSource,
        attention: AttentionImpl,
        dtype: Dtype,
        rows: &[Option<&Heads>],
        out: &Path,
    ) -> Vec<f32> {
        let opts = CompileOptions {
            attention,
            dtype,
            last_only: false,
            ..Default::default()
        };
        compile_model(&self.model, heads, &opts, out).unwrap();
        let mut m = CompiledModel::load(out, &SessionOptions::default()).unwrap();
        if !rows.is_empty() {
            m.set_heads(rows).unwrap();
        }
        let (b, s) = (self.batch(), self.ids.shape[1]);
        let mut pos = Vec::with_capacity(b * s);
        for row in self.mask.i64.chunks(s) {
            let mut n = 0i64;
            for &x in row {
                pos.push((n - 1 + x).max(0));
                n += x;
            }
        }
        let state = m.empty_state(b).unwrap();
        m.run(b, &self.ids.i64, &self.mask.i64, &pos, state)
            .unwrap()
            .logits
    }
}

#[test]
fn folded_heads_match_the_trainer_for_every_method() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models() {
        let p = Padded::open(&dir);
        let (name, all) = (&p.name, p.real(None));
        let base = p.at(&p.trainer(None), &all);
        for method in METHODS {
            let (shift, path) = random_heads(&p.model, method, 7, tmp.path());
            let want = p.at(&p.trainer(Some(&shift)), &all);
            // The heads must matter, or agreement would prove nothing.
            let moved = rel_err(&base, &want);
            assert!(
                moved > 1e-2,
                "{name} {method:?}: heads barely change logits ({moved:e})"
            );
            let heads = Heads::read(&path, &p.model.fingerprint(), &p.model.config).unwrap();
            for attention in [
                AttentionImpl::Fused,
                AttentionImpl::Unfused,
                AttentionImpl::Kernel,
            ] {
                let out = tmp
                    .path()
                    .join(format!("{name}-{}-{attention:?}", method.name()));
                let source = HeadsSource::Folded(&heads);
                let got = p.at(&p.compiled(source, attention, Dtype::Fp32, &[], &out), &all);
                let err = rel_err(&got, &want);
                eprintln!(
                    "{name} {:<12} {attention:?}: relative error {err:.2e} (heads move logits {moved:.2e})",
                    method.name()
                );
                assert!(err <= TOL, "{name} {method:?} {attention:?}: {err:e}");
            }
        }
    }
}

#[test]
fn folded_heads_decode_incrementally_like_the_full_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = &fixture_models()[0];
    let model = Model::open(dir).unwrap();
    let reference = read_reference(&dir.join("reference.safetensors"));
    let ids = &reference["input_ids"];
    let seq = ids.shape[1];
    let row: Vec<u32> = ids.i64[..seq].iter().map(|&x| x as u32).collect();
    let vocab = model.config.vocab_size;
    let tm = TorchModel::new(&model, Device::Cpu).unwrap();
    let ids_t = Tensor::from_slice(&ids.i64[..seq]).view([1, seq as i64]);
    for method in [Method::Mimic, Method::MimicConvex] {
        let (shift, path) = random_heads(&model, method, 11, tmp.path());
        let full = tch::no_grad(|| {
            let mut f = Forward::new(&ids_t);
            f.shifts = shift.shifts();
            to_vec(&tm.forward(&f, None).logits)
        });
        let heads = Heads::read(&path, &model.fingerprint(), &model.config).unwrap();
        for attention in [
            AttentionImpl::Fused,
            AttentionImpl::Unfused,
            AttentionImpl::Kernel,
        ] {
            let out = tmp.path().join(format!("{}-{attention:?}", method.name()));
            let opts = CompileOptions {
                attention,
                last_only: true,
                ..Default::default()
            };
            compile_model(&model, HeadsSource::Folded(&heads), &opts, &out).unwrap();
            let mut m = CompiledModel::load(&out, &SessionOptions::default()).unwrap();
            let state = m.empty_state(1).unwrap();
            let mut r = m.step(&row[..4], state).unwrap();
            for s in 4..seq {
                r = m.step(&row[s..s + 1], r.state).unwrap();
                let err = rel_err(&r.logits, &gather(&full, seq, vocab, &[(0, s)]));
                assert!(err <= TOL, "{method:?} {attention:?} step {s}: {err:e}");
            }
        }
    }
}

#[test]
fn heads_as_inputs_serve_a_different_task_per_row() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models().into_iter().take(2) {
        let p = Padded::open(&dir);
        let name = &p.name;
        assert!(p.batch() >= 2, "the fixture batch has two rows");
        let (row0, row1) = (p.real(Some(0)), p.real(Some(1)));
        let base = p.trainer(None);
        for method in [Method::Mimic, Method::MimicConvex, Method::Live] {
            let (shift_a, path_a) = random_heads(&p.model, method, 21, tmp.path());
            let with_a = p.trainer(Some(&shift_a));
            let heads_a = Heads::read(&path_a, &p.model.fingerprint(), &p.model.config).unwrap();
            for attention in [
                AttentionImpl::Fused,
                AttentionImpl::Unfused,
                AttentionImpl::Kernel,
            ] {
                let out = tmp
                    .path()
                    .join(format!("{name}-inputs-{}-{attention:?}", method.name()));
                // Row 0 with heads A, row 1 without heads.
                let mut rows: Vec<Option<&Heads>> = vec![None; p.batch()];
                rows[0] = Some(&heads_a);
                let source = HeadsSource::Inputs(method);
                let got = p.compiled(source, attention, Dtype::Fp32, &rows, &out);
                let e0 = rel_err(&p.at(&got, &row0), &p.at(&with_a, &row0));
                let e1 = rel_err(&p.at(&got, &row1), &p.at(&base, &row1));
                eprintln!(
                    "{name} {:<12} {attention:?} as inputs: row with heads {e0:.2e}, row without {e1:.2e}",
                    method.name()
                );
                assert!(
                    e0 <= TOL && e1 <= TOL,
                    "{name} {method:?} {attention:?}: {e0:e} {e1:e}"
                );
            }
        }
    }
}

#[test]
fn float16_models_stay_within_1e_2_of_the_trainer() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models().into_iter().take(2) {
        let p = Padded::open(&dir);
        let (name, all) = (&p.name, p.real(None));
        for method in METHODS {
            let (shift, path) = random_heads(&p.model, method, 5, tmp.path());
            let want = p.at(&p.trainer(Some(&shift)), &all);
            let heads = Heads::read(&path, &p.model.fingerprint(), &p.model.config).unwrap();
            for attention in [AttentionImpl::Fused, AttentionImpl::Unfused] {
                let sources = [
                    ("folded", HeadsSource::Folded(&heads), vec![]),
                    ("inputs", HeadsSource::Inputs(method), vec![Some(&heads)]),
                ];
                for (how, source, rows) in sources {
                    if method == Method::Lora && how == "inputs" {
                        continue;
                    }
                    let out = tmp
                        .path()
                        .join(format!("{name}-{}-{attention:?}-{how}-fp16", method.name()));
                    let got = p.at(
                        &p.compiled(source, attention, Dtype::Fp16, &rows, &out),
                        &all,
                    );
                    let err = rel_err(&got, &want);
                    eprintln!(
                        "{name} {:<12} {attention:?} {how} fp16: relative error {err:.2e}",
                        method.name()
                    );
                    assert!(
                        err <= 1e-2,
                        "{name} {method:?} {attention:?} {how} fp16: {err:e}"
                    );
                }
            }
        }
    }
}

/// Heads whose slot takes nearly all the weight (`b = 16`, so `1 - mu` is about 1e-7), as
/// trained heads do in some layers: the additive fold must still recover `h` exactly, which
/// needs `1 - mu` summed from the real keys rather than subtracted from `mu`.
#[test]
fn additive_heads_with_mu_near_one() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Padded::open(&fixture_models()[0]);
    let all = p.real(None);
    let (shift, _) = random_heads(&p.model, Method::Mimic, 3, tmp.path());
    tch::no_grad(|| {
        for (name, t, _) in &shift.params {
            if name == "mimic.b" {
                let _ = t.shallow_clone().fill_(16.0);
            }
        }
    });
    let path = tmp.path().join("saturated.safetensors");
    shift
        .save(
            &path,
            &p.model.fingerprint(),
            &p.model.config,
            &Default::default(),
        )
        .unwrap();
    let want = p.at(&p.trainer(Some(&shift)), &all);
    let heads = Heads::read(&path, &p.model.fingerprint(), &p.model.config).unwrap();
    for (dtype, tol) in [(Dtype::Fp32, 1e-4), (Dtype::Fp16, 1e-2)] {
        for attention in [
            AttentionImpl::Fused,
            AttentionImpl::Unfused,
            AttentionImpl::Kernel,
        ] {
            if attention == AttentionImpl::Kernel && dtype == Dtype::Fp16 {
                continue; // float32 only, see `kernel_attention_refuses_float16`
            }
            let out = tmp.path().join(format!("{attention:?}-{}", dtype.name()));
            let source = HeadsSource::Folded(&heads);
            let got = p.at(&p.compiled(source, attention, dtype, &[], &out), &all);
            let err = rel_err(&got, &want);
            eprintln!(
                "mu near 1, {attention:?} {}: relative error {err:.2e}",
                dtype.name()
            );
            assert!(err <= tol, "{attention:?} {}: {err:e}", dtype.name());
        }
    }
}

/// Folded additive heads in a fused graph: between each layer's `Attention` and its `o_proj`
/// the epilogue is one Gather, one MatMul and one Div (no Reshape, Split or broadcast
/// product), and `o_proj`'s weight has the two extra rows a head that add `mu W_o u`. In
/// float32 the slots carry `e^b` in a value channel, so queries and keys stay `head_dim`
/// wide (no partial rotary, a cache of `head_dim`-wide keys); a float16 graph scores `b`
/// through a key channel instead. Exactness of the same graphs is
/// `folded_heads_match_the_trainer_for_every_method` and `additive_heads_with_mu_near_one`.
#[test]
fn folded_additive_epilogue_is_three_nodes_into_a_widened_o_proj() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in fixture_models() {
        let model = Model::open(&dir).unwrap();
        let cfg = &model.config;
        let (_, path) = random_heads(&model, Method::Mimic, 3, tmp.path());
        let heads = Heads::read(&path, &model.fingerprint(), cfg).unwrap();
        let out = tmp.path().join(dir.file_name().unwrap());
        let opts = CompileOptions {
            attention: AttentionImpl::Fused,
            ..Default::default()
        };
        compile_model(&model, HeadsSource::Folded(&heads), &opts, &out).unwrap();
        let kv = mimic_models::contract::Contract::read(&out)
            .unwrap()
            .kv_cache;
        assert_eq!(
            (kv.key_dim, kv.value_dim),
            (cfg.head_dim, cfg.head_dim + 2),
            "{dir:?}: float32 cache layout"
        );
        let half = out.with_extension("fp16");
        let fp16 = CompileOptions {
            dtype: Dtype::Fp16,
            ..opts.clone()
        };
        compile_model(&model, HeadsSource::Folded(&heads), &fp16, &half).unwrap();
        let kv = mimic_models::contract::Contract::read(&half)
            .unwrap()
            .kv_cache;
        assert_eq!(kv.key_dim, cfg.head_dim + 1, "{dir:?}: float16 keys");
        let g = mimic_compiler::graph::read_model(&out.join("model.onnx"))
            .unwrap()
            .graph
            .unwrap();
        let partial_rotary = g.node.iter().any(|n| {
            n.op_type.as_deref() == Some("RotaryEmbedding")
                && n.attribute
                    .iter()
                    .any(|a| a.name.as_deref() == Some("rotary_embedding_dim"))
        });
        assert!(!partial_rotary, "{dir:?}: queries or keys widened");
        let readers = |value: &str| -> Vec<&mimic_compiler::onnx::NodeProto> {
            g.node
                .iter()
                .filter(|n| n.input.iter().any(|i| i == value))
                .collect()
        };
        let op = |n: &mimic_compiler::onnx::NodeProto| n.op_type.clone().unwrap_or_default();
        let attention: Vec<_> = g.node.iter().filter(|n| op(n) == "Attention").collect();
        assert_eq!(attention.len(), cfg.num_layers);
        for a in attention {
            let mut ops: Vec<String> = readers(&a.output[0]).into_iter().map(op).collect();
            ops.sort();
            assert_eq!(
                ops,
                ["Div", "Gather"],
                "{dir:?}: readers of the attention output"
            );
            let gather = readers(&a.output[0])
                .into_iter()
                .find(|n| op(n) == "Gather")
                .unwrap();
            let spread = readers(&gather.output[0]);
            assert_eq!(spread.len(), 1);
            assert_eq!(op(spread[0]), "MatMul");
            let div = readers(&spread[0].output[0]);
            assert_eq!(div.iter().map(|n| op(n)).collect::<Vec<_>>(), ["Div"]);
            let o_proj = readers(&div[0].output[0]);
            assert_eq!(o_proj.iter().map(|n| op(n)).collect::<Vec<_>>(), ["MatMul"]);
            let w = g
                .initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(o_proj[0].input[1].as_str()))
                .expect("o_proj reads an initializer");
            let rows = (cfg.num_heads * (cfg.head_dim + 2)) as i64;
            assert_eq!(
                w.dims,
                [rows, cfg.hidden_size as i64],
                "{dir:?}: o_proj weight"
            );
        }
    }
}

#[test]
fn sessions_of_the_pools_thread_count_share_it() {
    use mimic_runtime::environment::{environment, pool_threads};
    let (_, shared) = environment(2).unwrap();
    // Another test may have built the first session, and sized the pool, before this one.
    let pool = pool_threads().expect("the environment exists once a session asked for it");
    assert_eq!(shared, pool == 2);
    assert!(environment(pool).unwrap().1);
    assert!(!environment(pool + 1).unwrap().1);
}

/// `--attention kernel`: every layer's attention is one `ai.mimic:MimicAttention` node (the
/// runtime's kernel, under the names the runtime registers), with MimIC's `w`, `b`, `u` as
/// its last three inputs; the cache has no slots and is `head_dim` wide, and `o_proj` reads
/// the heads as they are. Exactness is `folded_heads_match_the_trainer_for_every_method`
/// and `additive_heads_with_mu_near_one`. float16 is refused, naming the option.
#[test]
fn kernel_attention_is_one_custom_node_a_layer() {
    use mimic_compiler::graph::{KERNEL_ATTENTION, KERNEL_DOMAIN};
    assert_eq!(
        (KERNEL_DOMAIN, KERNEL_ATTENTION),
        (
            mimic_runtime::kernel::DOMAIN,
            mimic_runtime::kernel::ATTENTION
        )
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = &fixture_models()[0];
    let model = Model::open(dir).unwrap();
    let cfg = &model.config;
    let (_, path) = random_heads(&model, Method::Mimic, 3, tmp.path());
    let heads = Heads::read(&path, &model.fingerprint(), cfg).unwrap();
    let opts = CompileOptions {
        attention: AttentionImpl::Kernel,
        ..Default::default()
    };
    for (name, source, inputs) in [
        ("base", HeadsSource::None, 6),
        ("mimic", HeadsSource::Folded(&heads), 9),
    ] {
        let out = tmp.path().join(name);
        compile_model(&model, source, &opts, &out).unwrap();
        let kv = mimic_models::contract::Contract::read(&out)
            .unwrap()
            .kv_cache;
        assert_eq!(
            (kv.slots, kv.key_dim, kv.value_dim),
            (0, cfg.head_dim, cfg.head_dim),
            "{name}: cache layout"
        );
        let m = mimic_compiler::graph::read_model(&out.join("model.onnx")).unwrap();
        assert!(m
            .opset_import
            .iter()
            .any(|o| o.domain.as_deref() == Some(KERNEL_DOMAIN)));
        let g = m.graph.unwrap();
        let op = |n: &mimic_compiler::onnx::NodeProto| n.op_type.clone().unwrap_or_default();
        assert!(!g.node.iter().any(|n| op(n) == "Attention"), "{name}");
        let kernels: Vec<_> = g
            .node
            .iter()
            .filter(|n| n.domain.as_deref() == Some(KERNEL_DOMAIN))
            .collect();
        assert_eq!(kernels.len(), cfg.num_layers, "{name}");
        for k in kernels {
            assert_eq!(op(k), KERNEL_ATTENTION);
            assert_eq!(k.input.len(), inputs, "{name}");
        }
    }
    let fp16 = CompileOptions {
        dtype: Dtype::Fp16,
        ..opts
    };
    let out = tmp.path().join("fp16");
    let err = compile_model(&model, HeadsSource::Folded(&heads), &fp16, &out).unwrap_err();
    assert!(err.to_string().contains("--attention kernel"), "{err}");
    assert!(!out.exists(), "nothing written for a refused compile");
}
