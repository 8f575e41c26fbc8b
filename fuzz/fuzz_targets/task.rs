//! A task file: a JSON list of {input, output, images} pairs.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mimic_models::rng::SplitMix64;
use mimic_models::task::{Task, Template, DEFAULT_TEMPLATE};

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let template = Template::new(DEFAULT_TEMPLATE).expect("the default template");
    let path = dir().path().join("task.json");
    if let Ok(task) = Task::from_text(text, &path, template, 2, 0) {
        // What a run does next with each held-out pair: draw shots, write the prompt.
        for query in &task.test {
            let _ = task.demonstrations(query, 1, &mut SplitMix64::new(0));
            let _ = task.template.demonstration(query);
            let _ = task.template.query_answer(query);
        }
    }
});
