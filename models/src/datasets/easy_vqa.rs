//! easy-VQA as the PyPI package `easy-vqa` 1.0 installs it: `easy_vqa/data/` in the Python
//! packages, holding
//! - `{train,test}/questions.json`: a JSON list of `[question, answer, image_id]` triples
//!   (lowercase text, integer id), e.g. `["what is the blue shape?", "rectangle", 0]`;
//! - `{train,test}/images/{image_id}.png` (64x64);
//! - `answers.txt`: the 13 possible answers, one a line.
//!
//! The package's `easy_vqa/easy_vqa.py` reads exactly these (`get_train_questions`,
//! `get_train_image_paths`, `get_answers`, …). Version 1.0 has 38,575 train questions on 4,000
//! images and 9,673 test questions on 1,000 images.
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{read_json, ImageCheck, MissingImages, Read};
use crate::default_model::site_packages_dirs;
use crate::{ModelError, Result};

/// The package's two splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EasyVqaSplit {
    Train,
    Test,
}

impl EasyVqaSplit {
    /// `train` or `test`, the folder name.
    pub fn name(self) -> &'static str {
        match self {
            EasyVqaSplit::Train => "train",
            EasyVqaSplit::Test => "test",
        }
    }
}

impl fmt::Display for EasyVqaSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EasyVqaSplit {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(EasyVqaSplit::Train),
            "test" => Ok(EasyVqaSplit::Test),
            _ => Err(ModelError::Other(format!(
                "unknown easy-vqa split {s:?} (train or test)"
            ))),
        }
    }
}

/// One question about a generated shape image.
#[derive(Debug, Clone, PartialEq)]
pub struct EasyVqaSample {
    pub image_id: u64,
    pub image: PathBuf,
    pub question: String,
    /// One of `answers.txt`.
    pub answer: String,
}

/// The installed package's `easy_vqa/data` folder, searched in [`site_packages_dirs`].
pub fn package_root() -> Result<PathBuf> {
    package_root_in(&site_packages_dirs())
}

/// The first `easy_vqa/data` folder among `site_packages`.
pub fn package_root_in(site_packages: &[PathBuf]) -> Result<PathBuf> {
    site_packages
        .iter()
        .map(|sp| sp.join("easy_vqa").join("data"))
        .find(|p| p.join("answers.txt").is_file())
        .ok_or_else(|| {
            ModelError::Other(format!(
                "easy-vqa data not found: install it with `make setup` (PyPI package \
                 easy-vqa==1.0 into .venv), or set MIMIC_SITE_PACKAGES; searched {site_packages:?}"
            ))
        })
}

/// The possible answers, from `data_root/answers.txt` in file order (blank lines dropped).
pub fn read_answers(data_root: &Path) -> Result<Vec<String>> {
    let path = data_root.join("answers.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Reads one split from `data_root` (an `easy_vqa/data` folder: [`package_root`]) in file
/// order. An answer missing from `answers.txt` is an error naming the file and the question.
pub fn read_easy_vqa(
    data_root: &Path,
    split: EasyVqaSplit,
    missing: MissingImages,
) -> Result<Read<EasyVqaSample>> {
    let answers = read_answers(data_root)?;
    let dir = data_root.join(split.name());
    let path = dir.join("questions.json");
    let triples: Vec<(String, String, u64)> =
        read_json::<_, (String, String, u64)>(&path, None, "")?;
    let mut check = ImageCheck::new(missing);
    let mut samples = Vec::with_capacity(triples.len());
    for (i, (question, answer, image_id)) in triples.into_iter().enumerate() {
        let entry = format!("entry {i} (image {image_id})");
        if !answers.contains(&answer) {
            return Err(ModelError::format(
                &path,
                format!(
                    "{entry}: answer {answer:?} is not in {}",
                    data_root.join("answers.txt").display()
                ),
            ));
        }
        let image = dir.join("images").join(format!("{image_id}.png"));
        if !check.exists(&path, &entry, &image)? {
            continue;
        }
        samples.push(EasyVqaSample {
            image_id,
            image,
            question,
            answer,
        });
    }
    Ok(check.finish(samples))
}
