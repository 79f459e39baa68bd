// refresher.h — keeps the networks of `spf:NAME` relay_from entries current:
// resolves each name at start and again at its records' TTL (at most hourly,
// at least every second), on its own thread. A failed refresh keeps the last
// good set; a first resolution that fails leaves the set not ready(), which
// the router answers with 4xx instead of "relaying denied" (router.h).
// Every change is logged with what changed.
#pragma once
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/net.h"
#include "spf/record.h"

namespace mk::spf {

class Refresher {
 public:
  // `relay` and `backup`: the spf: names of [relay] and [backup] relay_from.
  // `lookup` is called on the refresher's thread only.
  Refresher(std::vector<std::string> relay, std::vector<std::string> backup, TxtLookup lookup);
  ~Refresher();  // stops and joins the thread
  void start();
  const SharedNetworks* relay() const { return relay_names_.empty() ? nullptr : &relay_; }
  const SharedNetworks* backup() const { return backup_names_.empty() ? nullptr : &backup_; }

 private:
  struct Source {
    std::string name;
    bool backup = false;        // [backup] relay_from, else [relay]
    bool resolved = false;      // has a last good set
    std::vector<Cidr> networks;  // the last good set
    std::chrono::steady_clock::time_point due{};
    int failures = 0;  // in a row
  };
  void run();
  void refresh(Source& s);
  void publish();

  std::vector<std::string> relay_names_, backup_names_;
  TxtLookup lookup_;
  std::vector<Source> sources_;
  SharedNetworks relay_, backup_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace mk::spf
