//! Loading the ONNX Runtime shared library at run time (ort's `load-dynamic`): from
//! `$ORT_DYLIB_PATH`, else from the `onnxruntime` wheel in the project's Python environment.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mimic_models::default_model::site_packages_dirs;

use crate::{Result, RuntimeError};

/// What was loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OrtInfo {
    pub library: PathBuf,
    pub version: String,
    pub providers: Vec<String>,
}

/// The loaded library and the process's one ONNX Runtime environment (sessions hold it by
/// reference, so it lives as long as the process).
static ORT: OnceLock<std::result::Result<(OrtInfo, ort::environment::Environment), String>> =
    OnceLock::new();

/// Finds `libonnxruntime.so.<version>`.
pub fn find_library() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(p));
    }
    for sp in site_packages_dirs() {
        let capi = sp.join("onnxruntime").join("capi");
        let Ok(entries) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("libonnxruntime.so.") || n == "libonnxruntime.so"
                })
            })
            .collect();
        libs.sort();
        if let Some(lib) = libs.pop() {
            return Ok(lib);
        }
    }
    Err(RuntimeError::Other(format!(
        "ONNX Runtime library not found: run `make setup` (PyPI onnxruntime==1.30.0 into .venv) or set \
         ORT_DYLIB_PATH; searched {:?}",
        site_packages_dirs()
    )))
}

fn version_from_name(lib: &Path) -> String {
    let name = lib.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.strip_prefix("libonnxruntime.so.")
        .unwrap_or("unknown")
        .to_string()
}

fn available_providers() -> Result<Vec<String>> {
    let api = ort::api();
    let mut ptr: *mut *mut std::os::raw::c_char = std::ptr::null_mut();
    let mut n: std::os::raw::c_int = 0;
    // SAFETY: the C API fills a list of `n` C strings that we release below.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut ptr, &mut n);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return Err(RuntimeError::Ort("GetAvailableProviders failed".into()));
        }
        let mut out = Vec::new();
        for i in 0..n as isize {
            let s = std::ffi::CStr::from_ptr(*ptr.offset(i));
            out.push(s.to_string_lossy().into_owned());
        }
        let _ = (api.ReleaseAvailableProviders)(ptr, n);
        Ok(out)
    }
}

/// Loads ONNX Runtime once per process and returns what was loaded.
pub fn init_onnxruntime() -> Result<OrtInfo> {
    Ok(load()?.0.clone())
}

/// The process's ONNX Runtime environment.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    Ok(&load()?.1)
}

fn load() -> Result<&'static (OrtInfo, ort::environment::Environment)> {
    let loaded = ORT.get_or_init(|| {
        let lib = find_library().map_err(|e| e.to_string())?;
        if !lib.exists() {
            return Err(format!("{}: ONNX Runtime library not found", lib.display()));
        }
        let builder = ort::init_from(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
        let env = builder
            .with_name("mimic")
            .build()
            .map_err(|e| format!("{}: {e}", lib.display()))?;
        let providers = available_providers().map_err(|e| e.to_string())?;
        tracing::debug!(library = %lib.display(), ?providers, "ONNX Runtime loaded");
        let info = OrtInfo {
            version: version_from_name(&lib),
            library: lib,
            providers,
        };
        Ok((info, env))
    });
    loaded.as_ref().map_err(|e| RuntimeError::Other(e.clone()))
}
