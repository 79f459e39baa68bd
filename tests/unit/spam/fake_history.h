// fake_history.h — an in-memory spam::History for unit tests.
#pragma once
#include <algorithm>
#include <map>
#include <mutex>

#include "spam/history.h"

namespace mk::spam {

class FakeHistory final : public History {
 public:
  bool fail = false;  // every call throws db::Error, as a broken database does

  void record(const Verdict& v, const std::vector<uint32_t>& features) override {
    check();
    rows[v.signature] = {v, features};
  }
  std::vector<Verdict> recent(size_t limit) override {
    check();
    std::vector<Verdict> out;
    for (auto& [sig, r] : rows) out.push_back(r.verdict);
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.time > b.time; });
    if (out.size() > limit) out.resize(limit);
    return out;
  }
  std::optional<Verdict> find(const std::string& signature, std::vector<uint32_t>* features) override {
    check();
    auto it = rows.find(signature);
    if (it == rows.end()) return std::nullopt;
    if (features) *features = it->second.features;
    return it->second.verdict;
  }
  void set_reclassified(const std::string& signature, bool as_spam) override {
    check();
    if (auto it = rows.find(signature); it != rows.end()) it->second.verdict.reclassified_as = as_spam;
  }
  VerdictCounts counts(int64_t since) override {
    check();
    VerdictCounts c;
    for (auto& [sig, r] : rows) {
      if (r.verdict.time < since) continue;
      const bool spam = r.verdict.call == Call::Spam;
      (spam ? c.spam : r.verdict.call == Call::Unsure ? c.unsure : c.ham)++;
      if (r.verdict.reclassified_as && *r.verdict.reclassified_as != spam)
        (spam ? c.false_positives : c.missed_spam)++;
    }
    return c;
  }
  void purge(int64_t features_before, int64_t rows_before) override {
    check();
    for (auto it = rows.begin(); it != rows.end();) {
      if (it->second.verdict.time < rows_before) it = rows.erase(it);
      else {
        if (it->second.verdict.time < features_before) it->second.features.clear();
        ++it;
      }
    }
  }

  struct Row {
    Verdict verdict;
    std::vector<uint32_t> features;
  };
  std::map<std::string, Row> rows;

 private:
  void check() {
    if (fail) throw db::Error("fake history failure");
  }
};

}  // namespace mk::spam
