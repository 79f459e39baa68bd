// refresher.cpp — see refresher.h.
#include "spf/refresher.h"

#include <algorithm>

#include "core/log.h"

namespace mk::spf {
namespace {

std::string join(const std::vector<Cidr>& nets) {
  std::string out;
  for (auto& n : nets) out += (out.empty() ? "" : ", ") + n.to_string();
  return out;
}

bool has(const std::vector<Cidr>& v, const Cidr& c) { return std::find(v.begin(), v.end(), c) != v.end(); }

}  // namespace

Refresher::Refresher(std::vector<std::string> relay, std::vector<std::string> backup, TxtLookup lookup)
    : relay_names_(std::move(relay)), backup_names_(std::move(backup)), lookup_(std::move(lookup)) {
  for (auto& n : relay_names_) sources_.push_back(Source{n, false});
  for (auto& n : backup_names_) sources_.push_back(Source{n, true});
}

Refresher::~Refresher() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Refresher::start() {
  if (sources_.empty()) return;
  thread_ = std::thread([this] { run(); });
}

void Refresher::refresh(Source& s) {
  auto now = std::chrono::steady_clock::now();
  auto e = expand(s.name, lookup_);
  if (!e.ok) {
    ++s.failures;
    // Retry soon, then less often: 5 s, 10 s, 20 s ... at most 5 minutes.
    auto wait = std::chrono::seconds(std::min(300, 5 << std::min(s.failures - 1, 6)));
    if (s.resolved)
      spdlog::warn("spf:{}: resolution failed: {}; keeping {} networks (retry in {} s)", s.name, e.error,
                   s.networks.size(), wait.count());
    else
      spdlog::error("spf:{}: resolution failed: {}; starting without these networks (relaying from them gets "
                    "4xx until resolved; retry in {} s)",
                    s.name, e.error, wait.count());
    s.due = now + wait;
    return;
  }
  s.failures = 0;
  uint32_t ttl = std::clamp<uint32_t>(e.ttl, 1, 3600);
  s.due = now + std::chrono::seconds(ttl);
  if (!s.resolved) {
    spdlog::info("spf:{}: {} networks ({}); refreshed every {} s", s.name, e.networks.size(), join(e.networks), ttl);
  } else if (e.networks != s.networks) {
    std::string diff;
    for (auto& n : e.networks)
      if (!has(s.networks, n)) diff += " +" + n.to_string();
    for (auto& n : s.networks)
      if (!has(e.networks, n)) diff += " -" + n.to_string();
    if (diff.empty()) diff = " (order only)";
    spdlog::info("spf:{}: networks changed:{}; {} networks now", s.name, diff, e.networks.size());
  }
  s.resolved = true;
  s.networks = std::move(e.networks);
}

void Refresher::publish() {
  std::vector<Cidr> relay, backup;
  bool relay_complete = true, backup_complete = true;
  for (auto& s : sources_) {
    auto& out = s.backup ? backup : relay;
    (s.backup ? backup_complete : relay_complete) &= s.resolved;
    for (auto& n : s.networks)
      if (!has(out, n)) out.push_back(n);
  }
  relay_.set(std::move(relay), relay_complete);
  backup_.set(std::move(backup), backup_complete);
}

void Refresher::run() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    auto now = std::chrono::steady_clock::now();
    bool changed = false;
    for (auto& s : sources_) {
      if (s.due > now) continue;
      lock.unlock();
      refresh(s);
      lock.lock();
      changed = true;
      if (stop_) return;
    }
    if (changed) publish();
    auto next = std::min_element(sources_.begin(), sources_.end(),
                                 [](auto& a, auto& b) { return a.due < b.due; })->due;
    wake_.wait_until(lock, next, [&] { return stop_; });
  }
}

}  // namespace mk::spf
