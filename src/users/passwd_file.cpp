// passwd_file.cpp — see passwd_file.h.
#include "users/passwd_file.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/fd_io.h"
#include "core/strings.h"

namespace mk::users {
namespace {

constexpr size_t kMaxFile = 64 * 1024 * 1024;

std::vector<std::string_view> split_colons(std::string_view line) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= line.size(); ++i)
    if (i == line.size() || line[i] == ':') {
      out.push_back(line.substr(start, i - start));
      start = i + 1;
    }
  return out;
}

std::optional<PasswdEntry> parse_line(std::string_view line) {
  if (line.empty() || line.front() == '#') return std::nullopt;
  auto f = split_colons(line);
  // user:password:uid:gid:gecos:home:shell:extra — ours always has all eight.
  if (f.size() != 8 || f[0].empty() || f[1].empty() || f[1].front() != '{') return std::nullopt;
  PasswdEntry e;
  e.user = std::string(f[0]);
  e.password = std::string(f[1]);
  e.home = std::string(f[5]);
  auto extra = f[7];
  if (!extra.empty() && extra != "nologin=y reason=Account_locked" && extra != "nologin=y") return std::nullopt;
  e.locked = !extra.empty();
  return e;
}

std::string sys_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

}  // namespace

const PasswdEntry* PasswdFile::find(std::string_view user) const {
  for (auto& l : lines)
    if (l.entry && l.entry->user == user) return &*l.entry;
  return nullptr;
}

PasswdEntry* PasswdFile::find(std::string_view user) {
  return const_cast<PasswdEntry*>(static_cast<const PasswdFile*>(this)->find(user));
}

void PasswdFile::put(PasswdEntry entry) {
  if (auto* e = find(entry.user)) {
    *e = std::move(entry);
    return;
  }
  lines.push_back(Line{std::move(entry), ""});
}

bool PasswdFile::erase(std::string_view user) {
  for (auto it = lines.begin(); it != lines.end(); ++it)
    if (it->entry && it->entry->user == user) {
      lines.erase(it);
      return true;
    }
  return false;
}

std::vector<const PasswdEntry*> PasswdFile::entries() const {
  std::vector<const PasswdEntry*> out;
  for (auto& l : lines)
    if (l.entry) out.push_back(&*l.entry);
  return out;
}

PasswdFile parse_passwd(std::string_view text) {
  PasswdFile file;
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    file.lines.push_back(PasswdFile::Line{parse_line(line), std::string(line)});
  }
  return file;
}

std::string format_entry(const PasswdEntry& e) {
  // A space is a separator in Dovecot's extra fields: the reason is one word.
  return e.user + ":" + e.password + "::::" + e.home + "::" + (e.locked ? "nologin=y reason=Account_locked" : "");
}

std::string format_passwd(const PasswdFile& file) {
  std::string out;
  for (auto& l : file.lines) out += (l.entry ? format_entry(*l.entry) : l.raw) + "\n";
  return out;
}

std::string read_passwd(const std::string& path, PasswdFile& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      out = PasswdFile{};
      return "";
    }
    return sys_error("cannot open", path);
  }
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) {
    text.append(buf, size_t(n));
    if (text.size() > kMaxFile) {
      ::close(fd);
      return path + ": larger than 64 MiB";
    }
  }
  int err = errno;
  ::close(fd);
  if (n < 0) {
    errno = err;
    return sys_error("cannot read", path);
  }
  out = parse_passwd(text);
  return "";
}

std::string update_passwd(const std::string& path, const std::string& owner, const std::string& group_name,
                          const std::function<std::string(PasswdFile&)>& change) {
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
  }
  auto lock_path = path + ".lock";
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) return sys_error("cannot open", lock_path);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }  // also releases the flock
  } closer{lock};
  if (::flock(lock, LOCK_EX) != 0) return sys_error("cannot lock", lock_path);
  PasswdFile file;
  if (auto err = read_passwd(path, file); !err.empty()) return err;
  if (auto err = change(file); !err.empty()) return err;
  auto text = format_passwd(file);
  auto tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return sys_error("cannot create", tmp);
  ::fchmod(fd, 0640);  // whatever the umask
  // Owner [general] user (the server reads it), group Dovecot's (its auth process reads it).
  uid_t uid = uid_t(-1);
  gid_t gid = gid_t(-1);
  if (::geteuid() == 0 && !owner.empty())
    if (const struct passwd* pw = ::getpwnam(owner.c_str())) uid = pw->pw_uid, gid = pw->pw_gid;
  if (!group_name.empty())
    if (const struct group* g = ::getgrnam(group_name.c_str())) gid = g->gr_gid;
  if (::fchown(fd, uid, gid) != 0 && gid != gid_t(-1)) (void)!::fchown(fd, uid, gid_t(-1));
  bool ok = write_fully(fd, text.data(), text.size()) && ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(tmp.c_str());
    errno = err;
    return sys_error("cannot write", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    errno = err;
    return sys_error("cannot rename into", path);
  }
  fsync_dir(dir.empty() ? "." : dir.string());
  return "";
}

}  // namespace mk::users
