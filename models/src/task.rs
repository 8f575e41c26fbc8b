//! In-context learning tasks: a JSON list of `{input, output}` pairs, a prompt template, a
//! seeded train/test split, and prompts with demonstrations drawn from the training part.
//!
//! A pair for a vision-language model also names its images, `"images": ["cat.png"]` (paths
//! relative to the task file), one per `<image>` in its input; the demonstrations then carry
//! their images into the prompt as the query does.
//!
//! Five task sets ship inside the binary ([`BUILTIN_TASKS`], from `data/icl-tasks/`): a task
//! is named by a file path or by one of their names.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::tokenizer::TextTokenizer;
use crate::{ModelError, Result};

pub use crate::prompt::DEFAULT_TEMPLATE;

/// The task sets of `data/icl-tasks/` (MIT, from the function_vectors project; provenance in
/// that folder's README), embedded so that a binary needs no data folder beside it.
pub const BUILTIN_TASKS: [(&str, &str); 5] = [
    (
        "country-capital",
        include_str!("../../data/icl-tasks/country-capital.json"),
    ),
    ("antonym", include_str!("../../data/icl-tasks/antonym.json")),
    ("synonym", include_str!("../../data/icl-tasks/synonym.json")),
    (
        "english-french",
        include_str!("../../data/icl-tasks/english-french.json"),
    ),
    (
        "singular-plural",
        include_str!("../../data/icl-tasks/singular-plural.json"),
    ),
];

/// The names of the built-in task sets.
pub fn builtin_task_names() -> Vec<&'static str> {
    BUILTIN_TASKS.iter().map(|(n, _)| *n).collect()
}

/// A task's pairs as JSON text: the file at `spec` if there is one, else the built-in task set
/// of that name.
pub fn read_task_text(spec: &Path) -> Result<String> {
    if spec.exists() {
        return std::fs::read_to_string(spec).map_err(|e| ModelError::io(spec, e));
    }
    let name = spec.to_str().unwrap_or_default();
    match BUILTIN_TASKS.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => Ok(text.to_string()),
        None => Err(ModelError::Other(format!(
            "{}: no such file, nor a built-in task set ({})",
            spec.display(),
            builtin_task_names().join(", ")
        ))),
    }
}

/// The short name of a task: a built-in task's name, or a file's stem.
pub fn task_name(spec: &Path) -> String {
    spec.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub input: String,
    pub output: String,
    /// The images of the input's `<image>` placeholders, in order (resolved against the task
    /// file's folder when loaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<PathBuf>,
}

impl Pair {
    /// A text pair.
    pub fn text(input: &str, output: &str) -> Self {
        Pair {
            input: input.into(),
            output: output.into(),
            images: vec![],
        }
    }
}

/// A task split into training pairs (queries and demonstrations) and held-out test pairs.
#[derive(Debug, Clone)]
pub struct Task {
    pub path: PathBuf,
    pub train: Vec<Pair>,
    pub test: Vec<Pair>,
    pub template: Template,
}

/// A template with `{input}` and `{output}`, e.g. `"Q: {input}\nA: {output}\n\n"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub text: String,
}

impl Template {
    pub fn new(text: &str) -> Result<Self> {
        let (i, o) = (text.find("{input}"), text.find("{output}"));
        match (i, o) {
            (Some(i), Some(o)) if i < o => Ok(Template {
                text: text.to_string(),
            }),
            _ => Err(ModelError::Other(format!(
                "template {text:?} must contain {{input}} and then {{output}}"
            ))),
        }
    }

    /// What ends an answer besides a newline: the template's text after `{output}` up to its
    /// first line break, when there is any (`<end_of_outterance>` in MimIC's Idefics2 shots;
    /// `None` for `Q: {input}\nA: {output}\n\n`).
    pub fn answer_end(&self) -> Option<&str> {
        let (_, tail) = self.text.split_once("{output}").expect("checked in new");
        let line = tail.split('\n').next().unwrap_or_default().trim();
        (!line.is_empty()).then_some(line)
    }

    /// What follows the answer in a demonstration, up to and including its first line break
    /// (`\n` for `Q: {input}\nA: {output}\n\n`, `<end_of_outterance>\n` for MimIC's
    /// Idefics2 shots): what a model must write to end an answer.
    pub fn answer_tail(&self) -> &str {
        let (_, tail) = self.text.split_once("{output}").expect("checked in new");
        tail.find('\n').map_or(tail, |i| &tail[..=i])
    }

    /// `generated` up to the first newline or [`Template::answer_end`], whichever comes first;
    /// an end marker that generation began but had no tokens left to finish (the text ends in
    /// a prefix of it) is cut too.
    pub fn cut_answer<'t>(&self, generated: &'t str) -> &'t str {
        let mut text = generated.split('\n').next().unwrap_or_default();
        if let Some(end) = self.answer_end() {
            text = text.split(end).next().unwrap_or_default();
            if let Some(k) = (1..end.len().min(text.len() + 1))
                .rev()
                .find(|&k| end.is_char_boundary(k) && text.ends_with(&end[..k]))
            {
                text = &text[..text.len() - k];
            }
        }
        text
    }

    /// A whole demonstration.
    pub fn demonstration(&self, p: &Pair) -> String {
        self.text
            .replace("{input}", &p.input)
            .replace("{output}", &p.output)
    }

    /// The query (up to the answer, trailing spaces moved to the answer so BPE sees
    /// `" Paris"`), the answer, and what follows it (`"\n\n"`).
    pub fn query_answer(&self, p: &Pair) -> (String, String) {
        let (before, _) = self.text.split_once("{output}").expect("checked in new");
        let prefix = before.replace("{input}", &p.input);
        let trimmed = prefix.trim_end_matches(' ');
        let spaces = &prefix[trimmed.len()..];
        (trimmed.to_string(), format!("{spaces}{}", p.output))
    }
}

impl Task {
    /// Reads a task (a file, or a built-in task set's name: [`read_task_text`]) and splits it:
    /// `test_size` pairs held out (at most all but one), the rest for training, shuffled with
    /// `seed`.
    pub fn load(path: &Path, template: Template, test_size: usize, seed: u64) -> Result<Self> {
        Self::from_text(&read_task_text(path)?, path, template, test_size, seed)
    }

    /// [`Task::load`] on a task's JSON text; `path` names it in errors, and relative image
    /// paths are taken from its folder.
    pub fn from_text(
        text: &str,
        path: &Path,
        template: Template,
        test_size: usize,
        seed: u64,
    ) -> Result<Self> {
        let pairs: Vec<Pair> = serde_json::from_str(text).map_err(|e| {
            ModelError::Other(format!(
                "{}: not a JSON list of {{\"input\", \"output\"}} pairs: {e}",
                path.display()
            ))
        })?;
        if pairs.len() < 2 {
            return Err(ModelError::Other(format!(
                "{}: {} pairs; a task needs at least 2 (one to train on, one to test)",
                path.display(),
                pairs.len()
            )));
        }
        if let Some((i, _)) = pairs
            .iter()
            .enumerate()
            .find(|(_, p)| p.input.trim().is_empty() || p.output.trim().is_empty())
        {
            return Err(ModelError::Other(format!(
                "{}: pair {i} has an empty input or output",
                path.display()
            )));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut pairs = pairs;
        for (i, p) in pairs.iter_mut().enumerate() {
            let placeholders = crate::vlm::prompt::count_image_placeholders(&p.input);
            if placeholders != p.images.len() {
                return Err(ModelError::Other(format!(
                    "{}: pair {i} has {placeholders} <image> placeholders in its input but {} \
                     images",
                    path.display(),
                    p.images.len()
                )));
            }
            for image in &mut p.images {
                if image.is_relative() {
                    *image = base.join(&*image);
                }
                if !image.is_file() {
                    return Err(ModelError::Other(format!(
                        "{}: pair {i}: image {} not found",
                        path.display(),
                        image.display()
                    )));
                }
            }
        }
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        SplitMix64::new(seed).shuffle(&mut order);
        // Hold out up to `test_size`, always leaving at least one pair to train on; whether
        // the rest can supply the shots is checked where demonstrations are drawn.
        let n_test = test_size.min(pairs.len() - 1).max(1);
        let test = order[..n_test].iter().map(|&i| pairs[i].clone()).collect();
        let train = order[n_test..].iter().map(|&i| pairs[i].clone()).collect();
        Ok(Task {
            path: path.to_path_buf(),
            train,
            test,
            template,
        })
    }

    /// `k` demonstrations from the training part, never the query itself.
    pub fn demonstrations(
        &self,
        query: &Pair,
        k: usize,
        rng: &mut SplitMix64,
    ) -> Result<Vec<Pair>> {
        self.demonstrations_excluding(&[query], k, rng)
    }

    /// `k` demonstrations from the training part, none of them one of `queries`.
    pub fn demonstrations_excluding(
        &self,
        queries: &[&Pair],
        k: usize,
        rng: &mut SplitMix64,
    ) -> Result<Vec<Pair>> {
        let pool: Vec<&Pair> = self.train.iter().filter(|p| !queries.contains(p)).collect();
        if k > pool.len() {
            return Err(ModelError::Other(format!(
                "{}: {k} shots asked for but the training part holds {} other pairs",
                self.path.display(),
                pool.len()
            )));
        }
        let mut idx: Vec<usize> = (0..pool.len()).collect();
        rng.shuffle(&mut idx);
        Ok(idx[..k].iter().map(|&i| pool[i].clone()).collect())
    }
}

/// Token ids of one example: a shared start token, the demonstrations, the query and the answer;
/// and the images of its `<image>` token runs, the demonstrations' first.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub start: Vec<u32>,
    pub demos: Vec<u32>,
    pub query: Vec<u32>,
    pub answer: Vec<u32>,
    /// The demonstrations' images, then the query's.
    pub images: Vec<PathBuf>,
    /// How many of `images` are the demonstrations'.
    pub demo_images: usize,
}

impl Encoded {
    /// Encodes pieces separately so the query and answer ids are the same with or without
    /// demonstrations (the teacher and the student then see identical query tokens).
    pub fn new(
        tok: &TextTokenizer,
        start: Option<u32>,
        template: &Template,
        demos: &[Pair],
        query: &Pair,
    ) -> Result<Self> {
        Self::with_image_tokens(tok, start, template, demos, query, None)
    }

    /// [`Encoded::new`] for a vision-language model: each `<image>` expanded into the model's
    /// image token run before tokenizing.
    pub fn with_image_tokens(
        tok: &TextTokenizer,
        start: Option<u32>,
        template: &Template,
        demos: &[Pair],
        query: &Pair,
        image_tokens: Option<crate::vlm::prompt::ImageTokens>,
    ) -> Result<Self> {
        let expand = |text: String| -> Result<String> {
            match image_tokens {
                None => Ok(text),
                Some(t) => t
                    .expand(&text)
                    .map_err(|e| ModelError::Other(e.to_string())),
            }
        };
        let text: String = demos.iter().map(|d| template.demonstration(d)).collect();
        let (q, a) = template.query_answer(query);
        let images: Vec<PathBuf> = demos
            .iter()
            .chain([query])
            .flat_map(|p| p.images.iter().cloned())
            .collect();
        Ok(Encoded {
            start: start.into_iter().collect(),
            demos: if text.is_empty() {
                vec![]
            } else {
                tok.encode(&expand(text)?)?
            },
            query: tok.encode(&expand(q)?)?,
            answer: tok.encode(&a)?,
            demo_images: images.len() - query.images.len(),
            images,
        })
    }

    /// Start, demonstrations and query: what a model is prompted with.
    pub fn prompt(&self) -> Vec<u32> {
        [&self.start[..], &self.demos, &self.query].concat()
    }

    /// The prompt followed by the answer (training sequences).
    pub fn full(&self) -> Vec<u32> {
        [self.prompt(), self.answer.clone()].concat()
    }

    /// Number of query and answer positions (the positions the alignment loss compares).
    pub fn query_answer_len(&self) -> usize {
        self.query.len() + self.answer.len()
    }
}

/// The start token shared by every sequence: `<|endoftext|>` when the vocabulary has it,
/// else the tokenizer's BOS. Position 0 carries massive activations (an attention sink); a
/// shared first token keeps it out of the teacher/student mismatch.
pub fn start_token(tok: &TextTokenizer) -> Option<u32> {
    tok.token_to_id("<|endoftext|>").or(tok.bos_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_end_at_a_newline_or_the_templates_end_marker() {
        let plain = Template::new(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(plain.answer_end(), None);
        assert_eq!(plain.answer_tail(), "\n");
        assert_eq!(plain.cut_answer(" Paris\nQ: x"), " Paris");
        let idefics2 = Template::new(
            "Question: {input}<end_of_outterance>\nAnswer: {output}<end_of_outterance>\n",
        )
        .unwrap();
        assert_eq!(idefics2.answer_end(), Some("<end_of_outterance>"));
        assert_eq!(idefics2.answer_tail(), "<end_of_outterance>\n");
        assert_eq!(
            idefics2.cut_answer(" yes<end_of_outterance>\nQuestion"),
            " yes"
        );
        assert_eq!(
            idefics2.cut_answer(" no<end_of"),
            " no",
            "an unfinished marker"
        );
        assert_eq!(idefics2.cut_answer(" a < b"), " a < b", "not at the end");
    }

    #[test]
    fn template_moves_the_space_to_the_answer() {
        let t = Template::new(DEFAULT_TEMPLATE).unwrap();
        let p = Pair::text("France", "Paris");
        assert_eq!(t.demonstration(&p), "Q: France\nA: Paris\n\n");
        assert_eq!(
            t.query_answer(&p),
            ("Q: France\nA:".into(), " Paris".into())
        );
        assert!(Template::new("{output} then {input}").is_err());
        assert!(Template::new("no fields").is_err());
    }

    #[test]
    fn builtin_task_sets_load_by_name() {
        let t = Template::new(DEFAULT_TEMPLATE).unwrap();
        for name in builtin_task_names() {
            let task = Task::load(Path::new(name), t.clone(), 100, 0).unwrap();
            assert_eq!(task.test.len(), 100, "{name}");
            assert!(task.train.len() >= 97, "{name}: {}", task.train.len());
        }
        let cc = Task::load(Path::new("country-capital"), t.clone(), 100, 0).unwrap();
        assert_eq!(cc.train.len() + cc.test.len(), 197);
        let err = Task::load(Path::new("no-such-task"), t, 100, 0).unwrap_err();
        assert!(err.to_string().contains("country-capital"), "{err}");
    }
}
