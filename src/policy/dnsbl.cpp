// dnsbl.cpp — see dnsbl.h.
//
// c-ares runs on one thread with its own io_context: c-ares channels are not
// thread-safe, and its sockets are watched with Asio descriptors through
// c-ares' socket-state callback (as Envoy's dns_impl does with libevent).
// The NXDOMAIN TTL needs the SOA in the authority section, which c-ares 1.18
// has no parser for; the few lines that read it are ours (rfc1035 4.1).
#include "policy/dnsbl.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <map>
#include <thread>
#include <unordered_map>

#include "core/log.h"
#include "core/stats.h"
#include "core/strings.h"

namespace mk::policy {

namespace asio = boost::asio;

// ---- Names, answers ---------------------------------------------------------

std::string dnsbl_query_name(const IpAddress& ip, const std::string& zone) {
  std::string name;
  if (ip.is_v4()) {
    for (int i = 15; i >= 12; --i) name += std::to_string(ip.bytes[i]) + ".";
  } else {
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
      name += hex[ip.bytes[i] & 15];
      name += '.';
      name += hex[ip.bytes[i] >> 4];
      name += '.';
    }
  }
  return name + zone;
}

bool is_dnsbl_error_answer(const IpAddress& a) {
  if (!a.is_v4() || a.bytes[12] != 127) return true;
  return a.bytes[13] == 255 && a.bytes[14] == 255;
}

// ---- The c-ares checker -----------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

struct ZoneAnswer {
  enum Kind { NotListed, Listed, Error } kind = NotListed;
  std::string answer, detail;
};

// What the DNS said for one query name, before any zone's filter: the cache
// holds this, so that zones sharing a name (smtp_zones and http_zones with
// different filters) each apply their own filter.
struct RawAnswer {
  enum Kind { Addresses, NoRecord, Error } kind = NoRecord;
  std::vector<IpAddress> addresses;
  std::string detail;
};

ZoneAnswer evaluate(const DnsblZone& zone, const RawAnswer& raw) {
  if (raw.kind == RawAnswer::Error) return {ZoneAnswer::Error, "", raw.detail};
  ZoneAnswer answer;
  for (auto& a : raw.addresses) {
    if (is_dnsbl_error_answer(a))  // the list refuses us (or answers nonsense): never a listing
      return {ZoneAnswer::Error, a.to_string(), "error answer " + a.to_string() + " from " + zone.name};
    if (zone.matches(a) && answer.kind == ZoneAnswer::NotListed) answer = {ZoneAnswer::Listed, a.to_string(), ""};
  }
  return answer;
}

// The negative-caching TTL of an NXDOMAIN answer: min(SOA TTL, SOA MINIMUM)
// from the authority section (RFC 2308 5). 0 when there is none.
int negative_ttl(const unsigned char* buf, int len) {
  if (len < NS_HFIXEDSZ) return 0;
  int qd = (buf[4] << 8) | buf[5], an = (buf[6] << 8) | buf[7], ns = (buf[8] << 8) | buf[9];
  const unsigned char* p = buf + NS_HFIXEDSZ;
  const unsigned char* end = buf + len;
  auto skip_name = [&]() {
    char* name = nullptr;
    long enc = 0;
    if (ares_expand_name(p, buf, len, &name, &enc) != ARES_SUCCESS) return false;
    ares_free_string(name);
    p += enc;
    return p <= end;
  };
  for (int i = 0; i < qd; ++i)
    if (!skip_name() || (p += 4) > end) return 0;
  for (int i = 0; i < an + ns; ++i) {
    if (!skip_name() || p + 10 > end) return 0;
    int type = (p[0] << 8) | p[1];
    int ttl = int((uint32_t(p[4]) << 24) | (p[5] << 16) | (p[6] << 8) | p[7]);
    int rdlen = (p[8] << 8) | p[9];
    p += 10;
    if (p + rdlen > end) return 0;
    if (i >= an && type == ns_t_soa && rdlen >= 20) {
      const unsigned char* minimum = p + rdlen - 4;
      int min_ttl = int((uint32_t(minimum[0]) << 24) | (minimum[1] << 16) | (minimum[2] << 8) | minimum[3]);
      return std::max(0, std::min(ttl, min_ttl));
    }
    p += rdlen;
  }
  return 0;
}

class CaresDnsbl final : public DnsblChecker {
 public:
  explicit CaresDnsbl(CaresConfig cfg) : cfg_(std::move(cfg)), timer_(io_) {
    static const int init = ares_library_init(ARES_LIB_INIT_ALL);
    (void)init;
    ares_options opts{};
    opts.sock_state_cb = &CaresDnsbl::on_socket_state;
    opts.sock_state_cb_data = this;
    opts.timeout = cfg_.timeout_ms;
    opts.tries = 1;
    if (ares_init_options(&channel_, &opts, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS)
      throw std::runtime_error("c-ares initialisation failed");
    if (!cfg_.servers.empty()) {
      std::string csv;
      for (auto& s : cfg_.servers) csv += (csv.empty() ? "" : ",") + s.to_string();
      if (ares_set_servers_ports_csv(channel_, csv.c_str()) != ARES_SUCCESS)
        throw std::runtime_error("invalid DNS servers: " + csv);
    }
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(io_);
      io_.run();
    });
  }

  ~CaresDnsbl() override {
    asio::post(io_, [this] {
      ares_cancel(channel_);
      for (auto& [fd, w] : watches_) w->desc.release();
      watches_.clear();
      ares_destroy(channel_);
      io_.stop();
    });
    thread_.join();
  }

  // Not a coroutine: the arguments travel as initiation arguments. (Capturing
  // a coroutine's parameter in a lambda made GCC 12 free it twice.)
  asio::awaitable<DnsblVerdict> check(IpAddress ip, std::vector<DnsblZone> zones) override {
    return asio::async_initiate<decltype(asio::use_awaitable), void(DnsblVerdict)>(
        [this](auto handler, IpAddress ip, std::vector<DnsblZone> zones) {
          auto ex = asio::get_associated_executor(handler);
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          auto done = [ex, h](DnsblVerdict v) { asio::post(ex, [h, v = std::move(v)]() mutable { (*h)(std::move(v)); }); };
          asio::post(io_, [this, ip, zones = std::move(zones), done = std::move(done)]() mutable {
            start(ip, std::move(zones), std::move(done));
          });
        },
        asio::use_awaitable, ip, std::move(zones));
  }

 private:
  struct Check {
    std::vector<DnsblZone> zones;
    std::vector<std::optional<ZoneAnswer>> answers;
    std::function<void(DnsblVerdict)> done;
    bool finished = false;
    std::unique_ptr<asio::steady_timer> deadline;
  };
  struct Query {
    CaresDnsbl* self;
    std::string name;
  };
  struct Watch {
    asio::posix::stream_descriptor desc;
    bool read = false, write = false, reading = false, writing = false;
  };
  struct CacheEntry {
    RawAnswer answer;
    Clock::time_point expires;
  };

  // On the resolver thread from here on.
  void start(const IpAddress& ip, std::vector<DnsblZone> zones, std::function<void(DnsblVerdict)> done) {
    auto check = std::make_shared<Check>();
    check->zones = std::move(zones);
    check->answers.resize(check->zones.size());
    check->done = std::move(done);
    for (size_t i = 0; i < check->zones.size(); ++i) {
      auto name = dnsbl_query_name(ip, check->zones[i].name);
      if (auto it = cache_.find(name); it != cache_.end()) {
        if (it->second.expires > Clock::now()) {
          check->answers[i] = evaluate(check->zones[i], it->second.answer);
          continue;
        }
        cache_.erase(it);
      }
      // One query per name in flight: later checks wait for its answer.
      auto& waiters = inflight_[name];
      waiters.emplace_back(check, i);
      if (waiters.size() == 1) ares_query(channel_, name.c_str(), ns_c_in, ns_t_a, &CaresDnsbl::on_answer, new Query{this, name});
    }
    // A DNS server that never answers must not hold a session beyond the timeout.
    check->deadline = std::make_unique<asio::steady_timer>(io_, std::chrono::milliseconds(cfg_.timeout_ms + 200));
    check->deadline->async_wait([this, check](boost::system::error_code ec) {
      if (ec) return;
      for (auto& a : check->answers)
        if (!a) a = ZoneAnswer{ZoneAnswer::Error, "", "timeout"};
      finish(*check);
    });
    finish_if_ready(*check);
    rearm_timer();
  }

  void finish_if_ready(Check& c) {
    if (c.finished) return;
    // A listing decides at once; otherwise wait for every zone.
    for (size_t i = 0; i < c.answers.size(); ++i)
      if (c.answers[i] && c.answers[i]->kind == ZoneAnswer::Listed) return finish(c);
    for (auto& a : c.answers)
      if (!a) return;
    finish(c);
  }

  void finish(Check& c) {
    if (c.finished) return;
    c.finished = true;
    if (c.deadline) c.deadline->cancel();
    DnsblVerdict v;
    for (size_t i = 0; i < c.answers.size(); ++i) {
      auto& a = c.answers[i];
      // Every zone queried, for the metrics: unanswered = another zone listed first, or the deadline.
      const char* result = !a ? "unanswered" : a->kind == ZoneAnswer::Listed ? "listed"
                                             : a->kind == ZoneAnswer::Error  ? "error"
                                                                             : "not_listed";
      stats::count_labeled("dnsbl_lookups", "zone=" + stats::label_value(c.zones[i].name) + ",result=\"" + result + "\"");
      if (v.kind == DnsblVerdict::Listed) continue;  // the first listing decides
      if (a && a->kind == ZoneAnswer::Listed) {
        v = {DnsblVerdict::Listed, c.zones[i].name, a->answer, ""};
        continue;
      }
      if (a && a->kind == ZoneAnswer::Error && v.kind == DnsblVerdict::NotListed)
        v = {DnsblVerdict::Error, c.zones[i].name, a->answer, a->detail};
    }
    auto done = std::move(c.done);
    done(std::move(v));
  }

  static void on_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
    std::unique_ptr<Query> q(static_cast<Query*>(arg));
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) return;
    RawAnswer raw;
    int ttl = 0;
    if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {  // NXDOMAIN / no A record: not listed
      ttl = negative_ttl(abuf, alen);
    } else if (status != ARES_SUCCESS) {
      raw = {RawAnswer::Error, {}, ares_strerror(status)};
    } else {
      ares_addrttl addrs[16];
      int n = 16;
      if (ares_parse_a_reply(abuf, alen, nullptr, addrs, &n) != ARES_SUCCESS || n <= 0) {
        raw = {RawAnswer::Error, {}, "malformed answer"};
      } else {
        raw.kind = RawAnswer::Addresses;
        ttl = addrs[0].ttl;
        for (int i = 0; i < n; ++i) {
          IpAddress a;
          a.bytes[10] = a.bytes[11] = 0xff;
          std::memcpy(a.bytes.data() + 12, &addrs[i].ipaddr, 4);
          raw.addresses.push_back(a);
          ttl = std::min(ttl, addrs[i].ttl);
        }
      }
    }
    auto* self = q->self;
    if (raw.kind == RawAnswer::Error) spdlog::warn("dnsbl: lookup of {} failed: {}", q->name, raw.detail);
    else if (ttl > 0) self->cache_[q->name] = {raw, Clock::now() + std::chrono::seconds(std::min(ttl, 86400))};
    if (self->cache_.size() > 100000) self->sweep_cache();
    auto waiters = std::move(self->inflight_[q->name]);
    self->inflight_.erase(q->name);
    for (auto& [check, index] : waiters) {
      if (check->finished) continue;
      check->answers[index] = evaluate(check->zones[index], raw);
      if (check->answers[index]->kind == ZoneAnswer::Error)
        spdlog::warn("dnsbl {}: {}", check->zones[index].name, check->answers[index]->detail);
      self->finish_if_ready(*check);
    }
  }

  void sweep_cache() {
    auto now = Clock::now();
    std::erase_if(cache_, [now](auto& kv) { return kv.second.expires <= now; });
  }

  // c-ares tells us which sockets to watch; Asio waits on them.
  static void on_socket_state(void* data, ares_socket_t fd, int readable, int writable) {
    auto* self = static_cast<CaresDnsbl*>(data);
    if (!readable && !writable) {
      if (auto it = self->watches_.find(fd); it != self->watches_.end()) {
        it->second->desc.release();  // c-ares closes the fd itself
        self->watches_.erase(it);
      }
      return;
    }
    auto& w = self->watches_[fd];
    if (!w) w = std::make_shared<Watch>(Watch{asio::posix::stream_descriptor(self->io_, fd)});
    w->read = readable;
    w->write = writable;
    self->arm(fd, w);
  }

  void arm(ares_socket_t fd, const std::shared_ptr<Watch>& w) {
    if (w->read && !w->reading) {
      w->reading = true;
      w->desc.async_wait(asio::posix::stream_descriptor::wait_read, [this, fd, w](boost::system::error_code ec) {
        w->reading = false;
        if (ec || !watches_.count(fd)) return;
        ares_process_fd(channel_, fd, ARES_SOCKET_BAD);
        if (watches_.count(fd)) arm(fd, w);
        rearm_timer();
      });
    }
    if (w->write && !w->writing) {
      w->writing = true;
      w->desc.async_wait(asio::posix::stream_descriptor::wait_write, [this, fd, w](boost::system::error_code ec) {
        w->writing = false;
        if (ec || !watches_.count(fd)) return;
        ares_process_fd(channel_, ARES_SOCKET_BAD, fd);
        if (watches_.count(fd)) arm(fd, w);
        rearm_timer();
      });
    }
  }

  // c-ares' own retransmission/timeout clock.
  void rearm_timer() {
    timeval tv{};
    if (!ares_timeout(channel_, nullptr, &tv)) return;
    timer_.expires_after(std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec));
    timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      rearm_timer();
    });
  }

  CaresConfig cfg_;
  asio::io_context io_{1};
  asio::steady_timer timer_;
  ares_channel channel_ = nullptr;
  std::unordered_map<ares_socket_t, std::shared_ptr<Watch>> watches_;
  std::unordered_map<std::string, CacheEntry> cache_;
  std::unordered_map<std::string, std::vector<std::pair<std::shared_ptr<Check>, size_t>>> inflight_;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<DnsblChecker> make_cares_dnsbl(CaresConfig config) {
  return std::make_unique<CaresDnsbl>(std::move(config));
}

}  // namespace mk::policy
