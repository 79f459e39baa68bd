// strings.h — small string helpers shared by every component (ASCII only:
// mail protocol keywords and domains are compared case-insensitively, RFC 5321 2.4).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mk {

std::string to_lower(std::string_view s);
// Foreign text for a log line or a header: the first `max` bytes, each byte
// outside printable ASCII (32..126) or in `also_replace` becomes '?'.
std::string printable_ascii(std::string_view s, size_t max, std::string_view also_replace = {});
bool iequals(std::string_view a, std::string_view b);
bool istarts_with(std::string_view s, std::string_view prefix);
std::string_view trim(std::string_view s);
// The unfolded, trimmed value of the first field `name` (case-insensitive) in
// the header section of `message` (CRLF or LF); "" when absent. Unfolding
// stops once the value passes `max` bytes.
std::string header_value(std::string_view message, std::string_view name, size_t max = 64 * 1024);
// Splits on `sep`, trims each piece and drops empty pieces.
std::vector<std::string> split_list(std::string_view s, char sep = ',');
// Lower-case hexadecimal of `n` bytes.
std::string to_hex(const unsigned char* p, size_t n);
// Unix seconds in UTC, as strftime's `format` writes it (at most 63 characters).
std::string format_utc(int64_t unix_seconds, const char* format);
// "2026-11-28T19:01:40Z" for unix seconds.
std::string iso8601_utc(int64_t unix_seconds);
// %XX escapes decoded; `plus_is_space` for form and query strings
// (application/x-www-form-urlencoded), not for URL paths.
std::string percent_decode(std::string_view s, bool plus_is_space);
// A DNS name (lower-case expected): labels of letters, digits, '-' and '_'
// (SPF and DKIM names start with '_'), 1..63 each, at most 253 in all.
bool valid_dns_name(std::string_view name);
// "2026-11-28" → unix seconds of that day's 00:00 UTC; nullopt when malformed.
std::optional<int64_t> parse_date_utc(const std::string& date);

}  // namespace mk
