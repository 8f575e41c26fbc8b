//! SEED-Bench v1, its image questions: `SEED-Bench.json` and `SEED-Bench-image/<data_id>`
//! under one root folder (the layout of MimIC's `testbed/data/seed_bench/seed_bench.py`).
//!
//! The file is `{"questions": [{answer: "A"…"D", choice_a … choice_d, data_id, data_type:
//! "image" | "video", question, question_id, question_type_id, segment?}], "question_type":
//! {name: id}}` (AILab-CVC/SEED-Bench `DATASET.md`). Image questions are the evaluation
//! dimensions 1–9 ([`IMAGE_DIMENSIONS`]); the official `eval.py` joins `data_id` to the image
//! folder as it is. Video questions (`data_type == "video"`, dimensions 10–12) are left out
//! and not counted as skipped.
//!
//! MimIC keeps every row whose image exists and drops the rest silently: that is
//! [`MissingImages::Skip`].
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{read_json, ImageCheck, JsonId, MissingImages, Read};
use crate::{ModelError, Result};

/// The image dimensions, as `question_type` names them in `SEED-Bench.json`'s documentation.
pub const IMAGE_DIMENSIONS: [(u32, &str); 9] = [
    (1, "Scene Understanding"),
    (2, "Instance Identity"),
    (3, "Instance Attributes"),
    (4, "Instance Location"),
    (5, "Instances Counting"),
    (6, "Spatial Relation"),
    (7, "Instance Interaction"),
    (8, "Visual Reasoning"),
    (9, "Text Understanding"),
];

/// One four-way multiple-choice question about an image.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedSample {
    pub question_id: String,
    pub image: PathBuf,
    pub question: String,
    /// `choice_a` … `choice_d`.
    pub choices: [String; 4],
    /// `A`, `B`, `C` or `D`.
    pub answer: char,
    /// The evaluation dimension, 1–9 for image questions.
    pub question_type_id: u32,
}

impl SeedSample {
    /// The correct choice's text (`None` only if `answer` is not `A`–`D`).
    pub fn answer_text(&self) -> Option<&str> {
        let i = (self.answer as u32).checked_sub('A' as u32)? as usize;
        self.choices.get(i).map(String::as_str)
    }
}

/// Reads the image questions of `root/SEED-Bench.json` in file order. An answer other than
/// `A`–`D` or a `data_type` other than `image` and `video` is an error naming the file and the
/// question.
pub fn read_seed(root: &Path, missing: MissingImages) -> Result<Read<SeedSample>> {
    let path = root.join("SEED-Bench.json");
    let images = root.join("SEED-Bench-image");
    let file: SeedFile = read_json::<_, Question>(&path, Some("questions"), "question_id")?;
    let mut check = ImageCheck::new(missing);
    let mut samples = Vec::new();
    for q in file.questions {
        let entry = format!("question_id {}", q.question_id);
        match q.data_type.as_str() {
            "image" => {}
            "video" => continue,
            other => {
                return Err(ModelError::format(
                    &path,
                    format!("{entry}: data_type {other:?} is neither image nor video"),
                ))
            }
        }
        let answer = match q.answer.as_str() {
            "A" | "B" | "C" | "D" => q.answer.as_bytes()[0] as char,
            other => {
                return Err(ModelError::format(
                    &path,
                    format!("{entry}: answer {other:?} is not one of A, B, C, D"),
                ))
            }
        };
        let question_type_id = match &q.question_type_id {
            JsonId::Number(n) => u32::try_from(*n).ok(),
            JsonId::Text(s) => s.parse().ok(),
        }
        .ok_or_else(|| {
            ModelError::format(
                &path,
                format!(
                    "{entry}: question_type_id {} is not a number",
                    q.question_type_id
                ),
            )
        })?;
        let image = images.join(&q.data_id);
        if !check.exists(&path, &entry, &image)? {
            continue;
        }
        samples.push(SeedSample {
            question_id: q.question_id.to_string(),
            image,
            question: q.question,
            choices: [q.choice_a, q.choice_b, q.choice_c, q.choice_d],
            answer,
            question_type_id,
        });
    }
    Ok(check.finish(samples))
}

#[derive(Deserialize)]
struct SeedFile {
    questions: Vec<Question>,
}

#[derive(Deserialize)]
struct Question {
    answer: String,
    choice_a: String,
    choice_b: String,
    choice_c: String,
    choice_d: String,
    data_id: String,
    data_type: String,
    question: String,
    question_id: JsonId,
    question_type_id: JsonId,
}
