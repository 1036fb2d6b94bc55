// The libtorch calls tch does not wrap, behind a C ABI. Each returns 0 on success, 1 when
// this build has no CUDA, 2 on an error (its message written to `error`).
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#ifdef CRPO_TORCH_EXT_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#endif

namespace {
void write_error(const std::string& message, char* error, size_t error_len) {
  if (error != nullptr && error_len > 0) {
    std::strncpy(error, message.c_str(), error_len - 1);
    error[error_len - 1] = '\0';
  }
}
}  // namespace

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
