// How both shims report an error across the C ABI: libtorch's message, cut to fit.
#pragma once
#include <cstring>
#include <exception>
#include <string>

namespace crpo_shim {
inline void write_error(const std::string& message, char* error, size_t error_len) {
  if (error != nullptr && error_len > 0) {
    std::strncpy(error, message.c_str(), error_len - 1);
    error[error_len - 1] = '\0';
  }
}

// Runs `body`, turning any exception into code 2 and its message.
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
}  // namespace crpo_shim
