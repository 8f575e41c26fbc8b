//! MME: 14 yes/no subtasks, two questions per image, scored as the official
//! `eval_tool/calculation.py` scores them; MimIC's plain accuracy as a variant.
//!
//! # Parsing a prediction ([`parse_prediction`])
//!
//! The official tool lower-cases the prediction, then:
//! 1. `"yes"` or `"no"` exactly: kept;
//! 2. else the first 4 characters (code points, of the lower-cased text) are searched for
//!    `"yes"`, then for `"no"`;
//! 3. else `other`, which matches no ground truth.
//!
//! So `"Yes, there is"` is yes, `"Not really"` is no, `"There is no dog"` is other and
//! `"I don't know"` is other.
//!
//! # Scoring ([`mme_report`])
//!
//! Per subtask with `n` images, i.e. `2n` questions in consecutive pairs:
//!
//! ```text
//! acc   = #{questions right} / 2n
//! acc+  = #{images with both questions right} / n
//! score = acc * 100 + acc+ * 100          (max 200; summed in this order, not 100 * (acc + acc+))
//! perception = sum of the 10 perception subtask scores, in the official order (max 2000)
//! cognition  = sum of the 4 cognition subtask scores, in the official order (max 800)
//! ```
//!
//! Nothing is rounded: the tool prints Python's `repr` of each float
//! ([`MmeReport::official_text`] reproduces that printout). The float order matters: the
//! published `commonsense_reasoning  score: 138.57142857142858` is `acc*100 + acc+*100` for
//! 104 of 140 right and 45 of 70 images, and no split gives it as `100 * (acc + acc+)`.
//!
//! # Result files ([`read_results_dir`], [`write_results_dir`])
//!
//! The tool reads `<results_dir>/<subtask>.txt` for every subtask, one line per question,
//! `image \t question \t gt \t prediction`, the two questions of an image on consecutive
//! lines. The gt column is `Yes`/`No` (any case). Lines are read as Python's text mode does
//! (`\r\n` and `\r` end a line too).
//!
//! # MimIC's variant ([`MmeVariant::Mimic`], [`mme_accuracy`])
//!
//! MimIC (`src/dataset_utils/mme.py`) reads the HF parquet copy, cuts the generation at the
//! first `"\n"` and strips it (`testbed/data/__init__.py` `postprocess_generation`), maps
//! `text.lower() == "yes"` to 1, `== "no"` to 0 and anything else to -1, compares with
//! `gt.lower() == "yes"` and reports plain accuracy (HF `evaluate` "accuracy", a fraction in
//! 0..=1) over its query questions: no acc+, no per-subtask score. `"Yes."` is wrong there.
//!
//! # Sources and what was checked
//!
//! - Official rules: `eval_tool/calculation.py` as copied in GitHub `zjunlp/Deco` (a3ccc15),
//!   identical to a second copy found in the code index. The official tool itself ships as a
//!   zip from the MME authors and was not read directly. That copy was run (Python 3.11,
//!   scikit-learn 1.9.1) on `metrics/tests/fixtures/mme/`: its printout is the expected text
//!   of `tests/mme_official.rs`, and it prints the same for the files [`write_results_dir`]
//!   writes from that set.
//! - Subtask names and order: `eval_type_dict` in that file.
//! - Published printout (InternLM-XComposer `eval_mm/mme/MME_Bench.md`): every subtask score
//!   there is reproduced bit for bit by the formula above with the subtask sizes 30, 30, 30,
//!   30, 147, 170, 200, 200, 200, 20 (perception) and 70, 20, 20, 20 (cognition) images. Those
//!   sizes are from memory and the score fit, not from the dataset files.
//! - MimIC: `src/dataset_utils/mme.py` and `testbed/data/__init__.py` at Kamichanw/MimIC
//!   9eda50b.
//! - Differences: the official tool also computes precision, recall and a confusion matrix
//!   over the non-`other` answers without printing them; with scikit-learn 1.9.1 that raises
//!   `ValueError` when every answer of a subtask is `other`, where this port scores the
//!   subtask (0 if no answer is right). It pairs lines without reading the image column;
//!   this port refuses a pair naming two images. It needs all 14 files; this port scores the
//!   subtasks present and lists the rest in [`MmeReport::missing`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{py_strip, MetricsError};

/// An MME subtask; declaration order is the official order, serde names the official folder
/// names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MmeSubtask {
    Existence,
    Count,
    Position,
    Color,
    Posters,
    Celebrity,
    Scene,
    Landmark,
    Artwork,
    #[serde(rename = "OCR")]
    Ocr,
    CommonsenseReasoning,
    NumericalCalculation,
    TextTranslation,
    CodeReasoning,
}

/// The two halves of MME.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmeGroup {
    Perception,
    Cognition,
}

impl MmeGroup {
    /// The name the official tool prints.
    pub fn name(self) -> &'static str {
        match self {
            MmeGroup::Perception => "Perception",
            MmeGroup::Cognition => "Cognition",
        }
    }

    /// Its subtasks, in the official order.
    pub fn subtasks(self) -> &'static [MmeSubtask] {
        match self {
            MmeGroup::Perception => &MmeSubtask::PERCEPTION,
            MmeGroup::Cognition => &MmeSubtask::COGNITION,
        }
    }
}

impl MmeSubtask {
    /// The 10 perception subtasks, in the official order.
    pub const PERCEPTION: [MmeSubtask; 10] = [
        MmeSubtask::Existence,
        MmeSubtask::Count,
        MmeSubtask::Position,
        MmeSubtask::Color,
        MmeSubtask::Posters,
        MmeSubtask::Celebrity,
        MmeSubtask::Scene,
        MmeSubtask::Landmark,
        MmeSubtask::Artwork,
        MmeSubtask::Ocr,
    ];

    /// The 4 cognition subtasks, in the official order.
    pub const COGNITION: [MmeSubtask; 4] = [
        MmeSubtask::CommonsenseReasoning,
        MmeSubtask::NumericalCalculation,
        MmeSubtask::TextTranslation,
        MmeSubtask::CodeReasoning,
    ];

    /// All 14, perception then cognition.
    pub const ALL: [MmeSubtask; 14] = [
        MmeSubtask::Existence,
        MmeSubtask::Count,
        MmeSubtask::Position,
        MmeSubtask::Color,
        MmeSubtask::Posters,
        MmeSubtask::Celebrity,
        MmeSubtask::Scene,
        MmeSubtask::Landmark,
        MmeSubtask::Artwork,
        MmeSubtask::Ocr,
        MmeSubtask::CommonsenseReasoning,
        MmeSubtask::NumericalCalculation,
        MmeSubtask::TextTranslation,
        MmeSubtask::CodeReasoning,
    ];

    /// The official folder and result-file name (`OCR` is upper case, the rest snake case).
    pub fn name(self) -> &'static str {
        match self {
            MmeSubtask::Existence => "existence",
            MmeSubtask::Count => "count",
            MmeSubtask::Position => "position",
            MmeSubtask::Color => "color",
            MmeSubtask::Posters => "posters",
            MmeSubtask::Celebrity => "celebrity",
            MmeSubtask::Scene => "scene",
            MmeSubtask::Landmark => "landmark",
            MmeSubtask::Artwork => "artwork",
            MmeSubtask::Ocr => "OCR",
            MmeSubtask::CommonsenseReasoning => "commonsense_reasoning",
            MmeSubtask::NumericalCalculation => "numerical_calculation",
            MmeSubtask::TextTranslation => "text_translation",
            MmeSubtask::CodeReasoning => "code_reasoning",
        }
    }

    /// The subtask of an official folder name, matched exactly (`"OCR"`, not `"ocr"`, as the
    /// official tool opens `OCR.txt`).
    pub fn from_name(name: &str) -> Result<Self, MetricsError> {
        MmeSubtask::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| MetricsError::UnknownName {
                kind: "MME subtask",
                name: name.to_string(),
            })
    }

    /// Perception or cognition.
    pub fn group(self) -> MmeGroup {
        if MmeSubtask::PERCEPTION.contains(&self) {
            MmeGroup::Perception
        } else {
            MmeGroup::Cognition
        }
    }
}

impl fmt::Display for MmeSubtask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MmeSubtask {
    type Err = MetricsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MmeSubtask::from_name(s)
    }
}

/// A ground-truth answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum YesNo {
    Yes,
    No,
}

impl YesNo {
    /// `Yes` / `No`, as the MME question files write them.
    pub fn as_str(self) -> &'static str {
        match self {
            YesNo::Yes => "Yes",
            YesNo::No => "No",
        }
    }

    /// A gt column as the official tool accepts it: `yes` or `no` after lower-casing.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_lowercase().as_str() {
            "yes" => Some(YesNo::Yes),
            "no" => Some(YesNo::No),
            _ => None,
        }
    }
}

/// A parsed prediction; `Other` never matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MmeAnswer {
    Yes,
    No,
    Other,
}

impl MmeAnswer {
    /// Whether this answers `gt`.
    pub fn matches(self, gt: YesNo) -> bool {
        matches!(
            (self, gt),
            (MmeAnswer::Yes, YesNo::Yes) | (MmeAnswer::No, YesNo::No)
        )
    }
}

/// The official `parse_pred_ans` after `pred.lower()`: exact `yes`/`no`, else `yes` then
/// `no` searched in the first 4 characters, else other.
pub fn parse_prediction(prediction: &str) -> MmeAnswer {
    let lower = prediction.to_lowercase();
    match lower.as_str() {
        "yes" => return MmeAnswer::Yes,
        "no" => return MmeAnswer::No,
        _ => {}
    }
    // Python's `s[:4]` counts code points.
    let prefix: String = lower.chars().take(4).collect();
    if prefix.contains("yes") {
        MmeAnswer::Yes
    } else if prefix.contains("no") {
        MmeAnswer::No
    } else {
        MmeAnswer::Other
    }
}

/// MimIC's rule: cut the generation at the first `"\n"`, strip (Python `str.strip()`), then
/// `lower() == "yes"` is yes (1), `== "no"` is no (0), anything else other (-1).
pub fn parse_prediction_mimic(generation: &str) -> MmeAnswer {
    let first = generation.split('\n').next().unwrap_or("");
    match py_strip(first).to_lowercase().as_str() {
        "yes" => MmeAnswer::Yes,
        "no" => MmeAnswer::No,
        _ => MmeAnswer::Other,
    }
}

/// Which parsing rule turns a prediction into an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmeVariant {
    /// `calculation.py`'s [`parse_prediction`].
    #[default]
    Official,
    /// MimIC's [`parse_prediction_mimic`].
    Mimic,
}

impl MmeVariant {
    /// The answer this rule reads from a prediction.
    pub fn parse(self, prediction: &str) -> MmeAnswer {
        match self {
            MmeVariant::Official => parse_prediction(prediction),
            MmeVariant::Mimic => parse_prediction_mimic(prediction),
        }
    }
}

/// One question's result: a line of an official result file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmeRecord {
    /// The image's name (the official tool does not read it; pairs are consecutive lines).
    pub image: String,
    pub question: String,
    pub gt: YesNo,
    /// The model's answer as generated.
    pub prediction: String,
}

impl MmeRecord {
    /// Whether the prediction, parsed by `variant`, answers the ground truth.
    pub fn is_correct(&self, variant: MmeVariant) -> bool {
        variant.parse(&self.prediction).matches(self.gt)
    }
}

/// Result records per subtask.
pub type MmeResults = BTreeMap<MmeSubtask, Vec<MmeRecord>>;

/// One subtask's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmeSubtaskScore {
    pub subtask: MmeSubtask,
    pub images: usize,
    pub questions: usize,
    /// Questions answered right.
    pub correct: usize,
    /// Images with both questions right.
    pub images_both_correct: usize,
    /// Predictions parsed as other.
    pub other: usize,
    /// `correct / questions`, in 0..=1.
    pub acc: f64,
    /// `images_both_correct / images`, in 0..=1.
    pub acc_plus: f64,
    /// `acc * 100 + acc_plus * 100`, in 0..=200.
    pub score: f64,
}

/// MME scores as the official tool computes them (with the chosen parsing rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmeReport {
    pub variant: MmeVariant,
    /// The subtasks present, in the official order.
    pub subtasks: Vec<MmeSubtaskScore>,
    /// Sum of the perception subtask scores present (max 2000 with all ten).
    pub perception: f64,
    /// Sum of the cognition subtask scores present (max 800 with all four).
    pub cognition: f64,
    /// `perception + cognition` (max 2800; not printed by the official tool).
    pub total: f64,
    /// Subtasks without results; the official tool refuses to run without all 14 files.
    pub missing: Vec<MmeSubtask>,
    /// Fraction of all questions right, in 0..=1: MimIC's reported figure under
    /// [`MmeVariant::Mimic`].
    pub accuracy: f64,
}

impl MmeReport {
    /// The score of one subtask, if present.
    pub fn subtask(&self, subtask: MmeSubtask) -> Option<&MmeSubtaskScore> {
        self.subtasks.iter().find(|s| s.subtask == subtask)
    }

    /// What `calculation.py` prints after its argument line: per group a header, the total
    /// and the subtask scores, floats as Python's `repr` (Rust's `{:?}` gives the same digits
    /// for every value in 1e-4..1e16, which covers every nonzero MME score).
    pub fn official_text(&self) -> String {
        let mut out = String::new();
        for (group, total) in [
            (MmeGroup::Perception, self.perception),
            (MmeGroup::Cognition, self.cognition),
        ] {
            out.push_str(&format!("=========== {} ===========\n", group.name()));
            out.push_str(&format!("total score: {total:?} \n\n"));
            for s in self.subtasks.iter().filter(|s| s.subtask.group() == group) {
                out.push_str(&format!("\t {}  score: {:?}\n", s.subtask.name(), s.score));
            }
            out.push_str("\n\n");
        }
        out
    }
}

/// The first record index (0-based) that breaks the pairing: an odd count (the last record)
/// or a pair whose second record names another image.
fn unpaired(records: &[MmeRecord]) -> Option<(usize, String)> {
    for (p, pair) in records.chunks(2).enumerate() {
        match pair {
            [a, b] if a.image != b.image => {
                return Some((
                    2 * p + 1,
                    format!(
                        "second question of a pair names image {:?}, the first {:?}",
                        b.image, a.image
                    ),
                ))
            }
            [_] => {
                return Some((
                    2 * p,
                    "odd number of questions: the last one has no pair".to_string(),
                ))
            }
            _ => {}
        }
    }
    None
}

/// One subtask's acc, acc+ and score. The records are consecutive pairs per image (the
/// official tool pairs lines 1-2, 3-4, ... without looking at the image; this port checks
/// that both of a pair name the same image).
pub fn mme_subtask_score(
    subtask: MmeSubtask,
    records: &[MmeRecord],
    variant: MmeVariant,
) -> Result<MmeSubtaskScore, MetricsError> {
    if records.is_empty() {
        return Err(MetricsError::Empty("MME subtask"));
    }
    if let Some((i, why)) = unpaired(records) {
        return Err(MetricsError::Invalid(format!(
            "MME {subtask}: record {i}: {why}"
        )));
    }
    let mut correct = 0;
    let mut both = 0;
    let mut other = 0;
    for pair in records.chunks(2) {
        let mut right = 0;
        for r in pair {
            let answer = variant.parse(&r.prediction);
            if answer == MmeAnswer::Other {
                other += 1;
            }
            if answer.matches(r.gt) {
                right += 1;
            }
        }
        correct += right;
        if right == 2 {
            both += 1;
        }
    }
    let questions = records.len();
    let images = questions / 2;
    // sklearn's accuracy_score and Python's `/`: correctly rounded quotients.
    let acc = correct as f64 / questions as f64;
    let acc_plus = both as f64 / images as f64;
    Ok(MmeSubtaskScore {
        subtask,
        images,
        questions,
        correct,
        images_both_correct: both,
        other,
        acc,
        acc_plus,
        // `task_score = 0; task_score += acc*100; task_score += acc_plus*100`.
        score: acc * 100.0 + acc_plus * 100.0,
    })
}

/// Scores every subtask present and the two totals (sums in the official order, starting
/// from 0 as the tool does).
pub fn mme_report(results: &MmeResults, variant: MmeVariant) -> Result<MmeReport, MetricsError> {
    if results.values().all(|r| r.is_empty()) {
        return Err(MetricsError::Empty("MME"));
    }
    let mut subtasks = Vec::new();
    let mut missing = Vec::new();
    for subtask in MmeSubtask::ALL {
        match results.get(&subtask) {
            Some(records) => subtasks.push(mme_subtask_score(subtask, records, variant)?),
            None => missing.push(subtask),
        }
    }
    let sum = |group: MmeGroup| {
        subtasks
            .iter()
            .filter(|s| s.subtask.group() == group)
            .fold(0.0, |acc, s| acc + s.score)
    };
    let perception = sum(MmeGroup::Perception);
    let cognition = sum(MmeGroup::Cognition);
    let questions: usize = subtasks.iter().map(|s| s.questions).sum();
    let correct: usize = subtasks.iter().map(|s| s.correct).sum();
    Ok(MmeReport {
        variant,
        subtasks,
        perception,
        cognition,
        total: perception + cognition,
        missing,
        accuracy: correct as f64 / questions as f64,
    })
}

/// Plain accuracy over any set of questions (no pairing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmeAccuracy {
    pub questions: usize,
    pub correct: usize,
    /// Predictions parsed as other (MimIC's -1).
    pub other: usize,
    /// `correct / questions`, in 0..=1.
    pub accuracy: f64,
}

/// MimIC's figure with [`MmeVariant::Mimic`]: the fraction of questions right, over
/// whatever questions are given (MimIC scores the rows after its support split, which may
/// cut an image's pair).
pub fn mme_accuracy<'a>(
    records: impl IntoIterator<Item = &'a MmeRecord>,
    variant: MmeVariant,
) -> Result<MmeAccuracy, MetricsError> {
    let (mut questions, mut correct, mut other) = (0, 0, 0);
    for r in records {
        questions += 1;
        let answer = variant.parse(&r.prediction);
        other += usize::from(answer == MmeAnswer::Other);
        correct += usize::from(answer.matches(r.gt));
    }
    if questions == 0 {
        return Err(MetricsError::Empty("MME accuracy"));
    }
    Ok(MmeAccuracy {
        questions,
        correct,
        other,
        accuracy: correct as f64 / questions as f64,
    })
}

fn format_error(path: &Path, line: usize, message: impl Into<String>) -> MetricsError {
    MetricsError::Format {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Parses one result file's text; `path` only names the file in errors. Lines end at `\n`,
/// `\r\n` or `\r` (Python's text mode); each has exactly four tab-separated fields and a gt
/// of yes/no in any case; the questions must pair up per image (line numbers from 1).
pub fn parse_result_file(text: &str, path: &Path) -> Result<Vec<MmeRecord>, MetricsError> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let body = text.strip_suffix('\n').unwrap_or(&text);
    if body.is_empty() && !text.contains('\n') {
        return Err(format_error(path, 0, "no result lines"));
    }
    let mut records = Vec::new();
    for (i, line) in body.split('\n').enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        let &[image, question, gt, prediction] = fields.as_slice() else {
            return Err(format_error(
                path,
                i + 1,
                format!(
                    "expected 4 tab-separated fields (image, question, gt, prediction), found {}",
                    fields.len()
                ),
            ));
        };
        let gt = YesNo::parse(gt).ok_or_else(|| {
            format_error(path, i + 1, format!("gt must be yes or no, found {gt:?}"))
        })?;
        records.push(MmeRecord {
            image: image.to_string(),
            question: question.to_string(),
            gt,
            prediction: prediction.to_string(),
        });
    }
    if let Some((i, why)) = unpaired(&records) {
        return Err(format_error(path, i + 1, why));
    }
    Ok(records)
}

/// Reads one official result file.
pub fn read_result_file(path: &Path) -> Result<Vec<MmeRecord>, MetricsError> {
    let text = std::fs::read_to_string(path).map_err(|source| MetricsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_result_file(&text, path)
}

/// The result file of `subtask` in `dir`: `<dir>/<name>.txt`.
pub fn result_file_path(dir: &Path, subtask: MmeSubtask) -> PathBuf {
    dir.join(format!("{}.txt", subtask.name()))
}

/// Reads every `<subtask>.txt` present in `dir` (absent ones are left out of the map; the
/// report lists them as missing). An error if none is there.
pub fn read_results_dir(dir: &Path) -> Result<MmeResults, MetricsError> {
    let mut results = MmeResults::new();
    for subtask in MmeSubtask::ALL {
        let path = result_file_path(dir, subtask);
        if path.is_file() {
            results.insert(subtask, read_result_file(&path)?);
        }
    }
    if results.is_empty() {
        return Err(MetricsError::Invalid(format!(
            "{}: no MME result file (<subtask>.txt)",
            dir.display()
        )));
    }
    Ok(results)
}

/// Tabs and line breaks would break a line into other fields or lines; a space keeps the
/// official parse (it looks only for "yes"/"no", which contain neither, and the
/// replacement keeps every character's position).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '\t' | '\n' | '\r') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// One subtask's records in the official line format, `image\tquestion\tYes|No\tprediction`,
/// one a line. Tabs, `\n` and `\r` in a question or prediction become spaces (the official
/// score is unchanged; MimIC's parse, which cuts at the first `\n`, is not, so apply it
/// before writing if that is the score wanted); an image name with one is an error.
pub fn format_result_file(records: &[MmeRecord]) -> Result<String, MetricsError> {
    let mut out = String::new();
    for (i, r) in records.iter().enumerate() {
        if r.image.contains(['\t', '\n', '\r']) {
            return Err(MetricsError::Invalid(format!(
                "record {i}: image name {:?} has a tab or line break",
                r.image
            )));
        }
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            r.image,
            one_line(&r.question),
            r.gt.as_str(),
            one_line(&r.prediction)
        ));
    }
    Ok(out)
}

/// Writes `<dir>/<subtask>.txt` for every subtask in `results` (creating `dir`), so that
/// `python calculation.py --results_dir <dir>` scores them; the tool needs all 14.
pub fn write_results_dir(dir: &Path, results: &MmeResults) -> Result<(), MetricsError> {
    std::fs::create_dir_all(dir).map_err(|source| MetricsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for (&subtask, records) in results {
        let path = result_file_path(dir, subtask);
        let text = format_result_file(records)
            .map_err(|e| MetricsError::Invalid(format!("{}: {e}", path.display())))?;
        std::fs::write(&path, text).map_err(|source| MetricsError::Io { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(image: &str, gt: YesNo, prediction: &str) -> MmeRecord {
        MmeRecord {
            image: image.to_string(),
            question: format!("Is there something in {image}? Please answer yes or no."),
            gt,
            prediction: prediction.to_string(),
        }
    }

    #[test]
    fn parse_exact_yes_no() {
        assert_eq!(parse_prediction("yes"), MmeAnswer::Yes);
        assert_eq!(parse_prediction("No"), MmeAnswer::No);
        assert_eq!(parse_prediction("YES"), MmeAnswer::Yes);
    }

    #[test]
    fn parse_prefix_yes_first() {
        assert_eq!(parse_prediction("Yes, there is a dog."), MmeAnswer::Yes);
        assert_eq!(parse_prediction(" yes"), MmeAnswer::Yes);
        // "yes" is searched before "no" in the 4-character prefix.
        assert_eq!(parse_prediction("noyes"), MmeAnswer::No);
        assert_eq!(parse_prediction("nyes"), MmeAnswer::Yes);
        // Trailing newline (the official tool keeps it on the prediction column).
        assert_eq!(parse_prediction("Yes\n"), MmeAnswer::Yes);
    }

    #[test]
    fn parse_prefix_no() {
        assert_eq!(parse_prediction("No."), MmeAnswer::No);
        assert_eq!(parse_prediction("Not really"), MmeAnswer::No);
        // "no" inside the first four characters counts, whatever the word.
        assert_eq!(parse_prediction("Snow"), MmeAnswer::No);
        assert_eq!(parse_prediction("I know"), MmeAnswer::Other); // "i kn": no "no"
    }

    #[test]
    fn parse_other() {
        assert_eq!(parse_prediction("There is no dog"), MmeAnswer::Other);
        assert_eq!(parse_prediction(""), MmeAnswer::Other);
        assert_eq!(parse_prediction("  yes"), MmeAnswer::Other); // "  ye"
        assert_eq!(parse_prediction("Y"), MmeAnswer::Other);
        // Four code points, counted after lower-casing: U+0130 lower-cases to two.
        assert_eq!(parse_prediction("\u{130}yes"), MmeAnswer::Other);
        assert_eq!(parse_prediction("\u{e9}yes"), MmeAnswer::Yes);
    }

    #[test]
    fn parse_mimic() {
        assert_eq!(parse_prediction_mimic(" Yes \nNo"), MmeAnswer::Yes);
        assert_eq!(parse_prediction_mimic("no"), MmeAnswer::No);
        assert_eq!(parse_prediction_mimic("Yes."), MmeAnswer::Other);
        assert_eq!(parse_prediction_mimic("Yes, it is"), MmeAnswer::Other);
        assert_eq!(parse_prediction_mimic("\nyes"), MmeAnswer::Other);
        // The official rule reads the same texts differently.
        assert_eq!(parse_prediction("Yes."), MmeAnswer::Yes);
    }

    #[test]
    fn names_round_trip() {
        for s in MmeSubtask::ALL {
            assert_eq!(MmeSubtask::from_name(s.name()).unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert_eq!("OCR".parse::<MmeSubtask>().unwrap(), MmeSubtask::Ocr);
        let err = MmeSubtask::from_name("ocr").unwrap_err().to_string();
        assert!(err.contains("\"ocr\""), "{err}");
        assert!(MmeSubtask::from_name("poster").is_err());
        assert_eq!(
            MmeSubtask::PERCEPTION.len() + MmeSubtask::COGNITION.len(),
            14
        );
        assert_eq!(MmeSubtask::Ocr.group(), MmeGroup::Perception);
        assert_eq!(MmeSubtask::CodeReasoning.group(), MmeGroup::Cognition);
    }

    #[test]
    fn acc_plus_counts_images_with_both_right() {
        let records = [
            // Image a: both right.
            rec("a", YesNo::Yes, "Yes"),
            rec("a", YesNo::No, "No"),
            // Image b: one of two right.
            rec("b", YesNo::Yes, "Yes"),
            rec("b", YesNo::No, "Yes"),
            // Image c: one right, one other.
            rec("c", YesNo::Yes, "Maybe"),
            rec("c", YesNo::No, "no"),
        ];
        let s = mme_subtask_score(MmeSubtask::Count, &records, MmeVariant::Official).unwrap();
        assert_eq!((s.images, s.questions), (3, 6));
        assert_eq!((s.correct, s.images_both_correct, s.other), (4, 1, 1));
        assert_eq!(s.acc, 4.0 / 6.0);
        assert_eq!(s.acc_plus, 1.0 / 3.0);
        // Not rounded: the official tool prints 99.99999999999999 for this subtask.
        assert_eq!(s.score, 4.0 / 6.0 * 100.0 + 1.0 / 3.0 * 100.0);
        assert_eq!(s.score, 99.99999999999999);
    }

    #[test]
    fn pairs_must_match() {
        let odd = [rec("a", YesNo::Yes, "yes")];
        let err = mme_subtask_score(MmeSubtask::Color, &odd, MmeVariant::Official).unwrap_err();
        assert!(err.to_string().contains("record 0"), "{err}");
        let crossed = [rec("a", YesNo::Yes, "yes"), rec("b", YesNo::No, "no")];
        let err = mme_subtask_score(MmeSubtask::Color, &crossed, MmeVariant::Official).unwrap_err();
        assert!(err.to_string().contains("color: record 1"), "{err}");
        assert!(mme_subtask_score(MmeSubtask::Color, &[], MmeVariant::Official).is_err());
    }

    /// Records for one subtask with `images` images, `correct` questions right and `both`
    /// images with both right.
    fn subtask_records(images: usize, correct: usize, both: usize) -> Vec<MmeRecord> {
        assert!(2 * both <= correct && correct - 2 * both <= images - both);
        let one = correct - 2 * both;
        let mut out = Vec::new();
        for i in 0..images {
            let name = format!("{i}.jpg");
            let (first, second) = if i < both {
                ("Yes", "No")
            } else if i < both + one {
                ("Yes", "Yes")
            } else {
                ("No", "Yes")
            };
            out.push(rec(&name, YesNo::Yes, first));
            out.push(rec(&name, YesNo::No, second));
        }
        out
    }

    #[test]
    fn totals_over_groups() {
        // existence: 58/60 right, 28/30 images: 96.666... + 93.333... = 190.
        // commonsense_reasoning: 104/140, 45/70. code_reasoning: 20/40, 7/20.
        let mut results = MmeResults::new();
        results.insert(MmeSubtask::Existence, subtask_records(30, 58, 28));
        results.insert(
            MmeSubtask::CommonsenseReasoning,
            subtask_records(70, 104, 45),
        );
        results.insert(MmeSubtask::CodeReasoning, subtask_records(20, 20, 7));
        let r = mme_report(&results, MmeVariant::Official).unwrap();
        assert_eq!(r.subtask(MmeSubtask::Existence).unwrap().score, 190.0);
        let cs = r.subtask(MmeSubtask::CommonsenseReasoning).unwrap().score;
        assert_eq!(cs, 138.57142857142858);
        assert_ne!(100.0 * (104.0 / 140.0 + 45.0 / 70.0), cs); // the order matters
        assert_eq!(r.subtask(MmeSubtask::CodeReasoning).unwrap().score, 85.0);
        assert_eq!(r.perception, 190.0);
        assert_eq!(r.cognition, 0.0 + cs + 85.0);
        assert_eq!(r.total, r.perception + r.cognition);
        assert_eq!(r.missing.len(), 11);
        assert_eq!(r.accuracy, (58 + 104 + 20) as f64 / (60 + 140 + 40) as f64);
        let text = r.official_text();
        assert!(text.starts_with("=========== Perception ===========\ntotal score: 190.0 \n\n"));
        assert!(text.contains("\t commonsense_reasoning  score: 138.57142857142858\n"));
    }

    #[test]
    fn mimic_accuracy_plain() {
        let records = [
            rec("a", YesNo::Yes, "Yes"),
            rec("a", YesNo::No, "No."),
            rec("b", YesNo::No, "no\nbecause"),
        ];
        let m = mme_accuracy(&records, MmeVariant::Mimic).unwrap();
        assert_eq!((m.questions, m.correct, m.other), (3, 2, 1));
        assert_eq!(m.accuracy, 2.0 / 3.0);
        let o = mme_accuracy(&records, MmeVariant::Official).unwrap();
        assert_eq!((o.correct, o.other), (3, 0));
        assert!(mme_accuracy(&[], MmeVariant::Mimic).is_err());
    }

    #[test]
    fn result_file_round_trip_and_errors() {
        let records = vec![
            rec("1.jpg", YesNo::Yes, "Yes\tindeed\nreally"),
            rec("1.jpg", YesNo::No, "No"),
        ];
        let text = format_result_file(&records).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with("\tNo\tNo\n"));
        let path = Path::new("results/count.txt");
        let back = parse_result_file(&text, path).unwrap();
        assert_eq!(back[0].prediction, "Yes indeed really");
        assert_eq!(back[1], records[1]);
        for (a, b) in records.iter().zip(&back) {
            assert_eq!(
                parse_prediction(&a.prediction),
                parse_prediction(&b.prediction)
            );
        }
        // CRLF and a missing final newline read as Python's text mode reads them.
        let crlf = "x\tq\tyes\tYes\r\nx\tq2\tNO\tno";
        let got = parse_result_file(crlf, path).unwrap();
        assert_eq!((got[0].gt, got[1].gt), (YesNo::Yes, YesNo::No));
        assert_eq!(got[1].prediction, "no");

        let err = parse_result_file("x\tq\tYes\tYes\nx\tq\tYes\n", path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "results/count.txt:2: expected 4 tab-separated fields (image, question, gt, \
             prediction), found 3"
        );
        let err = parse_result_file("x\tq\tMaybe\tYes\nx\tq\tYes\tYes\n", path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "results/count.txt:1: gt must be yes or no, found \"Maybe\""
        );
        let err = parse_result_file("x\tq\tYes\tYes\ny\tq\tYes\tYes\n", path).unwrap_err();
        assert!(
            err.to_string().starts_with("results/count.txt:2: "),
            "{err}"
        );
        let err = parse_result_file("x\tq\tYes\tYes\n\n", path).unwrap_err();
        assert!(
            err.to_string().starts_with("results/count.txt:2: "),
            "{err}"
        );
        assert!(parse_result_file("", path).is_err());
        let bad = [rec("a\tb", YesNo::Yes, "yes")];
        assert!(format_result_file(&bad).is_err());
    }
}
