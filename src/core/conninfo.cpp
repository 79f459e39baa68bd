// conninfo.cpp — see conninfo.h.
#include "core/conninfo.h"

#include <regex>

namespace mk {

std::string without_password(const std::string& conninfo) {
  // URI form: postgresql://user:secret@host/db[?password=secret]; key=value form: password=secret.
  static const std::regex uri_password(R"(^(postgres(?:ql)?://[^:/@]*:)[^@]*@)");
  static const std::regex query_password(R"(([?&]password=)[^&]*)");
  static const std::regex kv_password(R"((password\s*=\s*)('[^']*'|\S+))");
  if (conninfo.starts_with("postgres"))
    return std::regex_replace(std::regex_replace(conninfo, uri_password, "$1***@"), query_password, "$1***");
  return std::regex_replace(conninfo, kv_password, "$1***");
}

}  // namespace mk
