// strings_test.cpp — the small string helpers.
#include "core/strings.h"

#include <gtest/gtest.h>

namespace mk {
namespace {

TEST(Strings, SplitListTrimsAndDropsEmpty) {
  EXPECT_EQ(split_list(" a, b ,,c "), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(split_list("  ").empty());
  EXPECT_EQ(split_list("x y", ' '), (std::vector<std::string>{"x", "y"}));
}

TEST(Strings, CaseInsensitive) {
  EXPECT_TRUE(iequals("Example.ORG", "example.org"));
  EXPECT_FALSE(iequals("example.org", "example.or"));
  EXPECT_TRUE(istarts_with("mail FROM:<>", "MAIL"));
  EXPECT_EQ(to_lower("MiXeD"), "mixed");
}

}  // namespace
}  // namespace mk
