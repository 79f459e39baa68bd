// query.cpp — see query.h. A recursive-descent parser over the raw text:
//
//   query   := and_list EOF
//   and_list:= or_item*                 (juxtaposition; a bare AND is ignored)
//   or_item := unary ('OR' unary)*
//   unary   := '-' unary | primary
//   primary := '(' and_list ')' | '{' unary* '}' | '"' chars '"' | field ':' value | word
//   value   := word | '"' chars '"' | '(' and_list ')'   (the field applies inside)
#include "index/query.h"

#include <cctype>
#include <ctime>

#include "core/strings.h"

namespace mk::index {
namespace {

struct FieldName {
  std::string_view name;
  Field field;
};
constexpr FieldName kFields[] = {
    {"from", Field::From},       {"to", Field::To},
    {"cc", Field::Cc},           {"bcc", Field::Bcc},
    {"subject", Field::Subject}, {"label", Field::Label},
    {"in", Field::In},           {"is", Field::Is},
    {"has", Field::Has},         {"filename", Field::Filename},
    {"list", Field::List},       {"rfc822msgid", Field::MessageId},
    {"after", Field::After},     {"before", Field::Before},
    {"older_than", Field::OlderThan}, {"newer_than", Field::NewerThan},
    {"larger", Field::Larger},   {"smaller", Field::Smaller},
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
bool is_special(char c) { return c == '(' || c == ')' || c == '{' || c == '}' || c == '"'; }

struct Failure {
  size_t offset;
  std::string expected;
};

class Parser {
 public:
  Parser(std::string_view text, int64_t now) : s_(text), now_(now) {}

  QueryNode parse() {
    auto root = and_list();
    skip_space();
    if (pos_ < s_.size()) {
      // Only a stray closing bracket stops and_list before the end.
      throw Failure{pos_, s_[pos_] == ')' ? "a term (unmatched ')')" : "a term (unmatched '}')"};
    }
    return root;
  }

 private:
  std::string_view s_;
  int64_t now_;
  size_t pos_ = 0;
  Field context_ = Field::Text;  // inside field:( … )
  int depth_ = 0;

  void skip_space() {
    while (pos_ < s_.size() && is_space(s_[pos_])) ++pos_;
  }
  bool at_end() { return pos_ >= s_.size(); }
  bool at_close() { return !at_end() && (s_[pos_] == ')' || s_[pos_] == '}'); }

  // The word at pos_ without consuming it: up to a space or a bracket/quote.
  std::string_view peek_word() const {
    size_t end = pos_;
    while (end < s_.size() && !is_space(s_[end]) && !is_special(s_[end])) ++end;
    return s_.substr(pos_, end - pos_);
  }
  bool keyword_next(std::string_view kw) {
    auto w = peek_word();
    if (w != kw) return false;
    size_t after = pos_ + w.size();
    return after >= s_.size() || is_space(s_[after]) || s_[after] == '(' || s_[after] == '"' || s_[after] == '{' ||
           s_[after] == ')' || s_[after] == '}';
  }

  static QueryNode combine(QueryNode::Kind kind, std::vector<QueryNode> items) {
    if (items.size() == 1) return std::move(items.front());
    QueryNode n;
    n.kind = kind;
    n.children = std::move(items);
    return n;
  }

  QueryNode and_list() {
    std::vector<QueryNode> items;
    for (;;) {
      skip_space();
      if (at_end() || at_close()) break;
      if (keyword_next("AND")) {
        size_t at = pos_;
        pos_ += 3;
        skip_space();
        if (items.empty() || at_end() || at_close()) throw Failure{at, "a term on both sides of AND"};
        continue;
      }
      if (keyword_next("OR")) throw Failure{pos_, "a term before OR"};
      items.push_back(or_item());
    }
    if (items.empty()) return QueryNode{};  // All
    return combine(QueryNode::Kind::And, std::move(items));
  }

  QueryNode or_item() {
    std::vector<QueryNode> items;
    items.push_back(unary());
    for (;;) {
      size_t save = pos_;
      skip_space();
      if (!keyword_next("OR")) {
        pos_ = save;
        break;
      }
      pos_ += 2;
      skip_space();
      if (at_end() || at_close() || keyword_next("OR") || keyword_next("AND"))
        throw Failure{pos_, "a term after OR"};
      items.push_back(unary());
    }
    return combine(QueryNode::Kind::Or, std::move(items));
  }

  QueryNode unary() {
    if (!at_end() && s_[pos_] == '-') {
      size_t at = pos_++;
      if (at_end() || is_space(s_[pos_]) || at_close()) throw Failure{at + 1, "a term after '-'"};
      enter();
      QueryNode n;
      n.kind = QueryNode::Kind::Not;
      n.children.push_back(unary());
      --depth_;
      return n;
    }
    return primary();
  }

  void enter() {
    if (++depth_ > 100) throw Failure{pos_, "fewer nested brackets or negations (at most 100)"};
  }

  QueryNode group(char close) {
    size_t open = pos_++;
    enter();
    QueryNode n;
    if (close == ')') {
      n = and_list();
    } else {  // {a b c} = a OR b OR c
      std::vector<QueryNode> items;
      for (;;) {
        skip_space();
        if (at_end() || at_close()) break;
        items.push_back(unary());
      }
      if (!items.empty()) n = combine(QueryNode::Kind::Or, std::move(items));
    }
    --depth_;
    skip_space();
    if (at_end() || s_[pos_] != close)
      throw Failure{pos_, std::string("'") + close + "' to close the '" + s_[open] + "' at position " +
                              std::to_string(char_position(open))};
    if (n.kind == QueryNode::Kind::All && n.children.empty() && n.value.empty())
      throw Failure{pos_, "a term inside the brackets"};
    ++pos_;
    return n;
  }

  std::string quoted() {
    size_t open = pos_++;
    auto end = s_.find('"', pos_);
    if (end == std::string_view::npos)
      throw Failure{s_.size(), "'\"' to close the phrase at position " + std::to_string(char_position(open))};
    std::string v(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return v;
  }

  QueryNode term(Field f, std::string value, bool phrase, size_t at) {
    QueryNode n;
    n.kind = QueryNode::Kind::Term;
    n.field = f;
    n.phrase = phrase;
    n.value = std::move(value);
    check_value(n, at);
    return n;
  }

  QueryNode primary() {
    char c = s_[pos_];
    if (c == '(') return group(')');
    if (c == '{') return group('}');
    if (c == '"') {
      size_t at = pos_;
      auto v = quoted();
      return term(context_, std::move(v), true, at);
    }
    size_t start = pos_;
    auto word = peek_word();
    auto colon = word.find(':');
    if (colon != std::string_view::npos && colon > 0) {
      auto name = to_lower(word.substr(0, colon));
      for (auto& f : kFields) {
        if (f.name != name) continue;
        pos_ += colon + 1;
        size_t at = pos_;
        if (at_end() || is_space(s_[pos_]) || s_[pos_] == ')' || s_[pos_] == '}')
          throw Failure{at, "a value after '" + std::string(f.name) + ":'"};
        if (s_[pos_] == '"') return term(f.field, quoted(), true, at);
        if (s_[pos_] == '(' || s_[pos_] == '{') {
          auto saved = context_;
          context_ = f.field;
          auto n = group(s_[pos_] == '(' ? ')' : '}');
          context_ = saved;
          return n;
        }
        auto v = peek_word();
        pos_ += v.size();
        return term(f.field, std::string(v), false, at);
      }
    }
    // A bare word (an unknown "foo:bar" is searched as words, as Gmail does).
    pos_ += word.size();
    return term(context_, std::string(word), false, start);
  }

  // Validates a field's value and fills `number` for dates and sizes.
  void check_value(QueryNode& n, size_t at) {
    auto v = to_lower(n.value);
    switch (n.field) {
      case Field::After:
      case Field::Before:
        if (!parse_day(v, n.number)) throw Failure{at, "a date YYYY/MM/DD or YYYY-MM-DD"};
        break;
      case Field::OlderThan:
      case Field::NewerThan: {
        int64_t age = 0;
        if (!parse_age(v, age)) throw Failure{at, "an age such as 7d, 2m or 1y"};
        n.number = now_ - age;
        break;
      }
      case Field::Larger:
      case Field::Smaller:
        if (!parse_size(v, n.number)) throw Failure{at, "a size such as 500K or 10M"};
        break;
      case Field::Is:
        if (v != "unread" && v != "read" && v != "starred")
          throw Failure{at, "unread, read or starred after 'is:'"};
        n.value = v;
        break;
      case Field::Has:
        if (v != "attachment") throw Failure{at, "attachment after 'has:'"};
        n.value = v;
        break;
      case Field::In:
        if (v.empty()) throw Failure{at, "a folder after 'in:'"};
        break;
      default:
        if (n.value.empty() && n.phrase) throw Failure{at, "words inside the quotes"};
        break;
    }
  }

 public:
  size_t char_position(size_t offset) const {
    size_t chars = 0;
    for (size_t i = 0; i < offset && i < s_.size(); ++i)
      if ((static_cast<unsigned char>(s_[i]) & 0xC0) != 0x80) ++chars;
    return chars + 1;
  }
};

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

}  // namespace

std::string QueryError::message() const {
  return "query error at position " + std::to_string(position) + ": expected " + expected;
}

std::string_view field_name(Field f) {
  if (f == Field::Text) return "text";
  for (auto& n : kFields)
    if (n.field == f) return n.name;
  return "?";
}

bool parse_day(std::string_view s, int64_t& out) {
  char sep = s.size() > 4 ? s[4] : 0;
  if (sep != '/' && sep != '-') return false;
  auto p1 = s.find(sep), p2 = s.find(sep, p1 + 1);
  if (p2 == std::string_view::npos) return false;
  auto ys = s.substr(0, p1), ms = s.substr(p1 + 1, p2 - p1 - 1), ds = s.substr(p2 + 1);
  if (ys.size() != 4 || ms.empty() || ms.size() > 2 || ds.empty() || ds.size() > 2) return false;
  if (!all_digits(ys) || !all_digits(ms) || !all_digits(ds)) return false;
  int y = std::stoi(std::string(ys)), m = std::stoi(std::string(ms)), d = std::stoi(std::string(ds));
  static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 1970 || m < 1 || m > 12 || d < 1 || d > kDays[m - 1]) return false;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (m == 2 && d == 29 && !leap) return false;
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = m - 1;
  tm.tm_mday = d;
  out = static_cast<int64_t>(timegm(&tm));
  return true;
}

bool parse_size(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  int64_t mult = 1;
  char last = s.back();
  if (last == 'k' || last == 'K') mult = 1024, s.remove_suffix(1);
  else if (last == 'm' || last == 'M') mult = 1024 * 1024, s.remove_suffix(1);
  if (!all_digits(s) || s.size() > 12) return false;
  out = std::stoll(std::string(s)) * mult;
  return true;
}

bool parse_age(std::string_view s, int64_t& out) {
  if (s.size() < 2) return false;
  char unit = s.back();
  auto n = s.substr(0, s.size() - 1);
  if (!all_digits(n) || n.size() > 6) return false;
  int64_t days = std::stoll(std::string(n));
  if (unit == 'd') out = days * 86400;
  else if (unit == 'm') out = days * 30 * 86400;
  else if (unit == 'y') out = days * 365 * 86400;
  else return false;
  return true;
}

ParsedQuery parse_query(std::string_view text, int64_t now) {
  ParsedQuery out;
  Parser p(text, now);
  try {
    out.root = p.parse();
  } catch (const Failure& f) {
    out.error = {p.char_position(f.offset), f.expected};
    out.error_text = out.error.message();
  }
  return out;
}

bool names_junk_or_trash(const QueryNode& node) {
  if (node.kind == QueryNode::Kind::Term && node.field == Field::In) {
    auto v = to_lower(node.value);
    return v == "junk" || v == "spam" || v == "trash" || v == "anywhere";
  }
  for (auto& c : node.children)
    if (names_junk_or_trash(c)) return true;
  return false;
}

}  // namespace mk::index
