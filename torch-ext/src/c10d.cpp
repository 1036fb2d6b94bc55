// libtorch's own c10d behind a C ABI: a TCPStore rendezvous and a process group (Gloo on
// CPU, NCCL on CUDA), with the few collectives data-parallel training needs. Each call
// returns 0 on success, 1 when this build lacks the backend, 2 on an error (its message
// written to `error`). Every wait is bounded by the group's timeout: a peer that died or
// stalls becomes an error, never a hang.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "shim_error.h"
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Logging.h>

#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#endif
#ifdef CRPO_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef CRPO_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {
using crpo_shim::guarded;

#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

std::vector<at::Tensor> tensors_of(at::Tensor** tensors, size_t n) {
  std::vector<at::Tensor> list;
  list.reserve(n);
  for (size_t i = 0; i < n; ++i) list.push_back(*tensors[i]);
  return list;
}

// Gradient sums overlapped with the backward pass, as DDP's reducer does: a hook after each
// parameter's gradient accumulation marks it ready, and each bucket (parameters in reverse
// order, the order backward produces them) is sent as soon as it and every bucket before it
// are ready — the same order on every rank, as the collectives must be.
struct GradientSync {
  Group* group;
  std::vector<at::Tensor> params;
  std::vector<std::vector<size_t>> buckets;
  std::vector<size_t> bucket_of;
  std::vector<size_t> waiting;  // per bucket: parameters not ready yet
  std::vector<bool> ready;      // per parameter
  std::vector<at::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  size_t next = 0;
  bool armed = false;
  std::string failure;
  std::mutex mutex;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;

  void launch(size_t b) {
    std::vector<at::Tensor> pieces;
    for (size_t i : buckets[b]) {
      const auto grad = params[i].grad();
      pieces.push_back(grad.defined() ? grad.reshape({-1}) : at::zeros({params[i].numel()}, params[i].options()));
    }
    flats[b] = at::cat(pieces);
    std::vector<at::Tensor> list{flats[b]};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    options.timeout = group->timeout;
    works[b] = group->backend->allreduce(list, options);
  }

  // Sends every bucket whose turn has come. Called under the lock.
  void launch_ready() {
    while (next < buckets.size() && waiting[next] == 0 && failure.empty()) {
      try {
        launch(next);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      ++next;
    }
  }

  void on_ready(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed || ready[i]) return;
    ready[i] = true;
    --waiting[bucket_of[i]];
    launch_ready();
  }

  void arm() {
    std::lock_guard<std::mutex> lock(mutex);
    armed = true;
    next = 0;
    failure.clear();
    std::fill(ready.begin(), ready.end(), false);
    for (size_t b = 0; b < buckets.size(); ++b) waiting[b] = buckets[b].size();
    for (auto& work : works) work.reset();
  }

  // Sends what the backward did not, waits for every bucket and writes the sums back.
  // Returns how many buckets the backward had sent.
  size_t finish() {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed) {
      armed = true;
      next = 0;
      failure.clear();
    }
    const size_t sent_during_backward = next;
    for (size_t b = 0; b < buckets.size(); ++b) waiting[b] = 0;
    launch_ready();
    armed = false;
    if (!failure.empty()) throw std::runtime_error(failure);
    for (size_t b = 0; b < buckets.size(); ++b) {
      works[b]->wait(group->timeout);
      int64_t offset = 0;
      for (size_t i : buckets[b]) {
        auto grad = params[i].grad();
        const auto numel = params[i].numel();
        auto piece = flats[b].narrow(0, offset, numel).view(params[i].sizes());
        at::NoGradGuard no_grad;
        if (grad.defined()) {
          grad.copy_(piece);
        } else {
          // A rank that ran no pass of this update has no gradient yet: the sum is its gradient.
          params[i].mutable_grad() = piece.clone();
        }
        offset += numel;
      }
      flats[b] = at::Tensor();
      works[b].reset();
    }
    return sent_during_backward;
  }
};
#endif
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
// While the store connects (or a store call meets a host that died), c10d logs each failed
// try with the C++ stack of its exception (a page of frames for a mistyped MASTER_ADDR); the
// error this shim returns names the address and the cause once. Quietens c10's log below FATAL for its lifetime, then restores it.
class QuietC10Log {
 public:
  QuietC10Log() : saved_(FLAGS_caffe2_log_level) {
    if (FLAGS_caffe2_log_level < 3) FLAGS_caffe2_log_level = 3;
  }
  ~QuietC10Log() { FLAGS_caffe2_log_level = saved_; }
  QuietC10Log(const QuietC10Log&) = delete;
  QuietC10Log& operator=(const QuietC10Log&) = delete;

 private:
  int saved_;
};

c10::intrusive_ptr<c10d::Store> connect_store(const char* host, const c10d::TCPStoreOptions& options) {
  const QuietC10Log quiet;
  return c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
}

// Every rank states its WORLD_SIZE in the store and reads every other's before the group is
// made: a rank launched with another WORLD_SIZE would otherwise leave the group waiting for a
// rank that never comes, past any timeout. Ranks that do not come by `deadline` are named, all
// of them (the store's host no longer waits for its clients inside TCPStore, where it could
// only count them, and the others blamed rank 0 for being busy there). The rank that hosts the
// store lingers a moment before failing, so the others can read what it wrote.
void agree_on_world_size(c10d::Store& store, int rank, int world_size, bool hosts_store,
                         std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds timeout) {
  const QuietC10Log quiet;
  // Two processes told the same RANK (RANK set from SLURM_LOCALID on several nodes): the second
  // is refused here, naming the mistake, instead of failing the group with a peer's error.
  if (store.add("crpo/rank_claims/" + std::to_string(rank), 1) > 1) {
    throw std::runtime_error("another process was started as RANK=" + std::to_string(rank) +
                             " too: give each process its own RANK, 0 to WORLD_SIZE-1 (under srun, "
                             "RANK=$SLURM_PROCID, not $SLURM_LOCALID)");
  }
  const auto key = [](int r) { return "crpo/world_size/" + std::to_string(r); };
  const std::string mine = std::to_string(world_size);
  const auto linger = [&] {
    if (hosts_store) std::this_thread::sleep_for(std::min(timeout, std::chrono::milliseconds(3000)));
  };
  store.set(key(rank), std::vector<uint8_t>(mine.begin(), mine.end()));
  // In rank order, so a WORLD_SIZE that differs is seen as soon as that rank's key is there.
  for (int other = 0; other < world_size; ++other) {
    if (other == rank) continue;
    try {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      store.wait({key(other)}, std::max(left, std::chrono::milliseconds(1)));
    } catch (const std::exception&) {
      std::string missing;
      int count = 0;
      try {
        for (int late = other; late < world_size; ++late) {
          if (late != rank && !store.check({key(late)})) missing += (count++ ? ", " : "") + std::to_string(late);
        }
      } catch (const std::exception&) {
        throw std::runtime_error("the rendezvous ended before every rank joined: rank 0, which hosts it, stopped "
                                 "(its messages say why)");
      }
      // None missing: the key came as the wait gave up.
      if (count > 0) {
        linger();
        throw std::runtime_error(std::string(count > 1 ? "ranks " : "rank ") + missing + " of " + mine +
                                 " did not join within " + std::to_string(timeout.count() / 1000) +
                                 " s (run.ddp_timeout): is each started, with the same MASTER_ADDR, MASTER_PORT and "
                                 "WORLD_SIZE? a rank that stopped says why");
      }
    }
    const auto value = store.get(key(other));
    const std::string theirs(value.begin(), value.end());
    if (theirs != mine) {
      linger();
      throw std::runtime_error("WORLD_SIZE differs between ranks: " + theirs + " on rank " + std::to_string(other) +
                               ", " + mine + " on this rank (" + std::to_string(rank) +
                               "): start every rank with the same WORLD_SIZE");
    }
  }
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
        // One bound for connecting and joining together.
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        c10d::TCPStoreOptions options;
        options.port = port;
        options.isServer = host_store != 0;
        options.numWorkers = world_size;
        // The ranks' own keys say who joined (agree_on_world_size), naming who did not.
        options.waitWorkers = false;
        options.timeout = timeout;
        c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>(
            std::string(prefix), connect_store(host, options));
        agree_on_world_size(*store, rank, world_size, host_store != 0, deadline, timeout);
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
  // A store host that died would log each retry's C++ stack; the error returned names it.
  const QuietC10Log quiet;
  return guarded([&] { group->store->set(std::string(key), std::vector<uint8_t>(value, value + len)); }, error,
                 error_len);
#else
  (void)handle; (void)key; (void)value; (void)len; (void)error; (void)error_len;
  return 1;
#endif
}

// Hooks gradient sums onto the backward of `params` (leaves that require grad), in buckets of
// at most `bucket_bytes`.
int crpo_c10d_sync_new(void* handle, at::Tensor** tensors, size_t n, int64_t bucket_bytes, void** out,
                       char* error, size_t error_len) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  return guarded(
      [&] {
        auto sync = std::make_shared<GradientSync>();
        sync->group = static_cast<Group*>(handle);
        sync->params = tensors_of(tensors, n);
        sync->bucket_of.assign(n, 0);
        int64_t bytes = 0;
        for (size_t k = n; k-- > 0;) {
          const auto& param = sync->params[k];
          const int64_t size = param.numel() * static_cast<int64_t>(param.element_size());
          const bool same_kind =
              !sync->buckets.empty() && sync->params[sync->buckets.back().front()].scalar_type() == param.scalar_type();
          if (sync->buckets.empty() || !same_kind || bytes + size > bucket_bytes) {
            sync->buckets.emplace_back();
            bytes = 0;
          }
          sync->buckets.back().push_back(k);
          sync->bucket_of[k] = sync->buckets.size() - 1;
          bytes += size;
        }
        sync->waiting.assign(sync->buckets.size(), 0);
        sync->ready.assign(n, false);
        sync->flats.resize(sync->buckets.size());
        sync->works.resize(sync->buckets.size());
        // The hooks outlive nothing: they hold the sync weakly and do nothing once it is freed.
        std::weak_ptr<GradientSync> weak = sync;
        for (size_t i = 0; i < n; ++i) {
          auto accumulator = torch::autograd::impl::grad_accumulator(sync->params[i]);
          if (!accumulator) throw std::runtime_error("a parameter to synchronise is not a leaf that requires grad");
          accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
              [weak, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
                if (auto live = weak.lock()) live->on_ready(i);
                return outputs;
              }));
          sync->accumulators.push_back(std::move(accumulator));
        }
        *out = new std::shared_ptr<GradientSync>(std::move(sync));
      },
      error, error_len);
#else
  (void)handle; (void)tensors; (void)n; (void)bucket_bytes; (void)out; (void)error; (void)error_len;
  return 1;
#endif
}

// The next backward sends buckets as they become ready.
void crpo_c10d_sync_arm(void* sync) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  (*static_cast<std::shared_ptr<GradientSync>*>(sync))->arm();
#else
  (void)sync;
#endif
}

int crpo_c10d_sync_finish(void* sync, size_t* sent_during_backward, char* error, size_t error_len) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  return guarded(
      [&] { *sent_during_backward = (*static_cast<std::shared_ptr<GradientSync>*>(sync))->finish(); }, error,
      error_len);
#else
  (void)sync; (void)sent_during_backward; (void)error; (void)error_len;
  return 1;
#endif
}

// The hooks stay on the accumulators and find the sync gone.
void crpo_c10d_sync_free(void* sync) {
#if defined(CRPO_C10D_GLOO) || defined(CRPO_C10D_NCCL)
  delete static_cast<std::shared_ptr<GradientSync>*>(sync);
#else
  (void)sync;
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
  // As in crpo_c10d_store_set: one error naming the store host, not a stack per retry.
  const QuietC10Log quiet;
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
