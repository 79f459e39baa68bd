// spam_page_test.cpp — the operator's /spam routes as functions of the
// request: authentication, the rendered history (rows, red spam rows,
// escaping, counts since a date) and reclassification errors and success.
#include "http/spam_page.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>

#include "../spam/fake_history.h"
#include "http/api.h"

namespace mk::http {
namespace {

namespace bh = boost::beast::http;
namespace json = boost::json;
namespace fs = std::filesystem;

const std::string kToken = "0123456789abcdef0123";

struct SpamPageTest : ::testing::Test {
  fs::path dir = fs::temp_directory_path() / ("mk-spampage-" + std::to_string(::getpid()));
  spam::FakeHistory history;
  static inline int64_t clock_now = 1'800'000'010;  // ten seconds into a minute
  SpamPage page{history, nullptr, {kToken, (dir / "spam.model").string(), {0.5, 0.5}, [] { return clock_now; }}};

  SpamPageTest() {
    fs::create_directories(dir);
    spam::Tokenizer t;
    t.feed("Subject: x\r\n\r\nwords words\r\n");
    auto f = t.finish();
    add("sigspam", 2'000'000'000, 0.995, true, "<script>alert(1)</script>", f);
    add("sigham", 1'000'000'000, 0.02, false, "lunch?", f);
    add("sigold", 100, 0.2, false, "expired one", {});
  }
  ~SpamPageTest() override { fs::remove_all(dir); }
  void add(std::string sig, int64_t time, double score, bool spam, std::string subject, std::vector<uint32_t> f) {
    spam::Verdict v;
    v.signature = sig;
    v.time = time;
    v.client = "192.0.2.1";
    v.sender = "s@example.com";
    v.recipients = "r@example.org";
    v.subject = subject;
    v.score = score;
    v.call = spam ? spam::Call::Spam : spam::Call::Ham;
    v.action = "relayed";
    history.record(v, f);
  }
  Response call(bh::verb method, std::string target, std::string auth = "Bearer " + kToken, std::string body = "",
                std::string ctype = "application/json", IpAddress client = *IpAddress::parse("192.0.2.50")) {
    Request req{method, target, 11};
    if (!auth.empty()) req.set(bh::field::authorization, auth);
    if (!ctype.empty()) req.set(bh::field::content_type, ctype);
    req.body() = body;
    req.prepare_payload();
    return page.handle(req, client);
  }
  static std::string code(const Response& r) { return std::string(json::parse(r.body()).at("error").as_string()); }
};

TEST_F(SpamPageTest, OperatorOnly) {
  EXPECT_TRUE(SpamPage::authorized("Bearer " + kToken, kToken));
  // Basic with any user name: "op:<token>" and ":<token>".
  EXPECT_TRUE(SpamPage::authorized("Basic b3A6MDEyMzQ1Njc4OWFiY2RlZjAxMjM=", kToken));
  EXPECT_TRUE(SpamPage::authorized("basic OjAxMjM0NTY3ODlhYmNkZWYwMTIz", kToken));
  EXPECT_FALSE(SpamPage::authorized("Basic b3A6d3Jvbmc=", kToken));  // op:wrong
  EXPECT_FALSE(SpamPage::authorized("Basic !!!!", kToken));
  EXPECT_FALSE(SpamPage::authorized("Bearer " + kToken + "x", kToken));
  EXPECT_FALSE(SpamPage::authorized("", kToken));
  EXPECT_FALSE(SpamPage::authorized("Bearer ", ""));  // no token configured: nobody

  auto r = call(bh::verb::get, "/spam", "");
  EXPECT_EQ(r.result_int(), 401);
  EXPECT_EQ(code(r), "unauthorized");
  EXPECT_NE(std::string(r[bh::field::www_authenticate]).find("Basic"), std::string::npos);
  EXPECT_EQ(call(bh::verb::post, "/spam/reclassify", "Bearer nope", R"({"signature":"sigham","as":"spam"})").result_int(), 401);
  EXPECT_FALSE(history.rows["sigham"].verdict.reclassified_as);
}

TEST_F(SpamPageTest, TenWrongTokensAMinuteLockTheClientOut) {
  auto guess = [&](const char* ip) { return call(bh::verb::get, "/spam", "Bearer wrong", "", "", *IpAddress::parse(ip)); };
  // Asking without credentials (a browser's first request) is no failed attempt.
  for (int i = 0; i < 20; ++i) ASSERT_EQ(call(bh::verb::get, "/spam", "").result_int(), 401);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(guess("198.51.100.7").result_int(), 401) << i;
  auto locked = guess("198.51.100.7");
  EXPECT_EQ(locked.result_int(), 429);
  EXPECT_EQ(code(locked), "too-many-attempts");
  EXPECT_EQ(locked[bh::field::retry_after], "50");
  // The right token does not help the locked-out client this minute ...
  EXPECT_EQ(call(bh::verb::get, "/spam", "Bearer " + kToken, "", "", *IpAddress::parse("198.51.100.7")).result_int(), 429);
  // ... nor does the next address of its IPv4 neighbourhood count with it, or anyone else.
  EXPECT_EQ(guess("198.51.100.8").result_int(), 401);
  EXPECT_EQ(call(bh::verb::get, "/spam").result_int(), 200);
  // The next minute the client may try again.
  clock_now += 50;
  EXPECT_EQ(call(bh::verb::get, "/spam", "Bearer " + kToken, "", "", *IpAddress::parse("198.51.100.7")).result_int(), 200);
  clock_now -= 50;
}

TEST_F(SpamPageTest, HistoryPageListsRowsEscapedWithCounts) {
  auto r = call(bh::verb::get, "/spam");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(r[bh::field::content_type], "text/html; charset=utf-8");
  EXPECT_TRUE(r[bh::field::access_control_allow_origin].empty());
  auto& b = r.body();
  EXPECT_NE(b.find(R"(<tr class="spam" data-signature="sigspam">)"), std::string::npos);
  EXPECT_NE(b.find(R"(<tr class="ham" data-signature="sigham">)"), std::string::npos);
  EXPECT_EQ(b.find("<script>alert"), std::string::npos);
  EXPECT_NE(b.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(b.find(R"(<span id="count-spam">1</span>)"), std::string::npos);
  EXPECT_NE(b.find(R"(<span id="count-ham">2</span>)"), std::string::npos);
  EXPECT_LT(b.find("sigspam"), b.find("sigham"));  // newest first

  auto since = call(bh::verb::get, "/spam?since=2001-09-09");  // 1'000'000'000 is 2001-09-09T01:46:40Z
  ASSERT_EQ(since.result_int(), 200);
  EXPECT_NE(since.body().find(R"(<span id="count-ham">1</span>)"), std::string::npos);
  EXPECT_EQ(code(call(bh::verb::get, "/spam?since=yesterday")), "invalid-data");
  EXPECT_EQ(code(call(bh::verb::get, "/spam?limit=0")), "invalid-data");
  auto one = call(bh::verb::get, "/spam?limit=1");
  EXPECT_EQ(one.body().find("sigham"), std::string::npos);
  EXPECT_EQ(call(bh::verb::delete_, "/spam").result_int(), 405);
}

TEST_F(SpamPageTest, HistoryAsJsonForScripts) {
  Request req{bh::verb::get, "/spam?since=2001-09-09", 11};
  req.set(bh::field::authorization, "Bearer " + kToken);
  req.set(bh::field::accept, "application/json");
  auto r = page.handle(req, IpAddress{});
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(r[bh::field::content_type], "application/json");
  auto b = json::parse(r.body()).as_object();
  EXPECT_EQ(b.at("since").as_string(), "2001-09-09");
  EXPECT_EQ(b.at("counts").at("spam").to_number<uint64_t>(), 1u);
  EXPECT_EQ(b.at("counts").at("ham").to_number<uint64_t>(), 1u);
  auto& verdicts = b.at("verdicts").as_array();
  ASSERT_EQ(verdicts.size(), 3u);
  EXPECT_EQ(verdicts[0].at("signature").as_string(), "sigspam");
  EXPECT_EQ(verdicts[0].at("subject").as_string(), "<script>alert(1)</script>");  // JSON, not HTML: as it was
  EXPECT_EQ(verdicts[0].at("verdict").as_string(), "spam");
  EXPECT_TRUE(verdicts[0].at("reclassified_as").is_null());
}

TEST_F(SpamPageTest, ReclassifyErrors) {
  auto post = [&](std::string body, std::string ctype = "application/json") {
    return call(bh::verb::post, "/spam/reclassify", "Bearer " + kToken, body, ctype);
  };
  EXPECT_EQ(post(R"({"signature":"sigham","as":"spam"})", "application/x-www-form-urlencoded").result_int(), 415);
  EXPECT_EQ(code(post("not json")), "invalid-data");
  EXPECT_EQ(code(post(R"({"signature":"sigham","as":"maybe"})")), "invalid-data");
  EXPECT_EQ(code(post(R"({"as":"spam"})")), "invalid-data");
  auto r = post(R"({"signature":"nosuch","as":"spam"})");
  EXPECT_EQ(r.result_int(), 404);
  EXPECT_EQ(code(r), "not-found");
  r = post(R"({"signature":"sigold","as":"spam"})");
  EXPECT_EQ(r.result_int(), 410);
  EXPECT_EQ(code(r), "expired");
  EXPECT_EQ(call(bh::verb::get, "/spam/reclassify").result_int(), 405);
  history.fail = true;
  r = call(bh::verb::get, "/spam");
  EXPECT_EQ(r.result_int(), 503);
  EXPECT_EQ(code(r), "history-unavailable");
}

TEST_F(SpamPageTest, ReclassifyRetrainsAndLabels) {
  auto r = call(bh::verb::post, "/spam/reclassify", "Bearer " + kToken, R"({"signature":"sigspam","as":"ham"})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_TRUE(r[bh::field::access_control_allow_origin].empty());
  auto b = json::parse(r.body()).as_object();
  EXPECT_EQ(b.at("as").as_string(), "ham");
  EXPECT_EQ(b.at("was").as_string(), "spam");
  EXPECT_LT(b.at("score_after").as_double(), 0.5);
  EXPECT_TRUE(fs::exists(dir / "spam.model"));
  EXPECT_EQ(history.rows["sigspam"].verdict.reclassified_as, std::optional<bool>(false));
  auto page_after = call(bh::verb::get, "/spam");
  EXPECT_NE(page_after.body().find(R"(<tr class="ham" data-signature="sigspam">)"), std::string::npos);
  EXPECT_NE(page_after.body().find("ham (reclassified)"), std::string::npos);
}

TEST_F(SpamPageTest, RoutedByTheApiOnlyWhenConfigured) {
  Api with{nullptr, {}, {&page}};
  Request req{bh::verb::get, "/spam", 11};
  req.set(bh::field::authorization, "Bearer " + kToken);
  EXPECT_EQ(with.handle(req, IpAddress{}).result_int(), 200);
  Request alias{bh::verb::post, "/api/v1/aliases", 11};
  alias.set(bh::field::content_type, "application/json");
  auto r = with.handle(alias, IpAddress{});
  EXPECT_EQ(r.result_int(), 404);  // no alias domains here
  Api without{nullptr, {}, {}};
  EXPECT_EQ(without.handle(req, IpAddress{}).result_int(), 404);
}

}  // namespace
}  // namespace mk::http
