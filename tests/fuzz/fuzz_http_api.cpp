// fuzz_http_api.cpp — libFuzzer target: raw HTTP bytes through Beast's
// request parser (with the server's limits) into the alias API, over an
// in-memory store. Invariants: no crash; every API answer is JSON with an
// error code or a success shape; statuses stay in the documented set.
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/json.hpp>
#include <cstdint>
#include <cstdlib>
#include <set>

#include "../unit/aliases/fake_store.h"
#include "http/api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace bh = boost::beast::http;
  static mk::aliases::FakeAliasStore store;
  static int64_t now = 1'700'000'000;
  static mk::aliases::AliasService service(store, {{"alias.example"}, 7, 60, 100}, [] { return now; });
  static mk::http::Api api(&service, {{*mk::Cidr::parse("127.0.0.1/32", nullptr)}, 0});
  if (store.rows.size() > 1000) store.rows.clear();

  bh::request_parser<bh::string_body> parser;
  parser.header_limit(8 * 1024);
  parser.body_limit(4096);
  parser.eager(true);
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (ec || !parser.is_done()) return 0;
  auto res = api.handle(parser.get(), *mk::IpAddress::parse("127.0.0.1"));
  static const std::set<unsigned> allowed{200, 201, 204, 400, 401, 403, 404, 405, 413, 415, 429, 503};
  if (!allowed.count(res.result_int())) abort();
  auto type = std::string(res[bh::field::content_type]);
  if (type == "application/json") {
    auto v = boost::json::parse(res.body(), ec);
    if (ec || !v.is_object()) abort();
    if (res.result_int() >= 400 && !v.as_object().contains("error")) abort();
  }
  return 0;
}
