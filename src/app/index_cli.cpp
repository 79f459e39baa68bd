// index_cli.cpp — see index_cli.h. The output formats are documented in the
// README ("Search the archive"); scripts depend on them.
#include "app/index_cli.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <thread>

#include "archive/accounts.h"
#include "core/log.h"
#include "archive/archive.h"
#include "core/strings.h"
#include "route/router.h"
#include "index/indexer.h"
#include "index/search.h"
#include "index/sync.h"
#include "mailbox/mailbox.h"

namespace mk::app {
namespace {

namespace json = boost::json;
std::atomic<bool> interrupted{false};

void on_interrupt(int) { interrupted = true; }

index::IndexOptions index_options(const Settings& s) { return {s.index.language}; }

// "alice@example.org" → "example.org/alice", or an error on stderr.
bool account_of(const Settings& s, const std::string& addr, std::string& account) {
  auto at = addr.rfind('@');
  if (at == std::string::npos || at == 0) {
    std::cerr << "mailkeep: --user expects an address such as alice@example.org, got '" << addr << "'\n";
    return false;
  }
  auto local = to_lower(addr.substr(0, at)), domain = to_lower(addr.substr(at + 1));
  if (std::find(s.backup.domains.begin(), s.backup.domains.end(), domain) == s.backup.domains.end()) {
    std::cerr << "mailkeep: " << domain << " is not one of [backup] domains\n";
    return false;
  }
  if (!archive::valid_account_name(local)) {
    std::cerr << "mailkeep: '" << local << "' is not a valid account name\n";
    return false;
  }
  // An alias address (sales@ of alice@) means its account's archive; an
  // address no longer listed still names its archive, which stays.
  archive::AccountDirectory accounts(accounts_file(s));
  auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::off);
  accounts.reload(/*force=*/true);
  spdlog::set_level(level);
  if (auto a = route::Router(s, &accounts).account_of_address(local + "@" + domain)) {
    local = a->local;
    domain = a->domain;
  }
  account = domain + "/" + local;
  return true;
}

// The account's index for reading; null (and said why) when there is none or it cannot be opened.
std::unique_ptr<index::Database> open_reader(const Settings& s, const std::string& account) {
  try {
    auto db = index::Database::open_readonly(s.index.path + "/" + account, index_options(s));
    if (!db) std::cerr << "mailkeep: no index for " << account << " yet (run mailkeep archive index)\n";
    return db;
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: " << e.what() << "\n";
    return nullptr;
  }
}

// The writer's lock, waiting (up to 30 s) while the server's indexer holds it for a batch.
std::unique_ptr<index::Database> open_writer(const Settings& s, const std::string& account) {
  return index::Database::open_writable_waiting(s.index.path + "/" + account, index_options(s),
                                                std::chrono::seconds(30), &interrupted);
}

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  for (auto& s : v) a.emplace_back(s);
  return a;
}

json::object message_json(const index::StoredMessage& m) {
  json::object o;
  o["id"] = m.id;
  o["conversation"] = m.conversation;
  o["message_id"] = m.message_id;
  o["date"] = iso8601_utc(m.date);
  o["timestamp"] = m.date;
  o["from"] = m.from;
  o["from_address"] = m.from_address;
  o["to"] = strings(m.to);
  o["cc"] = strings(m.cc);
  o["subject"] = m.subject;
  o["folder"] = m.file.folder;
  o["flags"] = m.file.flags();
  o["labels"] = strings(m.labels);
  o["size"] = m.size;
  o["path"] = m.file.rel_path();
  json::array atts;
  for (auto& a : m.attachments) {
    if (a.filename.empty() && a.type.rfind("image/", 0) == 0) continue;  // inline images are not attachments
    atts.push_back(json::object{{"filename", a.filename}, {"type", a.type}, {"size", a.size}});
  }
  o["attachments"] = std::move(atts);
  o["list"] = m.list_id;
  o["snippet"] = m.snippet;
  return o;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

void progress_line(const std::string& account, const index::SyncProgress& p,
                   std::chrono::steady_clock::time_point start) {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double rate = secs > 0 ? p.done / secs : 0;
  double left = rate > 0 ? (p.total - p.done) / rate : 0;
  std::fprintf(stderr, "\r%s: %llu/%llu messages, %.0f msg/s, %.0f s left   ", account.c_str(),
               static_cast<unsigned long long>(p.done), static_cast<unsigned long long>(p.total), rate, left);
}

}  // namespace

int archive_index_command(const Settings& s, const IndexCommand& cmd) {
  std::vector<std::string> accounts;
  if (!cmd.user.empty()) {
    std::string a;
    if (!account_of(s, cmd.user, a)) return 1;
    accounts.push_back(a);
  } else {
    accounts = index::archive_accounts(s.backup.archive, s.backup.domains);
  }
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  index::init_mime();
  const bool tty = ::isatty(2);
  auto start = std::chrono::steady_clock::now();
  index::SyncStats total;
  uint64_t indexed = 0;
  int status = 0;
  for (auto& account : accounts) {
    if (interrupted) break;
    auto dir = s.index.path + "/" + account;
    try {
      if (cmd.rebuild) {
        std::error_code ec;
        std::filesystem::remove_all(dir + "/xapian", ec);
      }
      auto db = open_writer(s, account);
      index::SyncOptions opt;
      opt.stop = &interrupted;
      opt.on_skip = [&](const std::string& file, const std::string& note) {
        std::cerr << (tty ? "\n" : "") << "mailkeep: " << account << "/" << file << ": " << note << "\n";
      };
      auto acct_start = std::chrono::steady_clock::now();
      if (tty) opt.progress = [&](const index::SyncProgress& p) { progress_line(account, p, acct_start); };
      auto st = index::sync_maildir(*db, s.backup.archive + "/" + account, opt);
      if (tty) std::fprintf(stderr, "\n");
      // Bulk inserts leave Xapian's B-trees half full.
      if (!interrupted && st.added >= 1000 && st.added * 5 >= db->message_count()) db->compact();
      total += st;
      indexed += db->message_count();
    } catch (const std::exception& e) {
      std::cerr << "mailkeep: " << account << ": " << e.what() << "\n";
      status = 1;
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // N: the messages the index holds now, over the accounts of this run.
  std::printf("indexed %llu messages (%llu added, %llu updated, %llu removed) in %.2fs\n",
              static_cast<unsigned long long>(indexed),
              static_cast<unsigned long long>(total.added), static_cast<unsigned long long>(total.updated),
              static_cast<unsigned long long>(total.removed), secs);
  if (total.failed) std::printf("%llu files could not be parsed (see above)\n", static_cast<unsigned long long>(total.failed));
  if (interrupted) {
    std::printf("interrupted: what was done is kept; run the command again to finish\n");
    return 130;
  }
  return status;
}

int search_command(const Settings& s, const IndexCommand& cmd) {
  std::string account;
  if (!account_of(s, cmd.user, account)) return 1;
  index::SearchRequest req{cmd.query, cmd.offset, cmd.limit, cmd.messages, static_cast<int64_t>(std::time(nullptr))};
  // A malformed query is an error whether or not an index exists yet.
  auto parsed = index::parse_query(cmd.query, req.now);
  if (!parsed.ok()) {
    std::cerr << "mailkeep: " << parsed.error_text << "\n";
    return 2;
  }
  auto db = open_reader(s, account);
  if (!db) return 1;
  index::SearchResult r;
  try {
    r = index::search(*db, req);
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: search failed: " << e.what() << "\n";
    return 1;
  }
  if (!r.ok()) {
    std::cerr << "mailkeep: " << r.error_text << "\n";
    return 2;
  }
  if (cmd.json) {
    json::object o{{"query", cmd.query}, {"offset", cmd.offset}, {"limit", cmd.limit}, {"total", r.total},
                     {"total_exact", r.total_exact}};
    if (cmd.messages) {
      json::array a;
      for (auto& m : r.messages) a.push_back(message_json(m));
      o["messages"] = std::move(a);
    } else {
      json::array a;
      for (auto& c : r.conversations)
        a.push_back(json::object{{"id", c.id},
                                 {"date", iso8601_utc(c.date)},
                                 {"timestamp", c.date},
                                 {"subject", c.subject},
                                 {"senders", strings(c.senders)},
                                 {"messages", c.messages},
                                 {"matched", c.matched},
                                 {"labels", strings(c.labels)},
                                 {"folders", strings(c.folders)},
                                 {"unread", c.unread},
                                 {"snippet", c.snippet}});
      o["conversations"] = std::move(a);
    }
    std::cout << json::serialize(o) << "\n";
    return 0;
  }
  if (cmd.messages) {
    for (auto& m : r.messages)
      std::cout << format_utc(m.date, "%Y-%m-%d %H:%M") << "\t" << m.from << "\t" << m.subject << "\t"
                << m.file.folder << "\t" << m.file.flags() << "\t" << join(m.labels, ",") << "\t" << m.id << "\n";
  } else {
    for (auto& c : r.conversations)
      std::cout << format_utc(c.date, "%Y-%m-%d %H:%M") << "\t" << join(c.senders, ", ") << "\t" << c.subject << "\t"
                << c.messages << "\t" << join(c.labels, ",") << "\t" << c.id << "\n";
  }
  std::cerr << (r.total_exact ? "" : "about ") << r.total << (cmd.messages ? " messages" : " conversations") << "\n";
  return 0;
}

int show_command(const Settings& s, const IndexCommand& cmd) {
  std::string account;
  if (!account_of(s, cmd.user, account)) return 1;
  auto db = open_reader(s, account);
  if (!db) return 1;
  std::vector<index::StoredMessage> messages;
  if (auto m = index::message_by_id(*db, cmd.id)) messages.push_back(*m);
  else messages = index::conversation_messages(*db, cmd.id);
  if (messages.empty()) {
    std::cerr << "mailkeep: no conversation or message '" << cmd.id << "' for " << cmd.user << "\n";
    return 1;
  }
  const std::string maildir = s.backup.archive + "/" + account;
  json::array out;
  for (auto& m : messages) {
    index::ParsedMessage pm;
    std::string error;
    index::ParseOptions po;
    po.arrival = m.file.arrival();
    bool parsed = index::parse_message_file(maildir + "/" + m.file.rel_path(), po, pm, error);
    if (cmd.json) {
      auto o = message_json(m);
      o["text"] = parsed ? pm.body_text : "";
      out.push_back(std::move(o));
      continue;
    }
    if (&m != &messages.front()) std::cout << "\n" << std::string(72, '-') << "\n";
    std::cout << "From: " << m.from << "\n";
    if (!m.to.empty()) std::cout << "To: " << join(m.to, ", ") << "\n";
    if (!m.cc.empty()) std::cout << "Cc: " << join(m.cc, ", ") << "\n";
    std::cout << "Date: " << iso8601_utc(m.date) << "\n"
              << "Subject: " << m.subject << "\n"
              << "Message-ID: <" << m.message_id << ">\n"
              << "Folder: " << m.file.folder << "  Flags: " << m.file.flags() << "  Labels: " << join(m.labels, ",")
              << "\nId: " << m.id << "  Conversation: " << m.conversation << "\n\n";
    std::cout << (parsed ? pm.body_text : "(the file cannot be read: " + error + ")") << "\n";
    for (auto& a : m.attachments)
      if (!a.filename.empty() || a.type.rfind("image/", 0) != 0)
        std::cout << "[attachment] " << (a.filename.empty() ? "(no name)" : a.filename) << "  " << a.type << "  "
                  << a.size << " bytes\n";
  }
  if (cmd.json) std::cout << json::serialize(messages.size() == 1 && index::message_by_id(*db, cmd.id)
                                                 ? json::value(out.front())
                                                 : json::value(json::object{{"id", cmd.id}, {"messages", out}}))
                          << "\n";
  return 0;
}

int modify_command(const Settings& s, const IndexCommand& cmd) {
  std::string account;
  if (!account_of(s, cmd.user, account)) return 1;
  mailbox::ModifyRequest req;
  req.query = cmd.query;
  int moves = cmd.to_archive + cmd.to_inbox + cmd.to_trash + cmd.to_spam;
  if (moves > 1) {
    std::cerr << "mailkeep: --archive, --inbox, --trash and --spam exclude each other\n";
    return 1;
  }
  if ((cmd.read && cmd.unread) || (cmd.star && cmd.unstar)) {
    std::cerr << "mailkeep: --read/--unread and --star/--unstar exclude each other\n";
    return 1;
  }
  if (cmd.to_archive) req.move_to = "Archive", req.only_from_inbox = true;
  if (cmd.to_inbox) req.move_to = "INBOX";
  if (cmd.to_trash) req.move_to = "Trash";
  if (cmd.to_spam) req.move_to = "Junk";
  if (cmd.read) req.seen = true;
  if (cmd.unread) req.seen = false;
  if (cmd.star) req.flagged = true;
  if (cmd.unstar) req.flagged = false;
  req.add_labels = cmd.labels;
  req.remove_labels = cmd.unlabels;
  for (auto& l : req.add_labels)
    if (l.empty() || l.size() > 200 || l.find_first_of(",\n\r\t") != std::string::npos) {
      std::cerr << "mailkeep: a label is 1 to 200 characters without commas, tabs or line breaks: '" << l << "'\n";
      return 1;
    }
  if (moves == 0 && !req.seen && !req.flagged && req.add_labels.empty() && req.remove_labels.empty()) {
    std::cerr << "mailkeep: nothing to do: give --archive, --inbox, --trash, --spam, --label, --unlabel, --read, "
                 "--unread, --star or --unstar\n";
    return 1;
  }
  try {
    auto db = open_writer(s, account);
    auto r = mailbox::modify(*db, s.backup.archive + "/" + account, req, static_cast<int64_t>(std::time(nullptr)));
    if (!r.ok()) {
      std::cerr << "mailkeep: " << r.error_text << "\n";
      if (r.query_error) return 2;
    }
    std::printf("modified %zu messages (%zu moved, %zu flag changes, %zu label changes)\n", r.messages, r.moved,
                r.flag_changes, r.label_changes);
    return r.ok() ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: " << account << ": " << e.what() << "\n";
    return 1;
  }
}

int import_command(const Settings& s, const IndexCommand& cmd) {
  std::string account;
  if (!account_of(s, cmd.user, account)) return 1;
  std::vector<mailbox::MboxFile> files;
  for (size_t i = 0; i < cmd.files.size(); ++i) {
    int fd = i < cmd.file_fds.size() ? cmd.file_fds[i] : -1;
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      std::cerr << "mailkeep: " << cmd.files[i] << ": not a readable file\n";
      for (auto f : cmd.file_fds)
        if (f >= 0) ::close(f);
      return 1;
    }
    files.push_back({cmd.files[i], fd});
  }
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  const bool tty = ::isatty(2);
  auto start = std::chrono::steady_clock::now();
  try {
    auto db = open_writer(s, account);
    mailbox::ImportOptions opt;
    opt.stop = &interrupted;
    opt.on_error = [&](const std::string& what) { std::cerr << (tty ? "\n" : "") << "mailkeep: " << what << "\n"; };
    if (tty)
      opt.progress = [&](uint64_t done, uint64_t total, const mailbox::ImportStats& st) {
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        double rate = secs > 0 ? done / secs : 0;
        std::fprintf(stderr, "\r%llu imported, %llu duplicates, %.0f%% of the file, %.0f s left   ",
                     static_cast<unsigned long long>(st.imported), static_cast<unsigned long long>(st.duplicates),
                     total ? 100.0 * done / total : 100.0, rate > 0 ? (total - done) / rate : 0);
      };
    auto st = mailbox::import_mbox(*db, s.backup.archive + "/" + account, files, opt);
    if (tty) std::fprintf(stderr, "\n");
    std::printf("imported %llu messages (%llu duplicates skipped, %llu errors) from %llu files\n",
                static_cast<unsigned long long>(st.imported), static_cast<unsigned long long>(st.duplicates),
                static_cast<unsigned long long>(st.errors), static_cast<unsigned long long>(st.files));
    if (interrupted) {
      std::printf("interrupted: run the command again to import the rest (nothing is imported twice)\n");
      return 130;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: " << account << ": " << e.what() << "\n";
    return 1;
  }
}

void print_index_stats(const Settings& s) {
  std::cout << "# index\tmessages indexed\tfiles not yet indexed\tlast change\n";
  std::map<std::string, uint64_t> files_of;  // one walk of the archive, not one per account
  for (auto& st : archive::archive_stats(s.backup.archive)) files_of[st.user] += st.messages;
  for (auto& account : index::archive_accounts(s.backup.archive, s.backup.domains)) {
    uint64_t files = files_of[account];
    uint64_t indexed = 0;
    std::string when = "-";
    try {
      if (auto db = index::Database::open_readonly(s.index.path + "/" + account, index_options(s))) {
        indexed = db->message_count();
        std::error_code ec;
        auto t = std::filesystem::last_write_time(s.index.path + "/" + account + "/xapian", ec);
        if (!ec) {
          auto sys = std::chrono::file_clock::to_sys(t);
          when = iso8601_utc(std::chrono::duration_cast<std::chrono::seconds>(sys.time_since_epoch()).count());
        }
      }
    } catch (const std::exception& e) {
      when = std::string("error: ") + e.what();
    }
    std::cout << account << "\t" << indexed << "\t" << (files > indexed ? files - indexed : 0) << "\t" << when << "\n";
  }
}

}  // namespace mk::app
