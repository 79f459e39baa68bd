// notify.h — what systemd hears from us (sd_notify(3), Type=notify):
//   READY=1 once the listeners accept connections, RELOADING=1 … READY=1
//   around a SIGHUP, STOPPING=1 at SIGTERM, and WATCHDOG=1 while every event
//   loop still answers. Outside systemd (no NOTIFY_SOCKET) all of it is a no-op.
//
// The watchdog: when systemd sets WATCHDOG_USEC, each worker io_context runs a
// heartbeat timer; the main loop pings systemd at half the interval only if
// every worker's last heartbeat is fresh. A worker stuck in a long call stops
// the pings and systemd restarts the service (WatchdogSec= in the unit).
#pragma once
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace mk::service {

void notify_ready(const std::string& status);
void notify_reloading();
void notify_stopping();

class Watchdog {
 public:
  // `workers[0]` is the loop that pings; every loop gets a heartbeat.
  explicit Watchdog(std::vector<boost::asio::io_context*> workers);
  ~Watchdog();
  // Starts if systemd asked for a watchdog (WATCHDOG_USEC for this pid); returns whether it did.
  bool start();
  void stop();
  std::chrono::microseconds interval() const { return interval_; }

 private:
  struct Beat;
  void arm_heartbeat(size_t i);
  void arm_ping();
  std::vector<boost::asio::io_context*> workers_;
  std::vector<std::unique_ptr<Beat>> beats_;
  std::unique_ptr<boost::asio::steady_timer> ping_timer_;
  std::chrono::microseconds interval_{0};
  bool stale_logged_ = false;
  std::atomic<bool> stopped_{false};
};

}  // namespace mk::service
