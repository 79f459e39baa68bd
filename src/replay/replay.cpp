// replay.cpp — see replay.h.
#include "replay/replay.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/content.h"
#include "core/fd_io.h"
#include "core/strings.h"
#include "smtp/command.h"

namespace mk::replay {
namespace {

namespace fs = std::filesystem;
constexpr size_t kMaxEnvelope = 4096;  // the two envelope lines we wrote

// The message on disk past the envelope lines, read as it is sent (pread).
class FileContent final : public ContentSource {
 public:
  FileContent(int fd, uint64_t offset, uint64_t size) : fd_(fd), offset_(offset), size_(size) {}
  uint64_t size() const override { return size_; }
  size_t read_at(uint64_t offset, char* buf, size_t n) const override {
    if (offset >= size_) return 0;
    n = size_t(std::min<uint64_t>(n, size_ - offset));
    ssize_t got;
    do got = ::pread(fd_, buf, n, off_t(offset_ + offset));
    while (got < 0 && errno == EINTR);
    return got < 0 ? 0 : size_t(got);
  }

 private:
  int fd_;
  uint64_t offset_, size_;
};

// Reads "Return-Path: <s>\r\nX-Original-To: <r>\r\n"; returns the offset past them, 0 if malformed.
size_t read_envelope(int fd, JournalEntry& e) {
  char buf[kMaxEnvelope];
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  if (n <= 0) return 0;
  std::string_view head(buf, size_t(n));
  auto line = [&](std::string_view name, size_t from, std::string& value) -> size_t {
    if (head.substr(from, name.size()) != name) return 0;
    auto end = head.find("\r\n", from);
    if (end == std::string_view::npos) return 0;
    auto v = head.substr(from + name.size(), end - from - name.size());
    if (v.size() < 2 || v.front() != '<' || v.back() != '>') return 0;
    value = std::string(v.substr(1, v.size() - 2));
    return end + 2;
  };
  size_t after_sender = line("Return-Path: ", 0, e.sender);
  if (!after_sender) return 0;
  return line("X-Original-To: ", after_sender, e.recipient);
}

int64_t name_time(const std::string& name) {
  int64_t t = 0;
  for (char c : name) {
    if (c < '0' || c > '9') break;
    t = t * 10 + (c - '0');
  }
  return t;
}

std::optional<smtp::Mailbox> parse_address(const std::string& address, bool allow_null) {
  std::string arg = "FROM:<" + address + ">";
  auto parsed = smtp::parse_path_argument(arg, "FROM", allow_null);
  if (!parsed.ok()) return std::nullopt;
  return parsed.mailbox;
}

}  // namespace

std::vector<JournalEntry> pending_entries(const ReplayOptions& o, std::string& error) {
  std::vector<JournalEntry> out;
  std::error_code ec;
  fs::directory_iterator it(fs::path(o.journal) / "new", ec), end;
  if (ec) {
    if (ec != std::errc::no_such_file_or_directory) error = o.journal + "/new: " + ec.message();
    return out;
  }
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    auto name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    JournalEntry e;
    e.name = name;
    e.time = name_time(name);
    if (o.since && e.time < *o.since) continue;
    int fd = ::open(it->path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st{};
    ::fstat(fd, &st);
    size_t offset = read_envelope(fd, e);
    ::close(fd);
    if (!offset) continue;  // not one of ours: left alone
    e.recipient = to_lower(e.recipient);
    e.size = uint64_t(st.st_size) - offset;
    if (!o.user.empty() && e.recipient != o.user) continue;
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.time != b.time ? a.time < b.time : a.name < b.name; });
  return out;
}

ReplayReport replay(const ReplayOptions& o, delivery::UpstreamFactory& factory) {
  ReplayReport report;
  auto lock_path = o.journal + "/replay.lock";
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) {
    report.error = "cannot open " + lock_path + ": " + std::strerror(errno);
    return report;
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{lock};
  if (::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    report.error = "another replay is running (" + lock_path + " is locked)";
    return report;
  }
  auto entries = pending_entries(o, report.error);
  report.selected = entries.size();
  if (!report.error.empty() || o.dry_run || entries.empty()) return report;

  boost::asio::io_context io;
  auto run = [&]() -> boost::asio::awaitable<void> {
    auto upstream = factory.create(io.get_executor());
    size_t done = 0;
    for (auto& e : entries) {
      if (o.stop && o.stop->load()) {
        report.interrupted = true;
        break;
      }
      auto path = o.journal + "/new/" + e.name;
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;  // gone since the listing (another tool): nothing to send
      struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
      } file_closer{fd};
      JournalEntry check;
      size_t offset = read_envelope(fd, check);
      auto sender = parse_address(check.sender, true);
      auto recipient = parse_address(check.recipient, false);
      smtp::Reply r;
      if (!offset || !sender || !recipient) {
        r = smtp::Reply{554, "5.6.0", "journal file is malformed"};
      } else {
        FileContent content(fd, offset, e.size);
        delivery::MessageBody body{"", &content};
        smtp::MailParams params;
        params.size = e.size;
        params.smtputf8 = sender->non_ascii || recipient->non_ascii;
        r = co_await upstream->mail(*sender, params);
        if (r.positive()) r = co_await upstream->rcpt(*recipient);
        if (r.positive()) r = co_await upstream->data(body);
        bool usable = co_await upstream->reset();
        if (!usable) upstream = factory.create(io.get_executor());
      }
      ++done;
      if (r.positive()) {
        // Done: into cur/ as seen, durably, before the next one.
        auto target = o.journal + "/cur/" + e.name + ":2,S";
        if (::rename(path.c_str(), target.c_str()) != 0 || !fsync_dir(o.journal + "/cur") ||
            !fsync_dir(o.journal + "/new")) {
          report.error = "sent " + e.name + " but cannot mark it done: " + std::strerror(errno);
          ++report.sent;
          if (o.progress) o.progress(done, entries.size(), e, r);
          break;
        }
        ++report.sent;
      } else if (r.code >= 400 && r.code < 500) {
        report.deferred = true;
        report.failures.push_back(e.name + ": " + r.summary());
        if (o.progress) o.progress(done, entries.size(), e, r);
        break;
      } else {
        ++report.failed;
        report.failures.push_back(e.name + ": " + r.summary());
      }
      if (o.progress) o.progress(done, entries.size(), e, r);
    }
    co_await upstream->quit();
  };
  auto future = boost::asio::co_spawn(io, run(), boost::asio::use_future);
  io.run();
  future.get();
  return report;
}

}  // namespace mk::replay
