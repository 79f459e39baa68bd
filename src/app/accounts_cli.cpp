// accounts_cli.cpp — see accounts_cli.h.
#include "app/accounts_cli.h"
#include "app/stores.h"

#include <pwd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>

#include "archive/accounts.h"
#include "core/log.h"
#include "directory/sync.h"

namespace mk::app {

void add_accounts_commands(CLI::App& app, std::string& config_path, AccountsCommand& cmd) {
  auto* top = app.add_subcommand("accounts", "The archived accounts: sync them from the directory, list them");
  top->require_subcommand(1);
  auto* sync = top->add_subcommand("sync", "Fetch the accounts from [directory] provider now and print what changed");
  sync->add_option("-c,--config", config_path, "INI configuration file");
  sync->add_flag("--dry-run", cmd.dry_run, "print what would change, write nothing");
  sync->add_flag("--force", cmd.force, "apply a sync that removes more than [directory] max_removal");
  auto* list = top->add_subcommand("list", "Every address and the account that receives its mail");
  list->add_option("-c,--config", config_path, "INI configuration file");
}

bool accounts_command_chosen(const CLI::App& app) { return app.get_subcommand("accounts")->parsed(); }

namespace {

int list_accounts(const Settings& s) {
  archive::AccountDirectory dir(accounts_file(s));
  if (!dir.reload(/*force=*/true)) {
    std::cerr << "mailkeep: cannot read the account list " << accounts_file(s) << "\n";
    return 1;
  }
  std::vector<std::pair<std::string, std::string>> rows;
  auto list = dir.snapshot();
  for (size_t i = 0; i < list->size(); ++i) {
    auto e = list->at(i);
    // A name without '@' is that account in every backup domain; so is a short alias.
    std::vector<std::string> domains;
    if (e.name.find('@') == std::string_view::npos) domains = s.backup.domains;
    else domains = {""};
    for (auto& d : domains) {
      auto account = d.empty() ? std::string(e.name) : std::string(e.name) + "@" + d;
      rows.emplace_back(account, account);
      for (auto a : e.aliases) {
        if (a.find('@') != std::string_view::npos) {
          rows.emplace_back(std::string(a), account);
        } else if (!d.empty()) {
          rows.emplace_back(std::string(a) + "@" + d, account);
        } else {
          for (auto& other : s.backup.domains) rows.emplace_back(std::string(a) + "@" + other, account);
        }
      }
    }
  }
  std::sort(rows.begin(), rows.end());
  for (auto& [address, account] : rows) std::cout << address << " " << account << "\n";
  return 0;
}

int sync_accounts(const Settings& s, const AccountsCommand& cmd) {
  if (s.directory.provider == "file") {
    std::cerr << "mailkeep: [directory] provider = file: the accounts come from " << s.backup.accounts
              << "; set provider = google or microsoft to sync\n";
    return 1;
  }
  archive::AccountDirectory current(s.directory.cache);
  if (::access(s.directory.cache.c_str(), F_OK) == 0 && !current.reload(/*force=*/true)) {
    std::cerr << "mailkeep: the synced list " << s.directory.cache << " is broken; fix or remove it\n";
    return 1;
  }
  directory::SyncOptions opt;
  opt.dry_run = cmd.dry_run;
  opt.force = cmd.force;
  if (::geteuid() == 0 && s.general.user != "root") {
    // The server, running as [general] user, rewrites this file at its next sync.
    if (auto* pw = ::getpwnam(s.general.user.c_str())) {
      opt.owner_uid = pw->pw_uid;
      opt.owner_gid = pw->pw_gid;
    }
  }
  std::unique_ptr<directory::Syncer> syncer;
  try {
    syncer = std::make_unique<directory::Syncer>(s, directory::make_provider(s));
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: " << e.what() << "\n";
    return 1;
  }
  // With [store] url: in the turn of the shared list (which first brings the file up to date), and
  // published after, so that every gateway has it at once.
  Stores stores(s);
  std::unique_ptr<SharedFile> share;
  std::unique_ptr<SharedFile::Turn> turn;
  try {
    share = stores.accounts_share();
    if (share && !cmd.dry_run) {
      turn = share->begin(current.path());
      current.reload();
    }
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: the shared account list: " << e.what() << "\n";
    return 75;
  }
  auto r = syncer->run(*current.snapshot(), opt);
  if (r.ok && turn && !cmd.dry_run) {
    try {
      turn->publish();
    } catch (const std::exception& e) {
      std::cerr << "mailkeep: the list was written here but not shared with the other gateways: " << e.what() << "\n";
      return 75;
    }
  }
  if (!r.ok && !r.held) {
    std::cerr << "mailkeep: directory sync failed: " << r.error << "; the account list is unchanged\n";
    return 1;
  }
  for (auto& line : r.diff) std::cout << line << "\n";
  std::cout << "accounts: " << r.accounts << ", added: " << r.added << ", removed: " << r.removed
            << ", changed: " << r.changed << "\n";
  if (r.held) {
    std::cout << "held: this sync would remove " << r.removed << " accounts, more than [directory] max_removal "
              << s.directory.max_removal_percent << "%; nothing written. Run mailkeep accounts sync --force to apply it\n";
    return 3;
  }
  if (cmd.dry_run) std::cout << "dry run: nothing written\n";
  return 0;
}

}  // namespace

int accounts_command(const Settings& settings, const AccountsCommand& cmd) {
  return cmd.action == "sync" ? sync_accounts(settings, cmd) : list_accounts(settings);
}

}  // namespace mk::app
