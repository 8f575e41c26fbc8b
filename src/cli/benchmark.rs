//! `--dataset`: a benchmark in its official layout as a task (a support set drawn from its
//! training split for demonstrations and training, its evaluation split as the queries), and
//! the benchmark's own scoring of the answers. VQA data sets (VQAv2, OK-VQA, easy-VQA) are
//! scored by VQA accuracy, the official scorer's and the published MimIC code's variant, and
//! their answers written as the official results file `[{question_id, answer}]`.
// Scoring runs in `mimic eval`, which the deployment build (no `torch` feature) lacks.
#![cfg_attr(not(feature = "torch"), allow(dead_code))]

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mimic_models::datasets::easy_vqa::{package_root, read_easy_vqa, EasyVqaSplit};
use mimic_models::datasets::vqa::{read_vqa, VqaSplit};
use mimic_models::datasets::{Dataset, MissingImages};
use mimic_models::rng::SplitMix64;
use mimic_models::task::{Pair, Task, Template};

/// The data sets `--dataset` takes.
pub const DATASETS: &[&str] = &["easy-vqa", "vqav2", "okvqa"];

/// A benchmark named on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct DatasetArgs {
    /// A benchmark in its official layout instead of `--task`: easy-vqa (the installed PyPI
    /// package by default), vqav2, okvqa.
    #[arg(long, value_parser = super::one_of::<Dataset>(DATASETS), conflicts_with = "task")]
    pub dataset: Option<Dataset>,
    /// The data set's root folder (for easy-vqa, default: the installed package's data).
    #[arg(long, value_name = "DIR", requires = "dataset")]
    pub root: Option<PathBuf>,
    /// Leave out entries whose image is missing (and say how many) instead of failing.
    #[arg(long, requires = "dataset")]
    pub skip_missing: bool,
    /// Support set: pairs drawn (seeded) from the training split, for demonstrations and
    /// for `mimic train`.
    #[arg(long, default_value_t = 1000, requires = "dataset")]
    pub support: usize,
}

/// One evaluation question's ground truth, in the order of the task's test pairs.
#[derive(Debug, Clone)]
pub struct Question {
    pub question_id: u64,
    pub answers: Vec<String>,
    pub question_type: Option<String>,
    pub answer_type: Option<String>,
}

/// A benchmark loaded as a task, with its scoring data.
pub struct Benchmark {
    pub dataset: Dataset,
    pub questions: Vec<Question>,
}

/// Pairs from samples: the question as input, its image, the answer as output.
fn pair(question: &str, answer: &str, image: &Path) -> Pair {
    Pair {
        input: question.to_string(),
        output: answer.to_string(),
        images: vec![image.to_path_buf()],
    }
}

/// `n` of `pairs` drawn with `seed` (all when fewer).
fn draw(mut pairs: Vec<Pair>, n: usize, seed: u64) -> Vec<Pair> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    order.truncate(n);
    order.sort_unstable();
    let mut keep = vec![false; pairs.len()];
    for i in order {
        keep[i] = true;
    }
    let mut k = keep.iter();
    pairs.retain(|_| *k.next().unwrap_or(&false));
    pairs
}

impl DatasetArgs {
    /// The benchmark as a task (`template` must hold one `<image>`), the evaluation split cut to
    /// `limit` queries when given, and its scoring data.
    pub fn load(
        &self,
        dataset: Dataset,
        template: &str,
        seed: u64,
        limit: Option<usize>,
    ) -> Result<(Task, Benchmark)> {
        let images = template.matches("<image>").count();
        if images != 1 {
            bail!(
                "the template {template:?} holds {images} <image> placeholders; a {} prompt \
                 needs one, for the question's image",
                dataset.name()
            );
        }
        let missing = if self.skip_missing {
            MissingImages::Skip
        } else {
            MissingImages::Error
        };
        let (support, test, questions, skipped) = match dataset {
            Dataset::EasyVqa => {
                let root = match &self.root {
                    Some(r) => r.clone(),
                    None => package_root()?,
                };
                let train = read_easy_vqa(&root, EasyVqaSplit::Train, missing)?;
                let test = read_easy_vqa(&root, EasyVqaSplit::Test, missing)?;
                let support = train
                    .samples
                    .iter()
                    .map(|s| pair(&s.question, &s.answer, &s.image))
                    .collect();
                // One answer per question: scored as ten identical annotators, VQA accuracy is
                // exact match of the answer.
                let questions = test
                    .samples
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Question {
                        question_id: i as u64,
                        answers: vec![s.answer.clone(); 10],
                        question_type: None,
                        answer_type: None,
                    })
                    .collect();
                let test = test
                    .samples
                    .iter()
                    .map(|s| pair(&s.question, &s.answer, &s.image))
                    .collect();
                (support, test, questions, train.skipped_missing)
            }
            Dataset::VqaV2 | Dataset::OkVqa => {
                let root = self
                    .root
                    .as_ref()
                    .with_context(|| format!("--dataset {} needs --root DIR", dataset.name()))?;
                let train = read_vqa(dataset, root, VqaSplit::Train, missing)?;
                let val = read_vqa(dataset, root, VqaSplit::Val, missing)?;
                // The training target: the most frequent answer (VQAv2's
                // multiple_choice_answer, else the first of the most common).
                let target = |answers: &[String], mc: &Option<String>| -> String {
                    mc.clone().unwrap_or_else(|| most_common(answers))
                };
                let support = train
                    .samples
                    .iter()
                    .map(|s| {
                        let a = target(&s.answers, &s.multiple_choice_answer);
                        pair(&s.question, &a, &s.image)
                    })
                    .collect();
                let questions = val
                    .samples
                    .iter()
                    .map(|s| Question {
                        question_id: s.question_id,
                        answers: s.answers.clone(),
                        question_type: Some(s.question_type.clone()),
                        answer_type: Some(s.answer_type.clone()),
                    })
                    .collect();
                let test = val
                    .samples
                    .iter()
                    .map(|s| {
                        let a = target(&s.answers, &s.multiple_choice_answer);
                        pair(&s.question, &a, &s.image)
                    })
                    .collect();
                (
                    support,
                    test,
                    questions,
                    train.skipped_missing + val.skipped_missing,
                )
            }
            other => bail!(
                "--dataset {} is not evaluated by mimic yet (its reader and metric are in the \
                 library); use one of {DATASETS:?}",
                other.name()
            ),
        };
        if skipped > 0 {
            eprintln!(
                "{}: {skipped} entries left out, their image missing",
                dataset.name()
            );
        }
        let mut test: Vec<Pair> = test;
        let mut questions: Vec<Question> = questions;
        if let Some(n) = limit {
            test.truncate(n);
            questions.truncate(n);
        }
        if test.is_empty() {
            bail!("{}: no evaluation questions", dataset.name());
        }
        let train = draw(support, self.support, seed);
        if train.is_empty() {
            bail!("{}: no training pairs for the support set", dataset.name());
        }
        let task = Task {
            path: PathBuf::from(dataset.name()),
            train,
            test,
            template: Template::new(template)?,
        };
        Ok((task, Benchmark { dataset, questions }))
    }
}

/// The most common of `answers` (the first of those tied).
fn most_common(answers: &[String]) -> String {
    let mut best = (0, String::new());
    for a in answers {
        let n = answers.iter().filter(|b| *b == a).count();
        if n > best.0 {
            best = (n, a.clone());
        }
    }
    best.1
}

/// A generated answer as the published MimIC code post-processes it: cut at the first of
/// "\n", "Question", "Answer", "Image", "Short", then stripped.
pub fn postprocess(generated: &str) -> String {
    let mut end = generated.len();
    for stop in ["\n", "Question", "Answer", "Image", "Short"] {
        if let Some(i) = generated.find(stop) {
            end = end.min(i);
        }
    }
    generated[..end].trim().to_string()
}

/// VQA accuracy of one method's answers, the official scorer's and MimIC's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VqaScores {
    pub dataset: String,
    pub method: String,
    pub questions: usize,
    pub official: mimic_metrics::vqa::VqaReport,
    pub mimic: f64,
}

impl Benchmark {
    /// Scores `generated` (one per question, in order).
    pub fn score(&self, method: &str, generated: &[String]) -> Result<VqaScores> {
        use mimic_metrics::vqa::{vqa_accuracy, VqaQuestion, VqaVariant};
        let questions: Vec<VqaQuestion> = self
            .questions
            .iter()
            .zip(generated)
            .map(|(q, g)| VqaQuestion {
                prediction: postprocess(g),
                answers: q.answers.clone(),
                question_type: q.question_type.clone(),
                answer_type: q.answer_type.clone(),
            })
            .collect();
        let official = vqa_accuracy(&questions, VqaVariant::Official)?;
        let mimic = vqa_accuracy(&questions, VqaVariant::Mimic)?.overall;
        Ok(VqaScores {
            dataset: self.dataset.name().to_string(),
            method: method.to_string(),
            questions: questions.len(),
            official,
            mimic,
        })
    }

    /// The official results file, `[{question_id, answer}]`, written under a temporary name
    /// and renamed.
    pub fn write_results(&self, path: &Path, generated: &[String]) -> Result<()> {
        let rows: Vec<serde_json::Value> = self
            .questions
            .iter()
            .zip(generated)
            .map(|(q, g)| serde_json::json!({"question_id": q.question_id, "answer": postprocess(g)}))
            .collect();
        let text = serde_json::to_string(&rows)?;
        mimic_models::files::write_atomically(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_cut_as_mimic_cuts_them() {
        assert_eq!(postprocess(" red\nQuestion: x"), "red");
        assert_eq!(postprocess("two Answer: three"), "two");
        assert_eq!(postprocess("yes Short answer"), "yes");
        assert_eq!(postprocess("  blue  "), "blue");
        assert_eq!(postprocess("Image: a"), "");
    }

    #[test]
    fn the_support_set_is_a_seeded_draw_in_file_order() {
        let pairs: Vec<Pair> = (0..10).map(|i| Pair::text(&i.to_string(), "x")).collect();
        let a = draw(pairs.clone(), 4, 7);
        assert_eq!(a, draw(pairs.clone(), 4, 7));
        assert_ne!(a, draw(pairs.clone(), 4, 8));
        assert_eq!(a.len(), 4);
        let idx: Vec<usize> = a.iter().map(|p| p.input.parse().unwrap()).collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "{idx:?}");
        assert_eq!(draw(pairs, 20, 7).len(), 10);
    }

    #[test]
    fn the_most_common_answer_is_the_target() {
        let a: Vec<String> = ["2", "two", "2", "3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(most_common(&a), "2");
    }
}
