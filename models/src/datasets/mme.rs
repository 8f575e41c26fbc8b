//! MME from its release folder (`MME_Benchmark_release_version/`), one folder per category.
//!
//! A category folder holds either `images/` and `questions_answers_YN/*.txt` (artwork,
//! celebrity, landmark, posters, scene), or each image beside its `.txt` (the others). The
//! rule is that of the evaluation scripts' `get_gt` (LLaVA and its descendants): `images/`
//! present means the first layout. Each `.txt` is named after its image's stem and holds two
//! lines `question<TAB>Yes|No`.
//!
//! Samples come per category in name order, per file in name order, per line in file order.
//! MimIC itself reads the lmms-lab/MME parquet copy instead (`src/dataset_utils/mme.py`).
use std::fs;
use std::path::{Path, PathBuf};

use super::{ImageCheck, MissingImages, Read};
use crate::{ModelError, Result};

/// The ten perception categories, by folder name.
pub const PERCEPTION: [&str; 10] = [
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
];

/// The four cognition categories, by folder name.
pub const COGNITION: [&str; 4] = [
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
];

/// Image file extensions tried, in order, for a question file's stem.
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "png", "jpeg", "JPG"];

/// One yes/no question.
#[derive(Debug, Clone, PartialEq)]
pub struct MmeSample {
    /// The category folder's name, e.g. `artwork` or `OCR`.
    pub category: String,
    pub image: PathBuf,
    pub question: String,
    /// The ground truth: `Yes` (true) or `No` (false).
    pub answer_yes: bool,
}

/// Reads every category folder under `root` (the folder holding `existence/`, `OCR/`, …; a
/// copy nested one level deeper as `root/MME_Benchmark/` is found too).
///
/// Blank lines are ignored. A line without a tab, or an answer other than `Yes` or `No`
/// (compared without case, as the official `calculation.py` lowercases), is an error naming
/// the file and the line.
pub fn read_mme(root: &Path, missing: MissingImages) -> Result<Read<MmeSample>> {
    let nested = root.join("MME_Benchmark");
    let root = if nested.is_dir() {
        nested
    } else {
        root.to_path_buf()
    };
    let mut check = ImageCheck::new(missing);
    let mut samples = Vec::new();
    for category_dir in sorted_entries(&root)?.into_iter().filter(|p| p.is_dir()) {
        let Some(category) = category_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
        else {
            continue;
        };
        if category.starts_with('.') {
            continue;
        }
        let (qa_dir, image_dir) = if category_dir.join("images").is_dir() {
            (
                category_dir.join("questions_answers_YN"),
                category_dir.join("images"),
            )
        } else {
            (category_dir.clone(), category_dir.clone())
        };
        if !qa_dir.is_dir() {
            return Err(ModelError::format(
                &category_dir,
                "has images/ but no questions_answers_YN/ folder",
            ));
        }
        let txts = sorted_entries(&qa_dir)?
            .into_iter()
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"));
        for txt in txts {
            read_question_file(&txt, &category, &image_dir, &mut check, &mut samples)?;
        }
    }
    Ok(check.finish(samples))
}

/// The questions of one `.txt` file.
fn read_question_file(
    txt: &Path,
    category: &str,
    image_dir: &Path,
    check: &mut ImageCheck,
    samples: &mut Vec<MmeSample>,
) -> Result<()> {
    let text = fs::read_to_string(txt).map_err(|e| ModelError::io(txt, e))?;
    let stem = txt
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let image = IMAGE_EXTENSIONS
        .iter()
        .map(|ext| image_dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let entry = format!("line {}", i + 1);
        let Some((question, answer)) = line.split_once('\t') else {
            return Err(ModelError::format(
                txt,
                format!("{entry}: expected `question<TAB>Yes|No`, found {line:?}"),
            ));
        };
        let answer_yes = match answer.trim().to_ascii_lowercase().as_str() {
            "yes" => true,
            "no" => false,
            _ => {
                return Err(ModelError::format(
                    txt,
                    format!("{entry}: answer {answer:?} is neither Yes nor No"),
                ))
            }
        };
        let Some(image) = &image else {
            let wanted = image_dir.join(format!("{stem}.{{{}}}", IMAGE_EXTENSIONS.join(",")));
            check.missing(txt, &entry, &wanted.display().to_string())?;
            continue;
        };
        samples.push(MmeSample {
            category: category.to_string(),
            image: image.clone(),
            question: question.to_string(),
            answer_yes,
        });
    }
    Ok(())
}

/// The entries of `dir`, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| ModelError::io(dir, e)))
        .collect::<Result<_>>()?;
    paths.sort();
    Ok(paths)
}
