// main.cpp — the mailkeep command line: `serve`, `check-config`,
// `archive stats`; wiring of settings, accounts, router, upstreams and the
// SMTP server; privilege drop; signals. The only code not linked into tests.
#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <ctime>
#include <map>
#include <fstream>
#include <iostream>
#include <sstream>
#include <filesystem>
#include <set>
#include <thread>
#include <fcntl.h>
#include <unistd.h>

#include "aliases/alias_id.h"
#include "aliases/service.h"
#include "aliases/sqlite_store.h"
#include "app/stores.h"
#include "store/pg_election.h"
#include "store/pg_listener.h"
#include "store/pg_shared_file.h"
#include "app/privileges.h"
#include "directory/runner.h"
#include "spf/cares_txt.h"
#include "spf/refresher.h"
#include "app/index_cli.h"
#include "app/spam_cli.h"
#include "app/filter_cli.h"
#include "app/users_cli.h"
#include "app/accounts_cli.h"
#include "app/srs_cli.h"
#include "app/store_cli.h"
#include "milter/chain.h"
#include "archive/accounts.h"
#include "archive/archive.h"
#include "config/settings.h"
#include "core/blocking.h"
#include "app/manpage.h"
#include "metrics/exposition.h"
#include "metrics/server.h"
#include "service/notify.h"
#include "core/log.h"
#include "core/strings.h"
#include "delivery/outbox_upstream.h"
#include "delivery/smtp_upstream.h"
#include "http/api.h"
#include "http/server.h"
#include "http/spam_page.h"
#include "filters/filters.h"
#include "index/indexer.h"
#include "core/stats.h"
#include "policy/dnsbl.h"
#include "policy/rate_limit.h"
#include "route/router.h"
#include "smtp/server.h"
#include "spam/classifier.h"
#include "spam/history.h"
#include "spam/model.h"
#include "spam/trainer.h"
#include "tls/tls_context.h"
#include "users/authenticator.h"
#include "webreader/api.h"

namespace {

namespace asio = boost::asio;

// Loads -c FILE, or the embedded defaults without one. Prints errors; nullopt on failure.
std::optional<mk::Settings> load(const std::string& path) {
  if (path.empty()) return mk::default_settings();
  auto result = mk::load_settings_file(path);
  for (auto& e : result.errors) std::cerr << e << "\n";
  if (!result.ok()) return std::nullopt;
  return result.settings;
}

std::unique_ptr<mk::delivery::UpstreamFactory> smtp_factory(const mk::Settings& s,
                                                            const std::vector<mk::HostPort>& hosts) {
  return mk::delivery::make_smtp_upstream_factory(mk::delivery::smtp_upstream_config(s, hosts));
}

int64_t unix_now() { return static_cast<int64_t>(std::time(nullptr)); }

mk::aliases::AliasPolicy alias_policy(const mk::Settings& s) {
  return {s.aliases.domains, s.aliases.default_days, s.aliases.max_days, s.aliases.max_usage, s.aliases.hold_seconds};
}

// Runs `job` on the blocking pool every `interval`, for ever; `done` hears a
// non-zero result, `failed` why a run threw.
asio::awaitable<void> every(std::chrono::seconds interval, asio::any_io_executor blocking, std::function<size_t()> job,
                            std::function<void(size_t)> done, std::function<void(const char*)> failed) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (true) {
    timer.expires_after(interval);
    co_await timer.async_wait(asio::use_awaitable);
    try {
      auto n = co_await mk::run_blocking(blocking, job);
      if (n) done(n);
    } catch (const std::exception& e) {
      failed(e.what());
    }
  }
}

// Removes expired and used-up aliases every purge_interval seconds, and gives
// back the uses of holds that expired (a gateway killed while it held them;
// with a shared store, any gateway does it for all) every hold_seconds / 4, 1 to 30 s.
void start_alias_upkeep(asio::any_io_executor io, mk::aliases::AliasService& aliases, std::chrono::seconds purge_interval,
                        asio::any_io_executor blocking) {
  asio::co_spawn(
      io,
      every(purge_interval, blocking, [&aliases] { return aliases.purge(); },
            [](size_t n) { spdlog::info("purged {} expired or used-up aliases", n); },
            [](const char* why) { spdlog::error("alias purge failed: {}", why); }),
      asio::detached);
  asio::co_spawn(
      io,
      every(std::chrono::seconds(std::clamp<uint32_t>(aliases.policy().hold_seconds / 4, 1, 30)), blocking,
            [&aliases] { return aliases.expire_holds(); },
            [](size_t n) { spdlog::info("aliases: {} held uses given back (their holds expired unfinished)", n); },
            [](const char* why) { spdlog::warn("aliases: expiring holds failed: {}", why); }),
      asio::detached);
}

// Rewrites the counters file every 5 seconds (for `mailkeep stats`).
// The counters for `mailkeep stats`: written once before the first
// connection is accepted (so the file exists as soon as the server answers),
// then every 5 s.
bool write_stats_file(const std::string& path, int64_t started) {
  if (mk::stats::write_file(path, started)) return true;
  spdlog::warn("cannot write stats file {}", path);
  return false;
}

asio::awaitable<void> write_stats(std::string path, int64_t started, bool warned) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (true) {
    timer.expires_after(std::chrono::seconds(5));
    co_await timer.async_wait(asio::use_awaitable);
    if (warned) mk::stats::write_file(path, started);
    else warned = !write_stats_file(path, started);
  }
}

// Hourly archive housekeeping: tmp/ leftovers of crashes (36 h, as the
// Maildir spec suggests) and expired Sent dedupe markers.
asio::awaitable<void> clean_archive(std::string root, int64_t dedupe_days, asio::any_io_executor blocking) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (true) {
    auto removed = co_await mk::run_blocking(
        blocking, [&] { return mk::archive::clean_archive(root, unix_now(), 36 * 3600, dedupe_days * 86400); });
    if (removed) spdlog::info("archive housekeeping: removed {} stale files", removed);
    timer.expires_after(std::chrono::hours(1));
    co_await timer.async_wait(asio::use_awaitable);
  }
}

// Drops old spam verdicts and features ([spam] history_days, signature_days), hourly.
asio::awaitable<void> purge_spam_history(mk::spam::History& history, mk::Settings::Spam settings,
                                         asio::any_io_executor blocking) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  // Locals, not the parameters, go into the lambda (GCC 12 miscompiles captured coroutine parameters).
  mk::spam::History* store = &history;
  const int64_t feature_age = int64_t(settings.signature_days) * 86400, row_age = int64_t(settings.history_days) * 86400;
  while (true) {
    const int64_t now = unix_now();
    auto error = co_await mk::run_blocking(blocking, [&]() -> std::string {
      try {
        store->purge(now - feature_age, now - row_age);
        return "";
      } catch (const std::exception& e) {
        return e.what();
      }
    });
    if (!error.empty()) spdlog::warn("spam history: purge failed: {}", error);
    timer.expires_after(std::chrono::hours(1));
    co_await timer.async_wait(asio::use_awaitable);
  }
}

// Picks up a retrained spam model (checked every 2 s; loaded on the blocking pool).
asio::awaitable<void> watch_spam_model(mk::spam::Classifier& spam, asio::any_io_executor blocking) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  bool had = spam.model() != nullptr;
  while (true) {
    timer.expires_after(std::chrono::seconds(2));  // a stat() per look
    co_await timer.async_wait(asio::use_awaitable);
    std::string err;
    auto before = spam.model();
    bool ok = co_await mk::run_blocking(blocking, [&] { return spam.reload_if_changed(err); });
    if (ok && spam.model() != before) spdlog::info("spam model reloaded");
    else if (!ok && had) spdlog::warn("spam model: {}; keeping the loaded one", err);
    had = had || ok;
  }
}

// Re-reads the accounts file every reload_interval seconds.
asio::awaitable<void> watch_accounts(mk::archive::AccountDirectory& accounts, std::chrono::seconds interval) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (true) {
    timer.expires_after(interval);
    co_await timer.async_wait(asio::use_awaitable);
    accounts.reload();
  }
}

// The directory sync's figures for /metrics.
std::vector<mk::metrics::Sample> directory_samples(const mk::directory::SyncCounters& c) {
  return {
      {"mailkeep_directory_last_success_timestamp_seconds", "gauge", "unix time of the last good directory sync (0: none)",
       [&c] { return double(c.last_success.load()); }},
      {"mailkeep_directory_last_error_timestamp_seconds", "gauge",
       "unix time of the last failed or held directory sync (0: none)", [&c] { return double(c.last_error.load()); }},
      {"mailkeep_directory_accounts", "gauge", "accounts in the current list", [&c] { return double(c.accounts.load()); }},
      {"mailkeep_directory_syncs_total", "counter", "directory syncs run", [&c] { return double(c.syncs.load()); }},
      {"mailkeep_directory_sync_failures_total", "counter", "directory syncs that failed (the last good list stayed)",
       [&c] { return double(c.failures.load()); }},
      {"mailkeep_directory_held_syncs_total", "counter", "directory syncs held for removing more than max_removal",
       [&c] { return double(c.held.load()); }},
  };
}

// The indexer's figures for /metrics (none without an index).
std::vector<mk::metrics::Sample> index_samples(mk::index::Indexer* ix) {
  if (!ix) return {};
  auto& c = ix->counters();
  return {
      {"mailkeep_index_messages_total", "counter", "messages indexed since start",
       [&c] { return double(c.indexed.load()); }},
      {"mailkeep_index_failures_total", "counter", "messages the indexer could not parse (kept, logged)",
       [&c] { return double(c.failed.load()); }},
      {"mailkeep_index_errors_total", "counter", "index database errors (retried)", [&c] { return double(c.errors.load()); }},
      {"mailkeep_index_pending_messages", "gauge", "archived copies waiting to be indexed",
       [&c] { return double(c.pending.load()); }},
      {"mailkeep_index_lag_seconds", "gauge", "how long the oldest waiting copy has waited (0: none waiting)",
       [&c] {
         int64_t since = c.pending_since_ns.load();
         if (!since) return 0.0;
         return std::max<int64_t>(0, std::chrono::steady_clock::now().time_since_epoch().count() - since) / 1e9;
       }},
      {"mailkeep_index_last_scan_timestamp_seconds", "gauge", "end of the last full scan of the archive (unix time)",
       [&c] { return double(c.last_scan.load()); }},
  };
}

// SIGHUP re-reads the configuration file for the keys that switch at run
// time ([backup] standalone); a broken file changes nothing. Other changed
// keys take a restart, and the log says so.
void apply_mode_switch(const std::string& config_path, const mk::Settings& running, std::atomic<bool>& standalone) {
  auto result = mk::load_settings_file(config_path);
  if (!result.ok()) {
    for (auto& e : result.errors) spdlog::error("SIGHUP: {}", e);
    spdlog::error("SIGHUP: {} has errors; nothing changed", config_path);
    return;
  }
  auto fresh = result.settings;
  if (running.backup.domains.empty()) {
    if (fresh.backup.standalone) spdlog::error("SIGHUP: [backup] standalone needs [backup] domains; ignored");
  } else if (fresh.backup.standalone != standalone.load()) {
    standalone = fresh.backup.standalone;
    spdlog::warn("SIGHUP: {}", fresh.backup.standalone
                                   ? "standalone mode: mail for archived accounts is delivered into the archive, "
                                     "recorded for mailkeep backup replay"
                                   : "gateway mode: mail for archived accounts goes to the upstream again");
  }
  fresh.backup.standalone = running.backup.standalone;
  if (mk::format_settings(fresh) != mk::format_settings(running))
    spdlog::warn("SIGHUP: other changes in {} take effect at the next restart", config_path);
}

int serve(const mk::Settings& settings, const std::string& config_path) {
  mk::log::init(settings.general.log_level);
  std::signal(SIGPIPE, SIG_IGN);

  // Blocking file work (archive copies, outbox, fsync) runs here; many
  // threads so that concurrent fsyncs are committed together by the file
  // system: with 50 sessions each waiting on up to 4 fsyncs, 16 threads left
  // sessions queued behind the pool (bench/standalone_bench.py, c=50).
  asio::thread_pool blocking(64);

  // TLS contexts first: a bad certificate is a start-up error, not a surprise later.
  std::unique_ptr<mk::tls::ServerContext> tls;
  std::unique_ptr<mk::tls::ServerContext> https;
  try {
    if (!settings.tls.cert.empty()) tls = std::make_unique<mk::tls::ServerContext>(settings.tls.cert, settings.tls.key);
    if (!settings.http.cert.empty())
      https = std::make_unique<mk::tls::ServerContext>(settings.http.cert, settings.http.key, "[http]");
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }

  std::unique_ptr<mk::delivery::UpstreamFactory> smarthost;
  std::unique_ptr<mk::delivery::UpstreamFactory> backup_upstream;
  try {
    if (!settings.delivery.smarthost.empty()) smarthost = smtp_factory(settings, settings.delivery.smarthost);
    // The provider's inbound servers; by default the smarthost (then inbound
    // and relayed mail may share a transaction).
    if (!settings.backup.upstream.empty()) backup_upstream = smtp_factory(settings, settings.backup.upstream);
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  if (smarthost) {
    spdlog::info("relaying to smarthost {}", settings.delivery.smarthost.front().to_string());
  } else {
    smarthost = mk::delivery::make_outbox_upstream_factory(settings.delivery.outbox, blocking.get_executor());
    spdlog::info("no smarthost set: relayed mail goes to the outbox Maildir {}", settings.delivery.outbox);
  }

  std::unique_ptr<mk::archive::AccountDirectory> accounts;
  if (!settings.backup.domains.empty()) {
    const bool synced = settings.directory.provider != "file";
    accounts = std::make_unique<mk::archive::AccountDirectory>(mk::accounts_file(settings), /*until_loaded=*/synced);
    // A synced list not written yet (the first start) is no error: the first sync writes it.
    if (!synced || std::filesystem::exists(mk::accounts_file(settings))) accounts->reload(/*force=*/true);
  }

  // The alias store is opened before the privilege drop, so that its
  // directory may be created; the files then belong to [general] user.
  // [store] url: every store on one PostgreSQL the gateways share (app/stores.h).
  mk::app::Stores stores(settings);
  std::unique_ptr<mk::aliases::AliasStore> alias_store;
  std::unique_ptr<mk::aliases::AliasService> aliases;
  if (!settings.aliases.domains.empty()) {
    try {
      alias_store = stores.aliases();
    } catch (const std::exception& e) {
      spdlog::critical("alias store: {}", e.what());
      return 1;
    }
    aliases = std::make_unique<mk::aliases::AliasService>(*alias_store, alias_policy(settings), unix_now);
    // Releases from I/O threads go to the blocking pool (the store may be a network away).
    aliases->set_background([&blocking](std::function<void()> f) { asio::post(blocking, std::move(f)); });
  }

  std::unique_ptr<mk::policy::DnsblChecker> dnsbl;
  if (!settings.dnsbl.smtp_zones.empty() || !settings.dnsbl.http_zones.empty()) {
    try {
      dnsbl = mk::policy::make_cares_dnsbl({settings.dnsbl.resolver, int(settings.dnsbl.timeout_ms)});
    } catch (const std::exception& e) {
      spdlog::critical("dnsbl: {}", e.what());
      return 1;
    }
  }
  mk::policy::WindowLimiter message_limiter(settings.limits.smtp_messages_per_ip_per_minute);

  // Standalone ([backup] standalone, switched by SIGHUP): mail for archived
  // accounts has no upstream; the archive copies are the delivery and the
  // replay journal records it. A transaction keeps the upstream it opened.
  std::atomic<bool> standalone{settings.backup.standalone};
  std::unique_ptr<mk::delivery::UpstreamFactory> standalone_journal;
  if (!settings.backup.domains.empty()) {
    if (auto r = mk::archive::ensure_maildir(settings.backup.replay); r.outcome != mk::Outcome::Ok) {
      spdlog::critical("[backup] replay {}: {}", settings.backup.replay, r.detail);
      return 1;
    }
    standalone_journal = mk::delivery::make_replay_journal_factory(settings.backup.replay, blocking.get_executor());
    if (standalone) spdlog::warn("standalone mode: mail for archived accounts is delivered into the archive, no upstream");
  }

  // spf: entries of relay_from: their networks are resolved on the refresher's thread.
  std::unique_ptr<mk::spf::CaresTxt> spf_dns;
  std::unique_ptr<mk::spf::Refresher> spf;
  if (!settings.relay.relay_from_spf.empty() || !settings.backup.relay_from_spf.empty()) {
    try {
      spf_dns = std::make_unique<mk::spf::CaresTxt>(settings.dnsbl.resolver, int(settings.dnsbl.timeout_ms));
    } catch (const std::exception& e) {
      spdlog::critical("relay_from spf: {}", e.what());
      return 1;
    }
    spf = std::make_unique<mk::spf::Refresher>(settings.relay.relay_from_spf, settings.backup.relay_from_spf,
                                               [dns = spf_dns.get()](const std::string& n) { return dns->lookup(n); });
  }
  // [aliases] srs_domain: the secrets are read now, before the privilege drop (the file may be root's).
  std::unique_ptr<mk::srs::Rewriter> srs;
  try {
    srs = mk::app::load_srs(settings);
  } catch (const std::exception& e) {
    spdlog::critical("[aliases] srs_secret_file: {}", e.what());
    return 1;
  }
  if (srs) spdlog::info("SRS: forwarded alias mail gets senders at {}", srs->domain());
  mk::route::Router router(settings, accounts.get(),
                           mk::route::SpfNetworks{spf ? spf->relay() : nullptr, spf ? spf->backup() : nullptr},
                           srs.get());
  // [directory] provider = google | microsoft: the account list is synced on its own thread.
  // With [store] url one gateway syncs for all (elected by an advisory lock) and shares the list.
  std::unique_ptr<mk::directory::Runner> directory;
  std::unique_ptr<mk::SharedFile> accounts_share;
  std::unique_ptr<mk::store::PgElection> sync_election;
  if (accounts && settings.directory.provider != "file") {
    try {
      std::function<bool()> lead;
      if (stores.shared()) {
        accounts_share = stores.accounts_share();
        sync_election = std::make_unique<mk::store::PgElection>(stores.pool(), "directory sync");
        lead = [&sync_election] { return sync_election->lead(); };
      }
      directory = std::make_unique<mk::directory::Runner>(settings, *accounts, lead, accounts_share.get());
    } catch (const std::exception& e) {
      spdlog::critical("[directory] {}", e.what());
      return 1;
    }
  }
  mk::smtp::SessionEnvironment env;
  env.settings = &settings;
  env.router = &router;
  env.upstream_for = [&](mk::route::Destination d) -> mk::delivery::UpstreamFactory* {
    if (d == mk::route::Destination::BackupInbound && standalone_journal && standalone.load())
      return standalone_journal.get();
    if (d == mk::route::Destination::BackupInbound && backup_upstream) return backup_upstream.get();
    return smarthost.get();
  };
  env.spool_dir = settings.smtp.spool_dir;
  env.blocking = blocking.get_executor();
  env.aliases = aliases.get();
  env.dnsbl = dnsbl.get();
  env.message_limiter = message_limiter.enabled() ? &message_limiter : nullptr;
  env.tls = tls.get();
  // [milter] smtp: each session gets its milter chain (milter/chain.h); sub_env below shares it.
  const mk::smtp::SessionChecksFactory milters = mk::milter::make_factory(settings);
  env.checks = &milters;
  if (!settings.milter.smtp.empty())
    spdlog::info("milters: {} (default_action = {}, outbound = {})", settings.milter.smtp.size(),
                 settings.milter.default_action, settings.milter.outbound);
  // The spam classifier: the model is loaded now and re-read when `mailkeep spam train` rewrites it.
  std::unique_ptr<mk::spam::Classifier> spam;
  if (settings.spam.enabled) {
    spam = std::make_unique<mk::spam::Classifier>(settings.spam.model);
    std::string err;
    if (spam->reload_if_changed(err)) spdlog::info("spam model {} loaded", settings.spam.model);
    else spdlog::warn("spam: {}; mail is not scored until a model is trained", err);
    env.spam = spam.get();
  }
  // The verdict history (the /spam page, reclassification); opened before the privilege drop, like the alias store.
  // With [store] url the model is shared too: a change on any gateway reaches this one (listener below).
  std::unique_ptr<mk::spam::History> spam_history;
  std::unique_ptr<mk::SharedFile> model_share;
  if (spam) {
    try {
      spam_history = mk::spam::make_buffered_history(stores.spam_history());
      model_share = stores.model_share();
    } catch (const std::exception& e) {
      spdlog::critical("spam history: {}", e.what());
      return 1;
    }
    env.spam_history = spam_history.get();
  }

  // One io_context per thread (see server.h).
  unsigned threads = settings.smtp.threads ? settings.smtp.threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::unique_ptr<asio::io_context>> workers;
  std::vector<asio::io_context*> worker_ptrs;
  for (unsigned i = 0; i < threads; ++i) {
    workers.push_back(std::make_unique<asio::io_context>(1));
    worker_ptrs.push_back(workers.back().get());
  }
  auto& main_io = *workers.front();
  mk::smtp::Server server(worker_ptrs, env);
  // Submission (RFC 6409): the same sessions with AUTH, no DNSBL and no spam
  // scoring; the passwords are the passwd-file Dovecot reads.
  // One password check (and one set of lockouts) for submission and the web view.
  std::unique_ptr<mk::users::Authenticator> authenticator;
  const bool mail_reader = settings.http.mail_reader && !settings.backup.domains.empty() && !settings.http.listen.empty();
  if (!settings.submission.listen.empty() || !settings.submission.tls_listen.empty() || mail_reader)
    authenticator = std::make_unique<mk::users::Authenticator>(mk::users::AuthenticatorConfig{
        settings.users.passwd, [&router](const std::string& a) { return router.is_account(a); },
        settings.submission.max_auth_failures, int64_t(settings.submission.auth_lockout)});
  std::vector<std::unique_ptr<mk::smtp::Server>> submission;
  if (!settings.submission.listen.empty() || !settings.submission.tls_listen.empty()) {
    auto sub_env = env;
    sub_env.auth = authenticator.get();
    sub_env.dnsbl = nullptr;
    sub_env.spam = nullptr;
    sub_env.spam_history = nullptr;
    if (!settings.submission.listen.empty()) {
      sub_env.listen = settings.submission.listen;
      sub_env.label = "submission";
      submission.push_back(std::make_unique<mk::smtp::Server>(worker_ptrs, sub_env));
    }
    if (!settings.submission.tls_listen.empty()) {
      sub_env.listen = settings.submission.tls_listen;
      sub_env.label = "submissions";
      sub_env.implicit_tls = true;
      submission.push_back(std::make_unique<mk::smtp::Server>(worker_ptrs, sub_env));
    }
  }
  if (!settings.http.admin_token.empty() && !spam_history)
    spdlog::warn("[http] admin_token is set but [spam] enabled = false: there is no /spam page");
  std::unique_ptr<mk::http::SpamPage> spam_page;
  if (spam_history && !settings.http.admin_token.empty())
    spam_page = std::make_unique<mk::http::SpamPage>(
        *spam_history, spam.get(),
        mk::http::SpamPageConfig{settings.http.admin_token, settings.spam.model,
                                 {settings.spam.tag_score, settings.spam.reject_score}, nullptr, model_share.get()});
  std::unique_ptr<mk::http::Api> api;
  std::unique_ptr<mk::http::Server> http;
  std::unique_ptr<mk::webreader::MailApi> mail_api;
  mk::webreader::SpamTrainer spam_trainer;
  if (spam_history)
    spam_trainer = [&settings, &spam, &spam_history, &model_share](const std::string& signature, bool as_spam) {
      auto r = mk::spam::reclassify(*spam_history, settings.spam.model, spam->settings(), signature, as_spam,
                                    {settings.spam.tag_score, settings.spam.reject_score}, model_share.get());
      return r.outcome == mk::Outcome::Ok ? std::string() : r.code + ": " + r.detail;
    };
  if (mail_reader) {
    std::unique_ptr<mk::webreader::SessionStore> web_sessions;
    try {
      web_sessions = stores.web_sessions(mk::webreader::SessionLimits{});  // [store] url: shared by every gateway
    } catch (const std::exception& e) {
      spdlog::critical("web sessions: {}", e.what());
      return 1;
    }
    mail_api = std::make_unique<mk::webreader::MailApi>(settings, *authenticator, https != nullptr,
                                                        mk::webreader::SessionLimits{}, spam_trainer,
                                                        std::move(web_sessions));
    if (stores.shared())
      mail_api->set_filters_share([&stores](const std::string& account) { return stores.filters_share(account); });
  }
  if ((aliases || spam_page || mail_api) && !settings.http.listen.empty()) {
    api = std::make_unique<mk::http::Api>(
        aliases.get(), mk::http::ApiConfig{settings.http.trusted_proxies, settings.aliases.create_interval},
        std::vector<mk::http::RouteHandler*>{spam_page.get(), mail_api.get()});
    http = std::make_unique<mk::http::Server>(worker_ptrs, settings, *api, blocking.get_executor(), dnsbl.get(),
                                              https.get());
  }
  // [metrics] listen: Prometheus. The indexer's figures are read at scrape time
  // (the indexer starts later; the pointer is filled in then).
  std::unique_ptr<mk::metrics::Server> metrics;
  mk::index::Indexer* metrics_indexer = nullptr;
  if (!settings.metrics.listen.empty())
    metrics = std::make_unique<mk::metrics::Server>(main_io, settings.metrics.listen, [&metrics_indexer, &directory] {
      auto samples = index_samples(metrics_indexer);
      if (directory) {
        auto more = directory_samples(directory->counters());
        samples.insert(samples.end(), more.begin(), more.end());
      }
      return mk::metrics::render(samples);
    });
  try {
    server.bind();
    for (auto& sub : submission) sub->bind();
    if (http) http->bind();
    if (metrics) metrics->bind();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }

  // Ports are bound: from here on, run as [general] user, which owns our data.
  std::vector<std::string> data_dirs{settings.smtp.spool_dir};
  if (auto dir = std::filesystem::path(settings.general.stats_file).parent_path().string(); !dir.empty())
    data_dirs.push_back(dir);
  if (aliases) {
    auto dir = std::filesystem::path(settings.store.path).parent_path().string();
    if (!dir.empty()) data_dirs.push_back(dir);
  }
  if (settings.delivery.smarthost.empty()) data_dirs.push_back(settings.delivery.outbox);
  if (!settings.backup.domains.empty()) {
    data_dirs.push_back(settings.backup.archive);
    for (auto sub : {"", "/tmp", "/new", "/cur"}) data_dirs.push_back(settings.backup.replay + sub);
  }
  const bool indexing = settings.index.enabled && !settings.backup.domains.empty();
  if (indexing) {
    std::error_code ec;
    std::filesystem::create_directories(settings.index.path, ec);
    data_dirs.push_back(settings.index.path);
  }
  // The database files were created as root: they are handed over too.
  std::vector<std::string> data_files;
  if (aliases)
    for (auto suffix : {"", "-wal", "-shm"}) data_files.push_back(settings.store.path + suffix);
  if (spam_history) {
    if (auto dir = std::filesystem::path(settings.spam.history).parent_path().string(); !dir.empty())
      data_dirs.push_back(dir);
    if (auto dir = std::filesystem::path(settings.spam.model).parent_path().string(); !dir.empty())
      data_dirs.push_back(dir);  // the /spam page's reclassify rewrites the model
    for (auto suffix : {"", "-wal", "-shm"}) data_files.push_back(settings.spam.history + suffix);
    for (auto suffix : {"", ".lock"}) data_files.push_back(settings.spam.model + suffix);
  }
  // After the drop, SIGHUP re-reads the certificates through a helper that keeps root
  // (app/privileges.h): renewed keys are usually readable by root only.
  std::unique_ptr<mk::app::PrivilegedPemReader> pem_reader;
  if (::geteuid() == 0 && settings.general.user != "root" && (tls || https)) {
    std::vector<std::string> files;
    for (auto* ctx : {tls.get(), https.get()})
      if (ctx) files.insert(files.end(), {ctx->cert_file(), ctx->key_file()});
    std::string err;
    pem_reader = mk::app::PrivilegedPemReader::start(files, err);
    if (!pem_reader) {
      spdlog::warn("{}; SIGHUP will re-read the certificates as [general] user {}", err, settings.general.user);
    } else {
      for (auto* ctx : {tls.get(), https.get()})
        if (ctx) ctx->read_through(pem_reader.get());
    }
  }
  if (directory) {
    // The synced list is rewritten by the server after the drop.
    auto dir = std::filesystem::path(settings.directory.cache).parent_path().string();
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      data_dirs.push_back(dir);
    }
    data_files.push_back(settings.directory.cache);
  }
  if (auto err = mk::app::drop_privileges(settings.general.user, data_dirs, data_files); !err.empty()) {
    spdlog::critical("{}", err);
    return 1;
  }
  if (spf) spf->start();
  if (directory) directory->start();
  // The index follows the archive off the SMTP path: the archive's
  // "copy is in new/" hook only queues the file for the indexer's thread.
  std::unique_ptr<mk::index::Indexer> indexer;
  if (indexing) {
    mk::index::IndexerConfig icfg{settings.backup.archive, settings.index.path, settings.backup.domains,
                                  {settings.index.language}, std::chrono::seconds(settings.index.scan_interval)};
    // Filters meet each new message as it is indexed (filters/filters.h).
    icfg.after_index = [&settings](mk::index::Database& db, const std::string& account, const std::string& maildir,
                                   const std::vector<std::string>& ids) {
      auto list = mk::filters::load_filters(settings.index.path + "/" + account);
      if (!list.error.empty()) spdlog::error("filters {}: {}; none applied", account, list.error);
      if (list.filters.empty()) return;
      try {
        db.commit();  // what the filters read and change is what was just indexed
        auto st = mk::filters::apply_to_new(db, maildir, list.filters, ids, unix_now());
        db.commit();
        for (auto& e : st.errors) spdlog::error("filters {}: {}", account, e);
        if (st.matched) spdlog::info("filters {}: {} new message(s) matched, {} moved", account, st.matched, st.moved);
      } catch (const std::exception& e) {
        spdlog::error("filters {}: {}", account, e.what());
      }
    };
    indexer = std::make_unique<mk::index::Indexer>(std::move(icfg));
    mk::archive::set_publish_listener(
        [ix = indexer.get()](const std::string& folder, const std::string& name) { ix->published(folder, name); });
    metrics_indexer = indexer.get();
    indexer->start();
  }
  const int64_t started = unix_now();
  const bool stats_written = write_stats_file(settings.general.stats_file, started);
  try {
    server.start();
    for (auto& sub : submission) sub->start();
    if (http) http->start();
    if (metrics) metrics->start();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  if (aliases)
    start_alias_upkeep(main_io.get_executor(), *aliases, std::chrono::seconds(settings.aliases.purge_interval),
                       blocking.get_executor());
  asio::co_spawn(main_io, write_stats(settings.general.stats_file, started, !stats_written), asio::detached);
  if (spam)
    asio::co_spawn(main_io, watch_spam_model(*spam, blocking.get_executor()), asio::detached);
  // Several gateways: what another changes in the shared store reaches this one by NOTIFY, and
  // everything is reloaded after each (re)connection, since notifications sent meanwhile are lost.
  std::unique_ptr<mk::store::PgListener> listener;
  std::unique_ptr<mk::SharedFile> passwd_share;  // [users] passwd: this gateway's Dovecot and logins read it
  if (stores.shared() && !settings.users.passwd.empty()) {
    try {
      passwd_share = stores.passwd_share();
    } catch (const std::exception& e) {
      spdlog::warn("users: the shared password file: {}; the local one stays until the store answers", e.what());
    }
  }
  // The accounts' filters (one shared file each), when this gateway files mail (the indexer runs them).
  const bool share_filters = stores.shared() && indexing;
  // The listener's thread alone uses this map: one shared file per account, so each remembers its version.
  std::map<std::string, std::unique_ptr<mk::SharedFile>> filter_shares;
  if (model_share || accounts_share || passwd_share || share_filters) {
    auto pull_model = [&settings, &spam, &model_share] {
      if (!model_share || !model_share->pull(settings.spam.model)) return;
      std::string err;
      if (spam->reload_if_changed(err)) spdlog::info("spam model: the shared model loaded");
      else spdlog::warn("spam model: the shared model: {}; keeping the loaded one", err);
    };
    auto pull_accounts = [&accounts, &accounts_share] {
      if (!accounts_share || !accounts_share->pull(accounts->path())) return;
      if (accounts->reload()) spdlog::info("accounts: the shared list loaded");  // reload() logs a broken one
    };
    auto pull_passwd = [&settings, &passwd_share] {
      if (passwd_share && passwd_share->pull(settings.users.passwd))
        spdlog::info("users: the shared password file written to {}", settings.users.passwd);
    };
    // A name from the store becomes a path only when it is "filters/<domain>/<localpart>" of safe parts.
    auto pull_filters = [&settings, &stores, &filter_shares](const std::string& name) {
      std::string account = name.substr(std::string_view(mk::store::kFiltersPrefix).size());
      auto slash = account.find('/');
      auto safe = [](std::string_view part) {
        return !part.empty() && part != "." && part != ".." && part.find('/') == std::string_view::npos &&
               part.find('\0') == std::string_view::npos;
      };
      if (!name.starts_with(mk::store::kFiltersPrefix) || slash == std::string::npos ||
          !safe(std::string_view(account).substr(0, slash)) || !safe(std::string_view(account).substr(slash + 1))) {
        spdlog::warn("filters: ignoring the shared file named '{}'", mk::printable_ascii(name, 200));
        return;
      }
      auto& share = filter_shares[account];
      if (!share) share = stores.filters_share(account);
      std::string dir = settings.index.path + "/" + account;
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (share->pull(mk::filters::filters_path(dir))) spdlog::info("filters {}: the shared filters loaded", account);
    };
    auto pull_all_filters = [&stores, pull_filters] {
      for (auto& name : mk::store::shared_file_names(*stores.pool(), mk::store::kFiltersPrefix)) pull_filters(name);
    };
    std::vector<std::string> channels;
    if (share_filters) channels.push_back(mk::store::channel_of(mk::store::kFiltersPrefix));
    if (model_share) channels.push_back(mk::store::channel_of(mk::store::kSpamModel));
    if (passwd_share) channels.push_back(mk::store::channel_of(mk::store::kPasswd));
    if (accounts_share) channels.push_back(mk::store::channel_of(mk::store::kAccounts));
    listener = std::make_unique<mk::store::PgListener>(
        settings.store.url, channels,
        [pull_model, pull_accounts, pull_passwd, pull_filters](const std::string& channel, const std::string& name) {
          if (channel == mk::store::channel_of(mk::store::kSpamModel)) pull_model();
          else if (channel == mk::store::channel_of(mk::store::kPasswd)) pull_passwd();
          else if (channel == mk::store::channel_of(mk::store::kAccounts)) pull_accounts();
          else pull_filters(name);
        },
        [pull_model, pull_accounts, pull_passwd, pull_all_filters, share_filters] {
          pull_model();
          pull_accounts();
          pull_passwd();
          if (share_filters) pull_all_filters();
        });
  }
  if (spam_history)
    asio::co_spawn(main_io, purge_spam_history(*spam_history, settings.spam, blocking.get_executor()), asio::detached);
  if (accounts)
    asio::co_spawn(main_io, clean_archive(settings.backup.archive, settings.backup.dedupe_days, blocking.get_executor()),
                   asio::detached);
  if (accounts)
    asio::co_spawn(main_io, watch_accounts(*accounts, std::chrono::seconds(settings.backup.reload_interval)),
                   asio::detached);

  // The workers stop when the last SMTP server (port 25, submission) has no session left.
  auto servers_running = std::make_shared<std::atomic<size_t>>(1 + submission.size());
  auto stop_all = [&workers, servers_running] {
    if (servers_running->fetch_sub(1) != 1) return;
    for (auto& w : workers) w->stop();
  };
  // systemd: the watchdog pings only while every loop answers (service/notify.h).
  mk::service::Watchdog watchdog(worker_ptrs);
  // Test-only (MAILKEEP_TEST_HOOKS=1): SIGUSR2 blocks the last event loop for
  // three watchdog intervals, so that a test sees the pings stop and resume.
  asio::signal_set test_hook(main_io);
  asio::signal_set signals(main_io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: stopping", sig);
    mk::service::notify_stopping();
    watchdog.stop();
    test_hook.cancel();
    if (metrics) metrics->stop();
    if (http) http->stop();
    server.stop(stop_all);
    for (auto& sub : submission) sub->stop(stop_all);
  });
  // SIGHUP: re-read the STARTTLS and HTTPS certificates; sessions keep the context they have.
  asio::signal_set hangup(main_io, SIGHUP);
  std::function<void()> on_hangup = [&] {
    hangup.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      mk::service::notify_reloading();
      if (!config_path.empty()) apply_mode_switch(config_path, settings, standalone);
      for (auto* ctx : {tls.get(), https.get()}) {
        if (!ctx) continue;
        auto err = ctx->reload();
        if (err.empty()) spdlog::info("SIGHUP: TLS certificate {} reloaded", ctx->cert_file());
        else spdlog::error("SIGHUP: TLS reload failed, keeping the old certificate: {}", err);
      }
      mk::service::notify_ready("reloaded; " + std::string(standalone ? "standalone" : "gateway") + " mode");
      on_hangup();
    });
  };
  on_hangup();

  spdlog::info("mailkeep {} started: {} workers, hostname {}", MAILKEEP_VERSION, threads, settings.smtp.hostname);
  // Ready once the loops run: the listeners are bound and listening already.
  asio::post(main_io, [&] {
    std::string smtp_on;
    for (auto& hp : settings.smtp.listen) smtp_on += (smtp_on.empty() ? "" : ", ") + hp.to_string();
    mk::service::notify_ready(std::string(standalone ? "standalone" : "gateway") + " mode, SMTP on " + smtp_on);
    watchdog.start();
  });
  if (const char* hooks = std::getenv("MAILKEEP_TEST_HOOKS"); hooks && std::string_view(hooks) == "1") {
    test_hook.add(SIGUSR2);
    test_hook.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      // Three watchdog intervals: long enough for the pings to stop, short enough to end.
      auto block = watchdog.interval().count() ? std::chrono::microseconds(3 * watchdog.interval().count())
                                               : std::chrono::microseconds(5'000'000);
      spdlog::warn("test hook: blocking event loop {} for {} ms", threads - 1, block.count() / 1000);
      asio::post(*workers.back(), [block] { std::this_thread::sleep_for(block); });
    });
  }

  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([w = workers[i].get()] { w->run(); });
  main_io.run();
  for (auto& t : pool) t.join();
  blocking.join();
  if (indexer) {
    mk::archive::set_publish_listener(nullptr);
    indexer->stop();
  }
  // Pooled upstream connections belong to the workers' io_contexts, which are
  // destroyed before the factories would be: close them first.
  smarthost.reset();
  backup_upstream.reset();
  mk::stats::write_file(settings.general.stats_file, started);
  spdlog::info("mailkeep stopped");
  return 0;
}


// `mailkeep alias ...`: the operator's view of the alias store (the server
// may run at the same time; SQLite's WAL lets both work).
struct AliasCommand {
  std::string action;  // create | list | show | disable | purge
  std::string target, aid;
  std::optional<int64_t> days, max_usage;
  size_t limit = 1000;
};

int alias_command(const mk::Settings& settings, const AliasCommand& cmd) {
  std::unique_ptr<mk::aliases::AliasStore> store;
  try {
    store = mk::app::Stores(settings).aliases();
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: alias store: " << e.what() << "\n";
    return 1;
  }
  mk::aliases::AliasService service(*store, alias_policy(settings), unix_now);
  auto print = [&](const mk::aliases::Alias& a) {
    std::cout << "alias: " << service.address_of(a) << "\n"
              << "aid: " << a.id << "\n"
              << "target: " << a.target << "\n"
              << "status: " << mk::aliases::state_name(service.state(a)) << "\n"
              << "created: " << mk::iso8601_utc(a.created) << "\n"
              << "valid_until: " << (a.valid_until ? mk::iso8601_utc(*a.valid_until) : "none") << "\n"
              << "max_usage: " << (a.max_usage ? std::to_string(*a.max_usage) : "unlimited") << "\n"
              << "uses: " << a.uses << "\n"
              << "creator: " << a.creator_ip << "\n";
  };
  try {
    if (cmd.action == "create") {
      auto r = service.create({cmd.target, cmd.days, cmd.max_usage, "cli"});
      if (!r.alias) {
        std::cerr << "mailkeep: invalid alias: " << r.error << "\n";
        return 1;
      }
      print(*r.alias);
      std::cout << "manage_token: " << r.token << "\n";
      return 0;
    }
    if (cmd.action == "list") {
      std::cout << "# aid\ttarget\tstatus\tuses\tmax_usage\tvalid_until\tcreated\n";
      for (auto& a : service.list(cmd.limit))
        std::cout << a.id << "\t" << a.target << "\t" << mk::aliases::state_name(service.state(a)) << "\t" << a.uses
                  << "\t" << (a.max_usage ? std::to_string(*a.max_usage) : "-") << "\t"
                  << (a.valid_until ? mk::iso8601_utc(*a.valid_until) : "-") << "\t" << mk::iso8601_utc(a.created) << "\n";
      return 0;
    }
    if (cmd.action == "show" || cmd.action == "disable") {
      auto a = service.find(cmd.aid);
      if (!a) {
        std::cerr << "mailkeep: no alias '" << cmd.aid << "'\n";
        return 1;
      }
      if (cmd.action == "disable") {
        service.disable(a->id);
        a = service.find(a->id);
        std::cout << "disabled " << a->id << "\n";
        return 0;
      }
      print(*a);
      return 0;
    }
    if (cmd.action == "purge") {
      std::cout << "purged " << service.purge() << " aliases\n";
      return 0;
    }
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: alias store: " << e.what() << "\n";
    return 1;
  }
  return 1;
}

// `mailkeep stats`: the counters the server last wrote.
int show_stats(const mk::Settings& settings) {
  std::ifstream in(settings.general.stats_file);
  if (!in) {
    std::cerr << "mailkeep: no stats file " << settings.general.stats_file << " (is the server running?)\n";
    return 1;
  }
  std::string key;
  int64_t value = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    fields >> key >> value;
    if (key == "started" || key == "updated") std::cout << key << " " << mk::iso8601_utc(value) << "\n";
    else std::cout << key << " " << value << "\n";
  }
  return 0;
}

int archive_stats(const mk::Settings& settings) {
  std::cout << "# user\tfolder\tmessages\tbytes\n";
  uint64_t messages = 0, bytes = 0;
  for (auto& st : mk::archive::archive_stats(settings.backup.archive)) {
    std::cout << st.user << "\t" << st.folder << "\t" << st.messages << "\t" << st.bytes << "\n";
    messages += st.messages;
    bytes += st.bytes;
  }
  std::cout << "# total\t\t" << messages << "\t" << bytes << "\n";
  if (std::error_code ec; std::filesystem::is_directory(settings.index.path, ec)) {
    std::cout << "\n";  // the index section, after the folder table that scripts read up to "# total"
    mk::app::print_index_stats(settings);
  }
  return 0;
}

}  // namespace

// The commands that write the index and the Maildirs (archive index, modify,
// import) run as [general] user, as the server does: started as root they
// would leave root-owned files that the server and Dovecot cannot read. The
// index tree is handed over first (files an older root run left behind too).
bool drop_for_writing(const mk::Settings& settings) {
  if (::geteuid() != 0 || settings.general.user == "root") return true;
  spdlog::set_level(spdlog::level::warn);  // stdout is the command's output
  std::vector<std::string> dirs{settings.index.path}, files;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(settings.index.path, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink(ec)) continue;
    (it->is_directory(ec) ? dirs : files).push_back(it->path().string());
  }
  if (auto err = mk::app::drop_privileges(settings.general.user, dirs, files); !err.empty()) {
    std::cerr << "mailkeep: " << err << "\n";
    return false;
  }
  return true;
}

// `mailkeep search -c F --user A -has:attachment`: a query word may start
// with '-' (Gmail's negation), which CLI11 would read as options. The
// options these commands know are kept in front; everything else is the
// query, after a "--".
std::vector<std::string> query_last(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  size_t start = 0;
  if (args.size() > 1 && args[1] == "search") start = 2;
  if (args.size() > 2 && args[1] == "archive" && args[2] == "modify") start = 3;
  if (!start) return args;
  static const std::set<std::string> with_value = {"-c", "--config", "--user", "--limit", "--offset", "--label", "--unlabel"};
  static const std::set<std::string> flags = {"--messages", "--json",  "--help", "-h",     "--archive", "--inbox",
                                              "--trash",    "--spam",  "--read", "--unread", "--star",  "--unstar"};
  std::vector<std::string> out(args.begin(), args.begin() + start), query;
  for (size_t i = start; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a == "--") {
      query.insert(query.end(), args.begin() + i + 1, args.end());
      break;
    }
    auto eq = a.find('=');
    if (with_value.count(a) && i + 1 < args.size()) {
      out.push_back(a);
      out.push_back(args[++i]);
    } else if ((eq != std::string::npos && with_value.count(a.substr(0, eq))) || flags.count(a)) {
      out.push_back(a);
    } else {
      query.push_back(a);
    }
  }
  if (!query.empty()) {
    out.push_back("--");
    out.insert(out.end(), query.begin(), query.end());
  }
  return out;
}

int main(int argc, char** argv) {
  // Not a command for people: the helper the server starts for SIGHUP (app/privileges.h).
  if (argc >= 2 && std::string_view(argv[1]) == "privileged-reader")
    return mk::app::run_privileged_reader(std::vector<std::string>(argv + 2, argv + argc));
  CLI::App app{"mailkeep — a mail gateway that keeps every message"};
  app.set_version_flag("--version", std::string("mailkeep ") + MAILKEEP_VERSION);
  app.require_subcommand(1);

  std::string config_path;
  auto* serve_cmd = app.add_subcommand("serve", "Run the gateway (embedded defaults without -c)");
  serve_cmd->add_option("-c,--config", config_path, "INI configuration file");
  auto* check_cmd = app.add_subcommand("check-config", "Validate the configuration and print the effective settings");
  check_cmd->add_option("-c,--config", config_path, "INI configuration file");
  auto* stats_top = app.add_subcommand("stats", "Counters per rejection reason, as the server last wrote them");
  stats_top->add_option("-c,--config", config_path, "INI configuration file");
  auto* archive_cmd = app.add_subcommand("archive", "Inspect the mail archive");
  archive_cmd->require_subcommand(1);
  auto* stats_cmd = archive_cmd->add_subcommand("stats", "Messages and bytes per user and folder");
  stats_cmd->add_option("-c,--config", config_path, "INI configuration file");
  mk::app::IndexCommand index_cmd;
  auto* index_sub = archive_cmd->add_subcommand("index", "Bring the full-text index up to date with the Maildirs");
  index_sub->add_option("-c,--config", config_path, "INI configuration file");
  index_sub->add_option("--user", index_cmd.user, "only this account (ADDR)");
  index_sub->add_flag("--rebuild", index_cmd.rebuild, "index everything again from the Maildirs");
  auto* modify_sub = archive_cmd->add_subcommand("modify", "Archive, trash, label, mark read or star the messages a query finds");
  modify_sub->add_option("-c,--config", config_path, "INI configuration file");
  modify_sub->add_option("--user", index_cmd.user, "the account (ADDR)")->required();
  modify_sub->add_flag("--archive", index_cmd.to_archive, "move what is in INBOX to Archive");
  modify_sub->add_flag("--inbox", index_cmd.to_inbox, "move to INBOX");
  modify_sub->add_flag("--trash", index_cmd.to_trash, "move to Trash");
  modify_sub->add_flag("--spam", index_cmd.to_spam, "move to Junk");
  modify_sub->add_option("--label", index_cmd.labels, "add this label (repeatable)");
  modify_sub->add_option("--unlabel", index_cmd.unlabels, "remove this label (repeatable)");
  modify_sub->add_flag("--read", index_cmd.read, "mark read (\\Seen)");
  modify_sub->add_flag("--unread", index_cmd.unread, "mark unread");
  modify_sub->add_flag("--star", index_cmd.star, "star (\\Flagged)");
  modify_sub->add_flag("--unstar", index_cmd.unstar, "remove the star");
  std::vector<std::string> modify_words;
  modify_sub->add_option("query", modify_words, "which messages: the search language")->required();
  auto* import_sub = archive_cmd->add_subcommand("import", "Import mbox files (Google Takeout) into an account's archive");
  import_sub->add_option("-c,--config", config_path, "INI configuration file");
  import_sub->add_option("--user", index_cmd.user, "the account (ADDR)")->required();
  import_sub->add_option("files", index_cmd.files, "mbox files")->required();
  std::vector<std::string> query_words;
  auto* search_cmd = app.add_subcommand("search", "Search an account's archive with Gmail's operators");
  search_cmd->add_option("-c,--config", config_path, "INI configuration file");
  search_cmd->add_option("--user", index_cmd.user, "the account (ADDR)")->required();
  search_cmd->add_option("--limit", index_cmd.limit, "results per page (default 50)")->check(CLI::Range(1, 1000000));
  search_cmd->add_option("--offset", index_cmd.offset, "results to skip");
  search_cmd->add_flag("--messages", index_cmd.messages, "one line per message instead of per conversation");
  search_cmd->add_flag("--json", index_cmd.json, "JSON output (documented in the README)");
  search_cmd->add_option("query", query_words, "the query: from:bob has:attachment \"quarterly report\" ...");
  auto* show_cmd = app.add_subcommand("show", "Print a conversation or one message");
  show_cmd->add_option("-c,--config", config_path, "INI configuration file");
  show_cmd->add_option("--user", index_cmd.user, "the account (ADDR)")->required();
  show_cmd->add_flag("--json", index_cmd.json, "JSON output");
  show_cmd->add_option("id", index_cmd.id, "conversation id or message id (from mailkeep search)")->required();

  AliasCommand alias_cmd;
  auto* alias_top = app.add_subcommand("alias", "Create, list, show, disable and purge temporary aliases");
  alias_top->require_subcommand(1);
  auto* alias_create = alias_top->add_subcommand("create", "Create an alias");
  alias_create->add_option("--target", alias_cmd.target, "the real address mail is forwarded to")->required();
  alias_create->add_option("--days", alias_cmd.days, "days of validity (default: [aliases] default_days)");
  alias_create->add_option("--max-usage", alias_cmd.max_usage, "messages it may receive (default: unlimited)");
  auto* alias_list = alias_top->add_subcommand("list", "List aliases, newest first");
  alias_list->add_option("--limit", alias_cmd.limit, "at most this many");
  auto* alias_show = alias_top->add_subcommand("show", "Show one alias");
  alias_show->add_option("aid", alias_cmd.aid, "alias id")->required();
  auto* alias_disable = alias_top->add_subcommand("disable", "Disable an alias now");
  alias_disable->add_option("aid", alias_cmd.aid, "alias id")->required();
  auto* alias_purge = alias_top->add_subcommand("purge", "Remove expired, used-up and disabled aliases");
  for (auto* sub : {alias_create, alias_list, alias_show, alias_disable, alias_purge})
    sub->add_option("-c,--config", config_path, "INI configuration file");

  mk::app::SpamCommand spam_cmd;
  auto* spam_top = app.add_subcommand("spam", "The spam filter: train, classify, reclassify, learn, stats, explain");
  spam_top->require_subcommand(1);
  auto* spam_train = spam_top->add_subcommand("train", "Learn from messages (files, Maildirs, directories)");
  spam_train->add_option("--spam", spam_cmd.spam, "spam messages");
  spam_train->add_option("--ham", spam_cmd.ham, "good messages");
  spam_train->add_option("--mode", spam_cmd.mode, "on-error (default) | everything")->check(CLI::IsMember({"on-error", "everything"}));
  spam_train->add_option("--passes", spam_cmd.passes, "passes over the set (batch)");
  spam_train->add_option("--memory", spam_cmd.memory_mb,
                         "MB of features kept between passes (default 256, ~60,000 messages); beyond, files are read again");
  spam_train->add_option("--labelled", spam_cmd.labelled, "file of 'spam|ham<TAB>PATH' lines, learned in that order");
  spam_train->add_option("--rate", spam_cmd.rate, "learning rate");
  spam_train->add_option("--margin", spam_cmd.margin, "near-error band around 0.5 for on-error training");
  spam_train->add_option("--ham-cost", spam_cmd.ham_cost, "how much harder a good message is learned than a spam (default 2)")
      ->check(CLI::Range(0.1, 100.0));
  spam_train->add_option("--folds", spam_cmd.folds,
                         "cross-validation folds that choose the cutoffs stored in the model (default 5; 0: keep them)")
      ->check(CLI::Range(0, 100));
  spam_train->add_option("--max-fp-rate", spam_cmd.max_fp_rate,
                         "share of the folds' good mail allowed at or above the spam cutoff (default 0: none)")
      ->check(CLI::Range(0.0, 1.0));
  spam_train->add_option("--max-fn-rate", spam_cmd.max_fn_rate,
                         "share of the folds' spam allowed below the unsure cutoff, called ham (default 0.05)")
      ->check(CLI::Range(0.0, 1.0));
  spam_train->add_option("--cv-scores", spam_cmd.cv_scores, "write the folds' scores: spam|ham<TAB>SCORE<TAB>PATH lines");
  spam_train->add_flag("--no-average", spam_cmd.no_average,
                       "keep the last weights of a batch instead of their mean over the training");
  spam_train->add_flag("--fresh", spam_cmd.fresh, "start from an empty model (replaces the file; needed after a tokenizer change)");
  spam_train->add_flag("--online", spam_cmd.online, "classify each message before learning it, in order; print the verdicts");
  auto* spam_classify = spam_top->add_subcommand("classify", "Score messages: PATH<TAB>SCORE<TAB>spam|unsure|ham");
  spam_classify->add_option("--files-from", spam_cmd.files_from, "file with one path per line, - for stdin");
  spam_classify->add_option("files", spam_cmd.files, "message files");
  auto* spam_reclassify = spam_top->add_subcommand("reclassify", "Retrain from a scored message's stored features");
  spam_reclassify->add_option("signature", spam_cmd.signature, "the message's X-Mailkeep-Signature")->required();
  spam_reclassify->add_option("--as", spam_cmd.as, "spam | ham")->required()->check(CLI::IsMember({"spam", "ham"}));
  auto* spam_learn = spam_top->add_subcommand("learn", "Learn one message from standard input as spam or ham (IMAPSieve)");
  bool learn_spam = false, learn_ham = false;
  auto* learn_spam_flag = spam_learn->add_flag("--spam", learn_spam, "the message is spam");
  auto* learn_ham_flag = spam_learn->add_flag("--ham", learn_ham, "the message is good");
  learn_spam_flag->excludes(learn_ham_flag);
  spam_learn->add_option("--lock-wait", spam_cmd.lock_wait_ms, "ms to wait for the model's lock (default 2000)")
      ->check(CLI::Range(0, 600000));
  spam_learn->callback([&] {
    if (!learn_spam && !learn_ham) throw CLI::ValidationError("learn", "one of --spam or --ham is required");
    spam_cmd.as = learn_spam ? "spam" : "ham";
  });
  auto* spam_stats = spam_top->add_subcommand("stats", "Verdict counts since a date, learned counts, errors corrected");
  spam_stats->add_option("--since", spam_cmd.since, "YYYY-MM-DD (UTC); default: the whole history");
  auto* spam_explain = spam_top->add_subcommand("explain", "Why messages score as they do: their strongest features");
  spam_explain->add_option("files", spam_cmd.files, "message files")->required();
  spam_explain->add_option("--top", spam_cmd.top, "how many features per message")->check(CLI::Range(1, 1000));
  for (auto* sub : {spam_train, spam_classify, spam_reclassify, spam_learn, spam_stats, spam_explain})
    sub->add_option("-c,--config", config_path, "INI configuration file");

  mk::app::UsersCommand users_cmd;
  mk::app::add_users_commands(app, config_path, users_cmd);
  mk::app::AccountsCommand accounts_cmd;
  mk::app::add_accounts_commands(app, config_path, accounts_cmd);
  mk::app::FilterCommand filter_cmd;
  mk::app::add_filter_commands(app, config_path, filter_cmd);
  mk::app::SrsCommand srs_cmd;
  mk::app::add_srs_commands(app, config_path, srs_cmd);
  mk::app::StoreCommand store_cmd;
  mk::app::add_store_commands(app, config_path, store_cmd);

  int man_section = 0;
  std::string man_output;
  auto* man_cmd = app.add_subcommand("man-page", "Print the manual page mailkeep(8) or mailkeep.ini(5) (man(7) text)");
  man_cmd->add_option("section", man_section, "8: the commands; 5: the configuration file")
      ->required()
      ->check(CLI::IsMember({5, 8}));
  man_cmd->add_option("-o,--output", man_output, "write to this file instead of standard output");

  auto args = query_last(argc, argv);
  std::vector<char*> arg_ptrs;
  for (auto& a : args) arg_ptrs.push_back(a.data());
  CLI11_PARSE(app, static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  if (*man_cmd) {
    const std::string page = man_section == 8 ? mk::app::man_page_commands(app) : mk::app::man_page_config();
    if (man_output.empty()) {
      std::cout << page;
      return 0;
    }
    std::ofstream f(man_output, std::ios::trunc);
    f << page;
    if (!f.flush()) {
      std::cerr << "mailkeep man-page: cannot write " << man_output << "\n";
      return 1;
    }
    return 0;
  }

  auto settings = load(config_path);
  if (!settings) return 1;
  if (*check_cmd) {
    std::cout << "# effective settings" << (config_path.empty() ? " (embedded defaults)" : " from " + config_path)
              << "\n"
              << mk::format_settings(*settings);
    return 0;
  }
  if (*stats_cmd) return archive_stats(*settings);
  if (mk::app::accounts_command_chosen(app)) {
    for (auto* sub : app.get_subcommand("accounts")->get_subcommands()) accounts_cmd.action = sub->get_name();
    mk::log::init(settings->general.log_level);  // the sync's log lines (refusals, its summary) on stderr
    return mk::app::accounts_command(*settings, accounts_cmd);
  }
  if (mk::app::store_command_chosen(app)) {
    for (auto* sub : app.get_subcommand("store")->get_subcommands()) store_cmd.action = sub->get_name();
    return mk::app::store_command(*settings, store_cmd);
  }
  if (mk::app::srs_command_chosen(app)) {
    for (auto* sub : app.get_subcommand("srs")->get_subcommands()) srs_cmd.action = sub->get_name();
    return mk::app::srs_command(*settings, srs_cmd);
  }
  if (mk::app::users_command_chosen(app)) {
    for (auto* name : {"user", "dovecot-config", "backup"})
      if (app.get_subcommand(name)->parsed()) {
        users_cmd.group = name;
        for (auto* sub : app.get_subcommand(name)->get_subcommands()) users_cmd.action = sub->get_name();
      }
    users_cmd.config_path = config_path;
    return mk::app::users_command(*settings, users_cmd);
  }
  if (*import_sub)  // opened as the caller: a root-only export stays readable after the drop
    for (auto& f : index_cmd.files) index_cmd.file_fds.push_back(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
  const bool filter_chosen = mk::app::filter_command_chosen(app);
  if ((*index_sub || *modify_sub || *import_sub || filter_chosen) && !drop_for_writing(*settings)) return 1;
  if (filter_chosen) {
    for (auto* sub : app.get_subcommand("filter")->get_subcommands()) filter_cmd.action = sub->get_name();
    return mk::app::filter_command(*settings, filter_cmd);
  }
  if (*index_sub) return mk::app::archive_index_command(*settings, index_cmd);
  for (auto& w : query_words) index_cmd.query += (index_cmd.query.empty() ? "" : " ") + w;
  if (*search_cmd) return mk::app::search_command(*settings, index_cmd);
  if (*show_cmd) return mk::app::show_command(*settings, index_cmd);
  if (*modify_sub) {
    index_cmd.query.clear();
    for (auto& w : modify_words) index_cmd.query += (index_cmd.query.empty() ? "" : " ") + w;
    return mk::app::modify_command(*settings, index_cmd);
  }
  if (*import_sub) return mk::app::import_command(*settings, index_cmd);
  if (*stats_top) return show_stats(*settings);
  for (auto* sub : alias_top->get_subcommands()) alias_cmd.action = sub->get_name();
  if (*alias_top) return alias_command(*settings, alias_cmd);
  for (auto* sub : spam_top->get_subcommands()) spam_cmd.action = sub->get_name();
  if (*spam_top) return mk::app::spam_command(*settings, spam_cmd);
  return serve(*settings, config_path);
}
