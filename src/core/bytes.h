// Byte sizes as people write them: parsed from flags ("512MiB", "1.5GB") and formatted for
// messages and reports ("1.50 GiB").
#pragma once

#include <cstddef>
#include <string>

#include "core/status.h"

namespace kvserve {

// "512MiB", "2GiB", "1000000", "64KiB", "1.5GB" -> bytes (binary units: K/KiB, M/MiB, G/GiB,
// T/TiB; decimal: KB/kB, MB, GB, TB); invalid_argument on anything else, negative sizes and
// sizes over 1e18.
Result<size_t> parse_byte_size(const std::string& text);
// Binary units with two decimals: "1.50 GiB", "512 B".
std::string format_bytes(double bytes);

}  // namespace kvserve
