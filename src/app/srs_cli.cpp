// srs_cli.cpp — see srs_cli.h.
#include "app/srs_cli.h"

#include <CLI/CLI.hpp>
#include <ctime>
#include <iostream>

#include "core/strings.h"

namespace mk::app {

std::unique_ptr<srs::Rewriter> load_srs(const Settings& s) {
  if (s.aliases.srs_domain.empty()) return nullptr;
  return std::make_unique<srs::Rewriter>(s.aliases.srs_domain, srs::Rewriter::read_secrets(s.aliases.srs_secret_file),
                                         s.aliases.srs_max_age);
}

void add_srs_commands(CLI::App& app, std::string& config_path, SrsCommand& cmd) {
  auto* top = app.add_subcommand("srs", "SRS addresses of forwarded mail ([aliases] srs_domain): make and decode them");
  top->require_subcommand(1);
  auto* fwd = top->add_subcommand("forward", "Print the SRS envelope sender forwarded mail from ADDRESS gets");
  auto* rev = top->add_subcommand("reverse", "Print the address a bounce to the SRS ADDRESS goes back to");
  for (auto* sub : {fwd, rev}) {
    sub->add_option("-c,--config", config_path, "INI configuration file");
    sub->add_option("addresses", cmd.addresses, "addresses; none: one per line on standard input");
  }
}

bool srs_command_chosen(const CLI::App& app) { return app.get_subcommand("srs")->parsed(); }

int srs_command(const Settings& settings, const SrsCommand& cmd) {
  std::unique_ptr<srs::Rewriter> srs;
  try {
    srs = load_srs(settings);
  } catch (const std::exception& e) {
    std::cerr << "mailkeep srs: " << e.what() << "\n";
    return 1;
  }
  if (!srs) {
    std::cerr << "mailkeep srs: [aliases] srs_domain is not set\n";
    return 2;
  }
  int status = 0;
  auto one = [&](std::string_view address) {
    address = trim(address);
    auto at = address.rfind('@');
    if (at == std::string_view::npos || at == 0 || at + 1 == address.size()) {
      std::cout << "error: not an address: " << printable_ascii(address, 512) << "\n";
      status = 1;
      return;
    }
    auto local = address.substr(0, at), domain = address.substr(at + 1);
    if (cmd.action == "forward") {
      auto out = srs->forward(local, domain, std::time(nullptr));
      std::cout << (out ? *out + "@" + srs->domain() : std::string(address)) << "\n";
      return;
    }
    if (!iequals(domain, srs->domain())) {
      std::cout << "error: not in " << srs->domain() << "\n";
      status = 1;
      return;
    }
    auto back = srs->reverse(local, std::time(nullptr));
    if (back.error != srs::Error::None) {
      std::cout << "error: " << srs::error_text(back.error) << "\n";
      status = 1;
      return;
    }
    std::cout << back.local << "@" << back.domain << "\n";
  };
  if (!cmd.addresses.empty()) {
    for (auto& a : cmd.addresses) one(a);
  } else {
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line.size() > 4096) line.resize(4096);
      one(line);
    }
  }
  return status;
}

}  // namespace mk::app
