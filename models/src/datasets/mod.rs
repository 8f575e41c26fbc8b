//! Readers for the vision-language benchmarks of MimIC, each from its official on-disk layout:
//! VQAv2 and OK-VQA ([`vqa`]), the Karpathy caption splits of COCO and Flickr30k
//! ([`captions`]), the MME release folder ([`mme`]), SEED-Bench v1 ([`seed`]) and the
//! `easy-vqa` Python package ([`easy_vqa`]).
//!
//! Every reader returns its samples in file order, each with its image's path joined onto the
//! root folder it was given (images are not decoded here: see [`crate::image::decode`]). An image that is not on disk is
//! an error naming the data file, the entry and the image path, or, with
//! [`MissingImages::Skip`], a counted skip ([`Read::skipped_missing`]). Malformed data is always
//! an error naming the file (and the entry, where there is one).
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::{ModelError, Result};

pub mod captions;
pub mod easy_vqa;
pub mod mme;
pub mod seed;
pub mod vqa;

pub use captions::{read_karpathy, CaptionSample, KarpathySplit};
pub use easy_vqa::{read_easy_vqa, EasyVqaSample, EasyVqaSplit};
pub use mme::{read_mme, MmeSample};
pub use seed::{read_seed, SeedSample};
pub use vqa::{read_vqa, read_vqa_files, VqaFiles, VqaSample, VqaSplit};

/// The benchmark data sets, named as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dataset {
    VqaV2,
    OkVqa,
    Coco,
    Flickr30k,
    Mme,
    Seed,
    EasyVqa,
}

impl Dataset {
    pub const ALL: [Dataset; 7] = [
        Dataset::VqaV2,
        Dataset::OkVqa,
        Dataset::Coco,
        Dataset::Flickr30k,
        Dataset::Mme,
        Dataset::Seed,
        Dataset::EasyVqa,
    ];

    /// `vqav2`, `okvqa`, `coco`, `flickr30k`, `mme`, `seed` or `easy-vqa`.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::VqaV2 => "vqav2",
            Dataset::OkVqa => "okvqa",
            Dataset::Coco => "coco",
            Dataset::Flickr30k => "flickr30k",
            Dataset::Mme => "mme",
            Dataset::Seed => "seed",
            Dataset::EasyVqa => "easy-vqa",
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        Dataset::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Dataset::ALL.iter().map(|d| d.name()).collect();
                ModelError::Other(format!(
                    "unknown data set {s:?} (known: {})",
                    names.join(", ")
                ))
            })
    }
}

/// What a reader does with an entry whose image is not on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingImages {
    /// Fail, naming the data file, the entry and the image path.
    #[default]
    Error,
    /// Leave the entry out and count it (MimIC's SEED-Bench reader keeps only rows whose image
    /// exists).
    Skip,
}

/// A reader's samples, and how many entries were left out for a missing image.
#[derive(Debug, Clone, PartialEq)]
pub struct Read<T> {
    pub samples: Vec<T>,
    pub skipped_missing: usize,
}

/// Applies a [`MissingImages`] policy entry by entry and counts the skips.
#[derive(Debug)]
pub(crate) struct ImageCheck {
    policy: MissingImages,
    skipped: usize,
}

impl ImageCheck {
    pub(crate) fn new(policy: MissingImages) -> Self {
        ImageCheck { policy, skipped: 0 }
    }

    /// Whether `image` is a file: `Ok(true)` if so, `Ok(false)` if it is missing and skipped,
    /// else an error naming `data_file`, `entry` (e.g. `question_id 42`) and the image.
    pub(crate) fn exists(&mut self, data_file: &Path, entry: &str, image: &Path) -> Result<bool> {
        if image.is_file() {
            return Ok(true);
        }
        self.missing(data_file, entry, &image.display().to_string())
    }

    /// An entry whose image (described by `image`) is not on disk.
    pub(crate) fn missing(&mut self, data_file: &Path, entry: &str, image: &str) -> Result<bool> {
        match self.policy {
            MissingImages::Error => Err(ModelError::format(
                data_file,
                format!("{entry}: image {image} not found"),
            )),
            MissingImages::Skip => {
                self.skipped += 1;
                Ok(false)
            }
        }
    }

    pub(crate) fn finish<T>(self, samples: Vec<T>) -> Read<T> {
        Read {
            samples,
            skipped_missing: self.skipped,
        }
    }
}

/// An id written as a JSON number or a string (SEED-Bench's `question_id` is a string, and
/// some copies write numbers).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum JsonId {
    Number(u64),
    Text(String),
}

impl fmt::Display for JsonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonId::Number(n) => write!(f, "{n}"),
            JsonId::Text(s) => f.write_str(s),
        }
    }
}

/// Reads `path` as the JSON document `W` whose list of entries `E` sits under `key` (or is the
/// document itself when `key` is `None`).
///
/// On failure the error names the file; where the document is valid JSON but one entry does
/// not fit `E`, it also names that entry's index and its `id_field`.
pub(crate) fn read_json<W, E>(path: &Path, key: Option<&str>, id_field: &str) -> Result<W>
where
    W: DeserializeOwned,
    E: DeserializeOwned,
{
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_slice::<W>(&bytes)
        .map_err(|e| explain_json::<E>(path, &bytes, key, id_field, e))
}

/// The typed parse failed: find the entry at fault so the message can name it.
fn explain_json<E: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    key: Option<&str>,
    id_field: &str,
    typed: serde_json::Error,
) -> ModelError {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return ModelError::format(path, format!("malformed JSON: {e}")),
    };
    let list = match key {
        Some(k) => value.get(k),
        None => Some(&value),
    };
    let Some(serde_json::Value::Array(items)) = list else {
        let what = key.map_or("the document".to_string(), |k| format!("\"{k}\""));
        return ModelError::format(path, format!("{what} is not a JSON list: {typed}"));
    };
    for (i, item) in items.iter().enumerate() {
        if let Err(e) = E::deserialize(item) {
            let id = match item.get(id_field) {
                Some(serde_json::Value::String(s)) => format!(" ({id_field} {s})"),
                Some(v) => format!(" ({id_field} {v})"),
                None => String::new(),
            };
            return ModelError::format(path, format!("entry {i}{id}: {e}"));
        }
    }
    ModelError::format(path, format!("unexpected JSON: {typed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_round_trip() {
        for d in Dataset::ALL {
            assert_eq!(d.name().parse::<Dataset>().unwrap(), d);
            assert_eq!(d.to_string(), d.name());
        }
        let err = "vqa".parse::<Dataset>().unwrap_err().to_string();
        assert!(err.contains("\"vqa\"") && err.contains("easy-vqa"), "{err}");
    }

    #[test]
    fn image_check_errors_or_counts() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.json");
        let present = dir.path().join("a.png");
        std::fs::write(&present, b"x").unwrap();
        let absent = dir.path().join("b.png");

        let mut strict = ImageCheck::new(MissingImages::Error);
        assert!(strict.exists(&data, "id 1", &present).unwrap());
        let err = strict
            .exists(&data, "id 2", &absent)
            .unwrap_err()
            .to_string();
        for part in ["data.json", "id 2", "b.png"] {
            assert!(err.contains(part), "{err}");
        }

        let mut lenient = ImageCheck::new(MissingImages::Skip);
        assert!(!lenient.exists(&data, "id 2", &absent).unwrap());
        assert!(!lenient.exists(&data, "id 3", &absent).unwrap());
        assert_eq!(lenient.finish(vec![1]).skipped_missing, 2);
    }

    #[derive(Deserialize)]
    struct Doc {
        #[allow(dead_code)]
        items: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        #[allow(dead_code)]
        id: u64,
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn json_errors_name_the_file_and_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        std::fs::write(&path, r#"{"items": [{"id": 1, "name": "a"}, {"id": 7}]}"#).unwrap();
        let err = read_json::<Doc, Item>(&path, Some("items"), "id")
            .err()
            .unwrap()
            .to_string();
        for part in ["doc.json", "entry 1", "id 7", "name"] {
            assert!(err.contains(part), "{err}");
        }
        std::fs::write(&path, r#"{"items": [{"id": 1, "#).unwrap();
        let err = read_json::<Doc, Item>(&path, Some("items"), "id")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("doc.json") && err.contains("malformed JSON"),
            "{err}"
        );
        std::fs::write(&path, r#"{"things": []}"#).unwrap();
        let err = read_json::<Doc, Item>(&path, Some("items"), "id")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("\"items\" is not a JSON list"), "{err}");
    }
}
