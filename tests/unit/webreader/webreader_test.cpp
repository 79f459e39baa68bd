// webreader_test.cpp — the web view's server side: the HTML sanitiser against
// attack markup, sessions, and the JSON API over a real Maildir and index
// (login, one account per session, CSRF, listing, a conversation, an action
// that renames the Maildir file as Dovecot would see it).
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>

#include <gumbo.h>

#include "index/database.h"
#include "index/sync.h"
#include "users/passwd_file.h"
#include "users/password.h"
#include "webreader/api.h"
#include "webreader/sanitize.h"
#include "webreader/sessions.h"

namespace mk::webreader {
namespace {

namespace fs = std::filesystem;
namespace bh = boost::beast::http;
namespace json = boost::json;

bool has(const std::string& s, std::string_view needle) { return s.find(needle) != std::string::npos; }

// What a browser would build from the sanitiser's output: no element that
// runs, loads or navigates, and no attribute that does.
std::string active_content(const GumboNode* n) {
  if (n->type == GUMBO_NODE_DOCUMENT) {
    for (unsigned i = 0; i < n->v.document.children.length; ++i)
      if (auto bad = active_content(static_cast<GumboNode*>(n->v.document.children.data[i])); !bad.empty()) return bad;
    return "";
  }
  if (n->type == GUMBO_NODE_TEMPLATE) return "element template";
  if (n->type != GUMBO_NODE_ELEMENT) return "";
  auto& e = n->v.element;
  std::string tag = e.tag == GUMBO_TAG_UNKNOWN ? "unknown" : gumbo_normalized_tagname(e.tag);
  if (e.tag_namespace != GUMBO_NAMESPACE_HTML) return "foreign element " + tag;
  for (auto t : {"script", "iframe", "object", "embed", "form", "input", "button", "meta", "base", "link", "svg", "math",
                 "frame", "noscript", "template"})
    if (tag == t) return "element " + tag;
  for (unsigned i = 0; i < e.attributes.length; ++i) {
    auto* a = static_cast<GumboAttribute*>(e.attributes.data[i]);
    std::string name = a->name, value = a->value;
    for (auto& c : value) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (name.starts_with("on") || name == "srcdoc" || name == "formaction") return "attribute " + name;
    if ((name == "href" || name == "src") && !(value.starts_with("https:") || value.starts_with("http:") ||
                                               value.starts_with("mailto:") || value.starts_with("data:image/png")))
      return "url " + value;
    if ((name == "src" || name == "style") && has(value, "beacon.test")) return "remote " + value;
    if (name == "style" && (has(value, "url(") || has(value, "expression"))) return "style " + value;
  }
  if (tag == "style")
    for (unsigned i = 0; i < e.children.length; ++i) {
      auto* c = static_cast<GumboNode*>(e.children.data[i]);
      if (c->type == GUMBO_NODE_TEXT && (has(c->v.text.text, "url(") || has(c->v.text.text, "@import")))
        return std::string("stylesheet ") + c->v.text.text;
    }
  for (unsigned i = 0; i < e.children.length; ++i)
    if (auto bad = active_content(static_cast<GumboNode*>(e.children.data[i])); !bad.empty()) return bad;
  return "";
}

std::string active_content(const std::string& html) {
  GumboOutput* out = gumbo_parse(html.c_str());
  auto bad = active_content(out->document);
  gumbo_destroy_output(&kGumboDefaultOptions, out);
  return bad;
}

TEST(Sanitize, KeepsLayoutDropsActiveContent) {
  auto r = sanitize_html("<html><head><title>x</title><script>alert(1)</script></head><body>"
                         "<p style=\"color:red\">Hello <b>there</b></p><table border=1><tr><td>1</td></tr></table>"
                         "<img src=x onerror=alert(1)><a href=\"https://example.org/\" onclick=\"x()\">link</a>"
                         "</body></html>");
  EXPECT_TRUE(has(r.html, "<p style=\"color:red\">Hello <b>there</b></p>")) << r.html;
  EXPECT_TRUE(has(r.html, "<table border=\"1\"><tbody><tr><td>1</td></tr></tbody></table>")) << r.html;
  EXPECT_TRUE(has(r.html, "<a href=\"https://example.org/\" target=\"_blank\" rel=\"noopener noreferrer\">link</a>"))
      << r.html;
  for (auto bad : {"script", "alert", "onerror", "onclick", "<title"}) EXPECT_FALSE(has(r.html, bad)) << bad << ": " << r.html;
}

TEST(Sanitize, AttackCorpus) {
  const char* attacks[] = {
      "<script>window.__pwned=1</script>",
      "<img src=x onerror=\"window.__pwned=1\">",
      "<a href=\"javascript:window.__pwned=1\">x</a>",
      "<a href=\" JaVa\tScRiPt:window.__pwned=1\">x</a>",
      "<a href=\"data:text/html,<script>window.__pwned=1</script>\">x</a>",
      "<svg><script>window.__pwned=1</script></svg>",
      "<svg onload=window.__pwned=1></svg>",
      "<math><mtext><table><mglyph><style><img src=x onerror=window.__pwned=1>",
      "<iframe src=\"javascript:window.__pwned=1\"></iframe>",
      "<iframe srcdoc=\"<script>window.__pwned=1</script>\"></iframe>",
      "<object data=\"javascript:window.__pwned=1\"></object><embed src=x>",
      "<form action=\"https://evil.test/\"><input name=p><button>go</button></form>",
      "<meta http-equiv=\"refresh\" content=\"0;url=javascript:window.__pwned=1\">",
      "<base href=\"https://evil.test/\"><a href=\"/x\">x</a>",
      "<div style=\"background:url(https://beacon.test/a)\">x</div>",
      "<div style=\"background:u\\72l(https://beacon.test/a)\">x</div>",
      "<style>@import url(https://beacon.test/b);</style>",
      "<style>p{background-image:url('https://beacon.test/c')}</style>",
      "<div style=\"width:expression(window.__pwned=1)\">x</div>",
      "<noscript><p title=\"</noscript><img src=x onerror=window.__pwned=1>\"></noscript>",
      "<img src=\"https://beacon.test/pixel.gif\">",
      "<img src=\"data:image/svg+xml,<svg onload=window.__pwned=1>\">",
      "<link rel=stylesheet href=\"https://beacon.test/d.css\">",
      "<details open ontoggle=window.__pwned=1>x</details>",
      "<style></style><img src=x onerror=window.__pwned=1 x=\"</style>\">",
      "<template><script>window.__pwned=1</script></template>",
  };
  for (auto a : attacks) {
    auto r = sanitize_html(a);
    EXPECT_EQ(active_content(r.html), "") << a << " → " << r.html;
    EXPECT_EQ(active_content(std::string(a)) == "", false) << "the attack itself is active: " << a;
  }
  EXPECT_TRUE(sanitize_html("<img src=\"https://beacon.test/p.gif\">").blocked_remote);
  EXPECT_TRUE(sanitize_html("<div style=\"background:url(https://beacon.test/a)\">x</div>").blocked_remote);
}

TEST(Sanitize, RemoteOnRequestCidInline) {
  SanitizeOptions allow;
  allow.allow_remote = true;
  auto r = sanitize_html("<img src=\"https://img.test/a.png\" alt=a><div style=\"background:url(https://img.test/b)\">x</div>",
                         allow);
  EXPECT_TRUE(has(r.html, "<img src=\"https://img.test/a.png\" alt=\"a\">")) << r.html;
  EXPECT_TRUE(has(r.html, "url(https://img.test/b)")) << r.html;
  EXPECT_FALSE(r.blocked_remote);
  // Even allowed, nothing that runs.
  EXPECT_FALSE(has(sanitize_html("<div style=\"width:expression(alert(1))\">x</div>", allow).html, "expression"));
  SanitizeOptions cid;
  cid.inline_image = [](std::string_view id) -> std::optional<std::string> {
    if (id == "logo@x") return std::string("data:image/png;base64,AAAA");
    return std::nullopt;
  };
  auto c = sanitize_html("<img src=\"cid:logo@x\"><img src=\"cid:other\">", cid);
  EXPECT_TRUE(has(c.html, "<img src=\"data:image/png;base64,AAAA\">")) << c.html;
  EXPECT_EQ(c.html.find("cid:"), std::string::npos) << c.html;
}

TEST(Sanitize, EscapesTextAndDeepNesting) {
  auto r = sanitize_html("<p>a &lt;b&gt; &amp; \"q\"</p>");
  EXPECT_TRUE(has(r.html, "<p>a &lt;b&gt; &amp; \"q\"</p>")) << r.html;
  std::string deep;
  for (int i = 0; i < 5000; ++i) deep += "<div>";  // the walk recurses at most 200 deep (ASan found 5,000 overflowing)
  deep += "bottom";
  auto d = sanitize_html(deep);
  EXPECT_TRUE(has(d.html, "bottom"));
}

TEST(Sessions, ExpireIdleAbsoluteAndLogout) {
  MemorySessionStore s({10, 100, 3});
  SessionInfo info;
  auto c = s.create("alice@example.org", 1000, &info);
  EXPECT_EQ(c.size(), 64u);
  EXPECT_EQ(info.csrf.size(), 64u);
  EXPECT_NE(info.csrf, c);
  ASSERT_TRUE(s.find(c, 1005));
  EXPECT_EQ(s.find(c, 1005)->user, "alice@example.org");
  EXPECT_TRUE(s.find(c, 1014)) << "each use renews the idle time";
  EXPECT_FALSE(s.find(c, 1025)) << "idle";
  auto d = s.create("bob@example.org", 2000);
  for (int t = 2005; t < 2100; t += 5) ASSERT_TRUE(s.find(d, t));
  EXPECT_FALSE(s.find(d, 2101)) << "absolute";
  auto e = s.create("carol@example.org", 3000);
  s.remove(e);
  EXPECT_FALSE(s.find(e, 3000));
  EXPECT_FALSE(s.find("", 3000));
  EXPECT_FALSE(s.find(std::string(64, 'a'), 3000));
  for (int i = 0; i < 10; ++i) s.create("x@example.org", 4000 + i);
  EXPECT_LE(s.size(), 3u) << "bounded";
}

class MailApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("mk-webreader-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    auto r = load_settings_text("[backup]\ndomains = example.org\narchive = " + (root_ / "archive").string() +
                                    "\n[index]\npath = " + (root_ / "index").string() + "\n",
                                "t");
    ASSERT_TRUE(r.ok()) << r.errors[0];
    settings_ = r.settings;
    for (auto user : {"alice", "bob"})
      for (auto f : {"", ".Archive"})
        for (auto sub : {"cur", "new", "tmp"}) fs::create_directories(root_ / "archive/example.org" / user / f / sub);
    put("alice", "Message-ID: <1@x>\r\nFrom: Bob <bob@example.org>\r\nSubject: Lunch\r\n"
                 "Content-Type: text/html\r\n", "<p onclick=x()>Pizza <script>bad()</script></p>\r\n");
    put("alice", "Message-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\nFrom: Carol <carol@x.test>\r\nSubject: Re: Lunch\r\n",
        "Yes\r\n");
    put("bob", "Message-ID: <3@x>\r\nFrom: Eve <eve@x.test>\r\nSubject: Secret of bob\r\n", "hidden\r\n");
    for (auto user : {"alice", "bob"}) {
      auto db = index::Database::open_writable((root_ / "index/example.org" / user).string(), {});
      index::sync_maildir(*db, (root_ / "archive/example.org" / user).string(), {});
      db->commit();
    }
    users::update_passwd((root_ / "passwd").string(), "", "", [](users::PasswdFile& f) {
      for (auto u : {"alice", "bob"})
        f.put(users::PasswdEntry{std::string(u) + "@example.org", users::hash_password(std::string(u) + "-password", {1, 1024}),
                                 "/h", false});
      return std::string();
    });
    auth_ = std::make_unique<users::Authenticator>(
        users::AuthenticatorConfig{(root_ / "passwd").string(), [](const std::string&) { return true; }, 5, 60});
    api_ = std::make_unique<MailApi>(settings_, *auth_, /*https=*/false, SessionLimits{},
                                     [this](const std::string& sig, bool as_spam) {
                                       trained_.emplace_back(sig, as_spam);
                                       return std::string();
                                     });
  }
  void TearDown() override { fs::remove_all(root_); }

  void put(const std::string& user, const std::string& headers, const std::string& body) {
    ++seq_;
    auto name = std::to_string(1700000000 + seq_) + ".M1P1Q" + std::to_string(seq_) + ".test:2,";
    std::ofstream(root_ / "archive/example.org" / user / "cur" / name, std::ios::binary) << headers << "\r\n" << body;
  }

  http::Response call(bh::verb verb, const std::string& target, const std::string& body = "",
                      const std::string& cookie = "", const std::string& csrf = "", const char* ip = "127.0.0.1") {
    http::Request req{verb, target, 11};
    if (!cookie.empty()) req.set(bh::field::cookie, "other=1; mk_mail=" + cookie);
    if (!csrf.empty()) req.set("X-CSRF-Token", csrf);
    req.body() = body;
    req.prepare_payload();
    return api_->handle(req, *IpAddress::parse(ip));
  }

  // Logs in; returns {cookie, csrf}.
  std::pair<std::string, std::string> login(const std::string& user) {
    auto res = call(bh::verb::post, "/api/v1/mail/session",
                    json::serialize(json::object{{"username", user + "@example.org"}, {"password", user + "-password"}}));
    EXPECT_EQ(res.result_int(), 200u) << res.body();
    std::string set_cookie(res[bh::field::set_cookie]);
    EXPECT_TRUE(has(set_cookie, "HttpOnly")) << set_cookie;
    EXPECT_TRUE(has(set_cookie, "SameSite=Strict")) << set_cookie;
    auto value = set_cookie.substr(8, set_cookie.find(';') - 8);
    return {value, std::string(json::parse(res.body()).at("csrfToken").as_string())};
  }

  fs::path root_;
  Settings settings_;
  std::unique_ptr<users::Authenticator> auth_;
  std::unique_ptr<MailApi> api_;
  int seq_ = 0;
  std::vector<std::pair<std::string, bool>> trained_;
};

TEST_F(MailApiTest, ReportingSpamTrainsTheFilter) {
  put("alice", "X-Spam-Status: No, score=0.100\r\nX-Mailkeep-Signature: 20261202.abcdef\r\nMessage-ID: <9@x>\r\n"
               "From: Spammer <s@spam.test>\r\nSubject: Cheap pills\r\n", "buy\r\n");
  auto db = index::Database::open_writable((root_ / "index/example.org/alice").string(), {});
  index::sync_maildir(*db, (root_ / "archive/example.org/alice").string(), {});
  db->commit();
  db.reset();
  auto [cookie, csrf] = login("alice");
  auto list = json::parse(call(bh::verb::get, "/api/v1/mail/threads?q=pills", "", cookie).body());
  ASSERT_EQ(list.at("threads").as_array().size(), 1u);
  std::string thread(list.at("threads").as_array()[0].at("id").as_string());
  auto res = call(bh::verb::post, "/api/v1/mail/modify",
                  json::serialize(json::object{{"threadIds", json::array{json::string(thread)}}, {"moveTo", "Junk"},
                                               {"trainSpam", true}}),
                  cookie, csrf);
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  EXPECT_EQ(json::parse(res.body()).at("trained").as_int64(), 1);
  ASSERT_EQ(trained_.size(), 1u);
  EXPECT_EQ(trained_[0], std::make_pair(std::string("20261202.abcdef"), true));
  EXPECT_EQ(json::parse(call(bh::verb::get, "/api/v1/mail/threads?mailbox=junk", "", cookie).body()).at("threads").as_array().size(), 1u);
}

TEST_F(MailApiTest, AttachmentsDownloadAndCidImagesInline) {
  put("alice",
      "Message-ID: <att@x>\r\nFrom: Bob <bob@example.org>\r\nSubject: Report\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed; boundary=\"b1\"\r\n",
      "--b1\r\nContent-Type: multipart/related; boundary=\"b2\"\r\n\r\n"
      "--b2\r\nContent-Type: text/html\r\n\r\n<p>Logo: <img src=\"cid:logo@x\"></p>\r\n"
      "--b2\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
      "iVBORw0KGgo=\r\n--b2--\r\n"
      "--b1\r\nContent-Type: text/html; name=\"evil.html\"\r\nContent-Disposition: attachment; filename=\"r\xc3\xa9port \\\"x\\\".html\"\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\nPHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\r\n--b1--\r\n");
  auto db = index::Database::open_writable((root_ / "index/example.org/alice").string(), {});
  index::sync_maildir(*db, (root_ / "archive/example.org/alice").string(), {});
  db->commit();
  db.reset();
  auto [cookie, csrf] = login("alice");
  auto list = json::parse(call(bh::verb::get, "/api/v1/mail/threads?q=subject:report", "", cookie).body());
  ASSERT_EQ(list.at("threads").as_array().size(), 1u) << list;
  std::string thread(list.at("threads").as_array()[0].at("id").as_string());
  auto conv = json::parse(call(bh::verb::get, "/api/v1/mail/threads/" + thread, "", cookie).body());
  auto& email = conv.at("emails").as_array()[0];
  auto& atts = email.at("attachments").as_array();
  ASSERT_EQ(atts.size(), 1u) << "the inline image is part of the body, not listed" << conv;
  std::string part(atts[0].at("partId").as_string());
  std::string id(email.at("id").as_string());
  // The id's ',' and '=' percent-encoded, as the page sends them.
  std::string encoded;
  for (char c : id) encoded += c == ',' ? "%2C" : c == '=' ? "%3D" : std::string(1, c);
  auto dl = call(bh::verb::get, "/api/v1/mail/emails/" + encoded + "/attachments/" + part, "", cookie);
  ASSERT_EQ(dl.result_int(), 200u) << dl.body();
  EXPECT_EQ(dl.body(), "<script>alert(1)</script>");
  EXPECT_EQ(dl[bh::field::content_type], "application/octet-stream");
  std::string disposition(dl[bh::field::content_disposition]);
  EXPECT_TRUE(disposition.starts_with("attachment; filename=\"r__port _x_.html\"; filename*=UTF-8''r%C3%A9port%20%22x%22.html"))
      << disposition;
  EXPECT_EQ(dl["X-Content-Type-Options"], "nosniff");
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/emails/" + encoded + "/attachments/9", "", cookie).result_int(), 404u);
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/emails/" + encoded + "/attachments/x", "", cookie).result_int(), 404u);
  auto html = call(bh::verb::get, "/api/v1/mail/emails/" + encoded + "/html", "", cookie);
  ASSERT_EQ(html.result_int(), 200u);
  EXPECT_TRUE(has(html.body(), "<img src=\"data:image/png;base64,iVBORw0KGgo=\">")) << html.body();
  EXPECT_EQ(html["Content-Security-Policy"], "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'");
  // Dovecot renames the file (a flag) before the index has seen it: still found by its base name.
  auto cur = root_ / "archive/example.org/alice/cur";
  for (auto& e : fs::directory_iterator(cur))
    if (e.path().filename().string().starts_with(id.substr(0, id.find(':'))))
      fs::rename(e.path(), cur / (e.path().filename().string() + "FS"));
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/emails/" + encoded + "/raw", "", cookie).result_int(), 200u);
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/emails/" + encoded + "/html", "", cookie).result_int(), 200u);
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/emails/" + encoded + "/attachments/" + part, "", cookie).body(),
            "<script>alert(1)</script>");
}

TEST_F(MailApiTest, LoginSecurityHeadersAndSessionRules) {
  auto wrong = call(bh::verb::post, "/api/v1/mail/session", R"({"username":"alice@example.org","password":"nope"})");
  EXPECT_EQ(wrong.result_int(), 401u);
  EXPECT_EQ(json::parse(wrong.body()).at("error").as_string(), "invalid-credentials");
  EXPECT_EQ(wrong["Content-Security-Policy"], "default-src 'self'; frame-ancestors 'none'");
  EXPECT_EQ(wrong["X-Content-Type-Options"], "nosniff");
  EXPECT_EQ(wrong["Referrer-Policy"], "no-referrer");
  EXPECT_EQ(call(bh::verb::post, "/api/v1/mail/session", "{").result_int(), 400u);
  for (auto route : {"/api/v1/mail/mailboxes", "/api/v1/mail/threads", "/api/v1/mail/session", "/api/v1/mail/threads/x",
                     "/api/v1/mail/emails/x/raw"})
    EXPECT_EQ(call(bh::verb::get, route).result_int(), 401u) << route;
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/mailboxes", "", std::string(64, 'f')).result_int(), 401u);
  auto [cookie, csrf] = login("alice");
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/session", "", cookie).result_int(), 200u);
  // A state change without (or with a wrong) CSRF token.
  EXPECT_EQ(call(bh::verb::post, "/api/v1/mail/modify", R"({"threadIds":["x"],"seen":true})", cookie).result_int(), 403u);
  EXPECT_EQ(call(bh::verb::post, "/api/v1/mail/modify", R"({"threadIds":["x"],"seen":true})", cookie, cookie).result_int(),
            403u);
  EXPECT_EQ(call(bh::verb::delete_, "/api/v1/mail/session", "", cookie).result_int(), 403u);
  // Plain HTTP from off the machine.
  auto remote = call(bh::verb::get, "/api/v1/mail/session", "", cookie, "", "192.0.2.7");
  EXPECT_EQ(remote.result_int(), 403u);
  EXPECT_EQ(json::parse(remote.body()).at("error").as_string(), "https-required");
  // Logout ends the session.
  EXPECT_EQ(call(bh::verb::delete_, "/api/v1/mail/session", "", cookie, csrf).result_int(), 204u);
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/session", "", cookie).result_int(), 401u);
}

TEST_F(MailApiTest, ListsReadsAndChangesOnlyItsOwnAccount) {
  auto [cookie, csrf] = login("alice");
  auto boxes = json::parse(call(bh::verb::get, "/api/v1/mail/mailboxes", "", cookie).body());
  auto& inbox = boxes.at("list").as_array()[0];
  EXPECT_EQ(inbox.at("role").as_string(), "inbox");
  EXPECT_EQ(inbox.at("totalEmails").as_int64(), 2);
  EXPECT_EQ(inbox.at("unreadEmails").as_int64(), 2);

  auto list = json::parse(call(bh::verb::get, "/api/v1/mail/threads?mailbox=inbox", "", cookie).body());
  ASSERT_EQ(list.at("threads").as_array().size(), 1u) << list;
  auto& t = list.at("threads").as_array()[0];
  EXPECT_EQ(t.at("emailCount").as_int64(), 2);
  EXPECT_EQ(t.at("subject").as_string(), "Lunch");
  std::string thread(t.at("id").as_string());

  auto conv = call(bh::verb::get, "/api/v1/mail/threads/" + thread, "", cookie);
  ASSERT_EQ(conv.result_int(), 200u) << conv.body();
  auto emails = json::parse(conv.body()).at("emails").as_array();
  ASSERT_EQ(emails.size(), 2u);
  std::string html(emails[0].at("htmlBody").as_string());
  EXPECT_TRUE(has(html, "Pizza")) << html;
  EXPECT_FALSE(has(html, "script")) << html;
  EXPECT_FALSE(has(html, "onclick")) << html;
  EXPECT_TRUE(has(std::string(emails[1].at("textBody").as_string()), "Yes"));
  std::string email(emails[0].at("id").as_string());
  auto raw = call(bh::verb::get, "/api/v1/mail/emails/" + email + "/raw", "", cookie);
  EXPECT_EQ(raw.result_int(), 200u);
  EXPECT_TRUE(has(raw.body(), "<script>bad()</script>")) << "show original is the raw file, as text/plain";
  EXPECT_EQ(raw[bh::field::content_type], "text/plain; charset=utf-8");

  // Bob's conversation is not reachable from Alice's session.
  auto [bob_cookie, bob_csrf] = login("bob");
  auto bob_list = json::parse(call(bh::verb::get, "/api/v1/mail/threads?mailbox=inbox", "", bob_cookie).body());
  std::string bob_thread(bob_list.at("threads").as_array()[0].at("id").as_string());
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/threads/" + bob_thread, "", cookie).result_int(), 404u);
  EXPECT_EQ(call(bh::verb::post, "/api/v1/mail/modify",
                 json::serialize(json::object{{"threadIds", json::array{json::string(bob_thread)}}, {"moveTo", "Trash"}}),
                 cookie, csrf)
                .result_int(),
            404u);
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/threads/" + bob_thread, "", bob_cookie).result_int(), 200u);
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/threads?q=secret", "", cookie).body().find("Secret"), std::string::npos);

  // Archive the conversation: its files move to .Archive/cur, as Dovecot sees it.
  auto done = call(bh::verb::post, "/api/v1/mail/modify",
                   json::serialize(json::object{{"threadIds", json::array{json::string(thread)}}, {"moveTo", "Archive"},
                                                {"seen", true}, {"addLabels", json::array{"Food"}}}),
                   cookie, csrf);
  ASSERT_EQ(done.result_int(), 200u) << done.body();
  EXPECT_EQ(json::parse(done.body()).at("moved").as_int64(), 2);
  size_t archived = 0;
  for (auto& e : fs::directory_iterator(root_ / "archive/example.org/alice/.Archive/cur")) {
    ++archived;
    EXPECT_TRUE(e.path().string().ends_with(":2,S")) << e.path();
  }
  EXPECT_EQ(archived, 2u);
  auto inbox_now = json::parse(call(bh::verb::get, "/api/v1/mail/threads?mailbox=inbox", "", cookie).body());
  EXPECT_TRUE(inbox_now.at("threads").as_array().empty());
  auto labelled = json::parse(call(bh::verb::get, "/api/v1/mail/threads?mailbox=label:Food", "", cookie).body());
  EXPECT_EQ(labelled.at("threads").as_array().size(), 1u);
  boxes = json::parse(call(bh::verb::get, "/api/v1/mail/mailboxes", "", cookie).body());
  bool food = false;
  for (auto& b : boxes.at("list").as_array())
    if (b.at("id").as_string() == "label:Food") food = b.at("totalEmails").as_int64() == 2;
  EXPECT_TRUE(food) << boxes;
  // Bad input.
  EXPECT_EQ(call(bh::verb::post, "/api/v1/mail/modify", R"({"threadIds":[thread],"moveTo":"../x"})", cookie, csrf).result_int(),
            400u);
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/threads?q=from:(", "", cookie).result_int(), 400u);
  EXPECT_EQ(call(bh::verb::get, "/api/v1/mail/threads?mailbox=nope", "", cookie).result_int(), 404u);
}

}  // namespace
}  // namespace mk::webreader
