// passwd_file.h — the accounts' passwords, in Dovecot's passwd-file format
// (doc.dovecot.org, "Passwd-file"), so that Dovecot reads the file as it is:
//
//   user:{SCHEME}hash:uid:gid:gecos:home:shell:extra fields
//
// mailkeep writes `alice@example.org:{ARGON2ID}...:::: <archive>/example.org/alice::`
// (uid/gid empty: Dovecot takes mail_uid/mail_gid from `mailkeep
// dovecot-config`); a locked account carries the extra fields
// `nologin=y reason=...`, which makes Dovecot refuse it whatever the password.
// Lines mailkeep does not understand (comments, other tools' entries) are kept
// as they are when the file is rewritten.
// The file is rewritten whole: under an flock on "<file>.lock", into a
// temporary file with mode 0640 that is fsynced and renamed over it.
// Threading: the functions are independent; PasswdFile is a value.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mk::users {

struct PasswdEntry {
  std::string user;      // lower-case address
  std::string password;  // "{SCHEME}hash"
  std::string home;
  bool locked = false;
};

struct PasswdFile {
  struct Line {
    std::optional<PasswdEntry> entry;  // empty: `raw` is kept as it is
    std::string raw;
  };
  std::vector<Line> lines;

  const PasswdEntry* find(std::string_view user) const;
  PasswdEntry* find(std::string_view user);
  // Adds or replaces `entry`.
  void put(PasswdEntry entry);
  bool erase(std::string_view user);
  std::vector<const PasswdEntry*> entries() const;
};

// Parses the text; never fails (a line that is not ours is kept raw).
PasswdFile parse_passwd(std::string_view text);
std::string format_passwd(const PasswdFile& file);
std::string format_entry(const PasswdEntry& entry);

// Reads `path`; a missing file is an empty one. Returns an error text or "".
std::string read_passwd(const std::string& path, PasswdFile& out);

// Locks, reads, lets `change` edit the file (it returns an error text or ""
// to write), writes atomically with mode 0640, owner `owner` (when we are
// root) and group `group` (if it exists and we may; otherwise the owner's
// group). Returns an error text or "".
std::string update_passwd(const std::string& path, const std::string& owner, const std::string& group,
                          const std::function<std::string(PasswdFile&)>& change);

}  // namespace mk::users
