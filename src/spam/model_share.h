// model_share.h — one spam model for several gateways ([store] url): the
// model file stays where each gateway reads it ([spam] model), and a shared
// store keeps the newest copy with a version. A writer (`spam train`,
// `spam reclassify`, `spam learn`, the /spam page, the web view's buttons)
// takes its turn — one writer at a time across every gateway — which first
// brings its own file up to date, so that no gateway's correction overwrites
// another's; publishing the new file tells every gateway, which copies it
// into its own [spam] model (pull), where Classifier::reload_if_changed finds it.
// The PostgreSQL implementation is store/pg_model_share.h; without a shared
// store there is none (null) and the file is the model, as before.
// Threading: safe from any thread; every call blocks.
#pragma once
#include <memory>
#include <string>

#include "db/error.h"

namespace mk::spam {

class ModelShare {
 public:
  virtual ~ModelShare() = default;
  // One writer's turn; ends (without publishing) when destroyed.
  class Turn {
   public:
    virtual ~Turn() = default;
    // Publishes the file at the turn's path as the shared model. Throws db::Error.
    virtual void publish() = 0;
  };
  // Waits for the turn and brings the file at `path` up to date. Throws db::Error.
  virtual std::unique_ptr<Turn> begin(const std::string& path) = 0;
  // Copies the shared model to `path` when it differs from the last one this
  // process saw; true when it wrote the file. Throws db::Error.
  virtual bool pull(const std::string& path) = 0;
};

}  // namespace mk::spam
