// settings.cpp — the one table of configuration keys, and the INI loader.
//
// The INI syntax is read by parse_text() below (why not inih: see there);
// every error names its own line.
#include "config/settings.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <optional>
#include <cstring>
#include <functional>
#include <map>
#include <sstream>

#include "core/conninfo.h"
#include "core/strings.h"

namespace mk {
namespace {

// One configuration key: where it lives, its default, how to parse and show it.
struct Key {
  const char* section;
  const char* name;
  const char* default_text;  // parsed like file input; "" = empty / computed
  const char* help;
  // Parses `value` into the settings; returns an error text or "".
  std::function<std::string(Settings&, std::string_view)> apply;
  std::function<std::string(const Settings&)> show;
};

template <class Get>
Key uint_key(const char* sec, const char* name, const char* def, uint64_t min, uint64_t max,
             const char* help, Get get) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               uint64_t n = 0;
               auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
               if (ec != std::errc() || p != v.data() + v.size() || v.empty())
                 return "expected a non-negative integer, got '" + std::string(v) + "'";
               if (n < min || n > max)
                 return "value " + std::string(v) + " out of range [" + std::to_string(min) + ".." +
                        std::to_string(max) + "]";
               get(s) = static_cast<std::remove_reference_t<decltype(get(s))>>(n);
               return "";
             },
             [=](const Settings& s) { return std::to_string(get(const_cast<Settings&>(s))); }};
}

template <class Get>
Key string_key(const char* sec, const char* name, const char* def, const char* help, Get get,
               std::vector<std::string> allowed = {}) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               if (!allowed.empty()) {
                 bool found = false;
                 for (auto& a : allowed) found = found || a == v;
                 if (!found) {
                   std::string list;
                   for (auto& a : allowed) list += (list.empty() ? "" : " | ") + a;
                   return "expected one of " + list + ", got '" + std::string(v) + "'";
                 }
               }
               get(s) = std::string(v);
               return "";
             },
             [=](const Settings& s) { return get(const_cast<Settings&>(s)); }};
}

// A secret (a password or token): at least 16 characters when set, and
// never shown by check-config, so that its output can be pasted or logged.
template <class Get>
Key secret_key(const char* sec, const char* name, const char* help, Get get) {
  return Key{sec, name, "", help,
             [=](Settings& s, std::string_view v) -> std::string {
               if (!v.empty() && v.size() < 16) return "too short: use at least 16 characters (e.g. openssl rand -hex 16)";
               get(s) = std::string(v);
               return "";
             },
             [](const Settings&) { return std::string(); }};
}

// A PostgreSQL connection URI. Shown by check-config without its password.
template <class Get>
Key store_url_key(const char* sec, const char* name, const char* help, Get get) {
  return Key{sec, name, "", help,
             [=](Settings& s, std::string_view v) -> std::string {
               if (!v.empty() && !v.starts_with("postgresql://") && !v.starts_with("postgres://"))
                 return "expected a PostgreSQL URI, postgresql://[user[:password]@][host][:port][/dbname][?param=value…]";
               get(s) = std::string(v);
               return "";
             },
             // The password, if the URI holds one, is never shown.
             [=](const Settings& s) { return without_password(get(const_cast<Settings&>(s))); }};
}

// A DNS host name: letters, digits and '-' in non-empty dot-separated labels.
bool valid_hostname(std::string_view h) {
  if (h.empty() || h.size() > 253 || h.front() == '.' || h.back() == '.' || h.find("..") != std::string_view::npos)
    return false;
  for (char c : h)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) return false;
  return true;
}

// A host:port list. `listen` lists need IP addresses (we bind them); port 0 = required.
template <class Get>
Key bool_key(const char* sec, const char* name, const char* def, const char* help, Get get) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               if (v == "true" || v == "yes" || v == "on" || v == "1") get(s) = true;
               else if (v == "false" || v == "no" || v == "off" || v == "0") get(s) = false;
               else return "expected true or false, got '" + std::string(v) + "'";
               return "";
             },
             [=](const Settings& s) { return std::string(get(const_cast<Settings&>(s)) ? "true" : "false"); }};
}

// [milter] smtp: "inet:HOST:PORT" (an IPv6 literal in brackets) or "unix:/PATH", comma-separated.
template <class Get>
Key milters_key(const char* sec, const char* name, const char* help, Get get) {
  return Key{sec, name, "", help,
             [=](Settings& s, std::string_view v) -> std::string {
               std::vector<Settings::MilterEndpoint> out;
               for (auto& item : split_list(v)) {
                 Settings::MilterEndpoint e;
                 e.spec = item;
                 if (item.rfind("unix:", 0) == 0) {
                   e.path = item.substr(5);
                   if (e.path.empty() || e.path[0] != '/' || e.path.size() > 100)
                     return "'" + item + "': unix: needs an absolute socket path (at most 100 characters)";
                 } else if (item.rfind("inet:", 0) == 0 || item.rfind("inet6:", 0) == 0) {
                   std::string rest = item.substr(item.find(':') + 1);
                   auto colon = rest.rfind(':');
                   if (colon == std::string::npos || colon == 0) return "'" + item + "': expected inet:HOST:PORT";
                   e.host = rest.substr(0, colon);
                   if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']')
                     e.host = e.host.substr(1, e.host.size() - 2);
                   auto port = rest.substr(colon + 1);
                   unsigned n = 0;
                   auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
                   if (ec != std::errc() || p != port.data() + port.size() || n == 0 || n > 65535)
                     return "'" + item + "': bad port '" + port + "'";
                   e.port = static_cast<uint16_t>(n);
                   if (!IpAddress::parse(e.host) && !valid_hostname(e.host))
                     return "'" + item + "': bad host '" + e.host + "'";
                 } else {
                   return "'" + item + "': expected inet:HOST:PORT or unix:/PATH";
                 }
                 out.push_back(std::move(e));
               }
               get(s) = std::move(out);
               return "";
             },
             [=](const Settings& s) {
               std::string text;
               for (auto& e : get(const_cast<Settings&>(s))) text += (text.empty() ? "" : ", ") + e.spec;
               return text;
             }};
}

// A comma-separated list of words.
template <class Get>
Key words_key(const char* sec, const char* name, const char* def, const char* help, Get get) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               get(s) = split_list(v);
               return "";
             },
             [=](const Settings& s) {
               std::string text;
               for (auto& w : get(const_cast<Settings&>(s))) text += (text.empty() ? "" : ", ") + w;
               return text;
             }};
}

template <class Get>
Key score_key(const char* sec, const char* name, const char* def, const char* help, Get get) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               char* end = nullptr;
               std::string text(v);
               if (text == "auto") {
                 get(s) = std::nullopt;
                 return "";
               }
               double d = std::strtod(text.c_str(), &end);
               if (text.empty() || *end || !(d >= 0.0 && d <= 1.0))
                 return "expected auto or a score between 0 and 1, got '" + text + "'";
               get(s) = d;
               return "";
             },
             [=](const Settings& s) {
               auto& value = get(const_cast<Settings&>(s));
               if (!value) return std::string("auto");
               char buf[32];
               std::snprintf(buf, sizeof buf, "%g", *value);
               return std::string(buf);
             }};
}

template <class Get>
Key endpoints_key(const char* sec, const char* name, const char* def, uint16_t default_port, bool ip_only,
                  const char* help, Get get) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               std::vector<HostPort> out;
               for (auto& item : split_list(v)) {
                 std::string err;
                 auto hp = parse_host_port(item, default_port, &err);
                 if (!hp) return "'" + item + "': " + err;
                 bool literal = IpAddress::parse(hp->host).has_value();
                 if (ip_only && !literal)
                   return "'" + item + "': expected an IP address and port, as 127.0.0.1:2525 or [::1]:2525";
                 if (!literal && !valid_hostname(hp->host)) return "'" + item + "': invalid host name";
                 out.push_back(*hp);
               }
               get(s) = std::move(out);
               return "";
             },
             [=](const Settings& s) {
               std::string out;
               for (auto& hp : get(const_cast<Settings&>(s))) out += (out.empty() ? "" : ", ") + hp.to_string();
               return out;
             }};
}

template <class Get>
Key domains_key(const char* sec, const char* name, const char* def, const char* help, Get get) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               std::vector<std::string> out;
               for (auto& d : split_list(v)) {
                 // Domains become directory names (the archive): letters, digits,
                 // '-' and non-empty dot-separated labels only.
                 for (char c : d)
                   if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'))
                     return "invalid domain '" + d + "'";
                 if (d.front() == '.' || d.back() == '.' || d.find("..") != std::string::npos)
                   return "invalid domain '" + d + "'";
                 out.push_back(to_lower(d));
               }
               get(s) = std::move(out);
               return "";
             },
             [=](const Settings& s) {
               std::string out;
               for (auto& d : get(const_cast<Settings&>(s))) out += (out.empty() ? "" : ", ") + d;
               return out;
             }};
}

template <class Get>
Key networks_key(const char* sec, const char* name, const char* def, const char* help, Get get) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               std::vector<Cidr> out;
               for (auto& item : split_list(v)) {
                 std::string err;
                 auto c = Cidr::parse(item, &err);
                 if (!c) return "'" + item + "': " + err;
                 out.push_back(*c);
               }
               get(s) = std::move(out);
               return "";
             },
             [=](const Settings& s) {
               std::string out;
               for (auto& c : get(const_cast<Settings&>(s))) out += (out.empty() ? "" : ", ") + c.to_string();
               return out;
             }};
}

// Client networks, where `spf:NAME` entries name an SPF record whose ip4:
// and ip6: mechanisms are resolved at run time (spf/networks.h).
template <class Get, class GetSpf>
Key relay_networks_key(const char* sec, const char* name, const char* def, const char* help, Get get, GetSpf get_spf) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               std::vector<Cidr> out;
               std::vector<std::string> spf;
               for (auto& item : split_list(v)) {
                 if (item.rfind("spf:", 0) == 0) {
                   auto host = to_lower(item.substr(4));
                   if (!host.empty() && host.back() == '.') host.pop_back();
                   if (!valid_dns_name(host)) return "'" + item + "': expected spf:NAME with a DNS name";
                   spf.push_back(host);
                   continue;
                 }
                 std::string err;
                 auto c = Cidr::parse(item, &err);
                 if (!c) return "'" + item + "': " + err + " (or spf:NAME)";
                 out.push_back(*c);
               }
               get(s) = std::move(out);
               get_spf(s) = std::move(spf);
               return "";
             },
             [=](const Settings& s) {
               std::string out;
               for (auto& c : get(const_cast<Settings&>(s))) out += (out.empty() ? "" : ", ") + c.to_string();
               for (auto& n : get_spf(const_cast<Settings&>(s))) out += (out.empty() ? "spf:" : ", spf:") + n;
               return out;
             }};
}

template <class Get>
Key percent_key(const char* sec, const char* name, const char* def, const char* help, Get get) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               auto t = trim(v);
               if (!t.empty() && t.back() == '%') t.remove_suffix(1);
               uint32_t n = 0;
               auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
               if (t.empty() || ec != std::errc() || p != t.data() + t.size() || n > 100)
                 return "expected a percentage 0%..100%, got '" + std::string(v) + "'";
               get(s) = n;
               return "";
             },
             [=](const Settings& s) { return std::to_string(get(const_cast<Settings&>(s))) + "%"; }};
}

template <class Get>
Key zones_key(const char* sec, const char* name, const char* def, const char* help, Get get) {
  return Key{sec, name, def, help,
             [=](Settings& s, std::string_view v) -> std::string {
               std::vector<policy::DnsblZone> out;
               for (auto& item : split_list(v)) {
                 std::string err;
                 auto z = policy::parse_dnsbl_zone(item, &err);
                 if (!z) return err;
                 out.push_back(*z);
               }
               get(s) = std::move(out);
               return "";
             },
             [=](const Settings& s) {
               std::string out;
               for (auto& z : get(const_cast<Settings&>(s))) out += (out.empty() ? "" : ", ") + z.spec;
               return out;
             }};
}

// THE table. Later issues add their sections here.
const std::vector<Key>& key_table() {
  static const std::vector<Key> table = {
      string_key("general", "log_level", "info", "debug | info | warn | error",
                 [](Settings& s) -> auto& { return s.general.log_level; },
                 {"debug", "info", "warn", "error"}),
      string_key("general", "stats_file", "data/stats", "counters for `mailkeep stats`, rewritten every 5 s",
                 [](Settings& s) -> auto& { return s.general.stats_file; }),
      string_key("general", "user", "mailkeep",
                 "started as root, mailkeep binds its ports, then runs as this user (setup.sh creates it; "
                 "running as root needs an explicit 'root')",
                 [](Settings& s) -> auto& { return s.general.user; }),

      endpoints_key("smtp", "listen", "127.0.0.1:2525", 0, true, "comma-separated host:port list, IPv6 as [::1]:2525",
                    [](Settings& s) -> auto& { return s.smtp.listen; }),
      string_key("smtp", "hostname", "", "banner and Received; default: the machine's name",
                 [](Settings& s) -> auto& { return s.smtp.hostname; }),
      uint_key("smtp", "max_message_size", "52428800", 1024, 1ull << 40, "bytes; advertised in SIZE",
               [](Settings& s) -> auto& { return s.smtp.max_message_size; }),
      uint_key("smtp", "max_recipients", "100", 1, 100000, "recipients per transaction",
               [](Settings& s) -> auto& { return s.smtp.max_recipients; }),
      // Postfix's smtpd_recipient_overshoot_limit: a pipelining client sends all its RCPTs
      // before it reads the first 452, so a few hundred extra are normal and must not end the
      // session; beyond this many each further one counts toward max_errors, so a client
      // cannot keep a session busy with endless RCPTs.
      uint_key("smtp", "recipient_overshoot_limit", "1000", 0, 1000000,
               "RCPTs answered 452 past max_recipients before each further one counts toward max_errors",
               [](Settings& s) -> auto& { return s.smtp.recipient_overshoot_limit; }),
      uint_key("smtp", "max_connections", "1000", 1, 1000000, "simultaneous SMTP sessions",
               [](Settings& s) -> auto& { return s.smtp.max_connections; }),
      uint_key("smtp", "timeout", "300", 1, 3600, "seconds per read; RFC 5321 4.5.3.2",
               [](Settings& s) -> auto& { return s.smtp.timeout; }),
      uint_key("smtp", "shutdown_timeout", "30", 0, 3600, "seconds transfers in flight get after SIGTERM",
               [](Settings& s) -> auto& { return s.smtp.shutdown_timeout; }),
      uint_key("smtp", "max_errors", "20", 1, 1000, "bad commands per session before 421",
               [](Settings& s) -> auto& { return s.smtp.max_errors; }),
      // One event loop carries tens of thousands of sessions, and blocking work
      // (fsync, SQLite) runs on its own pool; on a small machine more workers
      // only compete with the peers for the cores (bench/: 2 workers on 2 cores
      // relay ~30 % less than 1). Raise it when TLS or the spam filter make
      // the loop CPU-bound.
      uint_key("smtp", "threads", "1", 0, 256, "worker threads (event loops); 0 = one per core",
               [](Settings& s) -> auto& { return s.smtp.threads; }),
      string_key("smtp", "spool_dir", "data/spool", "where large messages wait (unlinked temporary files)",
                 [](Settings& s) -> auto& { return s.smtp.spool_dir; }),
      bool_key("smtp", "require_tls", "false", "refuse MAIL before STARTTLS (530 5.7.0)",
               [](Settings& s) -> auto& { return s.smtp.require_tls; }),
      string_key("tls", "cert", "", "PEM certificate (with chain) for STARTTLS; re-read on SIGHUP",
                 [](Settings& s) -> auto& { return s.tls.cert; }),
      string_key("tls", "key", "", "PEM private key for STARTTLS; re-read on SIGHUP",
                 [](Settings& s) -> auto& { return s.tls.key; }),

      endpoints_key("delivery", "smarthost", "", 25, false, "upstream host:port list, tried in order like an MX list",
                    [](Settings& s) -> auto& { return s.delivery.smarthost; }),
      string_key("delivery", "outbox", "data/outbox", "Maildir for relayed mail when no smarthost is set",
                 [](Settings& s) -> auto& { return s.delivery.outbox; }),
      uint_key("delivery", "connect_timeout", "30", 1, 600, "seconds to connect and read the upstream's banner",
               [](Settings& s) -> auto& { return s.delivery.connect_timeout; }),
      uint_key("delivery", "timeout", "600", 1, 3600, "seconds per upstream reply; RFC 5321 4.5.3.2",
               [](Settings& s) -> auto& { return s.delivery.timeout; }),
      string_key("delivery", "tls", "opportunistic", "STARTTLS to the upstream: opportunistic | required | off",
                 [](Settings& s) -> auto& { return s.delivery.tls; }, {"opportunistic", "required", "off"}),
      string_key("delivery", "ca_file", "", "CA certificates that sign the upstream's (tls = required); default: system",
                 [](Settings& s) -> auto& { return s.delivery.ca_file; }),
      string_key("delivery", "tls_name", "", "name the upstream certificate must carry; default: the host as configured",
                 [](Settings& s) -> auto& { return s.delivery.tls_name; }),
      string_key("delivery", "helo_name", "", "EHLO name sent upstream; default: [smtp] hostname",
                 [](Settings& s) -> auto& { return s.delivery.helo_name; }),

      domains_key("relay", "domains", "", "recipient domains accepted from anyone",
                  [](Settings& s) -> auto& { return s.relay.domains; }),
      relay_networks_key("relay", "relay_from", "127.0.0.0/8",
                         "client networks allowed to relay to any domain; spf:NAME adds the ip4/ip6 networks of "
                         "NAME's SPF record (include/redirect followed, refreshed at its TTL, at most hourly)",
                         [](Settings& s) -> auto& { return s.relay.relay_from; },
                         [](Settings& s) -> auto& { return s.relay.relay_from_spf; }),

      domains_key("backup", "domains", "", "domains whose mail is archived (inbound and outbound)",
                  [](Settings& s) -> auto& { return s.backup.domains; }),
      string_key("backup", "accounts", "accounts.txt",
                 "file of archived accounts, one per line: 'alice', 'alice: sales, info' (addresses of alice in "
                 "every backup domain) or 'alice@example.org: sales@example.com'; # comments. "
                 "Read with [directory] provider = file",
                 [](Settings& s) -> auto& { return s.backup.accounts; }),
      string_key("backup", "archive", "data/archive", "Maildir root: <archive>/<domain>/<localpart>/",
                 [](Settings& s) -> auto& { return s.backup.archive; }),
      endpoints_key("backup", "upstream", "", 25, false,
                    "the provider's inbound servers, tried in order; default: [delivery] smarthost",
                    [](Settings& s) -> auto& { return s.backup.upstream; }),
      relay_networks_key("backup", "relay_from", "",
                         "the provider's outbound relays (their mail goes to the smarthost); e.g. "
                         "spf:_spf.google.com for the networks of the provider's SPF record",
                         [](Settings& s) -> auto& { return s.backup.relay_from; },
                         [](Settings& s) -> auto& { return s.backup.relay_from_spf; }),
      uint_key("backup", "reload_interval", "2", 1, 3600, "seconds between checks of the accounts file for changes",
               [](Settings& s) -> auto& { return s.backup.reload_interval; }),
      uint_key("backup", "dedupe_days", "30", 1, 3650, "days a Sent copy is remembered to drop its duplicates",
               [](Settings& s) -> auto& { return s.backup.dedupe_days; }),
      bool_key("backup", "standalone", "false",
               "the provider is gone: mail for archived accounts is delivered into the archive, with no upstream; "
               "taken on SIGHUP",
               [](Settings& s) -> auto& { return s.backup.standalone; }),
      string_key("backup", "replay", "data/replay",
                 "Maildir recording every message delivered while standalone (mailkeep backup replay)",
                 [](Settings& s) -> auto& { return s.backup.replay; }),

      string_key("directory", "provider", "file",
                 "where the accounts come from: file ([backup] accounts), google (Workspace Directory API) or "
                 "microsoft (Graph); google and microsoft write the synced list to [directory] cache",
                 [](Settings& s) -> auto& { return s.directory.provider; }, {"file", "google", "microsoft"}),
      uint_key("directory", "interval", "3600", 1, 604800, "seconds between directory syncs",
               [](Settings& s) -> auto& { return s.directory.interval; }),
      string_key("directory", "credentials", "",
                 "google: the service account's key file (JSON), with domain-wide delegation of the read-only "
                 "directory scopes",
                 [](Settings& s) -> auto& { return s.directory.credentials; }),
      string_key("directory", "admin", "", "google: the administrator the service account acts for (JWT sub)",
                 [](Settings& s) -> auto& { return s.directory.admin; }),
      string_key("directory", "customer", "my_customer", "google: the customer whose users and groups are listed",
                 [](Settings& s) -> auto& { return s.directory.customer; }),
      string_key("directory", "tenant", "", "microsoft: the tenant (directory) id",
                 [](Settings& s) -> auto& { return s.directory.tenant; }),
      string_key("directory", "client_id", "", "microsoft: the application (client) id",
                 [](Settings& s) -> auto& { return s.directory.client_id; }),
      string_key("directory", "client_secret_file", "", "microsoft: file holding the client secret",
                 [](Settings& s) -> auto& { return s.directory.client_secret_file; }),
      string_key("directory", "token_url", "",
                 "override of the OAuth token endpoint, for tests and private clouds (google default: the "
                 "credentials' token_uri; microsoft: https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token)",
                 [](Settings& s) -> auto& { return s.directory.token_url; }),
      string_key("directory", "api_url", "",
                 "override of the API base URL, for tests and private clouds (google default "
                 "https://admin.googleapis.com; microsoft https://graph.microsoft.com)",
                 [](Settings& s) -> auto& { return s.directory.api_url; }),
      string_key("directory", "ca_file", "", "CA certificates for the directory's HTTPS; empty: the system store",
                 [](Settings& s) -> auto& { return s.directory.ca_file; }),
      percent_key("directory", "max_removal", "10%",
                  "a sync that would remove more than this share of the accounts is held until "
                  "mailkeep accounts sync --force",
                  [](Settings& s) -> auto& { return s.directory.max_removal_percent; }),
      string_key("directory", "cache", "data/directory/accounts",
                 "the synced account list (accounts-file format), replaced atomically; read at start",
                 [](Settings& s) -> auto& { return s.directory.cache; }),
      uint_key("directory", "timeout", "30", 1, 600, "seconds each directory HTTPS request may take",
               [](Settings& s) -> auto& { return s.directory.timeout; }),
      uint_key("directory", "retries", "4", 0, 10,
               "retries of a directory request on 429, 5xx and network errors (backoff 1 s, 2 s, 4 s ..., "
               "or the server's Retry-After)",
               [](Settings& s) -> auto& { return s.directory.retries; }),

      string_key("users", "passwd", "data/users.passwd",
                 "passwd-file of the archived accounts' passwords (mailkeep user passwd); Dovecot reads it as it is",
                 [](Settings& s) -> auto& { return s.users.passwd; }),
      string_key("users", "group", "dovecot", "group that may read the passwd-file (Dovecot's auth process); "
                 "empty or missing: [general] user's group",
                 [](Settings& s) -> auto& { return s.users.group; }),

      endpoints_key("submission", "listen", "", 587, true, "submission listener(s), STARTTLS (RFC 6409); empty = off",
                    [](Settings& s) -> auto& { return s.submission.listen; }),
      endpoints_key("submission", "tls_listen", "", 465, true, "submission listener(s) with implicit TLS (RFC 8314); empty = off",
                    [](Settings& s) -> auto& { return s.submission.tls_listen; }),
      networks_key("submission", "auth_without_tls_from", "127.0.0.1/32, ::1/128",
                   "clients that may AUTH before STARTTLS (everyone else gets 538 5.7.11)",
                   [](Settings& s) -> auto& { return s.submission.auth_without_tls_from; }),
      uint_key("submission", "max_auth_failures", "10", 1, 1000000,
               "failed logins per client IP, and per account, before a lockout",
               [](Settings& s) -> auto& { return s.submission.max_auth_failures; }),
      uint_key("submission", "auth_lockout", "900", 1, 86400,
               "seconds the failures are counted over, and a lockout lasts (454 4.7.0)",
               [](Settings& s) -> auto& { return s.submission.auth_lockout; }),

      bool_key("index", "enabled", "true", "serve indexes each archive copy right after it reaches new/",
               [](Settings& s) -> auto& { return s.index.enabled; }),
      string_key("index", "path", "data/index", "full-text index, one Xapian database per account: <path>/<domain>/<localpart>/",
                 [](Settings& s) -> auto& { return s.index.path; }),
      string_key("index", "language", "english", "stemming language of the index (Xapian's stemmers); none = no stemming",
                 [](Settings& s) -> auto& { return s.index.language; }),
      uint_key("index", "scan_interval", "60", 1, 86400, "seconds between rescans of the Maildirs for changes made by others",
               [](Settings& s) -> auto& { return s.index.scan_interval; }),

      string_key("store", "path", "data/mailkeep.db", "SQLite database (aliases), when [store] url is empty",
                 [](Settings& s) -> auto& { return s.store.path; }),
      store_url_key("store", "url",
                    "PostgreSQL connection URI (postgresql://user@host/db): aliases and their use counts live "
                    "there, shared by every gateway; empty: the SQLite file at [store] path",
                    [](Settings& s) -> auto& { return s.store.url; }),
      uint_key("store", "connections", "8", 1, 256, "PostgreSQL connections per gateway (a bounded pool)",
               [](Settings& s) -> auto& { return s.store.connections; }),

      domains_key("aliases", "domains", "alias.localhost", "domains whose local parts are temporary aliases",
                  [](Settings& s) -> auto& { return s.aliases.domains; }),
      uint_key("aliases", "default_days", "7", 1, 3650, "validity when a request names no days",
               [](Settings& s) -> auto& { return s.aliases.default_days; }),
      uint_key("aliases", "max_days", "60", 1, 3650, "longest validity a request may ask for",
               [](Settings& s) -> auto& { return s.aliases.max_days; }),
      uint_key("aliases", "max_usage", "100", 1, 1000000, "most messages a request may ask for",
               [](Settings& s) -> auto& { return s.aliases.max_usage; }),
      uint_key("aliases", "create_interval", "30", 0, 86400, "seconds between alias creations per client IP; 0 = off",
               [](Settings& s) -> auto& { return s.aliases.create_interval; }),
      uint_key("aliases", "purge_interval", "3600", 60, 86400, "seconds between removals of expired and used-up aliases",
               [](Settings& s) -> auto& { return s.aliases.purge_interval; }),
      uint_key("aliases", "hold_seconds", "3600", 2, 86400,
               "a use held at RCPT that no 250 or failure finished by then (its gateway died) is given back",
               [](Settings& s) -> auto& { return s.aliases.hold_seconds; }),
      string_key("aliases", "srs_domain", "",
                 "domain of the SRS envelope senders of forwarded alias mail (SRS0=…@srs_domain), and of the "
                 "bounces that come back to them; empty: senders are not rewritten",
                 [](Settings& s) -> auto& { return s.aliases.srs_domain; }),
      string_key("aliases", "srs_secret_file", "",
                 "file of SRS secrets, one per line (postsrsd's format): the first signs, every one verifies",
                 [](Settings& s) -> auto& { return s.aliases.srs_secret_file; }),
      uint_key("aliases", "srs_max_age", "21", 1, 1023, "days an SRS address stays valid for bounces",
               [](Settings& s) -> auto& { return s.aliases.srs_max_age; }),

      milters_key("milter", "smtp",
                  "milters every SMTP message passes, in order: inet:HOST:PORT or unix:/PATH, comma-separated "
                  "(rspamd, OpenDKIM, OpenDMARC, spamass-milter …); empty: none",
                  [](Settings& s) -> auto& { return s.milter.smtp; }),
      string_key("milter", "default_action", "tempfail",
                 "what a milter that is down, times out or breaks the protocol means: tempfail (451/421) | "
                 "accept (skip it) | reject (550)",
                 [](Settings& s) -> auto& { return s.milter.default_action; }, {"tempfail", "accept", "reject"}),
      uint_key("milter", "connect_timeout", "30", 1, 3600, "seconds to connect to a milter and negotiate",
               [](Settings& s) -> auto& { return s.milter.connect_timeout; }),
      uint_key("milter", "command_timeout", "30", 1, 3600, "seconds a milter may take to answer a command",
               [](Settings& s) -> auto& { return s.milter.command_timeout; }),
      uint_key("milter", "content_timeout", "300", 1, 3600,
               "seconds a milter may take for the message content (headers, body, end of message)",
               [](Settings& s) -> auto& { return s.milter.content_timeout; }),
      words_key("milter", "macros",
                "j, {daemon_name}, {daemon_addr}, v, _, {tls_version}, {cipher}, {cipher_bits}, {cert_subject}, "
                "{cert_issuer}, i, {auth_type}, {auth_authen}, {auth_author}, {mail_addr}, {mail_host}, "
                "{mail_mailer}, {rcpt_addr}, {rcpt_host}, {rcpt_mailer}",
                "macros sent to milters, each at its stage (Postfix's default set); a milter's own request "
                "(SMFIF_SETSYMLIST) wins",
                [](Settings& s) -> auto& { return s.milter.macros; }),
      bool_key("milter", "outbound", "false",
               "milters also see (and judge) mail from [relay]/[backup] relay_from and submission clients "
               "(OpenDKIM signing)",
               [](Settings& s) -> auto& { return s.milter.outbound; }),
      string_key("milter", "quarantine", "data/quarantine",
                 "Maildir for mail a milter quarantines that has no archive copy (archived mail goes to .Junk)",
                 [](Settings& s) -> auto& { return s.milter.quarantine; }),

      zones_key("dnsbl", "smtp_zones", "", "DNSBL zones checked at SMTP connect: zone[=127.0.0.[2..11]], ...",
                [](Settings& s) -> auto& { return s.dnsbl.smtp_zones; }),
      zones_key("dnsbl", "http_zones", "", "DNSBL zones checked before alias creation",
                [](Settings& s) -> auto& { return s.dnsbl.http_zones; }),
      endpoints_key("dnsbl", "resolver", "", 53, false, "DNS server(s) host:port; default /etc/resolv.conf",
                    [](Settings& s) -> auto& { return s.dnsbl.resolver; }),
      uint_key("dnsbl", "timeout_ms", "2000", 50, 60000, "per-query timeout",
               [](Settings& s) -> auto& { return s.dnsbl.timeout_ms; }),
      string_key("dnsbl", "on_error", "accept", "what a DNS failure means: accept | tempfail",
                 [](Settings& s) -> auto& { return s.dnsbl.on_error; }, {"accept", "tempfail"}),
      networks_key("dnsbl", "allow", "127.0.0.1/32, ::1/128", "clients never checked (and exempt from [limits])",
                   [](Settings& s) -> auto& { return s.dnsbl.allow; }),

      uint_key("limits", "smtp_connections_per_ip", "50", 0, 1000000,
               "simultaneous SMTP sessions per client IP (IPv6 per /64); 0 = off",
               [](Settings& s) -> auto& { return s.limits.smtp_connections_per_ip; }),
      uint_key("limits", "smtp_messages_per_ip_per_minute", "0", 0, 1000000,
               "transactions per client IP per minute; 0 = off",
               [](Settings& s) -> auto& { return s.limits.smtp_messages_per_ip_per_minute; }),

      bool_key("spam", "enabled", "false", "score inbound mail at the end of DATA",
               [](Settings& s) -> auto& { return s.spam.enabled; }),
      string_key("spam", "model", "data/spam.model", "the classifier's model file (mailkeep spam train)",
                 [](Settings& s) -> auto& { return s.spam.model; }),
      score_key("spam", "tag_score", "auto",
                "X-Spam-Status: Unsure at or above this score; auto: the cutoff spam train chose (0.5 without one)",
                [](Settings& s) -> auto& { return s.spam.tag_score; }),
      score_key("spam", "reject_score", "auto",
                "spam at or above this score: X-Spam-Status: Yes, .Junk, 550 5.7.1 for alias domains; "
                "auto: the cutoff spam train chose (0.99 without one)",
                [](Settings& s) -> auto& { return s.spam.reject_score; }),
      string_key("spam", "history", "data/spam-history.db",
                 "SQLite file of verdicts and their features (the /spam page, mailkeep spam reclassify)",
                 [](Settings& s) -> auto& { return s.spam.history; }),
      uint_key("spam", "signature_days", "14", 1, 3650, "days a message's features are kept for reclassification",
               [](Settings& s) -> auto& { return s.spam.signature_days; }),
      uint_key("spam", "history_days", "90", 1, 3650, "days verdicts are kept in the history (and counted by spam stats)",
               [](Settings& s) -> auto& { return s.spam.history_days; }),

      endpoints_key("http", "listen", "127.0.0.1:8080", 0, true, "HTTP listener(s) for the web page and API; empty = off",
                    [](Settings& s) -> auto& { return s.http.listen; }),
      networks_key("http", "trusted_proxies", "", "proxies whose X-Forwarded-For is believed",
                   [](Settings& s) -> auto& { return s.http.trusted_proxies; }),
      uint_key("http", "max_body", "4096", 256, 1048576, "largest request body accepted (bytes)",
               [](Settings& s) -> auto& { return s.http.max_body; }),
      string_key("http", "cert", "", "PEM certificate: the HTTP listener speaks HTTPS when cert and key are set; re-read on SIGHUP",
                 [](Settings& s) -> auto& { return s.http.cert; }),
      string_key("http", "key", "", "PEM private key for HTTPS",
                 [](Settings& s) -> auto& { return s.http.key; }),
      bool_key("http", "mail_reader", "true",
               "the web view's API (/api/v1/mail/) for archived accounts, with [users] passwords; needs HTTPS off loopback",
               [](Settings& s) -> auto& { return s.http.mail_reader; }),
      secret_key("http", "admin_token", "the operator's token for /spam (HTTP Basic password or Bearer token); "
                 "empty = operator pages off; never shown",
                 [](Settings& s) -> auto& { return s.http.admin_token; }),

      endpoints_key("metrics", "listen", "", 9725, true,
                    "Prometheus endpoint (GET /metrics, text format 0.0.4), e.g. 127.0.0.1:9725; empty = off",
                    [](Settings& s) -> auto& { return s.metrics.listen; }),
  };
  return table;
}

const Key* find_key(std::string_view section, std::string_view name) {
  for (auto& k : key_table())
    if (section == k.section && name == k.name) return &k;
  return nullptr;
}

bool known_section(std::string_view section) {
  for (auto& k : key_table())
    if (section == k.section) return true;
  return false;
}

std::string machine_hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

// Fills in values whose default depends on other keys or on the machine.
void finish(Settings& s) {
  if (s.smtp.hostname.empty()) s.smtp.hostname = machine_hostname();
  if (s.delivery.helo_name.empty()) s.delivery.helo_name = s.smtp.hostname;
}

// The INI syntax, read here rather than with inih: Debian's libinih is built
// with a 200-byte line limit and splits longer lines silently (fuzz_ini found
// a long `smtp_zones` list turning into a second key), and a list of domains
// or networks easily passes 200 characters. The syntax is inih's: [section],
// key = value (or key: value), comment lines starting with ; or #, inline
// comments after " ;", and indented lines continuing the previous key's
// list (each such line is one more item).
struct ParseState {
  std::string name;
  ConfigResult* result = nullptr;
  std::map<std::string, int> seen;  // "section.key" -> line
};

void apply_key(ParseState& st, const std::string& section, const std::string& name, const std::string& value, int line) {
  auto where = st.name + ":" + std::to_string(line) + ": [" + section + "] " + name + ": ";
  const Key* key = find_key(section, name);
  if (!key) {
    st.result->errors.push_back(where + "unknown key");
    return;
  }
  auto id = section + "." + name;
  if (auto it = st.seen.find(id); it != st.seen.end()) {
    st.result->errors.push_back(where + "set twice (first on line " + std::to_string(it->second) + ")");
    return;
  }
  st.seen[id] = line;
  auto v = trim(value);
  // What check-config prints must read back the same (found by fuzz_ini):
  // no control characters, and no leading ';' or '#', which read as a comment.
  if (std::any_of(v.begin(), v.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
    st.result->errors.push_back(where + "control characters are not allowed in a value");
    return;
  }
  if (!v.empty() && (v.front() == ';' || v.front() == '#')) {
    st.result->errors.push_back(where + "a value cannot start with ';' or '#' (that reads as a comment)");
    return;
  }
  auto err = key->apply(st.result->settings, v);
  if (!err.empty()) st.result->errors.push_back(where + err);
}

// A value without its inline comment (" ;" or "\t;" starts one).
std::string_view strip_inline_comment(std::string_view v) {
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] == ';' && (v[i - 1] == ' ' || v[i - 1] == '\t')) return trim(v.substr(0, i));
  return trim(v);
}

void parse_text(ParseState& st, std::string_view text) {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // UTF-8 BOM
  std::string section;
  bool section_known = false;
  struct Pending {
    std::string name, value;
    int line = 0;
  };
  std::optional<Pending> pending;
  auto commit = [&] {
    if (pending && section_known) apply_key(st, section, pending->name, pending->value, pending->line);
    pending.reset();
  };
  int line_no = 0;
  while (!text.empty()) {
    ++line_no;
    auto nl = text.find('\n');
    std::string_view raw = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    bool indented = !raw.empty() && (raw.front() == ' ' || raw.front() == '\t');
    auto line = trim(raw);
    if (line.empty() || line.front() == ';' || line.front() == '#') continue;
    if (indented && pending) {  // an indented line continues the previous key's list
      pending->value += ", ";
      pending->value += strip_inline_comment(line);
      continue;
    }
    commit();
    auto syntax_error = [&](const char* what) {
      st.result->errors.push_back(st.name + ":" + std::to_string(line_no) + ": syntax error (" + what + ")");
    };
    if (line.front() == '[') {
      auto close = line.find(']');
      if (close == std::string_view::npos) {
        syntax_error("expected [section]");
        section_known = false;
        continue;
      }
      if (!strip_inline_comment(line.substr(close + 1)).empty()) syntax_error("text after [section]");
      section = std::string(trim(line.substr(1, close - 1)));
      section_known = known_section(section);
      if (!section_known)
        st.result->errors.push_back(st.name + ":" + std::to_string(line_no) + ": unknown section [" + section + "]");
      continue;
    }
    auto sep = line.find_first_of("=:");
    if (sep == std::string_view::npos || sep == 0) {
      syntax_error("expected key = value");
      continue;
    }
    if (section.empty()) {
      syntax_error("key outside a [section]");
      continue;
    }
    pending = Pending{std::string(trim(line.substr(0, sep))), std::string(strip_inline_comment(line.substr(sep + 1))),
                      line_no};
  }
  commit();
}

void parse_into(ParseState& st, std::string_view text) {
  parse_text(st, text);
  // Keys that only make sense together.
  auto& s = st.result->settings;
  auto line_of = [&](const char* key) {
    auto it = st.seen.find(key);
    return std::to_string(it == st.seen.end() ? 0 : it->second);
  };
  if (s.tls.cert.empty() != s.tls.key.empty())
    st.result->errors.push_back(st.name + ":" + line_of(s.tls.cert.empty() ? "tls.key" : "tls.cert") +
                                ": [tls] cert and key must be set together");
  if (s.http.cert.empty() != s.http.key.empty())
    st.result->errors.push_back(st.name + ":" + line_of(s.http.cert.empty() ? "http.key" : "http.cert") +
                                ": [http] cert and key must be set together");
  if (s.smtp.require_tls && s.tls.cert.empty())
    st.result->errors.push_back(st.name + ":" + line_of("smtp.require_tls") +
                                ": [smtp] require_tls: needs [tls] cert and key");
  if (!s.submission.tls_listen.empty() && s.tls.cert.empty())
    st.result->errors.push_back(st.name + ":" + line_of("submission.tls_listen") +
                                ": [submission] tls_listen: needs [tls] cert and key");
  if ((!s.submission.listen.empty() || !s.submission.tls_listen.empty()) && s.backup.domains.empty())
    st.result->errors.push_back(st.name + ":" + line_of(s.submission.listen.empty() ? "submission.tls_listen"
                                                                                   : "submission.listen") +
                                ": [submission]: needs [backup] domains (the accounts that may log in)");
  if (!s.aliases.srs_domain.empty()) {
    s.aliases.srs_domain = to_lower(s.aliases.srs_domain);
    if (!valid_dns_name(s.aliases.srs_domain))
      st.result->errors.push_back(st.name + ":" + line_of("aliases.srs_domain") + ": [aliases] srs_domain: '" +
                                  s.aliases.srs_domain + "' is not a domain name");
    if (s.aliases.srs_secret_file.empty())
      st.result->errors.push_back(st.name + ":" + line_of("aliases.srs_domain") +
                                  ": [aliases] srs_secret_file: needed with srs_domain (the SRS secrets)");
  }
  auto& d = s.directory;
  auto need = [&](bool missing, const char* key, const char* what) {
    if (missing)
      st.result->errors.push_back(st.name + ":" + line_of("directory.provider") + ": [directory] " + key +
                                  ": needed with provider = " + d.provider + " (" + what + ")");
  };
  if (d.provider == "google") {
    need(d.credentials.empty(), "credentials", "the service account's key file");
    need(d.admin.empty(), "admin", "the administrator to act for");
  } else if (d.provider == "microsoft") {
    need(d.tenant.empty(), "tenant", "the tenant id");
    need(d.client_id.empty(), "client_id", "the application id");
    need(d.client_secret_file.empty(), "client_secret_file", "the file with the client secret");
  }
  if (d.provider != "file" && s.backup.domains.empty())
    st.result->errors.push_back(st.name + ":" + line_of("directory.provider") +
                                ": [directory] provider: needs [backup] domains (the addresses kept)");
  finish(st.result->settings);
}

}  // namespace

const std::string& accounts_file(const Settings& s) {
  return s.directory.provider == "file" ? s.backup.accounts : s.directory.cache;
}

Settings default_settings() {
  Settings s;
  for (auto& k : key_table()) {
    auto err = k.apply(s, k.default_text);
    if (!err.empty()) throw std::logic_error(std::string("bad default for ") + k.section + "." + k.name + ": " + err);
  }
  finish(s);
  return s;
}

ConfigResult load_settings_text(const std::string& text, const std::string& name) {
  ConfigResult r;
  r.settings = default_settings();
  r.settings.smtp.hostname.clear();
  r.settings.delivery.helo_name.clear();
  ParseState st;
  st.name = name;
  st.result = &r;
  parse_into(st, text);
  return r;
}

ConfigResult load_settings_file(const std::string& path) {
  ConfigResult r;
  r.settings = default_settings();
  r.settings.smtp.hostname.clear();
  r.settings.delivery.helo_name.clear();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    r.errors.push_back(path + ":0: cannot read file: " + std::strerror(errno));
    return r;
  }
  std::string text;
  char buf[8192];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, size_t(in.gcount()));
    if (text.size() > 4 * 1024 * 1024) {
      r.errors.push_back(path + ":0: file too large for a configuration (over 4 MB)");
      return r;
    }
  }
  ParseState st;
  st.name = path;
  st.result = &r;
  parse_into(st, text);
  return r;
}

std::string format_settings(const Settings& s) {
  std::ostringstream out;
  std::string section;
  for (auto& k : key_table()) {
    if (section != k.section) {
      if (!section.empty()) out << "\n";
      section = k.section;
      out << "[" << section << "]\n";
    }
    out << k.name << " = " << k.show(s) << "\n";
  }
  return out.str();
}

std::vector<KeyDoc> describe_keys() {
  std::vector<KeyDoc> out;
  for (auto& k : key_table()) out.push_back({k.section, k.name, k.default_text, k.help});
  return out;
}

}  // namespace mk
