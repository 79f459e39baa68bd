// runner.cpp — see runner.h.
#include "directory/runner.h"

#include "core/log.h"

namespace mk::directory {

Runner::Runner(const Settings& s, archive::AccountDirectory& accounts, std::function<bool()> lead, SharedFile* share)
    : accounts_(accounts), lead_(std::move(lead)), share_(share), interval_(s.directory.interval) {
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
    if (lead_ && !lead_()) {  // another gateway syncs for all (lead() logs when that changes)
      published_ = false;
      continue;
    }
    // In the turn of the shared list, which first brings the file up to date.
    std::unique_ptr<SharedFile::Turn> turn;
    try {
      if (share_) turn = share_->begin(accounts_.path());
    } catch (const db::Error& e) {
      spdlog::warn("directory sync: the shared account list: {}; not syncing this round", e.what());
      continue;
    }
    // The file may have been rewritten by `mailkeep accounts sync` or pulled: compare with what it holds.
    accounts_.reload();
    auto report = syncer_->run(*accounts_.snapshot(), SyncOptions{});
    if (report.ok && report.list) {
      accounts_.replace(report.list);
      try {
        // Published when it changed, and once by each new leader (the others may not have it yet).
        if (turn && (!published_ || report.added + report.removed + report.changed > 0)) turn->publish();
        published_ = true;
      } catch (const db::Error& e) {
        spdlog::warn("directory sync: the list is in effect here but not shared with the other gateways: {}", e.what());
      }
    }
  } while (wait(interval_));
}

}  // namespace mk::directory
