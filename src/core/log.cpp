// log.cpp — see log.h.
#include "core/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <unistd.h>

namespace mk::log {

void init(std::string_view level) {
  auto logger = spdlog::stderr_logger_mt("mailkeep");
  // The pid is fixed text: spdlog's %P would call getpid() for every line.
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e mailkeep[" + std::to_string(getpid()) + "]: %l: %v");
  logger->set_level(spdlog::level::from_str(std::string(level)));
  // A crash must not lose the explanation of the last rejection.
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace mk::log
