//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A reference tensor: shape and values (float32 or int64 widened to f64-free storage).
#[derive(Debug, Clone)]
pub struct Ref {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
}

pub fn read_reference(path: &Path) -> BTreeMap<String, Ref> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("reference safetensors");
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let (f32, i64) = match view.dtype() {
            Dtype::F32 => (
                d.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                vec![],
            ),
            Dtype::I64 => (
                vec![],
                d.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            ),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        out.insert(
            name,
            Ref {
                shape: view.shape().to_vec(),
                f32,
                i64,
            },
        );
    }
    out
}

/// `max |a - b| / max |b|`: the relative error used throughout, over a whole tensor.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    mimic_models::generate::relative_error(a, b)
}

/// The fixture model folders written by scripts/make_fixtures.py.
pub fn fixture_models() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("reference.safetensors").is_file())
        .collect();
    v.sort();
    assert!(
        v.len() >= 3,
        "expected the llama, mistral and qwen2 fixtures, found {v:?}"
    );
    v
}

/// The default model, which `make setup` installs; tests that need it fail without it.
pub fn default_model() -> PathBuf {
    mimic_models::default_model::default_model_path().expect("default model (run `make setup`)")
}

/// Positions of a left-padded batch whose mask is 1, as (row, position) pairs.
pub fn valid_positions(mask: &[i64], batch: usize) -> Vec<(usize, usize)> {
    let seq = mask.len() / batch;
    (0..batch)
        .flat_map(|b| (0..seq).map(move |s| (b, s)))
        .filter(|&(b, s)| mask[b * seq + s] == 1)
        .collect()
}

/// Runs the `mimic` binary with `args` (compiled folders cached in a temporary folder).
pub fn mimic<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mimic"))
        .args(args)
        .env("MIMIC_CACHE", std::env::temp_dir().join("mimic-test-cache"))
        .output()
        .expect("run mimic")
}

/// Runs `mimic args...`, asserts it failed cleanly (non-zero exit, an `error:` line, no
/// panic) and returns its stderr.
pub fn fails<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = mimic(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "mimic {args:?} succeeded; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "mimic {args:?} panicked:\n{stderr}"
    );
    assert!(
        stderr.contains("error:"),
        "no error line for {args:?}:\n{stderr}"
    );
    stderr
}

/// Runs `mimic args...`, asserts it succeeded and returns its stdout.
pub fn succeeds<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = mimic(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "mimic {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A vision fixture (`tests/fixtures/vision/<name>`, by scripts/make_vision_fixtures.py): the
/// tower and transformers' reference tensors.
pub fn vision_fixture(name: &str) -> (mimic_models::vision::SiglipVision, BTreeMap<String, Ref>) {
    let dir = fixtures_dir().join("vision").join(name);
    let tower = mimic_models::vision::SiglipVision::open(&dir).unwrap();
    let reference = read_reference(&dir.join("reference.safetensors"));
    (tower, reference)
}

/// Position ids (transformers 5.x bucketing) of a padded vision fixture's images, from its
/// reference `patch_attention_mask` `[images, patches]`.
pub fn fixture_position_ids(
    tower: &mimic_models::vision::SiglipVision,
    reference: &BTreeMap<String, Ref>,
) -> Vec<i64> {
    use mimic_models::vision::patches::{bucketed_position_ids, Bucketing};
    let mask = &reference["patch_attention_mask"];
    let side = tower.config.patches_per_side();
    let real: Vec<bool> = mask.i64.iter().map(|&x| x != 0).collect();
    bucketed_position_ids(
        &real,
        mask.shape[0],
        side,
        side,
        side,
        Bucketing::Transformers5,
    )
}

/// A vision-language fixture (`tests/fixtures/vlm/<name>`, by scripts/make_vlm_fixtures.py):
/// the model and transformers' reference tensors.
pub fn vlm_fixture(
    name: &str,
) -> (
    mimic_models::vlm::VisionLanguageModel,
    BTreeMap<String, Ref>,
) {
    let dir = fixtures_dir().join("vlm").join(name);
    let model = mimic_models::vlm::VisionLanguageModel::open(&dir).unwrap();
    let reference = read_reference(&dir.join("reference.safetensors"));
    (model, reference)
}

/// A vision-language fixture's image encoder inputs (transformers 5.x bucketing), from its
/// processor output as the image processor would have produced it.
pub fn vlm_encoder_inputs(
    model: &mimic_models::vlm::VisionLanguageModel,
    reference: &BTreeMap<String, Ref>,
) -> mimic_models::vlm::inputs::EncoderInputs {
    use mimic_models::image::processor::{PixelMask, ProcessedImages};
    let px = &reference["pixel_values"];
    let processed = ProcessedImages {
        pixel_values: mimic_models::HostTensor::new(px.shape.clone(), px.f32.clone()),
        pixel_attention_mask: reference.get("pixel_attention_mask").map(|m| PixelMask {
            shape: m.shape.clone(),
            data: m.i64.iter().map(|&x| x as u8).collect(),
        }),
    };
    mimic_models::vlm::inputs::encoder_inputs(
        &model.config,
        &processed,
        mimic_models::vision::patches::Bucketing::Transformers5,
    )
    .unwrap()
}

/// The rows `[batch, seq, width]` of `values` at the positions whose mask is 1, concatenated.
pub fn rows_at_valid(values: &[f32], mask: &[i64], batch: usize, width: usize) -> Vec<f32> {
    let seq = mask.len() / batch;
    valid_positions(mask, batch)
        .into_iter()
        .flat_map(|(r, p)| values[(r * seq + p) * width..][..width].to_vec())
        .collect()
}

/// A float32 reference as a libtorch tensor of its shape.
#[cfg(feature = "torch")]
pub fn tensor_f32(r: &Ref) -> tch::Tensor {
    let shape: Vec<i64> = r.shape.iter().map(|&d| d as i64).collect();
    tch::Tensor::from_slice(&r.f32).view(shape.as_slice())
}

/// An int64 reference as a libtorch tensor of its shape.
#[cfg(feature = "torch")]
pub fn tensor_i64(r: &Ref) -> tch::Tensor {
    let shape: Vec<i64> = r.shape.iter().map(|&d| d as i64).collect();
    tch::Tensor::from_slice(&r.i64).view(shape.as_slice())
}

/// A tensor's values as float32, flattened (copied to the CPU first).
#[cfg(feature = "torch")]
pub fn to_vec(t: &tch::Tensor) -> Vec<f32> {
    let flat = t
        .to_device(tch::Device::Cpu)
        .to_kind(tch::Kind::Float)
        .contiguous()
        .view([-1]);
    Vec::<f32>::try_from(&flat).unwrap()
}

/// Twelve country-capital pairs: a task small enough to train on in a test.
pub const PAIRS: [(&str, &str); 12] = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
    ("Norway", "Oslo"),
    ("Kenya", "Nairobi"),
    ("Chile", "Santiago"),
    ("Greece", "Athens"),
    ("Canada", "Ottawa"),
];

/// `pairs` as a task file `task.json` in `dir`.
pub fn write_task(dir: &Path, pairs: &[(&str, &str)]) -> PathBuf {
    let v: Vec<_> = pairs
        .iter()
        .map(|(i, o)| serde_json::json!({"input": i, "output": o}))
        .collect();
    let p = dir.join("task.json");
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    p
}
