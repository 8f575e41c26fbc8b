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

/// The shapes and colours easy-VQA draws.
pub const SHAPES: [&str; 3] = ["circle", "rectangle", "triangle"];
pub const COLORS: [&str; 8] = [
    "red", "green", "blue", "black", "gray", "teal", "brown", "yellow",
];

/// What an image shows, as its questions reveal it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLabel {
    pub image_id: u64,
    pub image: PathBuf,
    pub shape: String,
    pub color: String,
}

impl ImageLabel {
    /// `a red circle`.
    pub fn caption(&self) -> String {
        format!("a {} {}", self.color, self.shape)
    }
}

/// Each image's shape and colour, read off its questions: a `what` question's answer and the
/// shape or colour it names (`what is the blue shape?` → `rectangle`, and blue); a yes/no
/// question answered so that the named shape or colour is there (`yes` without negation, `no`
/// with `not` or `no`). Images whose questions reveal only one of the two are left out;
/// questions that would contradict an earlier reading are an error. In image id order.
pub fn image_labels(samples: &[EasyVqaSample]) -> Result<Vec<ImageLabel>> {
    use std::collections::BTreeMap;
    type Partial = (PathBuf, Option<String>, Option<String>);
    let mut by_id: BTreeMap<u64, Partial> = BTreeMap::new();
    for s in samples {
        let entry = by_id
            .entry(s.image_id)
            .or_insert_with(|| (s.image.clone(), None, None));
        let words: Vec<&str> = s
            .question
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
            .collect();
        let named = |set: &[&str]| {
            words
                .iter()
                .find(|w| set.contains(w))
                .map(|w| w.to_string())
        };
        let mut found = Vec::new();
        if words.first() == Some(&"what") {
            if SHAPES.contains(&s.answer.as_str()) {
                found.push((true, s.answer.clone()));
            } else if COLORS.contains(&s.answer.as_str()) {
                found.push((false, s.answer.clone()));
            }
            found.extend(named(&SHAPES).map(|w| (true, w)));
            found.extend(named(&COLORS).map(|w| (false, w)));
        } else {
            let negated = words.contains(&"not") || words.contains(&"no");
            if (s.answer == "yes") != negated {
                found.extend(named(&SHAPES).map(|w| (true, w)));
                found.extend(named(&COLORS).map(|w| (false, w)));
            }
        }
        for (is_shape, value) in found {
            let slot = if is_shape { &mut entry.1 } else { &mut entry.2 };
            match slot {
                Some(old) if *old != value => {
                    return Err(ModelError::Other(format!(
                        "easy-VQA image {}: its questions say both {old} and {value}",
                        s.image_id
                    )))
                }
                _ => *slot = Some(value),
            }
        }
    }
    Ok(by_id
        .into_iter()
        .filter_map(|(image_id, (image, shape, color))| {
            Some(ImageLabel {
                image_id,
                image,
                shape: shape?,
                color: color?,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_what_and_yes_no_questions() {
        let q = |question: &str, answer: &str, id: u64| EasyVqaSample {
            image_id: id,
            image: PathBuf::from(format!("{id}.png")),
            question: question.into(),
            answer: answer.into(),
        };
        let samples = [
            q("what is the blue shape?", "rectangle", 0),
            q("is there a triangle?", "no", 0),
            q("is no red shape present?", "no", 1),
            q("does the image contain a circle?", "yes", 1),
            q("what color is the shape?", "teal", 2),
        ];
        let labels = image_labels(&samples).unwrap();
        assert_eq!(labels.len(), 2, "image 2 has no shape: left out");
        assert_eq!(labels[0].caption(), "a blue rectangle");
        assert_eq!(labels[1].caption(), "a red circle");
        let clash = [
            q("what color is the shape?", "red", 0),
            q("is there a blue shape?", "yes", 0),
        ];
        let err = image_labels(&clash).unwrap_err().to_string();
        assert!(
            err.contains("image 0") && err.contains("red") && err.contains("blue"),
            "{err}"
        );
    }
}
