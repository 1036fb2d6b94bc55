//! Rotary position embeddings, with the frequency scalings Llama and Qwen2 checkpoints ship
//! (transformers' `modeling_rope_utils.py`): none (`default`), `linear` (every frequency over
//! `factor`) and `llama3` (Llama 3.1/3.2's: low frequencies over `factor`, high ones kept, a
//! smooth blend between). A checkpoint's other scalings (`yarn`, `dynamic`, `longrope`) are
//! refused by [`crate::config::DecoderConfig::validate`], never run unscaled.

use crate::config::RopeParameters;
use tch::{Device, Kind, Tensor};

/// How a checkpoint scales its rotary frequencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    Default,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

impl RopeScaling {
    /// The scaling `parameters` (`rope_parameters` or transformers 4's `rope_scaling`) ask for,
    /// or what is wrong with them, naming the key.
    pub fn of(parameters: Option<&RopeParameters>, key: &str) -> Result<Self, String> {
        let Some(parameters) = parameters else {
            return Ok(RopeScaling::Default);
        };
        let number = |name: &str, value: &Option<serde_json::Number>| {
            value
                .as_ref()
                .and_then(serde_json::Number::as_f64)
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    format!(
                        "{key}.{name} must be a number > 0 for rope_type `{}`",
                        parameters.kind()
                    )
                })
        };
        if let Some(partial) = parameters.extra.get("partial_rotary_factor") {
            if partial.as_f64() != Some(1.0) {
                return Err(format!(
                    "{key}.partial_rotary_factor {partial} is not supported (rotary embeddings over the whole head)"
                ));
            }
        }
        match parameters.kind() {
            "default" => Ok(RopeScaling::Default),
            "linear" => Ok(RopeScaling::Linear {
                factor: number("factor", &parameters.factor)?,
            }),
            "llama3" => {
                let low_freq_factor = number("low_freq_factor", &parameters.low_freq_factor)?;
                let high_freq_factor = number("high_freq_factor", &parameters.high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return Err(format!("{key}.high_freq_factor must exceed low_freq_factor"));
                }
                Ok(RopeScaling::Llama3 {
                    factor: number("factor", &parameters.factor)?,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings: number(
                        "original_max_position_embeddings",
                        &parameters.original_max_position_embeddings,
                    )?,
                })
            }
            other => Err(format!(
                "{key}.rope_type `{other}` is not supported (default, linear, llama3)"
            )),
        }
    }

    /// `inv_freq` scaled, as transformers computes it (f32 throughout).
    fn apply(&self, inv_freq: Tensor) -> Tensor {
        match *self {
            RopeScaling::Default => inv_freq,
            RopeScaling::Linear { factor } => inv_freq / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_context,
            } => {
                let low_freq_wavelen = old_context / low_freq_factor;
                let high_freq_wavelen = old_context / high_freq_factor;
                let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
                // Long wavelengths are divided by the factor, short ones kept.
                let long = wavelen.gt(low_freq_wavelen);
                let scaled = (&inv_freq / factor).where_self(&long, &inv_freq);
                // Between, a blend by how many of the original context's lengths a wave spans.
                let smooth = (wavelen.reciprocal() * old_context - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                let smoothed: Tensor = (1.0 - &smooth) * &scaled / factor + &smooth * &scaled;
                let medium = wavelen.ge(high_freq_wavelen).logical_and(&long.logical_not());
                smoothed.where_self(&medium, &scaled)
            }
        }
    }
}

/// Rotary embeddings: `cos`/`sin` for arbitrary (per-sequence) positions.
#[derive(Debug)]
pub struct Rotary {
    inv_freq: Tensor,
}

impl Rotary {
    pub fn new(head_dim: usize, theta: f64, device: Device) -> Self {
        Self::scaled(head_dim, theta, RopeScaling::Default, device)
    }

    pub fn scaled(head_dim: usize, theta: f64, scaling: RopeScaling, device: Device) -> Self {
        let half = (head_dim / 2) as i64;
        let exponents = Tensor::arange(half, (Kind::Float, device)) * (2.0 / head_dim as f64);
        let inv_freq = Tensor::from(theta as f32)
            .to_device(device)
            .pow(&exponents)
            .reciprocal();
        Rotary {
            inv_freq: scaling.apply(inv_freq),
        }
    }

    /// `(cos, sin)` of shape `[B, 1, T, head_dim]` for positions `[B, T]`.
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq;
        let angles = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (angles.cos().to_kind(kind), angles.sin().to_kind(kind))
    }
}

/// `x·cos + rotate_half(x)·sin`, with `rotate_half([a, b]) = [-b, a]` over the last dim.
pub fn apply_rotary(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = xs.size().last().copied().unwrap() / 2;
    let first = xs.narrow(-1, 0, half);
    let second = xs.narrow(-1, half, half);
    let rotated = Tensor::cat(&[&(-second), &first], -1);
    xs * cos + rotated * sin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frequencies(scaling: RopeScaling) -> Vec<f64> {
        let rotary = Rotary::scaled(16, 10_000.0, scaling, Device::Cpu);
        Vec::<f64>::try_from(rotary.inv_freq.to_kind(Kind::Double)).unwrap()
    }

    #[test]
    fn llama3_divides_long_waves_keeps_short_ones_and_blends_between() {
        let plain = frequencies(RopeScaling::Default);
        let scaled = frequencies(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        });
        for (f, s) in plain.iter().zip(&scaled) {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let expected = if wavelen < 16.0 {
                *f
            } else if wavelen > 64.0 {
                f / 8.0
            } else {
                let smooth = (64.0 / wavelen - 1.0) / 3.0;
                (1.0 - smooth) * f / 8.0 + smooth * f
            };
            assert!(
                (s - expected).abs() < 1e-6 * f,
                "{wavelen}: {s} against {expected}"
            );
        }
        // The head's 8 frequencies span all three regimes at these settings.
        let waves: Vec<f64> = plain.iter().map(|f| 2.0 * std::f64::consts::PI / f).collect();
        assert!(waves[0] < 16.0 && waves[7] > 64.0 && waves.iter().any(|w| (16.0..=64.0).contains(w)));
        let linear = frequencies(RopeScaling::Linear { factor: 4.0 });
        assert!(plain.iter().zip(&linear).all(|(f, l)| (f / 4.0 - l).abs() < 1e-9));
    }

    #[test]
    fn scalings_are_read_from_either_layout_and_bad_ones_named() {
        let parse = |json: &str| serde_json::from_str::<RopeParameters>(json).unwrap();
        let v4 = parse(r#"{"type": "linear", "factor": 2.0}"#);
        assert_eq!(
            RopeScaling::of(Some(&v4), "rope_scaling"),
            Ok(RopeScaling::Linear { factor: 2.0 })
        );
        let yarn = parse(r#"{"rope_type": "yarn", "factor": 4.0}"#);
        let error = RopeScaling::of(Some(&yarn), "rope_scaling").unwrap_err();
        assert!(error.contains("rope_scaling.rope_type `yarn`"), "{error}");
        let missing = parse(r#"{"rope_type": "llama3", "factor": 8.0}"#);
        let error = RopeScaling::of(Some(&missing), "rope_parameters").unwrap_err();
        assert!(error.contains("rope_parameters.low_freq_factor"), "{error}");
        let partial = parse(r#"{"rope_type": "default", "partial_rotary_factor": 0.5}"#);
        assert!(RopeScaling::of(Some(&partial), "rope_parameters").is_err());
    }
}
