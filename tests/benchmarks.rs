//! The benchmarks through the command line on the tiny random vision-language models:
//! easy-VQA (the installed PyPI package) end to end (train heads on its support set, compile,
//! evaluate on its test split in ONNX Runtime), and VQAv2 and OK-VQA read from small fixtures
//! in their official layouts (written here), evaluated, scored by VQA accuracy and written as
//! the official results files. Bad input: a missing image fails naming the file and the
//! entry, or is skipped and counted with --skip-missing.
// `train` and `eval` need libtorch: the deployment build (no `torch` feature) has neither.
#![cfg(feature = "torch")]
mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

fn model(name: &str) -> String {
    fixtures_dir().join("vlm").join(name).display().to_string()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn easy_vqa_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let m = model("idefics3");
    succeeds(&[
        "train",
        "--model",
        &m,
        "--dataset",
        "easy-vqa",
        "--support",
        "48",
        "--method",
        "mimic",
        "--steps",
        "3",
        "--batch",
        "2",
        "--shots",
        "1",
        "--threads",
        "2",
        "--out",
        run.to_str().unwrap(),
    ]);
    let heads = run.join("heads.safetensors");
    assert!(heads.is_file());
    let results = tmp.path().join("results");
    let json = tmp.path().join("eval.json");
    succeeds(&[
        "eval",
        "--model",
        &m,
        "--dataset",
        "easy-vqa",
        "--support",
        "48",
        "--limit",
        "6",
        "--method",
        "zero-shot,icl,heads",
        "--shots",
        "1",
        "--heads",
        heads.to_str().unwrap(),
        "--backend",
        "onnx",
        "--max-new-tokens",
        "3",
        "--threads",
        "2",
        "--results",
        results.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let v = read_json(&json);
    let scores = v["benchmark"].as_array().unwrap();
    assert_eq!(scores.len(), 3, "{v}");
    for s in scores {
        assert_eq!(s["questions"], 6, "{s}");
        let acc = s["vqa"]["official"]["overall"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&acc), "{s}");
    }
    for method in ["zero-shot-onnx", "icl-1-onnx", "mimic-onnx"] {
        let file = results.join(format!("easy-vqa-{method}.json"));
        let rows = read_json(&file);
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 6, "{}", file.display());
        assert!(rows
            .iter()
            .all(|r| r["question_id"].is_u64() && r["answer"].is_string()));
    }
}

fn jpeg(path: &Path, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(20, 16, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

fn ten(answers: &[&str]) -> Value {
    json!(answers
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"answer": a, "answer_confidence": "yes", "answer_id": i + 1}))
        .collect::<Vec<_>>())
}

/// A VQA data set in the official layout: `prefix` is `v2_` for VQAv2 and empty for OK-VQA.
fn vqa_fixture(root: &Path, prefix: &str) {
    let colours = [
        ("red", [220, 30, 30]),
        ("blue", [40, 70, 220]),
        ("green", [30, 180, 60]),
    ];
    for split in ["train", "val"] {
        let mut questions = vec![];
        let mut annotations = vec![];
        for (i, (name, rgb)) in colours.iter().enumerate() {
            let image_id = 100 + i as u64;
            let question_id = image_id * 10;
            jpeg(
                &root.join(format!("{split}2014/COCO_{split}2014_{image_id:012}.jpg")),
                *rgb,
            );
            questions.push(
                json!({"image_id": image_id, "question": "What colour is it?",
                                  "question_id": question_id}),
            );
            let mut answers = vec![*name; 8];
            answers.extend(["dark", "light"]);
            annotations.push(json!({"question_id": question_id, "image_id": image_id,
                "question_type": "what color is", "answer_type": "other",
                "multiple_choice_answer": name, "answers": ten(&answers)}));
        }
        let q = root.join(format!(
            "{prefix}OpenEnded_mscoco_{split}2014_questions.json"
        ));
        std::fs::write(q, json!({"questions": questions}).to_string()).unwrap();
        let a = root.join(format!("{prefix}mscoco_{split}2014_annotations.json"));
        std::fs::write(a, json!({"annotations": annotations}).to_string()).unwrap();
    }
}

#[test]
fn vqav2_and_okvqa_from_their_official_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    for (dataset, prefix) in [("vqav2", "v2_"), ("okvqa", "")] {
        let root = tmp.path().join(dataset);
        vqa_fixture(&root, prefix);
        let results = tmp.path().join(format!("{dataset}-results"));
        let json = tmp.path().join(format!("{dataset}.json"));
        succeeds(&[
            "eval",
            "--model",
            &model("llava"),
            "--dataset",
            dataset,
            "--root",
            root.to_str().unwrap(),
            "--method",
            "zero-shot,icl",
            "--shots",
            "1",
            "--max-new-tokens",
            "3",
            "--threads",
            "2",
            "--results",
            results.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ]);
        let v = read_json(&json);
        let scores = v["benchmark"].as_array().unwrap();
        assert_eq!(scores.len(), 2, "{v}");
        assert_eq!(scores[0]["questions"], 3);
        assert!(
            scores[0]["vqa"]["official"]["per_answer_type"]["other"].is_number(),
            "{v}"
        );
        let rows = read_json(&results.join(format!("{dataset}-zero-shot.json")));
        let ids: Vec<u64> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["question_id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, vec![1000, 1010, 1020]);
    }
}

#[test]
fn a_missing_image_names_the_entry_or_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("vqav2");
    vqa_fixture(&root, "v2_");
    std::fs::remove_file(root.join("val2014/COCO_val2014_000000000101.jpg")).unwrap();
    let args = |extra: &[&str]| {
        let mut v = vec![
            "eval".to_string(),
            "--model".into(),
            model("idefics2"),
            "--dataset".into(),
            "vqav2".into(),
            "--root".into(),
            root.display().to_string(),
            "--method".into(),
            "zero-shot".into(),
            "--max-new-tokens".into(),
            "2".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let err = fails(&args(&[]));
    assert!(
        err.contains("v2_OpenEnded_mscoco_val2014_questions.json")
            && err.contains("1010")
            && err.contains("COCO_val2014_000000000101.jpg"),
        "{err}"
    );
    let out = mimic(&args(&["--skip-missing"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 entries left out"), "{stderr}");
    // A text model cannot take an image data set.
    let err = fails(&[
        "eval",
        "--model",
        fixtures_dir().join("llama").to_str().unwrap(),
        "--dataset",
        "easy-vqa",
    ]);
    assert!(err.contains("vision-language model"), "{err}");
}

#[test]
fn mme_and_seed_from_their_official_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    // MME: images beside their question files (existence), or in images/ with the questions
    // in questions_answers_YN/ (artwork); two yes/no questions per image.
    let mme = tmp.path().join("MME_Benchmark_release_version");
    for (i, rgb) in [[200, 20, 20], [20, 200, 20]].iter().enumerate() {
        jpeg(&mme.join(format!("existence/{i}.jpg")), *rgb);
        std::fs::write(
            mme.join(format!("existence/{i}.txt")),
            "Is there a shape in this image?\tYes\nIs there a cat in this image?\tNo\n",
        )
        .unwrap();
        jpeg(&mme.join(format!("artwork/images/{i}.jpg")), *rgb);
        std::fs::create_dir_all(mme.join("artwork/questions_answers_YN")).unwrap();
        std::fs::write(
            mme.join(format!("artwork/questions_answers_YN/{i}.txt")),
            "Is this a painting?\tNo\nIs this a photo?\tYes\n",
        )
        .unwrap();
    }
    let results = tmp.path().join("results");
    let json = tmp.path().join("mme.json");
    succeeds(&[
        "eval",
        "--model",
        &model("idefics3"),
        "--dataset",
        "mme",
        "--root",
        mme.to_str().unwrap(),
        "--support",
        "2",
        "--method",
        "zero-shot,icl",
        "--shots",
        "1",
        "--max-new-tokens",
        "2",
        "--threads",
        "2",
        "--results",
        results.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let v = read_json(&json);
    let score = &v["benchmark"][0];
    assert_eq!(score["questions"], 6, "{v}");
    assert!(score["mme"]["perception"].is_number(), "{v}");
    let files = results.join("mme-zero-shot");
    for subtask in ["existence", "artwork"] {
        let text = std::fs::read_to_string(files.join(format!("{subtask}.txt"))).unwrap();
        assert!(text.lines().all(|l| l.split('\t').count() == 4), "{text}");
    }

    // SEED-Bench v1: image questions only; the video row is left out.
    let seed = tmp.path().join("seed");
    let mut questions = vec![];
    for (i, rgb) in [[200, 20, 20], [20, 200, 20], [20, 20, 200]]
        .iter()
        .enumerate()
    {
        jpeg(&seed.join(format!("SEED-Bench-image/{i}.jpg")), *rgb);
        let answer = ["A", "B", "C"][i];
        questions.push(
            json!({"answer": answer, "choice_a": "red", "choice_b": "green",
            "choice_c": "blue", "choice_d": "grey", "data_id": format!("{i}.jpg"),
            "data_type": "image", "question": "What colour is the image?",
            "question_id": format!("q{i}"), "question_type_id": 1 + i as u32}),
        );
    }
    questions.push(
        json!({"answer": "A", "choice_a": "a", "choice_b": "b", "choice_c": "c",
        "choice_d": "d", "data_id": "v.mp4", "data_type": "video", "question": "?",
        "question_id": "v", "question_type_id": 10, "segment": [0, 1]}),
    );
    std::fs::write(
        seed.join("SEED-Bench.json"),
        json!({"question_type": {"Scene Understanding": 1}, "questions": questions}).to_string(),
    )
    .unwrap();
    let json = tmp.path().join("seed.json");
    succeeds(&[
        "eval",
        "--model",
        &model("llava"),
        "--dataset",
        "seed",
        "--root",
        seed.to_str().unwrap(),
        "--support",
        "1",
        "--method",
        "zero-shot",
        "--max-new-tokens",
        "2",
        "--threads",
        "2",
        "--results",
        results.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let v = read_json(&json);
    let score = &v["benchmark"][0];
    assert_eq!(score["questions"], 2, "{v}");
    assert!(score["seed"]["overall"].is_number(), "{v}");
    // The choices in MimIC's own `choices` message between the question and the answer.
    let prompt = v["answers"][0][0]["prompt"].as_str().unwrap();
    assert!(
        prompt.contains(
            "<|im_start|>question\n\nWhat colour is the image?<|im_end|>\n<|im_start|>choices\n\n\
             A. red B. green C. blue D. grey\nAnswer with the letter.<|im_end|>\n<|im_start|>answer"
        ),
        "{prompt}"
    );
    let rows = read_json(&results.join("seed-zero-shot.json"));
    assert_eq!(rows.as_array().unwrap().len(), 2);
}

#[test]
fn coco_and_flickr30k_captions_from_the_karpathy_split() {
    // dataset_coco.json and dataset_flickr30k.json with train and val images; scored by
    // CIDEr-D, written as [{image_id, caption}].
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("coco");
    let mut images = vec![];
    for (i, (split, rgb)) in [
        ("train", [200, 20, 20]),
        ("train", [20, 200, 20]),
        ("val", [20, 20, 200]),
        ("val", [200, 200, 20]),
    ]
    .iter()
    .enumerate()
    {
        let folder = if *split == "train" {
            "train2014"
        } else {
            "val2014"
        };
        let filename = format!("COCO_{folder}_{i:012}.jpg");
        jpeg(&root.join(folder).join(&filename), *rgb);
        let sentences: Vec<Value> = (0..5)
            .map(|k| {
                json!({"raw": format!("A plain colour, number {k}."), "tokens": [],
                            "imgid": i, "sentid": i * 5 + k})
            })
            .collect();
        images.push(json!({"filepath": folder, "filename": filename, "imgid": i,
            "split": split, "cocoid": 1000 + i, "sentids": [], "sentences": sentences}));
    }
    std::fs::write(
        root.join("dataset_coco.json"),
        json!({"images": images, "dataset": "coco"}).to_string(),
    )
    .unwrap();
    let results = tmp.path().join("results");
    let json = tmp.path().join("coco.json");
    succeeds(&[
        "eval",
        "--model",
        &model("idefics2"),
        "--dataset",
        "coco",
        "--root",
        root.to_str().unwrap(),
        "--method",
        "zero-shot,icl",
        "--shots",
        "1",
        "--max-new-tokens",
        "4",
        "--threads",
        "2",
        "--results",
        results.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let v = read_json(&json);
    let score = &v["benchmark"][1];
    assert_eq!(score["questions"], 2, "{v}");
    assert!(score["cider"]["corpus"].is_number(), "{v}");
    let rows = read_json(&results.join("coco-icl-1.json"));
    let ids: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1002, 1003]);

    // Flickr30k: the same schema, images in flickr30k-images/, image ids its `imgid`s.
    let root = tmp.path().join("flickr");
    let images: Vec<Value> = (0..4)
        .map(|i| {
            let filename = format!("{i}.jpg");
            jpeg(
                &root.join("flickr30k-images").join(&filename),
                [60 * i as u8, 90, 30],
            );
            let split = if i < 2 { "train" } else { "val" };
            let sentences: Vec<Value> = (0..5)
                .map(|k| {
                    json!({"raw": format!("Shapes, picture {k}."), "tokens": [],
                                "imgid": i, "sentid": i * 5 + k})
                })
                .collect();
            json!({"filename": filename, "imgid": i, "split": split, "sentids": [],
                   "sentences": sentences})
        })
        .collect();
    std::fs::write(
        root.join("dataset_flickr30k.json"),
        json!({"images": images, "dataset": "flickr30k"}).to_string(),
    )
    .unwrap();
    succeeds(&[
        "eval",
        "--model",
        &model("idefics2"),
        "--dataset",
        "flickr30k",
        "--root",
        root.to_str().unwrap(),
        "--method",
        "zero-shot",
        "--max-new-tokens",
        "4",
        "--threads",
        "2",
        "--results",
        results.to_str().unwrap(),
    ]);
    let rows = read_json(&results.join("flickr30k-zero-shot.json"));
    let ids: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 3]);
}
