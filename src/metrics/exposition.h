// exposition.h — the counters of core/stats as Prometheus metrics, text
// exposition format 0.0.4: `mailkeep_` names, base units (seconds), `_total`
// on counters, labels for direction/result/reason/zone, never a client address.
// The mapping from the stats names lives here, so `mailkeep stats` and
// /metrics read the same counters.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace mk::metrics {

// A value read at scrape time (the index lag, the indexer's counters).
struct Sample {
  std::string name;  // full metric name, e.g. mailkeep_index_pending_messages
  std::string type;  // "gauge" or "counter"
  std::string help;
  std::function<double()> value;
};

std::string render(const std::vector<Sample>& extra);

}  // namespace mk::metrics
