// filter_cli.cpp — see filter_cli.h. Output formats (README, "Filters"):
// list prints "ID<TAB>QUERY<TAB>ACTIONS" per filter; export prints Gmail's
// mailFilters.xml.
#include "app/filter_cli.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "app/users_cli.h"
#include "app/stores.h"
#include "filters/filters.h"
#include "index/query.h"

namespace mk::app {
namespace {

std::string index_dir(const Settings& s, const std::string& address) {
  auto at = address.rfind('@');
  return s.index.path + "/" + address.substr(at + 1) + "/" + address.substr(0, at);
}

std::string maildir(const Settings& s, const std::string& address) {
  auto at = address.rfind('@');
  return s.backup.archive + "/" + address.substr(at + 1) + "/" + address.substr(0, at);
}

int apply_existing(const Settings& s, const std::string& address, const std::vector<filters::Filter>& list) {
  auto db = index::Database::open_writable_waiting(index_dir(s, address), {s.index.language}, std::chrono::seconds(30));
  int status = 0;
  for (auto& f : list) {
    auto st = filters::apply_to_existing(*db, maildir(s, address), f, std::time(nullptr));
    db->commit();
    std::cout << "filter " << f.id << ": " << st.matched << " existing message(s) matched, " << st.moved << " moved\n";
    for (auto& e : st.errors) {
      std::cerr << "mailkeep: filter " << f.id << ": " << e << "\n";
      status = 1;
    }
  }
  return status;
}

}  // namespace

void add_filter_commands(CLI::App& app, std::string& config_path, FilterCommand& cmd) {
  auto* top = app.add_subcommand("filter", "An account's filters (Gmail's model and mailFilters.xml)");
  top->require_subcommand(1);
  auto* list = top->add_subcommand("list", "The filters: ID, query, actions");
  auto* add = top->add_subcommand("add", "Add a filter; it meets every new message as it is indexed");
  add->add_option("--query", cmd.query, "has the words (the search language)");
  add->add_option("--from", cmd.from, "from");
  add->add_option("--to", cmd.to, "to");
  add->add_option("--subject", cmd.subject, "subject");
  add->add_flag("--has-attachment", cmd.has_attachment, "has an attachment");
  add->add_option("--label", cmd.label, "apply this label");
  add->add_flag("--skip-inbox", cmd.skip_inbox, "skip the Inbox (archive it)");
  add->add_flag("--mark-read", cmd.mark_read, "mark as read");
  add->add_flag("--star", cmd.star, "star it");
  add->add_flag("--never-spam", cmd.never_spam, "never send it to Junk");
  add->add_flag("--spam", cmd.spam, "send it to Junk");
  add->add_flag("--trash", cmd.trash, "delete it (to Trash)");
  add->add_flag("--apply-existing", cmd.apply_existing, "also apply it to matching mail already archived");
  auto* del = top->add_subcommand("delete", "Delete a filter");
  del->add_option("id", cmd.id, "the filter's ID (filter list)")->required();
  auto* exp = top->add_subcommand("export", "Print the filters as Gmail's mailFilters.xml");
  auto* imp = top->add_subcommand("import", "Add the filters of a mailFilters.xml (Gmail's export)");
  imp->add_option("file", cmd.file, "the XML file")->required()->check(CLI::ExistingFile);
  imp->add_flag("--apply-existing", cmd.apply_existing, "also apply them to matching mail already archived");
  for (auto* sub : {list, add, del, exp, imp}) {
    sub->add_option("-c,--config", config_path, "INI configuration file");
    sub->add_option("--user", cmd.user, "the account, e.g. alice@example.org")->required();
  }
}

bool filter_command_chosen(const CLI::App& app) { return app.get_subcommand("filter")->parsed(); }

int filter_command(const Settings& s, const FilterCommand& cmd) {
  auto address = account_address(s, cmd.user);
  if (!address) return 1;
  auto dir = index_dir(s, *address);
  // A change with [store] url: in the turn of the account's shared filters (which first brings this
  // copy up to date), published after each save, so that every gateway files mail the same way.
  std::unique_ptr<SharedFile> share;
  std::unique_ptr<SharedFile::Turn> turn;
  if (cmd.action != "list" && cmd.action != "export") {
    try {
      auto at = address->rfind('@');
      share = Stores(s).filters_share(address->substr(at + 1) + "/" + address->substr(0, at));
      if (share) {
        std::error_code mkdir_ec;
        std::filesystem::create_directories(dir, mkdir_ec);
        turn = share->begin(filters::filters_path(dir));
      }
    } catch (const std::exception& e) {
      std::cerr << "mailkeep: the shared filters: " << e.what() << "\n";
      return 75;
    }
  }
  auto publish = [&turn] {
    try {
      if (turn) turn->publish();
      return true;
    } catch (const std::exception& e) {
      std::cerr << "mailkeep: saved here, but not shared with the other gateways: " << e.what() << "\n";
      return false;
    }
  };
  auto current = filters::load_filters(dir);
  if (!current.error.empty()) {
    std::cerr << "mailkeep: " << current.error << "\n";
    return 1;
  }
  if (cmd.action == "list") {
    for (auto& f : current.filters) std::cout << f.id << "\t" << f.query() << "\t" << f.actions() << "\n";
    return 0;
  }
  if (cmd.action == "export") {
    std::cout << filters::format_filters(current.filters);
    return 0;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (cmd.action == "delete") {
    auto before = current.filters.size();
    std::erase_if(current.filters, [&](auto& f) { return f.id == cmd.id; });
    if (current.filters.size() == before) {
      std::cerr << "mailkeep: no filter " << cmd.id << " for " << *address << "\n";
      return 1;
    }
    if (auto err = filters::save_filters(dir, current.filters); !err.empty()) {
      std::cerr << "mailkeep: " << err << "\n";
      return 1;
    }
    if (!publish()) return 75;
    std::cout << "filter " << cmd.id << " deleted\n";
    return 0;
  }
  std::vector<filters::Filter> added;
  if (cmd.action == "add") {
    filters::Filter f;
    f.has_words = cmd.query;
    f.from = cmd.from;
    f.to = cmd.to;
    f.subject = cmd.subject;
    f.has_attachment = cmd.has_attachment;
    f.label = cmd.label;
    f.skip_inbox = cmd.skip_inbox;
    f.mark_read = cmd.mark_read;
    f.star = cmd.star;
    f.never_spam = cmd.never_spam;
    f.spam = cmd.spam;
    f.trash = cmd.trash;
    if (f.query().empty()) {
      std::cerr << "mailkeep: a filter needs criteria (--query, --from, --to, --subject, --has-attachment)\n";
      return 2;
    }
    if (f.actions().empty()) {
      std::cerr << "mailkeep: a filter needs an action (--label, --skip-inbox, --mark-read, --star, --never-spam, "
                   "--spam, --trash)\n";
      return 2;
    }
    added.push_back(std::move(f));
  } else {  // import
    std::ifstream in(cmd.file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = filters::parse_filters(text.str());
    if (!parsed.error.empty()) {
      std::cerr << "mailkeep: " << cmd.file << ": " << parsed.error << "\n";
      return 1;
    }
    added = std::move(parsed.filters);
  }
  for (auto& f : added) {
    auto parsed = index::parse_query(f.query(), std::time(nullptr));
    if (!parsed.ok()) {
      std::cerr << "mailkeep: filter query `" << f.query() << "`: " << parsed.error_text << "\n";
      return 2;
    }
    f.id = filters::new_filter_id(current.filters);
    current.filters.push_back(f);
  }
  if (auto err = filters::save_filters(dir, current.filters); !err.empty()) {
    std::cerr << "mailkeep: " << err << "\n";
    return 1;
  }
  if (!publish()) return 75;
  std::vector<filters::Filter> fresh(current.filters.end() - std::ptrdiff_t(added.size()), current.filters.end());
  for (auto& f : fresh) std::cout << "filter " << f.id << " added: " << f.query() << " → " << f.actions() << "\n";
  return cmd.apply_existing ? apply_existing(s, *address, fresh) : 0;
}

}  // namespace mk::app
