//! Prompt templates for in-context learning tasks.

/// The default template: a demonstration is the whole of it, a query the part before
/// `{output}`.
pub const DEFAULT_TEMPLATE: &str = "Q: {input}\nA: {output}\n\n";

/// Twenty varied prompts (prose, code, lists, a chat turn, a task query) for checks that
/// compare two runs of a model token by token.
pub const SAMPLE_PROMPTS: [&str; 20] = [
    "The capital of France is",
    "Q: Germany\nA:",
    "Once upon a time, there was a",
    "The largest planet in the solar system is",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "The opposite of hot is",
    "1, 2, 3, 4,",
    "My favourite colour is",
    "The quick brown fox",
    "In 1492, Columbus",
    "Translate to French: cheese =>",
    "The chemical symbol for gold is",
    "A haiku about the sea:",
    "The first president of the United States was",
    "Paris is to France as Rome is to",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "The sun rises in the",
    "Machine learning is",
    "Dear Sir or Madam,",
];
