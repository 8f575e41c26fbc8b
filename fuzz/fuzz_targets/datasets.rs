//! The benchmark readers' data files. The first byte picks the reader and the rest is its
//! file (for VQA, questions and annotations split at the first 0xFF byte):
//! 0 VQAv2 questions + annotations, 1 OK-VQA, 2 Karpathy COCO, 3 Karpathy Flickr30k,
//! 4 SEED-Bench JSON, 5 easy-VQA questions.json, 6 an MME question .txt.
//! Images are absent: the readers run with `MissingImages::Skip` (odd selectors) or `Error`.
#![no_main]
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mimic_models::datasets::{
    read_easy_vqa, read_karpathy, read_mme, read_seed, read_vqa, Dataset, EasyVqaSplit,
    KarpathySplit, MissingImages, VqaSplit,
};

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
}

/// A fresh folder for one input (the previous input's files removed).
fn fresh(name: &str) -> std::path::PathBuf {
    let root = dir().path().join(name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("a folder");
    root
}

fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("a folder");
    }
    std::fs::write(path, data).expect("writing the input");
}

const ALL_SPLITS: [KarpathySplit; 4] = [
    KarpathySplit::Train,
    KarpathySplit::Restval,
    KarpathySplit::Val,
    KarpathySplit::Test,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let missing = if sel & 0x80 != 0 {
        MissingImages::Error
    } else {
        MissingImages::Skip
    };
    match sel & 0x7F {
        n @ (0 | 1) => {
            let root = fresh("vqa");
            let (q, a) = match body.iter().position(|&b| b == 0xFF) {
                Some(i) => (&body[..i], &body[i + 1..]),
                None => (body, &b"{\"annotations\": []}"[..]),
            };
            let (dataset, qn, an) = if n == 0 {
                (
                    Dataset::VqaV2,
                    "v2_OpenEnded_mscoco_val2014_questions.json",
                    "v2_mscoco_val2014_annotations.json",
                )
            } else {
                (
                    Dataset::OkVqa,
                    "OpenEnded_mscoco_val2014_questions.json",
                    "mscoco_val2014_annotations.json",
                )
            };
            write(&root.join(qn), q);
            write(&root.join(an), a);
            let _ = read_vqa(dataset, &root, VqaSplit::Val, missing);
        }
        n @ (2 | 3) => {
            let root = fresh("karpathy");
            let (dataset, name) = if n == 2 {
                (Dataset::Coco, "dataset_coco.json")
            } else {
                (Dataset::Flickr30k, "dataset_flickr30k.json")
            };
            write(&root.join(name), body);
            let _ = read_karpathy(dataset, &root, &ALL_SPLITS, missing);
        }
        4 => {
            let root = fresh("seed");
            write(&root.join("SEED-Bench.json"), body);
            let _ = read_seed(&root, missing);
        }
        5 => {
            let root = fresh("easy-vqa");
            write(
                &root.join("answers.txt"),
                b"circle\nrectangle\ntriangle\nred\ngreen\nblue\nyes\nno\n",
            );
            write(&root.join("test").join("questions.json"), body);
            let _ = read_easy_vqa(&root, EasyVqaSplit::Test, missing);
        }
        6 => {
            let root = fresh("mme");
            write(
                &root
                    .join("color")
                    .join("questions_answers_YN")
                    .join("0001.txt"),
                body,
            );
            std::fs::create_dir_all(root.join("color").join("images")).expect("a folder");
            let _ = read_mme(&root, missing);
        }
        _ => {}
    }
});
