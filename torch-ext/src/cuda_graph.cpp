// CUDA graphs (libtorch's at::cuda::CUDAGraph) and the side stream they are captured on,
// behind a C ABI. Each call returns 0 on success, 1 when this build has no CUDA, 2 on an
// error (its message written to `error`).
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <string>

#include "shim_error.h"

#ifdef CRPO_TORCH_EXT_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#endif

using crpo_shim::guarded;

#ifdef CRPO_TORCH_EXT_CUDA
namespace {
// A CUDA runtime call looked up rather than linked (the pip wheels ship the runtime only as
// libcudart.so.<major>, loaded with libc10_cuda).
template <typename F>
F runtime(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

// at::cuda::CUDAGraph, with a capture_end that cleans up after a failed capture. In torch
// 2.11, when the stream's capture was invalidated (a synchronizing call, an OOM's cudaFree),
// capture_end throws before handing the allocator's pool back (pytorch#180395): the allocator
// would stay in capture mode for the rest of the process (no OOM retry, no empty_cache) and
// the pool would leak.
struct Graph : at::cuda::CUDAGraph {
  void end_capture() {
    try {
      capture_end();
    } catch (...) {
      if (!capture_ended_) {
        abandon_capture();
      }
      throw;
    }
  }

 private:
  void abandon_capture() {
    using IsCapturing = cudaError_t (*)(cudaStream_t, cudaStreamCaptureStatus*);
    using EndCapture = cudaError_t (*)(cudaStream_t, cudaGraph_t*);
    using GraphDestroy = cudaError_t (*)(cudaGraph_t);
    using GetLastError = cudaError_t (*)();
    const auto is_capturing = runtime<IsCapturing>("cudaStreamIsCapturing");
    const auto end = runtime<EndCapture>("cudaStreamEndCapture");
    const auto destroy = runtime<GraphDestroy>("cudaGraphDestroy");
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (is_capturing != nullptr && end != nullptr &&
        is_capturing(capture_stream_.stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
      cudaGraph_t partial = nullptr;
      end(capture_stream_.stream(), &partial);
      if (partial != nullptr && destroy != nullptr) {
        destroy(partial);
      }
    }
    try {
      c10::cuda::CUDACachingAllocator::endAllocateToPool(capture_dev_, mempool_id_);
    } catch (...) {
      // capture_end got as far as ending the pool's allocation itself.
    }
    try {
      c10::cuda::CUDACachingAllocator::releasePool(capture_dev_, mempool_id_);
    } catch (...) {
    }
    if (const auto last_error = runtime<GetLastError>("cudaGetLastError")) {
      last_error();  // The capture's error is not sticky: clear it for the eager steps after.
    }
  }
};

// One side stream per device for the process: the caching allocator reuses a freed block
// only on the stream that allocated it, and cuBLAS keeps a workspace per stream, so a new
// pool stream per generation would strand memory on each.
c10::cuda::CUDAStream side_stream(c10::DeviceIndex device) {
  static std::mutex lock;
  static std::map<c10::DeviceIndex, c10::cuda::CUDAStream> streams;
  std::lock_guard<std::mutex> guard(lock);
  const auto found = streams.find(device);
  if (found != streams.end()) {
    return found->second;
  }
  const auto stream = c10::cuda::getStreamFromPool(false, device);
  streams.emplace(device, stream);
  return stream;
}
}  // namespace
#endif

extern "C" {

// A new, empty graph in `*out`.
int crpo_ext_cuda_graph_new(void** out, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded([&] { *out = new Graph(); }, error, error_len);
#else
  (void)out;
  (void)error; (void)error_len;
  return 1;
#endif
}

void crpo_ext_cuda_graph_free(void* graph) {
#ifdef CRPO_TORCH_EXT_CUDA
  delete static_cast<Graph*>(graph);
#else
  (void)graph;
#endif
}

// Starts capturing the current stream's work into `graph`, allocating from the memory pool
// of `share_pool_with` (the graph captured before it, never replayed again) or a new one.
int crpo_ext_cuda_graph_capture_begin(void* graph, void* share_pool_with, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded(
      [&] {
        auto* g = static_cast<Graph*>(graph);
        const auto pool =
            share_pool_with != nullptr ? static_cast<Graph*>(share_pool_with)->pool() : c10::MempoolId_t{0, 0};
        // Thread-local: other threads' CUDA calls (NCCL's watchdog) stay legal while this
        // thread captures.
        g->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
      },
      error, error_len);
#else
  (void)graph; (void)share_pool_with;
  (void)error; (void)error_len;
  return 1;
#endif
}

int crpo_ext_cuda_graph_capture_end(void* graph, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded([&] { static_cast<Graph*>(graph)->end_capture(); }, error, error_len);
#else
  (void)graph;
  (void)error; (void)error_len;
  return 1;
#endif
}

int crpo_ext_cuda_graph_replay(void* graph, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded([&] { static_cast<Graph*>(graph)->replay(); }, error, error_len);
#else
  (void)graph;
  (void)error; (void)error_len;
  return 1;
#endif
}

// Makes `device` current and its side stream current on it (a graph cannot be captured on
// the default stream, and CUDAGraph captures on the current device's current stream). What
// it replaces is written to `previous` [4] for crpo_ext_cuda_restore_stream: the device, then
// that device's stream. The device is synchronized first, so the side stream sees all work
// queued before.
int crpo_ext_cuda_use_side_stream(int device, int64_t* previous, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded(
      [&] {
        const auto index = static_cast<c10::DeviceIndex>(device);
        const auto previous_device = c10::cuda::current_device();
        const auto packed = c10::cuda::getCurrentCUDAStream(index).pack3();
        c10::cuda::set_device(index);
        c10::cuda::device_synchronize();
        previous[0] = static_cast<int64_t>(previous_device);
        previous[1] = static_cast<int64_t>(packed.stream_id);
        previous[2] = static_cast<int64_t>(packed.device_index);
        previous[3] = static_cast<int64_t>(packed.device_type);
        c10::cuda::setCurrentCUDAStream(side_stream(index));
      },
      error, error_len);
#else
  (void)device; (void)previous;
  (void)error; (void)error_len;
  return 1;
#endif
}

// Synchronizes the side stream's device (its work done before anything after), makes the
// stream it replaced current again, and the device that was current.
int crpo_ext_cuda_restore_stream(const int64_t* previous, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded(
      [&] {
        const auto stream = c10::cuda::CUDAStream::unpack3(
            static_cast<c10::StreamId>(previous[1]), static_cast<c10::DeviceIndex>(previous[2]),
            static_cast<c10::DeviceType>(previous[3]));
        c10::cuda::set_device(stream.device_index());
        c10::cuda::device_synchronize();
        c10::cuda::setCurrentCUDAStream(stream);
        c10::cuda::set_device(static_cast<c10::DeviceIndex>(previous[0]));
      },
      error, error_len);
#else
  (void)previous;
  (void)error; (void)error_len;
  return 1;
#endif
}

}  // extern "C"
