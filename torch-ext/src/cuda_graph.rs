//! CUDA graphs through `src/cuda_graph.cpp`: libtorch's `at::cuda::CUDAGraph`, which records
//! the kernels a stretch of work launches and replays them with one launch. Work is captured
//! on a side stream ([`SideStream`]; the default stream cannot be captured), and a replay
//! reads and writes the very tensors the capture used, so inputs are copied into them before
//! and outputs read from them after.

use std::ffi::{c_char, c_int, c_void, CStr};

extern "C" {
    fn crpo_ext_cuda_graph_new(out: *mut *mut c_void, error: *mut c_char, error_len: usize) -> c_int;
    fn crpo_ext_cuda_graph_free(graph: *mut c_void);
    fn crpo_ext_cuda_graph_capture_begin(
        graph: *mut c_void,
        share_pool_with: *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_ext_cuda_graph_capture_end(graph: *mut c_void, error: *mut c_char, error_len: usize) -> c_int;
    fn crpo_ext_cuda_graph_replay(graph: *mut c_void, error: *mut c_char, error_len: usize) -> c_int;
    fn crpo_ext_cuda_use_side_stream(
        device: c_int,
        previous: *mut i64,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_ext_cuda_restore_stream(previous: *const i64, error: *mut c_char, error_len: usize) -> c_int;
}

/// Runs a shim call; "not built with CUDA" and libtorch's messages become errors.
fn shim(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), String> {
    let mut error = [0 as c_char; 512];
    match f(error.as_mut_ptr(), error.len()) {
        0 => Ok(()),
        1 => Err("this build of crpo has no CUDA (no CUDA headers beside libtorch when it was built)".into()),
        // SAFETY: the shim writes a NUL-terminated message within `error`.
        _ => Err(unsafe { CStr::from_ptr(error.as_ptr()) }
            .to_string_lossy()
            .into_owned()),
    }
}

/// A CUDA device made current, and its side stream (one from libtorch's pool, the same for
/// the whole process) current on it, for as long as this lives; the device is synchronized
/// on entry and on exit, so work on either side of it is ordered.
pub struct SideStream {
    previous: [i64; 4],
}

impl SideStream {
    pub fn enter(device: usize) -> Result<SideStream, String> {
        let mut previous = [0i64; 4];
        // SAFETY: `previous` has room for the 4 values the shim writes.
        shim(|error, len| unsafe {
            crpo_ext_cuda_use_side_stream(device as c_int, previous.as_mut_ptr(), error, len)
        })?;
        Ok(SideStream { previous })
    }

    /// Leaves the side stream, reporting an error (dropping leaves it too, silently).
    pub fn leave(self) -> Result<(), String> {
        let result = self.restore();
        std::mem::forget(self);
        result
    }

    fn restore(&self) -> Result<(), String> {
        // SAFETY: `previous` is what the shim wrote on entry.
        shim(|error, len| unsafe { crpo_ext_cuda_restore_stream(self.previous.as_ptr(), error, len) })
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// A captured CUDA graph (empty until [`CudaGraph::capture`] succeeds). Not `Send`: a replay
/// runs on the current thread's current stream, which must be the one it was captured on.
pub struct CudaGraph {
    graph: *mut c_void,
}

impl CudaGraph {
    pub fn new() -> Result<CudaGraph, String> {
        let mut graph = std::ptr::null_mut();
        // SAFETY: the shim writes an owned graph into `graph`.
        shim(|error, len| unsafe { crpo_ext_cuda_graph_new(&mut graph, error, len) })?;
        Ok(CudaGraph { graph })
    }

    /// Captures the CUDA work `body` queues on the current stream (a side stream), which it
    /// does not run: [`CudaGraph::replay`] does. Memory the work allocates comes from the pool
    /// of `share_pool_with` (a graph captured before and never replayed after this one is
    /// captured) or the graph's own, and what `body` returns lives there, rewritten by each
    /// replay. A body that fails, or work that cannot be captured (a copy to the host, a
    /// synchronization), is an error; the graph is then unusable.
    pub fn capture<T>(
        &mut self,
        share_pool_with: Option<&CudaGraph>,
        body: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, String> {
        let pool = share_pool_with.map_or(std::ptr::null_mut(), |other| other.graph);
        // SAFETY: live graphs of this shim (or null: a pool of its own).
        shim(|error, len| unsafe { crpo_ext_cuda_graph_capture_begin(self.graph, pool, error, len) })?;
        // A tch call that fails inside the capture panics; the capture must end either way.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
            .unwrap_or_else(|panic| Err(crate::panic_message(panic.as_ref())));
        // SAFETY: a live graph whose capture began above.
        let ended = shim(|error, len| unsafe { crpo_ext_cuda_graph_capture_end(self.graph, error, len) });
        let value = result?;
        ended?;
        Ok(value)
    }

    /// Runs the captured work again on the current stream.
    pub fn replay(&self) -> Result<(), String> {
        // SAFETY: a live graph; the shim refuses one never captured.
        shim(|error, len| unsafe { crpo_ext_cuda_graph_replay(self.graph, error, len) })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: owned by this value, freed once.
        unsafe { crpo_ext_cuda_graph_free(self.graph) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_graphs_and_side_streams_are_a_clear_error() {
        if tch::Cuda::is_available() {
            return;
        }
        // A CUDA build on a machine without a GPU: libtorch refuses; a CPU build: the shim.
        assert!(SideStream::enter(0).is_err());
        if let Ok(mut graph) = CudaGraph::new() {
            let err = graph.capture(None, || Ok(())).unwrap_err();
            assert!(!err.is_empty());
        }
    }
}
