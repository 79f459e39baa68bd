// filter_cli.h — `mailkeep filter list | add | delete | export | import`:
// an account's Gmail-style filters (filters/filters.h).
#pragma once
#include <string>

#include "config/settings.h"

namespace CLI {
class App;
}

namespace mk::app {

struct FilterCommand {
  std::string action, user, id, file;
  std::string query, from, to, subject, label;
  bool has_attachment = false, skip_inbox = false, mark_read = false, star = false, never_spam = false, spam = false,
       trash = false, apply_existing = false;
};

void add_filter_commands(CLI::App& app, std::string& config_path, FilterCommand& cmd);
bool filter_command_chosen(const CLI::App& app);
int filter_command(const Settings& settings, const FilterCommand& cmd);

}  // namespace mk::app
