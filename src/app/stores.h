// stores.h — THE place a piece of state picks its backend: with [store] url,
// PostgreSQL (one connection pool per process, shared by every store), which
// every gateway shares; without it, the embedded SQLite files of one gateway
// ([store] path, [spam] history) and the model file alone.
// Threading: open the stores before serving; what they return is thread-safe.
#pragma once
#include <memory>

#include "aliases/store.h"
#include "config/settings.h"
#include "spam/history.h"
#include "core/shared_file.h"
#include "webreader/sessions.h"

namespace mk::store {
class PgPool;
}

namespace mk::app {

class Stores {
 public:
  explicit Stores(const Settings& settings);
  ~Stores();
  bool shared() const { return pool_ != nullptr; }
  // Each opens (and migrates) its store; throws db::Error.
  std::unique_ptr<aliases::AliasStore> aliases();
  std::unique_ptr<spam::History> spam_history();      // unbuffered
  std::unique_ptr<SharedFile> model_share();    // the spam model; null without [store] url
  std::unique_ptr<SharedFile> accounts_share();  // the synced account list; null without [store] url
  // [users] passwd (written as users::update_passwd writes it); null without [store] url.
  std::unique_ptr<SharedFile> passwd_share();
  // One account's filters ("domain/localpart", the index's account path); null without [store] url.
  std::unique_ptr<SharedFile> filters_share(const std::string& account);
  // The web view's sessions: in this process's memory without [store] url.
  std::unique_ptr<webreader::SessionStore> web_sessions(webreader::SessionLimits limits);
  std::shared_ptr<store::PgPool> pool() const { return pool_; }  // null without [store] url

 private:
  const Settings& settings_;
  std::shared_ptr<store::PgPool> pool_;
};

}  // namespace mk::app
