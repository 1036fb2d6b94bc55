//! What tch does not expose of libtorch, through `src/ext.cpp` (compiled against the same
//! torch headers by the build script): activation checkpointing (a custom autograd function),
//! the CUDA caching allocator's memory statistics and the device's free memory, oneDNN's packed
//! linear ([`prepacked`]), CUDA graphs ([`cuda_graph`]). On a build without CUDA the CUDA
//! calls answer `None` (or an error saying so). [`c10d`] is libtorch's own distributed engine.

pub mod c10d;
pub mod cuda_graph;
pub mod prepacked;

use std::ffi::{c_char, c_int, c_void, CStr};
use tch::Tensor;
use torch_sys::C_tensor;

type BodyFn = unsafe extern "C" fn(
    *mut c_void,
    *mut *mut C_tensor,
    usize,
    *mut *mut C_tensor,
    usize,
    *mut usize,
) -> c_int;
type DropFn = unsafe extern "C" fn(*mut c_void);

extern "C" {
    fn crpo_ext_built_with_cuda() -> c_int;
    fn crpo_ext_cuda_memory(device: c_int, out: *mut i64, error: *mut c_char, error_len: usize) -> c_int;
    fn crpo_ext_cuda_reset_peak(device: c_int, error: *mut c_char, error_len: usize) -> c_int;
    fn crpo_ext_cuda_mem_info(device: c_int, out: *mut i64, error: *mut c_char, error_len: usize) -> c_int;
    fn crpo_ext_grad_enabled() -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn crpo_ext_checkpoint(
        inputs: *mut *mut C_tensor,
        n_inputs: usize,
        body: *mut c_void,
        call: BodyFn,
        drop: DropFn,
        outputs: *mut *mut C_tensor,
        capacity: usize,
        n_outputs: *mut usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
}

/// Whether autograd records operations here (not inside a no-grad guard).
pub fn grad_enabled() -> bool {
    // SAFETY: reads libtorch's thread-local grad mode.
    unsafe { crpo_ext_grad_enabled() == 1 }
}

/// The most tensors a checkpointed body may return.
const MAX_OUTPUTS: usize = 16;

/// A body as the shim holds it (boxed twice: the shim keeps a thin pointer).
type Body = Box<dyn Fn(Vec<Tensor>) -> Result<Vec<Tensor>, String> + Send>;

/// Runs `body` on `inputs` keeping none of its activations: the backward pass runs it again,
/// with grad, from the same inputs, and backpropagates through that. Gradients reach the
/// inputs that require them and every tensor the body uses with grad (its weights), as if it
/// had run plainly; the body must be deterministic (the same outputs both times). Under a
/// no-grad guard it simply runs. The body lives as long as the graph that may call it.
pub fn checkpoint(
    inputs: &[&Tensor],
    body: impl Fn(Vec<Tensor>) -> Result<Vec<Tensor>, String> + Send + 'static,
) -> Result<Vec<Tensor>, String> {
    if !grad_enabled() {
        return body(inputs.iter().map(|t| t.shallow_clone()).collect());
    }
    // A reentrant checkpoint has a backward only when an input requires grad. Under frozen
    // embeddings (LoRA) none does, yet the body's weights do: an input that does not require
    // grad is re-marked as one that does (a detached alias: nothing upstream changes), as
    // transformers' enable_input_require_grads does for PEFT.
    let anchor = (!inputs.iter().any(|t| t.requires_grad()))
        .then(|| inputs.iter().position(|t| t.is_floating_point()))
        .flatten();
    let body: Box<Body> = Box::new(Box::new(body));
    let body = Box::into_raw(body) as *mut c_void;
    let mut owned: Vec<*mut C_tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut clone = if Some(i) == anchor {
                t.detach().set_requires_grad(true)
            } else {
                t.shallow_clone()
            };
            let pointer = clone.as_mut_ptr();
            std::mem::forget(clone);
            pointer
        })
        .collect();
    let mut outputs = [std::ptr::null_mut::<C_tensor>(); MAX_OUTPUTS];
    let mut count = 0usize;
    let mut error = [0 as c_char; 512];
    // SAFETY: `owned` are tensors this call lends (freed below); the shim takes `body` and
    // frees it through `drop_body` once the graph is gone; the outputs it writes are owned.
    let status = unsafe {
        crpo_ext_checkpoint(
            owned.as_mut_ptr(),
            owned.len(),
            body,
            call_body,
            drop_body,
            outputs.as_mut_ptr(),
            MAX_OUTPUTS,
            &mut count,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    for pointer in owned {
        // SAFETY: each is a shallow clone made above, freed once.
        drop(unsafe { Tensor::from_ptr(pointer) });
    }
    if status != 0 {
        let shim = unsafe { CStr::from_ptr(error.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let body_error = LAST_ERROR.with(|last| last.borrow_mut().take());
        return Err(body_error.unwrap_or(shim));
    }
    // SAFETY: the shim wrote `count` owned tensors.
    Ok(outputs[..count]
        .iter()
        .map(|&p| unsafe { Tensor::from_ptr(p) })
        .collect())
}

/// The message a panic carried (tch panics with libtorch's error).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic with no message".to_owned())
}

thread_local! {
    /// The message of the last body that failed on this thread.
    static LAST_ERROR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The shim's call into a body: takes the inputs, hands back the outputs.
unsafe extern "C" fn call_body(
    body: *mut c_void,
    inputs: *mut *mut C_tensor,
    n_inputs: usize,
    outputs: *mut *mut C_tensor,
    capacity: usize,
    n_outputs: *mut usize,
) -> c_int {
    let body = &*(body as *const Body);
    let inputs: Vec<Tensor> = (0..n_inputs).map(|i| Tensor::from_ptr(*inputs.add(i))).collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(inputs)))
        .unwrap_or_else(|_| Err("a checkpointed layer panicked".into()));
    let message = match result {
        Ok(tensors) if tensors.len() <= capacity => {
            *n_outputs = tensors.len();
            for (i, mut tensor) in tensors.into_iter().enumerate() {
                *outputs.add(i) = tensor.as_mut_ptr();
                std::mem::forget(tensor);
            }
            return 0;
        }
        Ok(tensors) => format!(
            "a checkpointed layer returned {} tensors (at most {capacity})",
            tensors.len()
        ),
        Err(message) => message,
    };
    // A failure in the backward pass reaches the caller only as libtorch's generic error.
    tracing::error!("{message}");
    LAST_ERROR.with(|last| *last.borrow_mut() = Some(message));
    *n_outputs = 0;
    1
}

unsafe extern "C" fn drop_body(body: *mut c_void) {
    drop(Box::from_raw(body as *mut Body));
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tch::{Device, Kind};

    /// y = tanh(x·W)·W, with W a weight the body captures.
    fn layer(weight: &Tensor) -> impl Fn(Vec<Tensor>) -> Result<Vec<Tensor>, String> + Send + 'static {
        let weight = weight.shallow_clone();
        move |inputs| Ok(vec![inputs[0].matmul(&weight).tanh().matmul(&weight)])
    }

    #[test]
    fn checkpointed_gradients_equal_plain_ones_and_the_body_runs_again() {
        tch::manual_seed(0);
        let weight = Tensor::randn([4, 4], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let x = Tensor::randn([3, 4], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let body = layer(&weight);
        let once = |input: &Tensor| body(vec![input.shallow_clone()]).unwrap().remove(0);
        once(&once(&x)).sin().sum(Kind::Double).backward();
        let (weight_grad, x_grad) = (weight.grad().copy(), x.grad().copy());
        let _ = (weight.grad().zero_(), x.grad().zero_());

        let calls = Arc::new(AtomicUsize::new(0));
        let counted = {
            let (calls, body) = (calls.clone(), layer(&weight));
            move |inputs| {
                calls.fetch_add(1, Ordering::SeqCst);
                body(inputs)
            }
        };
        // Two layers deep, so one checkpoint's input gradient feeds the other's backward.
        let first = checkpoint(&[&x], counted).unwrap().remove(0);
        let second = checkpoint(&[&first], layer(&weight)).unwrap().remove(0);
        assert!(second.requires_grad());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        second.sin().sum(Kind::Double).backward();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "once forward, once in the backward"
        );
        let close = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) < 1e-12;
        assert!(close(&weight.grad(), &weight_grad), "weight gradients differ");
        assert!(close(&x.grad(), &x_grad), "input gradients differ");
    }

    /// LoRA's case: the input (a frozen embedding's output) does not require grad, the
    /// body's weights do; their gradients still come back, equal to a plain pass's.
    #[test]
    fn weights_get_gradients_when_no_input_requires_grad() {
        tch::manual_seed(1);
        let weight = Tensor::randn([4, 4], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let x = Tensor::randn([3, 4], (Kind::Double, Device::Cpu));
        layer(&weight)(vec![x.shallow_clone()]).unwrap()[0]
            .sin()
            .sum(Kind::Double)
            .backward();
        let plain = weight.grad().copy();
        let _ = weight.grad().zero_();
        let out = checkpoint(&[&x], layer(&weight)).unwrap().remove(0);
        assert!(
            out.requires_grad() && !x.requires_grad(),
            "the caller's input is left as it was"
        );
        out.sin().sum(Kind::Double).backward();
        assert!((weight.grad() - plain).abs().max().double_value(&[]) < 1e-12);
    }

    #[test]
    fn a_failing_body_is_an_error_with_its_message() {
        let x = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let error = checkpoint(&[&x], |_| Err("layer 3 broke".to_string())).unwrap_err();
        assert_eq!(error, "layer 3 broke");
    }

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
