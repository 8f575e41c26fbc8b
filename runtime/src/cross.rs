//! A cross-attention decoder's images in ONNX Runtime (Idefics, see `compiler/src/cross.rs`):
//! when a pass brings images, the cross graph turns their latents into every gated block's
//! keys and values once; the decoder then reads them, borrowed, in every later pass, with the
//! slot each new token reads.
//!
//! Images occupy slots of `latents_per_image` keys; row `r`'s `j`-th image is slot
//! `slots[r][j]`. Slot 0 is all zeros and read by no token, so that a prompt's text before
//! its first image has keys to (not) attend to. A pass whose rows bring different numbers of
//! images pads them with zero slots.
//!
//! Which image a token reads follows the processor's rule ([`ImageWalk`]) in a pass that
//! starts a prompt or brings images; in a pass that continues a cached sequence without
//! images (generated tokens), each token reads the image the last one read, as transformers'
//! generation extends the image attention mask.
use mimic_models::config::LlamaConfig;
use mimic_models::contract::{cross_key, cross_value, IMAGE_LATENTS};
use mimic_models::vlm::idefics::ImageWalk;
use mimic_models::HostTensor;
use ort::session::Session;
use ort::value::{DynValue, Tensor};

use crate::{Result, RuntimeError};

/// Keys and values of every gated block over a batch's images, and each row's walk.
pub struct CrossState {
    /// Per block, `[batch, heads, n_slots * latents, head_dim]` float32.
    blocks: Vec<(DynValue, DynValue)>,
    n_slots: usize,
    slots: Vec<Vec<usize>>,
    walks: Vec<ImageWalk>,
}

/// The shape facts a cross state needs, from the decoder's config.
#[derive(Debug, Clone, Copy)]
pub struct CrossShape {
    pub blocks: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub latents: usize,
    pub kv_input_dim: usize,
}

impl CrossShape {
    /// The cross shape of a decoder with gated cross-attention blocks.
    pub fn of(cfg: &LlamaConfig) -> Option<Self> {
        cfg.cross_attention.as_ref().map(|x| CrossShape {
            blocks: x.num_blocks(cfg.num_layers),
            heads: cfg.num_heads,
            head_dim: cfg.head_dim,
            latents: x.latents_per_image,
            kv_input_dim: x.kv_input_dim,
        })
    }
}

impl CrossState {
    /// `batch` rows that have read no image: one zero slot.
    pub fn empty(shape: &CrossShape, batch: usize) -> Result<Self> {
        let dims = [batch, shape.heads, shape.latents, shape.head_dim];
        let zeros = || -> Result<DynValue> {
            Ok(Tensor::from_array((dims, vec![0f32; dims.iter().product()]))?.into_dyn())
        };
        let blocks = (0..shape.blocks)
            .map(|_| Ok((zeros()?, zeros()?)))
            .collect::<Result<_>>()?;
        Ok(CrossState {
            blocks,
            n_slots: 1,
            slots: vec![Vec::new(); batch],
            walks: vec![ImageWalk::default(); batch],
        })
    }

    /// The graph inputs of block `j`: its keys and values.
    pub fn block(&self, j: usize) -> (&DynValue, &DynValue) {
        let (k, v) = &self.blocks[j];
        (k, v)
    }

    /// The state whose row `i` is this one's row `rows[i]` (beam search).
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        let blocks = self
            .blocks
            .iter()
            .map(|(k, v)| {
                Ok((
                    crate::session::gather_rows::<f32>(k, rows)?,
                    crate::session::gather_rows::<f32>(v, rows)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(CrossState {
            blocks,
            n_slots: self.n_slots,
            slots: rows.iter().map(|&r| self.slots[r].clone()).collect(),
            walks: rows.iter().map(|&r| self.walks[r]).collect(),
        })
    }

    /// Takes a pass's images (`latents` `[n_images, latents, kv_input_dim]`, in prompt order,
    /// rows one after the other, one per `<image>` token among the pass's real tokens),
    /// computes their keys and values with the `cross` graph, and returns the slot each of the
    /// pass's tokens reads (`[batch, seq]`, -1 for none).
    #[allow(clippy::too_many_arguments)]
    pub fn advance(
        &mut self,
        cross: &mut Session,
        shape: &CrossShape,
        latents: Option<HostTensor>,
        ids: &[i64],
        real: &[i64],
        batch: usize,
        image_token: u32,
        eos: &[u32],
        generating: bool,
    ) -> Result<Vec<i64>> {
        let seq = ids.len() / batch.max(1);
        let counts: Vec<usize> = (0..batch)
            .map(|r| {
                (0..seq)
                    .filter(|&p| real[r * seq + p] != 0 && ids[r * seq + p] == image_token as i64)
                    .count()
            })
            .collect();
        let wanted: usize = counts.iter().sum();
        let per_image = shape.latents * shape.kv_input_dim;
        let given = latents
            .as_ref()
            .map_or(0, |l| l.data.len() / per_image.max(1));
        if !generating && wanted != given {
            return Err(RuntimeError::Other(format!(
                "the prompt holds {wanted} <image> tokens but {given} images were given"
            )));
        }
        if let (false, Some(latents)) = (generating, latents.filter(|_| wanted > 0)) {
            self.add_images(cross, shape, &latents.data, &counts)?;
        }
        let mut out = Vec::with_capacity(ids.len());
        for r in 0..batch {
            for p in 0..seq {
                let (id, m) = (ids[r * seq + p], real[r * seq + p]);
                if m == 0 {
                    out.push(-1);
                    continue;
                }
                let walk = &mut self.walks[r];
                let image = match generating {
                    true => walk.generated(1)[0],
                    false => walk.prompt(&[id as u32], image_token, eos)[0],
                };
                let slot = image.and_then(|j| self.slots[r].get(j));
                out.push(slot.map_or(-1, |&s| s as i64));
            }
        }
        Ok(out)
    }

    /// Runs the cross graph over the rows' new images (each row's `counts[r]`, padded with
    /// zero images to the most any row brings) and appends their keys and values.
    fn add_images(
        &mut self,
        cross: &mut Session,
        shape: &CrossShape,
        data: &[f32],
        counts: &[usize],
    ) -> Result<()> {
        let batch = counts.len();
        let new = counts.iter().copied().max().unwrap_or(0);
        let per_image = shape.latents * shape.kv_input_dim;
        let mut latents = vec![0f32; batch * new * per_image];
        let mut start = 0;
        for (r, &c) in counts.iter().enumerate() {
            let dst = &mut latents[r * new * per_image..][..c * per_image];
            dst.copy_from_slice(&data[start..start + c * per_image]);
            start += c * per_image;
        }
        let dims = [batch, new * shape.latents, shape.kv_input_dim];
        let inputs = vec![(
            IMAGE_LATENTS.to_string(),
            Tensor::from_array((dims, latents))?.into_dyn(),
        )];
        let mut out = cross.run(inputs)?;
        let old_keys = self.n_slots * shape.latents;
        let new_keys = new * shape.latents;
        for j in 0..shape.blocks {
            for (name, which) in [(cross_key(j), 0), (cross_value(j), 1)] {
                let value = out.remove(name.as_str()).ok_or_else(|| {
                    RuntimeError::Other(format!("cross graph output {name} missing"))
                })?;
                let (_, fresh) = value.try_extract_tensor::<f32>()?;
                let held = match which {
                    0 => &self.blocks[j].0,
                    _ => &self.blocks[j].1,
                };
                let (_, old) = held.try_extract_tensor::<f32>()?;
                // [b, h, old + new, d]: each (row, head)'s old keys, then its new ones.
                let d = shape.head_dim;
                let mut joined = Vec::with_capacity(old.len() + fresh.len());
                for bh in 0..batch * shape.heads {
                    joined.extend_from_slice(&old[bh * old_keys * d..][..old_keys * d]);
                    joined.extend_from_slice(&fresh[bh * new_keys * d..][..new_keys * d]);
                }
                let dims = [batch, shape.heads, old_keys + new_keys, d];
                let joined = Tensor::from_array((dims, joined))?.into_dyn();
                match which {
                    0 => self.blocks[j].0 = joined,
                    _ => self.blocks[j].1 = joined,
                }
            }
        }
        for (row, &c) in self.slots.iter_mut().zip(counts) {
            row.extend((0..c).map(|k| self.n_slots + k));
        }
        self.n_slots += new;
        Ok(())
    }
}
