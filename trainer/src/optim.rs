//! AdamW with decoupled weight decay, a cosine learning-rate schedule with linear warm-up, and
//! gradient clipping by global norm. Written out (rather than libtorch's optimiser) so its
//! state can be checkpointed and a resumed run continues exactly.
use tch::{Kind, Tensor};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub warmup_fraction: f64,
    pub clip_norm: f64,
}

impl Default for AdamWConfig {
    /// The published MimIC recipe.
    fn default() -> Self {
        AdamWConfig {
            lr: 5e-3,
            weight_decay: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_fraction: 0.1,
            clip_norm: 1.0,
        }
    }
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up, then cosine decay to 0.
pub fn cosine_lr(cfg: &AdamWConfig, step: usize, total: usize) -> f64 {
    let warmup = ((total as f64) * cfg.warmup_fraction).round() as usize;
    if step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let progress = (step - warmup) as f64 / span;
    cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// First and second moments per parameter, and the step count.
pub struct AdamW {
    pub cfg: AdamWConfig,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub t: i64,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, params: &[&Tensor]) -> Self {
        AdamW {
            cfg,
            m: params.iter().map(|p| p.zeros_like()).collect(),
            v: params.iter().map(|p| p.zeros_like()).collect(),
            t: 0,
        }
    }

    /// Clips gradients to the global norm, takes one step at learning rate `lr`, zeroes the
    /// gradients, and returns the norm before clipping.
    pub fn step(&mut self, params: &mut [(&mut Tensor, bool)], lr: f64) -> f64 {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = params.iter().map(|(p, _)| p.grad()).collect();
        let total: f64 = grads
            .iter()
            .filter(|g| g.defined())
            .map(|g| g.pow_tensor_scalar(2).sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt();
        let clip = if total > self.cfg.clip_norm {
            self.cfg.clip_norm / (total + 1e-6)
        } else {
            1.0
        };
        self.t += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (i, ((p, decay), g)) in params.iter_mut().zip(&grads).enumerate() {
            if !g.defined() {
                continue;
            }
            let g = g * clip;
            self.m[i] = &self.m[i] * b1 + &g * (1.0 - b1);
            self.v[i] = &self.v[i] * b2 + g.pow_tensor_scalar(2) * (1.0 - b2);
            let update = (&self.m[i] / bc1) / ((&self.v[i] / bc2).sqrt() + self.cfg.eps);
            if *decay {
                let _ = p.f_mul_(&Tensor::from(1.0 - lr * self.cfg.weight_decay));
            }
            let _ = p.f_sub_(&(update * lr));
            let mut grad = p.grad();
            let _ = grad.zero_();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let cfg = AdamWConfig::default();
        assert!((cosine_lr(&cfg, 0, 100) - cfg.lr / 10.0).abs() < 1e-12);
        assert!((cosine_lr(&cfg, 9, 100) - cfg.lr).abs() < 1e-12);
        assert!((cosine_lr(&cfg, 10, 100) - cfg.lr).abs() < 1e-12);
        assert!(cosine_lr(&cfg, 99, 100) < cfg.lr * 1e-3);
    }

    #[test]
    fn adamw_minimises_a_quadratic_with_clipping() {
        let mut x = Tensor::from_slice(&[3.0f32, -2.0]).set_requires_grad(true);
        let mut opt = AdamW::new(
            AdamWConfig {
                lr: 0.1,
                weight_decay: 0.0,
                ..Default::default()
            },
            &[&x],
        );
        let mut first_norm = 0.0;
        for i in 0..300 {
            let loss = x.pow_tensor_scalar(2).sum(Kind::Float);
            loss.backward();
            let n = opt.step(&mut [(&mut x, true)], 0.1);
            if i == 0 {
                first_norm = n;
            }
        }
        assert!((first_norm - (36.0f64 + 16.0).sqrt()).abs() < 1e-4);
        let rest: Vec<f32> = Vec::try_from(&x.detach()).unwrap();
        assert!(rest.iter().all(|v| v.abs() < 0.05), "{rest:?}");
    }
}
