//! What tch does not expose of libtorch, through `src/ext.cpp` (compiled against the same
//! torch headers by the build script): the CUDA caching allocator's memory statistics and
//! the device's free memory. On a build without CUDA every call answers `None`.

use std::ffi::{c_char, c_int, CStr};

extern "C" {
    fn crpo_ext_built_with_cuda() -> c_int;
    fn crpo_ext_cuda_memory(device: c_int, out: *mut i64, error: *mut c_char, error_len: usize) -> c_int;
    fn crpo_ext_cuda_reset_peak(device: c_int, error: *mut c_char, error_len: usize) -> c_int;
    fn crpo_ext_cuda_mem_info(device: c_int, out: *mut i64, error: *mut c_char, error_len: usize) -> c_int;
}

/// Bytes the caching allocator holds on one device (PyTorch's `torch.cuda.memory_allocated`,
/// `memory_reserved`, and their `max_` peaks since the last [`reset_peak_cuda_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemory {
    pub allocated: u64,
    pub reserved: u64,
    pub peak_allocated: u64,
    pub peak_reserved: u64,
}

/// Whether the shim was compiled with CUDA (the libtorch found at build time had it).
pub fn built_with_cuda() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { crpo_ext_built_with_cuda() == 1 }
}

/// Calls a shim function filling `N` values; `None` on a build without CUDA or on a machine
/// without a GPU, an error with libtorch's message otherwise.
fn call<const N: usize>(
    f: impl FnOnce(*mut i64, *mut c_char, usize) -> c_int,
) -> Result<Option<[i64; N]>, String> {
    if !built_with_cuda() || !tch::Cuda::is_available() {
        return Ok(None);
    }
    let mut out = [0i64; N];
    let mut error = [0 as c_char; 512];
    match f(out.as_mut_ptr(), error.as_mut_ptr(), error.len()) {
        0 => Ok(Some(out)),
        1 => Ok(None),
        // SAFETY: the shim writes a NUL-terminated message within `error`.
        _ => Err(unsafe { CStr::from_ptr(error.as_ptr()) }
            .to_string_lossy()
            .into_owned()),
    }
}

fn check_device(device: usize) -> Result<c_int, String> {
    let count = tch::Cuda::device_count();
    if device as i64 >= count {
        return Err(format!("cuda:{device} does not exist ({count} CUDA devices)"));
    }
    Ok(device as c_int)
}

/// The caching allocator's statistics for `cuda:device`.
pub fn cuda_memory(device: usize) -> Result<Option<CudaMemory>, String> {
    let index = check_device(device)?;
    // SAFETY: `out` has room for the 4 values the shim writes; `error` for its message.
    let values = call::<4>(|out, error, len| unsafe { crpo_ext_cuda_memory(index, out, error, len) })?;
    Ok(values.map(
        |[allocated, reserved, peak_allocated, peak_reserved]| CudaMemory {
            allocated: allocated as u64,
            reserved: reserved as u64,
            peak_allocated: peak_allocated as u64,
            peak_reserved: peak_reserved as u64,
        },
    ))
}

/// Starts the peaks of [`cuda_memory`] again from the current values.
pub fn reset_peak_cuda_memory(device: usize) -> Result<(), String> {
    let index = check_device(device)?;
    // SAFETY: `error` has room for the shim's message.
    call::<0>(|_, error, len| unsafe { crpo_ext_cuda_reset_peak(index, error, len) }).map(|_| ())
}

/// Free and total bytes of `cuda:device` as the driver sees them (other processes included).
pub fn cuda_free_and_total(device: usize) -> Result<Option<(u64, u64)>, String> {
    let index = check_device(device)?;
    // SAFETY: `out` has room for the 2 values the shim writes; `error` for its message.
    let values = call::<2>(|out, error, len| unsafe { crpo_ext_cuda_mem_info(index, out, error, len) })?;
    Ok(values.map(|[free, total]| (free as u64, total as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_links_and_answers_on_this_machine() {
        // This libtorch has CUDA (pip's wheel); the build found its headers.
        let cuda = tch::Cuda::is_available();
        let memory = cuda_memory(0);
        if cuda {
            let memory = memory.unwrap().expect("statistics on a machine with a GPU");
            assert!(memory.reserved >= memory.allocated);
            let (free, total) = cuda_free_and_total(0).unwrap().unwrap();
            assert!(total >= free && total > 0);
        } else {
            assert!(memory.unwrap_err().contains("does not exist"));
        }
    }
}
