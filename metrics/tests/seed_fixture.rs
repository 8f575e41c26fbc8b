//! SEED-Bench v1 scoring on a hand-written result set: generations through MimIC's
//! extraction with a seeded fallback, and letters given directly.

use mimic_metrics::seed::{
    seed_accuracy, seed_accuracy_from_generations, Choice, SeedDimension, SeedGeneration,
    SeedRecord,
};

use Choice::*;
use SeedDimension::*;

fn generations() -> Vec<SeedGeneration> {
    // (question_id, question_type_id, answer, generation)
    let rows: [(&str, u32, Choice, &str); 12] = [
        ("1001", 1, A, "A"),
        ("1002", 1, B, "B. A beach at sunset."),
        ("1003", 1, C, "The answer is C"), // fallback draw 1
        ("2001", 2, D, " D\nbecause it is a cat"),
        ("2002", 2, A, "b"),   // kept lower case: wrong even against B
        ("5001", 5, B, "(B)"), // fallback draw 2
        ("5002", 5, C, "C"),
        ("5003", 5, D, "Three."), // fallback draw 3
        ("9001", 9, A, "A"),
        ("9002", 9, A, ""), // fallback draw 4
        ("9003", 9, B, "D"),
        ("9004", 9, C, "c."), // kept lower case: wrong
    ];
    rows.iter()
        .map(|&(id, t, answer, generation)| SeedGeneration {
            question_id: id.to_string(),
            dimension: SeedDimension::from_id(t).unwrap(),
            answer,
            generation: generation.to_string(),
        })
        .collect()
}

#[test]
fn generations_with_seeded_fallback() {
    // Seed 3407 draws B, A, A, A (top two bits of SplitMix64's first outputs).
    let (report, extracted) = seed_accuracy_from_generations(&generations(), 3407).unwrap();
    let letters: Vec<&str> = extracted.iter().map(|e| e.prediction.as_str()).collect();
    assert_eq!(
        letters,
        ["A", "B", "B", "D", "b", "A", "C", "A", "A", "A", "D", "c"]
    );
    assert_eq!(report.random_fallbacks, 4);
    // Right: 1001, 1002 | 2001 | 5002 | 9001, 9002 (random A against A).
    let by_dim: Vec<(SeedDimension, usize, usize)> = report
        .dimensions
        .iter()
        .map(|d| (d.dimension, d.questions, d.correct))
        .collect();
    assert_eq!(
        by_dim,
        [
            (SceneUnderstanding, 3, 2),
            (InstanceIdentity, 2, 1),
            (InstancesCounting, 3, 1),
            (TextUnderstanding, 4, 2),
        ]
    );
    assert_eq!(report.correct, 6);
    assert_eq!(report.overall, 6.0 / 12.0 * 100.0);
    assert_eq!(report.exact_match, 0.5);
    assert_eq!(
        report.official_text(),
        "Accuracy for each data type:\n\
         Data type 1: 66.67%\n\
         Data type 2: 50.00%\n\
         Data type 5: 33.33%\n\
         Data type 9: 50.00%\n\
         Total accuracy: 50.00%\n"
    );

    // Seed 1 draws C, C, D, B: 1003 and 5003 turn right, 9002 wrong.
    let (other, extracted) = seed_accuracy_from_generations(&generations(), 1).unwrap();
    let random: Vec<&str> = extracted
        .iter()
        .filter(|e| e.random)
        .map(|e| e.prediction.as_str())
        .collect();
    assert_eq!(random, ["C", "C", "D", "B"]);
    let correct: Vec<usize> = other.dimensions.iter().map(|d| d.correct).collect();
    assert_eq!(correct, [3, 1, 2, 1]);
    assert_eq!(other.correct, 7);
    assert_ne!(other.dimensions, report.dimensions);
    // Same seed, same result.
    assert_eq!(
        seed_accuracy_from_generations(&generations(), 3407)
            .unwrap()
            .0,
        report
    );
}

#[test]
fn letters_given_directly() {
    let records: Vec<SeedRecord> = generations()
        .into_iter()
        .map(|g| SeedRecord {
            prediction: g.answer.letter().to_string(),
            question_id: g.question_id,
            dimension: g.dimension,
            answer: g.answer,
        })
        .collect();
    let report = seed_accuracy(&records).unwrap();
    assert_eq!(report.overall, 100.0);
    assert!(report.dimensions.iter().all(|d| d.accuracy == 100.0));
    assert_eq!(report.random_fallbacks, 0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["dimensions"][0]["dimension"], "Scene Understanding");
    assert_eq!(json["dimensions"][2]["id"], 5);
}
