// privileges.h — dropping root after the ports are bound, and the small helper
// that keeps root to re-read TLS keys on SIGHUP.
#pragma once
#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tls/tls_context.h"

namespace mk::app {

// Creates `dirs` (if missing) and gives them and the existing `files` to
// `user`, then switches to that user for good (groups, gid, uid; core dumps
// off so message contents never land in one). Not root: no change.
// Returns an error text, or "".
std::string drop_privileges(const std::string& user, const std::vector<std::string>& dirs,
                            const std::vector<std::string>& files = {});

// ---------------------------------------------------------------------------
// The one thing that keeps root after the drop: reading the TLS certificate and
// key files named at start, and no other file, so that a SIGHUP after a
// certificate renewal can re-read a key only root may read (certbot's are 0600
// root). Postfix gets the same from its root master starting new smtpd
// processes; OpenSMTPD keeps its keys in a privileged process. The helper is
// this binary run as `mailkeep privileged-reader FILE...` with one end of a
// socket pair as fd 3; it answers "file number N" with that file's bytes and
// exits when the server closes its end or dies.
class PrivilegedPemReader : public tls::PemReader {
 public:
  // Starts the helper (call as root, before the drop); null with `error` set on failure.
  static std::unique_ptr<PrivilegedPemReader> start(const std::vector<std::string>& files, std::string& error);
  ~PrivilegedPemReader() override;  // closes our end; the helper exits; reaped here
  // `path` must be one of the files given to start().
  std::string read(const std::string& path, std::string& contents) override;

 private:
  PrivilegedPemReader(int fd, pid_t pid, std::vector<std::string> files)
      : fd_(fd), pid_(pid), files_(std::move(files)) {}
  int fd_;
  pid_t pid_;
  std::vector<std::string> files_;
  std::mutex mutex_;  // one request at a time
};

// The helper's main: serves `files` on fd 3 until the other end closes.
int run_privileged_reader(const std::vector<std::string>& files);

}  // namespace mk::app
