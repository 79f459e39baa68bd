// store_cli.cpp — see store_cli.h.
#include "app/store_cli.h"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

#include "store/migrate.h"
#include "store/pg_shared_file.h"

namespace mk::app {

void add_store_commands(CLI::App& app, std::string& config_path, StoreCommand& cmd) {
  auto* top = app.add_subcommand("store", "The shared store ([store] url): copy the SQLite store into PostgreSQL");
  top->require_subcommand(1);
  auto* migrate = top->add_subcommand(
      "migrate",
      "Copy the SQLite store (aliases), the spam history, and the spam model and synced account list into "
      "PostgreSQL: resumable, rows already there are skipped, counts verified at the end");
  migrate->add_option("-c,--config", config_path, "INI configuration file");
  migrate->add_option("--from", cmd.from, "sqlite:PATH (default: sqlite:[store] path)");
  migrate->add_option("--to", cmd.to, "postgresql://… (default: [store] url)");
}

bool store_command_chosen(const CLI::App& app) { return app.get_subcommand("store")->parsed(); }

int store_command(const Settings& settings, const StoreCommand& cmd) {
  std::string from = cmd.from.empty() ? "sqlite:" + settings.store.path : cmd.from;
  std::string to = cmd.to.empty() ? settings.store.url : cmd.to;
  if (!from.starts_with("sqlite:") || from.size() == 7) {
    std::cerr << "mailkeep store migrate: --from must be sqlite:PATH, got '" << from << "'\n";
    return 1;
  }
  if (!to.starts_with("postgresql://") && !to.starts_with("postgres://")) {
    std::cerr << "mailkeep store migrate: --to must be a postgresql:// URI (or set [store] url)\n";
    return 1;
  }
  std::string path = from.substr(7);
  std::error_code ec;
  auto exists = [&ec](const std::string& p) { return !p.empty() && std::filesystem::exists(p, ec); };
  const bool synced = settings.directory.provider != "file";
  if (!exists(path) && !exists(settings.spam.history) && !exists(settings.spam.model) &&
      !(synced && exists(settings.directory.cache))) {
    std::cerr << "mailkeep store migrate: " << path << ": no such SQLite store (and no spam history, model or synced "
              << "account list to copy)\n";
    return 1;
  }
  store::PgPool pool(to, 2);
  auto say = [](const std::string& line) { std::cerr << line << "\n"; };
  bool verified = true;
  try {
    if (exists(path)) {
      auto r = store::migrate_sqlite_aliases(path, pool, say);
      std::cout << "alias_ids " << r.ids << " copied " << r.ids_copied << " present " << r.ids_present << "\n"
                << "aliases " << r.aliases << " copied " << r.aliases_copied << " present " << r.aliases_present << "\n";
      verified = verified && r.verified();
    } else {
      std::cout << "aliases none (no " << path << ")\n";
    }
    if (exists(settings.spam.history)) {
      auto h = store::migrate_sqlite_history(settings.spam.history, pool, say);
      std::cout << "spam_verdicts " << h.verdicts << " copied " << h.verdicts_copied << " present " << h.verdicts_present
                << "\n"
                << "spam_features " << h.features << " copied " << h.features_copied << " present " << h.features_present
                << "\n";
      verified = verified && h.verified();
    }
    // The files every gateway shares: this gateway's copy, unless PostgreSQL has one.
    auto file = [&](const char* name, const std::string& file_path) {
      if (!exists(file_path)) return;
      auto done = store::migrate_shared_file(name, file_path, pool);
      std::cout << name << " " << (done == store::FileCopy::Copied ? "copied" : "already shared") << "\n";
    };
    if (settings.spam.enabled || exists(settings.spam.model)) file(store::kSpamModel, settings.spam.model);
    if (synced) file(store::kAccounts, settings.directory.cache);
    file(store::kPasswd, settings.users.passwd);
  } catch (const db::Error& e) {
    std::string what = e.what();
    std::cerr << "mailkeep store migrate: " << what << "\n";
    bool unreachable = what.find("cannot connect") != std::string::npos || what.find("unavailable") != std::string::npos;
    return unreachable ? 75 : 1;
  }
  std::cout << "to " << store::PgPool::redacted(to) << "\n"
            << "verified " << (verified ? "yes" : "no") << "\n";
  if (!verified) {
    std::cerr << "mailkeep store migrate: not every source row is in PostgreSQL (purged there meanwhile?)\n";
    return 1;
  }
  return 0;
}

}  // namespace mk::app
