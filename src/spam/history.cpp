// history.cpp — see history.h.
#include "spam/history.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "core/log.h"

#include "db/sqlite.h"

namespace mk::spam {

namespace {

// Sorted and unique, through a bitmap of the feature space (2^20 bits): a
// few microseconds for a message's thousands of features, where std::sort
// took a hundred on the history's writer thread.
std::vector<uint32_t> sorted_unique(const std::vector<uint32_t>& features) {
  uint32_t max = 0;
  for (uint32_t f : features) max = std::max(max, f);
  std::vector<uint32_t> out;
  out.reserve(features.size());
  if (max >= (1u << 24)) {  // not a feature index of ours: sort
    out = features;
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
  thread_local std::vector<uint64_t> bits;
  if (bits.size() < max / 64 + 1) bits.resize(max / 64 + 1);
  for (uint32_t f : features) bits[f >> 6] |= uint64_t(1) << (f & 63);
  for (size_t w = 0; w <= max / 64; ++w) {
    for (uint64_t word = bits[w]; word; word &= word - 1) out.push_back(uint32_t(w * 64 + size_t(__builtin_ctzll(word))));
    bits[w] = 0;
  }
  return out;
}

}  // namespace

std::string encode_features(const std::vector<uint32_t>& features) {
  std::vector<uint32_t> sorted = sorted_unique(features);
  std::string out;
  out.reserve(sorted.size() * 2);
  uint32_t previous = 0;
  for (uint32_t f : sorted) {
    uint32_t delta = f - previous;
    previous = f;
    while (delta >= 0x80) {
      out += char(0x80 | (delta & 0x7F));
      delta >>= 7;
    }
    out += char(delta);
  }
  return out;
}

bool decode_features(std::string_view blob, std::vector<uint32_t>& out) {
  out.clear();
  uint32_t previous = 0;
  size_t i = 0;
  while (i < blob.size()) {
    uint64_t delta = 0;
    int shift = 0;
    while (true) {
      if (i >= blob.size() || shift > 28) return false;
      auto byte = static_cast<unsigned char>(blob[i++]);
      delta |= uint64_t(byte & 0x7F) << shift;
      shift += 7;
      if (!(byte & 0x80)) break;
    }
    uint64_t value = previous + delta;
    if (value > UINT32_MAX || (!out.empty() && delta == 0)) return false;
    previous = uint32_t(value);
    out.push_back(previous);
  }
  return true;
}

std::string make_signature(int64_t now) {
  thread_local std::mt19937 rng{std::random_device{}()};
  return fmt::format("{:08x}{:08x}", uint32_t(now), uint32_t(rng()));
}

namespace {

using db::Statement;

const char* const kMigrations[] = {
    // 1: verdicts, and the features of recent ones (purged sooner).
    "CREATE TABLE verdicts ("
    "  signature TEXT PRIMARY KEY,"
    "  time INTEGER NOT NULL,"
    "  client TEXT NOT NULL,"
    "  sender TEXT NOT NULL,"
    "  recipients TEXT NOT NULL,"
    "  subject TEXT NOT NULL,"
    "  score REAL NOT NULL,"
    "  spam INTEGER NOT NULL,"
    "  action TEXT NOT NULL,"
    "  reclassified INTEGER"
    ");"
    "CREATE INDEX verdicts_time ON verdicts(time);"
    "CREATE TABLE features ("
    "  signature TEXT PRIMARY KEY REFERENCES verdicts(signature) ON DELETE CASCADE,"
    "  time INTEGER NOT NULL,"
    "  data BLOB NOT NULL"
    ");"
    "CREATE INDEX features_time ON features(time);",
    // 2: the unsure verdict (spam stays 1 for spam only).
    "ALTER TABLE verdicts ADD COLUMN unsure INTEGER NOT NULL DEFAULT 0;",
};

constexpr const char* kColumns = "signature,time,client,sender,recipients,subject,score,spam,action,reclassified,unsure";

class SqliteHistory final : public History {
 public:
  explicit SqliteHistory(const std::string& path) {
    db_ = db::open_database(path, kMigrations);
    try {
      insert_verdict_ = std::make_unique<Statement>(
          db_, "INSERT OR REPLACE INTO verdicts(signature,time,client,sender,recipients,subject,score,spam,action,unsure) "
               "VALUES (?,?,?,?,?,?,?,?,?,?)");
      insert_features_ = std::make_unique<Statement>(db_, "INSERT OR REPLACE INTO features(signature,time,data) VALUES (?,?,?)");
      recent_ = std::make_unique<Statement>(
          db_, fmt::format("SELECT {} FROM verdicts ORDER BY time DESC, rowid DESC LIMIT ?", kColumns).c_str());
      find_ = std::make_unique<Statement>(db_, fmt::format("SELECT {} FROM verdicts WHERE signature=?", kColumns).c_str());
      find_features_ = std::make_unique<Statement>(db_, "SELECT data FROM features WHERE signature=?");
      reclassify_ = std::make_unique<Statement>(db_, "UPDATE verdicts SET reclassified=? WHERE signature=?");
      counts_ = std::make_unique<Statement>(
          db_, "SELECT COALESCE(SUM(spam),0), COALESCE(SUM(1-spam-unsure),0),"
               " COALESCE(SUM(spam=0 AND reclassified=1),0), COALESCE(SUM(spam=1 AND reclassified=0),0),"
               " COALESCE(SUM(unsure),0)"
               " FROM verdicts WHERE time >= ?");
      purge_features_ = std::make_unique<Statement>(db_, "DELETE FROM features WHERE time < ?");
      purge_rows_ = std::make_unique<Statement>(db_, "DELETE FROM verdicts WHERE time < ?");
    } catch (...) {
      finalize();
      sqlite3_close(db_);
      throw;
    }
  }
  ~SqliteHistory() override {
    finalize();
    sqlite3_close(db_);
  }

  void record(const Verdict& v, const std::vector<uint32_t>& features) override {
    std::lock_guard lock(mutex_);
    db::Transaction t(db_);
    insert(v, features);
    t.commit();
  }

  void record_all(const std::vector<Entry>& entries) override {
    if (entries.empty()) return;
    std::lock_guard lock(mutex_);
    db::Transaction t(db_);
    for (auto& e : entries) insert(e.verdict, e.features);
    t.commit();
  }

  std::vector<Verdict> recent(size_t limit) override {
    std::lock_guard lock(mutex_);
    std::vector<Verdict> out;
    auto u = recent_->use();
    recent_->bind(1, int64_t(limit));
    while (recent_->step() == SQLITE_ROW) out.push_back(row(*recent_));
    return out;
  }

  std::optional<Verdict> find(const std::string& signature, std::vector<uint32_t>* features) override {
    std::lock_guard lock(mutex_);
    std::optional<Verdict> v;
    {
      auto u = find_->use();
      find_->bind(1, signature);
      if (find_->step() != SQLITE_ROW) return std::nullopt;
      v = row(*find_);
    }
    if (features) {
      features->clear();
      auto u = find_features_->use();
      find_features_->bind(1, signature);
      if (find_features_->step() == SQLITE_ROW && !decode_features(find_features_->blob(0), *features))
        throw db::Error("stored features of " + signature + " are damaged");
    }
    return v;
  }

  void set_reclassified(const std::string& signature, bool as_spam) override {
    std::lock_guard lock(mutex_);
    auto u = reclassify_->use();
    reclassify_->bind(1, int64_t(as_spam));
    reclassify_->bind(2, signature);
    reclassify_->step();
  }

  VerdictCounts counts(int64_t since) override {
    std::lock_guard lock(mutex_);
    auto u = counts_->use();
    counts_->bind(1, since);
    VerdictCounts c;
    if (counts_->step() == SQLITE_ROW) {
      auto* s = counts_->get();
      c.spam = uint64_t(sqlite3_column_int64(s, 0));
      c.ham = uint64_t(sqlite3_column_int64(s, 1));
      c.missed_spam = uint64_t(sqlite3_column_int64(s, 2));
      c.false_positives = uint64_t(sqlite3_column_int64(s, 3));
      c.unsure = uint64_t(sqlite3_column_int64(s, 4));
    }
    return c;
  }

  void purge(int64_t features_before, int64_t rows_before) override {
    std::lock_guard lock(mutex_);
    {
      auto u = purge_features_->use();
      purge_features_->bind(1, features_before);
      purge_features_->step();
    }
    auto u = purge_rows_->use();
    purge_rows_->bind(1, rows_before);
    purge_rows_->step();
  }

 private:
  // Inside a transaction, under mutex_.
  void insert(const Verdict& v, const std::vector<uint32_t>& features) {
    {
      auto u = insert_verdict_->use();
      auto& s = *insert_verdict_;
      s.bind(1, v.signature);
      s.bind(2, v.time);
      s.bind(3, v.client);
      s.bind(4, v.sender);
      s.bind(5, v.recipients);
      s.bind(6, v.subject);
      s.bind(7, v.score);
      s.bind(8, int64_t(v.call == Call::Spam));
      s.bind(9, v.action);
      s.bind(10, int64_t(v.call == Call::Unsure));
      s.step();
    }
    auto u = insert_features_->use();
    insert_features_->bind(1, v.signature);
    insert_features_->bind(2, v.time);
    insert_features_->bind_blob(3, encode_features(features));
    insert_features_->step();
  }

  static Verdict row(Statement& st) {
    auto* s = st.get();
    Verdict v;
    v.signature = st.text(0);
    v.time = sqlite3_column_int64(s, 1);
    v.client = st.text(2);
    v.sender = st.text(3);
    v.recipients = st.text(4);
    v.subject = st.text(5);
    v.score = sqlite3_column_double(s, 6);
    v.call = sqlite3_column_int64(s, 7) != 0    ? Call::Spam
             : sqlite3_column_int64(s, 10) != 0 ? Call::Unsure
                                                : Call::Ham;
    v.action = st.text(8);
    if (sqlite3_column_type(s, 9) != SQLITE_NULL) v.reclassified_as = sqlite3_column_int64(s, 9) != 0;
    return v;
  }
  void finalize() {
    insert_verdict_.reset();
    insert_features_.reset();
    recent_.reset();
    find_.reset();
    find_features_.reset();
    reclassify_.reset();
    counts_.reset();
    purge_features_.reset();
    purge_rows_.reset();
  }

  sqlite3* db_ = nullptr;
  std::mutex mutex_;
  std::unique_ptr<Statement> insert_verdict_, insert_features_, recent_, find_, find_features_, reclassify_, counts_,
      purge_features_, purge_rows_;
};

}  // namespace

class BufferedHistory final : public History {
 public:
  BufferedHistory(std::unique_ptr<History> store, std::chrono::milliseconds interval, size_t max_queued)
      : store_(std::move(store)), interval_(interval), max_queued_(max_queued), writer_([this] { run(); }) {}
  ~BufferedHistory() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    writer_.join();
    write_queue();  // what came after the writer's last round
  }

  void record(const Verdict& v, const std::vector<uint32_t>& features) override {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= max_queued_) {
      if (dropped_++ % 1000 == 0)
        spdlog::warn("spam history: writes are behind ({} queued); verdict {} not recorded", queue_.size(), v.signature);
      return;
    }
    queue_.push_back({v, features});
  }
  std::vector<Verdict> recent(size_t limit) override {
    write_queue();
    return store_->recent(limit);
  }
  std::optional<Verdict> find(const std::string& signature, std::vector<uint32_t>* features) override {
    write_queue();
    return store_->find(signature, features);
  }
  void set_reclassified(const std::string& signature, bool as_spam) override {
    write_queue();
    store_->set_reclassified(signature, as_spam);
  }
  VerdictCounts counts(int64_t since) override {
    write_queue();
    return store_->counts(since);
  }
  void purge(int64_t features_before, int64_t rows_before) override {
    write_queue();
    store_->purge(features_before, rows_before);
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      wake_.wait_for(lock, interval_, [this] { return stopping_; });
      lock.unlock();
      write_queue();
      lock.lock();
    }
  }
  // Writes what is queued; a failure is logged and the batch dropped (the
  // store said why; retrying forever would only grow the queue).
  void write_queue() {
    std::lock_guard writing(write_mutex_);  // batches reach the store in order
    std::vector<Entry> batch;
    {
      std::lock_guard lock(mutex_);
      batch.swap(queue_);
    }
    if (batch.empty()) return;
    try {
      store_->record_all(batch);
    } catch (const std::exception& e) {
      spdlog::warn("spam history: {} verdicts not recorded: {}", batch.size(), e.what());
    }
  }

  std::unique_ptr<History> store_;
  std::chrono::milliseconds interval_;
  size_t max_queued_;
  std::mutex mutex_;        // guards queue_, stopping_, dropped_
  std::mutex write_mutex_;  // one writer of batches at a time
  std::condition_variable wake_;
  std::vector<Entry> queue_;
  bool stopping_ = false;
  uint64_t dropped_ = 0;
  std::thread writer_;  // last: started when everything above exists
};

std::unique_ptr<History> open_sqlite_history(const std::string& path) { return std::make_unique<SqliteHistory>(path); }

std::unique_ptr<History> make_buffered_history(std::unique_ptr<History> store, std::chrono::milliseconds interval,
                                               size_t max_queued) {
  return std::make_unique<BufferedHistory>(std::move(store), interval, max_queued);
}

}  // namespace mk::spam
