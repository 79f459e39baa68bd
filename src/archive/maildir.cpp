// maildir.cpp — see maildir.h.
#include "archive/maildir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "core/fd_io.h"

namespace mk::archive {
namespace {

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

bool make_dir(const std::string& path) { return ::mkdir(path.c_str(), 0700) == 0 || errno == EEXIST; }

// Host part of a Maildir name: '/' and ':' are replaced as the Maildir spec asks.
std::string maildir_host() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  std::string out;
  for (char* p = buf; *p; ++p) {
    if (*p == '/') out += "\\057";
    else if (*p == ':') out += "\\072";
    else out += *p;
  }
  return out.empty() ? "localhost" : out;
}

std::string unique_name(uint64_t size) {
  static std::atomic<uint64_t> sequence{0};
  static const std::string host = maildir_host();
  timeval tv{};
  gettimeofday(&tv, nullptr);
  return std::to_string(tv.tv_sec) + ".M" + std::to_string(tv.tv_usec) + "P" + std::to_string(getpid()) + "Q" +
         std::to_string(++sequence) + "." + host + ",S=" + std::to_string(size);
}

// `name` with "R<attempt>" ending its unique part (time.unique.host...), for a
// name another writer took: still a Maildir name, with the same ,S= and flags.
std::string with_retry_tag(const std::string& name, unsigned attempt) {
  auto first = name.find('.');
  auto second = first == std::string::npos ? std::string::npos : name.find('.', first + 1);
  if (second == std::string::npos) second = std::min(name.find(':'), name.size());
  return name.substr(0, second) + "R" + std::to_string(attempt) + name.substr(second);
}

// mkdir -p for the folders above a Maildir (mode 0700).
MaildirResult ensure_parent(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) return {};
  auto slash = dir.rfind('/');
  if (errno != ENOENT || slash == std::string::npos || slash == 0) return {Outcome::TempFail, errno_text("mkdir " + dir)};
  if (auto r = ensure_parent(dir.substr(0, slash)); r.outcome != Outcome::Ok) return r;
  if (::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) return {};
  return {Outcome::TempFail, errno_text("mkdir " + dir)};
}

}  // namespace

PendingMaildirFile& PendingMaildirFile::operator=(PendingMaildirFile&& o) noexcept {
  if (this != &o) {
    abort();
    folder_ = std::move(o.folder_);
    name_ = std::move(o.name_);
    o.name_.clear();
  }
  return *this;
}

PendingMaildirFile::~PendingMaildirFile() { abort(); }

MaildirResult PendingMaildirFile::commit() { return commit_to("new", name_); }

MaildirResult PendingMaildirFile::commit_seen(std::string_view flags) {
  return commit_to("cur", name_ + ":2," + std::string(flags));
}

MaildirResult PendingMaildirFile::commit_to(const char* sub, std::string final_name) {
  if (name_.empty()) return {Outcome::TempFail, "nothing to commit"};
  auto from = folder_ + "/tmp/" + name_;
  const std::string wanted = final_name;
  for (unsigned attempt = 1;; ++attempt) {
    auto to = folder_ + "/" + sub + "/" + final_name;
    if (::link(from.c_str(), to.c_str()) == 0) {
      ::unlink(from.c_str());  // left behind (a crash), the tmp/ link is swept by clean_archive
      break;
    }
    if (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP || errno == EXDEV || errno == EMLINK) {
      // No hard links here: rename (which would replace a file of the same name).
      if (::rename(from.c_str(), to.c_str()) != 0) return {Outcome::TempFail, errno_text("rename " + from)};
      break;
    }
    if (errno != EEXIST || attempt > 8) return {Outcome::TempFail, errno_text("link " + from)};
    final_name = with_retry_tag(wanted, attempt);  // the name is taken: never replace that message
  }
  name_.clear();
  auto dir = folder_ + "/" + sub;
  if (!fsync_dir(dir)) return {Outcome::TempFail, errno_text("fsync " + dir)};
  return {Outcome::Ok, final_name};
}

void PendingMaildirFile::abort() {
  if (name_.empty()) return;
  ::unlink((folder_ + "/tmp/" + name_).c_str());
  name_.clear();
}

MaildirResult ensure_maildir(const std::string& folder) {
  // The common case, every message after the first: the folder is there.
  struct stat st {};
  if (::stat((folder + "/tmp").c_str(), &st) == 0 && ::stat((folder + "/new").c_str(), &st) == 0) return {};
  // Create missing parents, deepest existing first (archive/<domain>/<user>/.Sent);
  // existing ancestors are never touched, so they may belong to someone else.
  if (::mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) {
    auto slash = folder.rfind('/');
    if (errno != ENOENT || slash == std::string::npos || slash == 0) return {Outcome::TempFail, errno_text("mkdir " + folder)};
    if (auto r = ensure_parent(folder.substr(0, slash)); r.outcome != Outcome::Ok) return r;
    if (::mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) return {Outcome::TempFail, errno_text("mkdir " + folder)};
  }
  for (auto sub : {"/tmp", "/new", "/cur"})
    if (!make_dir(folder + sub)) return {Outcome::TempFail, errno_text("mkdir " + folder + sub)};
  return {};
}

MaildirResult prepare_maildir_file(const std::string& folder, std::string_view header, const ContentSource& content,
                                   PendingMaildirFile& out) {
  if (auto r = ensure_maildir(folder); r.outcome != Outcome::Ok) return r;
  uint64_t size = header.size() + content.size();
  auto name = unique_name(size);
  auto path = folder + "/tmp/" + name;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return {Outcome::TempFail, errno_text("create " + path)};
  PendingMaildirFile pending(folder, name);  // removes the file on any failure below
  bool ok = write_fully(fd, header.data(), header.size());
  std::vector<char> buf(64 * 1024);
  for (uint64_t off = 0; ok && off < content.size();) {
    size_t n = content.read_at(off, buf.data(), buf.size());
    if (n == 0) {
      errno = EIO;
      ok = false;
      break;
    }
    ok = write_fully(fd, buf.data(), n);
    off += n;
  }
  if (ok && ::fsync(fd) != 0) ok = false;
  int saved = errno;
  ::close(fd);
  if (!ok) {
    errno = saved;
    return {Outcome::TempFail, errno_text("write " + path)};
  }
  out = std::move(pending);
  return {Outcome::Ok, name};
}

MaildirResult deliver_to_maildir(const std::string& folder, std::string_view header, const ContentSource& content) {
  PendingMaildirFile pending;
  auto r = prepare_maildir_file(folder, header, content, pending);
  if (r.outcome != Outcome::Ok) return r;
  return pending.commit();
}

}  // namespace mk::archive
