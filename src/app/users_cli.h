// users_cli.h — the provider-is-gone commands: `mailkeep user passwd | list |
// lock | unlock | delete`, `mailkeep dovecot-config` and `mailkeep backup replay`.
#pragma once
#include <optional>
#include <string>

#include "config/settings.h"

namespace CLI {
class App;
}

namespace mk::app {

struct UsersCommand {
  std::string group;   // "user" | "dovecot-config" | "backup"
  std::string action;  // user: passwd | list | lock | unlock | delete; backup: replay
  std::string address;
  bool from_stdin = false;
  // dovecot-config
  std::string listen = "*";
  unsigned imap_port = 143, imaps_port = 993;
  std::string base_dir, log_path;
  std::string sieve_dir;    // the IMAPSieve scripts ([spam] enabled); default: beside [spam] model
  std::string config_path;  // -c as given: what the scripts pass to `mailkeep spam learn`
  // backup replay
  std::string user, since;
  bool dry_run = false;
};

// Adds the commands to `app`; each takes -c into `config_path`.
void add_users_commands(CLI::App& app, std::string& config_path, UsersCommand& cmd);
// True if one of them was chosen on the command line.
bool users_command_chosen(const CLI::App& app);
int users_command(const Settings& settings, const UsersCommand& cmd);

// `input` as an archived account's address (lower-cased), or nullopt after
// saying on stderr why not.
std::optional<std::string> account_address(const Settings& settings, const std::string& input);

}  // namespace mk::app
