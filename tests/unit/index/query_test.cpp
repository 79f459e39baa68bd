// Table-driven tests of the Gmail query parser: every operator, quoting,
// negation, grouping, precedence, and the positions of errors.
#include <gtest/gtest.h>

#include "index/query.h"

namespace mk::index {
namespace {

// A compact rendering of the tree: AND(…) OR(…) NOT(…) field:value field:"phrase".
std::string show(const QueryNode& n) {
  using K = QueryNode::Kind;
  auto list = [&](const char* name) {
    std::string s = std::string(name) + "(";
    for (size_t i = 0; i < n.children.size(); ++i) s += (i ? " " : "") + show(n.children[i]);
    return s + ")";
  };
  switch (n.kind) {
    case K::All:
      return "ALL";
    case K::And:
      return list("AND");
    case K::Or:
      return list("OR");
    case K::Not:
      return list("NOT");
    case K::Term: {
      std::string v = n.phrase ? "\"" + n.value + "\"" : n.value;
      if (n.field == Field::Text) return v;
      std::string s = std::string(field_name(n.field)) + ":" + v;
      if (n.number) s += "=" + std::to_string(n.number);
      return s;
    }
  }
  return "?";
}

constexpr int64_t kNow = 1700000000;

struct Case {
  const char* query;
  const char* want;
};

TEST(Query, ParsesEveryOperator) {
  const Case cases[] = {
      {"", "ALL"},
      {"   ", "ALL"},
      {"hello", "hello"},
      {"hello world", "AND(hello world)"},
      {"\"quarterly report\"", "\"quarterly report\""},
      {"from:bob", "from:bob"},
      {"FROM:bob", "from:bob"},
      {"from:bob@example.com", "from:bob@example.com"},
      {"to:alice cc:carol bcc:dave", "AND(to:alice cc:carol bcc:dave)"},
      {"subject:dinner", "subject:dinner"},
      {"subject:\"dinner and a movie\"", "subject:\"dinner and a movie\""},
      {"subject:(dinner movie)", "AND(subject:dinner subject:movie)"},
      {"label:work", "label:work"},
      {"in:inbox in:anywhere in:Lists.Robots", "AND(in:inbox in:anywhere in:Lists.Robots)"},
      {"is:unread is:READ is:starred", "AND(is:unread is:read is:starred)"},
      {"has:attachment", "has:attachment"},
      {"filename:pdf filename:report.pdf", "AND(filename:pdf filename:report.pdf)"},
      {"list:fork.xent.com", "list:fork.xent.com"},
      {"rfc822msgid:<abc@x.example>", "rfc822msgid:<abc@x.example>"},
      {"after:2019/01/01", "after:2019/01/01=1546300800"},
      {"before:2019-01-02", "before:2019-01-02=1546387200"},
      {"older_than:7d", "older_than:7d=1699395200"},
      {"newer_than:2m", "newer_than:2m=1694816000"},
      {"newer_than:1y", "newer_than:1y=1668464000"},
      {"larger:500K smaller:10M", "AND(larger:500K=512000 smaller:10M=10485760)"},
      {"larger:1000", "larger:1000=1000"},
      {"a OR b", "OR(a b)"},
      {"a OR b OR c", "OR(a b c)"},
      // OR binds tighter than juxtaposition, as in Gmail.
      {"a b OR c d", "AND(a OR(b c) d)"},
      {"{a b c}", "OR(a b c)"},
      {"from:{bob alice}", "OR(from:bob from:alice)"},
      {"-spam", "NOT(spam)"},
      {"-from:bob x", "AND(NOT(from:bob) x)"},
      {"--x", "NOT(NOT(x))"},
      {"(a OR b) -(c d)", "AND(OR(a b) NOT(AND(c d)))"},
      {"a AND b", "AND(a b)"},
      {"or and", "AND(or and)"},  // only upper-case OR/AND are operators
      {"foo:bar", "foo:bar"},      // an unknown operator is searched as words
      {"from:bob has:attachment after:2019/01/01 \"quarterly report\"",
       "AND(from:bob has:attachment after:2019/01/01=1546300800 \"quarterly report\")"},
      {"café 日本語", "AND(café 日本語)"},
  };
  for (auto& c : cases) {
    auto p = parse_query(c.query, kNow);
    ASSERT_TRUE(p.ok()) << "query: " << c.query << "\nerror: " << p.error_text;
    EXPECT_EQ(show(p.root), c.want) << "query: " << c.query;
  }
}

struct ErrorCase {
  const char* query;
  size_t position;
  const char* expected_fragment;
};

TEST(Query, ErrorsNamePositionAndWhatWasExpected) {
  const ErrorCase cases[] = {
      {"from:", 6, "a value after 'from:'"},
      {"from: bob", 6, "a value after 'from:'"},
      {"(a b", 5, "')' to close the '(' at position 1"},
      {"x {a b", 7, "'}' to close the '{' at position 3"},
      {"a OR", 5, "a term after OR"},
      {"OR a", 1, "a term before OR"},
      {"a OR OR b", 6, "a term after OR"},
      {"a)", 2, "unmatched ')'"},
      {"()", 2, "a term inside the brackets"},
      {"after:2019/13/45", 7, "a date YYYY/MM/DD"},
      {"before:yesterday", 8, "a date"},
      {"after:2019/02/29", 7, "a date"},
      {"larger:12Q", 8, "a size such as 500K or 10M"},
      {"older_than:7w", 12, "an age such as 7d"},
      {"is:important", 4, "unread, read or starred"},
      {"has:drive", 5, "attachment after 'has:'"},
      {"\"unclosed", 10, "'\"' to close the phrase at position 1"},
      {"a -", 4, "a term after '-'"},
      {"AND a", 1, "a term on both sides of AND"},
      {"日本 from:", 9, "a value after 'from:'"},  // positions count characters, not bytes
  };
  for (auto& c : cases) {
    auto p = parse_query(c.query, kNow);
    ASSERT_FALSE(p.ok()) << "query: " << c.query << " parsed as " << show(p.root);
    EXPECT_EQ(p.error.position, c.position) << "query: " << c.query << "\n" << p.error_text;
    EXPECT_NE(p.error.expected.find(c.expected_fragment), std::string::npos)
        << "query: " << c.query << "\ngot: " << p.error_text;
    EXPECT_EQ(p.error_text.rfind("query error at position " + std::to_string(p.error.position) + ": expected ", 0), 0u);
  }
}

TEST(Query, DeepNestingIsAnErrorNotACrash) {
  std::string q(5000, '(');
  auto p = parse_query(q, kNow);
  EXPECT_FALSE(p.ok());
  std::string neg(100000, '-');
  neg += "x";
  auto n = parse_query(neg, kNow);  // iterative enough not to overflow the stack
  EXPECT_FALSE(n.ok());
}

TEST(Query, JunkAndTrashOnlyWhenNamed) {
  const std::pair<const char*, bool> cases[] = {
      {"hello", false},       {"in:inbox", false},        {"in:junk", true},   {"in:spam", true},
      {"in:trash", true},     {"in:anywhere x", true},    {"-in:trash", true}, {"a OR in:Junk", true},
      {"label:junk", false},
  };
  for (auto& [q, want] : cases) EXPECT_EQ(names_junk_or_trash(parse_query(q, kNow).root), want) << q;
}

TEST(Query, DaysSizesAges) {
  int64_t v = 0;
  EXPECT_TRUE(parse_day("1970/01/01", v));
  EXPECT_EQ(v, 0);
  EXPECT_TRUE(parse_day("2024-02-29", v));
  EXPECT_FALSE(parse_day("2023-02-29", v));
  EXPECT_FALSE(parse_day("2023/1/", v));
  EXPECT_FALSE(parse_day("2023.01.01", v));
  EXPECT_FALSE(parse_day("1969/12/31", v));
  EXPECT_TRUE(parse_size("0", v));
  EXPECT_TRUE(parse_size("2k", v));
  EXPECT_EQ(v, 2048);
  EXPECT_FALSE(parse_size("K", v));
  EXPECT_FALSE(parse_size("1.5M", v));
  EXPECT_FALSE(parse_size("99999999999999M", v));
  EXPECT_TRUE(parse_age("30d", v));
  EXPECT_EQ(v, 30 * 86400);
  EXPECT_FALSE(parse_age("d", v));
  EXPECT_FALSE(parse_age("-1d", v));
}

}  // namespace
}  // namespace mk::index
