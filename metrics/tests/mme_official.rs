//! MME against the official `eval_tool/calculation.py`.
//!
//! `fixtures/mme/` is a hand-written result set (all 14 subtasks, 1 to 3 images each,
//! predictions covering every parsing branch; `scene.txt` has CRLF line ends and
//! `posters.txt` no final newline). `fixtures/mme_official_output.txt` is the official
//! tool's stdout on that folder minus its first line (`Namespace(...)`): the `calculation.py`
//! copy in GitHub zjunlp/Deco (a3ccc15), run with Python 3.11.7 and scikit-learn 1.9.1.

use std::path::{Path, PathBuf};

use mimic_metrics::mme::{
    mme_accuracy, mme_report, mme_subtask_score, read_results_dir, write_results_dir, MmeRecord,
    MmeResults, MmeSubtask, MmeVariant, YesNo,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mme")
}

#[test]
fn fixture_matches_official_printout() {
    let results = read_results_dir(&fixture_dir()).unwrap();
    assert_eq!(results.len(), 14);
    let report = mme_report(&results, MmeVariant::Official).unwrap();
    assert!(report.missing.is_empty());
    assert_eq!(
        report.official_text(),
        include_str!("fixtures/mme_official_output.txt")
    );
}

#[test]
fn fixture_by_hand() {
    let results = read_results_dir(&fixture_dir()).unwrap();
    let report = mme_report(&results, MmeVariant::Official).unwrap();
    // color: Yes (right), "Not really." (no, right) | "I think yes." (other), "Nope" (no,
    // right) | "" (other), "yes" (right): 4 of 6, 1 of 3 images.
    let color = report.subtask(MmeSubtask::Color).unwrap();
    assert_eq!(
        (color.correct, color.images_both_correct, color.other),
        (4, 1, 2)
    );
    assert_eq!(color.score, 99.99999999999999);
    // landmark: "Snow" reads as no (right), "It is Big Ben." as other.
    let landmark = report.subtask(MmeSubtask::Landmark).unwrap();
    assert_eq!((landmark.correct, landmark.images_both_correct), (3, 1));
    assert_eq!(landmark.score, 125.0);
    // scene (CRLF file): "Sure, yes" is other, "no." is no.
    assert_eq!(report.subtask(MmeSubtask::Scene).unwrap().score, 50.0);
    assert_eq!(report.perception, 1175.0);
    assert_eq!(report.cognition, 450.0);
    assert_eq!(report.total, 1625.0);
    assert_eq!(report.accuracy, 30.0 / 42.0);

    // MimIC's rule: only an exact (stripped, lower-cased) yes/no counts.
    let all: Vec<&MmeRecord> = results.values().flatten().collect();
    let mimic = mme_accuracy(all.iter().copied(), MmeVariant::Mimic).unwrap();
    assert_eq!((mimic.questions, mimic.correct, mimic.other), (42, 22, 14));
    assert_eq!(mimic.accuracy, 22.0 / 42.0);
}

#[test]
fn write_then_read_scores_the_same() {
    let results = read_results_dir(&fixture_dir()).unwrap();
    let dir = std::env::temp_dir().join(format!("mimic-mme-roundtrip-{}", std::process::id()));
    write_results_dir(&dir, &results).unwrap();
    let back = read_results_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(back, results);
    let a = mme_report(&results, MmeVariant::Official).unwrap();
    let b = mme_report(&back, MmeVariant::Official).unwrap();
    assert_eq!(a, b);
}

#[test]
fn read_errors_name_file_and_line() {
    let dir = std::env::temp_dir().join(format!("mimic-mme-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("count.txt"),
        "a.jpg\tq1\tYes\tyes\na.jpg\tq2\tPerhaps\tno\n",
    )
    .unwrap();
    let err = read_results_dir(&dir).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("count.txt:2: gt must be yes or no"), "{err}");

    let empty = std::env::temp_dir().join(format!("mimic-mme-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let err = read_results_dir(&empty).unwrap_err().to_string();
    std::fs::remove_dir_all(&empty).unwrap();
    assert!(err.contains("no MME result file"), "{err}");
}

/// Records for `images` images with `correct` questions right and `both` images with both
/// right.
fn records(images: usize, correct: usize, both: usize) -> Vec<MmeRecord> {
    let one = correct - 2 * both;
    assert!(both + one <= images);
    let mut out = Vec::new();
    for i in 0..images {
        let (first, second) = if i < both {
            ("Yes", "No")
        } else if i < both + one {
            ("Yes", "Yes")
        } else {
            ("No", "Yes")
        };
        for (gt, prediction) in [(YesNo::Yes, first), (YesNo::No, second)] {
            out.push(MmeRecord {
                image: format!("{i}.jpg"),
                question: String::new(),
                gt,
                prediction: prediction.to_string(),
            });
        }
    }
    out
}

/// The printout published in InternLM-XComposer `eval_mm/mme/MME_Bench.md` (output of the
/// official tool): each subtask score is reproduced bit for bit from one (right questions,
/// images with both right) split, with MME's subtask sizes, and the totals from them.
#[test]
fn published_printout_reproduced() {
    let published: [(MmeSubtask, usize, usize, usize, f64); 14] = [
        (MmeSubtask::Existence, 30, 58, 28, 190.0),
        (MmeSubtask::Count, 30, 51, 22, 158.33333333333331),
        (MmeSubtask::Position, 30, 44, 16, 126.66666666666666),
        (MmeSubtask::Color, 30, 53, 23, 165.0),
        (MmeSubtask::Posters, 147, 254, 111, 161.9047619047619),
        (MmeSubtask::Celebrity, 170, 283, 114, 150.2941176470588),
        (MmeSubtask::Scene, 200, 345, 147, 159.75),
        (MmeSubtask::Landmark, 200, 353, 154, 165.25),
        (MmeSubtask::Artwork, 200, 301, 102, 126.25),
        (MmeSubtask::Ocr, 20, 30, 10, 125.0),
        (
            MmeSubtask::CommonsenseReasoning,
            70,
            104,
            45,
            138.57142857142858,
        ),
        (MmeSubtask::NumericalCalculation, 20, 20, 1, 55.0),
        (MmeSubtask::TextTranslation, 20, 27, 9, 112.5),
        (MmeSubtask::CodeReasoning, 20, 24, 5, 85.0),
    ];
    let mut results = MmeResults::new();
    for (subtask, images, correct, both, score) in published {
        let recs = records(images, correct, both);
        let s = mme_subtask_score(subtask, &recs, MmeVariant::Official).unwrap();
        assert_eq!(s.score, score, "{subtask}");
        results.insert(subtask, recs);
    }
    let report = mme_report(&results, MmeVariant::Official).unwrap();
    assert_eq!(report.perception, 1528.4488795518207);
    assert_eq!(report.cognition, 391.07142857142856);
    let text = report.official_text();
    assert!(text.contains("total score: 1528.4488795518207 \n"));
    assert!(text.contains("\t celebrity  score: 150.2941176470588\n"));
}
