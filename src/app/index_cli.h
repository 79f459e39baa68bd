// index_cli.h — `mailkeep archive index`, `mailkeep search`, `mailkeep show`
// and the index part of `mailkeep archive stats`.
#pragma once
#include <string>
#include <vector>

#include "config/settings.h"

namespace mk::app {

struct IndexCommand {
  std::string user;  // ADDR; empty = every account (archive index)
  bool rebuild = false;
  std::string query;  // search
  size_t limit = 50, offset = 0;
  bool messages = false, json = false;
  std::string id;  // show
  // modify
  bool to_archive = false, to_inbox = false, to_trash = false, to_spam = false;
  bool read = false, unread = false, star = false, unstar = false;
  std::vector<std::string> labels, unlabels;
  std::vector<std::string> files;  // import
  std::vector<int> file_fds;       // import: opened before the privilege drop
};

// Exit status: 0 ok, 1 error, 2 malformed query.
int archive_index_command(const Settings& settings, const IndexCommand& cmd);
int search_command(const Settings& settings, const IndexCommand& cmd);
int show_command(const Settings& settings, const IndexCommand& cmd);
int modify_command(const Settings& settings, const IndexCommand& cmd);
int import_command(const Settings& settings, const IndexCommand& cmd);
// Lines for `archive stats`: per account, indexed messages and files not yet indexed.
void print_index_stats(const Settings& settings);

}  // namespace mk::app
