// archive.cpp — see archive.h.
#include "archive/archive.h"

#include <fcntl.h>
#include <cerrno>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <utility>

#include "core/stats.h"
#include "core/strings.h"

namespace mk::archive {
namespace {

namespace fs = std::filesystem;

// Serialises "seen before? publish, remember" for deduplicated folders, so
// that two sessions carrying copies of one message cannot both publish it:
// this mutex between the threads of one process, and a POSIX record lock on
// <dedupe dir>/.lock between processes — gateways sharing one archive file
// system (docs/several-gateways.md); fcntl locks work over NFS, and the
// kernel drops them when a holder dies, so a crash never leaves one behind.
std::mutex dedupe_mutex;
constexpr const char* kDedupeLock = ".lock";

class DedupeLock {
 public:
  explicit DedupeLock(const std::string& dir) {
    fd_ = ::open((dir + "/" + kDedupeLock).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) return;  // no lock file (the directory cannot be made): as one process
    struct flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    while (::fcntl(fd_, F_SETLKW, &l) != 0 && errno == EINTR) {
    }
  }
  ~DedupeLock() {
    if (fd_ >= 0) ::close(fd_);  // closing drops the lock
  }
  DedupeLock(const DedupeLock&) = delete;
  DedupeLock& operator=(const DedupeLock&) = delete;

 private:
  int fd_ = -1;
};

PublishListener publish_listener;

void notify_published(const ArchiveTarget& t, const std::string& name) {
  stats::count(stats::Counter::archive_copies);
  if (publish_listener) publish_listener(t.folder, name);
}


bool make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  return !ec;
}

}  // namespace

void set_publish_listener(PublishListener listener) { publish_listener = std::move(listener); }

std::optional<std::string> message_fingerprint(const ContentSource& content) {
  // Header section: up to the first empty line (RFC 5322 2.1), read in chunks.
  std::string message_id;
  std::string line;  // the current logical header (unfolded)
  bool in_headers = true, done_header = false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  auto finish_header = [&] {
    if (message_id.empty() && istarts_with(line, "message-id:")) message_id = std::string(trim(line.substr(11)));
    line.clear();
  };
  std::vector<char> buf(64 * 1024);
  std::string pending;  // header bytes not yet split into lines
  for (uint64_t off = 0; off < content.size();) {
    size_t n = content.read_at(off, buf.data(), buf.size());
    if (n == 0) break;
    off += n;
    std::string_view chunk(buf.data(), n);
    if (!in_headers) {
      EVP_DigestUpdate(ctx, chunk.data(), chunk.size());
      continue;
    }
    pending.append(chunk);
    size_t pos = 0;
    while (in_headers) {
      auto eol = pending.find('\n', pos);
      if (eol == std::string::npos) break;
      std::string_view raw(pending.data() + pos, eol - pos);
      if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
      pos = eol + 1;
      if (raw.empty()) {
        finish_header();
        in_headers = false;
        done_header = true;
      } else if (raw.front() == ' ' || raw.front() == '\t') {
        if (line.size() < 4096) line.append(raw);  // folded continuation
      } else {
        finish_header();
        line.assign(raw.substr(0, 4096));
      }
    }
    if (!in_headers) EVP_DigestUpdate(ctx, pending.data() + pos, pending.size() - pos);
    pending.erase(0, pos);
    if (in_headers && pending.size() > 1024 * 1024) in_headers = false;  // no body separator in sight
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  if (!done_header && !line.empty()) finish_header();
  if (message_id.empty()) return std::nullopt;

  // The marker name: sha256(Message-ID \0 body digest).
  std::string key = message_id + '\0' + to_hex(digest, len);
  unsigned char name[EVP_MAX_MD_SIZE];
  unsigned int name_len = 0;
  EVP_Digest(key.data(), key.size(), name, &name_len, EVP_sha256(), nullptr);
  return to_hex(name, name_len);
}

MaildirResult ArchiveCopies::prepare(const std::vector<ArchiveTarget>& targets, const std::string& return_path,
                                     const std::string& prefix, const ContentSource& content) {
  abort();
  const auto started = std::chrono::steady_clock::now();
  struct AddTime {  // the time spent writing, for the archive_write histogram (at commit)
    std::chrono::steady_clock::duration& spent;
    std::chrono::steady_clock::time_point started;
    ~AddTime() { spent += std::chrono::steady_clock::now() - started; }
  } add_time{write_time_, started};
  for (auto& t : targets) {
    // Maildir++ (Courier, Dovecot): a subfolder ".Sent" sits inside the user's
    // INBOX Maildir and carries a "maildirfolder" marker file.
    auto slash = t.folder.rfind('/');
    bool subfolder = slash != std::string::npos && t.folder.compare(slash + 1, 1, ".") == 0;
    if (subfolder) {
      for (auto& folder : {t.folder.substr(0, slash), t.folder}) {
        auto r = ensure_maildir(folder);
        if (r.outcome != Outcome::Ok) {
          abort();
          return {Outcome::TempFail, t.label + ": " + r.detail};
        }
      }
      int fd = ::open((t.folder + "/maildirfolder").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (fd >= 0) ::close(fd);
    }
    if (!t.dedupe_dir.empty() && !fingerprint_) fingerprint_ = message_fingerprint(content);
    // Like Exim's appendfile return_path_add / delivery_date... : the envelope
    // is kept in the copy, first.
    std::string header = "Return-Path: <" + return_path + ">\r\n";
    if (!t.delivered_to.empty()) header += "Delivered-To: " + t.delivered_to + "\r\n";
    header += prefix;
    Copy copy{t, {}};
    auto r = prepare_maildir_file(t.folder, header, content, copy.file);
    if (r.outcome != Outcome::Ok) {
      abort();
      return {Outcome::TempFail, t.label + ": " + r.detail};
    }
    copies_.push_back(std::move(copy));
  }
  return {};
}

MaildirResult ArchiveCopies::commit() {
  const auto started = std::chrono::steady_clock::now();
  struct Observe {
    std::chrono::steady_clock::duration prepared;
    std::chrono::steady_clock::time_point started;
    ~Observe() {
      auto total = prepared + (std::chrono::steady_clock::now() - started);
      stats::observe(stats::Histogram::archive_write, std::chrono::duration<double>(total).count());
    }
  } observe{std::exchange(write_time_, {}), started};
  MaildirResult result;
  for (auto& c : copies_) {
    if (c.target.dedupe_dir.empty() || !fingerprint_) {
      auto r = c.file.commit();
      if (r.outcome != Outcome::Ok) {
        result = {Outcome::TempFail, c.target.label + ": " + r.detail};
      } else {
        ++published_;
        notify_published(c.target, r.detail);  // the name it got in new/
      }
      continue;
    }
    std::lock_guard lock(dedupe_mutex);
    make_dirs(c.target.dedupe_dir);
    DedupeLock across_processes(c.target.dedupe_dir);
    auto marker = c.target.dedupe_dir + "/" + *fingerprint_;
    if (::access(marker.c_str(), F_OK) == 0) {
      c.file.abort();  // already in this folder
      ++duplicates_;
      continue;
    }
    auto r = c.file.commit();
    if (r.outcome != Outcome::Ok) {
      result = {Outcome::TempFail, c.target.label + ": " + r.detail};
      continue;
    }
    ++published_;
    notify_published(c.target, r.detail);
    // Remembered after publishing: a crash in between costs at most a duplicate, never a copy.
    if (int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600); fd >= 0) ::close(fd);
  }
  copies_.clear();
  return result;
}

void ArchiveCopies::abort() {
  for (auto& c : copies_) c.file.abort();
  copies_.clear();
}

size_t clean_archive(const std::string& root, int64_t now, int64_t tmp_max_age_s, int64_t marker_max_age_s) {
  size_t removed = 0;
  auto remove_if_old = [&](const fs::directory_entry& f, int64_t max_age) {
    struct stat st {};
    if (::lstat(f.path().c_str(), &st) == 0 && S_ISREG(st.st_mode) && now - st.st_mtime > max_age &&
        ::unlink(f.path().c_str()) == 0)
      ++removed;
  };
  std::error_code ec;
  const auto options = fs::directory_options::skip_permission_denied;
  // Maildir tmp/ folders: files a crash left behind (never new/ or cur/).
  for (auto it = fs::recursive_directory_iterator(root, options, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_directory(ec) || it->is_symlink(ec)) continue;
    auto name = it->path().filename().string();
    if (it.depth() == 0 && name == ".mailkeep") {
      it.disable_recursion_pending();
    } else if (name == "new" || name == "cur") {
      it.disable_recursion_pending();
    } else if (name == "tmp") {
      std::error_code e;
      for (auto& f : fs::directory_iterator(it->path(), e)) remove_if_old(f, tmp_max_age_s);
      it.disable_recursion_pending();
    }
  }
  // Sent dedupe markers past their time.
  ec.clear();
  for (auto it = fs::recursive_directory_iterator(fs::path(root) / ".mailkeep" / "sent-seen", options, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file(ec) && it->path().filename() != kDedupeLock) remove_if_old(*it, marker_max_age_s);
  return removed;
}

std::vector<FolderStats> archive_stats(const std::string& root) {
  std::vector<FolderStats> out;
  std::error_code ec;
  auto count = [](const fs::path& maildir, FolderStats& st) {
    for (auto sub : {"new", "cur"}) {
      std::error_code e;
      for (auto& f : fs::directory_iterator(maildir / sub, e)) {
        if (!f.is_regular_file(e)) continue;
        ++st.messages;
        st.bytes += f.file_size(e);
      }
    }
  };
  for (auto& domain : fs::directory_iterator(root, ec)) {
    if (!domain.is_directory() || domain.path().filename().string().front() == '.') continue;
    for (auto& user : fs::directory_iterator(domain.path(), ec)) {
      if (!user.is_directory()) continue;
      auto name = domain.path().filename().string() + "/" + user.path().filename().string();
      FolderStats inbox{name, "INBOX"};
      count(user.path(), inbox);
      out.push_back(inbox);
      for (auto& sub : fs::directory_iterator(user.path(), ec)) {
        auto fname = sub.path().filename().string();
        if (!sub.is_directory() || fname.size() < 2 || fname[0] != '.') continue;
        FolderStats st{name, fname.substr(1)};
        count(sub.path(), st);
        out.push_back(st);
      }
    }
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return std::tie(a.user, a.folder) < std::tie(b.user, b.folder); });
  return out;
}

}  // namespace mk::archive
