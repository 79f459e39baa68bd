// settings.h — mailkeep's configuration: typed settings, and the loader for
// the INI file (`mailkeep serve -c FILE`).
//
// Every key is declared once, in the table in settings.cpp, with its default
// and bounds; the loader, `check-config` and the docs all come from that table.
// Unknown sections/keys, malformed values and unreadable files are errors
// naming file, line and key.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/net.h"
#include "policy/dnsbl_zone.h"

namespace mk {

struct Settings {
  struct General {
    std::string log_level;
    std::string user;        // run as this user after binding (when started as root)
    std::string stats_file;  // counters for `mailkeep stats`
  } general;
  struct Smtp {
    std::vector<HostPort> listen;
    std::string hostname;  // banner and Received
    uint64_t max_message_size = 0;
    uint32_t max_recipients = 0;
    uint32_t recipient_overshoot_limit = 0;  // 452s past max_recipients before each counts as an error
    uint32_t max_connections = 0;
    uint32_t timeout = 0;           // seconds per read, RFC 5321 4.5.3.2
    uint32_t shutdown_timeout = 0;  // seconds transfers in flight get after SIGTERM
    uint32_t max_errors = 0;        // bad commands before 421
    uint32_t threads = 0;           // worker event loops; 0 = one per core
    std::string spool_dir;          // messages larger than memory wait here (unlinked files)
    bool require_tls = false;       // MAIL only after STARTTLS (RFC 3207 4)
  } smtp;
  struct Tls {
    std::string cert, key;  // PEM (cert with chain); both empty: no STARTTLS
  } tls;
  struct Delivery {
    std::vector<HostPort> smarthost;  // tried in order
    std::string outbox;               // Maildir used when no smarthost is set
    uint32_t connect_timeout = 0;
    uint32_t timeout = 0;
    std::string helo_name;  // EHLO name towards upstream; default smtp.hostname
    std::string tls;        // opportunistic | required | off
    std::string ca_file;    // CAs for tls = required; empty: the system store
    std::string tls_name;   // the name the upstream's certificate must carry; empty: the host as configured
  } delivery;
  struct Relay {
    std::vector<std::string> domains;  // lower-cased
    std::vector<Cidr> relay_from;
    std::vector<std::string> relay_from_spf;  // `spf:NAME` entries: networks from NAME's SPF record
  } relay;
  struct Backup {
    std::vector<std::string> domains;  // lower-cased
    std::string accounts;              // file: one local part per line
    std::string archive;               // Maildir root: <archive>/<domain>/<localpart>/
    std::vector<HostPort> upstream;    // the provider's inbound servers; empty = [delivery] smarthost
    std::vector<Cidr> relay_from;      // the provider's outbound relays
    std::vector<std::string> relay_from_spf;  // `spf:_spf.google.com`: the relays from an SPF record
    uint32_t reload_interval = 0;      // seconds between checks of the accounts file
    uint32_t dedupe_days = 0;          // how long a Sent copy is remembered for deduplication
    bool standalone = false;           // deliver into the archive, no upstream (SIGHUP switches)
    std::string replay;                // Maildir of what arrived while standalone
  } backup;
  struct Directory {
    std::string provider;  // file | google | microsoft
    uint32_t interval = 0;  // seconds between syncs
    std::string credentials, admin, customer;            // google
    std::string tenant, client_id, client_secret_file;   // microsoft
    std::string token_url, api_url, ca_file;              // overrides (tests, private clouds)
    uint32_t max_removal_percent = 0;  // a sync removing more than this share of accounts is held
    std::string cache;                 // the synced list, in the accounts-file format
    uint32_t timeout = 0;              // seconds per HTTP request
    uint32_t retries = 0;              // on 429, 5xx and network errors
  } directory;
  struct Users {
    std::string passwd;  // Dovecot passwd-file with the accounts' password hashes
    std::string group;   // may read it
  } users;
  struct Submission {
    std::vector<HostPort> listen;      // STARTTLS (587)
    std::vector<HostPort> tls_listen;  // implicit TLS (465)
    std::vector<Cidr> auth_without_tls_from;
    uint32_t max_auth_failures = 0;
    uint32_t auth_lockout = 0;  // seconds
  } submission;
  struct Index {
    bool enabled = true;        // serve indexes archive copies as they are published
    std::string path;           // <path>/<domain>/<localpart>/: one Xapian database per account
    std::string language;       // stemmer; "none" = no stemming
    uint32_t scan_interval = 0; // seconds between rescans for outside changes
  } index;
  struct Store {
    std::string path;  // SQLite database file
    std::string url;   // PostgreSQL connection URI; set: aliases live there (store/pg.h)
    uint32_t connections = 0;  // PostgreSQL connections per gateway
  } store;
  struct Aliases {
    std::vector<std::string> domains;  // lower-cased
    uint32_t default_days = 0;
    uint32_t max_days = 0;
    uint32_t max_usage = 0;        // cap on a requested max_usage
    uint32_t create_interval = 0;  // seconds between creations per client IP; 0 = off
    uint32_t purge_interval = 0;   // seconds between purges of dead aliases
    uint32_t hold_seconds = 0;     // a use held at RCPT and not finished by then is given back
    // SRS for forwarded alias mail (srs/srs.h); empty domain: senders are not rewritten.
    std::string srs_domain;       // lower-cased
    std::string srs_secret_file;  // one secret per line; the first signs
    uint32_t srs_max_age = 0;     // days a bounce address stays valid
  } aliases;
  struct Dnsbl {
    std::vector<policy::DnsblZone> smtp_zones;
    std::vector<policy::DnsblZone> http_zones;
    std::vector<HostPort> resolver;  // empty: /etc/resolv.conf
    uint32_t timeout_ms = 0;
    std::string on_error;  // accept | tempfail
    std::vector<Cidr> allow;
  } dnsbl;
  struct Limits {
    uint32_t smtp_connections_per_ip = 0;          // simultaneous; 0 = off
    uint32_t smtp_messages_per_ip_per_minute = 0;  // 0 = off
  } limits;
  // Milters ([milter] smtp): the pre-acceptance stage beside DNSBL and spam (milter/chain.h).
  struct MilterEndpoint {
    std::string spec;   // as configured: "inet:127.0.0.1:11332", "unix:/run/opendkim/opendkim.sock"
    std::string host;   // inet: a name or an address
    uint16_t port = 0;  // inet
    std::string path;   // unix
    bool operator==(const MilterEndpoint&) const = default;
  };
  struct Milter {
    std::vector<MilterEndpoint> smtp;  // run in order; empty: no milters
    std::string default_action;        // tempfail | accept | reject: a milter down or timing out
    uint32_t connect_timeout = 0, command_timeout = 0, content_timeout = 0;  // seconds
    std::vector<std::string> macros;   // names sent at their Postfix stage ("j", "{daemon_name}", …)
    bool outbound = false;             // also for relay_from and submission clients
    std::string quarantine;            // Maildir for quarantined mail that has no archive copy
  } milter;
  struct Spam {
    bool enabled = false;
    std::string model;        // model file
    // nullopt: `auto`, the cutoffs `mailkeep spam train` stored in the model (spam/calibration.h).
    std::optional<double> tag_score;     // X-Spam-Status: Unsure at or above
    std::optional<double> reject_score;  // spam: Yes, .Junk, 550 5.7.1 for alias domains, at or above
    std::string history;      // SQLite file of verdicts and features
    uint32_t signature_days = 0;  // features kept for reclassification
    uint32_t history_days = 0;    // verdict rows kept
  } spam;
  struct Http {
    std::vector<HostPort> listen;  // empty: no HTTP listener
    std::vector<Cidr> trusted_proxies;
    uint32_t max_body = 0;
    std::string cert, key;  // HTTPS when both are set
    std::string admin_token;  // the operator's secret for /spam; empty = off
    bool mail_reader = true;  // the web view's API for archived accounts (/api/v1/mail/)
  } http;
  struct Metrics {
    std::vector<HostPort> listen;  // GET /metrics for Prometheus; empty: off
  } metrics;
};

struct ConfigResult {
  Settings settings;
  std::vector<std::string> errors;  // "FILE:LINE: [section] key: message"
  bool ok() const { return errors.empty(); }
};

// The file the account list is read from: [backup] accounts with
// [directory] provider = file, else the synced list ([directory] cache).
const std::string& accounts_file(const Settings& s);

// The embedded defaults: what `mailkeep serve` runs without -c.
Settings default_settings();

// Loads `path` over the defaults.
ConfigResult load_settings_file(const std::string& path);
// Loads INI text (for tests); `name` stands in for the file name in errors.
ConfigResult load_settings_text(const std::string& text, const std::string& name);

// The effective settings as INI text, one key per line, every key shown.
std::string format_settings(const Settings& s);

// Every key of the settings table, in order, for generated documentation
// (mailkeep.ini(5)): the page cannot miss a key because it is made from this.
struct KeyDoc {
  std::string section, name, default_text, help;
};
std::vector<KeyDoc> describe_keys();

}  // namespace mk
