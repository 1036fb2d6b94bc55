// The libtorch calls tch does not wrap, behind a C ABI. Each returns 0 on success, 1 when
// this build has no CUDA, 2 on an error (its message written to `error`).
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#include "shim_error.h"

#ifdef CRPO_TORCH_EXT_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#endif

using crpo_shim::write_error;

extern "C" {

int crpo_ext_built_with_cuda() {
#ifdef CRPO_TORCH_EXT_CUDA
  return 1;
#else
  return 0;
#endif
}

// The caching allocator's bytes on `device`: allocated, reserved, and the peak of each
// since the last reset.
int crpo_ext_cuda_memory(int device, int64_t* out, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  try {
    using c10::CachingAllocator::StatType;
    const auto aggregate = static_cast<size_t>(StatType::AGGREGATE);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    out[0] = stats.allocated_bytes[aggregate].current;
    out[1] = stats.reserved_bytes[aggregate].current;
    out[2] = stats.allocated_bytes[aggregate].peak;
    out[3] = stats.reserved_bytes[aggregate].peak;
    return 0;
  } catch (const std::exception& e) {
    write_error(e.what(), error, error_len);
    return 2;
  }
#else
  (void)device; (void)out; (void)error; (void)error_len;
  return 1;
#endif
}

int crpo_ext_cuda_reset_peak(int device, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  try {
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (const std::exception& e) {
    write_error(e.what(), error, error_len);
    return 2;
  }
#else
  (void)device; (void)error; (void)error_len;
  return 1;
#endif
}

// Free and total bytes of `device` as the driver sees them (other processes included).
int crpo_ext_cuda_mem_info(int device, int64_t* out, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  try {
    // The CUDA runtime is loaded with libc10_cuda; looked up rather than linked, since the
    // pip wheels ship it only as libcudart.so.<major>.
    using MemGetInfo = cudaError_t (*)(size_t*, size_t*);
    const auto mem_get_info = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
    if (mem_get_info == nullptr) {
      write_error("the CUDA runtime (cudaMemGetInfo) is not loaded", error, error_len);
      return 2;
    }
    // Exported c10 calls only (CUDAGuard's inline code would need libcudart linked).
    const auto previous = c10::cuda::ExchangeDevice(static_cast<c10::DeviceIndex>(device));
    size_t free_bytes = 0, total_bytes = 0;
    const cudaError_t status = mem_get_info(&free_bytes, &total_bytes);
    c10::cuda::ExchangeDevice(previous);
    if (status != cudaSuccess) {
      write_error("cudaMemGetInfo failed with CUDA error " + std::to_string(static_cast<int>(status)), error, error_len);
      return 2;
    }
    out[0] = static_cast<int64_t>(free_bytes);
    out[1] = static_cast<int64_t>(total_bytes);
    return 0;
  } catch (const std::exception& e) {
    write_error(e.what(), error, error_len);
    return 2;
  }
#else
  (void)device; (void)out; (void)error; (void)error_len;
  return 1;
#endif
}

}  // extern "C"

// ---- Activation checkpointing: a custom autograd function whose forward runs a Rust body
// without keeping its activations, and whose backward runs the body again with grad and
// backpropagates through that (PyTorch's reentrant `torch.utils.checkpoint`).
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

extern "C" {
// The Rust body: reads `n_inputs` tensors it now owns, writes up to `capacity` owned output
// tensors and their count; 0 on success, else its message is kept for `crpo_ext_last_error`.
typedef int (*crpo_body_fn)(void* body, at::Tensor** inputs, size_t n_inputs, at::Tensor** outputs,
                            size_t capacity, size_t* n_outputs);
typedef void (*crpo_drop_fn)(void* body);
}

namespace {
constexpr size_t kMaxOutputs = 16;

// Owns the Rust body for as long as the autograd graph that may call it again.
struct Body : torch::CustomClassHolder {
  void* body;
  crpo_body_fn call;
  crpo_drop_fn drop;
  Body(void* body, crpo_body_fn call, crpo_drop_fn drop) : body(body), call(call), drop(drop) {}
  ~Body() override { drop(body); }

  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) const {
    std::vector<at::Tensor*> owned;
    owned.reserve(inputs.size());
    for (const auto& input : inputs) owned.push_back(new at::Tensor(input));
    at::Tensor* outputs[kMaxOutputs] = {nullptr};
    size_t count = 0;
    const int status = call(body, owned.data(), owned.size(), outputs, kMaxOutputs, &count);
    std::vector<at::Tensor> result;
    for (size_t i = 0; i < count && i < kMaxOutputs; ++i) {
      result.push_back(*outputs[i]);
      delete outputs[i];
    }
    if (status != 0) throw std::runtime_error("a checkpointed layer failed (its error is logged)");
    return result;
  }
};

struct Checkpointed : public torch::autograd::Function<Checkpointed> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs,
                                                c10::intrusive_ptr<Body> body) {
    ctx->save_for_backward(inputs.vec());
    ctx->saved_data["body"] = c10::IValue::make_capsule(body);
    // Function::apply runs this without grad: nothing inside is kept for the backward.
    return body->run(inputs.vec());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto body = c10::static_intrusive_pointer_cast<Body>(ctx->saved_data["body"].toCapsule());
    const auto saved = ctx->get_saved_variables();
    std::vector<at::Tensor> inputs;
    for (size_t i = 0; i < saved.size(); ++i) {
      const bool needs = ctx->needs_input_grad(i) && saved[i].is_floating_point();
      inputs.push_back(saved[i].detach().requires_grad_(needs));
    }
    std::vector<at::Tensor> outputs;
    {
      at::AutoGradMode with_grad(true);
      outputs = body->run(inputs);
    }
    torch::autograd::variable_list roots, root_grads;
    for (size_t i = 0; i < outputs.size() && i < grads.size(); ++i) {
      if (grads[i].defined() && outputs[i].requires_grad()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grads[i]);
      }
    }
    if (!roots.empty()) torch::autograd::backward(roots, root_grads);
    torch::autograd::variable_list input_grads;
    for (auto& input : inputs) input_grads.push_back(input.requires_grad() ? input.grad() : at::Tensor());
    input_grads.push_back(at::Tensor());  // the body
    return input_grads;
  }
};
}  // namespace

extern "C" {

int crpo_ext_grad_enabled() { return at::GradMode::is_enabled() ? 1 : 0; }

// Runs `body` on `inputs` as one checkpointed node; writes the outputs (owned by the caller).
// On failure the body's drop has run (or will, with the graph) and `error` holds the message.
int crpo_ext_checkpoint(at::Tensor** inputs, size_t n_inputs, void* body, crpo_body_fn call, crpo_drop_fn drop,
                        at::Tensor** outputs, size_t capacity, size_t* n_outputs, char* error, size_t error_len) {
  try {
    auto holder = c10::make_intrusive<Body>(body, call, drop);
    std::vector<at::Tensor> list;
    for (size_t i = 0; i < n_inputs; ++i) list.push_back(*inputs[i]);
    const auto result = Checkpointed::apply(at::TensorList(list), holder);
    if (result.size() > capacity) {
      write_error("a checkpointed layer returned more than " + std::to_string(capacity) + " tensors", error,
                  error_len);
      return 2;
    }
    for (size_t i = 0; i < result.size(); ++i) outputs[i] = new at::Tensor(result[i]);
    *n_outputs = result.size();
    return 0;
  } catch (const std::exception& e) {
    write_error(e.what(), error, error_len);
    return 2;
  }
}

}  // extern "C"

// ---- oneDNN's linear over a weight packed once (what `torch.ops.mkldnn._reorder_linear_weight`
// and `torch.ops.mkldnn._linear_pointwise` do from Python). Called through the dispatcher by
// name: the ops are registered by libtorch_cpu when it is built with oneDNN, and not in tch.
#include <ATen/core/dispatch/Dispatcher.h>
#include <optional>

namespace {
// The op `name` (overload ""), when this libtorch registered one.
std::optional<c10::OperatorHandle> mkldnn_op(const char* name) {
  return c10::Dispatcher::singleton().findSchema({name, ""});
}
}  // namespace

extern "C" {

// `weight` [out, in] packed for products with about `rows` rows; 1 without oneDNN's ops.
int crpo_ext_linear_prepack(at::Tensor* weight, int64_t rows, at::Tensor** out, char* error, size_t error_len) {
  try {
    static const auto op = mkldnn_op("mkldnn::_reorder_linear_weight");
    if (!op.has_value()) return 1;
    torch::jit::Stack stack{c10::IValue(*weight), c10::IValue(rows)};
    op->callBoxed(&stack);
    *out = new at::Tensor(stack.at(0).toTensor());
    return 0;
  } catch (const std::exception& e) {
    write_error(e.what(), error, error_len);
    return 2;
  }
}

// `input` [rows, in] times the packed weight's transpose: [rows, out].
int crpo_ext_linear_prepacked(at::Tensor* input, at::Tensor* packed, at::Tensor** out, char* error,
                              size_t error_len) {
  try {
    static const auto op = mkldnn_op("mkldnn::_linear_pointwise");
    if (!op.has_value()) return 1;
    torch::jit::Stack stack{c10::IValue(*input),
                            c10::IValue(*packed),
                            c10::IValue(),
                            c10::IValue(std::string("none")),
                            c10::IValue(c10::List<std::optional<at::Scalar>>()),
                            c10::IValue(std::string(""))};
    op->callBoxed(&stack);
    *out = new at::Tensor(stack.at(0).toTensor());
    return 0;
  } catch (const std::exception& e) {
    write_error(e.what(), error, error_len);
    return 2;
  }
}

// The tensor's version counter: bumped by every in-place change (an optimizer step, a load).
int64_t crpo_ext_tensor_version(at::Tensor* tensor) { return tensor->_version(); }

}  // extern "C"
