//! RICES (retrieval-based in-context example selection): each query's demonstrations are the
//! training pairs whose image is most like its own, by the model's own image features (the
//! image tokens the frozen encoder makes, averaged and L2-normalised; cosine similarity).
//! As in OpenFlamingo's RICES, which the published MimIC code's retrieval follows, the most
//! similar demonstration comes last, next to the query.
use tch::{Kind, Tensor};

use crate::task::{Pair, Task};
use crate::torch_vlm::TaskImages;
use crate::{Result, TrainerError};

/// A pair's image embedding: its first image's tokens averaged and normalised, `[hidden]`.
fn embedding(images: &TaskImages, pair: &Pair) -> Result<Tensor> {
    let first = pair.images.first().ok_or_else(|| {
        TrainerError::Other(format!(
            "RICES needs an image per pair; {:?} has none",
            pair.input
        ))
    })?;
    let tokens = images
        .features(&[first])?
        .ok_or_else(|| TrainerError::Other(format!("image {} not encoded", first.display())))?;
    let mean = tokens.mean_dim(0, false, Kind::Float);
    Ok(&mean / mean.norm().clamp_min(1e-12))
}

/// For each test pair, the indices of its `k` most similar training pairs (never the pair
/// itself), least similar first.
pub fn rices_demonstrations(task: &Task, images: &TaskImages, k: usize) -> Result<Vec<Vec<usize>>> {
    let _guard = tch::no_grad_guard();
    if k > task.train.len() {
        return Err(TrainerError::Other(format!(
            "{} shots asked for but the support set holds {} pairs",
            k,
            task.train.len()
        )));
    }
    let support: Vec<Tensor> = task
        .train
        .iter()
        .map(|p| embedding(images, p))
        .collect::<Result<_>>()?;
    let support = Tensor::stack(&support, 0); // [n, hidden]
    task.test
        .iter()
        .map(|q| {
            let sim = support.matmul(&embedding(images, q)?); // [n]
            let sims = Vec::<f32>::try_from(&sim.to_kind(Kind::Float).to_device(tch::Device::Cpu))?;
            let mut order: Vec<usize> = (0..sims.len()).filter(|&j| task.train[j] != *q).collect();
            // Most similar first (the lower index on ties), then reversed: the nearest last.
            order.sort_by(|&a, &b| sims[b].total_cmp(&sims[a]).then(a.cmp(&b)));
            if order.len() < k {
                return Err(TrainerError::Other(format!(
                    "{k} shots asked for but only {} other support pairs",
                    order.len()
                )));
            }
            let mut top: Vec<usize> = order[..k].to_vec();
            top.reverse();
            Ok(top)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn pair(name: &str) -> Pair {
        Pair {
            input: format!("<image>{name}"),
            output: name.into(),
            images: vec![PathBuf::from(name)],
        }
    }

    #[test]
    fn the_nearest_images_come_last() {
        // Directions: a = (1, 0), b = (0.9, 0.1), c = (0, 1), d = (0.1, 0.9); query q = (1, 0.05).
        let feats = [
            ("a", [1.0f32, 0.0]),
            ("b", [0.9, 0.1]),
            ("c", [0.0, 1.0]),
            ("d", [0.1, 0.9]),
            ("q", [1.0, 0.05]),
        ];
        let images = TaskImages::from_features(
            feats
                .iter()
                .map(|(n, v)| (PathBuf::from(n), Tensor::from_slice(v).view([1, 2]))),
        );
        let task = Task {
            path: PathBuf::from("t"),
            train: ["a", "b", "c", "d"].iter().map(|n| pair(n)).collect(),
            test: vec![pair("q"), pair("c")],
            template: crate::task::Template::new("{input}{output}").unwrap(),
        };
        let demos = rices_demonstrations(&task, &images, 2).unwrap();
        // q: a and b nearest, a (the nearest) last; c: itself excluded, d then b... d nearest.
        assert_eq!(demos[0], vec![1, 0]);
        assert_eq!(demos[1], vec![1, 3]);
        assert!(rices_demonstrations(&task, &images, 5).is_err());
    }
}
