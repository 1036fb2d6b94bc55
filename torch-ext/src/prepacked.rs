//! oneDNN's linear over a weight packed once, for decoding on the CPU: MKL's products with a
//! few rows repack the weight on every call (docs/performance.md, "A decode step of the 0.5B
//! shape"), oneDNN's packed weight is reused across a rollout's decode steps and its cost
//! falls with the rows still live.

use std::ffi::{c_char, c_int, CStr};
use tch::{Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn crpo_ext_linear_prepack(
        weight: *mut C_tensor,
        rows: i64,
        out: *mut *mut C_tensor,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_ext_linear_prepacked(
        input: *mut C_tensor,
        packed: *mut C_tensor,
        out: *mut *mut C_tensor,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_ext_tensor_version(tensor: *mut C_tensor) -> i64;
}

/// Calls a shim function writing one owned tensor: `None` when this libtorch has no oneDNN
/// ops, an error with libtorch's message otherwise.
fn one_tensor(
    f: impl FnOnce(*mut *mut C_tensor, *mut c_char, usize) -> c_int,
) -> Result<Option<Tensor>, String> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    let mut error = [0 as c_char; 512];
    match f(&mut out, error.as_mut_ptr(), error.len()) {
        // SAFETY: on success the shim wrote a tensor the caller owns.
        0 => Ok(Some(unsafe { Tensor::from_ptr(out) })),
        1 => Ok(None),
        // SAFETY: the shim writes a NUL-terminated message within `error`.
        _ => Err(unsafe { CStr::from_ptr(error.as_ptr()) }
            .to_string_lossy()
            .into_owned()),
    }
}

/// `weight` (`[out, in]`, f32, on the CPU) packed by oneDNN for products with about `rows`
/// rows; `None` when this libtorch has no oneDNN.
pub fn pack(weight: &Tensor, rows: i64) -> Result<Option<Tensor>, String> {
    if weight.kind() != Kind::Float || weight.device() != tch::Device::Cpu || weight.dim() != 2 {
        return Err(format!(
            "only a 2-d f32 CPU weight packs (this one: {:?} {:?} {:?})",
            weight.size(),
            weight.kind(),
            weight.device()
        ));
    }
    let weight = weight.detach().contiguous();
    // SAFETY: `weight` outlives the call; the shim writes one owned tensor or a message.
    one_tensor(|out, error, len| unsafe {
        crpo_ext_linear_prepack(weight.as_ptr() as *mut C_tensor, rows, out, error, len)
    })
}

/// `input · Wᵀ` (`input` `[rows, in]` f32) with `W` as [`pack`] packed it.
pub fn linear(input: &Tensor, packed: &Tensor) -> Result<Tensor, String> {
    let input = input.contiguous();
    // SAFETY: both tensors outlive the call; the shim writes one owned tensor or a message.
    one_tensor(|out, error, len| unsafe {
        crpo_ext_linear_prepacked(
            input.as_ptr() as *mut C_tensor,
            packed.as_ptr() as *mut C_tensor,
            out,
            error,
            len,
        )
    })?
    .ok_or_else(|| "this libtorch has no oneDNN linear".to_string())
}

/// `tensor`'s version counter: every in-place change (an optimizer step, a load) bumps it, so
/// a packed copy made at one version is stale at another.
pub fn version(tensor: &Tensor) -> i64 {
    // SAFETY: reads a counter of a live tensor.
    unsafe { crpo_ext_tensor_version(tensor.as_ptr() as *mut C_tensor) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_packed_product_equals_the_plain_one_and_an_update_changes_the_version() {
        tch::manual_seed(0);
        let weight = Tensor::randn([300, 40], (Kind::Float, Device::Cpu));
        let input = Tensor::randn([5, 40], (Kind::Float, Device::Cpu));
        let Some(packed) = pack(&weight, 16).unwrap() else {
            panic!("the torch wheel this project builds against has oneDNN");
        };
        let plain = input.matmul(&weight.transpose(0, 1));
        let fast = linear(&input, &packed).unwrap();
        assert_eq!(fast.size(), [5, 300]);
        assert!(fast.allclose(&plain, 1e-5, 1e-5, false));
        let before = version(&weight);
        let _ = weight.shallow_clone().g_add_scalar_(1.0);
        assert!(version(&weight) > before);
        assert!(pack(&weight.to_kind(Kind::Double), 16).is_err());
    }
}
