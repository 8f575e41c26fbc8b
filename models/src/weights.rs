//! Weights held on the host in float32, in Hugging Face names and layouts, whatever the source
//! (safetensors in F32 / F16 / BF16, a sharded index, or a GGUF file with quantised tensors).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::config::{Architecture, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// A dense float32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// The rows of `parts` (each `[.., width]`, one width) one after another, `[rows, width]`;
    /// `None` when there are none (a batch's image tokens, prompt after prompt).
    pub fn concat_rows<'a>(parts: impl IntoIterator<Item = &'a HostTensor>) -> Option<HostTensor> {
        let mut width = None;
        let mut data = Vec::new();
        for p in parts {
            width = p.shape.last().copied();
            data.extend_from_slice(&p.data);
        }
        let width = width.filter(|&w| w > 0)?;
        Some(HostTensor::new(vec![data.len() / width, width], data))
    }

    /// The transpose of a 2-D tensor: `[r, c] -> [c, r]`.
    pub fn transpose2(&self) -> HostTensor {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0f32; r * c];
        // Blocked so both sides stay in cache on the large projections.
        const B: usize = 32;
        for i0 in (0..r).step_by(B) {
            for j0 in (0..c).step_by(B) {
                for i in i0..(i0 + B).min(r) {
                    for j in j0..(j0 + B).min(c) {
                        out[j * r + i] = self.data[i * c + j];
                    }
                }
            }
        }
        HostTensor::new(vec![c, r], out)
    }
}

/// All tensors of a checkpoint, by HF name.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    pub tensors: BTreeMap<String, HostTensor>,
    /// Where they came from, for error messages.
    pub source: PathBuf,
    /// The 2-D weights a GGUF file holds as Q4_0, Q4_1 or Q8_0 blocks, also kept as those
    /// blocks (by HF name, rows in HF order), for graphs that compute with them.
    pub blocks: BTreeMap<String, crate::quant::BlockWeight>,
}

impl Weights {
    pub fn get(&self, name: &str) -> Result<&HostTensor> {
        self.tensors.get(name).ok_or_else(|| ModelError::Tensor {
            path: self.source.clone(),
            tensor: name.to_string(),
            msg: "missing".into(),
        })
    }

    /// Checks that every tensor the config needs is present with the right shape.
    pub fn check_against(&self, cfg: &LlamaConfig) -> Result<()> {
        self.check_shapes(cfg.expected_tensors())
    }

    /// Checks that every named tensor is present with its shape.
    pub fn check_shapes(
        &self,
        expected: impl IntoIterator<Item = (String, Vec<usize>)>,
    ) -> Result<()> {
        for (name, shape) in expected {
            let t = self.get(&name)?;
            if t.shape != shape {
                return Err(ModelError::Tensor {
                    path: self.source.clone(),
                    tensor: name,
                    msg: format!("shape {:?}, the config implies {:?}", t.shape, shape),
                });
            }
        }
        Ok(())
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    /// Loads every `*.safetensors` file named by `model.safetensors.index.json`, or the single
    /// `model.safetensors`, from an HF folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::format(&index, format!("invalid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::format(&index, "missing `weight_map`"))?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut weights = Weights {
            tensors: BTreeMap::new(),
            source: files.first().cloned().unwrap_or_else(|| dir.to_path_buf()),
            blocks: Default::default(),
        };
        for file in &files {
            weights.tensors.extend(read_safetensors(file)?);
        }
        Ok(weights)
    }

    /// Loads and dequantises a GGUF file's tensors into HF names and layout.
    pub fn from_gguf(g: &GgufFile, cfg: &LlamaConfig) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        let mut blocks = BTreeMap::new();
        for info in &g.tensors {
            let Some(name) = hf_name(&info.name) else {
                tracing::debug!(tensor = %info.name, "GGUF tensor not used by the decoder");
                continue;
            };
            let shape = info.shape();
            // A projection is a matrix (the rotary un-permutation below splits its rows).
            if name.ends_with("_proj.weight") && shape.len() != 2 {
                return Err(ModelError::Tensor {
                    path: g.path.clone(),
                    tensor: info.name.clone(),
                    msg: format!("shape {shape:?}: a projection weight has 2 dimensions"),
                });
            }
            let mut data = g.tensor_f32(info)?;
            // llama.cpp's converter permutes q/k rows of Llama checkpoints so rotary pairs are
            // adjacent (GPT-J style); undo that to get back to HF's rotate-half layout.
            let heads = match (cfg.architecture, name.as_str()) {
                (Architecture::Llama, n) if n.ends_with("q_proj.weight") => Some(cfg.num_heads),
                (Architecture::Llama, n) if n.ends_with("k_proj.weight") => Some(cfg.num_kv_heads),
                _ => None,
            };
            if let Some(heads) = heads {
                data = unpermute_rotary_rows(&data, &shape, heads);
            }
            let kind = match info.ggml_type {
                crate::gguf::GgmlType::Q4_0 => Some(crate::quant::BlockKind::Q4_0),
                crate::gguf::GgmlType::Q4_1 => Some(crate::quant::BlockKind::Q4_1),
                crate::gguf::GgmlType::Q8_0 => Some(crate::quant::BlockKind::Q8_0),
                _ => None,
            };
            if let (Some(kind), &[rows, cols]) = (kind, &shape[..]) {
                let raw = g.tensor_data(info)?.to_vec();
                if let Some(w) = crate::quant::BlockWeight::new(kind, rows, cols, raw) {
                    let w = match heads {
                        Some(h) => w.with_rows(&unpermuted_row_order(rows, h)),
                        None => w,
                    };
                    blocks.insert(name.clone(), w);
                }
            }
            tensors.insert(name, HostTensor::new(shape, data));
        }
        Ok(Weights {
            tensors,
            source: g.path.clone(),
            blocks,
        })
    }
}

/// The order [`unpermute_rotary_rows`] puts rows in: row `i` of the result is row `order[i]`.
fn unpermuted_row_order(rows: usize, heads: usize) -> Vec<usize> {
    let d = rows / heads;
    let half = d / 2;
    let mut order = vec![0; rows];
    for h in 0..heads {
        for i in 0..half {
            for two in 0..2 {
                order[h * d + two * half + i] = h * d + 2 * i + two;
            }
        }
    }
    order
}

/// Inverse of llama.cpp's `permute`: rows within each head go from interleaved pairs
/// `(0, d/2), (1, d/2+1), ...` back to halves `[0..d/2 | d/2..d]`.
fn unpermute_rotary_rows(data: &[f32], shape: &[usize], heads: usize) -> Vec<f32> {
    let (rows, cols) = (shape[0], shape.iter().skip(1).product::<usize>());
    let d = rows / heads;
    let half = d / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for two in 0..2 {
                // GGUF row h*d + 2i + two holds HF row h*d + two*half + i.
                let src = (h * d + 2 * i + two) * cols;
                let dst = (h * d + two * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    out
}

/// GGUF tensor names (llama.cpp) to HF names.
fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = tail.rsplit_once('.')?;
    let hf = match module {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    Ok(read_safetensors_with_metadata(path)?.0)
}

/// The `__metadata__` strings of a safetensors file, without converting its tensors.
pub fn read_safetensors_metadata(path: &Path) -> Result<std::collections::HashMap<String, String>> {
    safetensors_metadata(path, &map_file(path)?)
}

/// The `__metadata__` strings of safetensors `bytes`; `path` only names them in errors.
pub fn safetensors_metadata(
    path: &Path,
    bytes: &[u8],
) -> Result<std::collections::HashMap<String, String>> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| ModelError::format(path, format!("not a valid safetensors file: {e}")))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// The file at `path`, mapped read-only.
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    if !path.is_file() {
        return Err(ModelError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the file is opened read-only and not modified while mapped.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))
}

/// The tensors of one safetensors file in float32, and its `__metadata__` strings.
pub fn read_safetensors_with_metadata(
    path: &Path,
) -> Result<(
    BTreeMap<String, HostTensor>,
    std::collections::HashMap<String, String>,
)> {
    safetensors_from_bytes(path, &map_file(path)?)
}

/// The tensors of safetensors `bytes` in float32, and its `__metadata__` strings; `path` only
/// names them in errors.
pub fn safetensors_from_bytes(
    path: &Path,
    bytes: &[u8],
) -> Result<(
    BTreeMap<String, HostTensor>,
    std::collections::HashMap<String, String>,
)> {
    let metadata = safetensors_metadata(path, bytes)?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ModelError::format(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::UnsupportedTensorType {
                    path: path.to_path_buf(),
                    tensor: name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        out.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, d/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (heads, d, cols) = (2, 4, 3);
        let hf: Vec<f32> = (0..heads * d * cols).map(|x| x as f32).collect();
        let mut permuted = vec![0f32; hf.len()];
        for h in 0..heads {
            for two in 0..2 {
                for i in 0..d / 2 {
                    for c in 0..cols {
                        let src = ((h * d) + two * (d / 2) + i) * cols + c;
                        let dst = ((h * d) + i * 2 + two) * cols + c;
                        permuted[dst] = hf[src];
                    }
                }
            }
        }
        assert_eq!(
            unpermute_rotary_rows(&permuted, &[heads * d, cols], heads),
            hf
        );
    }

    #[test]
    fn transpose2_round_trips() {
        let t = HostTensor::new(vec![3, 70], (0..210).map(|x| x as f32).collect());
        let tt = t.transpose2();
        assert_eq!(tt.shape, vec![70, 3]);
        // tt[1][2] == t[2][1]
        assert_eq!(tt.data[3 + 2], t.data[2 * 70 + 1]);
        assert_eq!(tt.transpose2(), t);
    }

    #[test]
    fn gguf_names_map_to_hf() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.attn_k.bias").unwrap(),
            "model.layers.0.self_attn.k_proj.bias"
        );
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert!(hf_name("rope_freqs.weight").is_none());
    }
}
