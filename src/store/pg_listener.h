// pg_listener.h — PostgreSQL's LISTEN/NOTIFY for the caches every gateway
// keeps (the spam model, the synced accounts): a thread with a connection of
// its own listens on a few channels and calls `on_notify` for each
// notification; after every (re)connection it calls `on_connect`, because
// notifications sent while it was away are lost and the caches must be
// reloaded then. A lost connection is re-established with backoff (100 ms
// doubling to 5 s); the thread waits on the socket, so a change reaches it
// as soon as the sender commits.
// Threading: the callbacks run on the listener's thread, one at a time; they
// may block (they load from the store) but must not throw (what they throw
// is logged and dropped). Destruction stops the thread within 250 ms.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mk::store {

class PgListener {
 public:
  using Notify = std::function<void(const std::string& channel, const std::string& payload)>;
  PgListener(std::string url, std::vector<std::string> channels, Notify on_notify, std::function<void()> on_connect);
  ~PgListener();
  PgListener(const PgListener&) = delete;
  PgListener& operator=(const PgListener&) = delete;

 private:
  void run();
  bool sleep_for(std::chrono::milliseconds d);  // false when stopping

  std::string url_;
  std::vector<std::string> channels_;
  Notify on_notify_;
  std::function<void()> on_connect_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: started when everything above exists
};

}  // namespace mk::store
