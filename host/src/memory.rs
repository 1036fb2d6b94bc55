//! Process-wide settings of the memory allocators libtorch's CPU tensors come from.
//!
//! A CPU training step allocates and frees gigabytes of activations and gradients. By default
//! glibc serves each large block with a fresh `mmap` and unmaps it on free, so every step the
//! kernel faults in and zeroes those pages again: `clear_page_erms` was 19% of a
//! Qwen2.5-0.5B-shaped step's profile. Keeping freed blocks in the process and backing
//! libtorch's large allocations with huge pages took that step from 61 to 54 s with peak RSS
//! 1.10 → 1.15x the estimate (docs/performance.md).

/// libtorch backs CPU allocations of 2 MiB and more with transparent huge pages when this is
/// `1` (read once, at the first such allocation).
const TORCH_HUGE_PAGES: &str = "THP_MEM_ALLOC_ENABLE";

/// Applies both settings unless the user chose their own (`THP_MEM_ALLOC_ENABLE`, or glibc
/// malloc tunables in `GLIBC_TUNABLES`). Call it first thing in `main`, before any thread
/// starts and before libtorch allocates.
pub fn configure_for_training() {
    if std::env::var_os(TORCH_HUGE_PAGES).is_none() {
        std::env::set_var(TORCH_HUGE_PAGES, "1");
    }
    let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc"));
    if !tuned {
        keep_freed_memory();
    }
}

/// glibc: serve large blocks from the heap instead of fresh mappings, and never trim it, so a
/// step reuses the pages the previous step freed (peak RSS is what the process keeps).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // -1 disables trimming (mallopt(3)).
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
