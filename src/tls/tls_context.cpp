// tls_context.cpp — see tls_context.h.
#include "tls/tls_context.h"

#include <boost/asio/ssl/context.hpp>
#include <stdexcept>

namespace mk::tls {

namespace ssl = boost::asio::ssl;

namespace {

void tls12_and_later(ssl::context& ctx) {
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
}

}  // namespace

ContextPtr make_server_context(const std::string& cert_file, const std::string& key_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  tls12_and_later(*ctx);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cert_file, ec);
  if (ec) throw std::runtime_error("[tls] cert " + cert_file + ": " + ec.message());
  ctx->use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) throw std::runtime_error("[tls] key " + key_file + ": " + ec.message());
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
    throw std::runtime_error("[tls] key " + key_file + " does not match cert " + cert_file);
  return ctx;
}

ContextPtr make_client_context(bool verify, const std::string& ca_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  tls12_and_later(*ctx);
  if (verify) {
    boost::system::error_code ec;
    if (ca_file.empty()) ctx->set_default_verify_paths(ec);
    else ctx->load_verify_file(ca_file, ec);
    if (ec) throw std::runtime_error("[delivery] ca_file " + ca_file + ": " + ec.message());
    ctx->set_verify_mode(ssl::verify_peer);
  } else {
    ctx->set_verify_mode(ssl::verify_none);
  }
  return ctx;
}

ServerContext::ServerContext(std::string cert_file, std::string key_file)
    : cert_(std::move(cert_file)), key_(std::move(key_file)) {
  ctx_.store(make_server_context(cert_, key_));
}

std::string ServerContext::reload() {
  try {
    ctx_.store(make_server_context(cert_, key_));
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace mk::tls
