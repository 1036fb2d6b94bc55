//! Memory a run holds, for metrics.jsonl, `doctor` and the benchmarks: on CUDA the caching
//! allocator's allocated and reserved bytes and their peaks (PyTorch's
//! `torch.cuda.max_memory_allocated` / `max_memory_reserved`), through `crpo-torch-ext`; on
//! every device the process's peak resident memory.

use serde::{Deserialize, Serialize};
use tch::Device;

/// The CUDA allocator's bytes on the run's device since the last [`reset_peak`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuMemory {
    pub allocated_bytes: u64,
    pub reserved_bytes: u64,
    pub peak_allocated_bytes: u64,
    pub peak_reserved_bytes: u64,
}

/// The statistics of `device` (None off CUDA, or when the build has no CUDA shim); a failure
/// of the allocator's query is logged, not fatal: it only costs a figure.
pub fn gpu_memory(device: Device) -> Option<GpuMemory> {
    let Device::Cuda(index) = device else {
        return None;
    };
    match crpo_torch_ext::cuda_memory(index) {
        Ok(memory) => memory.map(|m| GpuMemory {
            allocated_bytes: m.allocated,
            reserved_bytes: m.reserved,
            peak_allocated_bytes: m.peak_allocated,
            peak_reserved_bytes: m.peak_reserved,
        }),
        Err(why) => {
            tracing::warn!("cannot read the CUDA allocator's statistics: {why}");
            None
        }
    }
}

/// Starts the peaks of [`gpu_memory`] from the current values (at the start of a step).
pub fn reset_peak(device: Device) {
    if let Device::Cuda(index) = device {
        if let Err(why) = crpo_torch_ext::reset_peak_cuda_memory(index) {
            tracing::warn!("cannot reset the CUDA allocator's peak statistics: {why}");
        }
    }
}

/// Free and total bytes of a CUDA device as the driver sees them.
pub fn free_and_total(device: Device) -> Option<(u64, u64)> {
    match device {
        Device::Cuda(index) => crpo_torch_ext::cuda_free_and_total(index).ok().flatten(),
        _ => None,
    }
}

/// The process's peak resident memory so far (`getrusage`'s maxrss).
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    // Linux reports kibibytes.
    usage.ru_maxrss.max(0) as u64 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_grows_with_a_touched_allocation() {
        let before = peak_rss_bytes();
        let block = vec![1u8; 64 << 20];
        assert!(block.iter().step_by(4096).all(|&b| b == 1));
        assert!(
            peak_rss_bytes() >= before.max(64 << 20),
            "{before} → {}",
            peak_rss_bytes()
        );
        assert_eq!(gpu_memory(Device::Cpu), None);
    }
}
