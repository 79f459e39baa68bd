// fuzz_assets_stub.cpp — the fuzz build has no embedded web page; the API
// answers 404 for asset paths instead.
#include "http/assets.h"

namespace mk::http {
const Asset* find_asset(std::string_view) { return nullptr; }
}  // namespace mk::http
