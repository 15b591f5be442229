#include "core/bytes.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace kvserve {

Result<size_t> parse_byte_size(const std::string& text) {
  char* end = nullptr;
  const double num = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !(num >= 0) || !std::isfinite(num)) {
    return invalid_argument("not a byte size: '" + text + "' (e.g. 512MiB, 2GiB, 1000000)");
  }
  std::string unit(end);
  double mul = 1;
  if (unit.empty() || unit == "B")
    mul = 1;
  else if (unit == "KiB" || unit == "K" || unit == "k")
    mul = 1024.0;
  else if (unit == "MiB" || unit == "M")
    mul = 1024.0 * 1024;
  else if (unit == "GiB" || unit == "G")
    mul = 1024.0 * 1024 * 1024;
  else if (unit == "TiB" || unit == "T")
    mul = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "KB" || unit == "kB")
    mul = 1e3;
  else if (unit == "MB")
    mul = 1e6;
  else if (unit == "GB")
    mul = 1e9;
  else if (unit == "TB")
    mul = 1e12;
  else
    return invalid_argument("unknown size unit '" + unit + "' in '" + text + "'");
  const double bytes = num * mul;
  if (bytes > 1e18) return invalid_argument("byte size too large: '" + text + "'");
  return static_cast<size_t>(bytes);
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

}  // namespace kvserve
