// runner.h — the server's directory sync: a thread that syncs at start and
// every [directory] interval, installs each good list in the running
// server's AccountDirectory (no restart, no dropped session), and keeps the
// last good list through failures. `mailkeep accounts sync` writes the same
// cache file; the server's reload of that file picks it up.
// Several gateways ([store] url): only the leader syncs (`lead`), in a turn
// of the shared account list (core/shared_file.h) that it publishes after
// each good sync; the others pull it on notification (main's listener).
#pragma once
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "archive/accounts.h"
#include "core/shared_file.h"
#include "config/settings.h"
#include "directory/sync.h"

namespace mk::directory {

class Runner {
 public:
  // Throws SyncError when the provider cannot be set up (credentials unreadable).
  // `lead` (null: always) says whether this gateway syncs now; `share` (null:
  // none) is the shared account list. Both outlive the runner.
  Runner(const Settings& s, archive::AccountDirectory& accounts, std::function<bool()> lead = nullptr,
         SharedFile* share = nullptr);
  ~Runner();  // stops: a sync in progress is abandoned at its next wait
  void start();
  const SyncCounters& counters() const { return counters_ ? *counters_ : idle_; }

 private:
  void run();
  bool wait(std::chrono::seconds s);  // false when stopping

  archive::AccountDirectory& accounts_;
  std::function<bool()> lead_;
  SharedFile* share_;
  bool published_ = false;  // since this gateway became the leader
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
