//! SEED-Bench v1 image dimensions (question_type_id 1..=9): accuracy per dimension and
//! overall, from letters given directly or extracted from generated text as MimIC does.
//!
//! # Scoring ([`seed_accuracy`])
//!
//! A question is right when the prediction string equals the answer letter exactly
//! (`pred == gt` in the official `eval.py`, HF `evaluate` exact match in MimIC: case
//! sensitive, so `"a"` does not answer `"A"`).
//!
//! ```text
//! accuracy(dim) = correct(dim) / questions(dim) * 100      (percent; that float order)
//! overall       = sum correct / sum questions * 100          (micro average over questions)
//! exact_match   = sum correct / sum questions                (MimIC's figure, in 0..=1)
//! ```
//!
//! The official script prints each with `{:.2f}` ([`SeedReport::official_text`]); the report
//! keeps the unrounded values.
//!
//! # Extraction from generated text ([`extract_answer`])
//!
//! MimIC (`src/dataset_utils/seed_bench.py`): cut the generation at the first `"\n"` or `"."`,
//! strip (Python `str.strip()`); if the upper-cased text is one of A, B, C, D keep the text
//! **as it is** (so a lower-case `"b"` is kept and then scores wrong), else replace it by a
//! random letter. MimIC draws with Python's global `random.choice`; this port draws from
//! [`SplitMix64`] seeded by the caller: one generator per scoring run, one draw per fallback
//! in input order, letter = `["A", "B", "C", "D"][next_u64() >> 62]` (the top two bits).
//! Same seed, same letters; the letters are not those Python would draw.
//!
//! # Sources and what was checked
//!
//! - Official metric: `eval.py` in GitHub `AILab-CVC/SEED-Bench` (250947c, the first
//!   version; the current one builds records without `gt`/`q_type_id` and would fail before
//!   printing). It ranks the four choices by loss (no text parsing), counts per
//!   `question_type_id` in order of first appearance and prints `Data type {id}: {acc:.2f}%`
//!   and `Total accuracy: {acc:.2f}%`. A dimension with no right answer raises `KeyError`
//!   there; this port reports 0.
//! - Dimension names: the `question_type` map of `SEED-Bench.json` as `DATASET.md` shows it
//!   ("Instances Counting", "Text Understanding"); the README's data-source list calls
//!   dimension 9 "Text Recognition". [`SeedDimension::from_name`] accepts both spellings.
//! - MimIC: `src/dataset_utils/seed_bench.py`, `testbed/data/__init__.py`
//!   (`postprocess_generation`: `re.split` at the first stop word, then `strip()`) and
//!   `testbed/data/seed_bench/` at Kamichanw/MimIC 9eda50b. As published,
//!   `seed_bench.py` calls `random.choice` without importing `random`, so its fallback
//!   raises `NameError`; the rule above is what the code evidently means.
//! - SplitMix64: the reference outputs for seeds 0 and 1234567 (Vigna's `splitmix64.c`, as
//!   listed on Rosetta Code) are unit tests.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{py_strip, MetricsError};

/// One of SEED-Bench v1's nine image dimensions; serde names are the JSON's
/// `question_type` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SeedDimension {
    #[serde(rename = "Scene Understanding")]
    SceneUnderstanding = 1,
    #[serde(rename = "Instance Identity")]
    InstanceIdentity = 2,
    #[serde(rename = "Instance Attributes")]
    InstanceAttributes = 3,
    #[serde(rename = "Instance Location")]
    InstanceLocation = 4,
    #[serde(rename = "Instances Counting")]
    InstancesCounting = 5,
    #[serde(rename = "Spatial Relation")]
    SpatialRelation = 6,
    #[serde(rename = "Instance Interaction")]
    InstanceInteraction = 7,
    #[serde(rename = "Visual Reasoning")]
    VisualReasoning = 8,
    #[serde(rename = "Text Understanding")]
    TextUnderstanding = 9,
}

impl SeedDimension {
    /// All nine, by id.
    pub const ALL: [SeedDimension; 9] = [
        SeedDimension::SceneUnderstanding,
        SeedDimension::InstanceIdentity,
        SeedDimension::InstanceAttributes,
        SeedDimension::InstanceLocation,
        SeedDimension::InstancesCounting,
        SeedDimension::SpatialRelation,
        SeedDimension::InstanceInteraction,
        SeedDimension::VisualReasoning,
        SeedDimension::TextUnderstanding,
    ];

    /// `question_type_id`.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The dimension of a `question_type_id`; 10..=12 are v1's video dimensions, not scored
    /// here.
    pub fn from_id(id: u32) -> Result<Self, MetricsError> {
        SeedDimension::ALL
            .into_iter()
            .find(|d| d.id() == id)
            .ok_or_else(|| MetricsError::UnknownName {
                kind: "SEED-Bench image dimension id (1..=9)",
                name: id.to_string(),
            })
    }

    /// The `question_type` key in `SEED-Bench.json`.
    pub fn name(self) -> &'static str {
        match self {
            SeedDimension::SceneUnderstanding => "Scene Understanding",
            SeedDimension::InstanceIdentity => "Instance Identity",
            SeedDimension::InstanceAttributes => "Instance Attributes",
            SeedDimension::InstanceLocation => "Instance Location",
            SeedDimension::InstancesCounting => "Instances Counting",
            SeedDimension::SpatialRelation => "Spatial Relation",
            SeedDimension::InstanceInteraction => "Instance Interaction",
            SeedDimension::VisualReasoning => "Visual Reasoning",
            SeedDimension::TextUnderstanding => "Text Understanding",
        }
    }

    /// A dimension by its JSON name, or by the other spellings in circulation ("Instance
    /// Counting"; "Text Recognition", the README's and the paper's name for dimension 9).
    pub fn from_name(name: &str) -> Result<Self, MetricsError> {
        let alias = match name {
            "Instance Counting" => Some(SeedDimension::InstancesCounting),
            "Text Recognition" => Some(SeedDimension::TextUnderstanding),
            _ => None,
        };
        alias
            .or_else(|| SeedDimension::ALL.into_iter().find(|d| d.name() == name))
            .ok_or_else(|| MetricsError::UnknownName {
                kind: "SEED-Bench image dimension",
                name: name.to_string(),
            })
    }
}

impl fmt::Display for SeedDimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An answer letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Choice {
    A,
    B,
    C,
    D,
}

impl Choice {
    /// A, B, C, D in order.
    pub const ALL: [Choice; 4] = [Choice::A, Choice::B, Choice::C, Choice::D];

    /// `"A"`..`"D"`.
    pub fn letter(self) -> &'static str {
        match self {
            Choice::A => "A",
            Choice::B => "B",
            Choice::C => "C",
            Choice::D => "D",
        }
    }

    /// The choice a string names exactly (upper case only, as exact match reads it).
    pub fn from_letter(s: &str) -> Option<Self> {
        Choice::ALL.into_iter().find(|c| c.letter() == s)
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014; Vigna's `splitmix64.c`): a 64-bit counter
/// stepped by the golden-ratio constant and mixed. Small, fast and reproducible; used here
/// for the fallback letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output mixes `seed + 0x9E3779B97F4A7C15`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform letter from the top two bits of the next output.
    pub fn next_choice(&mut self) -> Choice {
        Choice::ALL[(self.next_u64() >> 62) as usize]
    }
}

/// What [`extract_answer`] made of a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractedAnswer {
    /// The prediction as scored: the kept text (`A`..`D` or `a`..`d`) or the random letter.
    pub prediction: String,
    /// Whether the letter was drawn at random.
    pub random: bool,
}

/// MimIC's extraction: cut at the first `"\n"` or `"."`, strip, keep the text if its upper
/// case is A/B/C/D (lower case stays lower case), else a letter from `rng`.
pub fn extract_answer(generation: &str, rng: &mut SplitMix64) -> ExtractedAnswer {
    let head = generation.split(['\n', '.']).next().unwrap_or("");
    let text = py_strip(head);
    // Python's `upper()` maps only a..d (and A..D) to "A".."D".
    if matches!(text, "A" | "B" | "C" | "D" | "a" | "b" | "c" | "d") {
        ExtractedAnswer {
            prediction: text.to_string(),
            random: false,
        }
    } else {
        ExtractedAnswer {
            prediction: rng.next_choice().letter().to_string(),
            random: true,
        }
    }
}

/// One scored question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRecord {
    pub question_id: String,
    pub dimension: SeedDimension,
    pub answer: Choice,
    /// The predicted letter; right iff it equals `answer`'s letter exactly.
    pub prediction: String,
}

impl SeedRecord {
    /// Exact match against the answer letter.
    pub fn is_correct(&self) -> bool {
        self.prediction == self.answer.letter()
    }
}

/// One question with the model's generated text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedGeneration {
    pub question_id: String,
    pub dimension: SeedDimension,
    pub answer: Choice,
    pub generation: String,
}

/// One dimension's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedDimensionScore {
    pub dimension: SeedDimension,
    /// `question_type_id`.
    pub id: u32,
    pub questions: usize,
    pub correct: usize,
    /// `correct / questions * 100`.
    pub accuracy: f64,
}

/// SEED-Bench accuracies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedReport {
    /// The dimensions present, by id.
    pub dimensions: Vec<SeedDimensionScore>,
    pub questions: usize,
    pub correct: usize,
    /// `correct / questions * 100` over all questions (the official "Total accuracy").
    pub overall: f64,
    /// `correct / questions`, in 0..=1 (MimIC's `exact_match`).
    pub exact_match: f64,
    /// Predictions drawn at random (0 when letters were given).
    pub random_fallbacks: usize,
}

impl SeedReport {
    /// The score of one dimension, if present.
    pub fn dimension(&self, dimension: SeedDimension) -> Option<&SeedDimensionScore> {
        self.dimensions.iter().find(|d| d.dimension == dimension)
    }

    /// The official script's summary lines (dimensions by id here; the script lists them in
    /// order of first appearance). Rust's `{:.2}` rounds the exact binary value half to
    /// even, as Python's `format` does.
    pub fn official_text(&self) -> String {
        let mut out = String::from("Accuracy for each data type:\n");
        for d in &self.dimensions {
            out.push_str(&format!("Data type {}: {:.2}%\n", d.id, d.accuracy));
        }
        out.push_str(&format!("Total accuracy: {:.2}%\n", self.overall));
        out
    }
}

/// Accuracy per dimension and overall from predicted letters (exact match).
pub fn seed_accuracy(records: &[SeedRecord]) -> Result<SeedReport, MetricsError> {
    if records.is_empty() {
        return Err(MetricsError::Empty("SEED-Bench accuracy"));
    }
    let mut counts = [(0usize, 0usize); 9];
    for r in records {
        let c = &mut counts[r.dimension.id() as usize - 1];
        c.0 += 1;
        c.1 += usize::from(r.is_correct());
    }
    let dimensions: Vec<SeedDimensionScore> = SeedDimension::ALL
        .into_iter()
        .zip(counts)
        .filter(|(_, (n, _))| *n > 0)
        .map(|(dimension, (questions, correct))| SeedDimensionScore {
            dimension,
            id: dimension.id(),
            questions,
            correct,
            accuracy: correct as f64 / questions as f64 * 100.0,
        })
        .collect();
    let questions = records.len();
    let correct: usize = dimensions.iter().map(|d| d.correct).sum();
    Ok(SeedReport {
        dimensions,
        questions,
        correct,
        overall: correct as f64 / questions as f64 * 100.0,
        exact_match: correct as f64 / questions as f64,
        random_fallbacks: 0,
    })
}

/// Extracts every answer with [`extract_answer`] from one [`SplitMix64`] seeded with `seed`
/// (draws in input order) and scores them; also returns the extractions, in input order.
pub fn seed_accuracy_from_generations(
    items: &[SeedGeneration],
    seed: u64,
) -> Result<(SeedReport, Vec<ExtractedAnswer>), MetricsError> {
    let mut rng = SplitMix64::new(seed);
    let extracted: Vec<ExtractedAnswer> = items
        .iter()
        .map(|g| extract_answer(&g.generation, &mut rng))
        .collect();
    let records: Vec<SeedRecord> = items
        .iter()
        .zip(&extracted)
        .map(|(g, e)| SeedRecord {
            question_id: g.question_id.clone(),
            dimension: g.dimension,
            answer: g.answer,
            prediction: e.prediction.clone(),
        })
        .collect();
    let mut report = seed_accuracy(&records)?;
    report.random_fallbacks = extracted.iter().filter(|e| e.random).count();
    Ok((report, extracted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_outputs() {
        let mut r = SplitMix64::new(1234567);
        let want = [
            6457827717110365317,
            3203168211198807973,
            9817491932198370423,
            4593380528125082431,
            16408922859458223821,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
        let mut z = SplitMix64::new(0);
        assert_eq!(z.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(z.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn letters_from_top_bits() {
        // Seed 1234567: outputs >> 62 are 1, 0, 2, 0, 3.
        let mut r = SplitMix64::new(1234567);
        let got: Vec<Choice> = (0..5).map(|_| r.next_choice()).collect();
        use Choice::*;
        assert_eq!(got, [B, A, C, A, D]);
    }

    #[test]
    fn extraction_keeps_letters() {
        let mut rng = SplitMix64::new(7);
        let untouched = rng.clone();
        for (gen, want) in [
            ("B", "B"),
            (" C\nbecause", "C"),
            ("D. a dog", "D"),
            ("A.", "A"),
            ("  b ", "b"), // kept lower case, as MimIC keeps it
        ] {
            let e = extract_answer(gen, &mut rng);
            assert_eq!(e.prediction, want, "{gen:?}");
            assert!(!e.random);
        }
        // No draw was consumed.
        assert_eq!(rng, untouched);
    }

    #[test]
    fn extraction_falls_back_to_random() {
        let mut rng = SplitMix64::new(1234567);
        for gen in ["(B)", "The answer is B", "", "\nB", "AB", "E"] {
            let e = extract_answer(gen, &mut rng);
            assert!(e.random, "{gen:?}");
            assert!(Choice::from_letter(&e.prediction).is_some());
        }
    }

    #[test]
    fn fallback_reproducible_per_seed() {
        let items: Vec<SeedGeneration> = (0..12)
            .map(|i| SeedGeneration {
                question_id: i.to_string(),
                dimension: SeedDimension::SceneUnderstanding,
                answer: Choice::A,
                generation: "I am not sure".to_string(),
            })
            .collect();
        let letters = |seed| -> String {
            let (_, e) = seed_accuracy_from_generations(&items, seed).unwrap();
            e.iter().map(|e| e.prediction.as_str()).collect()
        };
        // top two bits of SplitMix64's first 12 outputs.
        assert_eq!(letters(0), "DBADABADADBD");
        assert_eq!(letters(0), letters(0));
        assert_eq!(letters(42), "CABBADADBCAB");
        assert_ne!(letters(0), letters(42));
        let (report, _) = seed_accuracy_from_generations(&items, 0).unwrap();
        assert_eq!(report.random_fallbacks, 12);
        assert_eq!(report.correct, 4); // four A's in DBADABADADBD
    }

    #[test]
    fn dimensions_by_id_and_name() {
        for (i, d) in SeedDimension::ALL.into_iter().enumerate() {
            assert_eq!(d.id() as usize, i + 1);
            assert_eq!(SeedDimension::from_id(d.id()).unwrap(), d);
            assert_eq!(SeedDimension::from_name(d.name()).unwrap(), d);
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.name())
            );
        }
        assert_eq!(
            SeedDimension::from_name("Text Recognition").unwrap(),
            SeedDimension::TextUnderstanding
        );
        assert_eq!(
            SeedDimension::from_name("Instance Counting").unwrap(),
            SeedDimension::InstancesCounting
        );
        assert!(SeedDimension::from_id(10).is_err());
        assert!(SeedDimension::from_id(0).is_err());
        assert!(SeedDimension::from_name("Action Recognition").is_err());
    }

    #[test]
    fn accuracy_per_dimension_and_overall() {
        let rec = |d, answer, prediction: &str| SeedRecord {
            question_id: String::new(),
            dimension: d,
            answer,
            prediction: prediction.to_string(),
        };
        use Choice::*;
        use SeedDimension::*;
        let records = [
            rec(SceneUnderstanding, A, "A"),
            rec(SceneUnderstanding, B, "B"),
            rec(SceneUnderstanding, C, "D"),
            rec(TextUnderstanding, D, "D"),
            rec(TextUnderstanding, A, "a"), // case-sensitive
            rec(InstancesCounting, B, "C"),
        ];
        let r = seed_accuracy(&records).unwrap();
        assert_eq!(r.dimensions.len(), 3);
        let scene = r.dimension(SceneUnderstanding).unwrap();
        assert_eq!((scene.questions, scene.correct), (3, 2));
        assert_eq!(scene.accuracy, 2.0 / 3.0 * 100.0);
        assert_eq!(r.dimension(TextUnderstanding).unwrap().accuracy, 50.0);
        assert_eq!(r.dimension(InstancesCounting).unwrap().accuracy, 0.0);
        assert_eq!((r.questions, r.correct), (6, 3));
        assert_eq!(r.overall, 50.0);
        assert_eq!(r.exact_match, 0.5);
        // Ids ascending: 1, 5, 9.
        let ids: Vec<u32> = r.dimensions.iter().map(|d| d.id).collect();
        assert_eq!(ids, [1, 5, 9]);
        assert_eq!(
            r.official_text(),
            "Accuracy for each data type:\nData type 1: 66.67%\nData type 5: 0.00%\n\
             Data type 9: 50.00%\nTotal accuracy: 50.00%\n"
        );
        assert!(seed_accuracy(&[]).is_err());
    }
}
