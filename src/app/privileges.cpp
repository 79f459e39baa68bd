// privileges.cpp — see privileges.h.
#include "app/privileges.h"

#include <fcntl.h>
#include <grp.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>

#include "core/fd_io.h"
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

// ---- the privileged reader --------------------------------------------------
// Wire format, both ways over a stream socket pair: the helper first sends one
// byte, kReady, once it is hardened; then the server sends a file's
// number (uint32); the helper answers a status byte (0 = the file's bytes
// follow, 1 = an error text follows), a uint32 length and that many bytes.

namespace {

constexpr int kHelperFd = 3;
constexpr uint8_t kReady = 'R';  // the helper's first byte: hardened and serving

bool send_answer(int fd, uint8_t status, const std::string& bytes) {
  uint32_t length = uint32_t(bytes.size());
  return write_fully(fd, &status, 1) && write_fully(fd, &length, sizeof length) && write_fully(fd, bytes.data(), bytes.size());
}

}  // namespace

std::unique_ptr<PrivilegedPemReader> PrivilegedPemReader::start(const std::vector<std::string>& files,
                                                                std::string& error) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    error = std::string("socketpair: ") + std::strerror(errno);
    return nullptr;
  }
  // dup2 onto fd 3 clears close-on-exec, unless the end already is fd 3.
  if (pair[1] == kHelperFd) {
    int moved = ::fcntl(pair[1], F_DUPFD_CLOEXEC, kHelperFd + 1);
    ::close(pair[1]);
    pair[1] = moved;
  }
  std::vector<std::string> args{"mailkeep", "privileged-reader"};
  args.insert(args.end(), files.begin(), files.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  char* envp[] = {nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pair[1], kHelperFd);
  // Asio opens its sockets without close-on-exec: close every other descriptor
  // in the child before the exec, so that no listening socket is ever held by
  // the helper, not even while it starts (its own close_range comes later).
  posix_spawn_file_actions_addclosefrom_np(&actions, kHelperFd + 1);
  pid_t pid = -1;
  // posix_spawn, not fork: the server already runs threads.
  int rc = ::posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pair[1]);
  if (rc != 0) {
    ::close(pair[0]);
    error = std::string("cannot start the privileged reader: ") + std::strerror(rc);
    return nullptr;
  }
  // A helper that stops answering must not hang a reload forever.
  timeval limit{5, 0};
  ::setsockopt(pair[0], SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  auto reader = std::unique_ptr<PrivilegedPemReader>(new PrivilegedPemReader(pair[0], pid, files));
  // Started means hardened: the helper says so once its descriptors are
  // closed, core dumps are off and it is tied to our life.
  uint8_t ready = 0;
  if (!read_fully(pair[0], &ready, 1) || ready != kReady) {
    error = "the privileged reader did not start";
    return nullptr;  // the destructor closes our end (the helper, if alive, ends) and reaps it
  }
  return reader;
}

PrivilegedPemReader::~PrivilegedPemReader() {
  ::close(fd_);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

std::string PrivilegedPemReader::read(const std::string& path, std::string& contents) {
  auto it = std::find(files_.begin(), files_.end(), path);
  if (it == files_.end()) return "not a file the privileged reader serves";
  std::lock_guard lock(mutex_);
  uint32_t index = uint32_t(it - files_.begin());
  uint8_t status = 0;
  uint32_t length = 0;
  if (!write_fully(fd_, &index, sizeof index) || !read_fully(fd_, &status, 1) || !read_fully(fd_, &length, sizeof length) ||
      length > tls::kMaxPemFile + 4096)
    return "the privileged reader does not answer";
  std::string bytes(length, '\0');
  if (!read_fully(fd_, bytes.data(), length)) return "the privileged reader does not answer";
  if (status != 0) return bytes;
  contents.swap(bytes);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return "";
}

int run_privileged_reader(const std::vector<std::string>& files) {
  // Only what it needs: no other inherited descriptor (listening sockets), no
  // core dumps, and gone with the server.
  ::close_range(kHelperFd + 1, ~0U, 0);
  rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (::getppid() == 1) return 0;  // the server is already gone
  std::signal(SIGHUP, SIG_IGN);    // a reload is the server's business
  std::signal(SIGINT, SIG_IGN);    // so is Ctrl-C: the server's end closing ends us
  std::signal(SIGPIPE, SIG_IGN);   // a write to a server that is gone fails instead
  if (::fcntl(kHelperFd, F_GETFD) < 0) return 2;
  if (!write_fully(kHelperFd, &kReady, 1)) return 0;  // the server waits for this before it goes on
  uint32_t index = 0;
  while (read_fully(kHelperFd, &index, sizeof index)) {
    std::string contents;
    if (index >= files.size()) {
      if (!send_answer(kHelperFd, 1, "unknown file number")) break;
      continue;
    }
    auto error = tls::direct_pem_reader().read(files[index], contents);
    bool sent = error.empty() ? send_answer(kHelperFd, 0, contents) : send_answer(kHelperFd, 1, error);
    OPENSSL_cleanse(contents.data(), contents.size());
    if (!sent) break;
  }
  return 0;
}

}  // namespace mk::app
