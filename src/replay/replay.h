// replay.h — `mailkeep backup replay`: hands the provider what arrived while
// mailkeep was standalone, once it accepts mail again.
//
// The journal ([backup] replay) is a Maildir the standalone upstream writes
// (delivery/outbox_upstream.h): one file per message and recipient, starting
// with "Return-Path: <sender>" and "X-Original-To: <recipient>", then the
// message as the archive got it (our Received field on top). A file in new/
// is still to be sent; after the upstream's 250 it is renamed into cur/ with
// the info ":2,S" and cur/ is fsynced, so that a second replay skips it. The
// only window in which a message could go twice is between the upstream's
// 250 and that rename (microseconds); a SIGINT/SIGTERM waits for the message
// in flight to finish, so an interrupted replay never leaves one half-done.
// Two replays at once are excluded by an flock on <journal>/replay.lock.
// A 4xx from the upstream stops the replay (run it again later); a 5xx leaves
// that message in new/, is reported, and the replay goes on.
// Threading: replay() blocks; it runs its own io_context.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "delivery/upstream.h"

namespace mk::replay {

struct JournalEntry {
  std::string name;       // file name in new/
  std::string sender;     // envelope sender ("" = null sender)
  std::string recipient;  // lower-case address
  int64_t time = 0;       // arrival (from the Maildir name)
  uint64_t size = 0;
};

struct ReplayOptions {
  std::string journal;           // the Maildir
  std::string user;              // only this recipient (lower-case); empty = everyone
  std::optional<int64_t> since;  // only what arrived at or after this (unix time)
  bool dry_run = false;
  const std::atomic<bool>* stop = nullptr;  // set by a signal: stop after the message in flight
  // Called after each message: done, total, the entry and the upstream's reply.
  std::function<void(size_t, size_t, const JournalEntry&, const smtp::Reply&)> progress;
};

struct ReplayReport {
  size_t selected = 0, sent = 0, failed = 0;
  bool deferred = false;  // the upstream answered 4xx: stopped early
  bool interrupted = false;
  std::string error;      // the journal could not be read or locked
  std::vector<std::string> failures;  // "NAME: reply"
};

// The entries still to send, oldest first, matching the options' filters.
std::vector<JournalEntry> pending_entries(const ReplayOptions& options, std::string& error);

ReplayReport replay(const ReplayOptions& options, delivery::UpstreamFactory& upstream);

}  // namespace mk::replay
