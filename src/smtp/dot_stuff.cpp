// dot_stuff.cpp — see dot_stuff.h.
#include "smtp/dot_stuff.h"

#include <cstring>

namespace mk::smtp {

void dot_stuff(std::string_view in, bool& line_start, std::string& out) {
  while (!in.empty()) {
    if (line_start && in.front() == '.') out += '.';
    const void* lf = std::memchr(in.data(), '\n', in.size());
    size_t n = lf ? static_cast<size_t>(static_cast<const char*>(lf) - in.data()) + 1 : in.size();
    out.append(in.data(), n);
    line_start = lf != nullptr;
    in.remove_prefix(n);
  }
}

}  // namespace mk::smtp
