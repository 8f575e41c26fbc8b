//! The libtorch backend's hooks: recording activations and shifting attention heads.
// These tests drive libtorch directly: the deployment build (no `torch` feature) has none.
#![cfg(feature = "torch")]
mod common;

use common::*;
use mimic_models::backend::Site;
use mimic_models::Model;
use mimic_trainer::{AttentionShift, Forward, KvCache, TorchModel};
use tch::{Device, Tensor};

/// Returns the head output unchanged: exercises the explicit log-sum-exp attention path.
struct Identity;
impl AttentionShift for Identity {
    fn shift(&self, _: usize, _: &Tensor, h: &Tensor, _: &Tensor) -> Tensor {
        h.shallow_clone()
    }
}

/// Adds `mu * u` with `f = 0`, as MimIC's additive form does with zero query weights.
struct AddConstant {
    u: f64,
}
impl AttentionShift for AddConstant {
    fn shift(&self, _: usize, _: &Tensor, h: &Tensor, lse: &Tensor) -> Tensor {
        assert_eq!(lse.size()[..3], h.size()[..3]);
        assert_eq!(*lse.size().last().unwrap(), 1);
        // f = 0 for every query, so mu = sigmoid(-LSE).
        let mu = lse.neg().sigmoid();
        h + mu * self.u
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn identity_shift_reproduces_the_plain_forward() {
    let _g = tch::no_grad_guard();
    let model = Model::open(&fixtures_dir().join("llama")).unwrap();
    let tm = TorchModel::new(&model, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[5i64, 17, 3, 99, 42, 7]).view([1, 6]);
    let plain = tm.forward(&Forward::new(&ids), None).logits;
    let mut f = Forward::new(&ids);
    f.shifts.attention = Some(&Identity);
    let shifted = tm.forward(&f, None).logits;
    let d = max_abs_diff(&plain, &shifted);
    assert!(d < 1e-5, "explicit attention differs from SDPA by {d}");
}

#[test]
fn attention_shift_changes_the_output_by_mu_u() {
    let _g = tch::no_grad_guard();
    let model = Model::open(&fixtures_dir().join("llama")).unwrap();
    let tm = TorchModel::new(&model, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[5i64, 17, 3]).view([1, 3]);
    let sites = [Site::AttnOutput];
    let mut f = Forward::new(&ids);
    f.record = &sites;
    let plain = tm.forward(&f, None);
    f.shifts.attention = Some(&AddConstant { u: 0.5 });
    let shifted = tm.forward(&f, None);
    let a = &plain.recorded[&(0, Site::AttnOutput)];
    let b = &shifted.recorded[&(0, Site::AttnOutput)];
    let d = max_abs_diff(a, b);
    assert!(
        d > 1e-3,
        "a shift of 0.5 * mu left the attention output unchanged ({d})"
    );
}

#[test]
fn records_only_the_sites_asked_for() {
    let _g = tch::no_grad_guard();
    let model = Model::open(&fixtures_dir().join("qwen2")).unwrap();
    let tm = TorchModel::new(&model, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
    let sites = [Site::MlpOutput];
    let mut f = Forward::new(&ids);
    f.record = &sites;
    let out = tm.forward(&f, None);
    assert_eq!(out.recorded.len(), model.config.num_layers);
    assert!(out.recorded.keys().all(|(_, s)| *s == Site::MlpOutput));
    assert_eq!(
        out.recorded[&(0, Site::MlpOutput)].size(),
        vec![1, 3, model.config.hidden_size as i64]
    );
}

#[test]
fn a_shared_prefix_cache_repeated_over_a_padded_batch_matches_full_sequences() {
    let _g = tch::no_grad_guard();
    // Not Mistral: its sliding window counts cache positions, padding included (as Hugging
    // Face does), so padding between prefix and query moves the window.
    let model = Model::open(&fixtures_dir().join("llama")).unwrap();
    let tm = TorchModel::new(&model, Device::Cpu).unwrap();
    let prefix = [5i64, 17, 3, 99, 42];
    let conts: [&[i64]; 2] = [&[7, 8, 9], &[11, 12, 13, 14, 15]];
    let mut cache = KvCache::default();
    tm.forward(
        &Forward::new(&Tensor::from_slice(&prefix).view([1, 5])),
        Some(&mut cache),
    );
    let mut cache = cache.repeat_batch(2);
    // Left-padded continuations: padding sits between the prefix and the shorter one.
    let ids = Tensor::from_slice(&[0, 0, 7, 8, 9, 11, 12, 13, 14, 15]).view([2, 5]);
    let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 5]);
    let mut f = Forward::new(&ids);
    f.attention_mask = Some(&mask);
    let batched = tm.forward(&f, Some(&mut cache)).logits;
    for (row, cont) in conts.iter().enumerate() {
        let full: Vec<i64> = [&prefix[..], cont].concat();
        let n = cont.len() as i64;
        let alone = tm
            .forward(
                &Forward::new(&Tensor::from_slice(&full).view([1, -1])),
                None,
            )
            .logits;
        let want = alone.narrow(1, full.len() as i64 - n, n);
        let got = batched.get(row as i64).narrow(0, 5 - n, n).unsqueeze(0);
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-4, "row {row}: {d}");
    }
}
