//! libtorch's c10d (`src/c10d.cpp`): a TCPStore rendezvous and a process group — Gloo on CPU,
//! NCCL on CUDA, the engines torchrun and DDP use — with the collectives data-parallel
//! training needs: bucketed all-reduce, broadcast, all-gather of small values and a barrier.
//! Every call is bounded by the group's timeout, so a dead or stalled peer is an error.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Duration;
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn crpo_c10d_backends() -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn crpo_c10d_new(
        host: *const c_char,
        port: u16,
        host_store: c_int,
        prefix: *const c_char,
        bind_host: *const c_char,
        rank: c_int,
        world_size: c_int,
        backend: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_c10d_free(group: *mut c_void);
    fn crpo_c10d_all_reduce_sum(
        group: *mut c_void,
        tensors: *mut *mut C_tensor,
        n: usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_c10d_broadcast(
        group: *mut c_void,
        tensors: *mut *mut C_tensor,
        n: usize,
        root: c_int,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_c10d_barrier(group: *mut c_void, error: *mut c_char, error_len: usize) -> c_int;
    fn crpo_c10d_store_set(
        group: *mut c_void,
        key: *const c_char,
        value: *const u8,
        len: usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_c10d_sync_new(
        group: *mut c_void,
        tensors: *mut *mut C_tensor,
        n: usize,
        bucket_bytes: i64,
        out: *mut *mut c_void,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_c10d_sync_arm(sync: *mut c_void);
    fn crpo_c10d_sync_finish(
        sync: *mut c_void,
        sent_during_backward: *mut usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_c10d_sync_free(sync: *mut c_void);
    fn crpo_c10d_store_timeout(
        group: *mut c_void,
        timeout_ms: i64,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn crpo_c10d_store_get(
        group: *mut c_void,
        key: *const c_char,
        out: *mut u8,
        capacity: usize,
        len: *mut usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
}

/// The communication engine under a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors, over TCP.
    Gloo,
    /// CUDA tensors.
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// Whether this build compiled the backend in (Gloo needs gloo's headers at build time,
    /// NCCL a CUDA libtorch and nccl.h).
    pub fn built(self) -> bool {
        // SAFETY: no arguments, no state.
        let bits = unsafe { crpo_c10d_backends() };
        match self {
            Backend::Gloo => bits & 1 != 0,
            Backend::Nccl => bits & 2 != 0,
        }
    }
}

/// Where and how to join a group.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    /// Rank 0's address (MASTER_ADDR), where the store listens.
    pub host: String,
    /// The store's port (MASTER_PORT).
    pub port: u16,
    /// Whether this process hosts the store (rank 0, unless a launcher's agent already does,
    /// as torchrun's: TORCHELASTIC_USE_AGENT_STORE).
    pub host_store: bool,
    /// The group's keys in the store are under this prefix (a restarted job's must not meet the
    /// last attempt's).
    pub prefix: String,
    /// The address this rank's Gloo transport binds to; empty: this host's name (else loopback).
    pub bind_host: String,
    pub rank: usize,
    pub world_size: usize,
    pub backend: Backend,
    /// The longest any collective (and the rendezvous itself) may wait.
    pub timeout: Duration,
}

/// A process group this process belongs to.
pub struct ProcessGroup {
    handle: *mut c_void,
    pub rank: usize,
    pub world_size: usize,
    pub backend: Backend,
    pub timeout: Duration,
}

// SAFETY: the handle is only freed on drop; libtorch's TCPStore serialises its calls and
// its process groups queue collectives under their own locks, as Python's threads use them.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

/// The largest bucket an all-reduce sends at once (DDP's default bucket is 25 MiB).
pub const BUCKET_BYTES: usize = 25 << 20;

/// The shim's message, without the C++ stack libtorch appends to it.
fn message(error: &[c_char]) -> String {
    // SAFETY: the shim writes a NUL-terminated message within `error`.
    let text = unsafe { CStr::from_ptr(error.as_ptr()) }.to_string_lossy();
    text.split("\nException raised from")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Calls a shim function with an error buffer: its message on failure.
fn checked(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), String> {
    let mut error = [0 as c_char; 1024];
    match f(error.as_mut_ptr(), error.len()) {
        0 => Ok(()),
        1 => Err(format!(
            "{what}: this build of crpo has no c10d backend (install libgloo-dev and rebuild)"
        )),
        _ => Err(format!("{what}: {}", message(&error))),
    }
}

fn c_string(what: &str, text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("{what} `{text}` holds a NUL byte"))
}

impl ProcessGroup {
    /// Joins the group described by `rendezvous`: waits (up to its timeout) for every rank.
    pub fn join(rendezvous: &Rendezvous) -> Result<Self, String> {
        if !rendezvous.backend.built() {
            return Err(format!(
                "this build of crpo has no {} (for Gloo: apt install libgloo-dev, then rebuild; NCCL needs a CUDA libtorch)",
                rendezvous.backend.name()
            ));
        }
        let host = c_string("MASTER_ADDR", &rendezvous.host)?;
        let bind = c_string("the bind address", &rendezvous.bind_host)?;
        let prefix = c_string("the store prefix", &rendezvous.prefix)?;
        let mut handle = std::ptr::null_mut();
        checked(
            &format!(
                "rank {} of {} joining {}:{}",
                rendezvous.rank, rendezvous.world_size, rendezvous.host, rendezvous.port
            ),
            // SAFETY: the strings outlive the call; `handle` receives an owned group.
            |error, len| unsafe {
                crpo_c10d_new(
                    host.as_ptr(),
                    rendezvous.port,
                    c_int::from(rendezvous.host_store),
                    prefix.as_ptr(),
                    bind.as_ptr(),
                    rendezvous.rank as c_int,
                    rendezvous.world_size as c_int,
                    match rendezvous.backend {
                        Backend::Gloo => 0,
                        Backend::Nccl => 1,
                    },
                    rendezvous.timeout.as_millis().min(i64::MAX as u128) as i64,
                    &mut handle,
                    error,
                    len,
                )
            },
        )?;
        Ok(ProcessGroup {
            handle,
            rank: rendezvous.rank,
            world_size: rendezvous.world_size,
            backend: rendezvous.backend,
            timeout: rendezvous.timeout,
        })
    }

    /// Sums each tensor in place across the ranks. Tensors are sent in buckets of at most
    /// [`BUCKET_BYTES`], each flattened into one contiguous buffer of its dtype.
    pub fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<(), String> {
        let _guard = tch::no_grad_guard();
        for bucket in buckets(tensors) {
            let flat = Tensor::cat(&bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
            self.all_reduce_in_place(&[&flat])?;
            scatter_back(&flat, &bucket);
        }
        Ok(())
    }

    /// Averages each floating-point tensor in place across the ranks: the sum, divided by the
    /// number of ranks (Gloo has no average). An integer tensor is refused: its mean would be
    /// rounded.
    pub fn all_reduce_mean(&self, tensors: &[&Tensor]) -> Result<(), String> {
        if let Some(integer) = tensors.iter().find(|t| !t.is_floating_point()) {
            return Err(format!(
                "all-reduce mean: a tensor of kind {:?} (only floating-point tensors average)",
                integer.kind()
            ));
        }
        self.all_reduce_sum(tensors)?;
        let _guard = tch::no_grad_guard();
        for tensor in tensors {
            let _ = tensor.shallow_clone().g_div_scalar_(self.world_size as f64);
        }
        Ok(())
    }

    /// Sums contiguous tensors in place with one collective.
    fn all_reduce_in_place(&self, tensors: &[&Tensor]) -> Result<(), String> {
        let mut pointers: Vec<*mut C_tensor> = tensors.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
        checked("all-reduce", |error, len| {
            // SAFETY: the tensors outlive the call; the shim only reads the pointers.
            unsafe {
                crpo_c10d_all_reduce_sum(self.handle, pointers.as_mut_ptr(), pointers.len(), error, len)
            }
        })
    }

    /// Copies rank `root`'s tensors into every rank's (same shapes and dtypes on each).
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<(), String> {
        let _guard = tch::no_grad_guard();
        for bucket in buckets(tensors) {
            let flat = Tensor::cat(&bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
            let mut pointers = [flat.as_ptr() as *mut C_tensor];
            checked("broadcast", |error, len| {
                // SAFETY: `flat` outlives the call.
                unsafe {
                    crpo_c10d_broadcast(self.handle, pointers.as_mut_ptr(), 1, root as c_int, error, len)
                }
            })?;
            scatter_back(&flat, &bucket);
        }
        Ok(())
    }

    /// Every rank's `bytes`, in rank order, on every rank.
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let device = self.device();
        let world = self.world_size as i64;
        let lengths = Tensor::zeros([world], (Kind::Int64, device));
        let _ = lengths.get(self.rank as i64).fill_(bytes.len() as i64);
        self.all_reduce_in_place(&[&lengths])?;
        let lengths: Vec<i64> =
            Vec::try_from(lengths.to_device(Device::Cpu)).map_err(|e: tch::TchError| e.to_string())?;
        let width = lengths.iter().copied().max().unwrap_or(0).max(1);
        let table = Tensor::zeros([world, width], (Kind::Uint8, device));
        if !bytes.is_empty() {
            table
                .get(self.rank as i64)
                .narrow(0, 0, bytes.len() as i64)
                .copy_(&Tensor::from_slice(bytes).to_device(device));
        }
        // Sums of one non-zero row per column: exact, even in uint8.
        self.all_reduce_in_place(&[&table])?;
        let table = table.to_device(Device::Cpu);
        (0..self.world_size)
            .map(|rank| {
                let row = table.get(rank as i64).narrow(0, 0, lengths[rank]);
                Vec::<u8>::try_from(row).map_err(|e: tch::TchError| e.to_string())
            })
            .collect()
    }

    /// Waits for every rank to get here.
    pub fn barrier(&self) -> Result<(), String> {
        // SAFETY: the handle is live.
        checked("barrier", |error, len| unsafe {
            crpo_c10d_barrier(self.handle, error, len)
        })
    }

    /// Sets `key` in the rendezvous store.
    pub fn store_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let key = c_string("store key", key)?;
        checked("store set", |error, len| {
            // SAFETY: key and value outlive the call.
            unsafe { crpo_c10d_store_set(self.handle, key.as_ptr(), value.as_ptr(), value.len(), error, len) }
        })
    }

    /// Bounds the store's own calls from now on (the rendezvous used the group's timeout).
    pub fn set_store_timeout(&self, timeout: Duration) -> Result<(), String> {
        checked("store timeout", |error, len| {
            // SAFETY: the handle is live.
            unsafe { crpo_c10d_store_timeout(self.handle, timeout.as_millis() as i64, error, len) }
        })
    }

    /// `key`'s value in the rendezvous store, `None` when it is not set (it does not wait).
    pub fn store_get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let key_c = c_string("store key", key)?;
        let mut value = vec![0u8; 256];
        loop {
            let mut len = 0usize;
            checked("store get", |error, error_len| {
                // SAFETY: `value` has `value.len()` bytes of room; the key outlives the call.
                unsafe {
                    crpo_c10d_store_get(
                        self.handle,
                        key_c.as_ptr(),
                        value.as_mut_ptr(),
                        value.len(),
                        &mut len,
                        error,
                        error_len,
                    )
                }
            })?;
            if len == usize::MAX {
                return Ok(None);
            }
            if len <= value.len() {
                value.truncate(len);
                return Ok(Some(value));
            }
            value.resize(len, 0);
        }
    }

    /// Where this group's tensors live: the CPU for Gloo, the current CUDA device for NCCL.
    pub fn device(&self) -> Device {
        match self.backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(0),
        }
    }
}

/// Gradient sums overlapped with the backward pass, as DDP's reducer does: hooks after each
/// parameter's gradient accumulation send a bucket (parameters in reverse order, the order the
/// backward produces their gradients) as soon as it and every bucket before it are complete,
/// while the backward goes on. [`GradientSync::arm`] before the backward whose gradients are
/// final; [`GradientSync::finish`] after it sends what is left, waits, and writes the sums
/// into the gradients (defining those a rank never accumulated).
pub struct GradientSync {
    handle: *mut c_void,
    /// The shim's sync points at the group: it lives as long.
    _group: std::sync::Arc<ProcessGroup>,
}

impl GradientSync {
    /// Hooks `parameters` (leaves that require grad; the same list, in the same order, on
    /// every rank) to `group`.
    pub fn new(group: std::sync::Arc<ProcessGroup>, parameters: &[&Tensor]) -> Result<Self, String> {
        let mut pointers: Vec<*mut C_tensor> =
            parameters.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
        let mut handle = std::ptr::null_mut();
        checked("hooking the gradient sums", |error, len| {
            // SAFETY: the tensors outlive the call (the shim keeps its own references).
            unsafe {
                crpo_c10d_sync_new(
                    group.handle,
                    pointers.as_mut_ptr(),
                    pointers.len(),
                    BUCKET_BYTES as i64,
                    &mut handle,
                    error,
                    len,
                )
            }
        })?;
        Ok(GradientSync {
            handle,
            _group: group,
        })
    }

    /// The next backward sends buckets as their gradients become final.
    pub fn arm(&self) {
        // SAFETY: the handle is live.
        unsafe { crpo_c10d_sync_arm(self.handle) }
    }

    /// Sends the buckets not yet sent, waits for every sum (within the group's timeout) and
    /// writes them into the parameters' gradients. Returns how many buckets the backward had
    /// already sent (the overlapped ones).
    pub fn finish(&self) -> Result<usize, String> {
        let mut sent = 0usize;
        checked("summing gradients", |error, len| {
            // SAFETY: the handle is live; `sent` outlives the call.
            unsafe { crpo_c10d_sync_finish(self.handle, &mut sent, error, len) }
        })?;
        Ok(sent)
    }
}

impl Drop for GradientSync {
    fn drop(&mut self) {
        // SAFETY: made by `crpo_c10d_sync_new`, freed once.
        unsafe { crpo_c10d_sync_free(self.handle) }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle was made by `crpo_c10d_new` and is freed once.
        unsafe { crpo_c10d_free(self.handle) }
    }
}

/// Copies the flat buffer of a bucket back into its tensors, in order.
fn scatter_back(flat: &Tensor, bucket: &[&Tensor]) {
    let _guard = tch::no_grad_guard();
    let mut offset = 0;
    for tensor in bucket {
        let numel = tensor.numel() as i64;
        let mut target = (*tensor).shallow_clone();
        target.copy_(&flat.narrow(0, offset, numel).view_as(tensor));
        offset += numel;
    }
}

/// `tensors` in runs of one dtype and device, each run at most [`BUCKET_BYTES`] (a larger
/// tensor alone), in order.
fn buckets<'a>(tensors: &[&'a Tensor]) -> Vec<Vec<&'a Tensor>> {
    let mut buckets: Vec<Vec<&Tensor>> = Vec::new();
    let mut bytes = 0usize;
    for &tensor in tensors {
        let size = tensor.numel() * tensor.kind().elt_size_in_bytes();
        let fits = buckets.last().is_some_and(|bucket| {
            let first = bucket[0];
            first.kind() == tensor.kind() && first.device() == tensor.device() && bytes + size <= BUCKET_BYTES
        });
        if fits {
            buckets.last_mut().expect("a bucket").push(tensor);
            bytes += size;
        } else {
            buckets.push(vec![tensor]);
            bytes = size;
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_order_split_at_the_size_and_never_mix_dtypes() {
        let big = Tensor::zeros([(BUCKET_BYTES / 4) as i64], (Kind::Float, Device::Cpu));
        let small = Tensor::zeros([10], (Kind::Float, Device::Cpu));
        let int = Tensor::zeros([10], (Kind::Int64, Device::Cpu));
        let cut = buckets(&[&small, &small, &big, &small, &int, &int]);
        let sizes: Vec<usize> = cut.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 1, 1, 2]);
        assert_eq!(cut[1][0].numel(), big.numel());
        assert_eq!(cut[3][0].kind(), Kind::Int64);
    }
}
