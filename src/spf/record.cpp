// record.cpp — see record.h.
#include "spf/record.h"

#include <algorithm>

#include "core/strings.h"

namespace mk::spf {
namespace {

constexpr int kMaxLookups = 10;  // RFC 7208 4.6.4

struct Walk {
  const TxtLookup& lookup;
  Expansion out;
  std::vector<std::string> path;  // the records being expanded, outermost first

  bool fail(std::string why) {
    out.ok = false;
    if (out.error.empty()) out.error = std::move(why);
    return false;
  }

  bool count(const std::string& term, const std::string& where) {
    if (++out.lookups > kMaxLookups)
      return fail("more than " + std::to_string(kMaxLookups) + " DNS-querying terms (RFC 7208 4.6.4) at '" + term +
                  "' in " + where);
    return true;
  }

  void add(const Cidr& c) {
    if (std::find(out.networks.begin(), out.networks.end(), c) == out.networks.end()) out.networks.push_back(c);
  }

  bool network(std::string_view spec, bool v6, const std::string& where) {
    std::string err;
    auto c = Cidr::parse(spec, &err);
    if (!c || c->network.is_v4() == v6) return fail("bad " + std::string(v6 ? "ip6" : "ip4") + ":" + std::string(spec) + " in " + where);
    add(*c);
    return true;
  }

  bool record(const std::string& name) {
    if (std::find(path.begin(), path.end(), name) != path.end()) {
      std::string chain;
      for (auto& p : path) chain += p + " -> ";
      return fail("loop: " + chain + name);
    }
    auto answer = lookup(name);
    if (answer.status == TxtAnswer::Error) return fail(name + ": " + answer.error);
    std::vector<std::string> spf;
    for (auto& t : answer.texts) {
      auto low = to_lower(t.substr(0, 7));
      if (low == "v=spf1" || low == "v=spf1 ") spf.push_back(t);
    }
    if (answer.status == TxtAnswer::NoRecord || spf.empty()) return fail(name + ": no SPF record");
    if (spf.size() > 1) return fail(name + ": more than one SPF record (RFC 7208 4.5)");
    out.ttl = out.ttl ? std::min(out.ttl, answer.ttl) : answer.ttl;
    path.push_back(name);
    bool ok = terms(spf.front().substr(6), name);
    path.pop_back();
    return ok;
  }

  bool terms(std::string_view text, const std::string& where) {
    std::string redirect;
    bool has_all = false;
    for (auto& raw : split_list(text, ' ')) {
      std::string term = raw;
      if (term.find('\t') != std::string::npos) return fail("tab in " + where);
      char qualifier = '+';
      if (!term.empty() && std::string_view("+-~?").find(term[0]) != std::string_view::npos) {
        qualifier = term[0];
        term.erase(0, 1);
      }
      auto low = to_lower(term);
      auto arg = [&](size_t prefix) { return low.substr(prefix); };
      if (low.find('%') != std::string::npos) return fail("macro in '" + raw + "' in " + where + " (not supported)");
      if (low.rfind("ip4:", 0) == 0) {
        if (qualifier == '+' && !network(arg(4), false, where)) return false;
      } else if (low.rfind("ip6:", 0) == 0) {
        if (qualifier == '+' && !network(arg(4), true, where)) return false;
      } else if (low.rfind("include:", 0) == 0) {
        auto target = arg(8);
        if (!valid_dns_name(target)) return fail("bad include '" + raw + "' in " + where);
        if (!count(raw, where)) return false;
        // A failing include is an error (RFC 7208 5.2: permerror/temperror).
        // Its networks count only as a pass; a '-include' adds none.
        if (qualifier != '+') {
          // Still resolved (it costs a lookup and may loop), but not added.
          auto saved = out.networks;
          if (!record(target)) return false;
          out.networks = std::move(saved);
        } else if (!record(target)) {
          return false;
        }
      } else if (low.rfind("redirect=", 0) == 0) {
        if (!redirect.empty()) return fail("two redirect= modifiers in " + where);
        redirect = arg(9);
        if (!valid_dns_name(redirect)) return fail("bad redirect '" + raw + "' in " + where);
      } else if (low == "all") {
        has_all = true;
      } else if (low == "a" || low.rfind("a:", 0) == 0 || low.rfind("a/", 0) == 0 || low == "mx" ||
                 low.rfind("mx:", 0) == 0 || low.rfind("mx/", 0) == 0 || low == "ptr" || low.rfind("ptr:", 0) == 0 ||
                 low.rfind("exists:", 0) == 0) {
        if (!count(raw, where)) return false;
      } else if (low.find('=') != std::string::npos) {
        // exp= and unknown modifiers are ignored (RFC 7208 6).
      } else {
        return fail("unknown term '" + raw + "' in " + where);
      }
    }
    if (!redirect.empty() && !has_all) {  // redirect is ignored when there is an 'all' (6.1)
      if (!count("redirect=" + redirect, where)) return false;
      return record(redirect);
    }
    return true;
  }
};

}  // namespace

Expansion expand(const std::string& name, const TxtLookup& lookup) {
  Walk w{lookup, {}, {}};
  w.out.ok = true;
  if (!valid_dns_name(name)) {
    w.fail("invalid name '" + name + "'");
    return w.out;
  }
  if (!w.record(to_lower(name))) w.out.networks.clear();
  return w.out;
}

}  // namespace mk::spf
