// maildir.h — durable delivery of one message into a Maildir folder.
//
// The Maildir protocol (cr.yp.to/proto/maildir.html, Dovecot/Courier Maildir++):
// the file is created in tmp/ with O_EXCL under a unique name
// `time.M<usec>P<pid>Q<seq>.<host>,S=<exact size>`, written, fsynced, then
// linked into new/ (and removed from tmp/) and the directory fsynced. link(),
// not rename(), as the Maildir protocol says: should another writer have
// taken the name (gateways with one host name on one shared archive), link
// fails instead of replacing that message, and the file gets a name of its
// own (an R<n> in the unique part). Where links are not supported, rename. Two phases, so that a caller
// can hold the fsynced tmp/ file until the upstream has accepted the message
// (prepare), then publish it (commit) or remove it (abort).
// Threading: blocking file I/O; each call is independent.
#pragma once
#include <string>
#include <string_view>

#include "core/content.h"
#include "core/outcome.h"

namespace mk::archive {

struct MaildirResult {
  Outcome outcome = Outcome::Ok;
  std::string detail;  // error text, or the file name on success
};

// A message written and fsynced in tmp/, not yet visible to readers.
class PendingMaildirFile {
 public:
  PendingMaildirFile() = default;
  PendingMaildirFile(std::string folder, std::string name) : folder_(std::move(folder)), name_(std::move(name)) {}
  PendingMaildirFile(PendingMaildirFile&& o) noexcept { *this = std::move(o); }
  PendingMaildirFile& operator=(PendingMaildirFile&& o) noexcept;
  ~PendingMaildirFile();  // aborts if neither committed nor aborted

  // Renames into new/ and fsyncs new/. After this the message is delivered.
  MaildirResult commit();
  // Renames into cur/ with the info ":2,FLAGS" (sorted flag letters), for
  // messages that arrive already seen (an import); the detail is the file name.
  MaildirResult commit_seen(std::string_view flags);
  // Removes the tmp/ file.
  void abort();
  const std::string& name() const { return name_; }

 private:
  MaildirResult commit_to(const char* sub, std::string final_name);
  std::string folder_, name_;
};

// Creates `folder` with tmp/, new/, cur/ (mode 0700) if missing.
MaildirResult ensure_maildir(const std::string& folder);

// Writes `header` then `content` into folder/tmp/ and fsyncs it.
MaildirResult prepare_maildir_file(const std::string& folder, std::string_view header, const ContentSource& content,
                                   PendingMaildirFile& out);

// Both phases at once: for deliveries that wait on nothing else (the outbox).
MaildirResult deliver_to_maildir(const std::string& folder, std::string_view header, const ContentSource& content);

}  // namespace mk::archive
