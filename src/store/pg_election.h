// pg_election.h — one gateway of several does a job for all (the directory
// sync, [directory] provider): the one whose connection holds a PostgreSQL
// session advisory lock on the job's name. The leader keeps that connection
// (one of the pool's) for as long as it leads; when it dies or loses the
// database, the server drops the lock with the connection, and another
// gateway takes over at its next try.
// Threading: lead() from one thread (the job's).
#pragma once
#include <memory>
#include <string>

#include "store/pg.h"

namespace mk::store {

class PgElection {
 public:
  PgElection(std::shared_ptr<PgPool> pool, std::string name);
  ~PgElection();
  // True when this process leads now: it held the lock and its connection
  // still answers, or it took the lock just now. Never throws: a database
  // failure is false (logged once per change).
  bool lead();

 private:
  std::shared_ptr<PgPool> pool_;
  std::string name_;
  std::unique_ptr<PgConnection> held_;
  std::string last_error_;
  bool led_ = false;
};

}  // namespace mk::store
