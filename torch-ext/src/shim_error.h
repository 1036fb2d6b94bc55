// How both shims report an error across the C ABI: libtorch's message, cut to fit.
#pragma once
#include <cstring>
#include <string>

namespace crpo_shim {
inline void write_error(const std::string& message, char* error, size_t error_len) {
  if (error != nullptr && error_len > 0) {
    std::strncpy(error, message.c_str(), error_len - 1);
    error[error_len - 1] = '\0';
  }
}
}  // namespace crpo_shim
