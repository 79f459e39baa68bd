// pg_election.cpp — see pg_election.h.
#include "store/pg_election.h"

#include "core/log.h"

namespace mk::store {

PgElection::PgElection(std::shared_ptr<PgPool> pool, std::string name) : pool_(std::move(pool)), name_(std::move(name)) {}

PgElection::~PgElection() {
  if (!held_) return;
  try {
    held_->exec("SELECT pg_advisory_unlock(hashtext($1))", {"mailkeep_leader:" + name_});
  } catch (const db::Error&) {
  }
}

bool PgElection::lead() {
  bool now = false;
  try {
    if (held_) {
      held_->exec("SELECT 1");  // still connected, so still holding the lock
      now = true;
    } else {
      auto conn = pool_->connection();
      if (conn->exec("SELECT pg_try_advisory_lock(hashtext($1))", {"mailkeep_leader:" + name_}).boolean(0, 0)) {
        held_ = std::move(conn);
        now = true;
      }
    }
    last_error_.clear();
  } catch (const db::Error& e) {
    held_.reset();  // a broken connection goes back closed; the server has dropped its lock
    if (e.what() != last_error_) spdlog::warn("{}: cannot tell which gateway leads: {}", name_, e.what());
    last_error_ = e.what();
  }
  if (now != led_) spdlog::info("{}: this gateway {}", name_, now ? "leads now" : "no longer leads (another does)");
  led_ = now;
  return now;
}

}  // namespace mk::store
