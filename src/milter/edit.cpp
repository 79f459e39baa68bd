// edit.cpp — see edit.h.
#include "milter/edit.h"

#include <algorithm>
#include <cstring>

#include "core/strings.h"
#include "smtp/spool.h"

namespace mk::milter {
namespace {

bool field_name_char(char c) { return c > 32 && c < 127 && c != ':'; }

// The field's name: the text before the colon, without trailing white space.
std::string_view name_of(std::string_view raw) {
  auto colon = raw.find(':');
  auto name = raw.substr(0, colon == std::string_view::npos ? 0 : colon);
  while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
  return name;
}

// Splits CRLF lines of `text` into fields (for our own top fields).
void split_fields(std::string_view text, std::vector<std::string>& out) {
  size_t pos = 0;
  while (pos < text.size()) {
    auto eol = text.find("\r\n", pos);
    size_t end = eol == std::string_view::npos ? text.size() : eol + 2;
    auto line = text.substr(pos, end - pos);
    if (!out.empty() && (line[0] == ' ' || line[0] == '\t')) out.back() += line;
    else out.emplace_back(line);
    pos = end;
  }
}

// The edited message: header bytes, then the body (the original slice or a new one).
class Edited final : public ContentSource {
 public:
  Edited(std::string head, const ContentSource& content, uint64_t offset, std::shared_ptr<smtp::Spool> body)
      : head_(std::move(head)), content_(content), offset_(offset), body_(std::move(body)) {}
  uint64_t size() const override { return head_.size() + body_size(); }
  size_t read_at(uint64_t offset, char* buf, size_t n) const override {
    if (offset < head_.size()) {
      n = std::min<uint64_t>(n, head_.size() - offset);
      std::memcpy(buf, head_.data() + offset, n);
      return n;
    }
    offset -= head_.size();
    if (body_) return body_->read_at(offset, buf, n);
    return content_.read_at(offset_ + offset, buf, n);
  }

 private:
  uint64_t body_size() const { return body_ ? body_->size() : content_.size() - offset_; }
  std::string head_;
  const ContentSource& content_;
  uint64_t offset_;
  std::shared_ptr<smtp::Spool> body_;
};

}  // namespace

std::string_view MessageEditor::Field::name() const { return name_of(raw); }

MessageEditor::MessageEditor(std::string_view top, const ContentSource& content, std::string spool_dir,
                             uint64_t max_body)
    : content_(content), spool_dir_(std::move(spool_dir)), max_body_(max_body) {
  std::vector<std::string> ours;
  split_fields(top, ours);
  for (auto& f : ours) fields_.push_back(Field{std::move(f), true});

  // The client's header section: at most kMaxHeaderBytes of it is parsed;
  // what follows an over-long section counts as body.
  // Read in steps until the empty line: a big message costs its header section, not the bound.
  std::string head;
  const size_t limit = static_cast<size_t>(std::min<uint64_t>(content.size(), kMaxHeaderBytes));
  size_t got = 0;
  while (got < limit) {
    head.resize(std::min(limit, got + 16384));
    size_t n = content.read_at(got, head.data() + got, head.size() - got);
    if (n == 0) break;
    size_t from = got >= 3 ? got - 3 : 0;
    got += n;
    if (head.compare(0, 2, "\r\n") == 0 ||
        std::string_view(head.data() + from, got - from).find("\r\n\r\n") != std::string_view::npos)
      break;
  }
  head.resize(got);
  const bool whole = got == content.size();
  size_t pos = 0;
  separator_.clear();
  body_offset_ = content.size();  // all headers unless a body starts
  while (pos < head.size()) {
    auto eol = head.find("\r\n", pos);
    if (eol == std::string::npos && !whole) {  // cut by the bound: the rest is body
      body_offset_ = pos;
      break;
    }
    size_t end = eol == std::string::npos ? head.size() : eol + 2;
    std::string_view line(head.data() + pos, end - pos);
    if (line == "\r\n") {
      separator_ = "\r\n";
      body_offset_ = end;
      break;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      if (!fields_.empty() && !fields_.back().ours) {
        fields_.back().raw += line;
        pos = end;
        continue;
      }
      body_offset_ = pos;  // a continuation of nothing: the body starts here
      break;
    }
    auto colon = line.find(':');
    auto name = name_of(line);
    if (colon == std::string_view::npos || name.empty() ||
        !std::all_of(name.begin(), name.end(), field_name_char)) {
      body_offset_ = pos;  // not a header field: the body starts here, without an empty line
      break;
    }
    fields_.push_back(Field{std::string(line), false});
    pos = end;
  }
}

MessageEditor::~MessageEditor() = default;

std::vector<MessageEditor::Shown> MessageEditor::shown_fields(bool leading_space) const {
  std::vector<Shown> out;
  for (auto& f : fields_) {
    if (f.ours) continue;
    std::string_view raw = f.raw;
    auto colon = raw.find(':');
    std::string_view v = raw.substr(colon + 1);
    if (!leading_space && !v.empty() && v[0] == ' ') v.remove_prefix(1);
    if (v.size() >= 2 && v.substr(v.size() - 2) == "\r\n") v.remove_suffix(2);
    std::string value;
    value.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '\r' && i + 1 < v.size() && v[i + 1] == '\n') continue;  // "\r\n" → "\n"
      value += v[i];
    }
    out.push_back(Shown{std::string(f.name()), std::move(value)});
  }
  return out;
}

uint64_t MessageEditor::body_size() const {
  return body_ ? body_->size() : content_.size() - body_offset_;
}

size_t MessageEditor::read_body(uint64_t offset, char* buf, size_t n) const {
  if (body_) return body_->read_at(offset, buf, n);
  return content_.read_at(body_offset_ + offset, buf, n);
}

std::string MessageEditor::make_raw(std::string_view name, std::string_view value, bool leading_space,
                                    std::string& why) {
  std::string raw(name);
  raw += ':';
  if (!leading_space) raw += ' ';
  bool line_start = false;
  for (size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    if (c == '\r') continue;  // line breaks are "\n" on the wire; a bare CR is dropped
    if (c == '\0') {
      why = "NUL in a header value";
      return {};
    }
    if (c == '\n') {
      raw += "\r\n";
      line_start = true;
      continue;
    }
    if (line_start && c != ' ' && c != '\t') raw += '\t';  // no new field inside a value
    line_start = false;
    raw += c;
  }
  if (line_start) raw += '\t';  // a value ending in a line break: keep the field one field
  raw += "\r\n";
  added_bytes_ += raw.size();
  if (added_bytes_ > kMaxHeaderBytes) {
    why = "milters added more than 1 MiB of header fields";
    return {};
  }
  return raw;
}

bool MessageEditor::add(std::string_view name, std::string_view value, bool leading_space, std::string& why) {
  auto raw = make_raw(name, value, leading_space, why);
  if (raw.empty()) return false;
  fields_.push_back(Field{std::move(raw), false});
  changed_ = true;
  return true;
}

bool MessageEditor::insert(uint32_t index, std::string_view name, std::string_view value, bool leading_space,
                           std::string& why) {
  auto raw = make_raw(name, value, leading_space, why);
  if (raw.empty()) return false;
  size_t at = std::min<size_t>(index, fields_.size());
  fields_.insert(fields_.begin() + static_cast<std::ptrdiff_t>(at), Field{std::move(raw), false});
  changed_ = true;
  return true;
}

bool MessageEditor::change(uint32_t index, std::string_view name, std::string_view value, bool leading_space,
                           std::string& why) {
  if (index == 0) index = 1;
  uint32_t seen = 0;
  for (auto it = fields_.begin(); it != fields_.end(); ++it) {
    if (it->ours || !iequals(it->name(), name)) continue;
    if (++seen != index) continue;
    if (value.empty()) {
      fields_.erase(it);
    } else {
      auto raw = make_raw(name, value, leading_space, why);
      if (raw.empty()) return false;
      it->raw = std::move(raw);
    }
    changed_ = true;
    return true;
  }
  if (value.empty()) return true;  // deleting what is not there
  return add(name, value, leading_space, why);
}

size_t MessageEditor::remove_foreign_authentication_results(std::string_view authserv_id) {
  size_t removed = 0;
  for (auto it = fields_.begin(); it != fields_.end();) {
    if (!it->ours && iequals(it->name(), "Authentication-Results")) {
      // The authserv-id: the value's first token, before ';' (a version may follow it).
      std::string_view v = it->raw;
      v.remove_prefix(v.find(':') + 1);
      size_t b = v.find_first_not_of(" \t\r\n");
      v.remove_prefix(b == std::string_view::npos ? v.size() : b);
      auto id = v.substr(0, v.find_first_of(" \t\r\n;"));
      if (iequals(id, authserv_id)) {
        it = fields_.erase(it);
        ++removed;
        changed_ = true;
        continue;
      }
    }
    ++it;
  }
  return removed;
}

bool MessageEditor::replace_body_chunk(std::string_view chunk, std::string& why) {
  if (!replacing_) {
    body_ = std::make_unique<smtp::Spool>(spool_dir_, 256 * 1024);
    replacing_ = true;
    last_cr_ = false;
    changed_ = true;
  }
  std::string out;
  out.reserve(chunk.size() + chunk.size() / 32 + 2);
  for (char c : chunk) {
    if (last_cr_) {
      last_cr_ = false;
      out += '\n';  // completes "\r\n", or turns a bare CR into one
      if (c == '\n') continue;
    }
    if (c == '\r') {
      out += '\r';
      last_cr_ = true;
    } else if (c == '\n') {
      out += "\r\n";
    } else {
      out += c;
    }
  }
  if (!body_->append(out)) {
    why = "storing the replacement body: " + body_->error();
    return false;
  }
  if (body_->size() > max_body_) {
    why = "the replacement body is larger than [smtp] max_message_size";
    return false;
  }
  return true;
}

void MessageEditor::end_of_milter() {
  if (replacing_ && last_cr_) body_->append("\n");
  last_cr_ = false;
  replacing_ = false;
}

std::unique_ptr<ContentSource> MessageEditor::result() {
  std::string head;
  for (auto& f : fields_) head += f.raw;
  if (body_ && separator_.empty()) separator_ = "\r\n";  // a new body always follows an empty line
  head += separator_;
  return std::make_unique<Edited>(std::move(head), content_, body_offset_, std::shared_ptr<smtp::Spool>(std::move(body_)));
}

}  // namespace mk::milter
