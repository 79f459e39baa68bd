// pg_shared_file.cpp — see pg_shared_file.h.
#include "store/pg_shared_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/fd_io.h"

namespace mk::store {
namespace {

const char* const kMigrations[] = {
    // 1: the newest version of each shared file.
    "CREATE TABLE shared_files ("
    "  name TEXT PRIMARY KEY,"
    "  version BIGINT NOT NULL,"
    "  updated BIGINT NOT NULL,"
    "  data BYTEA NOT NULL"
    ");",
};

constexpr auto kTurnWait = std::chrono::seconds(30);

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw db::Error("cannot read " + path + ": " + std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      throw db::Error("cannot read " + path + ": " + std::strerror(e));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

class PgSharedFile final : public SharedFile {
 public:
  PgSharedFile(std::shared_ptr<PgPool> pool, std::string name, FileWriter writer)
      : pool_(std::move(pool)), name_(std::move(name)), lock_("mailkeep_shared_file:" + name_),
        writer_(writer ? std::move(writer) : [](const std::string& path, std::string_view bytes) {
          return replace_file(path, bytes);
        }) {
    pool_->migrate("shared_files", kMigrations);
  }

  class PgTurn final : public Turn {
   public:
    PgTurn(PgSharedFile& share, std::unique_ptr<PgConnection> conn, std::string path)
        : share_(share), conn_(std::move(conn)), path_(std::move(path)) {}
    ~PgTurn() override {
      try {
        conn_->exec("SELECT pg_advisory_unlock(hashtext($1))", {share_.lock_});
      } catch (const db::Error&) {
        // The connection broke: the server dropped the lock with it.
      }
    }
    void publish() override {
      std::string bytes = read_file(path_);
      conn_->exec("BEGIN");
      auto r = conn_->exec(
          "INSERT INTO shared_files(name, version, updated, data) VALUES ($1, 1, $2::bigint, $3::bytea) "
          "ON CONFLICT (name) DO UPDATE SET version = shared_files.version + 1, updated = EXCLUDED.updated, "
          "data = EXCLUDED.data RETURNING version",
          {share_.name_, std::to_string(std::time(nullptr)), bytea_text(bytes)});
      std::string version = r.text(0, 0);
      conn_->exec("SELECT pg_notify($1, $2)", {channel_of(share_.name_), share_.name_});
      conn_->exec("COMMIT");
      share_.seen_ = std::stoll(version);
    }

    PgConnection& connection() { return *conn_; }

   private:
    PgSharedFile& share_;
    std::unique_ptr<PgConnection> conn_;
    std::string path_;
  };

  std::unique_ptr<Turn> begin(const std::string& path) override {
    auto conn = pool_->connection();
    auto deadline = std::chrono::steady_clock::now() + kTurnWait;
    while (!conn->exec("SELECT pg_try_advisory_lock(hashtext($1))", {lock_}).boolean(0, 0)) {
      if (std::chrono::steady_clock::now() > deadline)
        throw db::Error("another gateway kept the shared " + name_ + " for more than 30 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto turn = std::make_unique<PgTurn>(*this, std::move(conn), path);  // unlocks if the pull throws
    pull_on(turn->connection(), path);
    return turn;
  }

  bool pull(const std::string& path) override {
    auto conn = pool_->connection();
    return pull_on(*conn, path);
  }

 private:
  bool pull_on(PgConnection& conn, const std::string& path) {
    auto v = conn.exec("SELECT version FROM shared_files WHERE name = $1", {name_});
    if (v.rows() == 0 || v.integer(0, 0) == seen_.load()) return false;
    auto r = conn.exec("SELECT version, data FROM shared_files WHERE name = $1", {name_});
    if (r.rows() == 0) return false;
    auto bytes = bytes_of_bytea(r.text(0, 1));
    if (!bytes) throw db::Error("the shared " + name_ + " is not bytea as expected");
    if (auto err = writer_(path, *bytes); !err.empty()) throw db::Error("the shared " + name_ + ": " + err);
    seen_ = r.integer(0, 0);
    return true;
  }

  std::shared_ptr<PgPool> pool_;
  std::string name_, lock_;
  FileWriter writer_;
  std::atomic<int64_t> seen_{-1};  // the version this process last wrote or published
};

}  // namespace

std::string channel_of(const std::string& name) { return "mailkeep_" + name.substr(0, name.find('/')); }

std::vector<std::string> shared_file_names(PgPool& pool, const std::string& prefix) {
  auto r = pool.exec("SELECT name FROM shared_files WHERE starts_with(name, $1) ORDER BY name", {prefix});
  std::vector<std::string> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(r.text(i, 0));
  return out;
}

std::unique_ptr<SharedFile> open_pg_shared_file(std::shared_ptr<PgPool> pool, const std::string& name,
                                                FileWriter writer) {
  return std::make_unique<PgSharedFile>(std::move(pool), name, std::move(writer));
}

}  // namespace mk::store
