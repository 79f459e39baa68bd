// srs_cli.h — the SRS rewriter from [aliases] srs_domain and srs_secret_file
// (for `serve` and the command), and `mailkeep srs forward|reverse [ADDRESS…]`:
// what an address becomes, and which sender a bounce address goes back to.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config/settings.h"
#include "srs/srs.h"

namespace CLI {
class App;
}

namespace mk::app {

// Null when [aliases] srs_domain is empty; throws std::runtime_error naming
// the secret file when it cannot be read.
std::unique_ptr<srs::Rewriter> load_srs(const Settings& s);

struct SrsCommand {
  std::string action;  // forward | reverse
  std::vector<std::string> addresses;  // none: one per line on standard input
};

void add_srs_commands(CLI::App& app, std::string& config_path, SrsCommand& cmd);
bool srs_command_chosen(const CLI::App& app);
// Prints one line per address: its rewriting, or "error: …" (and exit code 1
// at the end). Exit 2: SRS is not configured.
int srs_command(const Settings& settings, const SrsCommand& cmd);

}  // namespace mk::app
