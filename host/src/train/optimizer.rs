//! AdamW with its state in the open (so a checkpoint holds it and a resume continues it
//! exactly), global grad-norm clipping and the learning-rate schedule.
//!
//! Parameters in bf16 keep an f32 master copy here: updates of lr·1e-3 scale vanish when
//! added to bf16 weights directly.

use super::config::LrSchedule;
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy)]
pub struct AdamWSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct ParamState {
    name: String,
    param: Tensor,
    /// f32 copy of a lower-precision parameter.
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

pub struct AdamW {
    settings: AdamWSettings,
    params: Vec<ParamState>,
    /// Updates taken so far (for bias correction).
    pub steps: i64,
}

impl AdamW {
    pub fn new(parameters: Vec<(String, Tensor)>, settings: AdamWSettings) -> Self {
        let params = parameters
            .into_iter()
            .map(|(name, param)| {
                let master = (param.kind() != Kind::Float).then(|| param.detach().to_kind(Kind::Float));
                let zeros = || param.zeros_like().to_kind(Kind::Float);
                ParamState {
                    name,
                    exp_avg: zeros(),
                    exp_avg_sq: zeros(),
                    master,
                    param,
                }
            })
            .collect();
        let adamw = AdamW {
            settings,
            params,
            steps: 0,
        };
        // The gradients are allocated now, beside the moments. Left to the first backward,
        // they land between that step's activations and, outliving them, split the memory
        // those free into pieces too small for the next step's largest tensors: the CPU heap
        // is never trimmed (crate::memory), so RSS grew by a step's vocabulary-sized tensors.
        if adamw.params.iter().all(|s| s.param.requires_grad()) {
            tch::with_grad(|| adamw.gradients());
        }
        adamw
    }

    /// The moments and master weights, in parameter order: what a replica must share.
    pub fn state_tensors(&self) -> Vec<&Tensor> {
        self.params
            .iter()
            .flat_map(|s| [Some(&s.exp_avg), Some(&s.exp_avg_sq), s.master.as_ref()])
            .flatten()
            .collect()
    }

    /// The parameters, in order (sharing storage with the model).
    pub fn parameters(&self) -> Vec<&Tensor> {
        self.params.iter().map(|s| &s.param).collect()
    }

    /// Every parameter's gradient, in parameter order, zeros where none was accumulated (a rank
    /// that ran no pass of an update still sends its share of the sum).
    pub fn gradients(&self) -> Vec<Tensor> {
        let unaccumulated: Vec<&Tensor> = self
            .params
            .iter()
            .map(|s| &s.param)
            .filter(|p| !p.grad().defined())
            .collect();
        if !unaccumulated.is_empty() {
            // A zero loss over them defines their gradients as zeros.
            let zero = unaccumulated
                .iter()
                .map(|p| p.sum(Kind::Float) * 0.0)
                .reduce(|a, b| a + b)
                .expect("at least one");
            zero.backward();
        }
        self.params.iter().map(|s| s.param.grad()).collect()
    }

    pub fn zero_grad(&mut self) {
        for state in &mut self.params {
            state.param.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm` (0 = only measure).
    /// Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let _guard = tch::no_grad_guard();
        let norms: Vec<Tensor> = self
            .params
            .iter()
            .map(|s| s.param.grad())
            .filter(Tensor::defined)
            .map(|g| g.to_kind(Kind::Float).norm())
            .collect();
        if norms.is_empty() {
            return 0.0;
        }
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
        if max_norm > 0.0 && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            for state in &self.params {
                let mut grad = state.param.grad();
                if grad.defined() {
                    let _ = grad.g_mul_scalar_(scale);
                }
            }
        }
        total
    }

    /// One AdamW update with learning rate `lr` (decoupled weight decay, bias-corrected).
    /// Returns whether every updated weight is finite (checked on the device, one sync).
    #[must_use = "non-finite weights must not be trained on or saved"]
    pub fn step(&mut self, lr: f64) -> bool {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let AdamWSettings {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.settings;
        let correction1 = 1.0 - beta1.powi(self.steps as i32);
        let correction2 = 1.0 - beta2.powi(self.steps as i32);
        let mut finite: Vec<Tensor> = Vec::with_capacity(self.params.len());
        for state in &mut self.params {
            let grad = state.param.grad();
            if !grad.defined() {
                continue;
            }
            // In place wherever the maths allows (as torch's AdamW): three parameter-sized
            // temporaries instead of nine, and fewer passes over the largest tensors.
            let grad = grad.to_kind(Kind::Float);
            let _ = state.exp_avg.lerp_(&grad, 1.0 - beta1);
            let _ = state
                .exp_avg_sq
                .g_mul_scalar_(beta2)
                .addcmul_(&grad, &(&grad * (1.0 - beta2)));
            let mut denominator = state.exp_avg_sq.sqrt();
            let _ = denominator.g_div_scalar_(correction2.sqrt()).g_add_scalar_(eps);
            let mut update = state.exp_avg.g_div(&denominator);
            drop(denominator);
            let _ = update.g_mul_scalar_(lr / correction1);
            let weights = state.master.as_mut().unwrap_or(&mut state.param);
            if weight_decay > 0.0 {
                let _ = weights.g_mul_scalar_(1.0 - lr * weight_decay);
            }
            let _ = weights.g_sub_(&update);
            if let Some(master) = &state.master {
                state.param.copy_(master);
            }
            finite.push(state.param.isfinite().all());
        }
        finite.is_empty() || Tensor::stack(&finite, 0).all().int64_value(&[]) == 1
    }

    /// Writes moments and master weights (safetensors) beside `steps` in `meta`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for state in &self.params {
            tensors.push((
                format!("exp_avg.{}", state.name),
                state.exp_avg.to_device(Device::Cpu),
            ));
            tensors.push((
                format!("exp_avg_sq.{}", state.name),
                state.exp_avg_sq.to_device(Device::Cpu),
            ));
            if let Some(master) = &state.master {
                tensors.push((format!("master.{}", state.name), master.to_device(Device::Cpu)));
            }
        }
        tensors.push(("steps".into(), Tensor::from_slice(&[self.steps])));
        Tensor::write_safetensors(&tensors, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Restores what [`AdamW::save`] wrote, for the same parameters.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let mut saved: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("cannot read optimizer state {}", path.display()))?
            .into_iter()
            .collect();
        let mut take = |key: String, like: &Tensor| -> anyhow::Result<Tensor> {
            let tensor = saved
                .remove(&key)
                .with_context(|| format!("{}: no `{key}` (saved for another model?)", path.display()))?;
            if tensor.size() != like.size() {
                bail!(
                    "{}: `{key}` has shape {:?}, the model {:?}",
                    path.display(),
                    tensor.size(),
                    like.size()
                );
            }
            Ok(tensor.to_device(like.device()).to_kind(Kind::Float))
        };
        let _guard = tch::no_grad_guard();
        for state in &mut self.params {
            state.exp_avg = take(format!("exp_avg.{}", state.name), &state.exp_avg)?;
            state.exp_avg_sq = take(format!("exp_avg_sq.{}", state.name), &state.exp_avg_sq)?;
            if let Some(master) = &mut state.master {
                *master = take(format!("master.{}", state.name), master)?;
                state.param.copy_(master);
            }
        }
        let steps = saved
            .remove("steps")
            .with_context(|| format!("{}: no `steps`", path.display()))?;
        self.steps = steps.int64_value(&[0]);
        Ok(())
    }
}

/// The learning rate for optimizer update `update` (0-based) of `total`: linear warm-up over
/// `warmup` updates, then constant, linear decay to 0, or cosine decay to 0.
pub fn learning_rate(base: f64, schedule: LrSchedule, warmup: usize, update: usize, total: usize) -> f64 {
    if update < warmup {
        return base * (update + 1) as f64 / warmup as f64;
    }
    let decay_span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((update - warmup) as f64 / decay_span).min(1.0);
    match schedule {
        LrSchedule::Constant => base,
        LrSchedule::Linear => base * (1.0 - progress),
        LrSchedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(weight_decay: f64) -> AdamWSettings {
        AdamWSettings {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }

    fn one_param(value: f32) -> Tensor {
        Tensor::from_slice(&[value]).set_requires_grad(true)
    }

    fn set_grad(param: &Tensor, grad: f32) {
        let loss = param * grad as f64;
        loss.sum(Kind::Float).backward();
    }

    #[test]
    fn the_first_adamw_step_moves_by_lr_times_the_sign() {
        // Bias-corrected m/√v = g/|g| on the first step: 1.0 − 0.1·1 = 0.9; with decay 0.5
        // the weight first shrinks by 1 − 0.1·0.5 = 0.95: 0.95 − 0.1 = 0.85.
        for (decay, expected) in [(0.0, 0.9), (0.5, 0.85)] {
            let p = one_param(1.0);
            let mut adam = AdamW::new(vec![("p".into(), p.shallow_clone())], settings(decay));
            set_grad(&p, 3.0);
            assert!(adam.step(0.1));
            assert!(
                (p.double_value(&[0]) - expected).abs() < 1e-6,
                "{}",
                p.double_value(&[0])
            );
        }
    }

    #[test]
    fn gradients_are_allocated_with_the_moments_and_accumulate_from_zero() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let _adam = AdamW::new(vec![("p".into(), p.shallow_clone())], settings(0.0));
        let grad = p.grad();
        assert!(grad.defined(), "allocated before any backward");
        assert_eq!(Vec::<f32>::try_from(&grad).unwrap(), [0.0, 0.0]);
        set_grad(&p, 3.0);
        assert_eq!(Vec::<f32>::try_from(&p.grad()).unwrap(), [3.0, 3.0]);
    }

    #[test]
    fn the_second_step_follows_the_moments() {
        // g1 = 1, g2 = −1: m2 = 0.9·0.1 − 0.1 = −0.01, v2 = 0.999·0.001 + 0.001 = 0.001999;
        // m̂ = −0.01/0.19 = −0.052632, v̂ = 0.001999/0.001999 = 1 → update = −0.052632.
        let p = one_param(0.0);
        let mut adam = AdamW::new(vec![("p".into(), p.shallow_clone())], settings(0.0));
        set_grad(&p, 1.0);
        assert!(adam.step(1.0));
        adam.zero_grad();
        set_grad(&p, -1.0);
        assert!(adam.step(1.0));
        assert!(
            (p.double_value(&[0]) - (-1.0 + 0.052_632)).abs() < 1e-5,
            "{}",
            p.double_value(&[0])
        );
    }

    #[test]
    fn grad_norm_clipping_scales_all_gradients_together() {
        let (a, b) = (one_param(0.0), one_param(0.0));
        let mut adam = AdamW::new(
            vec![("a".into(), a.shallow_clone()), ("b".into(), b.shallow_clone())],
            settings(0.0),
        );
        set_grad(&a, 3.0);
        set_grad(&b, 4.0);
        assert!((adam.clip_grad_norm(1.0) - 5.0).abs() < 1e-6);
        assert!((a.grad().double_value(&[0]) - 0.6).abs() < 1e-5);
        assert!((b.grad().double_value(&[0]) - 0.8).abs() < 1e-5);
    }

    #[test]
    fn state_round_trips_and_bf16_weights_keep_an_f32_master() {
        let dir = tempfile::tempdir().unwrap();
        let p = Tensor::from_slice(&[1.0f32])
            .to_kind(Kind::BFloat16)
            .set_requires_grad(true);
        let mut adam = AdamW::new(vec![("p".into(), p.shallow_clone())], settings(0.0));
        for _ in 0..3 {
            adam.zero_grad();
            set_grad(&p, 1.0);
            assert!(adam.step(1e-4));
        }
        // Three updates of 1e-4 are lost in bf16 (spacing 2^-7 near 1) but not in the master.
        assert_eq!(p.double_value(&[0]), 1.0);
        adam.save(&dir.path().join("opt.safetensors")).unwrap();
        let q = Tensor::from_slice(&[1.0f32])
            .to_kind(Kind::BFloat16)
            .set_requires_grad(true);
        let mut restored = AdamW::new(vec![("p".into(), q.shallow_clone())], settings(0.0));
        restored.load(&dir.path().join("opt.safetensors")).unwrap();
        assert_eq!(restored.steps, 3);
        let master = restored.params[0].master.as_ref().unwrap().double_value(&[0]);
        assert!((master - (1.0 - 3e-4)).abs() < 1e-6, "{master}");
        let mut other = AdamW::new(vec![("w".into(), one_param(0.0))], settings(0.0));
        let err = other
            .load(&dir.path().join("opt.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exp_avg.w"), "{err}");
    }

    #[test]
    fn schedules_warm_up_then_decay() {
        assert_eq!(learning_rate(1.0, LrSchedule::Constant, 2, 0, 10), 0.5);
        assert_eq!(learning_rate(1.0, LrSchedule::Constant, 2, 1, 10), 1.0);
        assert_eq!(learning_rate(1.0, LrSchedule::Constant, 2, 9, 10), 1.0);
        assert_eq!(learning_rate(1.0, LrSchedule::Linear, 2, 6, 10), 0.5);
        assert!((learning_rate(1.0, LrSchedule::Cosine, 0, 5, 10) - 0.5).abs() < 1e-12);
        assert_eq!(learning_rate(1.0, LrSchedule::Linear, 0, 0, 10), 1.0);
    }
}
