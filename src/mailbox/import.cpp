// import.cpp — see mailbox.h: `archive import`, years of mail from a Google
// Takeout mbox into the archive, as if mailkeep had kept it all along.
//
// mbox (RFC 4155; mboxrd/mboxo quoting as qmail's mbox(5) describes): a
// message starts at a line beginning "From " at the start of the file or
// after an empty line; inside a message, ">From ", ">>From " … lose one ">".
// Read as a stream in bounded pieces: a Takeout file is often many GB.
// Written by hand: GMime's mbox parser keeps no ">From" un-escaping of its
// own for mboxrd, and we need the exact bytes of each message for the copy.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "archive/maildir.h"
#include "core/content.h"
#include "core/strings.h"
#include "index/message.h"
#include "index/sync.h"
#include "mailbox/mailbox.h"

namespace mk::mailbox {
namespace {

constexpr size_t kMaxMessage = 200 * 1024 * 1024;

bool is_from_line(std::string_view line) { return line.compare(0, 5, "From ") == 0; }

// ">From " (any number of '>') → one '>' less.
void unquote(std::string& line) {
  size_t n = 0;
  while (n < line.size() && line[n] == '>') ++n;
  if (n > 0 && line.compare(n, 5, "From ") == 0) line.erase(0, 1);
}

const std::set<std::string>& system_labels() {
  static const std::set<std::string> s = {"inbox", "sent", "spam", "trash", "unread", "opened", "starred",
                                          "important", "draft", "drafts", "chat", "archived"};
  return s;
}

struct Importer {
  index::Database& db;
  const std::string& maildir;
  const ImportOptions& opt;
  ImportStats stats;
  std::set<std::string> seen;  // digests imported in this run

  void error(const std::string& what) {
    ++stats.errors;
    if (opt.on_error) opt.on_error(what);
  }

  void message(std::string& msg, const std::string& where) {
    if (msg.empty()) return;
    auto mid = index::decode_message_id(header_value(msg, "Message-ID", index::kMaxHeader));
    auto digest = index::identity_digest(msg, mid);
    if (seen.count(digest) || !db.find_digest(digest).empty()) {
      ++stats.duplicates;
      return;
    }
    auto place = place_gmail_labels(index::decode_header_text(header_value(msg, "X-Gmail-Labels", index::kMaxHeader)));
    std::string folder = place.folder == "INBOX" ? maildir : maildir + "/." + place.folder;
    if (place.folder != "INBOX") {
      archive::ensure_maildir(maildir);
      archive::ensure_maildir(folder);
      int fd = ::open((folder + "/maildirfolder").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (fd >= 0) ::close(fd);
    }
    archive::PendingMaildirFile pending;
    StringContent content(msg);
    auto r = archive::prepare_maildir_file(folder, "", content, pending);
    if (r.outcome != Outcome::Ok) {
      error(where + ": " + r.detail);
      return;
    }
    const std::string base = pending.name();
    // Labels first: a crash after the rename still finds them when the file is indexed.
    if (!place.labels.empty()) db.set_labels_for(base, digest, place.labels);
    auto c = pending.commit_seen(place.flags);
    if (c.outcome != Outcome::Ok) {
      error(where + ": " + c.detail);
      return;
    }
    seen.insert(digest);
    index::MessageFile file{place.folder, "cur", c.detail};
    std::string note;
    if (!db.add(maildir, file, note)) error(where + ": written but not indexed: " + note);
    ++stats.imported;
    if (db.changes_since_commit() >= 200) db.commit();
  }

  void file(const MboxFile& mbox) {
    const std::string& path = mbox.name;
    FILE* in = mbox.fd >= 0 ? ::fdopen(mbox.fd, "rb") : nullptr;
    if (!in) {
      if (mbox.fd >= 0) ::close(mbox.fd);
      error(path + ": cannot open");
      return;
    }
    struct stat st {};
    uint64_t total = ::fstat(mbox.fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0, done = 0;
    char* raw = nullptr;
    size_t cap = 0;
    ++stats.files;
    std::string msg, line;
    bool prev_empty = true, too_big = false, started = false;
    uint64_t count = 0;
    auto flush = [&] {
      if (!started) return;
      ++count;
      if (too_big) {
        error(path + ": message " + std::to_string(count) + " is larger than 200 MB; skipped");
      } else {
        // The empty line before the next "From " separates; it is not the message's.
        if (msg.size() >= 2 && msg.compare(msg.size() - 2, 2, "\n\n") == 0) msg.pop_back();
        else if (msg.size() >= 4 && msg.compare(msg.size() - 4, 4, "\r\n\r\n") == 0) msg.resize(msg.size() - 2);
        message(msg, path + ": message " + std::to_string(count));
      }
      msg.clear();
      too_big = false;
    };
    for (;;) {
      ssize_t got = ::getline(&raw, &cap, in);
      if (got < 0) break;
      if (opt.stop && opt.stop->load()) break;
      line.assign(raw, static_cast<size_t>(got));
      bool had_newline = !line.empty() && line.back() == '\n';
      if (had_newline) line.pop_back();
      done += static_cast<uint64_t>(got);
      if (is_from_line(line) && prev_empty) {
        flush();
        started = true;
        prev_empty = false;
        continue;
      }
      std::string_view bare = line;
      if (!bare.empty() && bare.back() == '\r') bare.remove_suffix(1);
      prev_empty = bare.empty();
      if (!started) {
        if (!bare.empty()) {  // text before the first "From ": not an mbox
          error(path + ": not an mbox file (no 'From ' line first)");
          break;
        }
        continue;
      }
      unquote(line);
      if (msg.size() + line.size() > kMaxMessage) {
        too_big = true;
        continue;
      }
      if (!too_big) {
        msg += line;
        if (had_newline) msg += '\n';
      }
      if (opt.progress && (done & 0xFFFFF) < line.size() + 1) opt.progress(done, total, stats);
    }
    if (!(opt.stop && opt.stop->load())) flush();
    if (opt.progress) opt.progress(done, total, stats);
    std::free(raw);
    std::fclose(in);
  }
};

}  // namespace

std::vector<std::string> split_gmail_labels(const std::string& value) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (char c : value) {
    if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      auto t = std::string(trim(cur));
      if (!t.empty()) out.push_back(t);
      cur.clear();
    } else {
      cur += c;
    }
  }
  auto t = std::string(trim(cur));
  if (!t.empty()) out.push_back(t);
  return out;
}

GmailPlacement place_gmail_labels(const std::string& value) {
  GmailPlacement p;
  bool inbox = false, sent = false, spam = false, trash = false, unread = false, starred = false;
  for (auto& l : split_gmail_labels(value)) {
    auto low = to_lower(l);
    if (low == "inbox") inbox = true;
    else if (low == "sent") sent = true;
    else if (low == "spam") spam = true;
    else if (low == "trash") trash = true;
    else if (low == "unread") unread = true;
    else if (low == "starred") starred = true;
    if (system_labels().count(low) || low.rfind("category ", 0) == 0) continue;
    if (std::find(p.labels.begin(), p.labels.end(), l) == p.labels.end()) p.labels.push_back(l);
  }
  p.folder = trash ? "Trash" : spam ? "Junk" : inbox ? "INBOX" : sent ? "Sent" : "Archive";
  if (starred) p.flags += 'F';
  if (!unread) p.flags += 'S';
  std::sort(p.labels.begin(), p.labels.end());
  return p;
}

ImportStats import_mbox(index::Database& db, const std::string& maildir, const std::vector<MboxFile>& files,
                        const ImportOptions& opt) {
  // What is already there (an earlier, interrupted import too) is indexed first: that is the dedupe.
  index::sync_maildir(db, maildir, {});
  Importer imp{db, maildir, opt, {}, {}};
  size_t i = 0;
  for (; i < files.size() && !(opt.stop && opt.stop->load()); ++i) imp.file(files[i]);
  for (; i < files.size(); ++i)
    if (files[i].fd >= 0) ::close(files[i].fd);
  db.commit();
  return imp.stats;
}

}  // namespace mk::mailbox
