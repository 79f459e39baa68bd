// tls_context.cpp — see tls_context.h.
#include "tls/tls_context.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <boost/asio/ssl/context.hpp>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace mk::tls {

namespace ssl = boost::asio::ssl;

namespace {

void tls12_and_later(ssl::context& ctx) {
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
}

class DirectPemReader : public PemReader {
 public:
  std::string read(const std::string& path, std::string& contents) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::strerror(errno);
    std::string data;
    char buf[16384];
    std::string error;
    while (true) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error = std::strerror(errno);
        break;
      }
      if (n == 0) break;
      if (data.size() + size_t(n) > kMaxPemFile) {
        error = "larger than " + std::to_string(kMaxPemFile) + " bytes";
        break;
      }
      data.append(buf, size_t(n));
    }
    ::close(fd);
    OPENSSL_cleanse(buf, sizeof buf);
    if (error.empty()) contents.swap(data);
    OPENSSL_cleanse(data.data(), data.size());
    return error;
  }
};

// Wipes a buffer that held a private key when it goes out of scope.
struct Wiped {
  std::string bytes;
  ~Wiped() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

}  // namespace

PemReader& direct_pem_reader() {
  static DirectPemReader reader;
  return reader;
}

ContextPtr make_server_context(const std::string& cert_file, const std::string& key_file, PemReader& reader,
                               const std::string& section) {
  Wiped cert, key;
  if (auto err = reader.read(cert_file, cert.bytes); !err.empty())
    throw std::runtime_error(section + " cert " + cert_file + ": " + err);
  if (auto err = reader.read(key_file, key.bytes); !err.empty())
    throw std::runtime_error(section + " key " + key_file + ": " + err);
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  tls12_and_later(*ctx);
  boost::system::error_code ec;
  ctx->use_certificate_chain(boost::asio::buffer(cert.bytes), ec);
  if (ec) throw std::runtime_error(section + " cert " + cert_file + ": " + ec.message());
  ctx->use_private_key(boost::asio::buffer(key.bytes), ssl::context::pem, ec);
  if (ec) throw std::runtime_error(section + " key " + key_file + ": " + ec.message());
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1)
    throw std::runtime_error(section + " key " + key_file + " does not match cert " + cert_file);
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

ServerContext::ServerContext(std::string cert_file, std::string key_file, std::string section)
    : cert_(std::move(cert_file)), key_(std::move(key_file)), section_(std::move(section)) {
  ctx_.store(make_server_context(cert_, key_, direct_pem_reader(), section_));
}

std::string ServerContext::reload() {
  try {
    ctx_.store(make_server_context(cert_, key_, reader_ ? *reader_ : direct_pem_reader(), section_));
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace mk::tls
