// fake_store.h — an in-memory AliasStore for unit tests (the test fake of
// the store interface), with a switch to simulate database failures.
#pragma once
#include <map>
#include <set>

#include "aliases/store.h"

namespace mk::aliases {

class FakeAliasStore final : public AliasStore {
 public:
  bool fail = false;  // every call throws StoreError
  std::map<std::string, Alias> rows;
  std::set<std::string> issued;

  bool insert(const Alias& a) override {
    check();
    if (!issued.insert(a.id).second) return false;
    rows[a.id] = a;
    return true;
  }
  std::optional<Alias> find(const std::string& id) override {
    check();
    auto it = rows.find(id);
    if (it == rows.end()) return std::nullopt;
    return it->second;
  }
  void add_use(const std::string& id) override {
    check();
    rows.at(id).uses++;
  }
  bool disable(const std::string& id) override {
    check();
    auto it = rows.find(id);
    if (it == rows.end()) return false;
    it->second.disabled = true;
    return true;
  }
  std::vector<Alias> list(size_t limit) override {
    check();
    std::vector<Alias> out;
    for (auto& [id, a] : rows)
      if (out.size() < limit) out.push_back(a);
    return out;
  }
  size_t purge(int64_t now) override {
    check();
    return std::erase_if(rows, [&](auto& kv) { return state_of(kv.second, now) != AliasState::Live; });
  }

 private:
  void check() {
    if (fail) throw StoreError("simulated database failure");
  }
};

}  // namespace mk::aliases
