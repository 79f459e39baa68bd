// pg_listener.cpp — see pg_listener.h.
#include "store/pg_listener.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>

#include "core/log.h"
#include "store/pg.h"

namespace mk::store {

PgListener::PgListener(std::string url, std::vector<std::string> channels, Notify on_notify,
                       std::function<void()> on_connect)
    : url_(std::move(url)), channels_(std::move(channels)), on_notify_(std::move(on_notify)),
      on_connect_(std::move(on_connect)), thread_([this] { run(); }) {}

PgListener::~PgListener() {
  stopping_ = true;
  wake_.notify_all();
  thread_.join();
}

bool PgListener::sleep_for(std::chrono::milliseconds d) {
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, d, [this] { return stopping_.load(); });
  return !stopping_;
}

void PgListener::run() {
  auto backoff = std::chrono::milliseconds(0);
  std::string last_error;
  while (!stopping_) {
    pg_conn* c = nullptr;
    try {
      c = pg_connect(url_);
      for (auto& ch : channels_) {
        char* quoted = PQescapeIdentifier(c, ch.c_str(), ch.size());
        std::string sql = std::string("LISTEN ") + (quoted ? quoted : "");
        PQfreemem(quoted);
        pg_result* r = PQexec(c, sql.c_str());
        bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        std::string why = ok ? "" : PQerrorMessage(c);
        if (r) PQclear(r);
        if (!ok) throw db::Error("PostgreSQL: LISTEN " + ch + ": " + why);
      }
    } catch (const db::Error& e) {
      if (c) PQfinish(c);
      if (e.what() != last_error) spdlog::warn("store: change notifications: {}; retrying", e.what());
      last_error = e.what();
      backoff = std::clamp(backoff * 2, std::chrono::milliseconds(100), std::chrono::milliseconds(5000));
      if (!sleep_for(backoff)) return;
      continue;
    }
    if (!last_error.empty()) spdlog::info("store: change notifications: listening again");
    last_error.clear();
    backoff = std::chrono::milliseconds(0);
    try {
      on_connect_();
    } catch (const std::exception& e) {
      spdlog::warn("store: reloading after connecting: {}", e.what());
    }
    while (!stopping_) {
      pollfd p{PQsocket(c), POLLIN, 0};
      int n = ::poll(&p, 1, 250);
      if (n < 0 && errno != EINTR) break;
      if (n > 0 && !PQconsumeInput(c)) break;  // the server went away
      if (PQstatus(c) != CONNECTION_OK) break;
      while (PGnotify* note = PQnotifies(c)) {
        std::string channel = note->relname, payload = note->extra ? note->extra : "";
        PQfreemem(note);
        try {
          on_notify_(channel, payload);
        } catch (const std::exception& e) {
          spdlog::warn("store: change on {}: {}", channel, e.what());
        }
      }
    }
    if (!stopping_) {
      last_error = "connection lost";
      spdlog::warn("store: change notifications: connection lost; reconnecting");
    }
    PQfinish(c);
  }
}

}  // namespace mk::store
