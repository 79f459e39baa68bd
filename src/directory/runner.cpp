// runner.cpp — see runner.h.
#include "directory/runner.h"

#include "core/log.h"

namespace mk::directory {

Runner::Runner(const Settings& s, archive::AccountDirectory& accounts)
    : accounts_(accounts), interval_(s.directory.interval) {
  syncer_ = std::make_unique<Syncer>(s, make_provider(s, [this](std::chrono::seconds d) { return wait(d); }));
  counters_ = &syncer_->counters();
}

Runner::~Runner() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Runner::start() {
  thread_ = std::thread([this] { run(); });
}

bool Runner::wait(std::chrono::seconds d) {
  std::unique_lock lock(mutex_);
  return !wake_.wait_for(lock, d, [&] { return stop_; });
}

void Runner::run() {
  do {
    // The file may have been rewritten by `mailkeep accounts sync`: compare with what it holds.
    accounts_.reload();
    auto report = syncer_->run(*accounts_.snapshot(), SyncOptions{});
    if (report.ok && report.list) accounts_.replace(report.list);
  } while (wait(interval_));
}

}  // namespace mk::directory
