// runner.h — the server's directory sync: a thread that syncs at start and
// every [directory] interval, installs each good list in the running
// server's AccountDirectory (no restart, no dropped session), and keeps the
// last good list through failures. `mailkeep accounts sync` writes the same
// cache file; the server's reload of that file picks it up.
#pragma once
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "archive/accounts.h"
#include "config/settings.h"
#include "directory/sync.h"

namespace mk::directory {

class Runner {
 public:
  // Throws SyncError when the provider cannot be set up (credentials unreadable).
  Runner(const Settings& s, archive::AccountDirectory& accounts);
  ~Runner();  // stops: a sync in progress is abandoned at its next wait
  void start();
  const SyncCounters& counters() const { return counters_ ? *counters_ : idle_; }

 private:
  void run();
  bool wait(std::chrono::seconds s);  // false when stopping

  archive::AccountDirectory& accounts_;
  std::chrono::seconds interval_;
  std::unique_ptr<Syncer> syncer_;
  const SyncCounters* counters_ = nullptr;
  SyncCounters idle_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace mk::directory
