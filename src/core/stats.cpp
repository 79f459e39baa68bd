// stats.cpp — see stats.h.
#include "core/stats.h"

#include <cstdio>
#include <ctime>
#include <fstream>
#include <mutex>

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

namespace {
std::mutex labeled_mutex;
std::map<std::string, std::map<std::string, uint64_t>, std::less<>> labeled;

struct HistogramCells {
  std::array<std::atomic<uint64_t>, std::size(kBuckets) + 1> buckets{};  // last: above every bound
  std::atomic<uint64_t> sum_ns{0};
};
std::array<HistogramCells, static_cast<size_t>(Histogram::count_)> histograms;
}  // namespace

void count_labeled(std::string_view family, std::string labels, uint64_t n) {
  std::lock_guard lock(labeled_mutex);
  auto it = labeled.find(family);
  if (it == labeled.end()) it = labeled.emplace(std::string(family), std::map<std::string, uint64_t>{}).first;
  it->second[std::move(labels)] += n;
}

std::map<std::string, std::map<std::string, uint64_t>> labeled_snapshot() {
  std::lock_guard lock(labeled_mutex);
  return {labeled.begin(), labeled.end()};
}

std::string label_value(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

void observe(Histogram h, double seconds) {
  auto& cells = histograms[static_cast<size_t>(h)];
  size_t i = 0;
  while (i < std::size(kBuckets) && seconds > kBuckets[i]) ++i;
  cells.buckets[i].fetch_add(1, std::memory_order_relaxed);
  cells.sum_ns.fetch_add(static_cast<uint64_t>(std::max(0.0, seconds) * 1e9), std::memory_order_relaxed);
}

HistogramSnapshot histogram(Histogram h) {
  auto& cells = histograms[static_cast<size_t>(h)];
  HistogramSnapshot s;
  uint64_t running = 0;
  for (size_t i = 0; i < std::size(kBuckets); ++i) {
    running += cells.buckets[i].load(std::memory_order_relaxed);
    s.cumulative[i] = running;
  }
  s.count = running + cells.buckets[std::size(kBuckets)].load(std::memory_order_relaxed);
  s.sum = cells.sum_ns.load(std::memory_order_relaxed) / 1e9;
  return s;
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
    // Per-milter verdicts: "milter{milter="inet:127.0.0.1:11332",verdict="reject"} 3".
    auto labeled = labeled_snapshot();  // kept: the loop below walks one of its maps
    for (auto& [labels, v] : labeled["milter_verdicts"]) out << "milter{" << labels << "} " << v << "\n";
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace mk::stats
