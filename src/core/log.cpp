// log.cpp — see log.h.
#include "core/log.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace mk::log {
namespace {

// "<3>" … "<7>" before each line: systemd reads it as the line's syslog
// priority (sd-daemon(3)), so that `journalctl -p warning` works.
class SdPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr const char* kPrefix[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};  // trace … off
    const char* p = kPrefix[std::min<size_t>(msg.level, 6)];
    dest.append(p, p + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<SdPriority>(); }
};

}  // namespace

bool stderr_is_journal() {
  // systemd sets JOURNAL_STREAM=DEV:INODE of the stream it connected; a
  // redirected stderr (a file, a pipe in a test) does not match it.
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js || !*js) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

void init(std::string_view level) {
  auto logger = spdlog::stderr_logger_mt("mailkeep");
  if (stderr_is_journal()) {
    // The journal adds the time, the pid and the unit's name itself.
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<SdPriority>('*').set_pattern("%*%l: %v");
    logger->set_formatter(std::move(formatter));
  } else {
    // The pid is fixed text: spdlog's %P would call getpid() for every line.
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e mailkeep[" + std::to_string(getpid()) + "]: %l: %v");
  }
  logger->set_level(spdlog::level::from_str(std::string(level)));
  // A crash must not lose the explanation of the last rejection.
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace mk::log
