// readers.h — read-only index databases kept open between requests.
//
// Opening an account's Xapian database costs a few files opened and read,
// and a fresh handle starts with cold table cursors: every document it reads
// is a pread. The web view lists and searches on every page view, so its
// requests borrow an open reader from this pool and give it back; a reader
// taken from the pool is first moved to the newest committed revision
// (Database::refresh), and one whose index was replaced is closed and
// opened anew. A Xapian database serves one thread at a time: a lease is
// exclusive. Bounded: a few idle readers per account and in all (each holds
// about six file descriptors).
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "index/database.h"

namespace mk::index {

class ReaderPool {
 public:
  explicit ReaderPool(size_t per_account = 8, size_t total = 32) : per_account_(per_account), total_(total) {}

  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), key_(std::move(o.key_)), db_(std::move(o.db_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    explicit operator bool() const { return db_ != nullptr; }
    Database& operator*() const { return *db_; }
    Database* operator->() const { return db_.get(); }

   private:
    friend class ReaderPool;
    ReaderPool* pool_ = nullptr;
    std::string key_;
    std::unique_ptr<Database> db_;
  };

  // An up-to-date reader of the index at `dir`; an empty lease when the
  // account has no index yet. Throws as Database::open_readonly does.
  Lease open(const std::string& dir, const IndexOptions& opt);

  size_t idle() const;

 private:
  void give_back(std::string key, std::unique_ptr<Database> db);

  const size_t per_account_, total_;
  mutable std::mutex mu_;
  // Idle readers, the most recently returned last; evicted from the front.
  std::list<std::pair<std::string, std::unique_ptr<Database>>> idle_;
};

}  // namespace mk::index
