//! Parity of image decoding, PIL resizing and the SigLIP / Idefics2 / Idefics3 processors
//! against transformers 5.24.0's PIL processors. Fixtures: scripts/make_image_fixtures.py.
use std::path::{Path, PathBuf};

use mimic_models::image::{load_image, pil_convert_rgb, resize, to_rgb, Filter, ImageProcessor};
use mimic_models::ModelError;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn input(name: &str) -> PathBuf {
    dir().join("inputs").join(name)
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn decoding_matches_pil() {
    let exp = expected();
    for (name, e) in exp["decode"].as_object().unwrap() {
        let rgb = to_rgb(&load_image(input(name)).unwrap());
        assert_eq!(
            (rgb.height() as u64, rgb.width() as u64),
            (e["height"].as_u64().unwrap(), e["width"].as_u64().unwrap()),
            "{name}"
        );
        let raw = rgb.as_raw();
        let sums: Vec<i64> = (0..3)
            .map(|c| raw.iter().skip(c).step_by(3).map(|&v| v as i64).sum())
            .collect();
        let want: Vec<i64> = e["channel_sums"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let (mut differ, mut max) = (0usize, 0i64);
        for s in e["samples"].as_array().unwrap() {
            let (i, v) = (s[0].as_u64().unwrap() as usize, s[1].as_i64().unwrap());
            let d = (raw[i] as i64 - v).abs();
            differ += (d != 0) as usize;
            max = max.max(d);
        }
        eprintln!(
            "decode {name}: channel sums {sums:?} (PIL {want:?}); sampled values differing: {differ}, max |diff| {max}"
        );
        if name.ends_with(".jpg") {
            // zune-jpeg vs libjpeg-turbo: IDCT/upsampling rounding, measured in the report.
            assert!(max <= JPEG_MAX_U8_DIFF, "{name}: max diff {max}");
        } else {
            assert_eq!(sums, want, "{name}");
            assert_eq!(differ, 0, "{name}");
        }
        if let Some(plain) = e.get("pil_convert_rgb_channel_sums") {
            let p = pil_convert_rgb(&load_image(input(name)).unwrap());
            let raw = p.as_raw();
            let sums: Vec<i64> = (0..3)
                .map(|c| raw.iter().skip(c).step_by(3).map(|&v| v as i64).sum())
                .collect();
            assert_eq!(
                sums,
                usizes(plain).iter().map(|&v| v as i64).collect::<Vec<_>>()
            );
        }
    }
}

/// Largest per-value difference allowed between zune-jpeg's decode and PIL's (libjpeg-turbo):
/// 3 measured on the fixture (IDCT and chroma-upsampling rounding; ~10% of values differ).
const JPEG_MAX_U8_DIFF: i64 = 4;

#[test]
fn resize_matches_pil_byte_for_byte() {
    let exp = expected();
    for case in exp["resize"].as_array().unwrap() {
        let src = to_rgb(&load_image(input(case["input"].as_str().unwrap())).unwrap());
        let filter = match case["filter"].as_str().unwrap() {
            "bilinear" => Filter::Bilinear,
            "bicubic" => Filter::Bicubic,
            "lanczos" => Filter::Lanczos,
            f => panic!("{f}"),
        };
        let (w, h) = (
            case["width"].as_u64().unwrap() as u32,
            case["height"].as_u64().unwrap() as u32,
        );
        let got = resize(&src, w, h, filter);
        let file = dir()
            .join("resize")
            .join(case["expected"].as_str().unwrap());
        let want = to_rgb(&load_image(&file).unwrap());
        assert_eq!(got.dimensions(), want.dimensions());
        let differ = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differ,
            0,
            "{}: {differ} u8 values differ from PIL",
            file.display()
        );
    }
}

#[test]
fn processors_match_transformers() {
    let exp = expected();
    let tmp = tempfile::tempdir().unwrap();
    for case in exp["processors"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let cfg = tmp.path().join(format!("{name}.json"));
        std::fs::write(&cfg, case["config"].to_string()).unwrap();
        let proc = ImageProcessor::from_file(&cfg).unwrap();
        let batch: Vec<Vec<_>> = case["batch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|f| load_image(input(f.as_str().unwrap())).unwrap())
                    .collect()
            })
            .collect();
        let out = proc.process_batch(&batch).unwrap();
        let pv = &case["pixel_values"];
        let shape = usizes(&pv["shape"]);
        assert_eq!(out.pixel_values.shape, shape, "{name}");
        let data = &out.pixel_values.data;

        // Per-channel sums (float64) over everything but the channel axis.
        let channel_axis = shape.len() - 3;
        let inner: usize = shape[channel_axis + 1..].iter().product();
        let mut sums = [0f64; 3];
        for (i, &v) in data.iter().enumerate() {
            sums[(i / inner) % 3] += v as f64;
        }
        let want_sums: Vec<f64> = pv["channel_sums"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let is_jpeg = name.contains("jpeg");
        let mut max_sum_err = 0f64;
        for c in 0..3 {
            max_sum_err = max_sum_err.max((sums[c] - want_sums[c]).abs());
        }
        let mut max_err = 0f32;
        let mut differ = 0usize;
        let samples = pv["samples"].as_array().unwrap();
        for s in samples {
            let (i, v) = (
                s[0].as_u64().unwrap() as usize,
                s[1].as_f64().unwrap() as f32,
            );
            let e = (data[i] - v).abs();
            differ += (e != 0.0) as usize;
            max_err = max_err.max(e);
        }
        eprintln!(
            "{name}: shape {shape:?}; sampled max |err| {max_err:e} ({differ}/{} differ); channel-sum |err| {max_sum_err:e}",
            samples.len()
        );
        if is_jpeg {
            // Decoder differences, scaled by 1/255/std: up to JPEG_MAX_U8_DIFF * 2/255.
            assert!(
                max_err <= JPEG_MAX_U8_DIFF as f32 * 2.0 / 255.0 + 1e-6,
                "{name}"
            );
        } else {
            // Identical u8 after resizing and the same float32 arithmetic: bit-identical.
            assert_eq!(max_err, 0.0, "{name}");
            assert!(
                max_sum_err < 1e-6 * data.len() as f64,
                "{name}: {sums:?} vs {want_sums:?}"
            );
        }

        match (case.get("pixel_attention_mask"), &out.pixel_attention_mask) {
            (None, None) => {}
            (Some(m), Some(mask)) => {
                let mshape = usizes(&m["shape"]);
                assert_eq!(mask.shape, mshape, "{name}");
                let (h, w) = (mshape[mshape.len() - 2], mshape[mshape.len() - 1]);
                for (k, hw) in m["valid_hw"].as_array().unwrap().iter().enumerate() {
                    let (vh, vw) = (
                        hw[0].as_u64().unwrap() as usize,
                        hw[1].as_u64().unwrap() as usize,
                    );
                    let plane = &mask.data[k * h * w..(k + 1) * h * w];
                    for y in 0..h {
                        for x in 0..w {
                            let want = (y < vh && x < vw) as u8;
                            assert_eq!(
                                plane[y * w + x],
                                want,
                                "{name}: mask image {k} at ({y}, {x})"
                            );
                        }
                    }
                }
            }
            (want, got) => panic!(
                "{name}: mask expected {}, got {}",
                want.is_some(),
                got.is_some()
            ),
        }
    }
}

fn err_text(e: &ModelError) -> String {
    e.to_string()
}

#[test]
fn missing_file_is_not_found_naming_it() {
    let p = dir().join("inputs/no_such_image.png");
    let e = load_image(&p).unwrap_err();
    assert!(matches!(e, ModelError::NotFound { .. }), "{e}");
    assert!(err_text(&e).contains("no_such_image.png"), "{e}");
}

#[test]
fn unreadable_file_is_an_io_error_naming_it() {
    // A directory cannot be read as a file.
    let tmp = tempfile::tempdir().unwrap();
    let e = load_image(tmp.path()).unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }), "{e}");
    assert!(
        err_text(&e).contains(&tmp.path().display().to_string()),
        "{e}"
    );
}

#[test]
fn not_an_image_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (file, bytes, needle) in [
        (
            "text.png",
            b"hello, not an image".to_vec(),
            "not a PNG or JPEG",
        ),
        ("empty.jpg", Vec::new(), "empty file"),
        (
            "image.gif",
            b"GIF89a\x01\x00\x01\x00".to_vec(),
            "not supported",
        ),
    ] {
        let p = tmp.path().join(file);
        std::fs::write(&p, bytes).unwrap();
        let e = load_image(&p).unwrap_err();
        assert!(matches!(e, ModelError::Image { .. }), "{e}");
        let msg = err_text(&e);
        assert!(msg.contains(file) && msg.contains(needle), "{msg}");
    }
}

#[test]
fn truncated_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["chelsea_200x133.png", "rocket_333x517.jpg"] {
        let bytes = std::fs::read(input(name)).unwrap();
        for keep in [bytes.len() / 2, 64] {
            let p = tmp.path().join(format!("cut_{keep}_{name}"));
            std::fs::write(&p, &bytes[..keep]).unwrap();
            match load_image(&p) {
                Err(e) => {
                    assert!(matches!(e, ModelError::Image { .. }), "{e}");
                    let msg = err_text(&e);
                    assert!(
                        msg.contains(&p.display().to_string()) && msg.contains("decode"),
                        "{msg}"
                    );
                }
                // A JPEG decoder may fill a missing tail (libjpeg warns and pads with grey);
                // what it must never do is panic.
                Ok(_) => assert!(
                    name.ends_with(".jpg") && keep > 64,
                    "{name} cut at {keep} decoded"
                ),
            }
        }
    }
}

fn config_error(json: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("preprocessor_config.json");
    std::fs::write(&p, json).unwrap();
    let e = ImageProcessor::from_file(&p).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("preprocessor_config.json"), "{msg}");
    msg
}

#[test]
fn unsupported_config_keys_are_errors_naming_file_and_key() {
    let m = config_error(
        r#"{"image_processor_type": "Idefics3ImageProcessor", "do_image_splitting": true}"#,
    );
    assert!(m.contains("do_image_splitting"), "{m}");
    // transformers' default for Idefics3 is to split.
    let m = config_error(r#"{"image_processor_type": "Idefics3ImageProcessor"}"#);
    assert!(m.contains("do_image_splitting"), "{m}");
    let m =
        config_error(r#"{"image_processor_type": "SiglipImageProcessor", "do_center_crop": true}"#);
    assert!(m.contains("do_center_crop"), "{m}");
    let m = config_error(r#"{"image_processor_type": "SiglipImageProcessor", "resample": 0}"#);
    assert!(m.contains("resample"), "{m}");
    let m = config_error(r#"{"image_processor_type": "Idefics2ImageProcessor", "do_pad": false}"#);
    assert!(m.contains("do_pad"), "{m}");
    let m = config_error(
        r#"{"image_processor_type": "Idefics2ImageProcessor", "image_mean": [0.5, 0.5]}"#,
    );
    assert!(m.contains("image_mean"), "{m}");
    let m = config_error(r#"{"image_processor_type": "CLIPImageProcessor"}"#);
    assert!(m.contains("CLIPImageProcessor"), "{m}");
    let m = config_error(r#"{"size": {"height": 3, "width": 3}}"#);
    assert!(m.contains("image_processor_type"), "{m}");
    let m = config_error("{not json");
    assert!(m.contains("invalid JSON"), "{m}");
}

#[test]
fn idefics2_defaults_and_splitting_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("preprocessor_config.json");
    std::fs::write(&p, r#"{"image_processor_type": "Idefics2ImageProcessor", "processor_class": "Idefics2Processor"}"#).unwrap();
    let proc = ImageProcessor::from_file(&p).unwrap();
    let img = load_image(input("chelsea_200x133.png")).unwrap();
    let out = proc.process(&[img.clone(), img]).unwrap();
    // Splitting is off by default; both images go up to the 378 shortest edge.
    assert_eq!(out.pixel_values.shape, vec![1, 2, 3, 378, 378]);
    let mask = out.pixel_attention_mask.unwrap();
    assert!(mask.data.iter().all(|&v| v == 1));
}
