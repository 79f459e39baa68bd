// store_cli.h — `mailkeep store migrate -c FILE [--from sqlite:PATH] [--to postgresql://…]`:
// the SQLite store's aliases copied into PostgreSQL (store/migrate.h).
#pragma once
#include <string>

#include "config/settings.h"

namespace CLI {
class App;
}

namespace mk::app {

struct StoreCommand {
  std::string action;  // migrate
  std::string from;    // sqlite:PATH; empty: sqlite:[store] path
  std::string to;      // a PostgreSQL URI; empty: [store] url
};

void add_store_commands(CLI::App& app, std::string& config_path, StoreCommand& cmd);
bool store_command_chosen(const CLI::App& app);
// 0: copied and verified; 1: bad arguments, a source that cannot be read, or
// a failed check; 75: PostgreSQL unreachable (run it again: it resumes).
int store_command(const Settings& settings, const StoreCommand& cmd);

}  // namespace mk::app
