// How much memory this process may still commit, so a request for more (a KV budget above what
// the machine has) is refused with a clear error instead of the kernel's OOM killer ending the
// process part-way through committing it.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace kvserve {

// The smaller of MemAvailable (/proc/meminfo) and what this process's cgroup still allows
// (v2 memory.max - memory.current, or v1 memory.limit_in_bytes - memory.usage_in_bytes).
// nullopt when neither can be read (not Linux, /proc not mounted).
std::optional<size_t> available_memory();

// Parsers for the files above, exposed for tests. MemAvailable in bytes from a /proc/meminfo
// text; a cgroup limit or usage file's number ("max" or garbage: nullopt).
std::optional<size_t> parse_meminfo_available(std::string_view meminfo);
std::optional<size_t> parse_cgroup_bytes(std::string_view text);

}  // namespace kvserve
