#include "index/readers.h"

#include <algorithm>

namespace mk::index {

ReaderPool::Lease::~Lease() {
  if (pool_ && db_) pool_->give_back(std::move(key_), std::move(db_));
}

ReaderPool::Lease ReaderPool::open(const std::string& dir, const IndexOptions& opt) {
  Lease lease;
  lease.key_ = dir + '\0' + opt.language;
  std::unique_ptr<Database> db;
  {
    std::lock_guard lock(mu_);
    auto it = std::find_if(idle_.rbegin(), idle_.rend(), [&](auto& e) { return e.first == lease.key_; });
    if (it != idle_.rend()) {
      db = std::move(it->second);
      idle_.erase(std::next(it).base());
    }
  }
  if (db && !db->refresh()) db.reset();  // replaced or gone: closed here, opened below
  if (!db) db = Database::open_readonly(dir, opt);
  if (!db) return lease;
  lease.pool_ = this;
  lease.db_ = std::move(db);
  return lease;
}

void ReaderPool::give_back(std::string key, std::unique_ptr<Database> db) {
  std::unique_ptr<Database> evicted;  // closed outside the lock
  std::lock_guard lock(mu_);
  auto same = std::count_if(idle_.begin(), idle_.end(), [&](auto& e) { return e.first == key; });
  if (static_cast<size_t>(same) >= per_account_) return;  // `db` closes on return
  if (idle_.size() >= total_) {
    evicted = std::move(idle_.front().second);
    idle_.pop_front();
  }
  idle_.emplace_back(std::move(key), std::move(db));
}

size_t ReaderPool::idle() const {
  std::lock_guard lock(mu_);
  return idle_.size();
}

}  // namespace mk::index
