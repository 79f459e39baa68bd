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
  X(messages_standalone, "messages.standalone")

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

}  // namespace mk::stats
