//! Tensors, devices and dtypes across the plugin boundary.

use crpo_sdk::ffi::policy::{FfiDevice, FfiKind};
use crpo_sdk::{PluginError, Result};
use tch::{Device, Kind, Tensor};

/// Whether every value of `tensor` is finite (no NaN, no ±inf), computed without autograd.
pub fn all_finite(tensor: &Tensor) -> std::result::Result<bool, tch::TchError> {
    tch::no_grad(|| Ok(tensor.f_isfinite()?.f_all()?.f_int64_value(&[])? == 1))
}

/// Reads a safetensors file's tensors; an error names the file, and a header or coverage
/// error says the file is cut short or damaged.
pub fn read_safetensors_file(path: &std::path::Path) -> std::result::Result<Vec<(String, Tensor)>, String> {
    Tensor::read_safetensors(path).map_err(|error| {
        let text = error.to_string();
        // As the library's Display ("incomplete metadata") or its variant's name
        // (`MetadataIncompleteBuffer`, `InvalidHeaderLength`), as tch prints it.
        let lower = text.to_lowercase();
        let damaged = if ["metadata", "header", "offset"].iter().any(|w| lower.contains(w)) {
            "not a complete safetensors file (cut short by a copy or download that stopped, or damaged): "
        } else {
            ""
        };
        format!("cannot read {}: {damaged}{text}", path.display())
    })
}

/// Lends a tensor to the other side for the duration of a call.
pub fn lend_tensor(tensor: &Tensor) -> usize {
    tensor.as_ptr() as usize
}

/// Borrows a lent tensor: a shallow clone sharing storage and autograd graph.
///
/// # Safety
/// `handle` must come from [`lend_tensor`] on a tensor alive for this call, in a process whose
/// both sides use the same libtorch build.
pub unsafe fn borrow_tensor(handle: usize) -> Tensor {
    Tensor::clone_from_ptr(handle as *mut _)
}

/// Hands a tensor over; the receiver must [`take_tensor`] it exactly once.
pub fn give_tensor(mut tensor: Tensor) -> usize {
    let handle = tensor.as_mut_ptr() as usize;
    std::mem::forget(tensor);
    handle
}

/// Takes ownership of a tensor handed over with [`give_tensor`].
///
/// # Safety
/// `handle` must come from [`give_tensor`] and not have been taken before.
pub unsafe fn take_tensor(handle: usize) -> Tensor {
    Tensor::from_ptr(handle as *mut _)
}

pub fn ffi_device(device: Device) -> Result<FfiDevice> {
    match device {
        Device::Cpu => Ok(FfiDevice::Cpu),
        Device::Cuda(index) => Ok(FfiDevice::Cuda(index as u32)),
        other => Err(PluginError::failed(format!(
            "device {other:?} is not supported for policies"
        ))),
    }
}

pub fn device(device: FfiDevice) -> Device {
    match device {
        FfiDevice::Cpu => Device::Cpu,
        FfiDevice::Cuda(index) => Device::Cuda(index as usize),
    }
}

pub fn ffi_kind(kind: Kind) -> Result<FfiKind> {
    match kind {
        Kind::Float => Ok(FfiKind::F32),
        Kind::BFloat16 => Ok(FfiKind::BF16),
        Kind::Half => Ok(FfiKind::F16),
        other => Err(PluginError::failed(format!(
            "dtype {other:?} is not supported for policies"
        ))),
    }
}

pub fn kind(kind: FfiKind) -> Kind {
    match kind {
        FfiKind::F32 => Kind::Float,
        FfiKind::BF16 => Kind::BFloat16,
        FfiKind::F16 => Kind::Half,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_storage_and_transfer_ownership() {
        let original = Tensor::from_slice(&[1.0f32, 2.0]);
        let borrowed = unsafe { borrow_tensor(lend_tensor(&original)) };
        let _ = tch::no_grad(|| borrowed.shallow_clone().fill_(5.0));
        assert_eq!(
            original.double_value(&[0]),
            5.0,
            "a borrowed tensor shares storage"
        );
        let taken = unsafe { take_tensor(give_tensor(Tensor::from_slice(&[3.0f32]))) };
        assert_eq!(taken.double_value(&[0]), 3.0);
    }

    #[test]
    fn devices_and_kinds_round_trip() {
        for d in [Device::Cpu, Device::Cuda(2)] {
            assert_eq!(device(ffi_device(d).unwrap()), d);
        }
        for k in [Kind::Float, Kind::BFloat16, Kind::Half] {
            assert_eq!(kind(ffi_kind(k).unwrap()), k);
        }
        assert!(ffi_kind(Kind::Int64).is_err());
    }
}
