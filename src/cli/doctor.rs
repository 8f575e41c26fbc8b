use anyhow::Result;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
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
    report.insert(
        "default_model".into(),
        match mimic_models::default_model::default_model_path() {
            Ok(p) => json!({"path": p, "exists": p.is_file()}),
            Err(e) => json!({"error": e.to_string()}),
        },
    );
    report.insert("huge_pages".into(), crate::hugepages::status());
    report.insert("cache".into(), json!(super::cache_dir()));
    let ok = report.values().all(|v| v.get("error").is_none());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (k, v) in &report {
            println!(
                "{k:<14} {}",
                if v.is_string() {
                    v.as_str().unwrap_or_default().to_string()
                } else {
                    v.to_string()
                }
            );
        }
    }
    if !ok {
        anyhow::bail!("some components are missing (see above); `make setup` installs them");
    }
    Ok(())
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

#[cfg(feature = "torch")]
fn torch_version() -> String {
    // build.rs records the libtorch torch-sys linked; a PyPI torch keeps its version beside it.
    let lib = std::path::Path::new(option_env!("MIMIC_LIBTORCH_LIB").unwrap_or_default());
    let version_py = lib.parent().map(|p| p.join("version.py"));
    let text = version_py
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("__version__ = ")
                .map(|v| v.trim_matches(['\'', '"']).to_string())
        })
        .unwrap_or_else(|| format!("linked from {} (version unknown)", lib.display()))
}

#[cfg(not(feature = "torch"))]
fn torch_report() -> serde_json::Value {
    json!({"error": "built without the `torch` feature"})
}
