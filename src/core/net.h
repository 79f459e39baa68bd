// net.h — network value types parsed from configuration: host:port endpoints
// ("mx.example.org:25", "[::1]:2525") and CIDR networks ("127.0.0.0/8",
// "2001:db8::/32"). Parsing never throws; it returns an error text instead.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
  bool operator==(const Cidr&) const = default;
};

// Networks that another thread replaces while readers use them (the relay
// networks of SPF records, spf/). Not ready() until every source has been
// resolved once: a reader can tell "not one of them" from "not known yet".
class SharedNetworks {
 public:
  bool contains(const IpAddress& a) const {
    auto nets = nets_.load();
    if (!nets) return false;
    for (auto& n : *nets)
      if (n.contains(a)) return true;
    return false;
  }
  bool ready() const { return complete_.load(); }
  void set(std::vector<Cidr> nets, bool complete) {
    nets_.store(std::make_shared<const std::vector<Cidr>>(std::move(nets)));
    complete_.store(complete);
  }
  std::shared_ptr<const std::vector<Cidr>> get() const { return nets_.load(); }

 private:
  std::atomic<std::shared_ptr<const std::vector<Cidr>>> nets_;
  std::atomic<bool> complete_{false};
};

}  // namespace mk
