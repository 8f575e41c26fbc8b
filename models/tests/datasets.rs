//! The data set readers against tiny fixtures in each official layout, written into a
//! temporary folder: JSON built with serde_json, 4x4 PNG and JPEG images.
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use mimic_models::datasets::captions::karpathy_file;
use mimic_models::datasets::easy_vqa::{package_root_in, read_answers};
use mimic_models::datasets::{
    read_easy_vqa, read_karpathy, read_mme, read_seed, read_vqa, Dataset, EasyVqaSplit,
    KarpathySplit, MissingImages, VqaSplit,
};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A 4x4 image; the format follows the extension (`.png` or `.jpg`).
fn image(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(4, 4, Rgb([200, 30, 60]))
        .save(path)
        .unwrap();
}

fn write_json(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

fn write_text(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The error's text, which must mention every one of `parts`.
fn assert_mentions(err: impl std::fmt::Display, parts: &[&str]) {
    let err = err.to_string();
    for part in parts {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

// ---- VQAv2 / OK-VQA ----

fn ten(answers: &[&str]) -> Value {
    let list: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"answer": a, "answer_confidence": "yes", "answer_id": i + 1}))
        .collect();
    Value::Array(list)
}

/// VQAv2 val: questions 5 (image 42) and 9 (image 7); annotations in another order, plus one
/// for a question that is not in the questions file.
fn vqav2_fixture() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_json(
        &root.join("v2_OpenEnded_mscoco_val2014_questions.json"),
        &json!({"task_type": "Open-Ended", "data_subtype": "val2014", "questions": [
            {"image_id": 42, "question": "What color is the bus?", "question_id": 5},
            {"image_id": 7, "question": "How many dogs?", "question_id": 9},
        ]}),
    );
    let yellow = ["yellow"; 8]
        .into_iter()
        .chain(["orange", "gold"])
        .collect::<Vec<_>>();
    write_json(
        &root.join("v2_mscoco_val2014_annotations.json"),
        &json!({"data_subtype": "val2014", "annotations": [
            {"question_id": 9, "image_id": 7, "question_type": "how many",
             "answer_type": "number", "multiple_choice_answer": "2", "answers": ten(&["2"; 10])},
            {"question_id": 77, "image_id": 1, "question_type": "what", "answer_type": "other",
             "multiple_choice_answer": "x", "answers": ten(&["x"; 10])},
            {"question_id": 5, "image_id": 42, "question_type": "what color is the",
             "answer_type": "other", "multiple_choice_answer": "yellow",
             "answers": ten(&yellow)},
        ]}),
    );
    image(&root.join("val2014/COCO_val2014_000000000042.jpg"));
    image(&root.join("val2014/COCO_val2014_000000000007.jpg"));
    dir
}

#[test]
fn vqav2_questions_join_their_annotations() {
    let dir = vqav2_fixture();
    let read = read_vqa(
        Dataset::VqaV2,
        dir.path(),
        VqaSplit::Val,
        MissingImages::Error,
    )
    .unwrap();
    assert_eq!(read.skipped_missing, 0);
    assert_eq!(read.samples.len(), 2);
    let s = &read.samples[0];
    assert_eq!((s.question_id, s.image_id), (5, 42));
    assert_eq!(
        s.image,
        dir.path().join("val2014/COCO_val2014_000000000042.jpg")
    );
    assert_eq!(s.question, "What color is the bus?");
    assert_eq!(s.answers.len(), 10);
    assert_eq!(s.answers[0], "yellow");
    assert_eq!(s.answers[8..], ["orange", "gold"]);
    assert_eq!(s.multiple_choice_answer.as_deref(), Some("yellow"));
    assert_eq!(s.question_type, "what color is the");
    assert_eq!(s.answer_type, "other");
    let s = &read.samples[1];
    assert_eq!((s.question_id, s.image_id), (9, 7));
    assert_eq!(s.answers, vec!["2".to_string(); 10]);
    assert_eq!(s.answer_type, "number");
}

#[test]
fn okvqa_uses_its_own_file_names_and_has_no_multiple_choice_answer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_json(
        &root.join("OpenEnded_mscoco_train2014_questions.json"),
        &json!({"questions": [
            {"image_id": 51606, "question": "What is the hairstyle called?", "question_id": 516065}
        ]}),
    );
    let answers: Vec<Value> = ["pony tail", "pony tail", "braid", "braid", "bun"]
        .iter()
        .cycle()
        .take(10)
        .enumerate()
        .map(|(i, a)| {
            json!({"answer_id": i + 1, "raw_answer": a, "answer_confidence": "yes", "answer": a})
        })
        .collect();
    write_json(
        &root.join("mscoco_train2014_annotations.json"),
        &json!({"annotations": [
            {"image_id": 51606, "answer_type": "other", "question_type": "four",
             "question_id": 516065, "confidence": 3, "answers": answers}
        ]}),
    );
    image(&root.join("train2014/COCO_train2014_000000051606.jpg"));
    let read = read_vqa(Dataset::OkVqa, root, VqaSplit::Train, MissingImages::Error).unwrap();
    assert_eq!(read.samples.len(), 1);
    let s = &read.samples[0];
    assert_eq!((s.question_id, s.image_id), (516065, 51606));
    assert_eq!(
        s.image,
        root.join("train2014/COCO_train2014_000000051606.jpg")
    );
    assert_eq!(s.answers.len(), 10);
    assert_eq!(s.answers[..3], ["pony tail", "pony tail", "braid"]);
    assert_eq!(s.multiple_choice_answer, None);
    assert_eq!(s.question_type, "four");
    // VQAv2's file names are not OK-VQA's.
    let err = read_vqa(Dataset::VqaV2, root, VqaSplit::Train, MissingImages::Error).unwrap_err();
    assert_mentions(
        err,
        &["v2_OpenEnded_mscoco_train2014_questions.json", "not found"],
    );
    assert!(read_vqa(Dataset::Mme, root, VqaSplit::Train, MissingImages::Error).is_err());
}

#[test]
fn vqa_question_without_annotation_or_twice_is_an_error() {
    let dir = vqav2_fixture();
    let questions = dir
        .path()
        .join("v2_OpenEnded_mscoco_val2014_questions.json");
    write_json(
        &questions,
        &json!({"questions": [
            {"image_id": 42, "question": "What color is the bus?", "question_id": 5},
            {"image_id": 3, "question": "Where?", "question_id": 1234},
        ]}),
    );
    let err = read_vqa(
        Dataset::VqaV2,
        dir.path(),
        VqaSplit::Val,
        MissingImages::Error,
    )
    .unwrap_err();
    assert_mentions(
        err,
        &[&path_str(&questions), "question_id 1234", "no annotation"],
    );

    write_json(
        &questions,
        &json!({"questions": [
            {"image_id": 42, "question": "What color is the bus?", "question_id": 5},
            {"image_id": 42, "question": "Again?", "question_id": 5},
        ]}),
    );
    let err = read_vqa(
        Dataset::VqaV2,
        dir.path(),
        VqaSplit::Val,
        MissingImages::Error,
    )
    .unwrap_err();
    assert_mentions(err, &[&path_str(&questions), "question_id 5", "twice"]);
}

#[test]
fn vqa_missing_image_errors_or_is_skipped() {
    let dir = vqav2_fixture();
    let gone = dir.path().join("val2014/COCO_val2014_000000000007.jpg");
    std::fs::remove_file(&gone).unwrap();
    let err = read_vqa(
        Dataset::VqaV2,
        dir.path(),
        VqaSplit::Val,
        MissingImages::Error,
    )
    .unwrap_err();
    assert_mentions(
        err,
        &[
            "v2_OpenEnded_mscoco_val2014_questions.json",
            "question_id 9",
            &path_str(&gone),
            "not found",
        ],
    );
    let read = read_vqa(
        Dataset::VqaV2,
        dir.path(),
        VqaSplit::Val,
        MissingImages::Skip,
    )
    .unwrap();
    assert_eq!(read.skipped_missing, 1);
    assert_eq!(read.samples.len(), 1);
    assert_eq!(read.samples[0].question_id, 5);
}

#[test]
fn vqa_malformed_json_names_the_file_and_the_entry() {
    let dir = vqav2_fixture();
    let annotations = dir.path().join("v2_mscoco_val2014_annotations.json");
    write_text(&annotations, r#"{"annotations": [{"question_id": 9, "#);
    let err = read_vqa(
        Dataset::VqaV2,
        dir.path(),
        VqaSplit::Val,
        MissingImages::Error,
    )
    .unwrap_err();
    assert_mentions(err, &[&path_str(&annotations), "malformed JSON"]);

    write_json(
        &annotations,
        &json!({"annotations": [
            {"question_id": 9, "image_id": 7, "question_type": "how many",
             "multiple_choice_answer": "2", "answers": ten(&["2"; 10])},
        ]}),
    );
    let err = read_vqa(
        Dataset::VqaV2,
        dir.path(),
        VqaSplit::Val,
        MissingImages::Error,
    )
    .unwrap_err();
    assert_mentions(
        err,
        &[&path_str(&annotations), "question_id 9", "answer_type"],
    );
}

// ---- Karpathy captions ----

fn sentences(raws: &[&str]) -> Value {
    Value::Array(
        raws.iter()
            .map(|r| json!({"raw": r, "tokens": r.to_lowercase().split(' ').collect::<Vec<_>>()}))
            .collect(),
    )
}

fn coco_fixture() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let entry = |filepath: &str, filename: &str, imgid: u64, cocoid: u64, split: &str| {
        json!({"filepath": filepath, "filename": filename, "imgid": imgid, "cocoid": cocoid,
               "split": split, "sentids": [imgid * 10],
               "sentences": sentences(&[&format!("A photo number {imgid}."), "Another one"])})
    };
    write_json(
        &root.join("dataset_coco.json"),
        &json!({"dataset": "coco", "images": [
            entry("val2014", "COCO_val2014_000000391895.jpg", 0, 391895, "test"),
            entry("train2014", "COCO_train2014_000000057870.jpg", 1, 57870, "train"),
            entry("val2014", "COCO_val2014_000000184613.jpg", 2, 184613, "restval"),
            entry("val2014", "COCO_val2014_000000522418.jpg", 3, 522418, "val"),
        ]}),
    );
    for f in [
        "val2014/COCO_val2014_000000391895.jpg",
        "train2014/COCO_train2014_000000057870.jpg",
        "val2014/COCO_val2014_000000184613.jpg",
        "val2014/COCO_val2014_000000522418.jpg",
    ] {
        image(&root.join(f));
    }
    dir
}

#[test]
fn coco_karpathy_filters_splits_and_finds_images_by_filepath() {
    let dir = coco_fixture();
    let root = dir.path();
    let splits = [KarpathySplit::Train, KarpathySplit::Restval];
    let read = read_karpathy(Dataset::Coco, root, &splits, MissingImages::Error).unwrap();
    assert_eq!(read.skipped_missing, 0);
    assert_eq!(read.samples.len(), 2);
    let s = &read.samples[0];
    assert_eq!(s.image_id, 57870);
    assert_eq!(
        s.image,
        root.join("train2014/COCO_train2014_000000057870.jpg")
    );
    assert_eq!(s.captions, ["A photo number 1.", "Another one"]);
    assert_eq!(s.split, KarpathySplit::Train);
    let s = &read.samples[1];
    assert_eq!(s.image_id, 184613);
    assert_eq!(s.image, root.join("val2014/COCO_val2014_000000184613.jpg"));
    assert_eq!(s.split, KarpathySplit::Restval);

    let val = read_karpathy(
        Dataset::Coco,
        root,
        &[KarpathySplit::Val],
        MissingImages::Error,
    )
    .unwrap();
    assert_eq!(val.samples.len(), 1);
    assert_eq!(val.samples[0].image_id, 522418);
    assert_eq!(
        "restval".parse::<KarpathySplit>().unwrap(),
        KarpathySplit::Restval
    );
    assert!(karpathy_file(Dataset::Seed, root).is_err());
}

#[test]
fn flickr30k_karpathy_reads_flickr30k_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_json(
        &root.join("dataset_flickr30k.json"),
        &json!({"dataset": "flickr30k", "images": [
            {"filename": "1000092795.jpg", "imgid": 0, "split": "train", "sentids": [0, 1],
             "sentences": sentences(&["Two young guys with shaggy hair.", "Two men outside."])},
            {"filename": "10002456.jpg", "imgid": 1, "split": "test", "sentids": [5],
             "sentences": sentences(&["Several men in hard hats."])},
        ]}),
    );
    image(&root.join("flickr30k-images/1000092795.jpg"));
    image(&root.join("flickr30k-images/10002456.jpg"));
    let read = read_karpathy(
        Dataset::Flickr30k,
        root,
        &[KarpathySplit::Test],
        MissingImages::Error,
    )
    .unwrap();
    assert_eq!(read.samples.len(), 1);
    let s = &read.samples[0];
    assert_eq!(s.image_id, 1);
    assert_eq!(s.image, root.join("flickr30k-images/10002456.jpg"));
    assert_eq!(s.captions, ["Several men in hard hats."]);
    assert_eq!(s.split, KarpathySplit::Test);
}

#[test]
fn karpathy_bad_entries_and_missing_images() {
    let dir = coco_fixture();
    let root = dir.path();
    let file = root.join("dataset_coco.json");
    let gone = root.join("val2014/COCO_val2014_000000522418.jpg");
    std::fs::remove_file(&gone).unwrap();
    let val = [KarpathySplit::Val];
    let err = read_karpathy(Dataset::Coco, root, &val, MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&file), "imgid 3", &path_str(&gone)]);
    let read = read_karpathy(Dataset::Coco, root, &val, MissingImages::Skip).unwrap();
    assert_eq!((read.samples.len(), read.skipped_missing), (0, 1));

    write_json(
        &file,
        &json!({"images": [{"filepath": "val2014", "filename": "x.jpg", "imgid": 4,
                            "cocoid": 4, "split": "dev", "sentences": sentences(&["a"])}]}),
    );
    let err = read_karpathy(Dataset::Coco, root, &val, MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&file), "imgid 4", "\"dev\""]);

    write_json(
        &file,
        &json!({"images": [{"filepath": "val2014", "filename": "x.jpg", "imgid": 4,
                            "cocoid": 4, "split": "val"}]}),
    );
    let err = read_karpathy(Dataset::Coco, root, &val, MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&file), "entry 0", "x.jpg", "sentences"]);

    write_text(&file, "{\"images\": [");
    let err = read_karpathy(Dataset::Coco, root, &val, MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&file), "malformed JSON"]);
}

// ---- MME ----

/// `artwork` in the images/ + questions_answers_YN/ layout, `OCR` side by side (with the
/// trailing blank line some copies have).
fn mme_fixture(root: &Path) {
    image(&root.join("artwork/images/10002.jpg"));
    write_text(
        &root.join("artwork/questions_answers_YN/10002.txt"),
        "Does this artwork exist in the form of painting? Please answer yes or no.\tYes\n\
         Does this artwork exist in the form of glassware? Please answer yes or no.\tNo\n",
    );
    image(&root.join("OCR/0001.png"));
    write_text(
        &root.join("OCR/0001.txt"),
        "Is the word in the logo \"angie's\"? Please answer yes or no.\tYes\r\n\
         Is the word in the logo \"angle's\"? Please answer yes or no.\tNo\r\n\n",
    );
}

#[test]
fn mme_reads_both_category_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("MME_Benchmark_release_version");
    mme_fixture(&root);
    let read = read_mme(&root, MissingImages::Error).unwrap();
    assert_eq!(read.skipped_missing, 0);
    let got: Vec<(&str, PathBuf, &str, bool)> = read
        .samples
        .iter()
        .map(|s| {
            (
                s.category.as_str(),
                s.image.clone(),
                s.question.as_str(),
                s.answer_yes,
            )
        })
        .collect();
    let ocr = root.join("OCR/0001.png");
    let art = root.join("artwork/images/10002.jpg");
    assert_eq!(
        got,
        [
            (
                "OCR",
                ocr.clone(),
                "Is the word in the logo \"angie's\"? Please answer yes or no.",
                true
            ),
            (
                "OCR",
                ocr,
                "Is the word in the logo \"angle's\"? Please answer yes or no.",
                false
            ),
            (
                "artwork",
                art.clone(),
                "Does this artwork exist in the form of painting? Please answer yes or no.",
                true
            ),
            (
                "artwork",
                art,
                "Does this artwork exist in the form of glassware? Please answer yes or no.",
                false
            ),
        ]
    );
    // A copy nested one level deeper reads the same.
    let nested = tempfile::tempdir().unwrap();
    mme_fixture(&nested.path().join("MME_Benchmark"));
    let again = read_mme(nested.path(), MissingImages::Error).unwrap();
    assert_eq!(again.samples.len(), 4);
}

#[test]
fn mme_unknown_answer_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    mme_fixture(root);
    let txt = root.join("OCR/0001.txt");
    write_text(&txt, "Is it red?\tYes\nIs it blue?\tMaybe\n");
    let err = read_mme(root, MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&txt), "line 2", "\"Maybe\""]);
    write_text(&txt, "Is it red? Yes\n");
    let err = read_mme(root, MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&txt), "line 1", "TAB"]);
}

#[test]
fn mme_missing_image_errors_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    mme_fixture(root);
    std::fs::remove_file(root.join("artwork/images/10002.jpg")).unwrap();
    let err = read_mme(root, MissingImages::Error).unwrap_err();
    assert_mentions(
        err,
        &[
            &path_str(&root.join("artwork/questions_answers_YN/10002.txt")),
            "line 1",
            &path_str(&root.join("artwork/images/10002.")),
        ],
    );
    let read = read_mme(root, MissingImages::Skip).unwrap();
    assert_eq!(read.skipped_missing, 2);
    assert!(read.samples.iter().all(|s| s.category == "OCR"));
}

// ---- SEED-Bench ----

fn seed_question(id: Value, data_id: &str, data_type: &str, answer: &str, type_id: u32) -> Value {
    json!({"answer": answer, "choice_a": "One", "choice_b": "Two", "choice_c": "Three",
           "choice_d": "Four", "data_id": data_id, "data_type": data_type,
           "question": "How many towels are in the image?", "question_id": id,
           "question_type_id": type_id})
}

fn seed_fixture(questions: Vec<Value>) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_json(
        &dir.path().join("SEED-Bench.json"),
        &json!({"question_type": {"Instances Counting": 5, "Action Recognition": 10},
                "questions": questions}),
    );
    image(&dir.path().join("SEED-Bench-image/1454426_2591111986.jpg"));
    image(&dir.path().join("SEED-Bench-image/2064_1.jpg"));
    dir
}

#[test]
fn seed_reads_image_questions_only() {
    let dir = seed_fixture(vec![
        seed_question(json!("101669"), "1454426_2591111986.jpg", "image", "B", 5),
        seed_question(json!("v1738"), "94328.webm", "video", "B", 10),
        seed_question(json!(2), "2064_1.jpg", "image", "D", 9),
    ]);
    let read = read_seed(dir.path(), MissingImages::Error).unwrap();
    assert_eq!(read.skipped_missing, 0);
    assert_eq!(read.samples.len(), 2);
    let s = &read.samples[0];
    assert_eq!(s.question_id, "101669");
    assert_eq!(
        s.image,
        dir.path().join("SEED-Bench-image/1454426_2591111986.jpg")
    );
    assert_eq!(s.question, "How many towels are in the image?");
    assert_eq!(s.choices, ["One", "Two", "Three", "Four"]);
    assert_eq!(s.answer, 'B');
    assert_eq!(s.answer_text(), Some("Two"));
    assert_eq!(s.question_type_id, 5);
    let s = &read.samples[1];
    assert_eq!(
        (s.question_id.as_str(), s.answer, s.question_type_id),
        ("2", 'D', 9)
    );
}

#[test]
fn seed_bad_answer_missing_image_and_malformed_json() {
    let dir = seed_fixture(vec![seed_question(
        json!("101669"),
        "1454426_2591111986.jpg",
        "image",
        "E",
        5,
    )]);
    let file = dir.path().join("SEED-Bench.json");
    let err = read_seed(dir.path(), MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&file), "question_id 101669", "\"E\""]);

    let dir = seed_fixture(vec![
        seed_question(json!("1"), "gone.jpg", "image", "A", 1),
        seed_question(json!("2"), "2064_1.jpg", "image", "A", 1),
    ]);
    let file = dir.path().join("SEED-Bench.json");
    let err = read_seed(dir.path(), MissingImages::Error).unwrap_err();
    assert_mentions(
        err,
        &[
            &path_str(&file),
            "question_id 1",
            &path_str(&dir.path().join("SEED-Bench-image/gone.jpg")),
        ],
    );
    let read = read_seed(dir.path(), MissingImages::Skip).unwrap();
    assert_eq!((read.samples.len(), read.skipped_missing), (1, 1));

    let mut q = seed_question(json!("77"), "2064_1.jpg", "image", "A", 1);
    q.as_object_mut().unwrap().remove("choice_c");
    write_json(&file, &json!({"questions": [q]}));
    let err = read_seed(dir.path(), MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&file), "question_id 77", "choice_c"]);
}

// ---- easy-VQA ----

/// `site-packages/easy_vqa/data` with two train questions on images 0 and 1.
fn easy_vqa_fixture() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("site-packages/easy_vqa/data");
    write_text(
        &data.join("answers.txt"),
        "circle\ngreen\nred\ngray\nyes\nteal\nblack\nrectangle\nyellow\ntriangle\nbrown\nblue\nno\n",
    );
    write_json(
        &data.join("train/questions.json"),
        &json!([
            ["what is the blue shape?", "rectangle", 0],
            ["is there a red shape?", "no", 1]
        ]),
    );
    write_json(&data.join("test/questions.json"), &json!([]));
    image(&data.join("train/images/0.png"));
    image(&data.join("train/images/1.png"));
    (dir, data)
}

#[test]
fn easy_vqa_reads_the_package_layout() {
    let (dir, data) = easy_vqa_fixture();
    let sp = dir.path().join("site-packages");
    assert_eq!(
        package_root_in(&[dir.path().join("elsewhere"), sp]).unwrap(),
        data
    );
    assert_eq!(read_answers(&data).unwrap().len(), 13);
    let read = read_easy_vqa(&data, EasyVqaSplit::Train, MissingImages::Error).unwrap();
    assert_eq!(read.skipped_missing, 0);
    assert_eq!(read.samples.len(), 2);
    let s = &read.samples[0];
    assert_eq!(s.image_id, 0);
    assert_eq!(s.image, data.join("train/images/0.png"));
    assert_eq!(s.question, "what is the blue shape?");
    assert_eq!(s.answer, "rectangle");
    let s = &read.samples[1];
    assert_eq!((s.image_id, s.answer.as_str()), (1, "no"));
    assert_eq!(s.image, data.join("train/images/1.png"));
    let test = read_easy_vqa(&data, EasyVqaSplit::Test, MissingImages::Error).unwrap();
    assert!(test.samples.is_empty());

    let err = package_root_in(&[dir.path().join("elsewhere")]).unwrap_err();
    assert_mentions(err, &["make setup", "easy-vqa"]);
}

#[test]
fn easy_vqa_bad_entries_and_missing_images() {
    let (_dir, data) = easy_vqa_fixture();
    let file = data.join("train/questions.json");
    let gone = data.join("train/images/1.png");
    std::fs::remove_file(&gone).unwrap();
    let err = read_easy_vqa(&data, EasyVqaSplit::Train, MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&file), "entry 1", &path_str(&gone)]);
    let read = read_easy_vqa(&data, EasyVqaSplit::Train, MissingImages::Skip).unwrap();
    assert_eq!((read.samples.len(), read.skipped_missing), (1, 1));

    write_json(&file, &json!([["what shape?", "hexagon", 0]]));
    let err = read_easy_vqa(&data, EasyVqaSplit::Train, MissingImages::Error).unwrap_err();
    assert_mentions(
        err,
        &[&path_str(&file), "entry 0", "\"hexagon\"", "answers.txt"],
    );

    write_json(&file, &json!([["what shape?", "circle", "zero"]]));
    let err = read_easy_vqa(&data, EasyVqaSplit::Train, MissingImages::Error).unwrap_err();
    assert_mentions(err, &[&path_str(&file), "entry 0"]);
}
