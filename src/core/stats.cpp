// stats.cpp — see stats.h.
#include "core/stats.h"

#include <cstdio>
#include <ctime>
#include <fstream>

namespace mk::stats {
namespace {

constexpr std::string_view kNames[] = {
#define MK_X(id, name) name,
    MK_STATS_COUNTERS(MK_X)
#undef MK_X
};
std::array<std::atomic<uint64_t>, static_cast<size_t>(Counter::count_)> counters{};

}  // namespace

void count(Counter c, uint64_t n) { counters[static_cast<size_t>(c)].fetch_add(n, std::memory_order_relaxed); }

uint64_t value(Counter c) { return counters[static_cast<size_t>(c)].load(std::memory_order_relaxed); }

std::map<std::string, uint64_t> snapshot() {
  std::map<std::string, uint64_t> out;
  for (size_t i = 0; i < counters.size(); ++i) out[std::string(kNames[i])] = counters[i].load(std::memory_order_relaxed);
  return out;
}

bool write_file(const std::string& path, int64_t started) {
  auto tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return false;
    out << "# mailkeep counters\n";
    out << "started " << started << "\n";
    out << "updated " << static_cast<int64_t>(std::time(nullptr)) << "\n";
    for (auto& [name, v] : snapshot()) out << name << " " << v << "\n";
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace mk::stats
