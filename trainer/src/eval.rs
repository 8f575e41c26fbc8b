//! Accuracy on a task's test split: first-token accuracy and exact match of the greedy answer
//! cut at the first newline (or the template's end marker, [`Template::cut_answer`]), for the
//! model prompted zero-shot, with `k` demonstrations (in-context learning), or zero-shot with
//! a trained [`Shift`].
use std::path::PathBuf;
use std::time::Instant;

use mimic_models::batch::{BatchDecoding, BatchLm};
use mimic_models::beam::{beam_search, BeamConfig, BeamLm};
use mimic_models::generate::{argmax, CausalLm};
use mimic_models::tokenizer::TextTokenizer;
use mimic_models::vlm::prompt::ImageTokens;
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::shift::Shift;
use crate::task::{start_token, Encoded, Task, Template};
use crate::torch_backend::{Shifts, TorchBatch, TorchLm, TorchModel};
use crate::torch_vlm::TaskImages;
use crate::{Result, TrainerError};

/// How the model is prompted.
pub enum Prompting<'a> {
    ZeroShot,
    /// `k` demonstrations per query, drawn from the training part.
    InContext(usize),
    /// `k` demonstrations per query chosen by RICES ([`crate::rices`]): each test query's
    /// training-part indices.
    Retrieved(usize, &'a [Vec<usize>]),
    /// No demonstrations; the shift applied.
    Shifted(&'a Shift),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResult {
    pub task: String,
    pub method: String,
    pub queries: usize,
    pub first_token_accuracy: f64,
    pub exact_match: f64,
    /// 95% Wilson intervals of the two accuracies ([`crate::stats::wilson`]).
    #[serde(default)]
    pub first_token_interval: (f64, f64),
    #[serde(default)]
    pub exact_match_interval: (f64, f64),
    pub trainable_params: i64,
    pub mean_prompt_tokens: f64,
    pub seconds: f64,
    /// Of `seconds`, the time spent in the image encoder (a compiled vision-language model's
    /// per-prompt encoding; 0 where images were encoded once beforehand, or there are none).
    #[serde(default)]
    pub encoder_seconds: f64,
}

/// One query's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// The prompt as the model saw it (decoded).
    pub prompt: String,
    pub input: String,
    pub expected: String,
    pub generated: String,
    pub first_token_correct: bool,
    pub exact: bool,
}

/// Greedy decoding until a newline appears in the text or `max_new` tokens; with `beam`, the
/// best hypothesis of a beam search (until an end-of-sequence token or `max_new` tokens),
/// its text cut at the first newline or the template's end marker.
fn answer<M>(
    lm: &mut M,
    tok: &TextTokenizer,
    template: &Template,
    prompt: &[u32],
    max_new: usize,
    beam: Option<&BeamConfig>,
) -> Result<(Vec<u32>, String)>
where
    M: CausalLm + BeamLm,
    TrainerError: From<<M as CausalLm>::Error> + From<<M as BeamLm>::Error>,
{
    if let Some(cfg) = beam {
        let cfg = BeamConfig {
            max_new_tokens: max_new,
            ..*cfg
        };
        let best = beam_search(lm, prompt, &cfg, tok.eos_ids())?;
        let ids: Vec<u32> = best
            .into_iter()
            .next()
            .map(|h| h.tokens)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !tok.eos_ids().contains(t))
            .collect();
        let text = tok.decode(&ids)?;
        return Ok((ids, template.cut_answer(&text).to_string()));
    }
    lm.reset();
    let mut logits = lm.extend(prompt)?;
    let mut ids = Vec::new();
    loop {
        let next = argmax(&logits);
        ids.push(next);
        let text = tok.decode(&ids)?;
        let cut = template.cut_answer(&text);
        if cut.len() < text.len() || ids.len() >= max_new || tok.eos_ids().contains(&next) {
            return Ok((ids, cut.to_string()));
        }
        logits = lm.extend(&[next])?;
    }
}

/// A vision-language model's prompts: how each `<image>` expands, and what hands the model a
/// prompt's images (the demonstrations' then the query's) before the prompt runs.
pub struct PromptImages<'f, M> {
    pub expansion: ImageTokens,
    pub set: SetImages<'f, M>,
}

/// Hands a model the image tokens of a prompt's images, in order.
pub type SetImages<'f, M> = Box<dyn FnMut(&mut M, &[&PathBuf]) -> Result<()> + 'f>;

/// Evaluates `prompting` on the test split with the trainer's forward (and, for a
/// vision-language model, the task's image tokens), `batch` queries at a time (one batch of
/// rows, left-padded; greedy or beam search as `decoding` says); `on_done` is called after
/// each batch.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &TorchModel,
    tok: &TextTokenizer,
    task: &Task,
    prompting: &Prompting,
    decoding: &Decoding,
    images: Option<&TaskImages>,
    batch: usize,
    on_done: impl FnMut(usize, usize),
) -> Result<(EvalResult, Vec<Answer>)> {
    let _guard = tch::no_grad_guard();
    let shifts = match prompting {
        Prompting::Shifted(s) => s.shifts(),
        _ => Shifts::default(),
    };
    let mut run = EvalRun::new(prompting, *decoding);
    if batch > 1 {
        run.method = format!("{} batch {batch}", run.method);
        let mut lm = TorchBatch::new(model, shifts, tok.pad_id().unwrap_or(0));
        let answer = |encs: &[Encoded]| -> Result<Vec<Vec<u32>>> {
            if let Some(images) = images {
                let paths: Vec<&PathBuf> = encs.iter().flat_map(|e| e.images.iter()).collect();
                lm.images = images.features(&paths)?.map(|f| (images.token_id, f));
            }
            let prompts: Vec<Vec<u32>> = encs.iter().map(Encoded::prompt).collect();
            answer_batch(&mut lm, tok, &task.template, &prompts, &run.decoding)
        };
        return evaluate_batched(
            tok,
            task,
            &run,
            images.map(|i| i.expansion),
            batch,
            model.config.max_position_embeddings,
            answer,
            on_done,
        );
    }
    let mut lm = TorchLm::with_shifts(model, shifts);
    let images = images.map(|images| PromptImages {
        expansion: images.expansion,
        set: Box::new(move |lm: &mut TorchLm, paths: &[&PathBuf]| {
            lm.images = images.features(paths)?.map(|f| (images.token_id, f));
            Ok(())
        }),
    });
    evaluate_lm(&mut lm, tok, task, &run, images, on_done)
}

impl EvalRun {
    /// The run of `prompting`: its name (`zero-shot`, `icl-k`, `rices-k`, the heads' method),
    /// trainable parameters, shots and demonstrations.
    pub fn new(prompting: &Prompting, decoding: Decoding) -> Self {
        let (method, trainable_params, shots, retrieved) = match prompting {
            Prompting::ZeroShot => ("zero-shot".to_string(), 0, 0, None),
            Prompting::InContext(k) => (format!("icl-{k}"), 0, *k, None),
            Prompting::Retrieved(k, lists) => (format!("rices-{k}"), 0, *k, Some(lists.to_vec())),
            Prompting::Shifted(s) => (s.method.name().to_string(), s.num_params(), 0, None),
        };
        EvalRun {
            method,
            trainable_params,
            shots,
            decoding,
            retrieved,
        }
    }
}

/// What an evaluation run is: its name in the table, and how the model is prompted.
pub struct EvalRun {
    pub method: String,
    pub trainable_params: i64,
    /// Demonstrations per query (0: zero-shot).
    pub shots: usize,
    pub decoding: Decoding,
    /// Each test query's demonstrations, as indices into the training part (RICES); drawn at
    /// random when `None`.
    pub retrieved: Option<Vec<Vec<usize>>>,
}

/// How answers are generated, and the seed of the demonstrations' draw.
#[derive(Debug, Clone, Copy)]
pub struct Decoding {
    /// New tokens per answer at most.
    pub max_new: usize,
    pub seed: u64,
    /// Beam search instead of greedy decoding.
    pub beam: Option<BeamConfig>,
}

/// Evaluates any causal LM (the trainer's, or a compiled model in ONNX Runtime) on the test
/// split, prompted as `run` says.
pub fn evaluate_lm<M: CausalLm + BeamLm>(
    lm: &mut M,
    tok: &TextTokenizer,
    task: &Task,
    run: &EvalRun,
    mut images: Option<PromptImages<'_, M>>,
    on_done: impl FnMut(usize, usize),
) -> Result<(EvalResult, Vec<Answer>)>
where
    TrainerError: From<<M as CausalLm>::Error> + From<<M as BeamLm>::Error>,
{
    let expansion = images.as_ref().map(|i| i.expansion);
    let max_positions = lm.max_positions();
    let max_new = run.decoding.max_new;
    let beam = run.decoding.beam;
    let answer_one = |encs: &[Encoded]| -> Result<Vec<(Vec<u32>, String)>> {
        let enc = &encs[0];
        if let Some(i) = images.as_mut() {
            let paths: Vec<&PathBuf> = enc.images.iter().collect();
            (i.set)(lm, &paths)?;
        }
        Ok(vec![answer(
            lm,
            tok,
            &task.template,
            &enc.prompt(),
            max_new,
            beam.as_ref(),
        )?])
    };
    evaluate_with(
        tok,
        task,
        run,
        expansion,
        1,
        max_positions,
        answer_one,
        on_done,
    )
}

/// Each prompt's new tokens, the prompts run as one batch: greedy until a newline, the
/// template's end marker, an end token or `max_new` tokens; with `decoding.beam`, the best
/// hypothesis of each prompt's beam search (as [`answer`] decodes one prompt).
pub fn answer_batch<M: BatchLm>(
    lm: &mut M,
    tok: &TextTokenizer,
    template: &Template,
    prompts: &[Vec<u32>],
    decoding: &Decoding,
) -> Result<Vec<Vec<u32>>>
where
    TrainerError: From<M::Error>,
{
    let beam = decoding.beam.map(|cfg| BeamConfig {
        max_new_tokens: decoding.max_new,
        ..cfg
    });
    let how = match &beam {
        Some(cfg) => BatchDecoding::Beam(cfg),
        None => BatchDecoding::Greedy {
            max_new: decoding.max_new,
        },
    };
    Ok(mimic_models::batch::answer_batch(
        lm,
        prompts,
        how,
        tok.eos_ids(),
        |_, toks| {
            tok.decode(toks)
                .is_ok_and(|t| template.cut_answer(&t).len() < t.len())
        },
    )?)
}

/// Evaluates on the test split `batch` queries at a time: `answer_batch` gets the queries'
/// encodings (their images in `images`) and returns each one's new tokens (greedy, or the
/// best beam); each answer is the text up to its first newline or the template's end marker.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_batched(
    tok: &TextTokenizer,
    task: &Task,
    run: &EvalRun,
    expansion: Option<ImageTokens>,
    batch: usize,
    max_positions: usize,
    mut answer_batch: impl FnMut(&[Encoded]) -> Result<Vec<Vec<u32>>>,
    on_done: impl FnMut(usize, usize),
) -> Result<(EvalResult, Vec<Answer>)> {
    let answer = |encs: &[Encoded]| -> Result<Vec<(Vec<u32>, String)>> {
        answer_batch(encs)?
            .into_iter()
            .map(|ids| {
                let ids: Vec<u32> = ids
                    .into_iter()
                    .filter(|t| !tok.eos_ids().contains(t))
                    .collect();
                let text = tok.decode(&ids)?;
                Ok((ids, task.template.cut_answer(&text).to_string()))
            })
            .collect()
    };
    evaluate_with(
        tok,
        task,
        run,
        expansion,
        batch,
        max_positions,
        answer,
        on_done,
    )
}

/// The evaluation loop: each query's prompt (demonstrations drawn in order), answered
/// `batch` at a time by `answer`, then scored.
#[allow(clippy::too_many_arguments)]
fn evaluate_with(
    tok: &TextTokenizer,
    task: &Task,
    run: &EvalRun,
    expansion: Option<ImageTokens>,
    batch: usize,
    max_positions: usize,
    mut answer: impl FnMut(&[Encoded]) -> Result<Vec<(Vec<u32>, String)>>,
    mut on_done: impl FnMut(usize, usize),
) -> Result<(EvalResult, Vec<Answer>)> {
    let t0 = Instant::now();
    let start = start_token(tok);
    let max_new = run.decoding.max_new;
    let mut rng = SplitMix64::new(run.decoding.seed);
    let mut encs = Vec::with_capacity(task.test.len());
    for (i, q) in task.test.iter().enumerate() {
        let demos = match (run.shots, &run.retrieved) {
            (0, _) => vec![],
            (_, Some(lists)) => lists[i].iter().map(|&j| task.train[j].clone()).collect(),
            (k, None) => task.demonstrations(q, k, &mut rng)?,
        };
        let enc = Encoded::with_image_tokens(tok, start, &task.template, &demos, q, expansion)?;
        let len = enc.prompt().len();
        if len + max_new > max_positions {
            return Err(TrainerError::Other(format!(
                "prompt of {len} tokens is longer than the model's context of {max_positions}"
            )));
        }
        encs.push(enc);
    }
    let (mut first, mut exact, mut prompt_tokens) = (0usize, 0usize, 0usize);
    let mut answers = Vec::with_capacity(task.test.len());
    for (c, chunk) in encs.chunks(batch.max(1)).enumerate() {
        let outs = answer(chunk)?;
        for (j, (enc, (ids, text))) in chunk.iter().zip(outs).enumerate() {
            let q = &task.test[c * batch.max(1) + j];
            let prompt = enc.prompt();
            prompt_tokens += prompt.len();
            let first_ok = ids.first() == enc.answer.first();
            let exact_ok = text.trim() == q.output.trim();
            first += first_ok as usize;
            exact += exact_ok as usize;
            answers.push(Answer {
                prompt: tok.decode(&prompt)?,
                input: q.input.clone(),
                expected: q.output.clone(),
                generated: text,
                first_token_correct: first_ok,
                exact: exact_ok,
            });
        }
        on_done(answers.len(), task.test.len());
    }
    let n = task.test.len().max(1) as f64;
    let interval = |k| crate::stats::wilson(k, task.test.len(), crate::stats::Z95);
    Ok((
        EvalResult {
            task: task
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
            method: run.method.clone(),
            queries: task.test.len(),
            first_token_accuracy: first as f64 / n,
            exact_match: exact as f64 / n,
            first_token_interval: interval(first),
            exact_match_interval: interval(exact),
            trainable_params: run.trainable_params,
            mean_prompt_tokens: prompt_tokens as f64 / n,
            seconds: t0.elapsed().as_secs_f64(),
            encoder_seconds: 0.0,
        },
        answers,
    ))
}
