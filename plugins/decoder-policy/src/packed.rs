//! A large weight packed once for decoding on the CPU (`crpo_torch_ext::prepacked`): MKL's
//! few-row products repack the weight on every call, oneDNN's packed copy is reused across a
//! rollout's decode steps and costs less with fewer live rows (docs/performance.md).
//!
//! Only frozen weights are packed (`requires_grad` off: a LoRA run's base, eval, generate):
//! the copy is made at the first decode-sized product (no graph, at most [`DECODE_ROWS`] rows)
//! and kept, and the memory plan counts it as resident. A weight that trains changes every
//! step, and packing it again each time left the freed copies' pages in the CPU heap (never
//! trimmed: host/src/memory.rs) in pieces the update's tensors did not fit: +4.6 GiB at the
//! 0.5B shape. Should a frozen weight change in place all the same (a load), its version
//! counter says so and it is packed again.

use crate::qwen2::{project_weight, FEW_ROWS};
use std::sync::{Arc, Mutex};
use tch::{Device, Kind, Tensor};

/// Weights of at least this many elements (16 MiB in f32) are packed: the MLP's projections
/// and the LM head of a 0.5B model and up, most of a decode step's arithmetic. Smaller ones
/// gain little, and the small models of the tests and the demo keep MKL's path.
pub const PACKED_WEIGHT: i64 = 1 << 22;

/// Products of at most this many rows are a decode step's.
pub const DECODE_ROWS: i64 = FEW_ROWS;

/// The packed copy of one weight and the weight's version it was made at. Shared by a
/// layer's shallow clones.
#[derive(Debug, Clone, Default)]
pub struct PackedWeight(Arc<Mutex<Option<(i64, Tensor)>>>);

impl PackedWeight {
    /// `xs · Wᵀ + b`: through the packed copy for a decode step of a large f32 CPU weight,
    /// else as [`project_weight`] computes it.
    pub fn project(&self, weight: &Tensor, bias: Option<&Tensor>, xs: &Tensor) -> Tensor {
        self.packed_product(weight, xs)
            .map(|out| match bias {
                Some(bias) => out + bias,
                None => out,
            })
            .unwrap_or_else(|| project_weight(weight, bias, xs))
    }

    fn packed_product(&self, weight: &Tensor, xs: &Tensor) -> Option<Tensor> {
        let mut slot = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut shape = xs.size();
        let inputs = *shape.last()?;
        let rows = xs.numel() as i64 / inputs.max(1);
        let recorded = crpo_torch_ext::grad_enabled() && (weight.requires_grad() || xs.requires_grad());
        let decoding = rows <= DECODE_ROWS
            && !recorded
            && !weight.requires_grad()
            && weight.numel() as i64 >= PACKED_WEIGHT
            && weight.device() == Device::Cpu
            && weight.kind() == Kind::Float
            && xs.kind() == Kind::Float;
        if !decoding {
            return None;
        }
        let version = crpo_torch_ext::prepacked::version(weight);
        if slot.as_ref().is_none_or(|(made_at, _)| *made_at != version) {
            // The stale copy goes before the new one is made: never two at once.
            *slot = None;
            let packed = crpo_torch_ext::prepacked::pack(weight, rows.max(1)).ok()??;
            *slot = Some((version, packed));
        }
        let (_, packed) = slot.as_ref()?;
        let out = crpo_torch_ext::prepacked::linear(&xs.reshape([rows, inputs]), packed).ok()?;
        *shape.last_mut()? = weight.size()[0];
        Some(out.reshape(shape.as_slice()))
    }

    /// Whether a packed copy is held now (for tests).
    pub fn is_held(&self) -> bool {
        self.0.lock().map(|slot| slot.is_some()).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_products_use_a_copy_made_again_after_an_update_and_other_products_do_not() {
        tch::manual_seed(0);
        let weight = Tensor::randn([PACKED_WEIGHT / 256, 256], (Kind::Float, Device::Cpu)) * 0.05;
        // A weight that trains is never packed.
        let trained = weight.copy().set_requires_grad(true);
        let packed = PackedWeight::default();
        let step = Tensor::randn([4, 1, 256], (Kind::Float, Device::Cpu));
        let plain = |xs: &Tensor| project_weight(&weight, None, xs);
        let out = tch::no_grad(|| packed.project(&trained, None, &step));
        assert!(!packed.is_held() && out.equal(&plain(&step)));
        let out = tch::no_grad(|| packed.project(&weight, None, &step));
        assert!(packed.is_held());
        assert_eq!(out.size(), [4, 1, PACKED_WEIGHT / 256]);
        assert!(out.allclose(&plain(&step), 1e-5, 1e-5, false));
        // An in-place update: the next product sees the new weight.
        tch::no_grad(|| {
            let _ = weight.shallow_clone().g_mul_scalar_(2.0);
        });
        let doubled = tch::no_grad(|| packed.project(&weight, None, &step));
        assert!(doubled.allclose(&plain(&step), 1e-5, 1e-5, false));
        assert!(doubled.allclose(&(out * 2.0), 1e-4, 1e-4, false));
        // A full pass, or one that autograd records, takes the plain path.
        let prefill = Tensor::randn([1, DECODE_ROWS + 1, 256], (Kind::Float, Device::Cpu));
        let full = tch::no_grad(|| packed.project(&weight, None, &prefill));
        assert!(full.equal(&plain(&prefill)));
        let recorded = step.set_requires_grad(true);
        assert!(packed.project(&weight, None, &recorded).equal(&plain(&recorded)));
        assert!(packed.is_held());
    }
}
