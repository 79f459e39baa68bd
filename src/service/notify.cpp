// notify.cpp — see notify.h.
#include "service/notify.h"

#include <systemd/sd-daemon.h>

#include "core/log.h"

namespace mk::service {

void notify_ready(const std::string& status) { sd_notify(0, ("READY=1\nSTATUS=" + status).c_str()); }

void notify_reloading() {
  // systemd 252 (Debian 12) has no Type=notify-reload; RELOADING=1 is still
  // understood by Type=notify and ends with the next READY=1.
  sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
}

void notify_stopping() { sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing sessions"); }

struct Watchdog::Beat {
  explicit Beat(boost::asio::io_context& io) : timer(io) {}
  boost::asio::steady_timer timer;
  std::atomic<int64_t> last_ns{0};
};

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Watchdog::Watchdog(std::vector<boost::asio::io_context*> workers) : workers_(std::move(workers)) {}
Watchdog::~Watchdog() { stop(); }

bool Watchdog::start() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return false;
  interval_ = std::chrono::microseconds(usec);
  for (auto* io : workers_) {
    beats_.push_back(std::make_unique<Beat>(*io));
    beats_.back()->last_ns = now_ns();
  }
  for (size_t i = 0; i < beats_.size(); ++i) arm_heartbeat(i);
  ping_timer_ = std::make_unique<boost::asio::steady_timer>(*workers_.front());
  sd_notify(0, "WATCHDOG=1");
  arm_ping();
  spdlog::info("systemd watchdog: {} ms; each of {} event loops must answer", usec / 1000, workers_.size());
  return true;
}

void Watchdog::stop() {
  stopped_ = true;
  // The timers belong to their loops; cancelling from here is safe only for
  // the ping timer (same loop as the caller); the heartbeats end with their loops.
  if (ping_timer_) ping_timer_->cancel();
}

void Watchdog::arm_heartbeat(size_t i) {
  auto& b = *beats_[i];
  b.timer.expires_after(interval_ / 4);
  b.timer.async_wait([this, i](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    beats_[i]->last_ns = now_ns();
    arm_heartbeat(i);
  });
}

void Watchdog::arm_ping() {
  ping_timer_->expires_after(interval_ / 2);
  ping_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    const int64_t oldest_allowed = now_ns() - std::chrono::duration_cast<std::chrono::nanoseconds>(interval_).count() / 2;
    for (size_t i = 0; i < beats_.size(); ++i) {
      if (beats_[i]->last_ns.load() < oldest_allowed) {
        if (!stale_logged_)
          spdlog::error("systemd watchdog: event loop {} has not answered for over {} ms; no more WATCHDOG=1", i,
                        interval_.count() / 2000);
        stale_logged_ = true;
        arm_ping();
        return;
      }
    }
    stale_logged_ = false;
    sd_notify(0, "WATCHDOG=1");
    arm_ping();
  });
}

}  // namespace mk::service
