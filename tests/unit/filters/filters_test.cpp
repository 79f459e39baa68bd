// filters_test.cpp — Gmail's mailFilters.xml in and out, criteria as queries,
// and filters meeting new mail in a real Maildir and index.
#include "filters/filters.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "index/search.h"
#include "index/sync.h"

namespace mk::filters {
namespace {

namespace fs = std::filesystem;

// The shape Gmail exports (Settings → Filters and Blocked Addresses → Export).
const char* kGmailExport = R"(<?xml version='1.0' encoding='UTF-8'?><feed xmlns='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>
	<title>Mail Filters</title>
	<id>tag:mail.google.com,2008:filters:z0000001687388898000*1234567890123456789</id>
	<updated>2026-11-30T10:00:00Z</updated>
	<author>
		<name>Alice</name>
		<email>alice@example.org</email>
	</author>
	<entry>
		<category term='filter'></category>
		<title>Mail Filter</title>
		<id>tag:mail.google.com,2008:filter:z0000001687388898000*1234567890123456789</id>
		<updated>2026-11-30T10:00:00Z</updated>
		<content></content>
		<apps:property name='from' value='svn@build.example.org'/>
		<apps:property name='label' value='SVN commits'/>
		<apps:property name='shouldArchive' value='true'/>
		<apps:property name='sizeOperator' value='s_sl'/>
		<apps:property name='sizeUnit' value='s_smb'/>
	</entry>
	<entry>
		<category term='filter'></category>
		<title>Mail Filter</title>
		<id>tag:mail.google.com,2008:filter:z0000001687388898001*2</id>
		<updated>2026-11-30T10:00:00Z</updated>
		<content></content>
		<apps:property name='hasTheWord' value='invoice OR receipt'/>
		<apps:property name='doesNotHaveTheWord' value='newsletter'/>
		<apps:property name='hasAttachment' value='true'/>
		<apps:property name='shouldStar' value='true'/>
		<apps:property name='shouldNeverSpam' value='true'/>
	</entry>
</feed>)";

TEST(Filters, ReadsGmailsExportAndWritesItBack) {
  auto list = parse_filters(kGmailExport);
  ASSERT_EQ(list.error, "");
  ASSERT_EQ(list.filters.size(), 2u);
  auto& svn = list.filters[0];
  EXPECT_EQ(svn.query(), "from:(svn@build.example.org)");
  EXPECT_EQ(svn.actions(), "label=SVN commits skip-inbox");
  EXPECT_EQ(svn.other.size(), 2u) << "size criteria are kept, not acted on";
  auto& inv = list.filters[1];
  EXPECT_EQ(inv.query(), "(invoice OR receipt) -{newsletter} has:attachment");
  EXPECT_EQ(inv.actions(), "star never-spam");
  EXPECT_NE(svn.id, inv.id);
  auto again = parse_filters(format_filters(list.filters));
  ASSERT_EQ(again.error, "");
  ASSERT_EQ(again.filters.size(), 2u);
  EXPECT_EQ(again.filters[0].query(), svn.query());
  EXPECT_EQ(again.filters[0].label, "SVN commits");
  EXPECT_EQ(again.filters[1].actions(), inv.actions());
  EXPECT_EQ(again.filters[0].other, svn.other);
}

TEST(Filters, RefusesBrokenFiles) {
  EXPECT_NE(parse_filters("<feed><entry>").error, "");
  EXPECT_NE(parse_filters("not xml at all <").error, "");
  EXPECT_NE(parse_filters("<feed><entry><apps:property name='label' value='x'/></entry></feed>").error, "")
      << "a filter without criteria";
  EXPECT_EQ(parse_filters("<feed></feed>").filters.size(), 0u);
  auto escaped = parse_filters("<feed><entry><apps:property name='subject' value='a &amp; &quot;b&quot; &lt;c&gt;'/>"
                               "<apps:property name='label' value='x'/></entry></feed>");
  ASSERT_EQ(escaped.filters.size(), 1u);
  EXPECT_EQ(escaped.filters[0].subject, "a & \"b\" <c>");
  EXPECT_EQ(parse_filters(format_filters(escaped.filters)).filters[0].subject, "a & \"b\" <c>");
}

TEST(Filters, MeetNewMailOnly) {
  auto root = fs::temp_directory_path() / ("mk-filters-" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto maildir = root / "maildir";
  for (auto f : {"", ".Archive"})
    for (auto sub : {"cur", "new", "tmp"}) fs::create_directories(maildir / f / sub);
  auto put = [&](int n, const std::string& from) {
    auto name = std::to_string(1700000000 + n) + ".M1P1Q" + std::to_string(n) + ".test";
    std::ofstream(maildir / "new" / name) << "From: " << from << "\r\nSubject: m" << n << "\r\nMessage-ID: <" << n
                                          << "@x>\r\n\r\nbody\r\n";
    return name;
  };
  auto old_robot = put(1, "robot@ci.test");
  auto new_robot = put(2, "robot@ci.test");
  auto new_human = put(3, "human@x.test");
  auto db = index::Database::open_writable((root / "index").string(), {});
  index::sync_maildir(*db, maildir.string(), {});
  Filter f;
  f.from = "robot@ci.test";
  f.label = "Builds";
  f.skip_inbox = true;
  f.mark_read = true;
  auto st = apply_to_new(*db, maildir.string(), {f}, {new_robot, new_human}, 1800000000);
  EXPECT_TRUE(st.errors.empty()) << st.errors[0];
  EXPECT_EQ(st.matched, 1u);
  EXPECT_EQ(st.moved, 1u);
  EXPECT_TRUE(fs::exists(maildir / "new" / old_robot)) << "old mail is left alone";
  EXPECT_TRUE(fs::exists(maildir / "new" / new_human));
  EXPECT_TRUE(fs::exists(maildir / ".Archive/cur" / (new_robot + ":2,S")));
  index::SearchRequest r{"label:builds", 0, 10, true, 1800000000};
  EXPECT_EQ(index::search(*db, r).messages.size(), 1u);
  auto all = apply_to_existing(*db, maildir.string(), f, 1800000000);
  EXPECT_EQ(all.moved, 1u) << "the old robot message, on request";
  // Saved and loaded as the account's file.
  ASSERT_EQ(save_filters((root / "index").string(), {f}), "");
  auto loaded = load_filters((root / "index").string());
  ASSERT_EQ(loaded.filters.size(), 1u);
  EXPECT_EQ(loaded.filters[0].actions(), "label=Builds skip-inbox mark-read");
  db.reset();
  fs::remove_all(root);
}

}  // namespace
}  // namespace mk::filters
