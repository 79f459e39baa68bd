// privileges.cpp — see privileges.h.
#include "app/privileges.h"

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/log.h"

namespace mk::app {

std::string drop_privileges(const std::string& user, const std::vector<std::string>& dirs,
                            const std::vector<std::string>& files) {
  // Message contents must not end up in a core file.
  rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  std::error_code ec;
  for (auto& d : dirs) {
    std::filesystem::create_directories(d, ec);
    if (ec) return "cannot create " + d + ": " + ec.message();
  }
  if (geteuid() != 0) {
    spdlog::info("running as uid {} (not root): [general] user = {} not applied", geteuid(), user);
    return "";
  }
  if (user == "root") {
    spdlog::warn("[general] user = root: the server keeps running as root");
    return "";
  }
  passwd* pw = getpwnam(user.c_str());
  if (!pw) return "[general] user: no such user '" + user + "'";
  uid_t uid = pw->pw_uid;
  gid_t gid = pw->pw_gid;
  for (auto& d : dirs)
    if (chown(d.c_str(), uid, gid) != 0) return "cannot chown " + d + ": " + std::strerror(errno);
  for (auto& f : files)
    if (chown(f.c_str(), uid, gid) != 0 && errno != ENOENT) return "cannot chown " + f + ": " + std::strerror(errno);
  if (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
    return "cannot switch to user " + user + ": " + std::strerror(errno);
  if (setuid(0) == 0) return "privilege drop failed: could regain root";
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);  // setuid resets it on some kernels
  spdlog::info("running as user {} (uid {}, gid {})", user, uid, gid);
  return "";
}

}  // namespace mk::app
