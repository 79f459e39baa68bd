// privileges.h — dropping root after the ports are bound.
#pragma once
#include <string>
#include <vector>

namespace mk::app {

// Creates `dirs` (if missing) and gives them and the existing `files` to
// `user`, then switches to that user for good (groups, gid, uid; core dumps
// off so message contents never land in one). Not root: no change.
// Returns an error text, or "".
std::string drop_privileges(const std::string& user, const std::vector<std::string>& dirs,
                            const std::vector<std::string>& files = {});

}  // namespace mk::app
