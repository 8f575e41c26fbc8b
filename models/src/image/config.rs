//! `preprocessor_config.json` as typed configs, with the defaults of transformers' classes.
//!
//! Every key is either applied, or known not to change the pixels (e.g. `processor_class`);
//! any other key, and a value this crate does not implement (Idefics3 splitting, `do_pad:
//! false`, a resampling filter other than bilinear/bicubic/lanczos), is an error naming the file
//! and the key. A `null` value means the class default.
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::normalize::Normalization;
use super::resize::Filter;
use crate::error::{ModelError, Result};

/// transformers' `IMAGENET_STANDARD_MEAN` / `_STD`, the default of all three processors.
const STANDARD: [f32; 3] = [0.5, 0.5, 0.5];
const RESCALE: f64 = 1.0 / 255.0;
/// transformers' `IDEFICS_STANDARD_MEAN` / `_STD` (OpenAI CLIP's), `IdeficsImageProcessor`'s
/// defaults.
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Keys that do not change `pixel_values` or the mask.
const IGNORED: &[&str] = &[
    "image_processor_type",
    "processor_class",
    "_processor_class",
    "feature_extractor_type",
    "auto_map",
    "image_seq_len",
    "return_row_col_info",
    "video_sampling",
];

/// The steps every processor here shares.
#[derive(Clone, Debug, PartialEq)]
pub struct Common {
    pub do_convert_rgb: bool,
    pub do_resize: bool,
    pub resample: Filter,
    pub norm: Normalization,
}

/// `SiglipImageProcessor`: resize to a fixed size (no aspect kept), rescale, normalise.
#[derive(Clone, Debug, PartialEq)]
pub struct SiglipConfig {
    pub common: Common,
    pub height: u32,
    pub width: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idefics2Size {
    /// `{shortest_edge, longest_edge}`: the long side capped, both sides at least the short.
    Edges { shortest: u32, longest: u32 },
    /// `{height, width}`.
    Fixed { height: u32, width: u32 },
}

/// `Idefics2ImageProcessor`; splitting (4 quadrants + the whole image) is implemented.
#[derive(Clone, Debug, PartialEq)]
pub struct Idefics2Config {
    pub common: Common,
    pub size: Idefics2Size,
    pub do_image_splitting: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idefics3Size {
    /// `{longest_edge}`: the long side set to it (up or down), the short one even.
    LongestEdge(u32),
    Fixed {
        height: u32,
        width: u32,
    },
}

/// `Idefics3ImageProcessor` without splitting (`do_image_splitting: false`, as MimIC runs it):
/// resize to `size`, then to `max_image_size` square.
#[derive(Clone, Debug, PartialEq)]
pub struct Idefics3Config {
    pub common: Common,
    pub size: Idefics3Size,
    pub max_image_size: u32,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawSize {
    height: Option<u32>,
    width: Option<u32>,
    shortest_edge: Option<u32>,
    longest_edge: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum MeanStd {
    One(f64),
    Many(Vec<f64>),
}

/// The parsed JSON object plus the file name, for errors.
pub(crate) struct Raw<'a> {
    pub path: &'a Path,
    pub map: Map<String, Value>,
}

impl<'a> Raw<'a> {
    pub fn parse(text: &str, path: &'a Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ModelError::format(path, format!("invalid JSON: {e}")))?;
        match value {
            Value::Object(map) => Ok(Raw { path, map }),
            _ => Err(ModelError::format(path, "expected a JSON object")),
        }
    }

    pub fn processor_type(&self) -> Result<String> {
        match self.map.get("image_processor_type") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.err("image_processor_type", "expected a string")),
            None => Err(ModelError::format(
                self.path,
                "no \"image_processor_type\" key: cannot tell which image processor this is",
            )),
        }
    }

    fn err(&self, key: &str, msg: impl std::fmt::Display) -> ModelError {
        ModelError::format(self.path, format!("key \"{key}\": {msg}"))
    }

    /// Errors on a key outside `allowed` and [`IGNORED`].
    fn check_keys(&self, class: &str, allowed: &[&str]) -> Result<()> {
        for key in self.map.keys() {
            if !allowed.contains(&key.as_str()) && !IGNORED.contains(&key.as_str()) {
                return Err(self.err(
                    key,
                    format!("not supported by mimic's {class} (it may change the pixels)"),
                ));
            }
        }
        Ok(())
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| self.err(key, e)),
        }
    }

    fn size(&self, key: &str) -> Result<Option<RawSize>> {
        self.get(key)
    }

    fn mean_std(&self, key: &str) -> Result<[f32; 3]> {
        match self.get::<MeanStd>(key)? {
            None => Ok(STANDARD),
            Some(MeanStd::One(v)) => Ok([v as f32; 3]),
            Some(MeanStd::Many(v)) if v.len() == 3 => Ok([v[0] as f32, v[1] as f32, v[2] as f32]),
            Some(MeanStd::Many(v)) => {
                Err(self.err(key, format!("expected 3 values (RGB), got {}", v.len())))
            }
        }
    }

    fn common(&self, default_filter: Filter) -> Result<Common> {
        let resample = match self.get::<i64>("resample")? {
            None => default_filter,
            Some(code) => Filter::from_pil(code).ok_or_else(|| {
                self.err(
                    "resample",
                    format!(
                        "PIL filter {code} is not implemented (2 bilinear, 3 bicubic, 1 lanczos are)"
                    ),
                )
            })?,
        };
        let do_rescale = self.get::<bool>("do_rescale")?.unwrap_or(true);
        let rescale_factor = self.get::<f64>("rescale_factor")?.unwrap_or(RESCALE);
        let do_normalize = self.get::<bool>("do_normalize")?.unwrap_or(true);
        let mean = self.mean_std("image_mean")?;
        let std = self.mean_std("image_std")?;
        if do_normalize && std.contains(&0.0) {
            return Err(self.err("image_std", "a standard deviation of 0"));
        }
        Ok(Common {
            do_convert_rgb: self.get::<bool>("do_convert_rgb")?.unwrap_or(true),
            do_resize: self.get::<bool>("do_resize")?.unwrap_or(true),
            resample,
            norm: Normalization {
                rescale: do_rescale.then_some(rescale_factor),
                mean_std: do_normalize.then_some((mean, std)),
            },
        })
    }

    fn require_pad(&self) -> Result<()> {
        if self.get::<bool>("do_pad")? == Some(false) {
            return Err(self.err(
                "do_pad",
                "false is not supported (images of different sizes would not stack)",
            ));
        }
        Ok(())
    }
}

const COMMON_KEYS: &[&str] = &[
    "do_convert_rgb",
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
];

/// The longest image side a processor config may ask for, in pixels: above every released
/// processor (at most 4,096), and small enough that a resized image's buffer stays a buffer
/// (8,192 x 8,192 x 3 floats is 805 MB); a size read from the file is checked against it
/// before anything is allocated from it.
pub const MAX_IMAGE_EDGE: u32 = 8192;

fn positive(raw: &Raw, key: &str, v: u32) -> Result<u32> {
    if v == 0 {
        Err(raw.err(key, "sizes must be positive"))
    } else if v > MAX_IMAGE_EDGE {
        Err(raw.err(
            key,
            format!("{v} pixels is more than the {MAX_IMAGE_EDGE} an image side may have"),
        ))
    } else {
        Ok(v)
    }
}

impl SiglipConfig {
    pub(crate) fn from_raw(raw: &Raw) -> Result<Self> {
        raw.check_keys("SiglipImageProcessor", COMMON_KEYS)?;
        let common = raw.common(Filter::Bicubic)?;
        let (height, width) = match raw.size("size")? {
            None => (224, 224),
            Some(RawSize {
                height: Some(h),
                width: Some(w),
                shortest_edge: None,
                longest_edge: None,
            }) => (positive(raw, "size", h)?, positive(raw, "size", w)?),
            Some(other) => {
                return Err(raw.err(
                    "size",
                    format!("SigLIP needs {{height, width}}, got {other:?}"),
                ))
            }
        };
        Ok(SiglipConfig {
            common,
            height,
            width,
        })
    }
}

impl SiglipConfig {
    /// `IdeficsImageProcessor`: SigLIP's steps with CLIP's mean and std by default, the size
    /// under `size` or `image_size` (square), bicubic.
    pub(crate) fn from_raw_idefics(raw: &Raw) -> Result<Self> {
        let mut keys = COMMON_KEYS.to_vec();
        keys.extend(["image_size", "image_num_channels"]);
        raw.check_keys("IdeficsImageProcessor", &keys)?;
        if let Some(c) = raw.get::<u32>("image_num_channels")? {
            if c != 3 {
                return Err(raw.err("image_num_channels", format!("{c} channels (only RGB, 3)")));
            }
        }
        let mut common = raw.common(Filter::Bicubic)?;
        if let Some((mean, std)) = common.norm.mean_std.as_mut() {
            if raw.get::<MeanStd>("image_mean")?.is_none() {
                *mean = CLIP_MEAN;
            }
            if raw.get::<MeanStd>("image_std")?.is_none() {
                *std = CLIP_STD;
            }
        }
        let (height, width) = match (raw.get::<u32>("image_size")?, raw.size("size")?) {
            (Some(side), _) => (
                positive(raw, "image_size", side)?,
                positive(raw, "image_size", side)?,
            ),
            (None, None) => (224, 224),
            (
                None,
                Some(RawSize {
                    height: Some(h),
                    width: Some(w),
                    shortest_edge: None,
                    longest_edge: None,
                }),
            ) => (positive(raw, "size", h)?, positive(raw, "size", w)?),
            (None, Some(other)) => {
                return Err(raw.err(
                    "size",
                    format!("Idefics needs {{height, width}}, got {other:?}"),
                ))
            }
        };
        Ok(SiglipConfig {
            common,
            height,
            width,
        })
    }
}

impl Idefics2Config {
    pub(crate) fn from_raw(raw: &Raw) -> Result<Self> {
        let mut keys = COMMON_KEYS.to_vec();
        keys.extend(["do_pad", "do_image_splitting"]);
        raw.check_keys("Idefics2ImageProcessor", &keys)?;
        raw.require_pad()?;
        let common = raw.common(Filter::Bilinear)?;
        let size = match raw.size("size")? {
            None => Idefics2Size::Edges {
                shortest: 378,
                longest: 980,
            },
            Some(RawSize {
                shortest_edge: Some(s),
                longest_edge: Some(l),
                ..
            }) => Idefics2Size::Edges {
                // 0 lets the short side be as short as the aspect ratio makes it.
                shortest: if s == 0 { 0 } else { positive(raw, "size", s)? },
                longest: positive(raw, "size", l)?,
            },
            Some(RawSize {
                height: Some(h),
                width: Some(w),
                ..
            }) => Idefics2Size::Fixed {
                height: positive(raw, "size", h)?,
                width: positive(raw, "size", w)?,
            },
            Some(other) => {
                return Err(raw.err(
                    "size",
                    format!(
                        "Idefics2 needs {{shortest_edge, longest_edge}} or {{height, width}}, got {other:?}"
                    ),
                ))
            }
        };
        Ok(Idefics2Config {
            common,
            size,
            do_image_splitting: raw.get::<bool>("do_image_splitting")?.unwrap_or(false),
        })
    }
}

impl Idefics3Config {
    pub(crate) fn from_raw(raw: &Raw) -> Result<Self> {
        let mut keys = COMMON_KEYS.to_vec();
        keys.extend(["do_pad", "do_image_splitting", "max_image_size"]);
        raw.check_keys("Idefics3ImageProcessor", &keys)?;
        raw.require_pad()?;
        // transformers' class default is true: a config without the key splits.
        if raw.get::<bool>("do_image_splitting")?.unwrap_or(true) {
            return Err(raw.err(
                "do_image_splitting",
                "Idefics3 image splitting is not implemented; set \"do_image_splitting\": false (as MimIC runs it)",
            ));
        }
        let common = raw.common(Filter::Lanczos)?;
        let size = match raw.size("size")? {
            None => Idefics3Size::LongestEdge(4 * 364),
            Some(RawSize {
                longest_edge: Some(l),
                ..
            }) => Idefics3Size::LongestEdge(positive(raw, "size", l)?),
            Some(RawSize {
                height: Some(h),
                width: Some(w),
                ..
            }) => Idefics3Size::Fixed {
                height: positive(raw, "size", h)?,
                width: positive(raw, "size", w)?,
            },
            Some(other) => {
                return Err(raw.err(
                    "size",
                    format!("Idefics3 needs {{longest_edge}} or {{height, width}}, got {other:?}"),
                ))
            }
        };
        let max_image_size = match raw.size("max_image_size")? {
            None => 364,
            Some(RawSize {
                longest_edge: Some(l),
                ..
            }) => positive(raw, "max_image_size", l)?,
            Some(other) => {
                return Err(raw.err(
                    "max_image_size",
                    format!("expected {{longest_edge}}, got {other:?}"),
                ))
            }
        };
        Ok(Idefics3Config {
            common,
            size,
            max_image_size,
        })
    }
}
