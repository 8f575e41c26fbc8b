//! The bad-input matrix: every subcommand that reads files or writes outputs, fed missing,
//! empty, truncated, corrupt and wrong-kind files, heads made for another model, shapes off by
//! one, NaN and Inf, prompts longer than the context, and outputs that cannot be written
//! (a parent that is a file, a read-only place, a full disk), outputs that already exist,
//! two `compile`s racing into one folder, and the leftovers of a killed run.
//!
//! Each row: a setup that makes its inputs in a temporary folder, the arguments, the exit
//! status expected (0 ok, 1 error, 2 usage, 3 verify over tolerance), what the error must say
//! (the file AND the problem), and the folders where nothing half-written may remain. No row
//! may panic. With `MIMIC_MATRIX_TABLE=PATH` the table is also written there as markdown
//! (docs/bad-input-matrix.md).
//!
//! Tests run as root (here and on CI), for whom permissions stop nothing, so unwritable
//! outputs are made without privileges:
//! - a parent that is a regular file (`ENOTDIR`);
//! - a path under `/sys`, where even root may not create files (`EPERM`, or `EROFS` in a
//!   container);
//! - a full disk: the child runs under `setrlimit(RLIMIT_FSIZE)` with `SIGXFSZ` ignored, so a
//!   write past the limit fails with `EFBIG` ("File too large") as it would on a full disk.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::*;
use mimic_models::heads::{expected_tensors, LoraConfig};
use mimic_models::{Method, Model};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A process id no process has (above the kernel's largest `pid_max`): the owner of a
/// leftover `.NAME.partial-PID` from a killed run.
const DEAD_PID: u32 = 4_999_999;

/// How a row runs the command.
#[derive(Clone, Copy)]
enum How {
    Plain,
    /// With `RLIMIT_FSIZE` at this many bytes and `SIGXFSZ` ignored: a full disk.
    FileSizeLimit(u64),
    /// Two processes at once, three rounds: each must succeed or fail cleanly.
    Racing,
}

/// The inputs every row may use, made once.
struct Env {
    dir: PathBuf,
    /// A tiny text model with a tokenizer: the mistral fixture with the idefics3 fixture's
    /// tokenizer (its 368 ids fit the model's 384).
    text: PathBuf,
    /// MimIC heads made for `text`, and for the llama fixture.
    heads: PathBuf,
    llama_heads: PathBuf,
    /// `text` compiled, and compiled with MimIC heads as inputs.
    compiled: PathBuf,
    compiled_inputs: PathBuf,
}

/// A named float32 tensor: name, shape, values.
type Tensor = (String, Vec<usize>, Vec<f32>);
type Tensors = Vec<Tensor>;

/// A check of what a row's command left in its folder.
type Check = fn(&Env, &Path) -> Result<(), String>;

/// What running a row gave: its arguments, its problems, the error it printed, its seconds.
type Outcome = (Vec<String>, Vec<String>, String, f64);

struct Case {
    name: &'static str,
    setup: fn(&Env, &Path) -> Vec<String>,
    code: i32,
    expect: &'static [&'static str],
    /// Folders (relative to the row's folder) where no `.partial-` may remain.
    clean: &'static [&'static str],
    /// Outputs (relative to the row's folder) that must not exist afterwards.
    absent: &'static [&'static str],
    how: How,
    /// A check of what the command left (a valid folder, a file untouched).
    after: Option<Check>,
}

fn case(
    name: &'static str,
    code: i32,
    expect: &'static [&'static str],
    setup: fn(&Env, &Path) -> Vec<String>,
) -> Case {
    Case {
        name,
        setup,
        code,
        expect,
        clean: &["."],
        absent: &[],
        how: How::Plain,
        after: None,
    }
}

impl Case {
    fn clean(mut self, dirs: &'static [&'static str]) -> Self {
        self.clean = dirs;
        self
    }
    fn absent(mut self, paths: &'static [&'static str]) -> Self {
        self.absent = paths;
        self
    }
    fn how(mut self, how: How) -> Self {
        self.how = how;
        self
    }
    fn after(mut self, check: Check) -> Self {
        self.after = Some(check);
        self
    }
}

// ---- inputs -------------------------------------------------------------------------------

fn s(p: impl AsRef<Path>) -> String {
    p.as_ref().display().to_string()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> String {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
    s(path)
}

/// A copy of a model folder (without the reference tensors).
fn copy_model(src: &Path, dst: &Path) -> String {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("reference") {
            std::fs::copy(e.path(), dst.join(&name)).unwrap();
        }
    }
    s(dst)
}

/// The start of a GGUF file (magic, version 3, 1 tensor, 4 metadata entries), cut short.
fn gguf_head() -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(20u64.to_le_bytes());
    b.extend(b"general.arch");
    b
}

/// A PNG of one of the shapes fixtures.
fn png() -> Vec<u8> {
    std::fs::read(fixtures_dir().join("vlm/shapes/red-circle.png")).unwrap()
}

/// Named float32 tensors as safetensors bytes with `metadata`.
fn safetensors_bytes(tensors: &[Tensor], metadata: Option<HashMap<String, String>>) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, shape, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, metadata).unwrap()
}

/// MimIC heads for `model` (small values), with `edit` applied to their tensors first.
fn heads_bytes(model: &Path, edit: fn(&mut Tensors)) -> Vec<u8> {
    let m = Model::open(model).unwrap();
    let cfg = &m.config;
    let mut tensors: Tensors = expected_tensors(Method::Mimic, cfg, &LoraConfig::default())
        .into_iter()
        .map(|(n, shape)| {
            let len = shape.iter().product();
            (n, shape, vec![0.01; len])
        })
        .collect();
    edit(&mut tensors);
    let meta = HashMap::from([
        ("mimic.format".to_string(), "1".to_string()),
        ("mimic.method".into(), "mimic".into()),
        ("mimic.fingerprint".into(), m.fingerprint()),
        ("mimic.layers".into(), cfg.num_layers.to_string()),
        ("mimic.heads".into(), cfg.num_heads.to_string()),
        ("mimic.head_dim".into(), cfg.head_dim.to_string()),
        ("mimic.hidden".into(), cfg.hidden_size.to_string()),
    ]);
    safetensors_bytes(&tensors, Some(meta))
}

/// A model folder's tensors, read back.
fn model_tensors(dir: &Path) -> Tensors {
    let (t, _) =
        mimic_models::weights::read_safetensors_with_metadata(&dir.join("model.safetensors"))
            .unwrap();
    t.into_iter().map(|(n, t)| (n, t.shape, t.data)).collect()
}

/// A copy of the text model whose tensors `edit` changed (re-serialised: a consistent file).
fn text_model_with(env: &Env, d: &Path, edit: fn(&mut Tensors)) -> String {
    let dir = d.join("model");
    copy_model(&env.text, &dir);
    let mut t = model_tensors(&dir);
    edit(&mut t);
    write(&dir.join("model.safetensors"), safetensors_bytes(&t, None));
    s(dir)
}

/// Sets the first value of tensor `name` to `x`.
fn poison(t: &mut [Tensor], name: &str, x: f32) {
    let e = t.iter_mut().find(|e| e.0 == name).unwrap();
    e.2[0] = x;
}

/// A copy of the text model whose safetensors header gives `model.norm.weight` one more
/// element than its bytes hold.
fn header_off_by_one(env: &Env, d: &Path) -> String {
    let dir = d.join("model");
    copy_model(&env.text, &dir);
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let shape = &mut header["model.norm.weight"]["shape"][0];
    *shape = serde_json::json!(shape.as_u64().unwrap() + 1);
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(n.max(text.len()), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    write(&path, out);
    s(dir)
}

fn task_json(pairs: &[(&str, &str)]) -> String {
    let v: Vec<_> = pairs
        .iter()
        .map(|(i, o)| serde_json::json!({"input": i, "output": o}))
        .collect();
    serde_json::to_string(&v).unwrap()
}

fn good_task(d: &Path) -> String {
    let pairs = [
        ("France", "Paris"),
        ("Italy", "Rome"),
        ("Spain", "Madrid"),
        ("Japan", "Tokyo"),
        ("Peru", "Lima"),
        ("Chile", "Santiago"),
    ];
    write(&d.join("task.json"), task_json(&pairs))
}

/// A path whose parent is a regular file: no folder can be made there (`ENOTDIR`).
fn under_a_file(d: &Path, rel: &str) -> String {
    write(&d.join("a-file"), b"not a folder");
    s(d.join("a-file").join(rel))
}

/// A path under `/sys`, where not even root may create anything.
fn read_only(d: &Path, name: &str) -> String {
    let tag = d.file_name().unwrap().to_string_lossy().to_string();
    format!("/sys/mimic-{tag}-{name}")
}

// ---- commands -----------------------------------------------------------------------------

fn generate(model: &str, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["generate", "--model", model, "--prompt", "hello"]);
    a.extend(args(extra));
    a.extend(args(&["--max-new-tokens", "2", "--threads", "1"]));
    a
}

fn compile(model: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["compile", "--model", model, "--out", out]);
    a.extend(args(extra));
    a
}

fn verify(env: &Env, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["verify", "--model", &s(&env.text)]);
    a.extend(args(&[
        "--attention",
        "unfused",
        "--prompts",
        "2",
        "--steps",
        "2",
        "--threads",
        "1",
    ]));
    a.extend(args(extra));
    a
}

fn eval(model: &str, task: &str, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["eval", "--model", model, "--task", task]);
    a.extend(args(&[
        "--test-size",
        "2",
        "--limit",
        "1",
        "--max-new-tokens",
        "2",
        "--threads",
        "1",
    ]));
    a.extend(args(extra));
    a
}

fn train(model: &str, task: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        "train", "--model", model, "--task", task, "--out", out, "--steps", "1", "--batch", "1",
        "--shots", "1",
    ]);
    a.extend(args(&["--test-size", "2", "--threads", "1"]));
    a.extend(args(extra));
    a
}

fn align(env: &Env, encoder: &str, out: &str) -> Vec<String> {
    args(&[
        "align",
        "--model",
        &s(&env.text),
        "--encoder",
        encoder,
        "--out",
        out,
    ])
}

fn run(compiled: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["run", "--compiled", &s(compiled)]);
    a.extend(args(extra));
    a.extend(args(&["--max-new-tokens", "2", "--threads", "1"]));
    a
}

fn bench(model: &str, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["bench", "--model", model]);
    a.extend(args(&[
        "--prompt-len",
        "4",
        "--new-tokens",
        "2",
        "--warmup",
        "0",
        "--iterations",
        "1",
        "--no-batched",
        "--threads",
        "1",
    ]));
    a.extend(args(extra));
    a
}

fn vlm(name: &str) -> String {
    s(fixtures_dir().join("vlm").join(name))
}

// ---- checks after a row -------------------------------------------------------------------

/// `D/out` is a whole compiled folder: its contract reads, its files are there, and it runs.
fn valid_compiled(_: &Env, d: &Path) -> Result<(), String> {
    let out = d.join("out");
    let c = mimic_compiler::Contract::read(&out).map_err(|e| e.to_string())?;
    for f in ["model.onnx", "model.onnx.data", "tokenizer.json"] {
        if !out.join(f).is_file() {
            return Err(format!("{f} missing from {}", out.display()));
        }
    }
    if c.config.num_layers == 0 {
        return Err("a contract without layers".into());
    }
    let o = mimic(&args(&[
        "generate",
        "--compiled",
        &s(&out),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "2",
    ]));
    if !o.status.success() {
        return Err(format!(
            "the folder does not run: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}

/// `D/out` is valid and the stale file put there before is gone.
fn replaced_compiled(env: &Env, d: &Path) -> Result<(), String> {
    if d.join("out/stale.txt").exists() {
        return Err("the old folder's stale.txt is still there".into());
    }
    valid_compiled(env, d)
}

/// `D/a-file` still holds what it held.
fn file_untouched(_: &Env, d: &Path) -> Result<(), String> {
    let p = d.join("a-file");
    match std::fs::read(&p) {
        Ok(b) if b == b"not a folder" => Ok(()),
        _ => Err(format!("{} was changed", p.display())),
    }
}

/// `D/out.json` is whole JSON.
fn valid_json(_: &Env, d: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(d.join("out.json")).map_err(|e| e.to_string())?;
    serde_json::from_str::<serde_json::Value>(&text)
        .map(|_| ())
        .map_err(|e| format!("out.json: {e}"))
}

// ---- the table ----------------------------------------------------------------------------

fn cases() -> Vec<Case> {
    vec![
        // generate: models that are not there, not whole, or not models.
        case(
            "generate: model path missing",
            1,
            &["none/model.gguf", "not found"],
            |_, d| generate(&s(d.join("none/model.gguf")), &[]),
        ),
        case(
            "generate: empty GGUF",
            1,
            &["empty.gguf", "GGUF"],
            |_, d| generate(&write(&d.join("empty.gguf"), b""), &[]),
        ),
        case(
            "generate: truncated GGUF header",
            1,
            &["cut.gguf", "truncated"],
            |_, d| generate(&write(&d.join("cut.gguf"), gguf_head()), &[]),
        ),
        case(
            "generate: GGUF with a corrupt magic",
            1,
            &["bad.gguf", "GGUF"],
            |_, d| {
                let mut b = gguf_head();
                b[3] = b'X';
                generate(&write(&d.join("bad.gguf"), b), &[])
            },
        ),
        case(
            "generate: a JSON file given as the model",
            1,
            &["model.json"],
            |_, d| generate(&write(&d.join("model.json"), "{\"a\": 1}"), &[]),
        ),
        case(
            "generate: a PNG given as the model",
            1,
            &["model.png"],
            |_, d| generate(&write(&d.join("model.png"), png()), &[]),
        ),
        case(
            "generate: model folder without config.json",
            1,
            &["config.json", "not found"],
            |_, d| {
                std::fs::create_dir_all(d.join("model")).unwrap();
                generate(&s(d.join("model")), &[])
            },
        ),
        case(
            "generate: config.json that is not JSON",
            1,
            &["config.json"],
            |e, d| {
                let m = copy_model(&e.text, &d.join("model"));
                write(
                    &d.join("model/config.json"),
                    "{\"model_type\": \"mistral\",",
                );
                generate(&m, &[])
            },
        ),
        case(
            "generate: empty model.safetensors",
            1,
            &["model.safetensors", "not a valid safetensors"],
            |e, d| {
                let m = copy_model(&e.text, &d.join("model"));
                write(&d.join("model/model.safetensors"), b"");
                generate(&m, &[])
            },
        ),
        case(
            "generate: truncated model.safetensors",
            1,
            &["model.safetensors", "not a valid safetensors"],
            |e, d| {
                let m = copy_model(&e.text, &d.join("model"));
                let p = d.join("model/model.safetensors");
                let b = std::fs::read(&p).unwrap();
                write(&p, &b[..b.len() - 1000]);
                generate(&m, &["--backend", "torch"])
            },
        ),
        case(
            "generate: safetensors header with a shape off by one",
            1,
            &["model.safetensors", "not a valid safetensors"],
            |e, d| generate(&header_off_by_one(e, d), &[]),
        ),
        case(
            "generate: a weight one row short",
            1,
            &["model.norm.weight", "shape"],
            |e, d| {
                let m = text_model_with(e, d, |t| {
                    let w = t.iter_mut().find(|x| x.0 == "model.norm.weight").unwrap();
                    w.1[0] -= 1;
                    w.2.pop();
                });
                generate(&m, &["--backend", "torch"])
            },
        ),
        case(
            "generate: NaN in a weight (torch)",
            1,
            &["model.layers.0.mlp.down_proj.weight", "NaN"],
            |e, d| {
                let m = text_model_with(e, d, |t| {
                    poison(t, "model.layers.0.mlp.down_proj.weight", f32::NAN)
                });
                generate(&m, &["--backend", "torch"])
            },
        ),
        case(
            "generate: Inf in a weight (onnx)",
            1,
            &["model.embed_tokens.weight", "inf"],
            |e, d| {
                let m = text_model_with(e, d, |t| {
                    poison(t, "model.embed_tokens.weight", f32::INFINITY)
                });
                generate(&m, &[])
            },
        ),
        case(
            "generate: tokenizer.json that is not JSON",
            1,
            &["tokenizer.json"],
            |e, d| {
                let m = copy_model(&e.text, &d.join("model"));
                write(&d.join("model/tokenizer.json"), "{\"model\": ");
                generate(&m, &[])
            },
        ),
        case(
            "generate: heads file missing",
            1,
            &["h.safetensors", "not found"],
            |e, d| generate(&s(&e.text), &["--heads", &s(d.join("h.safetensors"))]),
        ),
        case(
            "generate: a GGUF given as heads",
            1,
            &["heads.gguf"],
            |e, d| {
                generate(
                    &s(&e.text),
                    &["--heads", &write(&d.join("heads.gguf"), gguf_head())],
                )
            },
        ),
        case(
            "generate: a model's weights given as heads",
            1,
            &["model.safetensors", "not a mimic heads file"],
            |e, _| {
                generate(
                    &s(&e.text),
                    &["--heads", &s(e.text.join("model.safetensors"))],
                )
            },
        ),
        case(
            "generate: heads made for another model (onnx)",
            1,
            &["llama-heads.safetensors", "fingerprint"],
            |e, _| generate(&s(&e.text), &["--heads", &s(&e.llama_heads)]),
        ),
        case(
            "generate: heads made for another model (torch)",
            1,
            &["llama-heads.safetensors", "fingerprint"],
            |e, _| {
                generate(
                    &s(&e.text),
                    &["--heads", &s(&e.llama_heads), "--backend", "torch"],
                )
            },
        ),
        case(
            "generate: NaN in heads",
            1,
            &["nan.safetensors", "NaN"],
            |e, d| {
                let h = write(
                    &d.join("nan.safetensors"),
                    heads_bytes(&e.text, |t| t[0].2[3] = f32::NAN),
                );
                generate(&s(&e.text), &["--heads", &h])
            },
        ),
        case(
            "generate: Inf in heads (torch)",
            1,
            &["inf.safetensors", "inf"],
            |e, d| {
                let h = write(
                    &d.join("inf.safetensors"),
                    heads_bytes(&e.text, |t| t[2].2[0] = f32::NEG_INFINITY),
                );
                generate(&s(&e.text), &["--heads", &h, "--backend", "torch"])
            },
        ),
        case(
            "generate: heads with a shape off by one",
            1,
            &["short.safetensors", "shape"],
            |e, d| {
                let h = write(
                    &d.join("short.safetensors"),
                    heads_bytes(&e.text, |t| {
                        let last = t[0].1.len() - 1;
                        t[0].1[last] -= 1;
                        let n = t[0].1.iter().product();
                        t[0].2.truncate(n);
                    }),
                );
                generate(&s(&e.text), &["--heads", &h])
            },
        ),
        case(
            "generate: truncated heads",
            1,
            &["cut.safetensors", "not a valid safetensors"],
            |e, d| {
                let b = std::fs::read(&e.heads).unwrap();
                let h = write(&d.join("cut.safetensors"), &b[..b.len() / 2]);
                generate(&s(&e.text), &["--heads", &h])
            },
        ),
        case(
            "generate: a leftover .h.safetensors.partial-PID is not the heads",
            1,
            &["h.safetensors", "not found"],
            |e, d| {
                write(
                    &d.join(format!(".h.safetensors.partial-{DEAD_PID}")),
                    std::fs::read(&e.heads).unwrap(),
                );
                generate(&s(&e.text), &["--heads", &s(d.join("h.safetensors"))])
            },
        )
        .clean(&[]),
        case(
            "generate: prompt longer than the context (onnx)",
            1,
            &["longer than the model's context of 128"],
            |e, _| {
                let mut a = generate(&s(&e.text), &[]);
                a[4] = "word ".repeat(200);
                a
            },
        ),
        case(
            "generate: prompt longer than the context (torch)",
            1,
            &["longer than the model's context of 128"],
            |e, _| {
                let mut a = generate(&s(&e.text), &["--backend", "torch"]);
                a[4] = "word ".repeat(200);
                a
            },
        ),
        case("generate: a PNG that is text", 1, &["notes.png"], |_, d| {
            let img = write(&d.join("notes.png"), "these are notes, not pixels");
            let mut a = generate(&vlm("idefics3"), &["--image", &img]);
            a[4] = "<image>hi".into();
            a
        }),
        case(
            "generate: --compiled folder missing",
            1,
            &["nothing: not found"],
            |_, d| {
                args(&[
                    "generate",
                    "--compiled",
                    &s(d.join("nothing")),
                    "--prompt",
                    "hi",
                ])
            },
        ),
        case(
            "generate: a leftover .out.partial-PID folder is not a compiled folder",
            1,
            &["mimic.json", "not found"],
            |e, d| {
                let p = d.join(format!(".out.partial-{DEAD_PID}"));
                copy_model(&e.compiled, &p);
                std::fs::remove_file(p.join("mimic.json")).unwrap();
                args(&["generate", "--compiled", &s(&p), "--prompt", "hi"])
            },
        )
        .clean(&[]),
        case(
            "generate: --compiled folder with a corrupt mimic.json",
            1,
            &["mimic.json", "invalid contract"],
            |e, d| {
                let p = d.join("compiled");
                copy_model(&e.compiled, &p);
                write(&p.join("mimic.json"), "{\"contract_version\": ");
                args(&["generate", "--compiled", &s(&p), "--prompt", "hi"])
            },
        ),
        // compile: bad input, and outputs that cannot be written or already exist.
        case(
            "compile: model path missing",
            1,
            &["none", "not found"],
            |_, d| compile(&s(d.join("none")), &s(d.join("out")), &[]),
        )
        .absent(&["out"]),
        case(
            "compile: a JSON file given as the model",
            1,
            &["model.json"],
            |_, d| compile(&write(&d.join("model.json"), "[]"), &s(d.join("out")), &[]),
        )
        .absent(&["out"]),
        case(
            "compile: truncated GGUF",
            1,
            &["cut.gguf", "truncated"],
            |_, d| {
                compile(
                    &write(&d.join("cut.gguf"), gguf_head()),
                    &s(d.join("out")),
                    &[],
                )
            },
        )
        .absent(&["out"]),
        case(
            "compile: a weight one row short",
            1,
            &["model.norm.weight", "shape"],
            |e, d| {
                let m = text_model_with(e, d, |t| {
                    let w = t.iter_mut().find(|x| x.0 == "model.norm.weight").unwrap();
                    w.1[0] -= 1;
                    w.2.pop();
                });
                compile(&m, &s(d.join("out")), &[])
            },
        )
        .absent(&["out"]),
        case(
            "compile: NaN in a weight",
            1,
            &["model.layers.1.self_attn.q_proj.weight", "NaN"],
            |e, d| {
                let m = text_model_with(e, d, |t| {
                    poison(t, "model.layers.1.self_attn.q_proj.weight", f32::NAN)
                });
                compile(&m, &s(d.join("out")), &[])
            },
        )
        .absent(&["out"]),
        case(
            "compile: heads made for another model",
            1,
            &["llama-heads.safetensors", "fingerprint"],
            |e, d| {
                compile(
                    &s(&e.text),
                    &s(d.join("out")),
                    &["--heads", &s(&e.llama_heads)],
                )
            },
        )
        .absent(&["out"]),
        case(
            "compile: text-model heads on a vision-language model",
            1,
            &["heads.safetensors", "fingerprint"],
            |e, d| {
                compile(
                    &vlm("idefics3"),
                    &s(d.join("out")),
                    &["--heads", &s(&e.heads)],
                )
            },
        )
        .absent(&["out"]),
        case(
            "compile: NaN in heads",
            1,
            &["nan.safetensors", "NaN"],
            |e, d| {
                let h = write(
                    &d.join("nan.safetensors"),
                    heads_bytes(&e.text, |t| t[1].2[0] = f32::NAN),
                );
                compile(&s(&e.text), &s(d.join("out")), &["--heads", &h])
            },
        )
        .absent(&["out"]),
        case(
            "compile: a GGUF given as heads",
            1,
            &["heads.gguf"],
            |e, d| {
                let h = write(&d.join("heads.gguf"), gguf_head());
                compile(&s(&e.text), &s(d.join("out")), &["--heads", &h])
            },
        )
        .absent(&["out"]),
        case(
            "compile: out's parent is a regular file (ENOTDIR)",
            1,
            &["a-file", "not a folder"],
            |e, d| compile(&s(&e.text), &under_a_file(d, "out"), &[]),
        )
        .after(file_untouched),
        case(
            "compile: out in a read-only place (/sys)",
            1,
            &["/sys/mimic-"],
            |e, d| compile(&s(&e.text), &read_only(d, "out"), &[]),
        ),
        case(
            "compile: out on a full disk (RLIMIT_FSIZE)",
            1,
            &["out", "File too large"],
            |e, d| compile(&s(&e.text), &s(d.join("out")), &[]),
        )
        .absent(&["out"])
        .how(How::FileSizeLimit(64 << 10)),
        case(
            "compile: out already exists (replaced whole)",
            0,
            &[],
            |e, d| {
                write(&d.join("out/stale.txt"), "from an earlier run");
                compile(&s(&e.text), &s(d.join("out")), &[])
            },
        )
        .after(replaced_compiled),
        case(
            "compile: out exists as a regular file",
            1,
            &["a-file", "not a folder"],
            |e, d| {
                write(&d.join("a-file"), b"not a folder");
                compile(&s(&e.text), &s(d.join("a-file")), &[])
            },
        )
        .after(file_untouched),
        case(
            "compile: a leftover .out.partial-PID of a killed run",
            0,
            &[],
            |e, d| {
                write(
                    &d.join(format!(".out.partial-{DEAD_PID}/model.onnx")),
                    b"half",
                );
                compile(&s(&e.text), &s(d.join("out")), &[])
            },
        )
        .after(valid_compiled),
        case(
            "compile: two compiles into one folder at once",
            0,
            &[],
            |e, d| compile(&s(&e.text), &s(d.join("out")), &[]),
        )
        .how(How::Racing)
        .after(valid_compiled),
        case("compile: no --out (usage)", 2, &["--out"], |e, _| {
            args(&["compile", "--model", &s(&e.text)])
        }),
        // verify
        case(
            "verify: heads file missing",
            1,
            &["h.safetensors", "not found"],
            |e, d| verify(e, &["--heads", &s(d.join("h.safetensors"))]),
        ),
        case(
            "verify: heads made for another model",
            1,
            &["llama-heads.safetensors", "fingerprint"],
            |e, _| verify(e, &["--heads", &s(&e.llama_heads)]),
        ),
        case(
            "verify: NaN in heads",
            1,
            &["nan.safetensors", "NaN"],
            |e, d| {
                let h = write(
                    &d.join("nan.safetensors"),
                    heads_bytes(&e.text, |t| t[0].2[0] = f32::NAN),
                );
                verify(e, &["--heads", &h])
            },
        ),
        case(
            "verify: --task missing",
            1,
            &["none.json", "no such file"],
            |e, d| verify(e, &["--task", &s(d.join("none.json"))]),
        ),
        case("verify: --task truncated JSON", 1, &["cut.json"], |e, d| {
            let t = write(&d.join("cut.json"), "[{\"input\": \"France\", \"out");
            verify(e, &["--task", &t])
        }),
        case(
            "verify: --json whose parent is a regular file",
            1,
            &["a-file", "not a folder"],
            |e, d| verify(e, &["--json", &under_a_file(d, "v.json")]),
        )
        .after(file_untouched),
        case(
            "verify: over its tolerance (exit 3)",
            3,
            &["verification failed"],
            |e, _| verify(e, &["--tolerance", "0"]),
        ),
        // eval
        case(
            "eval: --task missing",
            1,
            &["none.json", "no such file"],
            |e, d| eval(&s(&e.text), &s(d.join("none.json")), &[]),
        ),
        case("eval: --task empty file", 1, &["empty.json"], |e, d| {
            eval(&s(&e.text), &write(&d.join("empty.json"), ""), &[])
        }),
        case("eval: --task truncated JSON", 1, &["cut.json"], |e, d| {
            eval(
                &s(&e.text),
                &write(&d.join("cut.json"), "[{\"input\": \"France\", \"outp"),
                &[],
            )
        }),
        case(
            "eval: --task a JSON object, not a list",
            1,
            &["object.json"],
            |e, d| {
                eval(
                    &s(&e.text),
                    &write(&d.join("object.json"), "{\"input\": \"France\"}"),
                    &[],
                )
            },
        ),
        case("eval: --task a PNG", 1, &["task.png"], |e, d| {
            eval(&s(&e.text), &write(&d.join("task.png"), png()), &[])
        }),
        case(
            "eval: heads made for another model",
            1,
            &["llama-heads.safetensors", "fingerprint"],
            |e, d| {
                eval(
                    &s(&e.text),
                    &good_task(d),
                    &["--method", "heads", "--heads", &s(&e.llama_heads)],
                )
            },
        ),
        case(
            "eval: Inf in heads",
            1,
            &["inf.safetensors", "inf"],
            |e, d| {
                let h = write(
                    &d.join("inf.safetensors"),
                    heads_bytes(&e.text, |t| t[1].2[1] = f32::INFINITY),
                );
                eval(
                    &s(&e.text),
                    &good_task(d),
                    &["--method", "heads", "--heads", &h],
                )
            },
        ),
        case(
            "eval: a task image that is missing",
            1,
            &["gone.png", "not found"],
            |_, d| {
                let t = write(
                    &d.join("task.json"),
                    serde_json::json!([
                        {"input": "<image>colour?", "output": "red", "images": ["gone.png"]},
                        {"input": "<image>colour?", "output": "red", "images": ["gone.png"]},
                        {"input": "<image>colour?", "output": "red", "images": ["gone.png"]}
                    ])
                    .to_string(),
                );
                eval(&vlm("idefics3"), &t, &["--method", "zero-shot"])
            },
        ),
        case("eval: --dataset root missing", 1, &["no-root"], |_, d| {
            args(&[
                "eval",
                "--model",
                &vlm("idefics3"),
                "--dataset",
                "easy-vqa",
                "--root",
                &s(d.join("no-root")),
                "--limit",
                "1",
            ])
        }),
        case(
            "eval: --json on a full disk (RLIMIT_FSIZE)",
            1,
            &["out.json", "File too large"],
            |e, d| {
                eval(
                    &s(&e.text),
                    &good_task(d),
                    &["--method", "zero-shot", "--json", &s(d.join("out.json"))],
                )
            },
        )
        .absent(&["out.json"])
        .how(How::FileSizeLimit(64)),
        // train (src/cli/train.rs)
        case(
            "train: --task missing",
            1,
            &["none.json", "no such file"],
            |e, d| train(&s(&e.text), &s(d.join("none.json")), &s(d.join("out")), &[]),
        )
        .absent(&["out/heads.safetensors"]),
        case("train: --task truncated JSON", 1, &["cut.json"], |e, d| {
            train(
                &s(&e.text),
                &write(&d.join("cut.json"), "[{\"input\": "),
                &s(d.join("out")),
                &[],
            )
        })
        .absent(&["out/heads.safetensors"]),
        case(
            "train: a JSON file given as the model",
            1,
            &["model.json"],
            |_, d| {
                train(
                    &write(&d.join("model.json"), "{}"),
                    &good_task(d),
                    &s(d.join("out")),
                    &[],
                )
            },
        )
        .absent(&["out/heads.safetensors"]),
        case(
            "train: --out's parent is a regular file (ENOTDIR)",
            1,
            &["a-file"],
            |e, d| train(&s(&e.text), &good_task(d), &under_a_file(d, "out"), &[]),
        )
        .after(file_untouched),
        case(
            "train: --out in a read-only place (/sys)",
            1,
            &["/sys/mimic-"],
            |e, d| train(&s(&e.text), &good_task(d), &read_only(d, "out"), &[]),
        ),
        case(
            "train: --out on a full disk (RLIMIT_FSIZE)",
            1,
            &["File too large"],
            |e, d| train(&s(&e.text), &good_task(d), &s(d.join("out")), &[]),
        )
        .absent(&["out/heads.safetensors"])
        .clean(&[".", "out"])
        .how(How::FileSizeLimit(4 << 10)),
        case(
            "train: --resume from a corrupt checkpoint",
            1,
            &["checkpoint.safetensors"],
            |e, d| {
                write(
                    &d.join("out/checkpoint.safetensors"),
                    b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":",
                );
                train(&s(&e.text), &good_task(d), &s(d.join("out")), &["--resume"])
            },
        )
        .absent(&["out/heads.safetensors"])
        .clean(&[".", "out"]),
        // align (src/cli/align.rs)
        case(
            "align: --encoder missing",
            1,
            &["none.safetensors", "not found"],
            |e, d| align(e, &s(d.join("none.safetensors")), &s(d.join("out"))),
        )
        .absent(&["out/model"]),
        case(
            "align: a JSON file given as the encoder",
            1,
            &["encoder.json"],
            |e, d| align(e, &write(&d.join("encoder.json"), "{}"), &s(d.join("out"))),
        )
        .absent(&["out/model"]),
        case(
            "align: heads given as the encoder",
            1,
            &["heads.safetensors"],
            |e, d| align(e, &s(&e.heads), &s(d.join("out"))),
        )
        .absent(&["out/model"]),
        case(
            "align: truncated encoder",
            1,
            &["cut.safetensors", "not a valid safetensors"],
            |e, d| {
                let b = std::fs::read(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("data/vlm/easy-vqa-encoder.safetensors"),
                )
                .unwrap();
                align(
                    e,
                    &write(&d.join("cut.safetensors"), &b[..b.len() / 2]),
                    &s(d.join("out")),
                )
            },
        )
        .absent(&["out/model"]),
        // run (src/cli/run.rs)
        case(
            "run: --compiled folder missing",
            1,
            &["nothing", "not found"],
            |_, d| run(&d.join("nothing"), &["--prompt", "hi"]),
        ),
        case(
            "run: a leftover .out.partial-PID folder is not a compiled folder",
            1,
            &["mimic.json", "not found"],
            |e, d| {
                let p = d.join(format!(".out.partial-{DEAD_PID}"));
                copy_model(&e.compiled, &p);
                std::fs::remove_file(p.join("mimic.json")).unwrap();
                run(&p, &["--prompt", "hi"])
            },
        )
        .clean(&[]),
        case(
            "run: corrupt mimic.json",
            1,
            &["mimic.json", "invalid contract"],
            |e, d| {
                let p = d.join("compiled");
                copy_model(&e.compiled, &p);
                write(&p.join("mimic.json"), "[1, 2");
                run(&p, &["--prompt", "hi"])
            },
        ),
        case("run: truncated model.onnx", 1, &["model.onnx"], |e, d| {
            let p = d.join("compiled");
            copy_model(&e.compiled, &p);
            let b = std::fs::read(p.join("model.onnx")).unwrap();
            write(&p.join("model.onnx"), &b[..b.len() / 2]);
            run(&p, &["--prompt", "hi"])
        }),
        case(
            "run: truncated model.onnx.data",
            1,
            &["model.onnx"],
            |e, d| {
                let p = d.join("compiled");
                copy_model(&e.compiled, &p);
                let b = std::fs::read(p.join("model.onnx.data")).unwrap();
                write(&p.join("model.onnx.data"), &b[..b.len() / 2]);
                run(&p, &["--prompt", "hi"])
            },
        ),
        case(
            "run: tokenizer.json missing from the folder",
            1,
            &["tokenizer.json", "not found"],
            |e, d| {
                let p = d.join("compiled");
                copy_model(&e.compiled, &p);
                std::fs::remove_file(p.join("tokenizer.json")).unwrap();
                run(&p, &["--prompt", "hi"])
            },
        ),
        case(
            "run: --prompts-file missing",
            1,
            &["none.jsonl", "No such file"],
            |e, d| run(&e.compiled, &["--prompts-file", &s(d.join("none.jsonl"))]),
        ),
        case(
            "run: --prompts-file with a corrupt line",
            1,
            &["p.jsonl", "line 2"],
            |e, d| {
                let f = write(&d.join("p.jsonl"), "{\"prompt\": \"hi\"}\n{\"prompt\": \n");
                run(&e.compiled, &["--prompts-file", &f])
            },
        ),
        case(
            "run: --heads file missing",
            1,
            &["h.safetensors", "not found"],
            |e, d| {
                let spec = format!("t={}", d.join("h.safetensors").display());
                run(&e.compiled_inputs, &["--heads", &spec, "--prompt", "t:hi"])
            },
        ),
        case(
            "run: heads made for another model",
            1,
            &["llama-heads.safetensors", "fingerprint"],
            |e, _| {
                let spec = format!("t={}", e.llama_heads.display());
                run(&e.compiled_inputs, &["--heads", &spec, "--prompt", "t:hi"])
            },
        ),
        case(
            "run: NaN in heads",
            1,
            &["nan.safetensors", "NaN"],
            |e, d| {
                let h = write(
                    &d.join("nan.safetensors"),
                    heads_bytes(&e.text, |t| t[2].2[5] = f32::NAN),
                );
                run(
                    &e.compiled_inputs,
                    &["--heads", &format!("t={h}"), "--prompt", "t:hi"],
                )
            },
        ),
        case(
            "run: prompt longer than the context",
            1,
            &["128"],
            |e, _| run(&e.compiled, &["--prompt", &"word ".repeat(200)]),
        ),
        case(
            "run: --json whose parent is a regular file",
            1,
            &["a-file", "not a folder"],
            |e, d| {
                run(
                    &e.compiled,
                    &["--prompt", "hi", "--json", &under_a_file(d, "r.json")],
                )
            },
        )
        .after(file_untouched),
        case(
            "run: --json on a full disk (RLIMIT_FSIZE)",
            1,
            &["out.json", "File too large"],
            |e, d| {
                run(
                    &e.compiled,
                    &["--prompt", "hi", "--json", &s(d.join("out.json"))],
                )
            },
        )
        .absent(&["out.json"])
        .how(How::FileSizeLimit(64)),
        // bench
        case(
            "bench: model path missing",
            1,
            &["none", "not found"],
            |_, d| bench(&s(d.join("none")), &["--backends", "torch"]),
        ),
        case(
            "bench: heads made for another model",
            1,
            &["llama-heads.safetensors", "fingerprint"],
            |e, _| {
                bench(
                    &s(&e.text),
                    &["--backends", "onnx-mimic", "--heads", &s(&e.llama_heads)],
                )
            },
        ),
        case(
            "bench: NaN in heads",
            1,
            &["nan.safetensors", "NaN"],
            |e, d| {
                let h = write(
                    &d.join("nan.safetensors"),
                    heads_bytes(&e.text, |t| t[0].2[0] = f32::NAN),
                );
                bench(&s(&e.text), &["--backends", "onnx-mimic", "--heads", &h])
            },
        ),
        case(
            "bench: --task missing",
            1,
            &["none.json", "no such file"],
            |e, d| {
                bench(
                    &s(&e.text),
                    &["--backends", "onnx-icl", "--task", &s(d.join("none.json"))],
                )
            },
        ),
        case(
            "bench: --json whose parent is a regular file",
            1,
            &["a-file", "not a folder"],
            |e, d| {
                bench(
                    &s(&e.text),
                    &["--backends", "torch", "--json", &under_a_file(d, "b.json")],
                )
            },
        )
        .after(file_untouched),
        // bench-train, bench-vision
        case(
            "bench-train: --task missing",
            1,
            &["none.json", "no such file"],
            |e, d| {
                args(&[
                    "bench-train",
                    "--model",
                    &s(&e.text),
                    "--task",
                    &s(d.join("none.json")),
                    "--python",
                    "none",
                    "--steps",
                    "1",
                    "--warmup",
                    "0",
                ])
            },
        ),
        case(
            "bench-train: a PNG given as the model",
            1,
            &["model.png"],
            |_, d| {
                args(&[
                    "bench-train",
                    "--model",
                    &write(&d.join("model.png"), png()),
                    "--python",
                    "none",
                    "--steps",
                    "1",
                    "--warmup",
                    "0",
                ])
            },
        ),
        case(
            "bench-vision: a PNG that is text",
            1,
            &["notes.png"],
            |_, d| {
                args(&[
                    "bench-vision",
                    "--model",
                    &vlm("llava"),
                    "--image",
                    &write(&d.join("notes.png"), "notes"),
                    "--repeats",
                    "1",
                    "--python",
                    "none",
                ])
            },
        ),
        case(
            "bench-vision: image missing",
            1,
            &["gone.png", "not found"],
            |_, d| {
                args(&[
                    "bench-vision",
                    "--model",
                    &vlm("llava"),
                    "--image",
                    &s(d.join("gone.png")),
                    "--repeats",
                    "1",
                    "--python",
                    "none",
                ])
            },
        ),
        case(
            "bench-vision: a text model",
            1,
            &["model", "vision-language"],
            |e, _| {
                args(&[
                    "bench-vision",
                    "--model",
                    &s(&e.text),
                    "--repeats",
                    "1",
                    "--python",
                    "none",
                ])
            },
        ),
        // doctor
        case(
            "doctor: --json whose parent is a regular file",
            1,
            &["a-file", "not a folder"],
            |_, d| args(&["doctor", "--json", &under_a_file(d, "d.json")]),
        )
        .after(file_untouched),
        case(
            "doctor: --json in a read-only place (/sys)",
            1,
            &["/sys/mimic-"],
            |_, d| args(&["doctor", "--json", &read_only(d, "d.json")]),
        ),
        case(
            "doctor: --json on a full disk (RLIMIT_FSIZE)",
            1,
            &["out.json", "File too large"],
            |_, d| args(&["doctor", "--json", &s(d.join("out.json"))]),
        )
        .absent(&["out.json"])
        .how(How::FileSizeLimit(16)),
        case(
            "doctor: --json over an existing file (replaced whole)",
            0,
            &[],
            |_, d| {
                write(&d.join("out.json"), "stale, and not JSON");
                args(&["doctor", "--json", &s(d.join("out.json"))])
            },
        )
        .after(valid_json),
        case(
            "doctor: a leftover .out.json.partial-PID of a killed run",
            0,
            &[],
            |_, d| {
                write(&d.join(format!(".out.json.partial-{DEAD_PID}")), "{\"half");
                args(&["doctor", "--json", &s(d.join("out.json"))])
            },
        )
        .after(valid_json),
        // usage errors
        case(
            "generate: unknown --backend (usage)",
            2,
            &["tpu"],
            |_, _| args(&["generate", "--backend", "tpu", "--prompt", "hi"]),
        ),
        case(
            "completions: unknown shell (usage)",
            2,
            &["tcsh"],
            |_, _| args(&["completions", "tcsh"]),
        ),
    ]
}

// ---- running a row ------------------------------------------------------------------------

#[cfg(target_os = "linux")]
fn limit_file_size(cmd: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    extern "C" {
        fn setrlimit(resource: i32, rlim: *const [u64; 2]) -> i32;
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const RLIMIT_FSIZE: i32 = 1;
    const SIGXFSZ: i32 = 25;
    const SIG_IGN: usize = 1;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            signal(SIGXFSZ, SIG_IGN);
            if setrlimit(RLIMIT_FSIZE, &[bytes, bytes]) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn command(args: &[String], how: How) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mimic"));
    cmd.args(args)
        .env("MIMIC_CACHE", std::env::temp_dir().join("mimic-test-cache"))
        .env_remove("RUST_LOG");
    if let How::FileSizeLimit(bytes) = how {
        #[cfg(target_os = "linux")]
        limit_file_size(&mut cmd, bytes);
        #[cfg(not(target_os = "linux"))]
        let _ = bytes;
    }
    cmd
}

/// `.partial-` files, and `.old-` folders, left under `dir` (not below a `.partial-` one).
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.contains(".partial-") || name.contains(".old-") {
            found.push(s(e.path()));
        } else if e.path().is_dir() {
            found.extend(leftovers(&e.path()));
        }
    }
    found
}

/// Whether the command needs libtorch (absent from a deployment build).
fn needs_torch(args: &[String]) -> bool {
    let torch_commands = [
        "train",
        "verify",
        "eval",
        "align",
        "bench-train",
        "bench-vision",
    ];
    torch_commands.contains(&args[0].as_str())
        || args
            .windows(2)
            .any(|w| w[0] == "--backend" && w[1] == "torch")
        || args
            .windows(2)
            .any(|w| w[0] == "--backends" && w[1] == "torch")
}

/// The problems of one outcome (none: the row passes).
fn check_output(c: &Case, o: &Output) -> Vec<String> {
    let mut problems = Vec::new();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let code = o.status.code().unwrap_or(-1);
    if stderr.contains("panicked") || code == 101 {
        problems.push(format!("panicked (exit {code})"));
    } else if o.status.code().is_none() {
        problems.push(format!("killed by a signal: {:?}", o.status));
    } else if code != c.code {
        problems.push(format!("exit {code}, expected {}", c.code));
    }
    if c.code == 1 && !stderr.contains("error:") {
        problems.push("no `error:` line".into());
    }
    for want in c.expect {
        if !stderr.contains(want) {
            problems.push(format!("the message lacks {want:?}"));
        }
    }
    if !problems.is_empty() {
        let tail: String = stderr
            .lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        problems.push(format!("stderr: {tail}"));
    }
    problems
}

/// The last `error:` line of a command's stderr, or its last line.
fn message(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map_or(String::new(), |l| l.chars().take(300).collect())
}

/// Runs row `c` in `d`; returns its arguments, its problems (none: it passes) and what the
/// command said.
fn run_case(env: &Env, c: &Case, d: &Path) -> (Vec<String>, Vec<String>, String) {
    std::fs::create_dir_all(d).unwrap();
    let a = (c.setup)(env, d);
    let mut problems = Vec::new();
    let mut said = String::new();
    if !cfg!(feature = "torch") && needs_torch(&a) {
        return (a, problems, "skipped: a build without libtorch".into());
    }
    match c.how {
        How::Racing => {
            for _ in 0..3 {
                let children: Vec<_> = (0..2)
                    .map(|_| {
                        command(&a, c.how)
                            .stdout(std::process::Stdio::piped())
                            .stderr(std::process::Stdio::piped())
                            .spawn()
                            .expect("run mimic")
                    })
                    .collect();
                for child in children {
                    let o = child.wait_with_output().unwrap();
                    // The one that loses a race may fail, cleanly and naming the folder.
                    if !o.status.success() {
                        said = message(&o);
                        let stderr = String::from_utf8_lossy(&o.stderr);
                        if stderr.contains("panicked")
                            || !stderr.contains("error: ")
                            || !stderr.contains("out")
                        {
                            problems.push(format!("a racing compile failed unclearly: {stderr}"));
                        }
                    }
                }
                if let Some(check) = c.after {
                    if let Err(e) = check(env, d) {
                        problems.push(e);
                    }
                }
            }
        }
        _ => {
            let o = command(&a, c.how).output().expect("run mimic");
            problems.extend(check_output(c, &o));
            said = message(&o);
            if let Some(check) = c.after {
                if let Err(e) = check(env, d) {
                    problems.push(e);
                }
            }
        }
    }
    for rel in c.clean {
        let found = leftovers(&d.join(rel));
        if !found.is_empty() {
            problems.push(format!("left behind: {found:?}"));
        }
    }
    for rel in c.absent {
        if d.join(rel).exists() {
            problems.push(format!("{rel} was written"));
        }
    }
    (a, problems, said)
}

fn make_env(dir: &Path) -> Env {
    let text = dir.join("text-model");
    copy_model(&fixtures_dir().join("mistral"), &text);
    std::fs::copy(
        fixtures_dir().join("vlm/idefics3/tokenizer.json"),
        text.join("tokenizer.json"),
    )
    .unwrap();
    let heads = PathBuf::from(write(
        &dir.join("heads.safetensors"),
        heads_bytes(&text, |_| {}),
    ));
    let llama_heads = PathBuf::from(write(
        &dir.join("llama-heads.safetensors"),
        heads_bytes(&fixtures_dir().join("llama"), |_| {}),
    ));
    let compiled = dir.join("compiled");
    let compiled_inputs = dir.join("compiled-inputs");
    succeeds(&compile(&s(&text), &s(&compiled), &[]));
    succeeds(&compile(
        &s(&text),
        &s(&compiled_inputs),
        &["--heads-as-inputs", "--method", "mimic"],
    ));
    Env {
        dir: dir.to_path_buf(),
        text,
        heads,
        llama_heads,
        compiled,
        compiled_inputs,
    }
}

/// The arguments as a reader sees them: temporary folders shortened, long ones cut.
fn shown(a: &[String], env: &Env, d: &Path) -> String {
    let fixtures = s(fixtures_dir());
    a.iter()
        .map(|x| {
            let x = x
                .replace(&s(d), "D")
                .replace(&s(&env.dir), "S")
                .replace(&fixtures, "tests/fixtures");
            let x = if x.chars().count() > 40 {
                format!("{}…", x.chars().take(12).collect::<String>())
            } else {
                x
            };
            if x.contains(' ') || x.is_empty() {
                format!("'{x}'")
            } else {
                x
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn markdown(rows: &[(String, String, String, String)]) -> String {
    let mut t = String::from(
        "# The bad-input matrix\n\n\
         Generated by `tests/bad_input_matrix.rs` (`MIMIC_MATRIX_TABLE=docs/bad-input-matrix.md \
         cargo test --release --test bad_input_matrix`); do not edit by hand.\n\n\
         Each row runs `mimic` on inputs its setup made in a fresh folder `D` (`S`: inputs \
         shared by all rows: `S/text-model` is the mistral fixture with the idefics3 fixture's \
         tokenizer, `S/heads.safetensors` MimIC heads for it, `S/llama-heads.safetensors` \
         heads for the llama fixture, `S/compiled` the text model compiled). Every row also \
         checks that nothing panicked and, after it, that no `.partial-` file or `.old-` \
         folder remains in the folders it names.\n\n\
         Unwritable outputs, for root (tests run as root, whom permissions do not stop): a \
         parent that is a regular file (`ENOTDIR`); a path under `/sys` (`EPERM`, `EROFS` in a \
         container); a full disk: the child runs under `setrlimit(RLIMIT_FSIZE)` with `SIGXFSZ` \
         ignored, so a write past the limit fails with `EFBIG` (\"File too large\"). A killed \
         run's leftover is a `.NAME.partial-4999999` (a process id no process has).\n\n\
         | case | command | expected | result |\n|---|---|---|---|\n",
    );
    for (name, cmd, expected, result) in rows {
        let esc = |x: &str| x.replace('|', "\\|");
        t.push_str(&format!(
            "| {} | `mimic {}` | {} | {} |\n",
            esc(name),
            esc(cmd),
            esc(expected),
            esc(result)
        ));
    }
    t
}

#[test]
fn bad_input_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let env = make_env(&tmp.path().join("shared"));
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..cases.len()).map(|_| None).collect());
    // Two rows at a time: each is one short process (or two, racing).
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = cases.get(i) else { break };
                let t = std::time::Instant::now();
                let d = tmp.path().join(format!("case-{i:03}"));
                let (a, problems, said) = run_case(&env, c, &d);
                results.lock().unwrap()[i] = Some((a, problems, said, t.elapsed().as_secs_f64()));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (i, (c, r)) in cases.iter().zip(results).enumerate() {
        let (a, problems, said, secs) = r.expect("every row ran");
        let d = tmp.path().join(format!("case-{i:03}"));
        let said = said
            .replace(&s(&d), "D")
            .replace(&s(&env.dir), "S")
            .replace(&s(fixtures_dir()), "tests/fixtures");
        let mut expected = format!("exit {}", c.code);
        if !c.expect.is_empty() {
            let says: Vec<String> = c.expect.iter().map(|x| format!("`{x}`")).collect();
            expected.push_str(&format!("; says {}", says.join(", ")));
        }
        if !c.absent.is_empty() {
            let not: Vec<String> = c.absent.iter().map(|x| format!("`D/{x}`")).collect();
            expected.push_str(&format!("; writes no {}", not.join(", ")));
        }
        if !c.clean.is_empty() {
            expected.push_str("; no partial left");
        }
        if matches!(c.how, How::Racing) {
            expected.push_str("; 3 rounds of 2 processes at once");
        }
        if let How::FileSizeLimit(b) = c.how {
            expected.push_str(&format!("; RLIMIT_FSIZE {b} bytes"));
        }
        if c.after.is_some() {
            expected.push_str("; output checked after");
        }
        let result = if problems.is_empty() {
            match said.is_empty() {
                true => "pass".to_string(),
                false => format!("pass: `{}`", said.replace('`', "'")),
            }
        } else {
            failures.push(format!("{}:\n  {}", c.name, problems.join("\n  ")));
            format!("FAIL: {}", problems[0])
        };
        eprintln!(
            "{:>5.1}s {} {}\n        {said}",
            secs,
            if problems.is_empty() { "ok  " } else { "FAIL" },
            c.name
        );
        rows.push((c.name.to_string(), shown(&a, &env, &d), expected, result));
    }
    if let Some(path) = std::env::var_os("MIMIC_MATRIX_TABLE") {
        std::fs::write(&path, markdown(&rows)).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
