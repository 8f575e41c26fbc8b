//! Loading the ONNX Runtime shared library at run time (ort's `load-dynamic`): from
//! `$ORT_DYLIB_PATH`, else from the `onnxruntime` wheel in the project's Python environment.
//!
//! The process has one ONNX Runtime environment, and in it one pool of intra-op threads that
//! every session of the same thread count shares. Sessions that take turns (the benchmark's
//! backends, step by step; a server holding several compiled models) then hand the same
//! workers on instead of each leaving its own pool spinning on the cores the next one needs.
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

/// The loaded library (once per process).
static LIBRARY: OnceLock<std::result::Result<OrtInfo, String>> = OnceLock::new();

/// The process's one ONNX Runtime environment (sessions hold it by reference, so it lives as
/// long as the process), made when the first session is built.
static ENVIRONMENT: OnceLock<std::result::Result<Shared, String>> = OnceLock::new();

struct Shared {
    env: ort::environment::Environment,
    /// Intra-op threads of the environment's shared pool (0: ONNX Runtime's default, one per
    /// core).
    pool_threads: usize,
}

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
    let loaded = LIBRARY.get_or_init(|| {
        let lib = find_library().map_err(|e| e.to_string())?;
        if !lib.exists() {
            return Err(format!("{}: ONNX Runtime library not found", lib.display()));
        }
        ort::init_from(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
        let providers = available_providers().map_err(|e| e.to_string())?;
        tracing::debug!(library = %lib.display(), ?providers, "ONNX Runtime loaded");
        Ok(OrtInfo {
            version: version_from_name(&lib),
            library: lib,
            providers,
        })
    });
    loaded.clone().map_err(RuntimeError::Other)
}

/// The process's ONNX Runtime environment, and whether a session of `threads` intra-op
/// threads (0: one per core) runs on its shared pool. The first session built sizes the
/// pool; a session asking for another count gets a pool of its own.
pub fn environment(threads: usize) -> Result<(&'static ort::environment::Environment, bool)> {
    let info = init_onnxruntime()?;
    let shared = ENVIRONMENT.get_or_init(|| {
        let at = |e: ort::Error| format!("{}: {e}", info.library.display());
        let pool = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(threads)
            .and_then(|p| p.with_spin_control(true))
            .map_err(at)?;
        let env = ort::init()
            .with_name("mimic")
            .with_global_thread_pool(pool)
            .build()
            .map_err(at)?;
        tracing::debug!(pool_threads = threads, "ONNX Runtime environment");
        Ok(Shared {
            env,
            pool_threads: threads,
        })
    });
    let shared = shared
        .as_ref()
        .map_err(|e| RuntimeError::Other(e.clone()))?;
    Ok((&shared.env, shared.pool_threads == threads))
}

/// The intra-op threads of the shared pool (0: one per core), once the first session made it.
pub fn pool_threads() -> Option<usize> {
    ENVIRONMENT.get()?.as_ref().ok().map(|s| s.pool_threads)
}
