// assets.h — the web page's files, compiled into the binary from web/ (no
// CDN, no files to install): see cmake/embed_assets.cmake.
#pragma once
#include <string_view>

namespace mk::http {

struct Asset {
  std::string_view path;  // URL path, "/" for index.html
  std::string_view content_type;
  std::string_view body;
};

const Asset* find_asset(std::string_view path);

}  // namespace mk::http
