// api.cpp — see api.h.
#include "webreader/api.h"

#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <openssl/evp.h>

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <thread>

#include "core/log.h"
#include "db/error.h"
#include "core/strings.h"
#include "http/api.h"
#include "http/assets.h"
#include "index/message.h"
#include "index/search.h"
#include "mailbox/mailbox.h"
#include "policy/rate_limit.h"
#include "webreader/sanitize.h"
#include "webreader/compose.h"
#include "filters/filters.h"
#include "index/query.h"
#include <filesystem>
#include "core/content.h"
#include "delivery/smtp_upstream.h"
#include "smtp/command.h"
#include "smtp/sasl.h"
#include "tls/tls_context.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <openssl/crypto.h>

namespace mk::webreader {
namespace {

namespace bh = boost::beast::http;
namespace json = boost::json;
using http::Request;
using http::Response;

constexpr std::string_view kPrefix = "/api/v1/mail/";
constexpr const char* kCookie = "mk_mail";
constexpr size_t kMaxIds = 1000;
constexpr size_t kMaxRaw = 64 * 1024 * 1024;

void secure(Response& res) {
  res.set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'");
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "no-referrer");
  res.set(bh::field::cache_control, "no-store");
}

Response reply(unsigned status, const json::value& body, unsigned version) {
  Response res{static_cast<bh::status>(status), version};
  res.set(bh::field::content_type, "application/json");
  secure(res);
  res.body() = json::serialize(body);
  res.prepare_payload();
  return res;
}

Response error(unsigned status, std::string_view code, std::string_view description, unsigned version) {
  return reply(status, json::object{{"error", code}, {"description", description}}, version);
}

std::string header(const Request& req, std::string_view name) {
  auto it = req.find(name);
  return it == req.end() ? "" : std::string(it->value());
}

std::string cookie(const Request& req) {
  auto all = header(req, "Cookie");
  std::string_view rest(all);
  while (!rest.empty()) {
    auto semi = rest.find(';');
    auto part = trim(rest.substr(0, semi));
    rest = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi + 1);
    auto eq = part.find('=');
    if (eq != std::string_view::npos && part.substr(0, eq) == kCookie) return std::string(part.substr(eq + 1));
  }
  return "";
}

// The query string of a request target, decoded (http::parse_query).
std::map<std::string, std::string> query_params(std::string_view target) {
  auto q = target.find('?');
  return q == std::string_view::npos ? std::map<std::string, std::string>{} : http::parse_query(target.substr(q + 1));
}

size_t number(const std::map<std::string, std::string>& p, const char* key, size_t def, size_t max) {
  auto it = p.find(key);
  if (it == p.end() || it->second.empty() || it->second.size() > 9) return def;
  for (char c : it->second)
    if (c < '0' || c > '9') return def;
  return std::min<size_t>(std::stoul(it->second), max);
}

// The fixed mailboxes: id, name, JMAP role, and the query that lists them.
struct FixedMailbox {
  const char* id;
  const char* name;
  const char* role;
  const char* query;
};
constexpr FixedMailbox kMailboxes[] = {
    {"inbox", "Inbox", "inbox", "in:inbox"},       {"starred", "Starred", "flagged", "is:starred"},
    {"sent", "Sent", "sent", "in:sent"},           {"archive", "Archive", "archive", "in:archive"},
    {"all", "All Mail", "all", ""},                {"junk", "Junk", "junk", "in:junk"},
    {"trash", "Trash", "trash", "in:trash"},
};

std::string quote_label(const std::string& s) {
  std::string out = "\"";
  for (char c : s)
    if (c != '"') out += c;
  return out + "\"";
}

// The query of a mailbox id ("inbox", "label:NAME"), or nullopt for an unknown id.
std::optional<std::string> mailbox_query(const std::string& id) {
  for (auto& m : kMailboxes)
    if (id == m.id) return std::string(m.query);
  if (id.starts_with("label:") && id.size() > 6 && id.size() < 256) return "label:" + quote_label(id.substr(6));
  return std::nullopt;
}

json::array addresses(const std::vector<std::string>& list) {
  json::array out;
  for (auto& a : list) out.push_back(json::object{{"email", a}});
  return out;
}

json::array addresses(const std::vector<index::Address>& list) {
  json::array out;
  for (auto& a : list) out.push_back(json::object{{"name", a.name}, {"email", a.address}});
  return out;
}

json::object keywords(const index::StoredMessage& m) {
  json::object k;
  auto flags = m.file.flags();
  if (flags.find('S') != std::string::npos) k["$seen"] = true;
  if (flags.find('F') != std::string::npos) k["$flagged"] = true;
  if (flags.find('R') != std::string::npos) k["$answered"] = true;
  return k;
}

json::object mailbox_ids(const std::string& folder, const std::vector<std::string>& labels) {
  json::object ids;
  std::string f = to_lower(folder);
  ids[f == "inbox" ? "inbox" : f] = true;
  for (auto& l : labels) ids["label:" + l] = true;
  return ids;
}

json::array string_array(const std::vector<std::string>& v) {
  json::array out;
  for (auto& s : v) out.push_back(json::string(s));
  return out;
}

std::optional<std::vector<std::string>> strings_of(const json::object& o, const char* key, size_t max_len) {
  std::vector<std::string> out;
  auto* v = o.if_contains(key);
  if (!v) return out;
  if (!v->is_array() || v->as_array().size() > kMaxIds) return std::nullopt;
  for (auto& e : v->as_array()) {
    if (!e.is_string() || e.as_string().size() > max_len || e.as_string().empty()) return std::nullopt;
    out.emplace_back(e.as_string());
  }
  return out;
}

// Conversation ids are counters per account's index, so two accounts have a
// conversation "1". The API's thread ids carry a tag of the account, so an id
// from another account's session is not found here (404), not another thread.
std::string account_tag(const std::string& user) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  std::string in = "mailkeep thread id " + user;
  EVP_Digest(in.data(), in.size(), md, &len, EVP_sha256(), nullptr);
  return "T" + to_hex(md, 4);
}

// The X-Mailkeep-Signature our Received block carries (smtp/session.cpp), or "".
std::string signature_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(16384, '\0');
  in.read(head.data(), std::streamsize(head.size()));
  head.resize(size_t(in.gcount()));
  auto end = head.find("\r\n\r\n");
  if (end != std::string::npos) head.resize(end);
  const std::string key = "\nX-Mailkeep-Signature: ";
  auto at = head.find(key);
  if (at == std::string::npos) return "";
  auto stop = head.find_first_of("\r\n", at + key.size());
  return head.substr(at + key.size(), stop == std::string::npos ? std::string::npos : stop - at - key.size());
}

bool params_flag(const Request& req, const char* key) {
  std::string_view target(req.target().data(), req.target().size());
  auto p = query_params(target);
  auto it = p.find(key);
  return it != p.end() && (it->second == "1" || it->second == "true");
}

// Where a message's file is now. The index can lag a moment behind a rename
// (Dovecot setting a flag, this API's own "seen" on open, a move): when the
// indexed path is gone, the message's folders are looked through for its
// base name (a Maildir rename keeps it). "" when the file is gone.
std::string current_file(const std::string& maildir, const index::StoredMessage& m) {
  auto indexed = maildir + "/" + m.file.rel_path();
  if (::access(indexed.c_str(), R_OK) == 0) return indexed;
  const auto base = m.file.base();
  std::error_code ec;
  std::vector<std::string> folders{maildir};
  for (auto& e : std::filesystem::directory_iterator(maildir, ec))
    if (e.path().filename().string().starts_with(".")) folders.push_back(e.path().string());
  for (auto& f : folders)
    for (auto sub : {"/cur", "/new"})
      for (auto& e : std::filesystem::directory_iterator(f + sub, ec)) {
        auto name = e.path().filename().string();
        if (name == base || (name.starts_with(base) && name.compare(base.size(), 3, ":2,") == 0)) return e.path().string();
      }
  return "";
}

}  // namespace

struct MailApi::Context {
  SessionInfo session;
  std::string user, maildir, index_dir, tag;
  unsigned version = 11;
};

MailApi::MailApi(const Settings& settings, users::Authenticator& auth, bool https, SessionLimits limits,
                 SpamTrainer trainer, std::unique_ptr<SessionStore> sessions)
    : settings_(settings), auth_(auth), https_(https),
      sessions_(sessions ? std::move(sessions) : std::make_unique<MemorySessionStore>(limits)),
      trainer_(std::move(trainer)) {
  index::init_mime();
}

bool MailApi::handles(std::string_view path) const {
  return path.starts_with(kPrefix) || path == "/api/v1/mail" || path == "/mail" || path.starts_with("/mail/");
}

Response MailApi::handle(const Request& req, const IpAddress& client) {
  Context ctx;
  ctx.version = req.version();
  static const std::vector<Cidr> loopback{*Cidr::parse("127.0.0.0/8", nullptr), *Cidr::parse("::1/128", nullptr)};
  if (!https_ && !std::any_of(loopback.begin(), loopback.end(), [&](auto& c) { return c.contains(client); }))
    return error(403, "https-required", "the mail reader is served over HTTPS only: configure [http] cert and key",
                 ctx.version);
  std::string_view target(req.target().data(), req.target().size());
  auto path = target.substr(0, target.find('?'));
  if (path == "/mail" || path.starts_with("/mail/")) {
    // The page itself: static files compiled in (web/mail.*); no mail in them.
    if (path == "/mail") {
      Response res{bh::status::moved_permanently, ctx.version};
      secure(res);
      res.set(bh::field::location, "/mail/");
      res.prepare_payload();
      return res;
    }
    auto name = path.substr(6);
    const http::Asset* asset = http::find_asset(name.empty() ? std::string("/mail.html") : "/" + std::string(name));
    if (!asset || !(name.empty() || name == "mail.js" || name == "mail.css"))
      return error(404, "not-found", "no such page", ctx.version);
    Response res{bh::status::ok, ctx.version};
    secure(res);
    res.set(bh::field::content_type, asset->content_type);
    res.body() = std::string(asset->body);
    res.prepare_payload();
    return res;
  }
  try {
    return route(req, client, ctx);
  } catch (const db::Error& e) {  // the shared store ([store] url) keeps the sessions
    spdlog::error("web: {} {}: {}", std::string(req.method_string()), std::string(req.target().substr(0, 200)), e.what());
    return error(503, "store-unavailable", "the session store is unavailable; try again later", ctx.version);
  } catch (const std::exception& e) {
    spdlog::error("web: {} {}: {}", std::string(req.method_string()), std::string(req.target().substr(0, 200)), e.what());
    return error(503, "index-unavailable", "the archive cannot be read right now", ctx.version);
  }
}

// Compose, reply, forward: the message goes through mailkeep's own
// submission listener (AUTH with a one-time token for the session's user),
// so it takes the path a mail client's message takes: the sender check, the
// Sent copy, the smarthost.
Response MailApi::send(const Request& req, Context& ctx, int64_t now) {
  const auto v = ctx.version;
  if (settings_.submission.listen.empty())
    return error(503, "submission-unavailable", "sending needs [submission] listen", v);
  boost::system::error_code ec;
  auto body = json::parse(req.body(), ec);
  if (ec || !body.is_object()) return error(400, "invalid-data", "expected a JSON object", v);
  auto& o = body.as_object();
  auto to = strings_of(o, "to", 254), cc = strings_of(o, "cc", 254), bcc = strings_of(o, "bcc", 254);
  auto text_of = [&](const char* key) -> std::optional<std::string> {
    auto* x = o.if_contains(key);
    if (!x) return std::string();
    if (!x->is_string()) return std::nullopt;
    return std::string(x->as_string());
  };
  auto subject = text_of("subject"), text = text_of("textBody"), in_reply_to = text_of("inReplyTo");
  if (!to || !cc || !bcc || !subject || !text || !in_reply_to || subject->size() > 998 || to->size() + cc->size() + bcc->size() > 100)
    return error(400, "invalid-data", "to, cc, bcc: arrays of addresses; subject, textBody, inReplyTo: strings", v);
  Draft d;
  d.from = ctx.user;
  d.to = *to;
  d.cc = *cc;
  d.bcc = *bcc;
  d.subject = *subject;
  d.text = *text;
  d.hostname = settings_.smtp.hostname;
  if (!in_reply_to->empty()) {
    auto db = index::Database::open_readonly(ctx.index_dir, {settings_.index.language});
    auto m = db ? index::message_by_id(*db, *in_reply_to) : std::nullopt;
    if (!m) return error(404, "not-found", "no such email to reply to", v);
    d.in_reply_to = m->message_id;
    index::ParsedMessage parsed;
    std::string err;
    if (index::parse_message_file(current_file(ctx.maildir, *m), {}, parsed, err)) {
      d.references.assign(parsed.references.rbegin(), parsed.references.rend());  // oldest first
    }
  }
  auto composed = compose(d, now);
  if (!composed.error.empty()) return error(400, "invalid-data", composed.error, v);

  auto where = settings_.submission.listen.front();
  if (where.host == "0.0.0.0") where.host = "127.0.0.1";
  if (where.host == "::") where.host = "::1";
  auto cfg = delivery::smtp_upstream_config(settings_, {where});
  cfg.tls = delivery::UpstreamTls::Opportunistic;  // our own listener: no certificate to check on loopback
  cfg.tls_context = tls::make_client_context(false, "");
  cfg.helo_name = "webmail.mailkeep";
  cfg.pool = false;
  cfg.auth_user = ctx.user;
  cfg.auth_password = auth_.issue_token(ctx.user, now);
  auto factory = delivery::make_smtp_upstream_factory(cfg);
  OPENSSL_cleanse(cfg.auth_password.data(), cfg.auth_password.size());
  smtp::Reply result;
  {
    boost::asio::io_context io;
    auto run = [&]() -> boost::asio::awaitable<void> {
      auto up = factory->create(io.get_executor());
      auto from = smtp::parse_path_argument("FROM:<" + ctx.user + ">", "FROM", false);
      smtp::MailParams params;
      params.size = composed.message.size();
      result = co_await up->mail(from.mailbox, params);
      for (auto* list : {&d.to, &d.cc, &d.bcc})
        for (auto& a : *list) {
          if (!result.positive()) break;
          std::string arg = "TO:<" + a + ">";
          auto rcpt = smtp::parse_path_argument(arg, "TO", false);
          if (!rcpt.ok()) {
            result = smtp::Reply{553, rcpt.status, rcpt.error + ": " + a};
            break;
          }
          result = co_await up->rcpt(rcpt.mailbox);
        }
      if (result.positive()) {
        StringContent content(composed.message);
        delivery::MessageBody message{"", &content};  // named: GCC 12 mishandles temporaries in co_await
        result = co_await up->data(message);
      }
      co_await up->quit();
    };
    auto done = boost::asio::co_spawn(io, run(), boost::asio::use_future);
    io.run();
    done.get();
  }
  if (!result.positive()) {
    spdlog::warn("web: send for <{}> failed: {}", ctx.user, result.summary());
    return error(result.code >= 500 ? 400 : 503, result.code >= 500 ? "send-refused" : "send-deferred", result.summary(),
                 v);
  }
  spdlog::info("web: <{}> sent message <{}> to {} recipient(s)", ctx.user, composed.message_id,
               d.to.size() + d.cc.size() + d.bcc.size());
  return reply(200, json::object{{"messageId", composed.message_id}, {"reply", result.summary()}}, v);
}

// The account's filters (filters/filters.h): list, add (optionally applied to
// existing mail), delete, and Gmail's XML out and in.
Response MailApi::filters(const Request& req, const std::string& path, Context& ctx, int64_t now) {
  const auto v = ctx.version;
  // A change on several gateways: in the turn of the account's shared filters, published on save.
  std::unique_ptr<SharedFile> share;
  std::unique_ptr<SharedFile::Turn> turn;
  if (filters_share_ && req.method() != bh::verb::get && req.method() != bh::verb::head) {
    auto at = ctx.user.rfind('@');
    share = filters_share_(ctx.user.substr(at + 1) + "/" + ctx.user.substr(0, at));
    if (share) {
      std::error_code ec;
      std::filesystem::create_directories(ctx.index_dir, ec);
      turn = share->begin(filters::filters_path(ctx.index_dir));  // db::Error: 503 store-unavailable
    }
  }
  auto list = filters::load_filters(ctx.index_dir);
  if (!list.error.empty()) return error(503, "index-unavailable", list.error, v);
  auto to_json = [](const filters::Filter& f) {
    return json::object{{"id", f.id},           {"from", f.from},         {"to", f.to},
                        {"subject", f.subject}, {"hasTheWord", f.has_words}, {"doesNotHaveTheWord", f.not_words},
                        {"hasAttachment", f.has_attachment}, {"label", f.label}, {"shouldArchive", f.skip_inbox},
                        {"shouldMarkAsRead", f.mark_read}, {"shouldStar", f.star}, {"shouldNeverSpam", f.never_spam},
                        {"shouldSpam", f.spam}, {"shouldTrash", f.trash}, {"query", f.query()}};
  };
  auto save = [&](const std::vector<filters::Filter>& fs) {
    std::error_code ec;
    std::filesystem::create_directories(ctx.index_dir, ec);
    auto err = filters::save_filters(ctx.index_dir, fs);
    if (err.empty() && turn) turn->publish();  // db::Error: 503 store-unavailable (saved here)
    return err;
  };
  auto apply_existing = [&](const std::vector<filters::Filter>& fs) {
    auto db = index::Database::open_writable_waiting(ctx.index_dir, {settings_.index.language}, std::chrono::seconds(20));
    size_t moved = 0, matched = 0;
    for (auto& f : fs) {
      auto st = filters::apply_to_existing(*db, ctx.maildir, f, now);
      moved += st.moved;
      matched += st.matched;
    }
    db->commit();
    return json::object{{"matched", matched}, {"moved", moved}};
  };
  if (path == "/api/v1/mail/filters.xml" || path == "/api/v1/mail/filters/export") {
    Response res{bh::status::ok, v};
    secure(res);
    res.set(bh::field::content_type, "application/xml; charset=utf-8");
    res.set(bh::field::content_disposition, "attachment; filename=\"mailFilters.xml\"");
    res.body() = filters::format_filters(list.filters);
    res.prepare_payload();
    return res;
  }
  if (path == "/api/v1/mail/filters" && req.method() == bh::verb::get) {
    json::array out;
    for (auto& f : list.filters) out.push_back(to_json(f));
    return reply(200, json::object{{"list", out}}, v);
  }
  if (path == "/api/v1/mail/filters/import" && req.method() == bh::verb::post) {
    auto parsed = filters::parse_filters(req.body());
    if (!parsed.error.empty()) return error(400, "invalid-data", parsed.error, v);
    for (auto& f : parsed.filters) {
      f.id = filters::new_filter_id(list.filters);
      list.filters.push_back(f);
    }
    if (auto err = save(list.filters); !err.empty()) return error(503, "index-unavailable", err, v);
    json::object out{{"imported", parsed.filters.size()}};
    if (params_flag(req, "applyExisting")) out["existing"] = apply_existing(parsed.filters);
    return reply(200, out, v);
  }
  if (path == "/api/v1/mail/filters" && req.method() == bh::verb::post) {
    boost::system::error_code ec;
    auto body = json::parse(req.body(), ec);
    if (ec || !body.is_object()) return error(400, "invalid-data", "expected a JSON object", v);
    auto& o = body.as_object();
    filters::Filter f;
    for (auto [key, field] : {std::pair{"from", &f.from}, {"to", &f.to}, {"subject", &f.subject},
                              {"hasTheWord", &f.has_words}, {"doesNotHaveTheWord", &f.not_words}, {"label", &f.label}}) {
      if (auto* x = o.if_contains(key)) {
        if (!x->is_string() || x->as_string().size() > 1000) return error(400, "invalid-data", std::string(key) + " is a string", v);
        *field = std::string(x->as_string());
      }
    }
    for (auto [key, field] : {std::pair{"hasAttachment", &f.has_attachment}, {"shouldArchive", &f.skip_inbox},
                              {"shouldMarkAsRead", &f.mark_read}, {"shouldStar", &f.star},
                              {"shouldNeverSpam", &f.never_spam}, {"shouldSpam", &f.spam}, {"shouldTrash", &f.trash}}) {
      if (auto* x = o.if_contains(key)) {
        if (!x->is_bool()) return error(400, "invalid-data", std::string(key) + " is true or false", v);
        *field = x->as_bool();
      }
    }
    if (f.query().empty()) return error(400, "invalid-data", "a filter needs criteria", v);
    if (f.actions().empty()) return error(400, "invalid-data", "a filter needs an action", v);
    auto parsed = index::parse_query(f.query(), now);
    if (!parsed.ok()) return error(400, "invalid-query", parsed.error_text, v);
    f.id = filters::new_filter_id(list.filters);
    list.filters.push_back(f);
    if (auto err = save(list.filters); !err.empty()) return error(503, "index-unavailable", err, v);
    auto out = to_json(f);
    if (auto* x = o.if_contains("applyExisting"); x && x->is_bool() && x->as_bool())
      out["existing"] = apply_existing({f});
    return reply(201, out, v);
  }
  const std::string one = "/api/v1/mail/filters/";
  if (path.starts_with(one) && req.method() == bh::verb::delete_) {
    auto id = path.substr(one.size());
    auto before = list.filters.size();
    std::erase_if(list.filters, [&](auto& f) { return f.id == id; });
    if (list.filters.size() == before) return error(404, "not-found", "no such filter", v);
    if (auto err = save(list.filters); !err.empty()) return error(503, "index-unavailable", err, v);
    Response res{bh::status::no_content, v};
    secure(res);
    res.prepare_payload();
    return res;
  }
  return error(405, "method-not-allowed", "GET, POST or DELETE", v);
}

Response MailApi::route(const Request& req, const IpAddress& client, Context& ctx) {
  std::string_view target(req.target().data(), req.target().size());
  // Path segments are percent-decoded (message ids hold ',' and '='); '+' stays.
  std::string path = percent_decode(target.substr(0, target.find('?')), false);
  auto params = query_params(target);
  const auto now = static_cast<int64_t>(std::time(nullptr));
  const auto v = ctx.version;

  if (path == "/api/v1/mail/session" && req.method() == bh::verb::post) {
    json::value body;
    boost::system::error_code ec;
    body = json::parse(req.body(), ec);
    if (ec || !body.is_object() || !body.as_object().if_contains("username") ||
        !body.as_object().if_contains("password") || !body.at("username").is_string() ||
        !body.at("password").is_string())
      return error(400, "invalid-data", "expected {\"username\": ..., \"password\": ...}", v);
    std::string user(body.at("username").as_string()), password(body.at("password").as_string());
    auto outcome = auth_.check(policy::client_key(client), user, password, now);
    std::fill(password.begin(), password.end(), '\0');
    if (outcome.verdict != users::AuthVerdict::Ok) {
      bool locked = outcome.verdict == users::AuthVerdict::LockedOut;
      std::string shown;
      for (unsigned char c : user.substr(0, 128)) shown += (c > 32 && c < 127 && c != '<' && c != '>') ? char(c) : '?';
      spdlog::warn("web: auth failed: client=[{}] user=<{}> mechanism=web reply={} reason={}", client.to_string(),
                   shown, locked ? 429 : 401, outcome.reason);
      return locked ? error(429, "rate-limited", "too many failed logins; try again later", v)
                    : error(401, "invalid-credentials", "wrong user name or password", v);
    }
    SessionInfo info;
    auto token = sessions_->create(outcome.user, now, &info);
    spdlog::info("web: auth ok: client=[{}] user=<{}> mechanism=web", client.to_string(), outcome.user);
    auto res = reply(200, json::object{{"username", info.user}, {"csrfToken", info.csrf}}, v);
    res.set(bh::field::set_cookie, std::string(kCookie) + "=" + token + "; Path=/; HttpOnly; SameSite=Strict" +
                                       (https_ ? "; Secure" : ""));
    return res;
  }

  // Everything else needs a live session.
  auto session = sessions_->find(cookie(req), now);
  if (!session) return error(401, "unauthorized", "log in first", v);
  ctx.session = *session;
  ctx.user = session->user;
  const bool changes = req.method() != bh::verb::get && req.method() != bh::verb::head;
  if (changes && !same_token(header(req, "X-CSRF-Token"), session->csrf))
    return error(403, "csrf", "missing or wrong X-CSRF-Token", v);
  auto at = ctx.user.rfind('@');
  auto account = ctx.user.substr(at + 1) + "/" + ctx.user.substr(0, at);
  ctx.maildir = settings_.backup.archive + "/" + account;
  ctx.tag = account_tag(ctx.user);
  ctx.index_dir = settings_.index.path + "/" + account;
  index::IndexOptions opt{settings_.index.language};

  if (path == "/api/v1/mail/session") {
    if (req.method() == bh::verb::get)
      return reply(200, json::object{{"username", ctx.user}, {"csrfToken", session->csrf}}, v);
    if (req.method() == bh::verb::delete_) {
      sessions_->remove(cookie(req));
      Response res{bh::status::no_content, v};
      secure(res);
      res.set(bh::field::set_cookie, std::string(kCookie) + "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" +
                                         (https_ ? "; Secure" : ""));
      res.prepare_payload();
      return res;
    }
    return error(405, "method-not-allowed", "GET, POST or DELETE", v);
  }

  if (path == "/api/v1/mail/modify") {
    if (req.method() != bh::verb::post) return error(405, "method-not-allowed", "POST", v);
    boost::system::error_code ec;
    auto body = json::parse(req.body(), ec);
    if (ec || !body.is_object()) return error(400, "invalid-data", "expected a JSON object", v);
    auto& o = body.as_object();
    mailbox::ModifyRequest m;
    auto ids = strings_of(o, "emailIds", 255), threads = strings_of(o, "threadIds", 255),
         add = strings_of(o, "addLabels", 200), remove = strings_of(o, "removeLabels", 200);
    if (!ids || !threads || !add || !remove) return error(400, "invalid-data", "ids and labels are arrays of strings", v);
    if (ids->empty() && threads->empty()) return error(400, "invalid-data", "name emailIds or threadIds", v);
    m.ids = *ids;
    for (auto& t : *threads)  // another account's thread id names nothing here
      if (t.starts_with(ctx.tag) && t.size() > ctx.tag.size()) m.conversations.push_back(t.substr(ctx.tag.size()));
    if (m.ids.empty() && m.conversations.empty()) return error(404, "not-found", "no such conversation", v);
    m.add_labels = *add;
    m.remove_labels = *remove;
    if (auto* mv = o.if_contains("moveTo")) {
      static const std::vector<std::string> folders{"INBOX", "Archive", "Trash", "Junk"};
      if (!mv->is_string() || std::find(folders.begin(), folders.end(), std::string(mv->as_string())) == folders.end())
        return error(400, "invalid-data", "moveTo is one of INBOX, Archive, Trash, Junk", v);
      m.move_to = std::string(mv->as_string());
    }
    for (auto [key, field] : {std::pair{"seen", &m.seen}, {"flagged", &m.flagged}}) {
      auto* b = o.if_contains(key);
      if (!b) continue;
      if (!b->is_bool()) return error(400, "invalid-data", std::string(key) + " is true or false", v);
      *field = b->as_bool();
    }
    std::optional<bool> train;
    if (auto* t = o.if_contains("trainSpam")) {
      if (!t->is_bool()) return error(400, "invalid-data", "trainSpam is true or false", v);
      train = t->as_bool();
    }
    // The server's indexer follows the Maildir (inotify, within ~100 ms), and
    // modify looks each file up again by its base name under Dovecot's lock: no
    // rescan first. A rescan reads every name of a changed folder: 0.5-0.9 s
    // per key press in an Inbox of 120,000 messages (bench/web_bench.py).
    m.sync_first = !settings_.index.enabled;
    auto db = index::Database::open_writable_waiting(ctx.index_dir, opt, std::chrono::seconds(20));
    auto result = mailbox::modify(*db, ctx.maildir, m, now);
    db->commit();
    if (!result.ok()) return error(503, "index-unavailable", result.error_text, v);
    // Ids of nothing in this account (another account's, or gone): nothing changed.
    if (result.messages == 0) return error(404, "not-found", "no such email or conversation", v);
    // "!" and "not spam": the filter learns from the features it scored the message with.
    size_t trained = 0;
    std::vector<std::string> train_errors;
    if (train && trainer_) {
      std::vector<index::StoredMessage> affected;
      for (auto& id : m.ids)
        if (auto one = index::message_by_id(*db, id)) affected.push_back(*one);
      for (auto& c : m.conversations)
        for (auto& one : index::conversation_messages(*db, c)) affected.push_back(one);
      for (auto& msg : affected) {
        auto sig = signature_of(current_file(ctx.maildir, msg));
        if (sig.empty()) continue;  // not scored (our own or the provider's mail)
        auto err = trainer_(sig, *train);
        if (err.empty()) ++trained;
        else train_errors.push_back(err);
      }
    }
    json::object out{{"emails", result.messages}, {"moved", result.moved}, {"flagChanges", result.flag_changes},
                     {"labelChanges", result.label_changes}, {"trained", trained}};
    if (!train_errors.empty()) out["trainErrors"] = string_array(train_errors);
    return reply(200, out, v);
  }

  if (path == "/api/v1/mail/filters" || path.starts_with("/api/v1/mail/filters/")) return filters(req, path, ctx, now);

  if (path == "/api/v1/mail/send") {
    if (req.method() != bh::verb::post) return error(405, "method-not-allowed", "POST", v);
    return send(req, ctx, now);
  }

  if (req.method() != bh::verb::get) return error(405, "method-not-allowed", "GET", v);
  auto db = readers_.open(ctx.index_dir, opt);  // kept open between requests (index/readers.h)
  if (!db) return error(503, "index-unavailable", "this account has no index yet", v);

  if (path == "/api/v1/mail/mailboxes") {
    json::array list;
    auto count = [&](const std::string& q) {
      index::SearchRequest r{q, 0, 0, true, now};
      return index::search(*db, r).total;
    };
    int order = 0;
    for (auto& m : kMailboxes)
      list.push_back(json::object{{"id", m.id}, {"name", m.name}, {"role", m.role}, {"sortOrder", order++},
                                  {"totalEmails", count(m.query)},
                                  {"unreadEmails", count(std::string(m.query) + " is:unread")}});
    for (auto& l : db->label_counts()) {
      auto q = "label:" + quote_label(l.name);
      list.push_back(json::object{{"id", "label:" + l.name}, {"name", l.name}, {"role", nullptr},
                                  {"sortOrder", order++}, {"totalEmails", l.messages},
                                  {"unreadEmails", count(q + " is:unread")}});
    }
    return reply(200, json::object{{"list", list}}, v);
  }

  if (path == "/api/v1/mail/threads") {
    std::string mailbox = params.count("mailbox") ? params["mailbox"] : "inbox";
    std::string q = params.count("q") ? params["q"] : "";
    std::string query;
    if (!q.empty()) {
      query = q;
    } else {
      auto mq = mailbox_query(mailbox);
      if (!mq) return error(404, "not-found", "no such mailbox", v);
      query = *mq;
    }
    if (query.size() > 2000) return error(400, "invalid-data", "query longer than 2000 characters", v);
    index::SearchRequest r{query, number(params, "position", 0, 1000000), number(params, "limit", 50, 200), false, now};
    auto found = index::search(*db, r);
    if (!found.ok()) return error(400, "invalid-query", found.error_text, v);
    json::array threads;
    for (auto& c : found.conversations) {
      json::array from;
      for (auto& s : c.senders) from.push_back(json::object{{"name", s}});
      json::object kw;
      if (!c.unread) kw["$seen"] = true;
      if (c.flagged) kw["$flagged"] = true;
      json::object boxes;
      for (auto& f : c.folders) boxes[to_lower(f)] = true;
      for (auto& l : c.labels) boxes["label:" + l] = true;
      threads.push_back(json::object{{"id", ctx.tag + c.id}, {"subject", c.subject}, {"from", from}, {"preview", c.snippet},
                                     {"receivedAt", iso8601_utc(c.date)}, {"emailCount", c.messages},
                                     {"matchedCount", c.matched}, {"keywords", kw}, {"mailboxIds", boxes},
                                     {"labels", string_array(c.labels)}});
    }
    return reply(200,
                 json::object{{"mailbox", q.empty() ? json::value(mailbox) : json::value(nullptr)},
                              {"query", query},
                              {"position", r.offset},
                              {"total", found.total},
                              {"totalExact", found.total_exact},
                              {"threads", threads}},
                 v);
  }

  const std::string threads_prefix = "/api/v1/mail/threads/";
  if (path.starts_with(threads_prefix)) {
    auto id = path.substr(threads_prefix.size());
    if (!id.starts_with(ctx.tag) || id.size() == ctx.tag.size()) return error(404, "not-found", "no such conversation", v);
    auto messages = index::conversation_messages(*db, id.substr(ctx.tag.size()));
    if (messages.empty()) return error(404, "not-found", "no such conversation", v);
    auto allow = params.count("allowRemote") ? params["allowRemote"] : "";
    json::array emails;
    json::array email_ids;
    for (auto& m : messages) {
      index::ParsedMessage parsed;
      std::string err;
      index::ParseOptions po;
      po.keep_html = true;
      json::object e{{"id", m.id},
                     {"threadId", ctx.tag + m.conversation},
                     {"mailboxIds", mailbox_ids(m.file.folder, m.labels)},
                     {"keywords", keywords(m)},
                     {"labels", string_array(m.labels)},
                     {"subject", m.subject},
                     {"messageId", m.message_id},
                     {"receivedAt", iso8601_utc(m.date)},
                     {"size", m.size},
                     {"preview", m.snippet}};
      if (index::parse_message_file(current_file(ctx.maildir, m), po, parsed, err)) {
        e["from"] = addresses(parsed.from);
        e["to"] = addresses(parsed.to);
        e["cc"] = addresses(parsed.cc);
        e["textBody"] = parsed.body_text;
        if (!parsed.html.empty()) {
          SanitizeOptions so;
          so.allow_remote = allow == m.id;
          auto clean = sanitize_html(parsed.html, so);
          e["htmlBody"] = clean.html;
          e["remoteBlocked"] = clean.blocked_remote;
        }
        json::array atts;
        for (size_t i = 0; i < parsed.attachments.size(); ++i) {
          auto& a = parsed.attachments[i];
          if (a.filename.empty() && !a.content_id.empty()) continue;  // an inline image, shown in the body
          atts.push_back(json::object{{"partId", std::to_string(i)}, {"name", a.filename}, {"type", a.type}, {"size", a.size}});
        }
        e["attachments"] = atts;
      } else {
        e["from"] = json::array{json::object{{"name", m.from_name}, {"email", m.from_address}}};
        e["to"] = addresses(m.to);
        e["textBody"] = "";
        e["error"] = "the message file cannot be read now";
      }
      email_ids.push_back(json::string(m.id));
      emails.push_back(std::move(e));
    }
    return reply(200, json::object{{"id", id}, {"emailIds", email_ids}, {"emails", emails}}, v);
  }

  const std::string emails_prefix = "/api/v1/mail/emails/";
  if (path.starts_with(emails_prefix) && path.ends_with("/html")) {
    // The body for the conversation view's iframe (sandbox without scripts or
    // same-origin): sanitised, under a CSP that loads nothing remote unless
    // the user asked for this message's images (?remote=1).
    auto id = path.substr(emails_prefix.size(), path.size() - emails_prefix.size() - 5);
    auto m = index::message_by_id(*db, id);
    if (id.empty() || !m) return error(404, "not-found", "no such email", v);
    index::ParsedMessage parsed;
    std::string err;
    index::ParseOptions po;
    po.keep_html = true;
    const std::string file = current_file(ctx.maildir, *m);
    if (file.empty()) return error(404, "not-found", "the message is gone", v);
    if (!index::parse_message_file(file, po, parsed, err))
      return error(503, "index-unavailable", "the message file cannot be read now", v);
    const bool remote = params.count("remote") && params["remote"] == "1";
    SanitizeOptions so;
    so.allow_remote = remote;
    // cid: images come from the message itself, as data: URLs (the iframe's CSP loads nothing else).
    int inlined = 0;
    so.inline_image = [&](std::string_view cid) -> std::optional<std::string> {
      static const std::vector<std::string> kinds{"image/png", "image/gif", "image/jpeg", "image/webp"};
      for (size_t i = 0; i < parsed.attachments.size(); ++i) {
        auto& a = parsed.attachments[i];
        if (a.content_id != cid || std::find(kinds.begin(), kinds.end(), a.type) == kinds.end()) continue;
        if (++inlined > 50) return std::nullopt;
        index::ParsedMessage one;
        index::ParseOptions eo;
        eo.extract = int(i);
        eo.max_extract = 4 * 1024 * 1024;
        std::string e;
        if (!index::parse_message_file(file, eo, one, e) || !one.extracted_whole) return std::nullopt;
        return "data:" + a.type + ";base64," + smtp::encode_base64(one.extracted);
      }
      return std::nullopt;
    };
    auto clean = sanitize_html(parsed.html, so);
    Response res{bh::status::ok, v};
    secure(res);
    res.set("Content-Security-Policy", remote ? "default-src 'none'; img-src data: cid: https: http:; "
                                                "style-src 'unsafe-inline' https: http:; font-src https: http:"
                                              : "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'");
    res.set(bh::field::content_type, "text/html; charset=utf-8");
    res.body() = "<!doctype html><html><head><meta charset=\"utf-8\"></head><body>" + clean.html + "</body></html>";
    res.prepare_payload();
    return res;
  }
  if (path.starts_with(emails_prefix) && path.find("/attachments/") != std::string::npos) {
    // A download: always application/octet-stream, attachment, nosniff — the
    // type a message claims for its part is the sender's word, never rendered.
    auto rest = path.substr(emails_prefix.size());
    auto slash = rest.find("/attachments/");
    auto id = rest.substr(0, slash);
    auto number_text = rest.substr(slash + 13);
    auto m = index::message_by_id(*db, id);
    if (id.empty() || !m || number_text.empty() || number_text.size() > 3 ||
        number_text.find_first_not_of("0123456789") != std::string::npos)
      return error(404, "not-found", "no such attachment", v);
    index::ParsedMessage parsed;
    index::ParseOptions eo;
    eo.extract = std::stoi(number_text);
    std::string err;
    const std::string file = current_file(ctx.maildir, *m);
    if (file.empty()) return error(404, "not-found", "the message is gone", v);
    if (!index::parse_message_file(file, eo, parsed, err))
      return error(503, "index-unavailable", "the message file cannot be read now", v);
    if (size_t(eo.extract) >= parsed.attachments.size() || !parsed.extracted_whole)
      return error(404, "not-found", "no such attachment", v);
    auto& a = parsed.attachments[size_t(eo.extract)];
    std::string name = a.filename.empty() ? "attachment" : a.filename, ascii, encoded;
    static const char* hex = "0123456789ABCDEF";
    for (unsigned char c : name) {
      ascii += (c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '/') ? char(c) : '_';
      if (std::isalnum(c) || c == '.' || c == '-' || c == '_') encoded += char(c);
      else encoded += {'%', hex[c >> 4], hex[c & 15]};
    }
    Response res{bh::status::ok, v};
    secure(res);
    res.set(bh::field::content_type, "application/octet-stream");
    res.set(bh::field::content_disposition, "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" + encoded);
    res.body() = std::move(parsed.extracted);
    res.prepare_payload();
    return res;
  }
  if (path.starts_with(emails_prefix) && path.ends_with("/raw")) {
    auto id = path.substr(emails_prefix.size(), path.size() - emails_prefix.size() - 4);
    auto m = index::message_by_id(*db, id);
    if (id.empty() || !m) return error(404, "not-found", "no such email", v);
    const std::string file = current_file(ctx.maildir, *m);
    if (file.empty()) return error(404, "not-found", "the message is gone", v);
    std::ifstream in(file, std::ios::binary);
    std::string raw((std::istreambuf_iterator<char>(in)), {});
    if (!in.eof() && raw.empty()) return error(503, "index-unavailable", "the message file cannot be read now", v);
    if (raw.size() > kMaxRaw) raw.resize(kMaxRaw);
    Response res{bh::status::ok, v};
    secure(res);
    res.set(bh::field::content_type, "text/plain; charset=utf-8");
    res.set(bh::field::content_disposition, "inline");
    res.body() = std::move(raw);
    res.prepare_payload();
    return res;
  }
  return error(404, "not-found", "no such route", v);
}

}  // namespace mk::webreader
