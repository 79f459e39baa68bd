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
#include <iostream>
#include <thread>

#include "app/privileges.h"
#include "archive/accounts.h"
#include "archive/archive.h"
#include "config/settings.h"
#include "core/log.h"
#include "delivery/outbox_upstream.h"
#include "delivery/smtp_upstream.h"
#include "route/router.h"
#include "smtp/server.h"

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
  mk::delivery::SmtpUpstreamConfig cfg;
  cfg.hosts = hosts;
  cfg.helo_name = s.delivery.helo_name;
  cfg.connect_timeout = std::chrono::seconds(s.delivery.connect_timeout);
  cfg.timeout = std::chrono::seconds(s.delivery.timeout);
  return mk::delivery::make_smtp_upstream_factory(cfg);
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

int serve(const mk::Settings& settings) {
  mk::log::init(settings.general.log_level);
  std::signal(SIGPIPE, SIG_IGN);

  // Blocking file work (archive copies, outbox, fsync) runs here; many
  // threads so that concurrent fsyncs are committed together by the file system.
  asio::thread_pool blocking(16);

  std::unique_ptr<mk::delivery::UpstreamFactory> smarthost;
  if (!settings.delivery.smarthost.empty()) {
    smarthost = smtp_factory(settings, settings.delivery.smarthost);
    spdlog::info("relaying to smarthost {}", settings.delivery.smarthost.front().to_string());
  } else {
    smarthost = mk::delivery::make_outbox_upstream_factory(settings.delivery.outbox, blocking.get_executor());
    spdlog::info("no smarthost set: relayed mail goes to the outbox Maildir {}", settings.delivery.outbox);
  }
  // The provider's inbound servers; by default the smarthost (then inbound
  // and relayed mail may share a transaction).
  std::unique_ptr<mk::delivery::UpstreamFactory> backup_upstream;
  if (!settings.backup.upstream.empty()) backup_upstream = smtp_factory(settings, settings.backup.upstream);

  std::unique_ptr<mk::archive::AccountDirectory> accounts;
  if (!settings.backup.domains.empty()) {
    accounts = std::make_unique<mk::archive::AccountDirectory>(settings.backup.accounts);
    accounts->reload(/*force=*/true);
  }

  mk::route::Router router(settings, accounts.get());
  mk::smtp::SessionEnvironment env;
  env.settings = &settings;
  env.router = &router;
  env.upstream_for = [&](mk::route::Destination d) -> mk::delivery::UpstreamFactory* {
    if (d == mk::route::Destination::BackupInbound && backup_upstream) return backup_upstream.get();
    return smarthost.get();
  };
  env.spool_dir = settings.smtp.spool_dir;
  env.blocking = blocking.get_executor();

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
  try {
    server.bind();
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }

  // Ports are bound: from here on, run as [general] user, which owns our data.
  std::vector<std::string> data_dirs{settings.smtp.spool_dir};
  if (settings.delivery.smarthost.empty()) data_dirs.push_back(settings.delivery.outbox);
  if (!settings.backup.domains.empty()) data_dirs.push_back(settings.backup.archive);
  if (auto err = mk::app::drop_privileges(settings.general.user, data_dirs); !err.empty()) {
    spdlog::critical("{}", err);
    return 1;
  }
  server.start();
  if (accounts)
    asio::co_spawn(main_io, watch_accounts(*accounts, std::chrono::seconds(settings.backup.reload_interval)),
                   asio::detached);

  auto stop_all = [&workers] {
    for (auto& w : workers) w->stop();
  };
  asio::signal_set signals(main_io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: stopping", sig);
    server.stop(stop_all);
  });

  spdlog::info("mailkeep {} started: {} workers, hostname {}", MAILKEEP_VERSION, threads, settings.smtp.hostname);
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([w = workers[i].get()] { w->run(); });
  main_io.run();
  for (auto& t : pool) t.join();
  blocking.join();
  spdlog::info("mailkeep stopped");
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
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mailkeep — a mail gateway that keeps every message"};
  app.set_version_flag("--version", std::string("mailkeep ") + MAILKEEP_VERSION);
  app.require_subcommand(1);

  std::string config_path;
  auto* serve_cmd = app.add_subcommand("serve", "Run the gateway (embedded defaults without -c)");
  serve_cmd->add_option("-c,--config", config_path, "INI configuration file");
  auto* check_cmd = app.add_subcommand("check-config", "Validate the configuration and print the effective settings");
  check_cmd->add_option("-c,--config", config_path, "INI configuration file");
  auto* archive_cmd = app.add_subcommand("archive", "Inspect the mail archive");
  archive_cmd->require_subcommand(1);
  auto* stats_cmd = archive_cmd->add_subcommand("stats", "Messages and bytes per user and folder");
  stats_cmd->add_option("-c,--config", config_path, "INI configuration file");

  CLI11_PARSE(app, argc, argv);

  auto settings = load(config_path);
  if (!settings) return 1;
  if (*check_cmd) {
    std::cout << "# effective settings" << (config_path.empty() ? " (embedded defaults)" : " from " + config_path)
              << "\n"
              << mk::format_settings(*settings);
    return 0;
  }
  if (*stats_cmd) return archive_stats(*settings);
  return serve(*settings);
}
