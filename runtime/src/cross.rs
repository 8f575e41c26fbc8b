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
//! A decoder compiled with `--cross-kv every-step` takes the latents themselves
//! (`image_latents`) and projects them in every pass; the state then holds the latents.
//!
//! Which image a token reads follows the processor's rule
//! ([`mimic_models::vlm::idefics::ImageSlots`]) in a pass that
//! starts a prompt or brings images; in a pass that continues a cached sequence without
//! images (generated tokens), each token reads the image the last one read, as transformers'
//! generation extends the image attention mask.
use mimic_models::config::LlamaConfig;
use mimic_models::contract::{cross_key, cross_value, IMAGE_LATENTS};
use mimic_models::vlm::idefics::ImageSlots;
use mimic_models::HostTensor;
use ort::session::Session;
use ort::value::{DynValue, Tensor};

use crate::{Result, RuntimeError};

/// What a cross-attention decoder reads of a batch's images.
pub enum CrossInputs {
    /// Per block, keys and values `[batch, heads, n_slots * latents, head_dim]` float32,
    /// from the cross graph.
    KeysValues(Vec<(DynValue, DynValue)>),
    /// The latents `[batch, n_slots * latents, kv_input_dim]`, which the decoder projects.
    Latents(DynValue),
}

/// A batch's images as its cross-attention decoder reads them, and each row's walk.
pub struct CrossState {
    pub inputs: CrossInputs,
    slots: ImageSlots,
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
    /// `batch` rows that have read no image: one zero slot. `latents` for a decoder that
    /// projects the latents itself.
    pub fn empty(shape: &CrossShape, batch: usize, latents: bool) -> Result<Self> {
        fn zeros(dims: &[usize]) -> Result<DynValue> {
            let n = dims.iter().product();
            Ok(Tensor::from_array((dims.to_vec(), vec![0f32; n]))?.into_dyn())
        }
        let inputs = match latents {
            true => CrossInputs::Latents(zeros(&[batch, shape.latents, shape.kv_input_dim])?),
            false => {
                let dims = [batch, shape.heads, shape.latents, shape.head_dim];
                CrossInputs::KeysValues(
                    (0..shape.blocks)
                        .map(|_| Ok((zeros(&dims)?, zeros(&dims)?)))
                        .collect::<Result<_>>()?,
                )
            }
        };
        Ok(CrossState {
            inputs,
            slots: ImageSlots::new(batch, 1),
        })
    }

    /// The state whose row `i` is this one's row `rows[i]` (beam search).
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        let gather = |x: &DynValue| crate::session::gather_rows::<f32>(x, rows);
        let inputs = match &self.inputs {
            CrossInputs::KeysValues(blocks) => CrossInputs::KeysValues(
                blocks
                    .iter()
                    .map(|(k, v)| Ok((gather(k)?, gather(v)?)))
                    .collect::<Result<_>>()?,
            ),
            CrossInputs::Latents(z) => CrossInputs::Latents(gather(z)?),
        };
        Ok(CrossState {
            inputs,
            slots: self.slots.select_rows(rows),
        })
    }

    /// Takes a pass's images (`latents` `[n_images, latents, kv_input_dim]`, in prompt order,
    /// rows one after the other, one per `<image>` token among the pass's real tokens),
    /// computes their keys and values with the `cross` graph (or keeps the latents), and
    /// returns the slot each of the pass's tokens reads (`[batch, seq]`, -1 for none).
    #[allow(clippy::too_many_arguments)]
    pub fn advance(
        &mut self,
        cross: Option<&mut Session>,
        shape: &CrossShape,
        latents: Option<HostTensor>,
        ids: &[i64],
        real: &[i64],
        batch: usize,
        image_token: u32,
        eos: &[u32],
        generating: bool,
    ) -> Result<Vec<i64>> {
        let counts = ImageSlots::image_counts(ids, real, batch, image_token);
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
        Ok(self
            .slots
            .token_slots(ids, real, generating, image_token, eos))
    }

    /// Runs the cross graph over the rows' new images (each row's `counts[r]`, padded with
    /// zero images to the most any row brings) and appends their keys and values (or the
    /// latents themselves).
    fn add_images(
        &mut self,
        cross: Option<&mut Session>,
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
        let old_keys = self.slots.n_slots() * shape.latents;
        let new_keys = new * shape.latents;
        let (blocks, cross) = match (&mut self.inputs, cross) {
            (CrossInputs::KeysValues(blocks), Some(cross)) => (blocks, cross),
            (CrossInputs::Latents(held), _) => {
                let width = shape.kv_input_dim;
                *held = concat_axis(held, &latents, &[batch], old_keys, new_keys, width)?;
                self.slots.add_images(counts);
                return Ok(());
            }
            (CrossInputs::KeysValues(_), None) => {
                return Err(RuntimeError::Other("the cross graph is missing".into()))
            }
        };
        let dims = [batch, new_keys, shape.kv_input_dim];
        let inputs = vec![(
            IMAGE_LATENTS.to_string(),
            Tensor::from_array((dims, latents))?.into_dyn(),
        )];
        let mut out = cross.run(inputs)?;
        for (j, block) in blocks.iter_mut().enumerate() {
            for (name, which) in [(cross_key(j), 0), (cross_value(j), 1)] {
                let value = out.remove(name.as_str()).ok_or_else(|| {
                    RuntimeError::Other(format!("cross graph output {name} missing"))
                })?;
                let (_, fresh) = value.try_extract_tensor::<f32>()?;
                let held = match which {
                    0 => &mut block.0,
                    _ => &mut block.1,
                };
                // [b, h, old + new, d]: each (row, head)'s old keys, then its new ones.
                let lead = [batch, shape.heads];
                *held = concat_axis(held, fresh, &lead, old_keys, new_keys, shape.head_dim)?;
            }
        }
        self.slots.add_images(counts);
        Ok(())
    }

    /// The decoder's inputs for these images: each block's keys and values, or the latents.
    pub fn graph_inputs(&self) -> Vec<(String, &DynValue)> {
        match &self.inputs {
            CrossInputs::KeysValues(blocks) => blocks
                .iter()
                .enumerate()
                .flat_map(|(j, (k, v))| [(cross_key(j), k), (cross_value(j), v)])
                .collect(),
            CrossInputs::Latents(z) => vec![(IMAGE_LATENTS.to_string(), z)],
        }
    }
}

/// `held` `[lead.., old, width]` with `fresh` `[lead.., new, width]` joined along the `old`
/// axis: `[lead.., old + new, width]`.
fn concat_axis(
    held: &DynValue,
    fresh: &[f32],
    lead: &[usize],
    old: usize,
    new: usize,
    width: usize,
) -> Result<DynValue> {
    let rows: usize = lead.iter().product();
    let (_, kept) = held.try_extract_tensor::<f32>()?;
    let mut joined = Vec::with_capacity(kept.len() + fresh.len());
    for r in 0..rows {
        joined.extend_from_slice(&kept[r * old * width..][..old * width]);
        joined.extend_from_slice(&fresh[r * new * width..][..new * width]);
    }
    let mut dims = lead.to_vec();
    dims.extend([old + new, width]);
    Ok(Tensor::from_array((dims, joined))?.into_dyn())
}
