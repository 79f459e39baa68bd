// https_client.cpp — see https_client.h.
#include "directory/https_client.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <ctime>

#include "core/net.h"
#include "core/strings.h"

namespace mk::directory {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::optional<Url> parse_url(const std::string& url, std::string* error) {
  auto fail = [&](const char* why) -> std::optional<Url> {
    if (error) *error = std::string(why) + ": '" + printable_ascii(url, 200) + "'";
    return std::nullopt;
  };
  if (!istarts_with(url, "https://")) return fail("not an https:// URL");
  std::string_view rest(url);
  rest.remove_prefix(8);
  auto slash = rest.find_first_of("/?");
  auto authority = rest.substr(0, slash);
  Url u;
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (!u.target.empty() && u.target[0] == '?') u.target = "/" + u.target;
  if (authority.find('@') != std::string_view::npos) return fail("user info in URL");
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return fail("bad IPv6 literal");
    u.host = std::string(authority.substr(1, close - 1));
    authority.remove_prefix(close + 1);
    if (!authority.empty()) {
      if (authority.front() != ':') return fail("bad port");
      u.port = std::string(authority.substr(1));
    }
  } else {
    auto colon = authority.find(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) u.port = std::string(authority.substr(colon + 1));
  }
  if (u.host.empty()) return fail("no host");
  if (u.port.empty() || u.port.size() > 5 || u.port.find_first_not_of("0123456789") != std::string::npos)
    return fail("bad port");
  if (auto n = std::stoul(u.port); n == 0 || n > 65535) return fail("bad port");
  for (unsigned char c : u.target)
    if (c <= 32 || c >= 127) return fail("bad character in URL");
  return u;
}

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += char(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

namespace {

std::optional<unsigned> parse_retry_after(std::string_view v) {
  v = trim(v);
  if (v.empty()) return std::nullopt;
  if (v.find_first_not_of("0123456789") == std::string_view::npos) {
    if (v.size() > 6) return 86400u;
    return unsigned(std::stoul(std::string(v)));
  }
  struct tm tm {};  // an HTTP date: "Wed, 21 Oct 2015 07:28:00 GMT"
  if (!strptime(std::string(v).c_str(), "%a, %d %b %Y %H:%M:%S", &tm)) return std::nullopt;
  auto when = timegm(&tm), now = ::time(nullptr);
  return unsigned(when > now ? when - now : 0);
}

}  // namespace

struct HttpsClient::Impl {
  asio::ssl::context ctx{asio::ssl::context::tls_client};
  std::chrono::seconds timeout;
  size_t body_limit;

  asio::awaitable<HttpsResponse> run(http::verb verb, Url url,
                                     std::vector<std::pair<std::string, std::string>> headers, std::string body,
                                     std::string content_type) {
    auto ex = co_await asio::this_coro::executor;
    tcp::resolver resolver(ex);
    beast::ssl_stream<beast::tcp_stream> stream(ex, ctx);
    auto* ssl = stream.native_handle();
    bool is_ip = IpAddress::parse(url.host).has_value();
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), url.host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl, url.host.c_str());
      SSL_set1_host(ssl, url.host.c_str());
    }
    beast::get_lowest_layer(stream).expires_after(timeout);
    auto endpoints = co_await resolver.async_resolve(url.host, url.port, asio::use_awaitable);
    co_await beast::get_lowest_layer(stream).async_connect(endpoints, asio::use_awaitable);
    try {
      co_await stream.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
    } catch (const boost::system::system_error& e) {
      long v = SSL_get_verify_result(ssl);
      if (v != X509_V_OK)
        throw HttpsError("https://" + url.host + ":" + url.port + ": certificate refused: " +
                             X509_verify_cert_error_string(v),
                         /*permanent=*/true);
      throw;
    }

    http::request<http::string_body> req{verb, url.target, 11};
    req.set(http::field::host, url.port == "443" ? url.host : url.host + ":" + url.port);
    req.set(http::field::user_agent, "mailkeep-directory");
    req.set(http::field::accept, "application/json");
    for (auto& [k, v] : headers) req.set(k, v);
    if (!content_type.empty()) req.set(http::field::content_type, content_type);
    req.body() = std::move(body);
    req.prepare_payload();
    co_await http::async_write(stream, req, asio::use_awaitable);

    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(body_limit);
    parser.header_limit(64 * 1024);
    co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
    auto& res = parser.get();
    HttpsResponse out;
    out.status = res.result_int();
    out.body = std::move(res.body());
    if (auto it = res.find(http::field::retry_after); it != res.end()) out.retry_after = parse_retry_after(it->value());
    beast::error_code ignored;
    beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_both, ignored);
    co_return out;
  }
};

HttpsClient::HttpsClient(const std::string& ca_file, std::chrono::seconds timeout, size_t body_limit)
    : impl_(std::make_unique<Impl>()) {
  impl_->timeout = timeout;
  impl_->body_limit = body_limit;
  impl_->ctx.set_verify_mode(asio::ssl::verify_peer);
  boost::system::error_code ec;
  if (ca_file.empty())
    impl_->ctx.set_default_verify_paths(ec);
  else
    impl_->ctx.load_verify_file(ca_file, ec);
  if (ec) throw HttpsError("cannot load CA certificates " + (ca_file.empty() ? std::string("(system store)") : ca_file) + ": " + ec.message());
  SSL_CTX_set_min_proto_version(impl_->ctx.native_handle(), TLS1_2_VERSION);
}

HttpsClient::~HttpsClient() = default;

HttpsResponse HttpsClient::request(const std::string& method, const std::string& url_text,
                                   const std::vector<std::pair<std::string, std::string>>& headers,
                                   const std::string& body, const std::string& content_type) {
  std::string err;
  auto url = parse_url(url_text, &err);
  if (!url) throw HttpsError(err, /*permanent=*/true);
  auto verb = http::string_to_verb(method);
  asio::io_context io;
  std::optional<HttpsResponse> result;
  std::exception_ptr failure;
  asio::co_spawn(io, impl_->run(verb, *url, headers, body, content_type),
                 [&](std::exception_ptr e, HttpsResponse r) {
                   if (e) failure = e;
                   else result = std::move(r);
                 });
  io.run();
  if (failure) {
    auto where = "https://" + url->host + ":" + url->port;
    try {
      std::rethrow_exception(failure);
    } catch (const HttpsError&) {
      throw;
    } catch (const boost::system::system_error& e) {
      std::string what = e.code().message();
      if (e.code() == beast::error::timeout) what = "timed out after " + std::to_string(impl_->timeout.count()) + " s";
      if (e.code().category() == asio::error::get_ssl_category()) {
        // The reason a certificate was refused, from OpenSSL's own table.
        what = "TLS: " + what;
      }
      throw HttpsError(where + ": " + what);
    } catch (const std::exception& e) {
      throw HttpsError(where + ": " + e.what());
    }
  }
  return std::move(*result);
}

}  // namespace mk::directory
