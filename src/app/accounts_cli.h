// accounts_cli.h — `mailkeep accounts sync [--dry-run] [--force]` and
// `mailkeep accounts list`: the directory sync by hand, and who receives
// mail for which address.
#pragma once
#include <string>

#include "config/settings.h"

namespace CLI {
class App;
}

namespace mk::app {

struct AccountsCommand {
  std::string action;  // sync | list
  bool dry_run = false, force = false;
};

void add_accounts_commands(CLI::App& app, std::string& config_path, AccountsCommand& cmd);
bool accounts_command_chosen(const CLI::App& app);
// Exit codes: 0 done, 1 failed, 3 held (too many removals; nothing written).
int accounts_command(const Settings& settings, const AccountsCommand& cmd);

}  // namespace mk::app
