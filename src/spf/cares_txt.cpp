// cares_txt.cpp — see cares_txt.h.
#include "spf/cares_txt.h"

#include <arpa/nameser.h>
#include <ares.h>
#include <poll.h>

#include <algorithm>
#include <stdexcept>

namespace mk::spf {
namespace {

// The smallest TTL of the answer section (c-ares' TXT parser does not report TTLs).
uint32_t min_answer_ttl(const unsigned char* buf, int len) {
  if (len < NS_HFIXEDSZ) return 0;
  int qd = (buf[4] << 8) | buf[5], an = (buf[6] << 8) | buf[7];
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
  uint32_t best = 0;
  for (int i = 0; i < an; ++i) {
    if (!skip_name() || p + 10 > end) break;
    uint32_t ttl = (uint32_t(p[4]) << 24) | (p[5] << 16) | (p[6] << 8) | p[7];
    int rdlen = (p[8] << 8) | p[9];
    p += 10 + rdlen;
    if (p > end) break;
    best = best ? std::min(best, ttl) : ttl;
  }
  return best;
}

}  // namespace

struct CaresTxt::Impl {
  ares_channel channel = nullptr;
};

CaresTxt::CaresTxt(std::vector<HostPort> servers, int timeout_ms) : impl_(std::make_unique<Impl>()) {
  static const int init = ares_library_init(ARES_LIB_INIT_ALL);
  (void)init;
  ares_options opts{};
  opts.timeout = timeout_ms;
  opts.tries = 2;
  if (ares_init_options(&impl_->channel, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS)
    throw std::runtime_error("c-ares initialisation failed");
  if (!servers.empty()) {
    std::string csv;
    for (auto& s : servers) csv += (csv.empty() ? "" : ",") + s.to_string();
    if (ares_set_servers_ports_csv(impl_->channel, csv.c_str()) != ARES_SUCCESS) {
      ares_destroy(impl_->channel);
      throw std::runtime_error("invalid DNS servers: " + csv);
    }
  }
}

CaresTxt::~CaresTxt() { ares_destroy(impl_->channel); }

TxtAnswer CaresTxt::lookup(const std::string& name) {
  struct Done {
    bool done = false;
    TxtAnswer answer;
  } state;
  ares_query(
      impl_->channel, name.c_str(), ns_c_in, ns_t_txt,
      [](void* arg, int status, int, unsigned char* abuf, int alen) {
        auto* st = static_cast<Done*>(arg);
        st->done = true;
        auto& a = st->answer;
        if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
          a.status = TxtAnswer::NoRecord;
          return;
        }
        if (status != ARES_SUCCESS) {
          a.status = TxtAnswer::Error;
          a.error = ares_strerror(status);
          return;
        }
        ares_txt_ext* txt = nullptr;
        int rc = ares_parse_txt_reply_ext(abuf, alen, &txt);
        if (rc == ARES_ENODATA) {
          a.status = TxtAnswer::NoRecord;
          return;
        }
        if (rc != ARES_SUCCESS) {
          a.status = TxtAnswer::Error;
          a.error = std::string("malformed TXT answer: ") + ares_strerror(rc);
          return;
        }
        // Strings of one record follow each other; record_start marks a new one.
        for (auto* t = txt; t; t = t->next) {
          if (t->record_start || a.texts.empty()) a.texts.emplace_back();
          a.texts.back().append(reinterpret_cast<const char*>(t->txt), t->length);
        }
        ares_free_data(txt);
        a.status = a.texts.empty() ? TxtAnswer::NoRecord : TxtAnswer::Ok;
        a.ttl = min_answer_ttl(abuf, alen);
      },
      &state);
  // Drive the channel until the answer (or c-ares' own timeout) arrives.
  while (!state.done) {
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    int bits = ares_getsock(impl_->channel, socks, ARES_GETSOCK_MAXNUM);
    std::vector<pollfd> fds;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      short ev = 0;
      if (ARES_GETSOCK_READABLE(bits, i)) ev |= POLLIN;
      if (ARES_GETSOCK_WRITABLE(bits, i)) ev |= POLLOUT;
      if (ev) fds.push_back({socks[i], ev, 0});
    }
    timeval tv{}, max{1, 0};
    auto* t = ares_timeout(impl_->channel, &max, &tv);
    int ms = int(t->tv_sec * 1000 + t->tv_usec / 1000);
    int n = ::poll(fds.data(), fds.size(), std::max(ms, 1));
    if (n <= 0) {
      ares_process_fd(impl_->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      continue;
    }
    for (auto& f : fds) {
      ares_socket_t r = (f.revents & (POLLIN | POLLERR | POLLHUP)) ? f.fd : ARES_SOCKET_BAD;
      ares_socket_t w = (f.revents & POLLOUT) ? f.fd : ARES_SOCKET_BAD;
      if (r != ARES_SOCKET_BAD || w != ARES_SOCKET_BAD) ares_process_fd(impl_->channel, r, w);
    }
  }
  return state.answer;
}

}  // namespace mk::spf
