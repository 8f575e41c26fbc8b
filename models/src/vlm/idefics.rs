//! What Idefics (v1) adds around its decoder: which image each token's cross-attention reads
//! (transformers' `image_attention_mask`), and the decoupled embeddings merged into one table.
//!
//! The processor's rule (`image_attention_mask_for_packed_input_ids`): walking a prompt, each
//! `<image>` token starts the next image, and every token reads the most recent image before
//! it (the `<image>` token its own); tokens before the first image read none, and so do the
//! tokens after an end-of-sequence token until the next `<image>`. During generation a new
//! token reads what the last token read (transformers copies the mask's last row).
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::weights::{HostTensor, Weights};

/// Where a row stands in the processor's walk, carried from one pass to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageWalk {
    /// `<image>` tokens met so far.
    pub images: usize,
    /// An end-of-sequence token came after the last image.
    pub after_eos: bool,
    /// The image the last token read.
    pub last: Option<usize>,
}

impl ImageWalk {
    /// The image each of a prompt's `ids` reads (an index into the row's images in prompt
    /// order), continuing the walk.
    pub fn prompt(&mut self, ids: &[u32], image_token: u32, eos: &[u32]) -> Vec<Option<usize>> {
        ids.iter()
            .map(|&id| {
                if id == image_token {
                    self.images += 1;
                    self.after_eos = false;
                }
                let reads = match (self.images, self.after_eos) {
                    (0, _) | (_, true) => None,
                    (n, false) => Some(n - 1),
                };
                if eos.contains(&id) {
                    self.after_eos = true;
                }
                self.last = reads;
                reads
            })
            .collect()
    }

    /// The image each of `n` generated tokens reads: the last token's.
    pub fn generated(&self, n: usize) -> Vec<Option<usize>> {
        vec![self.last; n]
    }
}

/// Where a batch's images sit among a cross-attention decoder's keys, and each row's walk:
/// the bookkeeping both backends share (libtorch's cache, the runtime's `CrossState`).
///
/// Images occupy slots of `latents_per_image` keys each; row `r`'s `j`-th image is in slot
/// `slots[r][j]`. A pass whose rows bring different numbers of images gives each row's its
/// next slots after every slot held, so the shorter rows leave slots no token of theirs reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSlots {
    n_slots: usize,
    slots: Vec<Vec<usize>>,
    walks: Vec<ImageWalk>,
}

impl ImageSlots {
    /// `rows` rows that have read no image, with `reserved` slots no image takes (the
    /// runtime's zero slot).
    pub fn new(rows: usize, reserved: usize) -> Self {
        ImageSlots {
            n_slots: reserved,
            slots: vec![Vec::new(); rows],
            walks: vec![ImageWalk::default(); rows],
        }
    }

    pub fn rows(&self) -> usize {
        self.walks.len()
    }

    /// Slots held, reserved ones included: the keys are `n_slots * latents_per_image`.
    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    /// The `<image>` tokens among each row's real tokens (`ids` and `real` `[rows, seq]`,
    /// row-major; `real` 0 for padding).
    pub fn image_counts(ids: &[i64], real: &[i64], rows: usize, image_token: u32) -> Vec<usize> {
        let seq = ids.len() / rows.max(1);
        ids.chunks(seq.max(1))
            .zip(real.chunks(seq.max(1)))
            .map(|(row, m)| {
                row.iter()
                    .zip(m)
                    .filter(|(&id, &m)| m != 0 && id == image_token as i64)
                    .count()
            })
            .collect()
    }

    /// Gives each row's `counts[r]` new images the next slots after those held; returns how
    /// many slots the pass adds (the most any row brings).
    pub fn add_images(&mut self, counts: &[usize]) -> usize {
        let new = counts.iter().copied().max().unwrap_or(0);
        for (row, &c) in self.slots.iter_mut().zip(counts) {
            row.extend((0..c).map(|k| self.n_slots + k));
        }
        self.n_slots += new;
        new
    }

    /// The slot each of a pass's tokens reads (`[rows, seq]`, -1 for none and for padding),
    /// walking each row on: the processor's rule in a prompt pass, the last token's image for
    /// generated tokens. An image without a slot (an `<image>` token whose image never came)
    /// reads nothing: callers check the counts first.
    pub fn token_slots(
        &mut self,
        ids: &[i64],
        real: &[i64],
        generating: bool,
        image_token: u32,
        eos: &[u32],
    ) -> Vec<i64> {
        let seq = ids.len() / self.rows().max(1);
        let mut out = Vec::with_capacity(ids.len());
        let rows = ids.chunks(seq.max(1)).zip(real.chunks(seq.max(1)));
        for ((row, m), (walk, slots)) in rows.zip(self.walks.iter_mut().zip(&self.slots)) {
            for (&id, &m) in row.iter().zip(m) {
                if m == 0 {
                    out.push(-1);
                    continue;
                }
                let image = match generating {
                    true => walk.generated(1)[0],
                    false => walk.prompt(&[id as u32], image_token, eos)[0],
                };
                out.push(image.and_then(|j| slots.get(j)).map_or(-1, |&k| k as i64));
            }
        }
        out
    }

    /// The rows' state where row `i` is this one's row `rows[i]` (beam search).
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        ImageSlots {
            n_slots: self.n_slots,
            slots: rows.iter().map(|&r| self.slots[r].clone()).collect(),
            walks: rows.iter().map(|&r| self.walks[r]).collect(),
        }
    }
}

/// Merges Idefics' decoupled embedding and output head into one table each: the
/// `additional_embedding` rows after `model.embed_tokens.weight`'s, the `additional_fc` rows
/// after `lm_head.weight`'s. Looking up a row, or multiplying by the table, is then exactly
/// what transformers' `IdeficsDecoupledEmbedding` and `IdeficsDecoupledLinear` compute.
pub fn merge_decoupled(text: &mut Weights, cfg: &LlamaConfig) -> Result<()> {
    let pairs = [
        (
            "model.embed_tokens.weight",
            "model.embed_tokens.additional_embedding.weight",
        ),
        ("lm_head.weight", "lm_head.additional_fc.weight"),
    ];
    for (main, extra) in pairs {
        let Some(more) = text.tensors.remove(extra) else {
            continue;
        };
        let source = text.source.clone();
        let Some(base) = text.tensors.get_mut(main) else {
            return Err(ModelError::Tensor {
                path: source,
                tensor: main.into(),
                msg: format!("missing, while `{extra}` is present"),
            });
        };
        if base.shape.len() != 2 || more.shape.len() != 2 || base.shape[1] != more.shape[1] {
            return Err(ModelError::Tensor {
                path: source,
                tensor: extra.into(),
                msg: format!(
                    "shape {:?} does not extend `{main}` of shape {:?} by rows",
                    more.shape, base.shape
                ),
            });
        }
        let mut data = std::mem::take(&mut base.data);
        data.extend_from_slice(&more.data);
        *base = HostTensor::new(vec![base.shape[0] + more.shape[0], base.shape[1]], data);
    }
    if cfg.tie_word_embeddings {
        text.tensors.remove("lm_head.weight");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: u32 = 9;
    const EOS: u32 = 2;

    #[test]
    fn each_token_reads_the_most_recent_image() {
        let mut w = ImageWalk::default();
        // text, <image>, text, <image>, text
        let reads = w.prompt(&[1, 5, IMG, 6, 7, IMG, 8], IMG, &[EOS]);
        assert_eq!(
            reads,
            [None, None, Some(0), Some(0), Some(0), Some(1), Some(1)]
        );
        // A later pass of the same prompt continues the walk.
        assert_eq!(w.prompt(&[4, IMG], IMG, &[EOS]), [Some(1), Some(2)]);
        assert_eq!(w.generated(2), [Some(2), Some(2)]);
    }

    #[test]
    fn tokens_after_eos_read_nothing_until_the_next_image() {
        let mut w = ImageWalk::default();
        let reads = w.prompt(&[IMG, 5, EOS, 6, IMG, 7], IMG, &[EOS]);
        assert_eq!(reads, [Some(0), Some(0), Some(0), None, Some(1), Some(1)]);
    }

    #[test]
    fn rows_take_slots_after_those_held_and_tokens_read_their_own() {
        // One reserved slot; row 0 brings one image, row 1 two (row 0's second new slot
        // stays unread).
        let mut slots = ImageSlots::new(2, 1);
        let (img, eos) = (i64::from(IMG), [EOS]);
        let ids = [5, img, 6, img, 7, img];
        let real = [0, 1, 1, 1, 1, 1];
        let counts = ImageSlots::image_counts(&ids, &real, 2, IMG);
        assert_eq!(counts, [1, 2]);
        assert_eq!(slots.add_images(&counts), 2);
        assert_eq!(slots.n_slots(), 3);
        let read = slots.token_slots(&ids, &real, false, IMG, &eos);
        assert_eq!(read, [-1, 1, 1, 1, 1, 2]);
        // Generated tokens copy the last token's image, even an <image> token.
        let read = slots.token_slots(&[3, img], &[1, 1], true, IMG, &eos);
        assert_eq!(read, [1, 2]);
        let beams = slots.select_rows(&[1, 1, 0]);
        assert_eq!(beams.rows(), 3);
        assert_eq!(
            beams
                .clone()
                .token_slots(&[4, 4, 4], &[1, 1, 1], true, IMG, &eos),
            [2, 2, 1]
        );
    }
}
