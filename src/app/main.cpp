// main.cpp — the mailkeep command line: `serve`, `check-config`; wiring of
// settings, router, upstreams and the SMTP server; signals. The only code not
// linked into tests.
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <thread>

#include "config/settings.h"
#include "core/log.h"
#include "delivery/outbox_upstream.h"
#include "delivery/smtp_upstream.h"
#include "route/router.h"
#include "smtp/server.h"

namespace {

// Loads -c FILE, or the embedded defaults without one. Prints errors; nullopt on failure.
std::optional<mk::Settings> load(const std::string& path) {
  if (path.empty()) return mk::default_settings();
  auto result = mk::load_settings_file(path);
  for (auto& e : result.errors) std::cerr << e << "\n";
  if (!result.ok()) return std::nullopt;
  return result.settings;
}

int serve(const mk::Settings& settings) {
  mk::log::init(settings.general.log_level);
  std::signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<mk::delivery::UpstreamFactory> relay;
  if (!settings.delivery.smarthost.empty()) {
    mk::delivery::SmtpUpstreamConfig cfg;
    cfg.hosts = settings.delivery.smarthost;
    cfg.helo_name = settings.delivery.helo_name;
    cfg.connect_timeout = std::chrono::seconds(settings.delivery.connect_timeout);
    cfg.timeout = std::chrono::seconds(settings.delivery.timeout);
    relay = mk::delivery::make_smtp_upstream_factory(cfg);
    spdlog::info("relaying to smarthost {}", settings.delivery.smarthost.front().to_string());
  } else {
    relay = mk::delivery::make_outbox_upstream_factory(settings.delivery.outbox);
    spdlog::info("no smarthost set: relayed mail goes to the outbox Maildir {}", settings.delivery.outbox);
  }

  std::error_code fs_error;
  std::filesystem::create_directories(settings.smtp.spool_dir, fs_error);
  if (fs_error) {
    spdlog::critical("cannot create spool directory {}: {}", settings.smtp.spool_dir, fs_error.message());
    return 1;
  }

  mk::route::Router router(settings);
  mk::smtp::SessionEnvironment env;
  env.settings = &settings;
  env.router = &router;
  env.upstream_for = [&](mk::route::Destination) { return relay.get(); };
  env.spool_dir = settings.smtp.spool_dir;

  // One io_context per thread (see server.h).
  unsigned threads = settings.smtp.threads ? settings.smtp.threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::unique_ptr<boost::asio::io_context>> workers;
  std::vector<boost::asio::io_context*> worker_ptrs;
  for (unsigned i = 0; i < threads; ++i) {
    workers.push_back(std::make_unique<boost::asio::io_context>(1));
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
  server.start();

  auto stop_all = [&workers] {
    for (auto& w : workers) w->stop();
  };
  boost::asio::signal_set signals(main_io, SIGTERM, SIGINT);
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
  spdlog::info("mailkeep stopped");
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

  CLI11_PARSE(app, argc, argv);

  auto settings = load(config_path);
  if (!settings) return 1;
  if (*check_cmd) {
    std::cout << "# effective settings" << (config_path.empty() ? " (embedded defaults)" : " from " + config_path)
              << "\n"
              << mk::format_settings(*settings);
    return 0;
  }
  return serve(*settings);
}
