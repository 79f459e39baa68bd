// dot_stuff.h — the sending side of RFC 5321 4.5.2 transparency: a dot is
// doubled at the start of every line. The inverse of DataDecoder.
#pragma once
#include <string>
#include <string_view>

namespace mk::smtp {

// Appends `in` to `out`, doubling a leading dot on each line. `line_start`
// carries the state across chunks (true before the first chunk). The content
// is canonical CRLF text, so a line starts after every LF.
void dot_stuff(std::string_view in, bool& line_start, std::string& out);

}  // namespace mk::smtp
