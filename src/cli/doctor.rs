//! `mimic doctor`: what this build of mimic can use here: libtorch (when built in), ONNX
//! Runtime and its execution providers, the built-in task sets, the default model and the
//! default benchmark (easy-VQA).
use std::io::Write;

use anyhow::Result;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The report as JSON.
    #[command(flatten)]
    json: super::JsonArgs,
}

pub fn run(a: Args) -> Result<()> {
    let mut report = serde_json::Map::new();
    report.insert("mimic".into(), json!(env!("CARGO_PKG_VERSION")));
    report.insert("libtorch".into(), torch_report());
    report.insert(
        "onnxruntime".into(),
        match mimic_runtime::init_onnxruntime() {
            Ok(info) => json!({"library": info.library, "version": info.version, "providers": info.providers}),
            Err(e) => json!({"error": e.to_string()}),
        },
    );
    report.insert("tasks".into(), tasks_report());
    report.insert("default_model".into(), default_model_report());
    report.insert("easy_vqa".into(), easy_vqa_report());
    report.insert("huge_pages".into(), crate::hugepages::status());
    report.insert("cache".into(), json!(super::cache_dir()));
    let ok = report.values().all(|v| v.get("error").is_none());
    let mut out = a.json.table();
    for (k, v) in &report {
        let text = match v.as_str() {
            Some(s) => s.to_string(),
            None => v.to_string(),
        };
        writeln!(out, "{k:<14} {text}")?;
    }
    a.json.write(&report)?;
    if !ok {
        anyhow::bail!("some components are missing (see above); `make setup` installs them");
    }
    Ok(())
}

/// The built-in task sets, each parsed: their pair counts.
fn tasks_report() -> serde_json::Value {
    let mut counts = serde_json::Map::new();
    for (name, text) in mimic_models::task::BUILTIN_TASKS {
        match serde_json::from_str::<Vec<mimic_models::task::Pair>>(text) {
            Ok(pairs) => counts.insert(name.into(), json!(pairs.len())),
            Err(e) => return json!({"error": format!("built-in task {name}: {e}")}),
        };
    }
    json!({"built_in": counts})
}

/// The default benchmark: the easy-vqa package's data found, and its answers readable.
fn easy_vqa_report() -> serde_json::Value {
    use mimic_models::datasets::easy_vqa::{package_root, read_answers};
    let root = match package_root() {
        Ok(r) => r,
        Err(e) => return json!({"error": e.to_string()}),
    };
    match read_answers(&root) {
        Ok(answers) => json!({"path": root, "answers": answers.len()}),
        Err(e) => json!({"path": root, "error": e.to_string()}),
    }
}

/// The default model: found, and its GGUF header and metadata readable.
fn default_model_report() -> serde_json::Value {
    let path = match mimic_models::default_model::default_model_path() {
        Ok(p) => p,
        Err(e) => return json!({"error": e.to_string()}),
    };
    match mimic_models::gguf::GgufFile::open(&path) {
        Ok(g) => json!({
            "path": path,
            "architecture": g.architecture().unwrap_or("unknown"),
            "tensors": g.tensors.len(),
        }),
        Err(e) => json!({"path": path, "error": e.to_string()}),
    }
}

#[cfg(feature = "torch")]
fn torch_report() -> serde_json::Value {
    json!({
        "version": torch_version(),
        "cuda_available": tch::Cuda::is_available(),
        "cuda_devices": tch::Cuda::device_count(),
        "threads": tch::get_num_threads(),
    })
}

/// The version of the libtorch this process loaded: a PyPI torch keeps `version.py` beside
/// its `lib/` folder, found through the loaded `libtorch_cpu.so`.
#[cfg(feature = "torch")]
fn torch_version() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let Some(lib) = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("libtorch_cpu.so"))
        .map(std::path::PathBuf::from)
    else {
        return "loaded from an unknown place (version unknown)".into();
    };
    let version_py = lib
        .parent()
        .and_then(|d| d.parent())
        .map(|t| t.join("version.py"));
    let text = version_py
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("__version__ = ")
                .map(|v| v.trim_matches(['\'', '"']).to_string())
        })
        .unwrap_or_else(|| format!("{} (version unknown)", lib.display()))
}

#[cfg(not(feature = "torch"))]
fn torch_report() -> serde_json::Value {
    json!("not built in (a deployment build: training, eval, verify and --backend torch need the `torch` feature)")
}
