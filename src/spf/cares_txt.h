// cares_txt.h — a blocking TXT lookup on c-ares, for the SPF refresher's own
// thread (the sessions never wait on it). Servers as [dnsbl] resolver.
#pragma once
#include <memory>
#include <vector>

#include "core/net.h"
#include "spf/record.h"

namespace mk::spf {

class CaresTxt {
 public:
  CaresTxt(std::vector<HostPort> servers, int timeout_ms);  // throws on a bad server list
  ~CaresTxt();
  CaresTxt(const CaresTxt&) = delete;
  CaresTxt& operator=(const CaresTxt&) = delete;
  TxtAnswer lookup(const std::string& name);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mk::spf
