//! The formula behind MimIC's additive head: attention over [demonstrations; query] equals
//! `h + mu (h_D - h)` with `h` the attention over the query's own keys, `h_D` that over the
//! demonstrations' keys and `mu = sigmoid(LSE_D - LSE)` their share of the softmax mass.
//! With `f = LSE_D` and `u = h_D - h` set exactly in every layer, the shifted model on the
//! query alone reproduces the model on demonstrations + query, logits and all.
// These tests drive libtorch directly: the deployment build (no `torch` feature) has none.
#![cfg(feature = "torch")]
mod common;

use common::*;
use mimic_models::backend::Site;
use mimic_models::Model;
use mimic_trainer::shift::mimic_combine;
use mimic_trainer::{AttentionShift, Forward, KvCache, TorchModel};
use tch::{Device, Kind, Tensor};

/// Per layer, the demonstrations' keys and values, from a pass over them alone.
struct ExactDemonstrationShift<'a> {
    demos: &'a KvCache,
    group: i64,
}

impl AttentionShift for ExactDemonstrationShift<'_> {
    fn shift(&self, layer: usize, q: &Tensor, h: &Tensor, lse: &Tensor) -> Tensor {
        let (k, v) = self.demos.layer(layer).expect("demonstration cache");
        let (k, v) = (
            k.repeat_interleave_self_int(self.group, 1, None),
            v.repeat_interleave_self_int(self.group, 1, None),
        );
        let scale = 1.0 / (q.size()[3] as f64).sqrt();
        // Every query position sees every demonstration key.
        let scores = q.matmul(&k.transpose(-2, -1)) * scale;
        let lse_d = scores.logsumexp([-1], true);
        let h_d = scores.softmax(-1, Kind::Float).matmul(&v);
        mimic_combine(false, h, lse, &lse_d, &(h_d - h))
    }
}

#[test]
fn exact_additive_heads_reproduce_attention_over_demonstrations() {
    let _g = tch::no_grad_guard();
    for name in ["llama", "qwen2"] {
        let model = Model::open(&fixtures_dir().join(name)).unwrap();
        let cfg = &model.config;
        let device = test_device();
        let tm = TorchModel::new(&model, device).unwrap();
        let demos: Vec<i64> = vec![3, 14, 15, 92, 65, 35, 89, 79];
        let query: Vec<i64> = vec![32, 38, 46, 26];
        let (m, n) = (demos.len() as i64, query.len() as i64);

        // Teacher: demonstrations then query, in one pass.
        let full = Tensor::from_slice(&[demos.clone(), query.clone()].concat())
            .view([1, m + n])
            .to_device(device);
        let sites = [Site::LayerOutput];
        let mut f = Forward::new(&full);
        f.record = &sites;
        let teacher = tm.forward(&f, None);

        // The demonstrations' keys and values per layer.
        let mut cache = KvCache::default();
        let demo_ids = Tensor::from_slice(&demos).view([1, m]).to_device(device);
        tm.forward(&Forward::new(&demo_ids), Some(&mut cache));

        // Student: the query alone, at the positions it has in the teacher, shifted exactly.
        let ids = Tensor::from_slice(&query).view([1, n]).to_device(device);
        let pos = Tensor::arange_start(m, m + n, (Kind::Int64, device)).view([1, n]);
        let shift = ExactDemonstrationShift {
            demos: &cache,
            group: (cfg.num_heads / cfg.num_kv_heads) as i64,
        };
        let mut f = Forward::new(&ids);
        f.position_ids = Some(&pos);
        f.record = &sites;
        f.shifts.attention = Some(&shift);
        let student = tm.forward(&f, None);

        let t_logits = teacher.logits.narrow(1, m, n);
        let err = rel_err(&to_vec(&student.logits), &to_vec(&t_logits));
        eprintln!(
            "{name}: exact additive heads vs demonstrations, logits relative error {err:.2e}"
        );
        assert!(err <= 1e-5, "{name}: relative error {err:e}");
        for l in 0..cfg.num_layers {
            let t = teacher.recorded[&(l, Site::LayerOutput)].narrow(1, m, n);
            let e = rel_err(
                &to_vec(&student.recorded[&(l, Site::LayerOutput)]),
                &to_vec(&t),
            );
            assert!(e <= 1e-5, "{name} layer {l}: relative error {e:e}");
        }

        // And without the shift the query alone does not match: the test can fail.
        let mut f = Forward::new(&ids);
        f.position_ids = Some(&pos);
        let plain = tm.forward(&f, None);
        let err = rel_err(&to_vec(&plain.logits), &to_vec(&t_logits));
        assert!(
            err > 1e-2,
            "{name}: demonstrations made no difference ({err:e})"
        );
    }
}

/// `MIMIC_TEST_DEVICE` (cpu, cuda) picks where the check runs; scripts/cuda_check.sh sets it.
fn test_device() -> Device {
    let name = std::env::var("MIMIC_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    mimic_trainer::parse_device(&name).expect("MIMIC_TEST_DEVICE")
}
