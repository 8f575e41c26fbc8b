//! VQAv2 and OK-VQA in the official layout: a questions file and an annotations file joined by
//! `question_id`, with COCO 2014 images.
//!
//! Under one root folder (the layout of MimIC's `testbed/data/vqav2/vqav2.py` and
//! `testbed/data/ok_vqa/ok_vqa.py`, with its `images_dir` equal to its `data_dir`):
//!
//! | | VQAv2 | OK-VQA |
//! |---|---|---|
//! | questions | `v2_OpenEnded_mscoco_{split}2014_questions.json` | `OpenEnded_mscoco_{split}2014_questions.json` |
//! | annotations | `v2_mscoco_{split}2014_annotations.json` | `mscoco_{split}2014_annotations.json` |
//! | images | `{split}2014/COCO_{split}2014_{image_id:012}.jpg` | the same |
//!
//! The questions file is `{"questions": [{question_id, image_id, question}]}`; the annotations
//! file is `{"annotations": [{question_id, image_id, question_type, answer_type,
//! multiple_choice_answer, answers: [{answer, …}]}]}`. OK-VQA's annotations have ten answers
//! too (five annotators' answers, each twice, with a `raw_answer` beside each) and no
//! `multiple_choice_answer`; its `question_type` is a knowledge category (`"one"` … `"ten"`,
//! `"other"`).
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use super::{read_json, Dataset, ImageCheck, MissingImages, Read};
use crate::{ModelError, Result};

/// A split with annotations (the test splits have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VqaSplit {
    Train,
    /// MimIC's query set ("validation").
    Val,
}

impl VqaSplit {
    /// `train` or `val`.
    pub fn name(self) -> &'static str {
        match self {
            VqaSplit::Train => "train",
            VqaSplit::Val => "val",
        }
    }
}

impl fmt::Display for VqaSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VqaSplit {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(VqaSplit::Train),
            "val" | "validation" => Ok(VqaSplit::Val),
            _ => Err(ModelError::Other(format!(
                "unknown VQA split {s:?} (train or val)"
            ))),
        }
    }
}

/// One question with its annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaSample {
    pub question_id: u64,
    pub image_id: u64,
    pub image: PathBuf,
    pub question: String,
    /// The annotators' answers in file order (ten in both official releases), unnormalised.
    pub answers: Vec<String>,
    /// VQAv2's most frequent answer; OK-VQA's annotations have none.
    pub multiple_choice_answer: Option<String>,
    pub question_type: String,
    /// `yes/no`, `number` or `other` (always `other` in OK-VQA).
    pub answer_type: String,
}

/// Where one split's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VqaFiles {
    pub questions: PathBuf,
    pub annotations: PathBuf,
    /// The folder of `COCO_{split}2014_{image_id:012}.jpg`.
    pub images: PathBuf,
    pub split: VqaSplit,
}

impl VqaFiles {
    /// The official file names of `dataset` (VQAv2 or OK-VQA) under `root`.
    pub fn official(dataset: Dataset, root: &Path, split: VqaSplit) -> Result<Self> {
        let s = split.name();
        let (questions, annotations) = match dataset {
            Dataset::VqaV2 => (
                format!("v2_OpenEnded_mscoco_{s}2014_questions.json"),
                format!("v2_mscoco_{s}2014_annotations.json"),
            ),
            Dataset::OkVqa => (
                format!("OpenEnded_mscoco_{s}2014_questions.json"),
                format!("mscoco_{s}2014_annotations.json"),
            ),
            other => {
                return Err(ModelError::Other(format!(
                    "{other} is not a VQA data set (vqav2 or okvqa)"
                )))
            }
        };
        Ok(VqaFiles {
            questions: root.join(questions),
            annotations: root.join(annotations),
            images: root.join(format!("{s}2014")),
            split,
        })
    }

    /// The image of `image_id`.
    pub fn image(&self, image_id: u64) -> PathBuf {
        let s = self.split.name();
        self.images.join(format!("COCO_{s}2014_{image_id:012}.jpg"))
    }
}

/// Reads one split of VQAv2 or OK-VQA from `root` in the official layout.
pub fn read_vqa(
    dataset: Dataset,
    root: &Path,
    split: VqaSplit,
    missing: MissingImages,
) -> Result<Read<VqaSample>> {
    read_vqa_files(&VqaFiles::official(dataset, root, split)?, missing)
}

/// Reads the questions of `files` in file order, each joined to its annotation by
/// `question_id`. A question without an annotation, a question or annotation id that occurs
/// twice, and annotation and question disagreeing on `image_id` are errors naming the file and
/// the id; annotations without a question are ignored.
pub fn read_vqa_files(files: &VqaFiles, missing: MissingImages) -> Result<Read<VqaSample>> {
    let questions: QuestionsFile =
        read_json::<_, Question>(&files.questions, Some("questions"), "question_id")?;
    let annotations: AnnotationsFile =
        read_json::<_, Annotation>(&files.annotations, Some("annotations"), "question_id")?;

    let mut by_id: HashMap<u64, Annotation> = HashMap::with_capacity(annotations.annotations.len());
    for a in annotations.annotations {
        let id = a.question_id;
        if by_id.insert(id, a).is_some() {
            return Err(ModelError::format(
                &files.annotations,
                format!("question_id {id} is annotated twice"),
            ));
        }
    }

    let mut seen = std::collections::HashSet::with_capacity(questions.questions.len());
    let mut check = ImageCheck::new(missing);
    let mut samples = Vec::with_capacity(questions.questions.len());
    for q in questions.questions {
        let id = q.question_id;
        if !seen.insert(id) {
            return Err(ModelError::format(
                &files.questions,
                format!("question_id {id} occurs twice"),
            ));
        }
        let Some(a) = by_id.remove(&id) else {
            return Err(ModelError::format(
                &files.questions,
                format!(
                    "question_id {id} has no annotation in {}",
                    files.annotations.display()
                ),
            ));
        };
        if a.image_id != q.image_id {
            return Err(ModelError::format(
                &files.annotations,
                format!(
                    "question_id {id}: image_id {} here but {} in {}",
                    a.image_id,
                    q.image_id,
                    files.questions.display()
                ),
            ));
        }
        let image = files.image(q.image_id);
        if !check.exists(&files.questions, &format!("question_id {id}"), &image)? {
            continue;
        }
        samples.push(VqaSample {
            question_id: id,
            image_id: q.image_id,
            image,
            question: q.question,
            answers: a.answers.into_iter().map(|x| x.answer).collect(),
            multiple_choice_answer: a.multiple_choice_answer,
            question_type: a.question_type,
            answer_type: a.answer_type,
        });
    }
    Ok(check.finish(samples))
}

#[derive(Deserialize)]
struct QuestionsFile {
    questions: Vec<Question>,
}

#[derive(Deserialize)]
struct Question {
    question_id: u64,
    image_id: u64,
    question: String,
}

#[derive(Deserialize)]
struct AnnotationsFile {
    annotations: Vec<Annotation>,
}

#[derive(Deserialize)]
struct Annotation {
    question_id: u64,
    image_id: u64,
    question_type: String,
    answer_type: String,
    #[serde(default)]
    multiple_choice_answer: Option<String>,
    answers: Vec<Answer>,
}

#[derive(Deserialize)]
struct Answer {
    answer: String,
}
