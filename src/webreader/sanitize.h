// sanitize.h — a message's text/html made safe to show: an allow-list walk
// over the tree a real HTML5 parser builds (Gumbo, the parser the index
// already uses), never regular expressions over markup.
//
// What survives: text, and the elements of ordinary mail layout (tables,
// lists, headings, inline formatting, images, links) with a few
// presentational attributes and inline styles. Scripts, event handlers,
// forms, frames, objects, <base>, <meta>, <link>, SVG and MathML are dropped
// with their content. A link keeps only http:, https: and mailto: targets
// and opens a new tab with rel="noopener noreferrer". Remote images and
// CSS url()/@import beacons are removed unless the user allowed them for
// that message; a cid: image is replaced by the data: URL the caller gives
// for it. The result is shown in an iframe whose sandbox allows neither
// scripts nor same-origin, under its own CSP (webreader/api.h): the
// sanitiser is one of three walls, not the only one.
// Threading: pure function.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace mk::webreader {

struct SanitizeOptions {
  bool allow_remote = false;  // remote images and styles, once the user asked
  // "cid:ID" → a data: URL, or nullopt (the image is dropped).
  std::function<std::optional<std::string>(std::string_view cid)> inline_image;
  size_t max_output = 4 * 1024 * 1024;
};

struct SanitizeResult {
  std::string html;
  bool blocked_remote = false;  // something remote was removed: the page offers to load it
};

SanitizeResult sanitize_html(std::string_view html, const SanitizeOptions& options = {});

}  // namespace mk::webreader
