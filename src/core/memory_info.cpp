#include "core/memory_info.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace kvserve {

namespace {

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// (limit file, usage file) of each memory cgroup this process is in: v2 (unified, mounted at
// /sys/fs/cgroup or, on hybrid systems, /sys/fs/cgroup/unified) and the v1 memory controller.
std::vector<std::pair<std::string, std::string>> cgroup_files() {
  std::vector<std::pair<std::string, std::string>> out;
  const auto text = read_file("/proc/self/cgroup");
  if (!text) return out;
  std::istringstream lines(*text);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (line.rfind("0::", 0) == 0) {
      for (const char* root : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"})
        out.emplace_back(root + path + "/memory.max", root + path + "/memory.current");
    } else if (controllers.find("memory") != std::string::npos) {
      const std::string dir = "/sys/fs/cgroup/memory" + path;
      out.emplace_back(dir + "/memory.limit_in_bytes", dir + "/memory.usage_in_bytes");
    }
  }
  return out;
}

// What the tightest cgroup limit still allows (limit - usage); nullopt when none applies.
std::optional<size_t> cgroup_headroom() {
  std::optional<size_t> room;
  for (const auto& [limit_file, usage_file] : cgroup_files()) {
    const auto limit_text = read_file(limit_file), usage_text = read_file(usage_file);
    if (!limit_text || !usage_text) continue;
    const auto limit = parse_cgroup_bytes(*limit_text), usage = parse_cgroup_bytes(*usage_text);
    if (!limit || !usage) continue;  // "max": no limit
    const size_t r = *limit > *usage ? *limit - *usage : 0;
    room = room ? std::min(*room, r) : r;
  }
  return room;
}

}  // namespace

std::optional<size_t> parse_meminfo_available(std::string_view meminfo) {
  constexpr std::string_view kKey = "MemAvailable:";
  const size_t at = meminfo.find(kKey);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view rest = meminfo.substr(at + kKey.size());
  rest.remove_prefix(std::min(rest.find_first_not_of(' '), rest.size()));
  size_t kib = 0;
  const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), kib);
  if (ec != std::errc() || end == rest.data()) return std::nullopt;
  return kib * 1024;  // the file's unit is kB (KiB)
}

std::optional<size_t> parse_cgroup_bytes(std::string_view text) {
  size_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  return v;
}

std::optional<size_t> available_memory() {
  std::optional<size_t> avail;
  if (const auto meminfo = read_file("/proc/meminfo")) avail = parse_meminfo_available(*meminfo);
  if (const auto cg = cgroup_headroom()) avail = avail ? std::min(*avail, *cg) : *cg;
  return avail;
}

}  // namespace kvserve
