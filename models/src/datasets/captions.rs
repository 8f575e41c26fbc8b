//! The Karpathy caption splits of COCO and Flickr30k.
//!
//! Under one root folder:
//! - COCO: `dataset_coco.json`, images at `{filepath}/{filename}` (`train2014/…` for the train
//!   split, `val2014/…` for restval, val and test). MimIC's `testbed/data/coco/coco.py` maps
//!   the split to the folder instead (train → `train2014`, the others → `val2014`); the two
//!   agree on the published file, and that mapping is the fallback for an entry without
//!   `filepath`.
//! - Flickr30k: `dataset_flickr30k.json`, images at `flickr30k-images/{filename}`
//!   (MimIC's `testbed/data/flickr/flickr.py`).
//!
//! The file is `{"images": [{filepath, filename, imgid, cocoid, split, sentences: [{raw,
//! tokens, …}], …}]}`; for Flickr30k only `filename`, `imgid`, `split` and `sentences` are
//! read (MimIC's Flickr reader uses no `filepath` nor `cocoid`).
//!
//! Splits are exact, as in MimIC: its support set is `split == "train"` alone (restval left
//! out) and its query set `split == "val"`. The "Karpathy train" of much other captioning code
//! is `[Train, Restval]`.
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use super::{read_json, Dataset, ImageCheck, MissingImages, Read};
use crate::{ModelError, Result};

/// A Karpathy split, as the `split` field writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KarpathySplit {
    Train,
    /// COCO's val2014 images outside val and test (Flickr30k has none).
    Restval,
    Val,
    Test,
}

impl KarpathySplit {
    /// `train`, `restval`, `val` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            KarpathySplit::Train => "train",
            KarpathySplit::Restval => "restval",
            KarpathySplit::Val => "val",
            KarpathySplit::Test => "test",
        }
    }
}

impl fmt::Display for KarpathySplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KarpathySplit {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(KarpathySplit::Train),
            "restval" => Ok(KarpathySplit::Restval),
            "val" => Ok(KarpathySplit::Val),
            "test" => Ok(KarpathySplit::Test),
            _ => Err(ModelError::Other(format!(
                "unknown Karpathy split {s:?} (train, restval, val or test)"
            ))),
        }
    }
}

/// One image and its reference captions.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionSample {
    /// COCO's `cocoid` (the COCO image id), Flickr30k's `imgid` (the index in the file).
    pub image_id: u64,
    pub image: PathBuf,
    /// The `raw` sentences in file order (five per image, untokenised).
    pub captions: Vec<String>,
    pub split: KarpathySplit,
}

/// The Karpathy file of `dataset` under `root`: `dataset_coco.json` or `dataset_flickr30k.json`.
pub fn karpathy_file(dataset: Dataset, root: &Path) -> Result<PathBuf> {
    match dataset {
        Dataset::Coco => Ok(root.join("dataset_coco.json")),
        Dataset::Flickr30k => Ok(root.join("dataset_flickr30k.json")),
        other => Err(ModelError::Other(format!(
            "{other} has no Karpathy caption split (coco or flickr30k)"
        ))),
    }
}

/// Reads the images of `dataset` (COCO or Flickr30k) whose split is one of `splits`, in file
/// order. An unknown split name or an image without sentences is an error naming the file and
/// the image.
pub fn read_karpathy(
    dataset: Dataset,
    root: &Path,
    splits: &[KarpathySplit],
    missing: MissingImages,
) -> Result<Read<CaptionSample>> {
    let path = karpathy_file(dataset, root)?;
    let file: KarpathyFile = read_json::<_, Entry>(&path, Some("images"), "filename")?;
    let mut check = ImageCheck::new(missing);
    let mut samples = Vec::new();
    for entry in file.images {
        let split: KarpathySplit = entry.split.parse().map_err(|_| {
            ModelError::format(
                &path,
                format!(
                    "{}: unknown split {:?} (train, restval, val or test)",
                    entry.name(),
                    entry.split
                ),
            )
        })?;
        if !splits.contains(&split) {
            continue;
        }
        let (image_id, image) = match dataset {
            Dataset::Coco => {
                let id = entry.cocoid.ok_or_else(|| {
                    ModelError::format(&path, format!("{}: no cocoid", entry.name()))
                })?;
                let folder = entry.filepath.clone().unwrap_or_else(|| {
                    match split {
                        KarpathySplit::Train => "train2014",
                        _ => "val2014",
                    }
                    .to_string()
                });
                (id, root.join(folder).join(&entry.filename))
            }
            _ => (
                entry.imgid,
                root.join("flickr30k-images").join(&entry.filename),
            ),
        };
        if entry.sentences.is_empty() {
            return Err(ModelError::format(
                &path,
                format!("{}: no sentences", entry.name()),
            ));
        }
        if !check.exists(&path, &entry.name(), &image)? {
            continue;
        }
        samples.push(CaptionSample {
            image_id,
            image,
            captions: entry.sentences.into_iter().map(|s| s.raw).collect(),
            split,
        });
    }
    Ok(check.finish(samples))
}

#[derive(Deserialize)]
struct KarpathyFile {
    images: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    filepath: Option<String>,
    filename: String,
    imgid: u64,
    #[serde(default)]
    cocoid: Option<u64>,
    split: String,
    sentences: Vec<Sentence>,
}

impl Entry {
    /// How errors name the entry.
    fn name(&self) -> String {
        format!("imgid {} ({})", self.imgid, self.filename)
    }
}

#[derive(Deserialize)]
struct Sentence {
    raw: String,
}
