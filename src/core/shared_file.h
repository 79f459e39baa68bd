// shared_file.h — a file every gateway keeps a copy of, with one newest
// version in a shared store ([store] url): the spam model ([spam] model),
// the synced account list ([directory] cache). Each gateway goes on reading
// its own file as before. A writer takes its turn — one writer at a time
// across every gateway — which first brings its own file up to date, so that
// no gateway's change overwrites another's; publishing the new file tells
// every gateway, which copies it into its own file (pull), where the usual
// reload (Classifier::reload_if_changed, AccountDirectory::reload) finds it.
// The PostgreSQL implementation is store/pg_shared_file.h; without a shared
// store there is none (null) and the file alone is the truth, as before.
// Threading: safe from any thread; every call blocks.
#pragma once
#include <memory>
#include <string>

#include "db/error.h"

namespace mk {

class SharedFile {
 public:
  virtual ~SharedFile() = default;
  // One writer's turn; ends (without publishing) when destroyed.
  class Turn {
   public:
    virtual ~Turn() = default;
    // Publishes the file at the turn's path as the newest version. Throws db::Error.
    virtual void publish() = 0;
  };
  // Waits for the turn and brings the file at `path` up to date. Throws db::Error.
  virtual std::unique_ptr<Turn> begin(const std::string& path) = 0;
  // Copies the newest version to `path` when it differs from the last one
  // this process saw; true when it wrote the file. Throws db::Error.
  virtual bool pull(const std::string& path) = 0;
};

}  // namespace mk
