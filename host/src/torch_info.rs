//! What libtorch this process runs on: version, CUDA devices, cuDNN, threads.

use std::path::{Path, PathBuf};

/// The directory of the libtorch_cpu this process has loaded (from /proc/self/maps), so the
/// version reported is the one actually running, not the one built against.
pub fn loaded_libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|n| n == "libtorch_cpu.so")
        })
        .and_then(|path| Path::new(path).parent().map(Path::to_path_buf))
}

pub use crpo_torch_link::torch_version;

/// One CUDA device as the driver describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaDevice {
    pub index: usize,
    pub name: String,
    pub total_memory_bytes: u64,
}

/// Names and memory of the CUDA devices, from the driver API (libcuda), which tch does not
/// expose. Empty when there is no driver.
pub fn cuda_devices() -> Result<Vec<CudaDevice>, String> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
    type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type CuDeviceGetName = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32;
    type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, i32) -> i32;

    // SAFETY: the CUDA driver API's documented C signatures; buffers are sized as passed.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").map_err(|e| format!("no CUDA driver: {e}"))?;
        let symbol_error = |e: libloading::Error| format!("CUDA driver: {e}");
        let init: libloading::Symbol<CuInit> = lib.get(b"cuInit").map_err(symbol_error)?;
        let count: libloading::Symbol<CuDeviceGetCount> =
            lib.get(b"cuDeviceGetCount").map_err(symbol_error)?;
        let get: libloading::Symbol<CuDeviceGet> = lib.get(b"cuDeviceGet").map_err(symbol_error)?;
        let name: libloading::Symbol<CuDeviceGetName> = lib.get(b"cuDeviceGetName").map_err(symbol_error)?;
        let memory: libloading::Symbol<CuDeviceTotalMem> =
            lib.get(b"cuDeviceTotalMem_v2").map_err(symbol_error)?;
        let check = |code: i32, call: &str| {
            if code == 0 {
                Ok(())
            } else {
                Err(format!("{call} failed with CUDA error {code}"))
            }
        };
        check(init(0), "cuInit")?;
        let mut n = 0;
        check(count(&mut n), "cuDeviceGetCount")?;
        let mut devices = Vec::new();
        for index in 0..n {
            let mut device = 0;
            check(get(&mut device, index), "cuDeviceGet")?;
            let mut buffer = [0 as std::ffi::c_char; 256];
            check(
                name(buffer.as_mut_ptr(), buffer.len() as i32, device),
                "cuDeviceGetName",
            )?;
            let mut bytes = 0usize;
            check(memory(&mut bytes, device), "cuDeviceTotalMem")?;
            devices.push(CudaDevice {
                index: index as usize,
                name: std::ffi::CStr::from_ptr(buffer.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
                total_memory_bytes: bytes as u64,
            });
        }
        Ok(devices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_libtorch_this_test_runs_on() {
        // Touch libtorch so it is certainly mapped.
        let _ = tch::Tensor::from_slice(&[1.0f32]);
        let dir = loaded_libtorch_dir().expect("libtorch_cpu.so is mapped");
        let version = torch_version(&dir).expect("a version file next to libtorch");
        assert!(version.starts_with("2.11.0"), "{version}");
    }
}
