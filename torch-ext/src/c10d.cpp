// libtorch's own c10d behind a C ABI: a TCPStore rendezvous and a process group (Gloo on
// CPU, NCCL on CUDA), with the few collectives data-parallel training needs. Each call
// returns 0 on success, 1 when this build lacks the backend, 2 on an error (its message
// written to `error`). Every wait is bounded by the group's timeout: a peer that died or
// stalls becomes an error, never a hang.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef CRPO_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef CRPO_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {
void write_c10d_error(const std::string& message, char* error, size_t error_len) {
  if (error != nullptr && error_len > 0) {
    std::strncpy(error, message.c_str(), error_len - 1);
    error[error_len - 1] = '\0';
  }
}

#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// Runs `body`, turning any exception into code 2 and its message.
template <typename F>
int guarded(F body, char* error, size_t error_len) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    write_c10d_error(e.what(), error, error_len);
    return 2;
  }
}

std::vector<at::Tensor> tensors_of(at::Tensor** tensors, size_t n) {
  std::vector<at::Tensor> list;
  list.reserve(n);
  for (size_t i = 0; i < n; ++i) list.push_back(*tensors[i]);
  return list;
}
#endif
}  // namespace

extern "C" {

// Bit 0: Gloo was compiled in; bit 1: NCCL.
int crpo_c10d_backends() {
  int backends = 0;
#ifdef CRPO_C10D_GLOO
  backends |= 1;
#endif
#ifdef CRPO_C10D_NCCL
  backends |= 2;
#endif
  return backends;
}

// Joins the group: the TCPStore on `host:port` is hosted by this process when `host_store`
// (rank 0, unless torchrun's agent hosts it), every rank connects to it and keeps its keys under
// `prefix`. `backend` 0 is Gloo (its transport bound to `bind_host`), 1 is NCCL.
int crpo_c10d_new(const char* host, uint16_t port, int host_store, const char* prefix, const char* bind_host,
                  int rank, int world_size, int backend, int64_t timeout_ms, void** out, char* error,
                  size_t error_len) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  return guarded(
      [&] {
        const auto timeout = std::chrono::milliseconds(timeout_ms);
        c10d::TCPStoreOptions options;
        options.port = port;
        options.isServer = host_store != 0;
        options.numWorkers = world_size;
        options.waitWorkers = true;
        options.timeout = timeout;
        c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>(
            std::string(prefix), c10::make_intrusive<c10d::TCPStore>(std::string(host), options));
        c10::intrusive_ptr<c10d::Backend> group;
        if (backend == 0) {
#ifdef CRPO_C10D_GLOO
          auto gloo = c10d::ProcessGroupGloo::Options::create(timeout);
          const std::string bind(bind_host);
          // No address given: libtorch's default (this host's name, else loopback), as torchrun.
          gloo->devices.push_back(bind.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                               : c10d::ProcessGroupGloo::createDeviceForHostname(bind));
          gloo->threads = 1;
          group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, gloo);
#else
          throw std::runtime_error("this build of crpo has no Gloo (install libgloo-dev and rebuild)");
#endif
        } else {
#ifdef CRPO_C10D_NCCL
          auto nccl = c10d::ProcessGroupNCCL::Options::create();
          nccl->timeout = timeout;
          group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, nccl);
#else
          throw std::runtime_error("this build of crpo has no NCCL (it needs a CUDA libtorch and nccl.h)");
#endif
        }
        *out = new Group{store, group, timeout};
      },
      error, error_len);
#else
  (void)host; (void)port; (void)host_store; (void)prefix; (void)bind_host; (void)rank; (void)world_size; (void)backend;
  (void)timeout_ms; (void)out; (void)error; (void)error_len;
  return 1;
#endif
}

void crpo_c10d_free(void* group) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  delete static_cast<Group*>(group);
#else
  (void)group;
#endif
}

// Sums `tensors` in place across the group.
int crpo_c10d_all_reduce_sum(void* handle, at::Tensor** tensors, size_t n, char* error, size_t error_len) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  auto* group = static_cast<Group*>(handle);
  return guarded(
      [&] {
        auto list = tensors_of(tensors, n);
        c10d::AllreduceOptions options;
        options.reduceOp = c10d::ReduceOp::SUM;
        options.timeout = group->timeout;
        group->backend->allreduce(list, options)->wait(group->timeout);
      },
      error, error_len);
#else
  (void)handle; (void)tensors; (void)n; (void)error; (void)error_len;
  return 1;
#endif
}

// Copies `root`'s `tensors` into every rank's.
int crpo_c10d_broadcast(void* handle, at::Tensor** tensors, size_t n, int root, char* error, size_t error_len) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  auto* group = static_cast<Group*>(handle);
  return guarded(
      [&] {
        auto list = tensors_of(tensors, n);
        c10d::BroadcastOptions options;
        options.rootRank = root;
        options.timeout = group->timeout;
        group->backend->broadcast(list, options)->wait(group->timeout);
      },
      error, error_len);
#else
  (void)handle; (void)tensors; (void)n; (void)root; (void)error; (void)error_len;
  return 1;
#endif
}

int crpo_c10d_barrier(void* handle, char* error, size_t error_len) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  auto* group = static_cast<Group*>(handle);
  return guarded(
      [&] {
        c10d::BarrierOptions options;
        options.timeout = group->timeout;
        group->backend->barrier(options)->wait(group->timeout);
      },
      error, error_len);
#else
  (void)handle; (void)error; (void)error_len;
  return 1;
#endif
}

// Sets `key` in the rendezvous store (how a rank says how far it got).
int crpo_c10d_store_set(void* handle, const char* key, const uint8_t* value, size_t len, char* error,
                        size_t error_len) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  auto* group = static_cast<Group*>(handle);
  return guarded([&] { group->store->set(std::string(key), std::vector<uint8_t>(value, value + len)); }, error,
                 error_len);
#else
  (void)handle; (void)key; (void)value; (void)len; (void)error; (void)error_len;
  return 1;
#endif
}

// Bounds the store's own calls (a get from a stalled store host) from now on.
int crpo_c10d_store_timeout(void* handle, int64_t timeout_ms, char* error, size_t error_len) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  auto* group = static_cast<Group*>(handle);
  return guarded([&] { group->store->setTimeout(std::chrono::milliseconds(timeout_ms)); }, error, error_len);
#else
  (void)handle; (void)timeout_ms; (void)error; (void)error_len;
  return 1;
#endif
}

// Reads `key` into `out` (at most `capacity` bytes; `len` gets the value's full length), or
// sets `len` to SIZE_MAX when the key is not set: it never waits for one.
int crpo_c10d_store_get(void* handle, const char* key, uint8_t* out, size_t capacity, size_t* len, char* error,
                        size_t error_len) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  auto* group = static_cast<Group*>(handle);
  return guarded(
      [&] {
        const std::string name(key);
        if (!group->store->check({name})) {
          *len = SIZE_MAX;
          return;
        }
        const auto value = group->store->get(name);
        *len = value.size();
        std::memcpy(out, value.data(), std::min(capacity, value.size()));
      },
      error, error_len);
#else
  (void)handle; (void)key; (void)out; (void)capacity; (void)len; (void)error; (void)error_len;
  return 1;
#endif
}

}  // extern "C"
