//! Text tokenizers: a Hugging Face `tokenizer.json`, or the byte-level BPE tokenizer that a GGUF
//! file describes in its metadata, both as a [`tokenizers::Tokenizer`] plus the special ids
//! (BOS, end-of-generation ids, padding) and the chat template.
//!
//! A GGUF tokenizer is rebuilt from llama.cpp's keys:
//!
//! - `tokenizer.ggml.model`: only `"gpt2"` (byte-level BPE) is supported;
//! - `tokenizer.ggml.tokens` / `tokenizer.ggml.merges` (`"a b"` strings): the BPE model;
//! - `tokenizer.ggml.token_type`: tokens of type 3 (control, e.g. `<|im_start|>`) become added
//!   special tokens and tokens of type 4 (user-defined) plain added tokens, so both are matched
//!   whole in the text, as llama.cpp and transformers do;
//! - `tokenizer.ggml.pre`: how text is split before BPE (see [`PreTokenizerKind`]);
//! - `tokenizer.ggml.{bos,eos,eot,eom,padding}_token_id`, `tokenizer.ggml.add_{bos,eos}_token`
//!   and `tokenizer.chat_template`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, MetaValue};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Tokens that end generation in the chat formats llama.cpp knows; like llama.cpp, a vocabulary
/// that has one of these as a control token stops on it as well as on its EOS token.
const END_OF_GENERATION_TOKENS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
];

/// How a GGUF byte-level vocabulary splits text before BPE (`tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizerKind {
    /// GPT-2's regex (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`):
    /// `"gpt2"`, `"gpt-2"`, `"default"` or no key.
    Gpt2,
    /// Every digit on its own, then the GPT-2 regex: `"smollm"` (as SmolLM2's own
    /// `tokenizer.json` and llama.cpp do).
    SmolLm,
}

impl PreTokenizerKind {
    /// The kind for a `tokenizer.ggml.pre` value, `None` when it is not supported.
    pub fn from_gguf_name(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("default" | "gpt2" | "gpt-2") => Some(PreTokenizerKind::Gpt2),
            Some("smollm") => Some(PreTokenizerKind::SmolLm),
            Some(_) => None,
        }
    }

    fn build(self) -> PreTokenizerWrapper {
        // ByteLevel(add_prefix_space = false, trim_offsets = true, use_regex = true): maps bytes
        // to the printable byte-level alphabet after splitting with the GPT-2 regex.
        let byte_level = ByteLevel::new(false, true, true);
        match self {
            PreTokenizerKind::Gpt2 => byte_level.into(),
            PreTokenizerKind::SmolLm => {
                Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
            }
        }
    }
}

/// A tokenizer with the special ids a generator needs.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
    vocab_size: usize,
    /// One past the largest id; decoding a larger id is an error.
    id_limit: u32,
    source: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn tok_error(path: &Path, msg: impl Into<String>) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads an optional JSON file next to a tokenizer: `Ok(None)` when absent, an error when present
/// but unreadable.
fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ModelError::format(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::io(path, e)),
    }
}

/// A special token in `tokenizer_config.json`: a string, or an object with `content`.
fn token_content(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// An id or a list of ids (`eos_token_id` in config.json / generation_config.json).
fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .into_iter()
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

/// What the tokenizers crate checks when it builds a template post-processor but not when it
/// reads one, and then panics on at the first encode: every special token a template names is
/// in its `special_tokens`, and the single-sequence template uses no `$B`. Nested `Sequence`
/// post-processors are checked too.
fn check_templates(pp: &Value) -> std::result::Result<(), String> {
    match pp.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => {
            let specials = pp.get("special_tokens").and_then(Value::as_object);
            for key in ["single", "pair"] {
                let pieces = pp.get(key).and_then(Value::as_array).into_iter().flatten();
                for piece in pieces {
                    let special = piece.get("SpecialToken").and_then(|t| t.get("id"));
                    if let Some(id) = special.and_then(Value::as_str) {
                        if !specials.is_some_and(|s| s.contains_key(id)) {
                            return Err(format!(
                                "the {key} template names special token {id:?}, which \
                                 special_tokens lacks"
                            ));
                        }
                    }
                    let sequence = piece.get("Sequence").and_then(|t| t.get("id"));
                    if key == "single" && sequence.and_then(Value::as_str) == Some("B") {
                        return Err("the single template uses the second sequence $B".into());
                    }
                }
            }
            Ok(())
        }
        Some("Sequence") => pp
            .get("processors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .try_for_each(check_templates),
        _ => Ok(()),
    }
}

fn id_limit(tok: &Tokenizer) -> u32 {
    tok.get_vocab(true)
        .values()
        .max()
        .map_or(0, |&m| m.saturating_add(1))
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

impl TextTokenizer {
    /// Loads a Hugging Face `tokenizer.json`. The special ids and the chat template come from the
    /// files beside it when present: `tokenizer_config.json` (`bos_token`, `eos_token`,
    /// `pad_token`, `add_bos_token`, `add_eos_token`, `chat_template`), `chat_template.jinja`,
    /// `config.json` and `generation_config.json` (`bos_token_id`, `eos_token_id`).
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| tok_error(path, e.to_string()))?;
        // The tokenizers crate panics (`expect("Helper")`) on JSON that is malformed inside a
        // decoder or normalizer: check the syntax first, so that is an error naming the file.
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| tok_error(path, format!("invalid JSON: {e}")))?;
        if let Some(pp) = json.get("post_processor") {
            check_templates(pp).map_err(|msg| tok_error(path, format!("post_processor: {msg}")))?;
        }
        let inner = text
            .parse::<Tokenizer>()
            .map_err(|e| tok_error(path, e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tok_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let config = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
        let gen_config = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);

        let special = |key: &str| {
            tok_config
                .get(key)
                .and_then(token_content)
                .and_then(|t| inner.token_to_id(t))
        };
        let bos =
            special("bos_token").or_else(|| ids_of(config.get("bos_token_id")).first().copied());
        let mut eos = Vec::new();
        for id in special("eos_token")
            .into_iter()
            .chain(ids_of(tok_config.get("eos_token_ids")))
            .chain(ids_of(config.get("eos_token_id")))
            .chain(ids_of(gen_config.get("eos_token_id")))
        {
            push_unique(&mut eos, id);
        }
        let pad =
            special("pad_token").or_else(|| ids_of(config.get("pad_token_id")).first().copied());
        let flag = |key: &str| {
            tok_config
                .get(key)
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let (add_bos, add_eos) = (flag("add_bos_token"), flag("add_eos_token"));

        let chat_template = match tok_config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default", else the first.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        };
        let chat_template = match chat_template {
            Some(t) => Some(t),
            None => {
                let jinja = dir.join("chat_template.jinja");
                match std::fs::read_to_string(&jinja) {
                    Ok(t) => Some(t),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(ModelError::io(jinja, e)),
                }
            }
        };

        let mut tok = TextTokenizer {
            vocab_size: inner.get_vocab_size(true),
            id_limit: id_limit(&inner),
            inner,
            bos,
            eos,
            pad,
            add_bos,
            add_eos,
            chat_template,
            source: path.to_path_buf(),
        };
        // transformers honours add_bos_token / add_eos_token even when the tokenizer.json's
        // post-processor does not add the token itself: install one that does.
        // (A tokenizer that cannot encode the probe gets the post-processor too.)
        let probe = tok.encode_raw("a").unwrap_or_default();
        let needs_bos = add_bos && tok.bos.is_some_and(|b| probe.first() != Some(&b));
        let needs_eos = add_eos && tok.eos.first().is_some_and(|e| probe.last() != Some(e));
        if needs_bos || needs_eos {
            tok.install_post_processor()?;
        }
        Ok(tok)
    }

    /// Builds the byte-level BPE tokenizer a GGUF file describes (see the module docs).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let path = g.path.as_path();
        let err = |msg: String| tok_error(path, msg);
        let model = g.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model {model:?} is not supported (only byte-level BPE, \"gpt2\")"
            )));
        }
        let pre = g.get("tokenizer.ggml.pre").and_then(MetaValue::as_str);
        let kind = PreTokenizerKind::from_gguf_name(pre).ok_or_else(|| {
            err(format!(
                "pre-tokenizer {:?} is not supported (supported: smollm, gpt2, default)",
                pre.unwrap_or_default()
            ))
        })?;

        let tokens = g
            .get_array("tokenizer.ggml.tokens")?
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_str().ok_or_else(|| {
                    ModelError::format(path, format!("tokenizer.ggml.tokens[{i}] is not a string"))
                })
            })
            .collect::<Result<Vec<&str>>>()?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(err(format!("the vocabulary has {n} tokens")));
        }
        let token_types = match g.get("tokenizer.ggml.token_type") {
            None => vec![1; n],
            Some(v) => {
                let types = v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(MetaValue::as_i64)
                            .collect::<Option<Vec<i64>>>()
                    })
                    .ok_or_else(|| {
                        ModelError::format(
                            path,
                            "tokenizer.ggml.token_type is not an array of integers",
                        )
                    })?;
                if types.len() != n {
                    return Err(ModelError::format(
                        path,
                        format!(
                            "tokenizer.ggml.token_type has {} entries for {n} tokens",
                            types.len()
                        ),
                    ));
                }
                types
            }
        };
        let merges = g
            .get_array("tokenizer.ggml.merges")?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.as_str()
                    .and_then(|m| m.split_once(' '))
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        ModelError::format(
                            path,
                            format!("tokenizer.ggml.merges[{i}] is not a string \"a b\": {m:?}"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;

        // As in llama.cpp and transformers, a token spelled twice keeps the later id.
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(format!("invalid BPE vocabulary or merges: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(kind.build()));
        inner.with_decoder(Some(ByteLevel::default()));

        // Control and user-defined tokens are matched whole in the text (before pre-tokenizing);
        // their ids are the vocabulary's own since their text is in the BPE vocabulary.
        let added = |ty: i64, special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&token_types)
                .filter(|&(_, &t)| t == ty)
                .map(|(&tok, _)| AddedToken::from(tok, special).normalized(false))
                .collect()
        };
        let control = added(TOKEN_TYPE_CONTROL, true);
        inner.add_special_tokens(&control);
        inner.add_tokens(&added(TOKEN_TYPE_USER_DEFINED, false));

        let id = |key: &str| -> Result<Option<u32>> {
            match g.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(id) if (id as usize) < n => Ok(Some(id as u32)),
                    _ => Err(ModelError::format(
                        path,
                        format!("{key} = {v:?} is not a token id (the vocabulary has {n} tokens)"),
                    )),
                },
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let mut eos = Vec::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(e) = id(key)? {
                push_unique(&mut eos, e);
            }
        }
        for (i, (&tok, &ty)) in tokens.iter().zip(&token_types).enumerate() {
            if ty == TOKEN_TYPE_CONTROL && END_OF_GENERATION_TOKENS.contains(&tok) {
                push_unique(&mut eos, i as u32);
            }
        }
        let pad = id("tokenizer.ggml.padding_token_id")?;
        let flag = |key: &str| g.get(key).and_then(MetaValue::as_bool).unwrap_or(false);
        let chat_template = g
            .get("tokenizer.chat_template")
            .and_then(MetaValue::as_str)
            .map(str::to_string);

        let mut tok = TextTokenizer {
            vocab_size: inner.get_vocab_size(true),
            id_limit: id_limit(&inner),
            inner,
            bos,
            eos,
            pad,
            add_bos: flag("tokenizer.ggml.add_bos_token"),
            add_eos: flag("tokenizer.ggml.add_eos_token"),
            chat_template,
            source: path.to_path_buf(),
        };
        if (tok.add_bos && tok.bos.is_some()) || (tok.add_eos && !tok.eos.is_empty()) {
            tok.install_post_processor()?;
        }
        Ok(tok)
    }

    /// Sets a post-processor that adds BOS in front and/or EOS at the end, as the flags say.
    fn install_post_processor(&mut self) -> Result<()> {
        let content = |id: u32| {
            self.inner.id_to_token(id).ok_or_else(|| {
                tok_error(&self.source, format!("special token id {id} has no text"))
            })
        };
        let bos = match self.bos.filter(|_| self.add_bos) {
            Some(id) => Some((content(id)?, id)),
            None => None,
        };
        let eos = match self.eos.first().copied().filter(|_| self.add_eos) {
            Some(id) => Some((content(id)?, id)),
            None => None,
        };
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut specials = Vec::new();
        if let Some((b, id)) = &bos {
            single.push(format!("{b}:0"));
            pair.push(format!("{b}:0"));
            specials.push((b.clone(), *id));
        }
        single.push("$A:0".to_string());
        pair.push("$A:0".to_string());
        if let Some((e, id)) = &eos {
            single.push(format!("{e}:0"));
            pair.push(format!("{e}:0"));
            specials.push((e.clone(), *id));
        }
        if let Some((b, _)) = &bos {
            pair.push(format!("{b}:1"));
        }
        pair.push("$B:1".to_string());
        if let Some((e, _)) = &eos {
            pair.push(format!("{e}:1"));
        }
        let perr = |e: String| tok_error(&self.source, format!("building the post-processor: {e}"));
        let processor = TemplateProcessing::builder()
            .try_single(single)
            .map_err(|e| perr(e.to_string()))?
            .try_pair(pair)
            .map_err(|e| perr(e.to_string()))?
            .special_tokens(specials)
            .build()
            .map_err(|e| perr(e.to_string()))?;
        self.inner.with_post_processor(Some(processor));
        Ok(())
    }

    fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| tok_error(&self.source, format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are recognised;
    /// BOS / EOS are added only when the tokenizer says so (`add_bos_token`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_raw(text)
    }

    /// The text of `ids`, special tokens included (as transformers' `decode` with
    /// `skip_special_tokens=False`). Ids the tokenizer does not know decode to nothing, as in
    /// transformers: a model's vocabulary is often padded past its tokenizer's (Qwen2's
    /// 152,064 rows for 151,665 tokens), and an untrained row can still win an argmax.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let known: Vec<u32> = ids.iter().copied().filter(|&id| self.knows(id)).collect();
        if known.len() < ids.len() {
            tracing::debug!(
                unknown = ids.len() - known.len(),
                limit = self.id_limit,
                "ids outside the tokenizer's vocabulary decode to nothing"
            );
        }
        self.inner
            .decode(&known, false)
            .map_err(|e| tok_error(&self.source, format!("decoding failed: {e}")))
    }

    /// Whether `id` is one of the tokenizer's.
    pub fn knows(&self, id: u32) -> bool {
        id < self.id_limit
    }

    /// The ids that end generation: the EOS id first, then any others the model declares
    /// (EOT / EOM ids, known end-of-turn control tokens, `eos_token_id` lists).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Whether [`encode`](Self::encode) puts BOS in front.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The file this tokenizer was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// This tokenizer with `tokens` added as special tokens (matched whole, never split), each
    /// taking the next id after the vocabulary unless it is already there; their ids in order.
    pub fn with_special_tokens(&self, tokens: &[&str]) -> (Self, Vec<u32>) {
        let mut out = self.clone();
        let added: Vec<tokenizers::AddedToken> = tokens
            .iter()
            .map(|t| tokenizers::AddedToken::from(t.to_string(), true))
            .collect();
        out.inner.add_special_tokens(&added);
        out.id_limit = id_limit(&out.inner);
        out.vocab_size = out.inner.get_vocab_size(true);
        let ids = tokens
            .iter()
            .map(|t| {
                out.inner
                    .token_to_id(t)
                    .unwrap_or_else(|| unreachable!("{t} was just added"))
            })
            .collect();
        (out, ids)
    }

    /// Writes `path` (a `tokenizer.json`) and, in the same folder, a `tokenizer_config.json` with
    /// the special tokens, `add_bos_token` and the chat template, so that
    /// [`from_file`](Self::from_file) on `path` gives back an equivalent tokenizer (and
    /// transformers' `AutoTokenizer` can load the folder).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| tok_error(path, format!("serializing failed: {e}")))?;
        std::fs::write(path, json).map_err(|e| ModelError::io(path, e))?;
        let text = |id: Option<u32>| id.and_then(|id| self.inner.id_to_token(id));
        let config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": text(self.bos),
            "eos_token": text(self.eos.first().copied()),
            "pad_token": text(self.pad),
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
            "clean_up_tokenization_spaces": false,
            "chat_template": self.chat_template,
            // Not a transformers key: every end-of-generation id, read back by from_file.
            "eos_token_ids": self.eos,
        });
        let config_path = path
            .parent()
            .unwrap_or(Path::new("."))
            .join("tokenizer_config.json");
        let config_text = serde_json::to_string_pretty(&config)
            .map_err(|e| tok_error(&config_path, format!("serializing failed: {e}")))?;
        std::fs::write(&config_path, config_text).map_err(|e| ModelError::io(&config_path, e))
    }
}

/// Turns generated ids into text as they come, for printing: [`push`](Self::push) returns the text
/// that the new id completes, holding back bytes of a character split across tokens until the
/// token that finishes it arrives.
///
/// It decodes a short window (the ids of the last emitted piece plus the pending ones) and emits
/// what the window's text gained, so decoders that depend on the neighbouring token behave as in
/// a full decode.
pub struct StreamDecoder<'a> {
    tok: &'a TextTokenizer,
    /// The window: the ids of the last emitted piece, then the pending ids.
    ids: Vec<u32>,
    /// How many ids of the window were already emitted.
    emitted: usize,
    /// The text of `ids[..emitted]`.
    prefix: String,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a TextTokenizer) -> Self {
        StreamDecoder {
            tok,
            ids: Vec::new(),
            emitted: 0,
            prefix: String::new(),
        }
    }

    /// Adds one id; returns the new text, empty while a character is still incomplete.
    pub fn push(&mut self, id: u32) -> Result<String> {
        if !self.tok.knows(id) {
            return Ok(String::new());
        }
        self.ids.push(id);
        let text = self.tok.decode(&self.ids)?;
        if text.len() <= self.prefix.len() || text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let Some(new) = text.strip_prefix(self.prefix.as_str()) else {
            return Err(tok_error(
                &self.tok.source,
                format!(
                    "stream decoding: the text of the window {:?} does not extend {:?}",
                    text, self.prefix
                ),
            ));
        };
        let new = new.to_string();
        self.ids.drain(..self.emitted);
        self.emitted = self.ids.len();
        self.prefix = self.tok.decode(&self.ids)?;
        Ok(new)
    }

    /// Returns whatever is still held back (an incomplete character comes out as U+FFFD) and
    /// starts afresh.
    pub fn finish(&mut self) -> Result<String> {
        let text = self.tok.decode(&self.ids)?;
        let rest = text
            .strip_prefix(self.prefix.as_str())
            .map(str::to_string)
            .unwrap_or_default();
        self.ids.clear();
        self.emitted = 0;
        self.prefix.clear();
        Ok(rest)
    }
}
