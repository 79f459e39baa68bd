// history.h — the spam verdict history: one row per scored message (time,
// client, sender, recipients, subject, score, verdict, signature), and the
// message's features under its signature, so that `mailkeep spam reclassify`
// and the /spam page can retrain without a copy of the message (as DSPAM's
// signatures did). Rows are kept [spam] history_days, features
// [spam] signature_days.
//
// An interface, with SQLite as the real store (open_sqlite_history) and an
// in-memory fake in tests/unit. Failures throw db::Error.
// Threading: implementations are safe to call from any thread. The SQLite
// store blocks (the HTTP side calls it on the blocking pool); the buffered one
// the SMTP side uses (make_buffered_history) never blocks in record().
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "db/error.h"
#include "spam/calibration.h"

namespace mk::spam {

struct Verdict {
  std::string signature;
  int64_t time = 0;  // unix seconds
  std::string client;
  std::string sender;
  std::string recipients;  // comma-separated
  std::string subject;
  double score = 0;
  Call call = Call::Ham;    // the verdict at the cutoffs in effect
  std::string action;       // relayed, rejected, deferred
  std::optional<bool> reclassified_as;  // the operator's label (true = spam), once given
};

struct VerdictCounts {
  uint64_t spam = 0, unsure = 0, ham = 0;  // verdicts since the date
  uint64_t missed_spam = 0;    // ham and unsure verdicts reclassified as spam
  uint64_t false_positives = 0;  // spam verdicts reclassified as ham
};

class History {
 public:
  virtual ~History() = default;
  // A new verdict with the message's features.
  virtual void record(const Verdict& v, const std::vector<uint32_t>& features) = 0;
  struct Entry {
    Verdict verdict;
    std::vector<uint32_t> features;
  };
  // Many at once (one transaction where the store has them).
  virtual void record_all(const std::vector<Entry>& entries) {
    for (auto& e : entries) record(e.verdict, e.features);
  }
  // Newest first.
  virtual std::vector<Verdict> recent(size_t limit) = 0;
  // The verdict, and its features if they are still kept (else `features` is left empty).
  virtual std::optional<Verdict> find(const std::string& signature, std::vector<uint32_t>* features) = 0;
  virtual void set_reclassified(const std::string& signature, bool as_spam) = 0;
  virtual VerdictCounts counts(int64_t since) = 0;
  // Drops features older than `features_before` and rows older than `rows_before`.
  virtual void purge(int64_t features_before, int64_t rows_before) = 0;
};

// Throws db::Error when the file cannot be opened or migrated.
std::unique_ptr<History> open_sqlite_history(const std::string& path);

// The SMTP side's history: record() only queues (it never blocks a session);
// a thread writes the queue to `store` every `interval` in one transaction,
// so a verdict costs no thread hop and no commit of its own. Every other
// call writes the queue first, so the /spam page sees every verdict. At most
// `max_queued` wait (beyond that new ones are dropped and counted: the
// history is for the operator, never a reason to slow or refuse mail).
// A verdict reaches the file within `interval`; destruction writes the rest.
std::unique_ptr<History> make_buffered_history(std::unique_ptr<History> store,
                                               std::chrono::milliseconds interval = std::chrono::milliseconds(50),
                                               size_t max_queued = 20000);

// The features' storage form: delta-coded LEB128 varints of the sorted
// unique indices (about 2 bytes per feature instead of 4).
std::string encode_features(const std::vector<uint32_t>& features);
// Sorted and unique; false on a damaged blob.
bool decode_features(std::string_view blob, std::vector<uint32_t>& out);

// A signature: 8 hex digits of time and 8 of randomness, unique across restarts.
std::string make_signature(int64_t now);

}  // namespace mk::spam
