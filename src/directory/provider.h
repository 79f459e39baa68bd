// provider.h — where the accounts come from: Google Workspace's Directory
// API or Microsoft Graph. A provider fetches every user and group, all pages,
// or throws SyncError: a partial list is never returned (sync.h would take
// the missing accounts for removals).
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/settings.h"

namespace mk::directory {

struct SyncError : std::runtime_error {
  explicit SyncError(const std::string& what, unsigned status = 0) : std::runtime_error(what), status(status) {}
  unsigned status;  // the HTTP status when the API refused (401: the token may be revoked)
};

// One user or group as the provider lists it, addresses lower-cased, not yet
// checked (sync.cpp refuses what may not become an account).
struct DirectoryEntry {
  std::string primary;               // primaryEmail / the SMTP: proxy address
  std::vector<std::string> aliases;  // its other addresses
  bool group = false;
};

struct FetchResult {
  std::vector<DirectoryEntry> entries;
  size_t pages = 0;     // API pages read
  size_t requests = 0;  // HTTPS requests made, retries and token requests included
};

class Provider {
 public:
  virtual ~Provider() = default;
  virtual FetchResult fetch() = 0;  // throws SyncError
};

// Waits between retries; false when the caller is stopping (the fetch then
// fails at once). Default: sleeps.
using Sleeper = std::function<bool(std::chrono::seconds)>;
bool plain_sleep(std::chrono::seconds s);

// For [directory] provider = google | microsoft. Throws SyncError when the
// credentials or the CA file cannot be read (the message names the file,
// never the key). make_google and make_microsoft may also throw HttpsError;
// make_provider turns that into SyncError.
std::unique_ptr<Provider> make_google(const Settings& s, Sleeper sleep);
std::unique_ptr<Provider> make_microsoft(const Settings& s, Sleeper sleep);
std::unique_ptr<Provider> make_provider(const Settings& s, Sleeper sleep = plain_sleep);

}  // namespace mk::directory
