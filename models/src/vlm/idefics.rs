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

/// The images each row's tokens read, as `[rows, seq]` int64 with -1 for none, and each
/// row's walk after them. `walks` holds each row's walk so far (updated); prompt passes use
/// the processor's rule, generation steps copy the last token's image.
pub fn image_indices(
    rows: &[&[u32]],
    walks: &mut [ImageWalk],
    generating: bool,
    image_token: u32,
    eos: &[u32],
) -> Vec<i64> {
    let mut out = Vec::new();
    for (ids, walk) in rows.iter().zip(walks.iter_mut()) {
        let reads = match generating {
            true => walk.generated(ids.len()),
            false => walk.prompt(ids, image_token, eos),
        };
        out.extend(reads.into_iter().map(|r| r.map_or(-1, |i| i as i64)));
    }
    out
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
    fn rows_flatten_with_minus_one_for_none() {
        let mut walks = [ImageWalk::default(), ImageWalk::default()];
        let a: &[u32] = &[5, IMG, 6];
        let b: &[u32] = &[IMG, 6, 7];
        let idx = image_indices(&[a, b], &mut walks, false, IMG, &[EOS]);
        assert_eq!(idx, [-1, 0, 0, 0, 0, 0]);
        let idx = image_indices(&[&[3], &[IMG]], &mut walks, true, IMG, &[EOS]);
        // Generated tokens copy the last token's image, even an <image> token.
        assert_eq!(idx, [0, 0]);
    }
}
