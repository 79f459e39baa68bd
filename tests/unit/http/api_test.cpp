// api_test.cpp — the HTTP API as a function of request and client address:
// statuses, stable error codes, CORS, rate limit, X-Forwarded-For trust.
#include "http/api.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "../aliases/fake_store.h"

namespace mk::http {
namespace {

namespace bh = boost::beast::http;
namespace json = boost::json;

struct ApiTest : ::testing::Test {
  aliases::FakeAliasStore store;
  int64_t now = 1'700'000'000;
  aliases::AliasService service{store, {{"alias.example"}, 7, 60, 100}, [this] { return now; }};
  Api api{&service, {{*Cidr::parse("10.0.0.1/32", nullptr)}, 30}};
  IpAddress client = *IpAddress::parse("192.0.2.10");

  Response call(bh::verb method, std::string target, std::string body = "", std::string ctype = "application/json",
                std::string auth = "", std::string xff = "", IpAddress peer = {}) {
    Request req{method, target, 11};
    if (!ctype.empty()) req.set(bh::field::content_type, ctype);
    if (!auth.empty()) req.set(bh::field::authorization, auth);
    if (!xff.empty()) req.set("X-Forwarded-For", xff);
    req.body() = body;
    req.prepare_payload();
    return api.handle(req, peer == IpAddress{} ? client : peer);
  }
  static json::object body(const Response& r) { return json::parse(r.body()).as_object(); }
};

TEST_F(ApiTest, CreateReturns201WithToken) {
  auto r = call(bh::verb::post, "/api/v1/aliases", R"({"target":"me@example.com","days":3,"max_usage":5})");
  ASSERT_EQ(r.result_int(), 201) << r.body();
  auto b = body(r);
  auto aid = std::string(b["aid"].as_string());
  EXPECT_EQ(b["alias"].as_string(), aid + "@alias.example");
  EXPECT_EQ(b["target"].as_string(), "me@example.com");
  EXPECT_EQ(b["max_usage"].as_int64(), 5);
  EXPECT_EQ(b["uses"].as_int64(), 0);
  EXPECT_EQ(b["valid_until"].as_string(), "2023-11-17T22:13:20Z");  // now + 3 days
  EXPECT_EQ(b["manage_token"].as_string().size(), 64u);
  EXPECT_EQ(r[bh::field::access_control_allow_origin], "*");
  EXPECT_EQ(store.rows[aid].creator_ip, "192.0.2.10");
}

TEST_F(ApiTest, ErrorTable) {
  struct Case {
    const char* name;
    bh::verb method;
    const char* target;
    const char* body;
    const char* ctype;
    int status;
    const char* code;
  } cases[] = {
      {"bad json", bh::verb::post, "/api/v1/aliases", "{nope", "application/json", 400, "invalid-data"},
      {"not an object", bh::verb::post, "/api/v1/aliases", "[1]", "application/json", 400, "invalid-data"},
      {"no target", bh::verb::post, "/api/v1/aliases", "{}", "application/json", 400, "invalid-data"},
      {"bad target", bh::verb::post, "/api/v1/aliases", R"({"target":"x"})", "application/json", 400, "invalid-data"},
      {"loop", bh::verb::post, "/api/v1/aliases", R"({"target":"a@alias.example"})", "application/json", 400, "invalid-data"},
      {"days text", bh::verb::post, "/api/v1/aliases", R"({"target":"a@b.example","days":"x"})", "application/json", 400, "invalid-data"},
      {"days too many", bh::verb::post, "/api/v1/aliases", R"({"target":"a@b.example","days":99})", "application/json", 400, "invalid-data"},
      {"wrong type", bh::verb::post, "/api/v1/aliases", R"({"target":"a@b.example"})", "text/plain", 415, "invalid-request-type"},
      {"form post", bh::verb::post, "/api/v1/aliases", "target=a", "application/x-www-form-urlencoded", 415, "invalid-request-type"},
      {"GET collection", bh::verb::get, "/api/v1/aliases", "", "", 405, "method-not-allowed"},
      {"PUT compat", bh::verb::put, "/aliases", "", "", 405, "method-not-allowed"},
      {"no such route", bh::verb::get, "/api/v2/whatever", "", "", 404, "not-found"},
      {"no auth", bh::verb::get, "/api/v1/aliases/abcdefghjkmnpq", "", "", 401, "unauthorized"},
  };
  for (auto& c : cases) {
    auto r = call(c.method, c.target, c.body, c.ctype);
    EXPECT_EQ(r.result_int(), c.status) << c.name << ": " << r.body();
    auto b = body(r);
    EXPECT_EQ(b["error"].as_string(), c.code) << c.name;
    EXPECT_FALSE(b["description"].as_string().empty()) << c.name;
  }
  EXPECT_TRUE(store.rows.empty());  // nothing was created by any of them
}

TEST_F(ApiTest, RateLimitSpentOnlyByValidRequests) {
  EXPECT_EQ(call(bh::verb::post, "/api/v1/aliases", R"({"target":"bad"})").result_int(), 400);
  EXPECT_EQ(call(bh::verb::post, "/api/v1/aliases", R"({"target":"a@b.example"})").result_int(), 201);
  now += 10;
  auto limited = call(bh::verb::post, "/api/v1/aliases", R"({"target":"a@b.example"})");
  EXPECT_EQ(limited.result_int(), 429);
  EXPECT_EQ(body(limited)["error"].as_string(), "rate-limited");
  EXPECT_EQ(limited[bh::field::retry_after], "20");
  // Another client is not limited; X-Forwarded-For from an untrusted peer is ignored.
  EXPECT_EQ(call(bh::verb::post, "/api/v1/aliases", R"({"target":"a@b.example"})", "application/json", "", "",
                 *IpAddress::parse("192.0.2.11"))
                .result_int(),
            201);
  EXPECT_EQ(call(bh::verb::post, "/api/v1/aliases", R"({"target":"a@b.example"})", "application/json", "",
                 "203.0.113.9")
                .result_int(),
            429);
  now += 20;
  EXPECT_EQ(call(bh::verb::post, "/api/v1/aliases", R"({"target":"a@b.example"})").result_int(), 201);
}

TEST_F(ApiTest, ForwardedForTrustedOnlyFromProxies) {
  auto proxy = *IpAddress::parse("10.0.0.1");
  Request req{bh::verb::get, "/", 11};
  req.set("X-Forwarded-For", "198.51.100.1, 203.0.113.9");
  EXPECT_EQ(api.client_address(req, proxy).to_string(), "203.0.113.9");  // rightmost untrusted
  EXPECT_EQ(api.client_address(req, client).to_string(), "192.0.2.10");  // not a proxy: ignored
  req.set("X-Forwarded-For", "garbage");
  EXPECT_EQ(api.client_address(req, proxy).to_string(), "10.0.0.1");
  req.set("X-Forwarded-For", "198.51.100.1, 10.0.0.1");
  EXPECT_EQ(api.client_address(req, proxy).to_string(), "198.51.100.1");
}

TEST_F(ApiTest, ManageWithTokenAndNoOracleForIds) {
  auto created = body(call(bh::verb::post, "/api/v1/aliases", R"({"target":"me@example.com","max_usage":5})"));
  std::string aid(created["aid"].as_string()), token(created["manage_token"].as_string());
  auto path = "/api/v1/aliases/" + aid;
  auto ok = call(bh::verb::get, path, "", "", "Bearer " + token);
  ASSERT_EQ(ok.result_int(), 200) << ok.body();
  EXPECT_EQ(body(ok)["status"].as_string(), "live");
  EXPECT_EQ(body(ok)["uses_left"].as_int64(), 5);
  auto wrong_token = call(bh::verb::get, path, "", "", "Bearer " + std::string(64, 'a'));
  auto unknown_id = call(bh::verb::get, "/api/v1/aliases/abcdefghjkmnpq", "", "", "Bearer " + token);
  EXPECT_EQ(wrong_token.result_int(), 404);
  EXPECT_EQ(unknown_id.result_int(), 404);
  EXPECT_EQ(wrong_token.body(), unknown_id.body());  // indistinguishable
  auto del = call(bh::verb::delete_, path, "", "", "Bearer " + token);
  ASSERT_EQ(del.result_int(), 200);
  EXPECT_EQ(body(del)["status"].as_string(), "disabled");
  EXPECT_TRUE(store.rows[aid].disabled);
}

TEST_F(ApiTest, TempaliasCompatibleShapes) {
  auto r = call(bh::verb::post, "/aliases", R"({"target":"me@example.com","days":"2","max-usage":"3"})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  auto b = body(r);
  for (auto key : {"aid", "valid_from", "valid_until", "max_usage", "target", "days"}) EXPECT_TRUE(b.contains(key)) << key;
  EXPECT_EQ(b["days"].as_int64(), 2);
  EXPECT_EQ(b["max_usage"].as_int64(), 3);
  now += 100;
  auto jsonp = call(bh::verb::get, "/aliases?callback=cb_1&target=me%40example.com&days=1&max-usage=2", "", "");
  EXPECT_EQ(jsonp.result_int(), 200);
  EXPECT_EQ(jsonp[bh::field::content_type], "text/javascript");
  EXPECT_EQ(jsonp.body().rfind("cb_1({", 0), 0u) << jsonp.body();
  auto evil = call(bh::verb::get, "/aliases?callback=alert(1)//&target=me%40example.com", "", "");
  EXPECT_EQ(evil.result_int(), 400);
}

TEST_F(ApiTest, CorsPreflightAndStoreFailure) {
  auto pre = call(bh::verb::options, "/api/v1/aliases", "", "");
  EXPECT_EQ(pre.result_int(), 204);
  EXPECT_EQ(pre[bh::field::access_control_allow_origin], "*");
  EXPECT_NE(std::string(pre[bh::field::access_control_allow_headers]).find("Content-Type"), std::string::npos);
  store.fail = true;
  auto r = call(bh::verb::post, "/api/v1/aliases", R"({"target":"me@example.com"})");
  EXPECT_EQ(r.result_int(), 503);
  EXPECT_EQ(body(r)["error"].as_string(), "store-unavailable");
}

TEST_F(ApiTest, ServesThePage) {
  auto page = call(bh::verb::get, "/", "", "");
  ASSERT_EQ(page.result_int(), 200);
  EXPECT_NE(page.body().find("<form id=\"create\""), std::string::npos);
  EXPECT_NE(std::string(page[bh::field::content_type]).find("text/html"), std::string::npos);
  EXPECT_EQ(call(bh::verb::get, "/app.js", "", "").result_int(), 200);
  EXPECT_EQ(call(bh::verb::get, "/style.css", "", "").result_int(), 200);
}

}  // namespace
}  // namespace mk::http
