// exposition.cpp — see exposition.h.
#include "metrics/exposition.h"

#include <fmt/format.h>

#include <map>
#include <string_view>

#include "core/stats.h"

#ifndef MAILKEEP_VERSION
#define MAILKEEP_VERSION "unknown"
#endif

namespace mk::metrics {
namespace {

using Snapshot = std::map<std::string, uint64_t>;

uint64_t get(const Snapshot& s, const std::string& name) {
  auto it = s.find(name);
  return it == s.end() ? 0 : it->second;
}

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void histogram(std::string& out, std::string_view name, std::string_view help, stats::Histogram h) {
  family(out, name, "histogram", help);
  auto snap = stats::histogram(h);
  for (size_t i = 0; i < std::size(stats::kBuckets); ++i)
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, stats::kBuckets[i], snap.cumulative[i]);
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, snap.count, name, snap.sum, name,
                     snap.count);
}

}  // namespace

std::string render(const std::vector<Sample>& extra) {
  const Snapshot s = stats::snapshot();
  std::string out;
  out.reserve(8192);

  family(out, "mailkeep_build_info", "gauge", "mailkeep's version; always 1");
  out += fmt::format("mailkeep_build_info{{version={}}} 1\n", stats::label_value(MAILKEEP_VERSION));

  family(out, "mailkeep_connections_total", "counter", "SMTP connections accepted (port 25 and submission)");
  out += fmt::format("mailkeep_connections_total {}\n", get(s, "connections"));

  family(out, "mailkeep_messages_total", "counter",
         "SMTP transactions that reached the end of DATA, by direction (inbound: from the internet; outbound: our "
         "networks, submission, the provider's outgoing copies) and result (accepted = 250)");
  for (auto dir : {"inbound", "outbound"})
    for (auto result : {"accepted", "deferred", "rejected"})
      out += fmt::format("mailkeep_messages_total{{direction=\"{}\",result=\"{}\"}} {}\n", dir, result,
                         get(s, fmt::format("messages.{}.{}", dir, result)));

  family(out, "mailkeep_rejections_total", "counter",
         "SMTP commands or connections refused, by reason (the reject.* names of `mailkeep stats`)");
  for (auto& [name, v] : s)
    if (name.starts_with("reject."))
      out += fmt::format("mailkeep_rejections_total{{reason={}}} {}\n", stats::label_value(name.substr(7)), v);

  family(out, "mailkeep_http_rejections_total", "counter", "alias API requests refused, by reason");
  for (auto& [name, v] : s)
    if (name.starts_with("http.reject."))
      out += fmt::format("mailkeep_http_rejections_total{{reason={}}} {}\n", stats::label_value(name.substr(12)), v);

  family(out, "mailkeep_deferrals_total", "counter",
         "transactions answered 4xx after DATA, by cause (upstream: the smarthost failed or deferred; archive: a "
         "copy could not be written)");
  out += fmt::format("mailkeep_deferrals_total{{cause=\"upstream\"}} {}\n", get(s, "defer.upstream"));
  out += fmt::format("mailkeep_deferrals_total{{cause=\"archive\"}} {}\n", get(s, "defer.archive"));

  family(out, "mailkeep_upstream_errors_total", "counter",
         "transactions the upstream deferred or failed (connect, MAIL, RCPT or DATA; details in the log)");
  out += fmt::format("mailkeep_upstream_errors_total {}\n", get(s, "defer.upstream") + get(s, "reject.upstream_rcpt"));

  histogram(out, "mailkeep_transaction_duration_seconds", "MAIL to the final reply after DATA",
            stats::Histogram::transaction_duration);

  family(out, "mailkeep_archive_copies_total", "counter", "message copies published into archive Maildirs (new/)");
  out += fmt::format("mailkeep_archive_copies_total {}\n", get(s, "archive.copies"));
  histogram(out, "mailkeep_archive_write_duration_seconds",
            "writing, fsyncing and publishing a message's archive copies", stats::Histogram::archive_write);

  family(out, "mailkeep_standalone_deliveries_total", "counter", "messages delivered in standalone mode");
  out += fmt::format("mailkeep_standalone_deliveries_total {}\n", get(s, "messages.standalone"));

  family(out, "mailkeep_spam_verdicts_total", "counter", "scored inbound messages by verdict (spam: at reject_score; unsure: at tag_score)");
  out += fmt::format("mailkeep_spam_verdicts_total{{verdict=\"spam\"}} {}\n", get(s, "spam.detected"));
  out += fmt::format("mailkeep_spam_verdicts_total{{verdict=\"unsure\"}} {}\n", get(s, "spam.unsure"));
  out += fmt::format("mailkeep_spam_verdicts_total{{verdict=\"ham\"}} {}\n", get(s, "spam.ham"));

  family(out, "mailkeep_aliases_created_total", "counter", "temporary aliases created through the HTTP API");
  out += fmt::format("mailkeep_aliases_created_total {}\n", get(s, "http.alias_created"));
  family(out, "mailkeep_alias_uses_total", "counter", "messages delivered through a temporary alias");
  out += fmt::format("mailkeep_alias_uses_total {}\n", get(s, "alias.used"));

  family(out, "mailkeep_auth_total", "counter", "SMTP AUTH attempts on submission, by result");
  out += fmt::format("mailkeep_auth_total{{result=\"ok\"}} {}\n", get(s, "auth.ok"));
  out += fmt::format("mailkeep_auth_total{{result=\"failed\"}} {}\n", get(s, "reject.auth"));

  auto labeled = stats::labeled_snapshot();
  family(out, "mailkeep_dnsbl_lookups_total", "counter",
         "DNSBL zone lookups by zone and result (unanswered: another zone listed first, or the deadline)");
  for (auto& [labels, v] : labeled["dnsbl_lookups"]) out += fmt::format("mailkeep_dnsbl_lookups_total{{{}}} {}\n", labels, v);

  family(out, "mailkeep_milter_verdicts_total", "counter",
         "milter verdicts by milter and verdict (accept, reject, tempfail, discard, quarantine, shutdown, error)");
  for (auto& [labels, v] : labeled["milter_verdicts"])
    out += fmt::format("mailkeep_milter_verdicts_total{{{}}} {}\n", labels, v);

  for (auto& e : extra) {
    family(out, e.name, e.type, e.help);
    out += fmt::format("{} {}\n", e.name, e.value ? e.value() : 0.0);
  }
  return out;
}

}  // namespace mk::metrics
