//! Training killed at any moment resumes to exactly where it would have been: `mimic train`
//! on the default model (MimIC and LoRA heads) and `mimic align` (the vision-language
//! model's encoder, on easy-VQA) are killed with SIGKILL again and again (at random moments, and half
//! the time the moment a checkpoint's temporary file appears, that is during its write),
//! restarted with `--resume` whenever a checkpoint exists, and finally left to finish; the
//! heads (encoder) must be bit-identical to an uninterrupted run's. After every kill the
//! folder holds no half-written checkpoint or output (each, if present, reads back whole).
//!
//! `MIMIC_KILLS` kills per training method, half as many for the alignment (default 5);
//! `make kill-anywhere` runs 20 and prints the tally (`--nocapture`).
#![cfg(feature = "torch")]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mimic_models::rng::SplitMix64;
use mimic_models::weights::read_safetensors_with_metadata;

/// A resumable run under test: `mimic train` of one method, or `mimic align`.
struct Job {
    name: &'static str,
    args: Vec<String>,
    steps: usize,
    /// The file compared with the uninterrupted run's.
    output: &'static str,
    /// The checkpoint's metadata key of the steps done.
    step_key: &'static str,
}

impl Job {
    fn train(task: &Path, method: &'static str) -> Job {
        let args = [
            "train",
            "--method",
            method,
            "--steps",
            "8",
            "--batch",
            "2",
            "--shots",
            "2",
            "--test-size",
            "4",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["--task".into(), task.display().to_string()]);
        Job {
            name: method,
            args,
            steps: 8,
            output: "heads.safetensors",
            step_key: "train.step",
        }
    }

    /// The vision-language alignment, tiny: 2 pretraining steps, 4 steps of 2 images.
    fn align() -> Job {
        let args = [
            "align",
            "--steps",
            "4",
            "--batch",
            "2",
            "--max-images",
            "2",
            "--pretrain-steps",
            "2",
            "--pretrain-batch",
            "4",
            "--holdout",
            "0",
        ];
        Job {
            name: "align",
            args: args.iter().map(|s| s.to_string()).collect(),
            steps: 4,
            output: "vision.safetensors",
            step_key: "align.step",
        }
    }

    /// The command line into `out`, its standard error going to `log`.
    fn command(&self, out: &Path, resume: bool, log: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mimic"));
        c.args(&self.args).arg("--out").arg(out).args([
            "--checkpoint-every",
            "1",
            "--threads",
            "2",
        ]);
        if resume {
            c.arg("--resume");
        }
        let log = std::fs::File::create(log).unwrap();
        c.stdout(Stdio::null()).stderr(log);
        c
    }

    /// The steps done by the folder's checkpoint (0 without one).
    fn checkpoint_step(&self, dir: &Path) -> usize {
        read_safetensors_with_metadata(&dir.join("checkpoint.safetensors"))
            .ok()
            .and_then(|(_, meta)| meta.get(self.step_key).and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    }
}

/// A temporary file of `write_atomically` (`.NAME.partial-PID`) in `dir`.
fn partial_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains(".partial-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every output file present reads back whole.
fn assert_whole(dir: &Path, context: &str) {
    for name in [
        "checkpoint.safetensors",
        "heads.safetensors",
        "vision.safetensors",
    ] {
        let p = dir.join(name);
        if p.exists() {
            if let Err(e) = read_safetensors_with_metadata(&p) {
                panic!("{context}: {name} is half-written: {e}");
            }
        }
    }
}

fn kills_per_method() -> usize {
    std::env::var("MIMIC_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// What the kills of one method hit.
#[derive(Default, Debug)]
struct Tally {
    kills: usize,
    /// Kills aimed at a checkpoint's write (its temporary file had appeared).
    at_write: usize,
    /// Kills after which the temporary file was still there: the write was cut short.
    cut_writes: usize,
    /// Kills before the first checkpoint existed.
    before_first_checkpoint: usize,
    /// Runs started (each kill's, and the last one that finished).
    runs: usize,
}

/// The tensors of a run's output file, by name.
fn tensors(file: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (tensors, _) = read_safetensors_with_metadata(file).unwrap();
    let mut v: Vec<_> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.shape, t.data))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn training_killed_anywhere_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let task = common::write_task(tmp.path(), &common::PAIRS);
    let mut rng = SplitMix64::new(2026);
    // The alignment starts slowly (it prepares easy-VQA's images): half the kills.
    let jobs = [
        (Job::train(&task, "mimic"), kills_per_method()),
        (Job::train(&task, "lora"), kills_per_method()),
        (Job::align(), kills_per_method().div_ceil(2)),
    ];
    for (job, kills) in &jobs {
        let (method, kills) = (job.name, *kills);
        let whole = tmp.path().join(format!("whole-{method}"));
        let log = tmp.path().join("train.log");
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        // The uninterrupted run, timed: until its first checkpoint (start-up and one step),
        // and per later step.
        let t0 = Instant::now();
        let mut child = job.command(&whole, false, &log).spawn().unwrap();
        let mut first_checkpoint = None;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if first_checkpoint.is_none() && whole.join("checkpoint.safetensors").exists() {
                first_checkpoint = Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        assert!(status.success(), "{}", read_log());
        let uninterrupted = t0.elapsed();
        let first = first_checkpoint.unwrap_or(uninterrupted);
        let per_step = (uninterrupted - first).div_f64(job.steps as f64 - 1.0);

        let dir = tmp.path().join(format!("killed-{method}"));
        let mut tally = Tally::default();
        loop {
            let resume = dir.join("checkpoint.safetensors").exists();
            let mut child = job.command(&dir, resume, &log).spawn().unwrap();
            tally.runs += 1;
            if tally.kills == kills {
                let status = child.wait().unwrap();
                assert!(
                    status.success(),
                    "{method}: the last run failed: {}",
                    read_log()
                );
                break;
            }
            let started = Instant::now();
            let aim_at_write = rng.next_u64().is_multiple_of(2);
            // A moment within what this run has left to do (start-up included).
            let done = job.checkpoint_step(&dir);
            let steps_left = (job.steps as f64 - 1.0 - done as f64).max(0.0);
            let left = first + per_step.mul_f64(steps_left);
            let at = left.mul_f64(rng.uniform());
            let before: Vec<PathBuf> = partial_files(&dir);
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                let writing =
                    aim_at_write && partial_files(&dir).iter().any(|p| !before.contains(p));
                // Aimed at a write: the write, or failing that the end of what is left.
                let deadline = if aim_at_write { left } else { at };
                if writing || started.elapsed() >= deadline {
                    break None;
                }
                if aim_at_write {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            };
            match finished {
                Some(status) => {
                    // It finished before the kill: start over from nothing, so that every
                    // kill lands in a run that has work left.
                    assert!(status.success(), "{method}: a run failed: {}", read_log());
                    assert_eq!(
                        tensors(&dir.join(job.output)),
                        tensors(&whole.join(job.output)),
                        "{method}: a run that finished"
                    );
                    std::fs::remove_dir_all(&dir).unwrap();
                }
                None => {
                    let had_checkpoint = dir.join("checkpoint.safetensors").exists();
                    child.kill().unwrap();
                    child.wait().unwrap();
                    tally.kills += 1;
                    tally.at_write += aim_at_write as usize;
                    tally.before_first_checkpoint += !had_checkpoint as usize;
                    if partial_files(&dir).iter().any(|p| !before.contains(p)) {
                        tally.cut_writes += 1;
                    }
                    assert_whole(&dir, &format!("{method}, kill {}", tally.kills));
                }
            }
        }
        assert_eq!(
            tensors(&dir.join(job.output)),
            tensors(&whole.join(job.output)),
            "{method}: {} after {} kills differs from an uninterrupted run's",
            job.output,
            tally.kills
        );
        eprintln!(
            "{method}: {} kills ({} aimed at a checkpoint write, {} cut a write short, {} \
             before the first checkpoint) over {} runs; {} bit-identical to an \
             uninterrupted run's ({:.1} s)",
            tally.kills,
            tally.at_write,
            tally.cut_writes,
            tally.before_first_checkpoint,
            tally.runs,
            job.output,
            uninterrupted.as_secs_f64()
        );
    }
}
