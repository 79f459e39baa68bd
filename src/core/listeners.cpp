// listeners.cpp — see listeners.h.
#include "core/listeners.h"

#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <stdexcept>

#include "core/log.h"

namespace mk {

namespace asio = boost::asio;
using asio::ip::tcp;

void Listeners::bind(const std::vector<HostPort>& addresses, const std::vector<asio::io_context*>& workers,
                     bool no_delay) {
  using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
  const std::string suffix = label_.empty() ? "" : " (" + label_ + ")";
  for (auto& hp : addresses) {
    boost::system::error_code ec;
    auto address = asio::ip::make_address(hp.host, ec);
    if (ec)
      throw std::runtime_error((label_.empty() ? "" : label_ + " ") + "listen address " + hp.to_string() +
                               ": not an IP address");
    tcp::endpoint ep(address, hp.port);
    for (auto* worker : workers) {
      auto acceptor = std::make_unique<tcp::acceptor>(*worker);
      acceptor->open(ep.protocol(), ec);
      if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec && no_delay) acceptor->set_option(tcp::no_delay(true), ec);
      if (!ec && workers.size() > 1) acceptor->set_option(reuse_port(true), ec);
      if (!ec && ep.address().is_v6()) acceptor->set_option(asio::ip::v6_only(true), ec);
      if (!ec) acceptor->bind(ep, ec);
      if (ec) throw std::runtime_error("cannot listen on " + hp.to_string() + suffix + ": " + ec.message());
      acceptors_.push_back(std::move(acceptor));
      names_.push_back(hp.to_string());
    }
  }
}

void Listeners::listen(std::string_view what) {
  const std::string suffix = label_.empty() ? "" : " (" + label_ + ")";
  for (size_t i = 0; i < acceptors_.size(); ++i) {
    boost::system::error_code ec;
    acceptors_[i]->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw std::runtime_error("cannot listen on " + names_[i] + suffix + ": " + ec.message());
    if (i > 0 && names_[i] == names_[i - 1]) continue;  // one line per address, not per worker
    if (what.empty()) spdlog::info("listening on {}", names_[i]);
    else spdlog::info("{} listening on {}", what, names_[i]);
  }
}

void Listeners::close_all() {
  for (auto& a : acceptors_)
    boost::asio::post(a->get_executor(), [&acc = *a] {
      boost::system::error_code ignored;
      acc.close(ignored);
    });
}

}  // namespace mk
