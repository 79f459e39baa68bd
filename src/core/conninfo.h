// conninfo.h — a database connection string fit to show: its password hidden.
#pragma once
#include <string>

namespace mk {

// "postgresql://mk:secret@db/mk?password=x" → "postgresql://mk:***@db/mk?password=***";
// key=value strings: "password=secret" → "password=***". Anything else unchanged.
std::string without_password(const std::string& conninfo);

}  // namespace mk
