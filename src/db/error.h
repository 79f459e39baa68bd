// error.h — the one exception a database failure throws. Callers answer it
// with a temporary failure (SMTP 451, HTTP 503), never a permanent one.
#pragma once
#include <stdexcept>

namespace mk::db {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace mk::db
