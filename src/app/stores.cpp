// stores.cpp — see stores.h.
#include "app/stores.h"

#include "aliases/sqlite_store.h"
#include "store/pg.h"
#include "store/pg_alias_store.h"
#include "store/pg_history.h"
#include "store/pg_shared_file.h"
#include "store/pg_sessions.h"
#include "users/passwd_file.h"

namespace mk::app {

Stores::Stores(const Settings& settings) : settings_(settings) {
  if (!settings.store.url.empty()) pool_ = std::make_shared<store::PgPool>(settings.store.url, settings.store.connections);
}

Stores::~Stores() = default;

std::unique_ptr<aliases::AliasStore> Stores::aliases() {
  if (!pool_) return aliases::open_sqlite_store(settings_.store.path);
  return store::open_pg_alias_store(pool_);
}

std::unique_ptr<spam::History> Stores::spam_history() {
  if (!pool_) return spam::open_sqlite_history(settings_.spam.history);
  return store::open_pg_history(pool_);
}

std::unique_ptr<SharedFile> Stores::model_share() {
  if (!pool_) return nullptr;
  return store::open_pg_shared_file(pool_, store::kSpamModel);
}

std::unique_ptr<SharedFile> Stores::accounts_share() {
  if (!pool_) return nullptr;
  return store::open_pg_shared_file(pool_, store::kAccounts);
}

std::unique_ptr<SharedFile> Stores::passwd_share() {
  if (!pool_) return nullptr;
  const Settings& s = settings_;
  return store::open_pg_shared_file(pool_, store::kPasswd, [&s](const std::string& path, std::string_view bytes) {
    // Its owner, group and mode as `mailkeep user passwd` gives them (Dovecot reads it).
    return users::update_passwd(path, s.general.user, s.users.group, [bytes](users::PasswdFile& f) {
      f = users::parse_passwd(bytes);
      return std::string();
    });
  });
}

std::unique_ptr<SharedFile> Stores::filters_share(const std::string& account) {
  if (!pool_) return nullptr;
  return store::open_pg_shared_file(pool_, store::kFiltersPrefix + account);
}

std::unique_ptr<webreader::SessionStore> Stores::web_sessions(webreader::SessionLimits limits) {
  if (!pool_) return std::make_unique<webreader::MemorySessionStore>(limits);
  return store::open_pg_sessions(pool_, limits);
}

}  // namespace mk::app
