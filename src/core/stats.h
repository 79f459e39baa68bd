// stats.h — a counter per rejection reason (and a few events), shown by
// `mailkeep stats`. The server writes them to [general] stats_file every few
// seconds and at exit (tmp + rename), so the CLI needs no connection to it.
// Counting is one relaxed atomic increment: free enough for every hot path.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace mk::stats {

// Append-only: names are part of the stats file format.
#define MK_STATS_COUNTERS(X)                                              \
  X(connections, "connections")                                           \
  X(messages_relayed, "messages.relayed")                                 \
  X(messages_archived, "messages.archived")                               \
  X(reject_too_many_connections, "reject.too_many_connections")           \
  X(reject_connections_per_ip, "reject.connections_per_ip")               \
  X(reject_messages_per_ip, "reject.messages_per_ip")                     \
  X(reject_dnsbl_listed, "reject.dnsbl_listed")                           \
  X(reject_dnsbl_error, "reject.dnsbl_error")                             \
  X(reject_relay_denied, "reject.relay_denied")                           \
  X(reject_unknown_user, "reject.unknown_user")                           \
  X(reject_alias_unknown, "reject.alias_unknown")                         \
  X(reject_alias_dead, "reject.alias_expired_used_up_or_disabled")        \
  X(reject_upstream_rcpt, "reject.upstream_rcpt")                         \
  X(reject_message_size, "reject.message_size")                           \
  X(reject_bad_line_endings, "reject.bare_cr_lf_or_nul")                  \
  X(reject_too_many_recipients, "reject.too_many_recipients")             \
  X(reject_too_many_errors, "reject.too_many_errors")                     \
  X(reject_syntax, "reject.syntax")                                       \
  X(reject_timeout, "reject.timeout")                                     \
  X(reject_early_data, "reject.data_before_354")                          \
  X(defer_upstream, "defer.upstream")                                     \
  X(defer_archive, "defer.archive")                                       \
  X(http_alias_created, "http.alias_created")                             \
  X(http_reject_rate_limited, "http.reject.rate_limited")                 \
  X(http_reject_dnsbl_listed, "http.reject.dnsbl_listed")                 \
  X(http_reject_invalid, "http.reject.invalid")                           \
  X(spam_detected, "spam.detected")                                       \
  X(reject_spam, "reject.spam")                                           \
  X(reject_auth, "reject.auth")                                           \
  X(auth_ok, "auth.ok")                                                   \
  X(messages_standalone, "messages.standalone")                           \
  X(messages_inbound_accepted, "messages.inbound.accepted")               \
  X(messages_inbound_deferred, "messages.inbound.deferred")               \
  X(messages_inbound_rejected, "messages.inbound.rejected")               \
  X(messages_outbound_accepted, "messages.outbound.accepted")             \
  X(messages_outbound_deferred, "messages.outbound.deferred")             \
  X(messages_outbound_rejected, "messages.outbound.rejected")             \
  X(archive_copies, "archive.copies")                                     \
  X(alias_used, "alias.used")                                             \
  X(spam_ham, "spam.ham")                                                 \
  X(spam_unsure, "spam.unsure")

enum class Counter {
#define MK_X(id, name) id,
  MK_STATS_COUNTERS(MK_X)
#undef MK_X
      count_
};

void count(Counter c, uint64_t n = 1);
uint64_t value(Counter c);
std::map<std::string, uint64_t> snapshot();

// Writes "name value" lines (plus started/updated times) to `path` atomically.
bool write_file(const std::string& path, int64_t started);

// Counters with a label set known only at run time (a DNSBL zone), for the
// metrics endpoint: `labels` is Prometheus label text, e.g.
// zone="zen.example",result="listed" (values escaped by label_value()).
// A mutex and a map: for events per connection, not per byte.
void count_labeled(std::string_view family, std::string labels, uint64_t n = 1);
std::map<std::string, std::map<std::string, uint64_t>> labeled_snapshot();  // family → labels → value
std::string label_value(std::string_view v);  // quoted, with \, " and newline escaped

// A latency histogram with fixed buckets (seconds), lock-free to observe.
enum class Histogram { transaction_duration, archive_write, count_ };
inline constexpr double kBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
void observe(Histogram h, double seconds);
struct HistogramSnapshot {
  std::array<uint64_t, std::size(kBuckets)> cumulative{};  // observations <= each bound
  uint64_t count = 0;
  double sum = 0;
};
HistogramSnapshot histogram(Histogram h);

}  // namespace mk::stats
