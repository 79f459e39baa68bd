// api.h — the web view's JSON API, under /api/v1/mail/ (the page that uses it
// comes with the rest of the web view issue). Object shapes follow JMAP Mail
// (RFC 8621) where they fit: Mailbox {id, name, role, totalEmails,
// unreadEmails}, Thread {id, emailIds}, Email {id, threadId, mailboxIds,
// keywords {"$seen", "$flagged"}, from, to, cc, subject, receivedAt, size,
// preview, ...}.
//
//   POST   /api/v1/mail/session         {"username","password"} → {"username","csrfToken"} + cookie
//   GET    /api/v1/mail/session         → the same, for a live session
//   DELETE /api/v1/mail/session         logout
//   GET    /api/v1/mail/mailboxes       the folders and labels with counts
//   GET    /api/v1/mail/threads?mailbox=ID&q=QUERY&position=N&limit=N
//   GET    /api/v1/mail/threads/ID      the conversation's emails, bodies included (?allowRemote=EMAIL ID:
//                                        that email's htmlBody with remote images)
//   GET    /api/v1/mail/emails/ID/raw   "show original": the file as text/plain
//   GET    /api/v1/mail/emails/ID/attachments/PART  download (application/octet-stream, attachment)
//   POST   /api/v1/mail/send            {"to","cc","bcc","subject","textBody","inReplyTo": EMAIL ID}
//                                        → {"messageId"}: through the submission listener (compose.h)
//   GET    /api/v1/mail/filters         the filters; POST one ({"from","to","subject","hasTheWord",
//                                        "doesNotHaveTheWord","hasAttachment","label","shouldArchive",
//                                        "shouldMarkAsRead","shouldStar","shouldNeverSpam","shouldSpam",
//                                        "shouldTrash","applyExisting"}); DELETE /filters/ID
//   GET    /api/v1/mail/filters/export  Gmail's mailFilters.xml; POST /filters/import[?applyExisting=1]
//   POST   /api/v1/mail/modify          {"emailIds"|"threadIds", "moveTo", "seen", "flagged",
//                                        "addLabels", "removeLabels", "trainSpam": true|false} → counts
//                                        (trainSpam: the spam filter learns the messages as spam / ham)
//
// Security: every route but the login needs the session cookie (mk_mail:
// HttpOnly, SameSite=Strict, Secure on HTTPS) and reaches only that
// session's account: an id of another account's message is simply not in
// this account's index (404). Every state change needs the X-CSRF-Token
// header. Logins share the submission's Authenticator (its lockouts and log
// lines). Plain HTTP is refused unless the client is on loopback. Every
// response carries Content-Security-Policy (default-src 'self';
// frame-ancestors 'none'), X-Content-Type-Options: nosniff,
// Referrer-Policy: no-referrer and Cache-Control: no-store.
// Errors: {"error": CODE, "description": TEXT}: invalid-data 400,
// invalid-query 400, send-refused 400, invalid-credentials 401 (login),
// unauthorized 401, csrf 403, https-required 403, not-found 404 (also ids
// that name nothing of this account), method-not-allowed 405, rate-limited
// 429, index-unavailable 503, submission-unavailable 503, send-deferred 503.
// Path segments are percent-decoded (message ids hold ',' and '=').
// Threading: handle() blocks (Argon2id, Xapian): the server runs it on the blocking pool.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "config/settings.h"
#include "core/shared_file.h"
#include "http/message.h"
#include "index/readers.h"
#include "users/authenticator.h"
#include "webreader/sessions.h"

namespace mk::webreader {

// Retrains the spam filter from the features stored under a message's
// X-Mailkeep-Signature (spam::reclassify); returns "" or the error. Null: no spam filter.
using SpamTrainer = std::function<std::string(const std::string& signature, bool as_spam)>;

class MailApi final : public http::RouteHandler {
 public:
  // `sessions` null: in this process's memory (MemorySessionStore with `limits`).
  MailApi(const Settings& settings, users::Authenticator& auth, bool https, SessionLimits limits = {},
          SpamTrainer trainer = nullptr, std::unique_ptr<SessionStore> sessions = nullptr);
  // Several gateways ([store] url): an account's filters ("domain/localpart")
  // as a shared file; a change is made in its turn and published.
  using FiltersShare = std::function<std::unique_ptr<SharedFile>(const std::string& account)>;
  void set_filters_share(FiltersShare share) { filters_share_ = std::move(share); }
  bool handles(std::string_view path) const override;
  http::Response handle(const http::Request& request, const IpAddress& client) override;

 private:
  struct Context;
  http::Response route(const http::Request& request, const IpAddress& client, Context& ctx);
  http::Response send(const http::Request& request, Context& ctx, int64_t now);
  http::Response filters(const http::Request& request, const std::string& path, Context& ctx, int64_t now);

  const Settings& settings_;
  users::Authenticator& auth_;
  bool https_;
  std::unique_ptr<SessionStore> sessions_;
  SpamTrainer trainer_;
  FiltersShare filters_share_;
  index::ReaderPool readers_;
};

}  // namespace mk::webreader
