//! `--dataset`: a benchmark in its official layout as a task (a support set drawn from its
//! training split for demonstrations and training, its evaluation split as the queries), and
//! the benchmark's own scoring of the answers. VQA data sets (VQAv2, OK-VQA, easy-VQA) are
//! scored by VQA accuracy (OK-VQA's answers stemmed first, as the published code does), the official scorer's and the published MimIC code's variant, and
//! their answers written as the official results file `[{question_id, answer}]`. MME (yes/no
//! questions) is scored as its official `calculation.py` does, per subtask with the
//! perception and cognition totals, its result files written one per subtask; SEED-Bench
//! (four-way choices, in MimIC's `choices` message after the question) by accuracy per dimension, an answer that is
//! no letter replaced by a seeded random one as the published MimIC code does. MME and SEED
//! have no training split: the support set is drawn from the questions and left out of the
//! queries.
// Scoring runs in `mimic eval`, which the deployment build (no `torch` feature) lacks.
#![cfg_attr(not(feature = "torch"), allow(dead_code))]

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mimic_models::datasets::captions::{read_karpathy, KarpathySplit};
use mimic_models::datasets::easy_vqa::{package_root, read_easy_vqa, EasyVqaSplit};
use mimic_models::datasets::mme::read_mme;
use mimic_models::datasets::seed::read_seed;
use mimic_models::datasets::vqa::{read_vqa, VqaSplit};
use mimic_models::datasets::{Dataset, MissingImages};
use mimic_models::rng::SplitMix64;
use mimic_models::task::{Pair, Task, Template};
use mimic_models::vlm::prompt::MimicTemplate;

/// The data sets `--dataset` takes.
pub const DATASETS: &[&str] = &[
    "easy-vqa",
    "vqav2",
    "okvqa",
    "coco",
    "flickr30k",
    "mme",
    "seed",
];

/// A benchmark named on the command line.
#[derive(clap::Args, Debug, Clone)]
pub struct DatasetArgs {
    /// A benchmark in its official layout instead of `--task`: easy-vqa (the installed PyPI
    /// package by default), vqav2, okvqa, coco, flickr30k (Karpathy splits), mme, seed.
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

/// The prompt template a data set takes by default: the published MimIC shot of the model's
/// architecture (caption shots for COCO and Flickr30k, VQA shots for the rest).
pub fn default_template(dataset: Dataset, arch: mimic_models::vlm::VlmArchitecture) -> String {
    let t = MimicTemplate::for_architecture(arch);
    match dataset {
        Dataset::Coco | Dataset::Flickr30k => t.caption_task_template(),
        _ => t.vqa_task_template(),
    }
}

/// One evaluation question's ground truth, in the order of the task's test pairs.
#[derive(Debug, Clone)]
pub struct Question {
    pub question_id: u64,
    pub answers: Vec<String>,
    pub question_type: Option<String>,
    pub answer_type: Option<String>,
}

/// An MME question's ground truth.
#[derive(Debug, Clone)]
pub struct MmeQuestion {
    pub subtask: mimic_metrics::mme::MmeSubtask,
    /// The image's file name (the official result files name it).
    pub image: String,
    pub question: String,
    pub yes: bool,
}

/// A SEED-Bench question's ground truth.
#[derive(Debug, Clone)]
pub struct SeedQuestion {
    pub question_id: String,
    pub dimension: mimic_metrics::seed::SeedDimension,
    pub answer: mimic_metrics::seed::Choice,
}

/// An image's reference captions.
#[derive(Debug, Clone)]
pub struct CaptionRefs {
    pub image_id: u64,
    pub captions: Vec<String>,
}

/// What a benchmark scores, question by question in the order of the task's test pairs.
pub enum Scoring {
    Vqa(Vec<Question>),
    Captions(Vec<CaptionRefs>),
    Mme(Vec<MmeQuestion>),
    Seed(Vec<SeedQuestion>),
}

/// A benchmark loaded as a task, with its scoring data.
pub struct Benchmark {
    pub dataset: Dataset,
    pub scoring: Scoring,
    /// The seed of SEED-Bench's random answers.
    pub seed: u64,
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
    /// `limit` queries when given, and its scoring data. SEED-Bench's questions carry the
    /// `choices` message of `arch`'s MimIC template ([`MimicTemplate::question_with_choices`]).
    pub fn load(
        &self,
        dataset: Dataset,
        template: &str,
        arch: mimic_models::vlm::VlmArchitecture,
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
        // The folder the data set's files are under (easy-VQA's default is the package's).
        let root = || {
            self.root
                .as_ref()
                .with_context(|| format!("--dataset {} needs --root DIR", dataset.name()))
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
                (
                    support,
                    test,
                    Scoring::Vqa(questions),
                    train.skipped_missing,
                )
            }
            Dataset::Coco | Dataset::Flickr30k => {
                let root = root()?;
                // As the published MimIC code: support from the train split, queries from val.
                let train = read_karpathy(dataset, root, &[KarpathySplit::Train], missing)?;
                let val = read_karpathy(dataset, root, &[KarpathySplit::Val], missing)?;
                let caption_pair = |captions: &[String], image: &Path| Pair {
                    input: String::new(),
                    output: captions.first().cloned().unwrap_or_default(),
                    images: vec![image.to_path_buf()],
                };
                let support = train
                    .samples
                    .iter()
                    .map(|s| caption_pair(&s.captions, &s.image))
                    .collect();
                let test = val
                    .samples
                    .iter()
                    .map(|s| caption_pair(&s.captions, &s.image))
                    .collect();
                let refs = val
                    .samples
                    .iter()
                    .map(|s| CaptionRefs {
                        image_id: s.image_id,
                        captions: s.captions.clone(),
                    })
                    .collect();
                (
                    support,
                    test,
                    Scoring::Captions(refs),
                    train.skipped_missing + val.skipped_missing,
                )
            }
            Dataset::Mme => {
                let root = root()?;
                let read = read_mme(root, missing)?;
                let mut rows = Vec::with_capacity(read.samples.len());
                for s in &read.samples {
                    let subtask = mimic_metrics::mme::MmeSubtask::from_name(&s.category)?;
                    let answer = if s.answer_yes { "Yes" } else { "No" };
                    let image = s
                        .image
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    rows.push((
                        pair(&s.question, answer, &s.image),
                        MmeQuestion {
                            subtask,
                            image,
                            question: s.question.clone(),
                            yes: s.answer_yes,
                        },
                    ));
                }
                let (support, rows) = split_support(rows, self.support, seed, |q: &MmeQuestion| {
                    format!("{}/{}", q.subtask.name(), q.image)
                });
                let (test, questions): (Vec<Pair>, Vec<MmeQuestion>) = rows.into_iter().unzip();
                (support, test, Scoring::Mme(questions), read.skipped_missing)
            }
            Dataset::Seed => {
                let root = root()?;
                let read = read_seed(root, missing)?;
                let mut rows = Vec::with_capacity(read.samples.len());
                for s in &read.samples {
                    let dimension =
                        mimic_metrics::seed::SeedDimension::from_id(s.question_type_id)?;
                    let letter = s.answer.to_string();
                    let answer =
                        mimic_metrics::seed::Choice::from_letter(&letter).with_context(|| {
                            format!("SEED question {}: answer {letter}", s.question_id)
                        })?;
                    let question = MimicTemplate::for_architecture(arch)
                        .question_with_choices(&s.question, &s.choices);
                    rows.push((
                        pair(&question, &letter, &s.image),
                        SeedQuestion {
                            question_id: s.question_id.clone(),
                            dimension,
                            answer,
                        },
                    ));
                }
                let (support, rows) =
                    split_support(rows, self.support, seed, |q: &SeedQuestion| {
                        q.question_id.clone()
                    });
                let (test, questions): (Vec<Pair>, Vec<SeedQuestion>) = rows.into_iter().unzip();
                (
                    support,
                    test,
                    Scoring::Seed(questions),
                    read.skipped_missing,
                )
            }
            Dataset::VqaV2 | Dataset::OkVqa => {
                let root = root()?;
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
                    Scoring::Vqa(questions),
                    train.skipped_missing + val.skipped_missing,
                )
            }
        };
        if skipped > 0 {
            eprintln!(
                "{}: {skipped} entries left out, their image missing",
                dataset.name()
            );
        }
        let mut test: Vec<Pair> = test;
        let mut scoring = questions;
        if let Some(n) = limit {
            // MME's questions come in pairs, one image each: keep whole pairs.
            let n = match dataset {
                Dataset::Mme => n - n % 2,
                _ => n,
            };
            test.truncate(n);
            match &mut scoring {
                Scoring::Vqa(q) => q.truncate(n),
                Scoring::Captions(q) => q.truncate(n),
                Scoring::Mme(q) => q.truncate(n),
                Scoring::Seed(q) => q.truncate(n),
            }
        }
        if test.is_empty() {
            bail!("{}: no evaluation questions", dataset.name());
        }
        // MME's and SEED's support sets were split off already.
        let train = match dataset {
            Dataset::Mme | Dataset::Seed => support,
            _ => draw(support, self.support, seed),
        };
        if train.is_empty() {
            bail!("{}: no training pairs for the support set", dataset.name());
        }
        let task = Task {
            path: PathBuf::from(dataset.name()),
            train,
            test,
            template: Template::new(template)?,
        };
        Ok((
            task,
            Benchmark {
                dataset,
                scoring,
                seed,
            },
        ))
    }
}

/// Rows drawn with `seed` as the support set, whole groups at a time (rows with the same
/// `group` key: an MME image's two questions stay together, so that acc+ can pair them),
/// until it holds at least `n` rows; the rest, in file order, are the queries (at least one
/// group is left).
fn split_support<T>(
    rows: Vec<(Pair, T)>,
    n: usize,
    seed: u64,
    group: impl Fn(&T) -> String,
) -> (Vec<Pair>, Vec<(Pair, T)>) {
    let mut seen = std::collections::HashSet::new();
    let keys: Vec<String> = rows
        .iter()
        .map(|(_, t)| group(t))
        .filter(|k| seen.insert(k.clone()))
        .collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let mut chosen = std::collections::HashSet::new();
    let mut taken = 0;
    for &i in order.iter().take(keys.len().saturating_sub(1)) {
        if taken >= n {
            break;
        }
        taken += rows.iter().filter(|(_, t)| group(t) == keys[i]).count();
        chosen.insert(keys[i].clone());
    }
    let (mut support, mut rest) = (Vec::new(), Vec::new());
    for row in rows {
        if chosen.contains(&group(&row.1)) {
            support.push(row.0);
        } else {
            rest.push(row);
        }
    }
    (support, rest)
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

/// One method's score on a benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scores {
    pub dataset: String,
    pub method: String,
    pub questions: usize,
    #[serde(flatten)]
    pub score: Score,
}

/// A benchmark's own figures.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Score {
    /// VQA accuracy (%): the official scorer's report and MimIC's overall figure.
    Vqa {
        official: mimic_metrics::vqa::VqaReport,
        mimic: f64,
    },
    /// CIDEr-D as pycocoevalcap computes it (both sides PTB-tokenized first).
    Cider(mimic_metrics::cider::CiderScores),
    /// MME as the official tool scores it.
    Mme(mimic_metrics::mme::MmeReport),
    /// SEED-Bench accuracy.
    Seed(mimic_metrics::seed::SeedReport),
}

impl Scores {
    /// The headline figure and the details, for the table.
    pub fn summary(&self) -> (String, String) {
        match &self.score {
            Score::Vqa { official, mimic } => {
                let types: Vec<String> = official
                    .per_answer_type
                    .iter()
                    .map(|(t, v)| format!("{t} {v:.2}"))
                    .collect();
                (
                    format!("VQA acc {:.2} (MimIC {mimic:.2})", official.overall),
                    types.join(", "),
                )
            }
            Score::Cider(c) => (
                format!("CIDEr-D {:.4}", c.corpus),
                format!("{} images", c.per_image.len()),
            ),
            Score::Mme(r) => (
                format!(
                    "perception {:.2}, cognition {:.2}",
                    r.perception, r.cognition
                ),
                format!("{} subtasks, accuracy {:.3}", r.subtasks.len(), r.accuracy),
            ),
            Score::Seed(r) => {
                let dims: Vec<String> = r
                    .dimensions
                    .iter()
                    .map(|d| format!("{} {:.1}", d.dimension.id(), d.accuracy))
                    .collect();
                (
                    format!("accuracy {:.2}", r.overall),
                    format!("{} random; {}", r.random_fallbacks, dims.join(", ")),
                )
            }
        }
    }
}

impl Benchmark {
    /// A generated VQA answer as the published code scores it: [`postprocess`]ed, then, for
    /// OK-VQA, stemmed as its annotations were (`OKVQAStemmer`: nltk's tokenizer and tagger,
    /// WordNet's verb lemmas, inflection's singular; [`mimic_metrics::OkVqaStemmer`]).
    pub fn vqa_answer(&self, generated: &str) -> String {
        let answer = postprocess(generated);
        match self.dataset {
            Dataset::OkVqa => mimic_metrics::OkVqaStemmer::new().stem(&answer),
            _ => answer,
        }
    }

    /// Scores `generated` (one per question, in order).
    pub fn score(&self, method: &str, generated: &[String]) -> Result<Scores> {
        use mimic_metrics::vqa::{vqa_accuracy, VqaQuestion, VqaVariant};
        let (questions, score) = match &self.scoring {
            Scoring::Vqa(qs) => {
                let questions: Vec<VqaQuestion> = qs
                    .iter()
                    .zip(generated)
                    .map(|(q, g)| VqaQuestion {
                        prediction: self.vqa_answer(g),
                        answers: q.answers.clone(),
                        question_type: q.question_type.clone(),
                        answer_type: q.answer_type.clone(),
                    })
                    .collect();
                let official = vqa_accuracy(&questions, VqaVariant::Official)?;
                let mimic = vqa_accuracy(&questions, VqaVariant::Mimic)?.overall;
                (questions.len(), Score::Vqa { official, mimic })
            }
            Scoring::Captions(refs) => {
                use mimic_metrics::ptb::ptb_tokenize;
                // pycocoevalcap tokenizes the references (image by image) and the hypotheses
                // in two passes.
                let flat: Vec<&String> = refs.iter().flat_map(|r| &r.captions).collect();
                let mut tokenized = ptb_tokenize(&flat).into_iter();
                let references: Vec<Vec<String>> = refs
                    .iter()
                    .map(|r| tokenized.by_ref().take(r.captions.len()).collect())
                    .collect();
                let hyps: Vec<String> = generated.iter().map(|g| postprocess(g)).collect();
                let hypotheses = ptb_tokenize(&hyps);
                let scores = mimic_metrics::cider::cider_d(&hypotheses, &references)?;
                (refs.len(), Score::Cider(scores))
            }
            Scoring::Mme(qs) => {
                let results = self.mme_results(qs, generated);
                let report = mimic_metrics::mme::mme_report(
                    &results,
                    mimic_metrics::mme::MmeVariant::Official,
                )?;
                (qs.len(), Score::Mme(report))
            }
            Scoring::Seed(qs) => {
                let items: Vec<mimic_metrics::seed::SeedGeneration> = qs
                    .iter()
                    .zip(generated)
                    .map(|(q, g)| mimic_metrics::seed::SeedGeneration {
                        question_id: q.question_id.clone(),
                        dimension: q.dimension,
                        answer: q.answer,
                        generation: g.clone(),
                    })
                    .collect();
                let (report, _) =
                    mimic_metrics::seed::seed_accuracy_from_generations(&items, self.seed)?;
                (qs.len(), Score::Seed(report))
            }
        };
        Ok(Scores {
            dataset: self.dataset.name().to_string(),
            method: method.to_string(),
            questions,
            score,
        })
    }

    fn mme_results(
        &self,
        qs: &[MmeQuestion],
        generated: &[String],
    ) -> mimic_metrics::mme::MmeResults {
        let mut results = mimic_metrics::mme::MmeResults::new();
        for (q, g) in qs.iter().zip(generated) {
            results
                .entry(q.subtask)
                .or_default()
                .push(mimic_metrics::mme::MmeRecord {
                    image: q.image.clone(),
                    question: q.question.clone(),
                    gt: if q.yes {
                        mimic_metrics::mme::YesNo::Yes
                    } else {
                        mimic_metrics::mme::YesNo::No
                    },
                    prediction: g.trim().to_string(),
                });
        }
        results
    }

    /// The official results: VQA `[{question_id, answer}]` and SEED `[{question_id,
    /// prediction}]` JSON files at `path`, written under a temporary name and renamed; MME one
    /// `{subtask}.txt` per subtask in the folder `path` without its extension.
    pub fn write_results(&self, path: &Path, generated: &[String]) -> Result<PathBuf> {
        let rows: Vec<serde_json::Value> = match &self.scoring {
            Scoring::Vqa(qs) => qs
                .iter()
                .zip(generated)
                .map(|(q, g)| serde_json::json!({"question_id": q.question_id, "answer": self.vqa_answer(g)}))
                .collect(),
            Scoring::Seed(qs) => qs
                .iter()
                .zip(generated)
                .map(|(q, g)| serde_json::json!({"question_id": q.question_id, "prediction": g.trim()}))
                .collect(),
            Scoring::Captions(refs) => refs
                .iter()
                .zip(generated)
                .map(|(r, g)| serde_json::json!({"image_id": r.image_id, "caption": postprocess(g)}))
                .collect(),
            Scoring::Mme(qs) => {
                let dir = path.with_extension("");
                mimic_metrics::mme::write_results_dir(&dir, &self.mme_results(qs, generated))?;
                return Ok(dir);
            }
        };
        let text = serde_json::to_string(&rows)?;
        mimic_models::files::write_atomically(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path.to_path_buf())
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
    fn okvqa_answers_are_stemmed_and_vqav2_answers_are_not() {
        let bench = |dataset| Benchmark {
            dataset,
            scoring: Scoring::Vqa(vec![]),
            seed: 0,
        };
        // Cut, then stemmed: a plural noun singular, an -ing word to its verb, a manual match.
        assert_eq!(
            bench(Dataset::OkVqa).vqa_answer(" dogs running\nQuestion: x"),
            "dog run"
        );
        assert_eq!(bench(Dataset::OkVqa).vqa_answer("weddings"), "wed");
        assert_eq!(
            bench(Dataset::VqaV2).vqa_answer(" dogs running\nQuestion: x"),
            "dogs running"
        );
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
