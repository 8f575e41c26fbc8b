//! Prompt text for the vision-language models: the in-context templates of the published MimIC
//! code, the models' own chat templates, and each processor's expansion of `<image>`.
//!
//! A prompt is an optional instruction and a list of [`Message`]s, each a [`Role`] and ordered
//! [`Item`]s, as the MimIC data code builds them (`testbed/data/*/__init__.py`): per shot
//! `image`, `question`, `answer` (or `caption`, with `choices` for SEED-Bench), and for the query
//! an `answer` message with no content at all, which renders as its bare header (`Answer:`,
//! `<|im_start|>answer\n`) for the model to continue. MimIC calls `apply_chat_template` without
//! `add_generation_prompt`, so it leaves that flag false; the flag is kept because the templates
//! read it. (For training MimIC renders the shots and the query round separately and joins them
//! with the pad token, `src/shift_model.py`; that join is the caller's.)
//!
//! Rendering copies the Jinja templates byte for byte, quirks included: Idefics2's MimIC
//! template ends every message with the misspelt `<end_of_outterance>`, which is plain text,
//! not the `<end_of_utterance>` special token.

/// The placeholder each processor expands into the image's feature tokens.
pub const IMAGE_PLACEHOLDER: &str = "<image>";
const FAKE_AROUND_IMAGE: &str = "<fake_token_around_image>";
const GLOBAL_IMAGE: &str = "<global-img>";

/// What can go wrong building a prompt; each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("prompt has {placeholders} <image> placeholders but {images} images were given")]
    ImageCount { placeholders: usize, images: usize },
    #[error(
        "Idefics3 image splitting needs each image's tile grid from the image processor; \
         only unsplit images are supported here"
    )]
    Idefics3Splitting,
    #[error("the MimIC templates need at least one message (they read the first one's role)")]
    NoMessages,
    #[error("message {index} ({role}) has no content items; this template reads its first item")]
    EmptyContent { index: usize, role: &'static str },
    #[error(
        "message {index} ({role}) has no content; chat templates need content in each message"
    )]
    MissingContent { index: usize, role: &'static str },
}

pub type Result<T, E = PromptError> = std::result::Result<T, E>;

/// A message's role: MimIC's task roles and the chat roles of the official templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Image,
    Question,
    Choices,
    Answer,
    Caption,
    User,
    Assistant,
}

impl Role {
    /// The role string as the message dictionaries spell it (lowercase).
    pub fn name(self) -> &'static str {
        match self {
            Role::Image => "image",
            Role::Question => "question",
            Role::Choices => "choices",
            Role::Answer => "answer",
            Role::Caption => "caption",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// Python's `str.capitalize()` of [`Role::name`], as the Idefics templates print it.
    pub fn capitalized(self) -> &'static str {
        match self {
            Role::Image => "Image",
            Role::Question => "Question",
            Role::Choices => "Choices",
            Role::Answer => "Answer",
            Role::Caption => "Caption",
            Role::User => "User",
            Role::Assistant => "Assistant",
        }
    }
}

/// One content item of a message: an image slot or a piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Image,
    Text(String),
}

/// A role and its content; `content: None` is MimIC's open query slot (`{"role": "answer"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: Option<Vec<Item>>,
}

impl Message {
    pub fn new(role: Role, content: Vec<Item>) -> Self {
        Message {
            role,
            content: Some(content),
        }
    }

    /// A message without content, the slot the model fills.
    pub fn open(role: Role) -> Self {
        Message {
            role,
            content: None,
        }
    }

    pub fn text(role: Role, text: &str) -> Self {
        Message::new(role, vec![Item::Text(text.to_string())])
    }
}

/// An optional instruction (MimIC's `instruction` message, a system turn in the chat
/// templates) followed by the messages: demonstrations, then the query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conversation {
    pub instruction: Option<String>,
    pub messages: Vec<Message>,
}

/// The prompt templates of the published MimIC code (`default_prompt_template` in
/// `testbed/models/{idefics,idefics2,llava}.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MimicTemplate {
    /// `Instruction: {text}\n`; per message `Role:` (`Role: ` unless the first item is an
    /// image), items joined by single spaces, then `\n` if the message ends a round (it is the
    /// last, or the next one has the first message's role), else a space.
    Idefics,
    /// As [`MimicTemplate::Idefics`] but items are concatenated with nothing between them, and
    /// the instruction and every message with content end in the plain text
    /// `<end_of_outterance>\n` (sic; the base-model variant's `replace("<end_of_utterance>", "")`
    /// therefore changes nothing).
    Idefics2,
    /// ChatML-like: `<|im_start|>{role}\n`, the message's images first as `<image>`, then each
    /// text as `\n{text}`, then `<|im_end|>\n`; roles lowercase; the instruction is
    /// `<|im_start|>instruction\n{text}<|im_end|>\n`.
    LlavaInterleave,
}

impl MimicTemplate {
    /// The published template of a vision-language architecture: MimIC's own for Idefics2 and
    /// LLaVA-interleave; Idefics3 (not in the published code) takes Idefics2's.
    pub fn for_architecture(arch: crate::vlm::VlmArchitecture) -> Self {
        match arch {
            crate::vlm::VlmArchitecture::Idefics2 | crate::vlm::VlmArchitecture::Idefics3 => {
                MimicTemplate::Idefics2
            }
            crate::vlm::VlmArchitecture::Llava => MimicTemplate::LlavaInterleave,
            crate::vlm::VlmArchitecture::Idefics => MimicTemplate::Idefics,
        }
    }

    /// A VQA shot as MimIC builds it (an `image` message, a `question`, an `answer`), with
    /// `{input}` for the question and `{output}` for the answer: a task template
    /// ([`crate::task::Template`]) whose demonstrations are MimIC's byte for byte. The query is
    /// the text before `{output}`, trailing spaces moved to the answer: `Answer:` for the
    /// Idefics family, as MimIC's open answer message renders; for LLaVA-interleave it ends
    /// `<|im_start|>answer\n\n` where MimIC's open message has one newline.
    pub fn vqa_task_template(self) -> String {
        let conv = Conversation {
            instruction: None,
            messages: vec![
                Message::new(Role::Image, vec![Item::Image]),
                Message::text(Role::Question, "{input}"),
                Message::text(Role::Answer, "{output}"),
            ],
        };
        self.render(&conv, false)
            .unwrap_or_else(|_| unreachable!("a fixed conversation with content renders"))
    }

    /// A caption shot as MimIC builds it (an `image` message, then a `caption`), with
    /// `{output}` for the caption and an empty `{input}` just before the caption message (a
    /// task template needs both): the input of every caption pair is empty.
    pub fn caption_task_template(self) -> String {
        let conv = Conversation {
            instruction: None,
            messages: vec![
                Message::new(Role::Image, vec![Item::Image]),
                Message::text(Role::Caption, "{output}"),
            ],
        };
        let text = self
            .render(&conv, false)
            .unwrap_or_else(|_| unreachable!("a fixed conversation with content renders"));
        let caption = match self {
            MimicTemplate::LlavaInterleave => "<|im_start|>caption",
            _ => "Caption:",
        };
        let at = text
            .find(caption)
            .unwrap_or_else(|| unreachable!("the caption message renders its role"));
        format!("{}{{input}}{}", &text[..at], &text[at..])
    }

    /// A SEED-Bench question as the `{input}` of [`MimicTemplate::vqa_task_template`]: the
    /// question, then the `choices` message MimIC's SEED shots carry between the question and
    /// the answer (`A. {a} B. {b} C. {c} D. {d}`, then `Answer with the letter.`, two text
    /// items), so that the shot renders byte for byte as MimIC's four-message round
    /// (`testbed/data/seed_bench/__init__.py`). For Idefics2: `{question}<end_of_outterance>\n
    /// Choices: A. .. D. ..Answer with the letter.`, the template's own end following.
    pub fn question_with_choices(self, question: &str, choices: &[String; 4]) -> String {
        // Each conversation rendered with markers for the question and the answer; the
        // question's input is the question, then what the choices message adds between them.
        const QUESTION: &str = "\u{1}";
        const ANSWER: &str = "\u{2}";
        let between = |with_choices: bool| {
            let mut messages = vec![
                Message::new(Role::Image, vec![Item::Image]),
                Message::text(Role::Question, QUESTION),
            ];
            if with_choices {
                let [a, b, c, d] = choices;
                messages.push(Message::new(
                    Role::Choices,
                    vec![
                        Item::Text(format!("A. {a} B. {b} C. {c} D. {d}")),
                        Item::Text("Answer with the letter.".to_string()),
                    ],
                ));
            }
            messages.push(Message::text(Role::Answer, ANSWER));
            let conv = Conversation {
                instruction: None,
                messages,
            };
            let text = self
                .render(&conv, false)
                .unwrap_or_else(|_| unreachable!("a fixed conversation with content renders"));
            let (start, end) = (text.find(QUESTION), text.find(ANSWER));
            match (start, end) {
                (Some(s), Some(e)) => text[s + QUESTION.len()..e].to_string(),
                _ => unreachable!("both markers render"),
            }
        };
        let (with, without) = (between(true), between(false));
        // `with` is the question message's end E, the choices message C, the answer's header
        // A; `without` is E then A. C ends in E as every message in the round does, so the
        // input is the question, E and C short of its end: the template adds E and A after.
        let added = with
            .strip_suffix(&without)
            .unwrap_or_else(|| unreachable!("the choices message ends as the question's does"));
        format!("{question}{added}")
    }

    /// Renders the conversation; with `add_generation_prompt` the template appends the role
    /// that ends a round (always the last message's) as `Role:` or `<|im_start|>{role}\n`.
    pub fn render(self, conv: &Conversation, add_generation_prompt: bool) -> Result<String> {
        let messages = &conv.messages;
        let first_role = messages.first().ok_or(PromptError::NoMessages)?.role;
        let ends_round = |i: usize| i + 1 == messages.len() || messages[i + 1].role == first_role;
        let last_role = messages[messages.len() - 1].role;
        let mut out = String::new();
        match self {
            MimicTemplate::Idefics | MimicTemplate::Idefics2 => {
                let idefics2 = self == MimicTemplate::Idefics2;
                if let Some(instruction) = &conv.instruction {
                    out += "Instruction: ";
                    out += instruction;
                    out += if idefics2 {
                        "<end_of_outterance>\n"
                    } else {
                        "\n"
                    };
                }
                for (i, message) in messages.iter().enumerate() {
                    out += message.role.capitalized();
                    let items = match message.content.as_deref() {
                        None => {
                            out += ":";
                            continue;
                        }
                        Some([]) => {
                            let role = message.role.name();
                            return Err(PromptError::EmptyContent { index: i, role });
                        }
                        Some(items) => items,
                    };
                    out += colon(items);
                    for (j, item) in items.iter().enumerate() {
                        push_item(&mut out, item);
                        if !idefics2 && j + 1 < items.len() {
                            out += " ";
                        }
                    }
                    out += match (idefics2, ends_round(i)) {
                        (true, _) => "<end_of_outterance>\n",
                        (false, true) => "\n",
                        (false, false) => " ",
                    };
                }
                if add_generation_prompt {
                    out += last_role.capitalized();
                    out += ":";
                }
            }
            MimicTemplate::LlavaInterleave => {
                if let Some(instruction) = &conv.instruction {
                    out += "<|im_start|>instruction\n";
                    out += instruction;
                    out += "<|im_end|>\n";
                }
                for message in messages {
                    chatml_turn(&mut out, message.role.name(), message.content.as_deref());
                }
                if add_generation_prompt {
                    out += "<|im_start|>";
                    out += last_role.name();
                    out += "\n";
                }
            }
        }
        Ok(out)
    }
}

/// The models' own chat templates, what `processor.apply_chat_template` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// HuggingFaceM4/idefics2-8b: per message `Role:` (`Role: ` unless the first item is an
    /// image), items concatenated, `<end_of_utterance>\n`; generation prompt `Assistant:`.
    Idefics2,
    /// HuggingFaceM4/Idefics3-8B-Llama3: the Idefics2 template behind `<|begin_of_text|>`.
    Idefics3,
    /// SmolVLM2: the Idefics2 template behind `<|im_start|>`.
    SmolVlm,
    /// llava-hf/llava-interleave-qwen: `<|im_start|>{role}\n`, images first as `<image>`, each
    /// text as `\n{text}`, `<|im_end|>\n`; generation prompt `<|im_start|>assistant\n`.
    LlavaInterleave,
}

impl ChatTemplate {
    /// Renders the conversation; the instruction becomes a leading `system` turn with one
    /// text item, rendered like any other message.
    pub fn render(self, conv: &Conversation, add_generation_prompt: bool) -> Result<String> {
        let idefics = self != ChatTemplate::LlavaInterleave;
        let system = conv
            .instruction
            .as_ref()
            .map(|text| [Item::Text(text.clone())]);
        // (role name, capitalised role, items) per turn, the system turn first.
        let mut turns: Vec<(&str, &str, &[Item])> = Vec::new();
        if let Some(items) = &system {
            turns.push(("system", "System", items));
        }
        for (index, message) in conv.messages.iter().enumerate() {
            let role = message.role.name();
            let items = match message.content.as_deref() {
                None => return Err(PromptError::MissingContent { index, role }),
                // The Idefics templates read `message['content'][0]['type']`.
                Some([]) if idefics => return Err(PromptError::EmptyContent { index, role }),
                Some(items) => items,
            };
            turns.push((role, message.role.capitalized(), items));
        }
        let mut out = String::new();
        if idefics {
            out += match self {
                ChatTemplate::Idefics3 => "<|begin_of_text|>",
                ChatTemplate::SmolVlm => "<|im_start|>",
                _ => "",
            };
            for (_, capitalized, items) in turns {
                out += capitalized;
                out += colon(items);
                items.iter().for_each(|item| push_item(&mut out, item));
                out += "<end_of_utterance>\n";
            }
            if add_generation_prompt {
                out += "Assistant:";
            }
        } else {
            for (name, _, items) in turns {
                chatml_turn(&mut out, name, Some(items));
            }
            if add_generation_prompt {
                out += "<|im_start|>assistant\n";
            }
        }
        Ok(out)
    }
}

/// The Idefics templates' `Role:` when the first item is an image, `Role: ` when it is text
/// (`message['content'][0]['type']`, so callers reject an empty item list first, as Jinja does).
fn colon(items: &[Item]) -> &'static str {
    if items[0] == Item::Image {
        ":"
    } else {
        ": "
    }
}

fn push_item(out: &mut String, item: &Item) {
    match item {
        Item::Image => out.push_str(IMAGE_PLACEHOLDER),
        Item::Text(text) => out.push_str(text),
    }
}

/// One LLaVA-interleave turn: images first (`selectattr('type', 'equalto', 'image')`), then
/// texts each after a newline; a message without content gets only its header line.
fn chatml_turn(out: &mut String, role: &str, items: Option<&[Item]>) {
    *out += "<|im_start|>";
    *out += role;
    *out += "\n";
    let Some(items) = items else { return };
    for item in items {
        if *item == Item::Image {
            *out += IMAGE_PLACEHOLDER;
        }
    }
    for item in items {
        if let Item::Text(text) = item {
            *out += "\n";
            *out += text;
        }
    }
    *out += "<|im_end|>\n";
}

/// How a processor turns each `<image>` placeholder into the model's image tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageTokens {
    /// `Idefics2Processor`: `<fake_token_around_image>` + `<image>`×`per_image` +
    /// `<fake_token_around_image>` (that string ×5 when `split`), then every doubled fake token
    /// collapsed to one in a single left-to-right pass. MimIC sets `split` false.
    Idefics2 { per_image: usize, split: bool },
    /// `Idefics3Processor` for unsplit images: `<fake_token_around_image><global-img>` +
    /// `<image>`×`per_image` + `<fake_token_around_image>`, no collapsing. Splitting (rows of
    /// `<row_r_col_c>` tiles before the global image) needs the image processor's tile grid
    /// per image and is not supported: `split: true` is an error.
    Idefics3 { per_image: usize, split: bool },
    /// `LlavaProcessor`: `<image>` repeated `per_image` times.
    Llava { per_image: usize },
    /// `IdeficsProcessor` as MimIC calls it (the prompt split at each `<image>` into an
    /// interleaved list): each text piece loses its leading and trailing spaces (`strip(" ")`),
    /// each image becomes `<fake_token_around_image><image><fake_token_around_image>`, one
    /// `<image>` token an image (its latents enter through cross-attention), with a fake token
    /// between two adjacent images written once.
    Idefics,
}

impl ImageTokens {
    /// Expands every placeholder in `prompt` as the processor does before tokenizing.
    pub fn expand(self, prompt: &str) -> Result<String> {
        let image = IMAGE_PLACEHOLDER;
        let expanded = match self {
            ImageTokens::Idefics2 { per_image, split } => {
                let one = format!(
                    "{FAKE_AROUND_IMAGE}{}{FAKE_AROUND_IMAGE}",
                    image.repeat(per_image)
                );
                let each = if split { one.repeat(5) } else { one };
                let doubled = format!("{FAKE_AROUND_IMAGE}{FAKE_AROUND_IMAGE}");
                prompt
                    .replace(image, &each)
                    .replace(&doubled, FAKE_AROUND_IMAGE)
            }
            ImageTokens::Idefics3 { split: true, .. } => {
                return Err(PromptError::Idefics3Splitting)
            }
            ImageTokens::Idefics3 { per_image, .. } => {
                let each = format!(
                    "{FAKE_AROUND_IMAGE}{GLOBAL_IMAGE}{}{FAKE_AROUND_IMAGE}",
                    image.repeat(per_image)
                );
                prompt.replace(image, &each)
            }
            ImageTokens::Llava { per_image } => prompt.replace(image, &image.repeat(per_image)),
            ImageTokens::Idefics => {
                let each = format!("{FAKE_AROUND_IMAGE}{image}{FAKE_AROUND_IMAGE}");
                let doubled = format!("{FAKE_AROUND_IMAGE}{FAKE_AROUND_IMAGE}");
                prompt
                    .split(image)
                    .map(|text| text.trim_matches(' '))
                    .collect::<Vec<_>>()
                    .join(&each)
                    .replace(&doubled, FAKE_AROUND_IMAGE)
            }
        };
        Ok(expanded)
    }
}

/// The number of `<image>` placeholders (non-overlapping, as Python's `str.count`).
pub fn count_image_placeholders(prompt: &str) -> usize {
    prompt.matches(IMAGE_PLACEHOLDER).count()
}

/// Checks that `prompt` has one placeholder per image, as the processors require.
pub fn check_image_count(prompt: &str, images: usize) -> Result<()> {
    let placeholders = count_image_placeholders(prompt);
    if placeholders == images {
        Ok(())
    } else {
        Err(PromptError::ImageCount {
            placeholders,
            images,
        })
    }
}

#[cfg(test)]
mod vqa_template_tests {
    use super::*;

    #[test]
    fn vqa_templates_are_mimic_shots() {
        assert_eq!(
            MimicTemplate::Idefics2.vqa_task_template(),
            "Image:<image><end_of_outterance>\nQuestion: {input}<end_of_outterance>\n\
             Answer: {output}<end_of_outterance>\n"
        );
        assert_eq!(
            MimicTemplate::Idefics2.caption_task_template(),
            "Image:<image><end_of_outterance>\n{input}Caption: {output}<end_of_outterance>\n"
        );
        assert_eq!(
            MimicTemplate::Idefics.vqa_task_template(),
            "Image:<image> Question: {input} Answer: {output}\n"
        );
        assert_eq!(
            MimicTemplate::LlavaInterleave.vqa_task_template(),
            "<|im_start|>image\n<image><|im_end|>\n<|im_start|>question\n\n{input}<|im_end|>\n\
             <|im_start|>answer\n\n{output}<|im_end|>\n"
        );
    }

    #[test]
    fn seed_shots_carry_their_choices_message() {
        // MimIC's SEED round: image, question, choices (two text items), answer.
        let choices = ["a cat", "a dog", "two birds", "none"].map(str::to_string);
        for t in [
            MimicTemplate::Idefics,
            MimicTemplate::Idefics2,
            MimicTemplate::LlavaInterleave,
        ] {
            let round = Conversation {
                instruction: None,
                messages: vec![
                    Message::new(Role::Image, vec![Item::Image]),
                    Message::text(Role::Question, "What is in the picture?"),
                    Message::new(
                        Role::Choices,
                        vec![
                            Item::Text("A. a cat B. a dog C. two birds D. none".to_string()),
                            Item::Text("Answer with the letter.".to_string()),
                        ],
                    ),
                    Message::text(Role::Answer, "B"),
                ],
            };
            let input = t.question_with_choices("What is in the picture?", &choices);
            let shot = t
                .vqa_task_template()
                .replace("{input}", &input)
                .replace("{output}", "B");
            assert_eq!(shot, t.render(&round, false).unwrap(), "{t:?}");
        }
        assert_eq!(
            MimicTemplate::Idefics2.question_with_choices("Q?", &choices),
            "Q?<end_of_outterance>\nChoices: A. a cat B. a dog C. two birds D. noneAnswer with \
             the letter."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTRUCTION: &str = "Provide an answer to the question. Use the image to answer.";

    fn txt(text: &str) -> Item {
        Item::Text(text.to_string())
    }

    /// One VQA shot and the query, as `testbed/data/vqav2/__init__.py` builds them and
    /// `testbed/data/__init__.py::prepare_input` prepends the instruction.
    fn vqa_one_shot() -> Conversation {
        let image = || Message::new(Role::Image, vec![Item::Image]);
        Conversation {
            instruction: Some(INSTRUCTION.to_string()),
            messages: vec![
                image(),
                Message::text(Role::Question, "What colour is the bus?"),
                Message::text(Role::Answer, "red"),
                image(),
                Message::text(Role::Question, "How many dogs are there?"),
                Message::open(Role::Answer),
            ],
        }
    }

    /// A user/assistant demonstration and a user query for the official chat templates.
    fn chat_one_shot(instruction: Option<&str>) -> Conversation {
        let user = |q: &str| Message::new(Role::User, vec![Item::Image, txt(q)]);
        Conversation {
            instruction: instruction.map(str::to_string),
            messages: vec![
                user("What colour is the bus?"),
                Message::text(Role::Assistant, "red"),
                user("How many dogs are there?"),
            ],
        }
    }

    // testbed/models/idefics.py: items joined by ' ', '\n' at the end of a round, else ' '.
    #[test]
    fn mimic_idefics_one_shot() {
        let text = MimicTemplate::Idefics
            .render(&vqa_one_shot(), false)
            .unwrap();
        assert_eq!(
            text,
            "Instruction: Provide an answer to the question. Use the image to answer.\n\
             Image:<image> Question: What colour is the bus? Answer: red\n\
             Image:<image> Question: How many dogs are there? Answer:"
        );
        // The open answer already ends in `Answer:`; the generation prompt would repeat it.
        let with_prompt = MimicTemplate::Idefics
            .render(&vqa_one_shot(), true)
            .unwrap();
        assert!(with_prompt.ends_with(
            "Answer: red\nImage:<image> Question: How many dogs are there? Answer:Answer:"
        ));
    }

    // testbed/models/idefics2.py: nothing between items, `<end_of_outterance>\n` (sic) after
    // the instruction and after every message with content.
    #[test]
    fn mimic_idefics2_one_shot() {
        let text = MimicTemplate::Idefics2
            .render(&vqa_one_shot(), false)
            .unwrap();
        assert_eq!(
            text,
            "Instruction: Provide an answer to the question. Use the image to answer.<end_of_outterance>\n\
             Image:<image><end_of_outterance>\n\
             Question: What colour is the bus?<end_of_outterance>\n\
             Answer: red<end_of_outterance>\n\
             Image:<image><end_of_outterance>\n\
             Question: How many dogs are there?<end_of_outterance>\n\
             Answer:"
        );
    }

    // testbed/data/seed_bench/__init__.py: a `choices` message with two text items.
    #[test]
    fn mimic_idefics_multi_item_messages() {
        let conv = Conversation {
            instruction: None,
            messages: vec![
                Message::new(Role::Image, vec![Item::Image, Item::Image]),
                Message::new(
                    Role::Choices,
                    vec![txt("A. cat B. dog"), txt("Answer with the letter.")],
                ),
                Message::open(Role::Answer),
            ],
        };
        let v1 = MimicTemplate::Idefics.render(&conv, false).unwrap();
        assert_eq!(
            v1,
            "Image:<image> <image> Choices: A. cat B. dog Answer with the letter. Answer:"
        );
        let v2 = MimicTemplate::Idefics2.render(&conv, false).unwrap();
        assert_eq!(
            v2,
            "Image:<image><image><end_of_outterance>\n\
             Choices: A. cat B. dogAnswer with the letter.<end_of_outterance>\n\
             Answer:"
        );
    }

    // testbed/models/llava.py (llava-interleave branch): `\n` before each text, so a text
    // message has a blank line after its header; the open answer has no `<|im_end|>`.
    #[test]
    fn mimic_llava_one_shot() {
        let text = MimicTemplate::LlavaInterleave
            .render(&vqa_one_shot(), false)
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>instruction\nProvide an answer to the question. Use the image to answer.<|im_end|>\n\
             <|im_start|>image\n<image><|im_end|>\n\
             <|im_start|>question\n\nWhat colour is the bus?<|im_end|>\n\
             <|im_start|>answer\n\nred<|im_end|>\n\
             <|im_start|>image\n<image><|im_end|>\n\
             <|im_start|>question\n\nHow many dogs are there?<|im_end|>\n\
             <|im_start|>answer\n"
        );
        // Images are moved before the texts of their message.
        let conv = Conversation {
            instruction: None,
            messages: vec![Message::new(Role::Question, vec![txt("a"), Item::Image])],
        };
        let text = MimicTemplate::LlavaInterleave.render(&conv, true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>question\n<image>\na<|im_end|>\n<|im_start|>question\n"
        );
    }

    #[test]
    fn mimic_needs_messages_and_first_items() {
        let empty = Conversation::default();
        assert_eq!(
            MimicTemplate::Idefics.render(&empty, false),
            Err(PromptError::NoMessages)
        );
        let conv = Conversation {
            instruction: None,
            messages: vec![Message::new(Role::Question, vec![])],
        };
        let err = MimicTemplate::Idefics2.render(&conv, false).unwrap_err();
        assert_eq!(
            err,
            PromptError::EmptyContent {
                index: 0,
                role: "question"
            }
        );
    }

    // The idefics2-8b hub chat template; transformers' tests/models/idefics2/
    // test_processor_idefics2.py (test_apply_chat_template) pins its output: `User: ` or
    // `User:` before an image, items concatenated, `<end_of_utterance>\n`, then `Assistant:`.
    #[test]
    fn chat_idefics2_one_shot() {
        let text = ChatTemplate::Idefics2
            .render(&chat_one_shot(None), true)
            .unwrap();
        assert_eq!(
            text,
            "User:<image>What colour is the bus?<end_of_utterance>\n\
             Assistant: red<end_of_utterance>\n\
             User:<image>How many dogs are there?<end_of_utterance>\n\
             Assistant:"
        );
        let text = ChatTemplate::Idefics2
            .render(&chat_one_shot(Some("Be brief.")), false)
            .unwrap();
        assert!(text.starts_with("System: Be brief.<end_of_utterance>\nUser:<image>What"));
        assert!(text.ends_with("dogs are there?<end_of_utterance>\n"));
    }

    // tests/models/idefics3/test_processor_idefics3.py and tests/models/smolvlm/
    // test_processor_smolvlm.py (test_apply_chat_template): the Idefics2 text behind
    // `<|begin_of_text|>` and `<|im_start|>`.
    #[test]
    fn chat_idefics3_and_smolvlm() {
        let conv = Conversation {
            instruction: None,
            messages: vec![Message::new(
                Role::User,
                vec![txt("What do these show?"), Item::Image, Item::Image],
            )],
        };
        let idefics3 = ChatTemplate::Idefics3.render(&conv, true).unwrap();
        assert_eq!(
            idefics3,
            "<|begin_of_text|>User: What do these show?<image><image><end_of_utterance>\nAssistant:"
        );
        let smolvlm = ChatTemplate::SmolVlm.render(&conv, true).unwrap();
        assert_eq!(
            smolvlm,
            "<|im_start|>User: What do these show?<image><image><end_of_utterance>\nAssistant:"
        );
    }

    // llava-hf/llava-interleave-qwen chat_template.json as reconstructed from the copies that
    // cite it (MimIC's testbed/models/llava.py says "modified from" it).
    #[test]
    fn chat_llava_interleave_one_shot() {
        let text = ChatTemplate::LlavaInterleave
            .render(&chat_one_shot(Some("Be brief.")), true)
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\n\nBe brief.<|im_end|>\n\
             <|im_start|>user\n<image>\nWhat colour is the bus?<|im_end|>\n\
             <|im_start|>assistant\n\nred<|im_end|>\n\
             <|im_start|>user\n<image>\nHow many dogs are there?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn chat_templates_need_content() {
        let err = ChatTemplate::Idefics2
            .render(&vqa_one_shot(), true)
            .unwrap_err();
        assert_eq!(
            err,
            PromptError::MissingContent {
                index: 5,
                role: "answer"
            }
        );
    }

    // transformers processing_idefics2.py: expand, then collapse doubled fake tokens.
    #[test]
    fn idefics2_expansion_collapses_adjacent_fake_tokens() {
        let tokens = ImageTokens::Idefics2 {
            per_image: 2,
            split: false,
        };
        let text = tokens.expand("a<image><image>b").unwrap();
        assert_eq!(
            text,
            "a<fake_token_around_image><image><image><fake_token_around_image>\
             <image><image><fake_token_around_image>b"
        );
        let split = ImageTokens::Idefics2 {
            per_image: 1,
            split: true,
        };
        let f = "<fake_token_around_image>";
        assert_eq!(
            split.expand("<image>").unwrap(),
            format!("{f}<image>").repeat(5) + f
        );
    }

    // transformers processing_idefics3.py (_prompt_single_image) and processing_llava.py.
    #[test]
    fn idefics3_and_llava_expansion() {
        let unsplit = ImageTokens::Idefics3 {
            per_image: 2,
            split: false,
        };
        assert_eq!(
            unsplit.expand("x<image>y").unwrap(),
            "x<fake_token_around_image><global-img><image><image><fake_token_around_image>y"
        );
        let split = ImageTokens::Idefics3 {
            per_image: 2,
            split: true,
        };
        assert_eq!(split.expand("<image>"), Err(PromptError::Idefics3Splitting));
        let llava = ImageTokens::Llava { per_image: 3 };
        assert_eq!(
            llava.expand("<image>\nQ").unwrap(),
            "<image><image><image>\nQ"
        );
    }

    #[test]
    fn placeholder_counting_and_mismatch() {
        let prompt = MimicTemplate::Idefics
            .render(&vqa_one_shot(), false)
            .unwrap();
        assert_eq!(count_image_placeholders(&prompt), 2);
        assert_eq!(check_image_count(&prompt, 2), Ok(()));
        let err = check_image_count(&prompt, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "prompt has 2 <image> placeholders but 3 images were given"
        );
        assert_eq!(count_image_placeholders("<image<image>>"), 1);
    }
}
