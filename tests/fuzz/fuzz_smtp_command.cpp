// fuzz_smtp_command.cpp — libFuzzer target: the SMTP command-line parser,
// path arguments (MAIL FROM / RCPT TO) and MAIL parameters.
// Invariants: no crash, no sanitizer report; a parsed mailbox re-parses the same.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "smtp/command.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string line(reinterpret_cast<const char*>(data), size);
  auto cmd = mk::smtp::parse_command(line);
  for (auto keyword : {"FROM", "TO"}) {
    auto path = mk::smtp::parse_path_argument(cmd.arg, keyword, keyword[0] == 'F');
    if (!path.ok()) continue;
    mk::smtp::MailParams params;
    std::string error;
    mk::smtp::parse_mail_params(path.params, params, error);
    if (path.mailbox.null) continue;
    (void)path.mailbox.local_unquoted();
    // What we relay upstream must parse back to the same mailbox.
    auto again = mk::smtp::parse_path_argument(std::string(keyword) + ":<" + path.mailbox.address() + ">", keyword, false);
    if (!again.ok() || again.mailbox.local != path.mailbox.local || again.mailbox.domain != path.mailbox.domain) abort();
  }
  return 0;
}
