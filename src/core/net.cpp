// net.cpp — see net.h.
#include "core/net.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace mk {

std::string HostPort::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::optional<HostPort> parse_host_port(std::string_view s, uint16_t default_port, std::string* error) {
  HostPort hp;
  std::string_view port_text;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos) {
      if (error) *error = "missing ']' in IPv6 address";
      return std::nullopt;
    }
    hp.host = std::string(s.substr(1, close - 1));
    auto rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        if (error) *error = "expected ':' after ']'";
        return std::nullopt;
      }
      port_text = rest.substr(1);
    }
  } else {
    auto colon = s.rfind(':');
    if (colon != std::string_view::npos && s.find(':') != colon) {
      if (error) *error = "IPv6 addresses must be written in brackets, as [::1]:25";
      return std::nullopt;
    }
    hp.host = std::string(s.substr(0, colon));
    if (colon != std::string_view::npos) port_text = s.substr(colon + 1);
  }
  if (hp.host.empty()) {
    if (error) *error = "missing host";
    return std::nullopt;
  }
  if (port_text.empty()) {
    if (default_port == 0) {
      if (error) *error = "missing port";
      return std::nullopt;
    }
    hp.port = default_port;
    return hp;
  }
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
  if (ec != std::errc() || ptr != port_text.data() + port_text.size() || value == 0 || value > 65535) {
    if (error) *error = "invalid port '" + std::string(port_text) + "'";
    return std::nullopt;
  }
  hp.port = static_cast<uint16_t>(value);
  return hp;
}

bool IpAddress::is_v4() const {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(bytes.data(), prefix, 12) == 0;
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN];
  if (is_v4()) return inet_ntop(AF_INET, bytes.data() + 12, buf, sizeof buf);
  return inet_ntop(AF_INET6, bytes.data(), buf, sizeof buf);
}

std::optional<IpAddress> IpAddress::parse(std::string_view s) {
  std::string text(s);
  IpAddress a;
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    a.bytes[10] = a.bytes[11] = 0xff;
    std::memcpy(a.bytes.data() + 12, &v4, 4);
    return a;
  }
  if (inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) return a;
  return std::nullopt;
}

bool Cidr::contains(const IpAddress& a) const {
  int bits = prefix;
  for (size_t i = 0; i < 16 && bits > 0; ++i, bits -= 8) {
    uint8_t mask = bits >= 8 ? 0xff : uint8_t(0xff << (8 - bits));
    if ((a.bytes[i] & mask) != (network.bytes[i] & mask)) return false;
  }
  return true;
}

std::string Cidr::to_string() const {
  int shown = network.is_v4() ? prefix - 96 : prefix;
  return network.to_string() + "/" + std::to_string(shown);
}

std::optional<Cidr> Cidr::parse(std::string_view s, std::string* error) {
  auto slash = s.find('/');
  auto addr = IpAddress::parse(s.substr(0, slash));
  if (!addr) {
    if (error) *error = "invalid address '" + std::string(s.substr(0, slash)) + "'";
    return std::nullopt;
  }
  int max_bits = addr->is_v4() ? 32 : 128;
  int bits = max_bits;
  if (slash != std::string_view::npos) {
    auto text = s.substr(slash + 1);
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), bits);
    if (ec != std::errc() || ptr != text.data() + text.size() || bits < 0 || bits > max_bits) {
      if (error) *error = "invalid prefix length '" + std::string(text) + "'";
      return std::nullopt;
    }
  }
  Cidr c;
  c.network = *addr;
  c.prefix = addr->is_v4() ? bits + 96 : bits;
  return c;
}

}  // namespace mk
