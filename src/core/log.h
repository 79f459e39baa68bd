// log.h — the process-wide logger. Lines are Postfix-like and greppable:
//   reject: RCPT from [192.0.2.1]:4711: 550 5.7.1 <x@y>: Relaying denied; from=<a@b> to=<x@y>
//   7F3A2C: client=[192.0.2.1]:4711, from=<a@b>, to=<x@y>, size=5120, relay=..., status=sent (250 ...)
// Message contents and secrets are never logged.
#pragma once
#include <spdlog/spdlog.h>

#include <string_view>

namespace mk::log {

// Sets up stderr logging at `level` ("debug", "info", "warn", "error").
// Under systemd (stderr is the stream JOURNAL_STREAM names) each line starts
// with its sd-daemon priority "<3>" … "<7>" and carries no timestamp or pid.
void init(std::string_view level);
bool stderr_is_journal();

}  // namespace mk::log
