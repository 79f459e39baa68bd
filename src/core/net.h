// net.h — network value types parsed from configuration: host:port endpoints
// ("mx.example.org:25", "[::1]:2525") and CIDR networks ("127.0.0.0/8",
// "2001:db8::/32"). Parsing never throws; it returns an error text instead.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mk {

struct HostPort {
  std::string host;  // name or literal address, without brackets
  uint16_t port = 0;
  std::string to_string() const;  // brackets IPv6 literals again
  bool operator==(const HostPort&) const = default;
};

// Parses "host:port" or "[v6]:port"; a missing port takes `default_port` (0 = required).
std::optional<HostPort> parse_host_port(std::string_view s, uint16_t default_port, std::string* error);

// An IPv4 or IPv6 address as 16 bytes (IPv4 stored as v4-mapped ::ffff:a.b.c.d)
// so that one Cidr type matches both families.
struct IpAddress {
  std::array<uint8_t, 16> bytes{};
  bool is_v4() const;
  std::string to_string() const;
  static std::optional<IpAddress> parse(std::string_view s);
  bool operator==(const IpAddress&) const = default;
};

struct Cidr {
  IpAddress network;
  int prefix = 0;  // in bits of the 128-bit form
  bool contains(const IpAddress& a) const;
  std::string to_string() const;
  static std::optional<Cidr> parse(std::string_view s, std::string* error);
};

}  // namespace mk
