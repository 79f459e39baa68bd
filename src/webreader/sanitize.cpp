// sanitize.cpp — see sanitize.h.
#include "webreader/sanitize.h"

#include <gumbo.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <vector>

namespace mk::webreader {
namespace {

constexpr int kMaxDepth = 200;  // deeper markup is flattened to its text

bool one_of(std::string_view v, std::initializer_list<std::string_view> set) {
  return std::find(set.begin(), set.end(), v) != set.end();
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Elements kept (their attributes are filtered separately).
bool allowed_element(std::string_view tag) {
  return one_of(tag, {"a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption", "center",
                      "cite", "code", "col", "colgroup", "dd", "del", "details", "dfn", "div", "dl", "dt", "em",
                      "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol",
                      "p", "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "summary", "sup",
                      "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul", "var", "wbr",
                      "style"});
}

// Elements dropped with everything inside them.
bool dropped_with_content(std::string_view tag) {
  return one_of(tag, {"script", "noscript", "template", "iframe", "frame", "frameset", "object", "embed", "applet",
                      "form", "input", "button", "select", "textarea", "option", "svg", "math", "meta", "link",
                      "base", "title", "head", "audio", "video", "source", "track", "canvas", "portal", "dialog",
                      "param", "xmp", "plaintext", "noembed", "noframes"});
}

bool void_element(std::string_view tag) { return one_of(tag, {"br", "hr", "img", "col", "wbr"}); }

bool allowed_attribute(std::string_view tag, std::string_view name) {
  if (one_of(name, {"title", "dir", "lang", "align", "valign", "width", "height", "bgcolor", "color", "border",
                    "cellpadding", "cellspacing", "colspan", "rowspan", "style", "face", "size", "start", "type",
                    "span", "datetime", "nowrap"}))
    return true;
  if (tag == "a") return name == "href";
  if (tag == "img") return name == "src" || name == "alt";
  return false;
}

void escape_into(std::string& out, std::string_view text, bool attribute) {
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': if (attribute) out += "&quot;"; else out += c; break;
      case '\'': if (attribute) out += "&#39;"; else out += c; break;
      case '\0': break;
      default: out += c;
    }
  }
}

// The scheme of a URL as a browser reads it: leading spaces and control
// characters ignored, tabs and newlines inside removed ("java\tscript:").
std::string url_scheme(std::string_view url) {
  std::string cleaned;
  for (char c : url) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 && cleaned.empty()) continue;
    if (c == '\t' || c == '\n' || c == '\r') continue;
    cleaned += char(std::tolower(u));
    if (c == ':' || c == '/' || c == '?' || c == '#') break;
  }
  auto colon = cleaned.find(':');
  return colon == std::string::npos ? "" : cleaned.substr(0, colon);
}

// CSS (a style attribute or element) without what fetches or runs: url(),
// @import, expression(), behaviors, bindings. Decodes CSS escapes first, so
// "u\72l(" is seen as "url(". Removing is done by dropping the declaration
// or rule that holds it.
struct CssResult {
  std::string css;
  bool removed_remote = false;
};

std::string decode_css_escapes(std::string_view css) {
  std::string out;
  for (size_t i = 0; i < css.size(); ++i) {
    if (css[i] != '\\' || i + 1 >= css.size()) {
      out += css[i];
      continue;
    }
    size_t j = i + 1, digits = 0;
    unsigned value = 0;
    while (j < css.size() && digits < 6 && std::isxdigit(static_cast<unsigned char>(css[j]))) {
      value = value * 16 + unsigned(std::stoi(std::string(1, css[j]), nullptr, 16));
      ++j, ++digits;
    }
    if (digits) {
      out += value > 0 && value < 128 ? char(value) : '?';
      if (j < css.size() && css[j] == ' ') ++j;
      i = j - 1;
    } else {
      out += css[++i];
    }
  }
  return out;
}

bool dangerous_css(const std::string& lowered) {
  std::string compact;
  for (char c : lowered)
    if (!std::isspace(static_cast<unsigned char>(c))) compact += c;
  return compact.find("url(") != std::string::npos || compact.find("@import") != std::string::npos ||
         compact.find("expression(") != std::string::npos || compact.find("behavior") != std::string::npos ||
         compact.find("-moz-binding") != std::string::npos || compact.find("image-set(") != std::string::npos ||
         compact.find("@font-face") != std::string::npos || compact.find("javascript:") != std::string::npos;
}

CssResult clean_declarations(std::string_view css, bool allow_remote) {
  CssResult r;
  size_t start = 0;
  while (start <= css.size()) {
    auto end = css.find(';', start);
    auto decl = css.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    auto lowered = lower(decode_css_escapes(decl));
    bool remote = dangerous_css(lowered);
    bool script = lowered.find("expression(") != std::string::npos || lowered.find("javascript:") != std::string::npos ||
                  lowered.find("behavior") != std::string::npos || lowered.find("binding") != std::string::npos;
    if (remote && (!allow_remote || script)) {
      r.removed_remote = true;
    } else if (decl.find_first_not_of(" \t\r\n") != std::string_view::npos) {
      if (!r.css.empty()) r.css += ';';
      r.css += decl;
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return r;
}

// A <style> element: rules whose block is dangerous are dropped whole; @import,
// @font-face and anything unparsable (unbalanced braces) too.
CssResult clean_stylesheet(std::string_view css, bool allow_remote) {
  CssResult r;
  size_t i = 0;
  while (i < css.size()) {
    auto open = css.find('{', i);
    if (open == std::string_view::npos) {
      auto rest = lower(decode_css_escapes(css.substr(i)));
      if (dangerous_css(rest)) r.removed_remote = true;  // a trailing @import; ... is dropped
      break;
    }
    auto close = css.find('}', open);
    if (close == std::string_view::npos) break;
    auto selector = css.substr(i, open - i);
    auto lowered_selector = lower(decode_css_escapes(selector));
    if (lowered_selector.find('@') != std::string::npos || css.substr(open + 1, close - open - 1).find('{') != std::string_view::npos) {
      // at-rules (@media blocks nest rules) and anything nested: dropped, up to the matching brace.
      int depth = 0;
      size_t k = open;
      for (; k < css.size(); ++k) {
        if (css[k] == '{') ++depth;
        if (css[k] == '}' && --depth == 0) break;
      }
      if (dangerous_css(lower(decode_css_escapes(css.substr(i, k - i))))) r.removed_remote = true;
      i = k + 1;
      continue;
    }
    auto body = clean_declarations(css.substr(open + 1, close - open - 1), allow_remote);
    r.removed_remote |= body.removed_remote;
    if (dangerous_css(lowered_selector)) {
      r.removed_remote = true;
    } else {
      r.css += std::string(selector) + "{" + body.css + "}";
    }
    i = close + 1;
  }
  // Never let the text close the <style> element.
  std::string safe;
  for (size_t k = 0; k < r.css.size(); ++k) {
    if (r.css[k] == '<') safe += "\\3C ";
    else safe += r.css[k];
  }
  r.css = safe;
  return r;
}

struct Walker {
  const SanitizeOptions& options;
  SanitizeResult result;

  void attributes(std::string_view tag, const GumboVector& attrs) {
    bool is_link = false;
    for (unsigned i = 0; i < attrs.length; ++i) {
      auto* a = static_cast<GumboAttribute*>(attrs.data[i]);
      auto name = lower(a->name);
      std::string value = a->value;
      if (!allowed_attribute(tag, name)) continue;
      if (name == "style") {
        auto css = clean_declarations(value, options.allow_remote);
        result.blocked_remote |= css.removed_remote;
        value = css.css;
        if (value.empty()) continue;
      }
      if (tag == "a" && name == "href") {
        auto scheme = url_scheme(value);
        if (!one_of(scheme, {"http", "https", "mailto"})) continue;
        is_link = true;
      }
      if (tag == "img" && name == "src") {
        auto scheme = url_scheme(value);
        if (scheme == "cid") {
          auto data = options.inline_image ? options.inline_image(std::string_view(value).substr(value.find(':') + 1))
                                           : std::nullopt;
          if (!data) continue;
          value = *data;
        } else if (scheme == "http" || scheme == "https") {
          if (!options.allow_remote) {
            result.blocked_remote = true;
            continue;
          }
        } else if (scheme == "data") {
          auto l = lower(value.substr(0, 32));
          if (!l.starts_with("data:image/png") && !l.starts_with("data:image/gif") && !l.starts_with("data:image/jpeg") &&
              !l.starts_with("data:image/webp"))
            continue;  // no data:image/svg+xml (scripts), no text/html
        } else {
          continue;
        }
      }
      result.html += ' ';
      result.html += name;
      result.html += "=\"";
      escape_into(result.html, value, true);
      result.html += '"';
    }
    if (tag == "a" && is_link) result.html += " target=\"_blank\" rel=\"noopener noreferrer\"";
  }

  void node(const GumboNode* n, int depth) {
    if (result.html.size() > options.max_output) return;
    switch (n->type) {
      case GUMBO_NODE_TEXT:
      case GUMBO_NODE_WHITESPACE:
      case GUMBO_NODE_CDATA:
        escape_into(result.html, n->v.text.text, false);
        return;
      case GUMBO_NODE_DOCUMENT:
      case GUMBO_NODE_TEMPLATE:
        if (n->type == GUMBO_NODE_TEMPLATE) return;
        children(n->v.document.children, depth);
        return;
      case GUMBO_NODE_COMMENT:
        return;
      case GUMBO_NODE_ELEMENT:
        break;
    }
    const GumboElement& e = n->v.element;
    if (e.tag == GUMBO_TAG_UNKNOWN) {  // <foo>: not ours to keep; its text stays
      children(e.children, depth + 1);
      return;
    }
    std::string tag = gumbo_normalized_tagname(e.tag);
    if (e.tag_namespace != GUMBO_NAMESPACE_HTML || dropped_with_content(tag)) return;
    if (depth > kMaxDepth) {  // hostile nesting: its text only, without recursion (the stack is bounded)
      text_of_subtree(n);
      return;
    }
    if (tag == "html" || tag == "body" || !allowed_element(tag)) {
      children(e.children, depth + 1);  // the element goes, its content stays
      return;
    }
    if (tag == "style") {
      std::string css;
      for (unsigned i = 0; i < e.children.length; ++i) {
        auto* c = static_cast<GumboNode*>(e.children.data[i]);
        if (c->type == GUMBO_NODE_TEXT || c->type == GUMBO_NODE_WHITESPACE) css += c->v.text.text;
      }
      auto clean = clean_stylesheet(css, options.allow_remote);
      result.blocked_remote |= clean.removed_remote;
      result.html += "<style>" + clean.css + "</style>";
      return;
    }
    result.html += '<';
    result.html += tag;
    attributes(tag, e.attributes);
    result.html += '>';
    if (void_element(tag)) return;
    children(e.children, depth + 1);
    result.html += "</" + tag + ">";
  }

  // The text under `root`, walked with an explicit stack; scripts and the
  // like are left out as everywhere else.
  void text_of_subtree(const GumboNode* root) {
    std::vector<const GumboNode*> stack{root};
    while (!stack.empty() && result.html.size() <= options.max_output) {
      const GumboNode* n = stack.back();
      stack.pop_back();
      if (n->type == GUMBO_NODE_TEXT || n->type == GUMBO_NODE_WHITESPACE || n->type == GUMBO_NODE_CDATA) {
        escape_into(result.html, n->v.text.text, false);
        continue;
      }
      if (n->type != GUMBO_NODE_ELEMENT) continue;
      const GumboElement& e = n->v.element;
      if (e.tag_namespace != GUMBO_NAMESPACE_HTML || e.tag == GUMBO_TAG_STYLE ||
          (e.tag != GUMBO_TAG_UNKNOWN && dropped_with_content(gumbo_normalized_tagname(e.tag))))
        continue;
      for (unsigned i = e.children.length; i-- > 0;) stack.push_back(static_cast<const GumboNode*>(e.children.data[i]));
    }
  }

  void children(const GumboVector& v, int depth) {
    for (unsigned i = 0; i < v.length; ++i) node(static_cast<GumboNode*>(v.data[i]), depth);
  }
};

}  // namespace

SanitizeResult sanitize_html(std::string_view html, const SanitizeOptions& options) {
  Walker w{options, {}};
  GumboOutput* doc = gumbo_parse_with_options(&kGumboDefaultOptions, html.data(), html.size());
  // <head>'s <style> elements belong to the message's look: keep them; the rest of <head> goes.
  const GumboNode* root = doc->root;
  if (root->type == GUMBO_NODE_ELEMENT) {
    const auto& kids = root->v.element.children;
    for (unsigned i = 0; i < kids.length; ++i) {
      auto* c = static_cast<GumboNode*>(kids.data[i]);
      if (c->type != GUMBO_NODE_ELEMENT) continue;
      if (c->v.element.tag == GUMBO_TAG_HEAD) {
        for (unsigned j = 0; j < c->v.element.children.length; ++j) {
          auto* h = static_cast<GumboNode*>(c->v.element.children.data[j]);
          if (h->type == GUMBO_NODE_ELEMENT && h->v.element.tag == GUMBO_TAG_STYLE) w.node(h, 1);
        }
      } else {
        w.node(c, 1);
      }
    }
  }
  gumbo_destroy_output(&kGumboDefaultOptions, doc);
  if (w.result.html.size() > options.max_output) w.result.html.resize(options.max_output);
  return w.result;
}

}  // namespace mk::webreader
