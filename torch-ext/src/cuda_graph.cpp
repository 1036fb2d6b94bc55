// CUDA graphs (libtorch's at::cuda::CUDAGraph) and the side stream they are captured on,
// behind a C ABI. Each call returns 0 on success, 1 when this build has no CUDA, 2 on an
// error (its message written to `error`).
#include <cstdint>
#include <exception>
#include <string>

#include "shim_error.h"

#ifdef CRPO_TORCH_EXT_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif

using crpo_shim::write_error;

#ifdef CRPO_TORCH_EXT_CUDA
namespace {
template <typename F>
int guarded(F&& body, char* error, size_t error_len) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    write_error(e.what(), error, error_len);
    return 2;
  }
}
}  // namespace
#endif

extern "C" {

// A new, empty graph in `*out`.
int crpo_ext_cuda_graph_new(void** out, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded([&] { *out = new at::cuda::CUDAGraph(); }, error, error_len);
#else
  (void)out;
  (void)error; (void)error_len;
  return 1;
#endif
}

void crpo_ext_cuda_graph_free(void* graph) {
#ifdef CRPO_TORCH_EXT_CUDA
  try {
    delete static_cast<at::cuda::CUDAGraph*>(graph);
  } catch (...) {
    // A destructor that throws (a failed capture's teardown) leaks the graph rather than
    // unwinding through Rust.
  }
#else
  (void)graph;
#endif
}

// Starts capturing the current stream's work into `graph` (allocations from its own pool).
int crpo_ext_cuda_graph_capture_begin(void* graph, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->capture_begin(); }, error, error_len);
#else
  (void)graph;
  (void)error; (void)error_len;
  return 1;
#endif
}

int crpo_ext_cuda_graph_capture_end(void* graph, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->capture_end(); }, error, error_len);
#else
  (void)graph;
  (void)error; (void)error_len;
  return 1;
#endif
}

int crpo_ext_cuda_graph_replay(void* graph, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->replay(); }, error, error_len);
#else
  (void)graph;
  (void)error; (void)error_len;
  return 1;
#endif
}

// Makes a stream from the pool current on `device` (a graph cannot be captured on the
// default stream); the stream it replaces is written to `previous` [3] for
// crpo_ext_cuda_restore_stream. The device is synchronized first, so the new stream sees
// all work queued before.
int crpo_ext_cuda_use_side_stream(int device, int64_t* previous, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded(
      [&] {
        const auto index = static_cast<c10::DeviceIndex>(device);
        const auto packed = c10::cuda::getCurrentCUDAStream(index).pack3();
        previous[0] = static_cast<int64_t>(packed.stream_id);
        previous[1] = static_cast<int64_t>(packed.device_index);
        previous[2] = static_cast<int64_t>(packed.device_type);
        c10::cuda::device_synchronize();
        c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(false, index));
      },
      error, error_len);
#else
  (void)device; (void)previous;
  (void)error; (void)error_len;
  return 1;
#endif
}

// Synchronizes the device (the side stream's work done) and makes `previous` current again.
int crpo_ext_cuda_restore_stream(const int64_t* previous, char* error, size_t error_len) {
#ifdef CRPO_TORCH_EXT_CUDA
  return guarded(
      [&] {
        c10::cuda::device_synchronize();
        c10::cuda::setCurrentCUDAStream(c10::cuda::CUDAStream::unpack3(
            static_cast<c10::StreamId>(previous[0]), static_cast<c10::DeviceIndex>(previous[1]),
            static_cast<c10::DeviceType>(previous[2])));
      },
      error, error_len);
#else
  (void)previous;
  (void)error; (void)error_len;
  return 1;
#endif
}

}  // extern "C"
