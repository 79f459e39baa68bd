// The index over real files in a temporary Maildir: threading (out-of-order
// arrival, missing parents, merges, self-references, Sent copies), flag
// letters, renames and moves keeping identity, removal, decoding, and the
// query operators against documents whose answers the table states.
#include <gtest/gtest.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>

#include "index/database.h"
#include "index/prefix.h"
#include "index/readers.h"
#include "index/search.h"
#include "index/sync.h"

namespace mk::index {
namespace {

namespace fs = std::filesystem;

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("mk-index-test-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    maildir_ = root_ / "maildir";
    for (auto f : {"", ".Sent", ".Junk", ".Archive", ".Trash"})
      for (auto sub : {"cur", "new", "tmp"}) fs::create_directories(maildir_ / f / sub);
    db_ = Database::open_writable((root_ / "index").string(), {});
  }
  void TearDown() override {
    db_.reset();
    fs::remove_all(root_);
  }

  // Writes a message into folder/sub with Maildir name N.M<seq>P1Q<seq>.test:2,FLAGS.
  std::string put(const std::string& folder, const std::string& headers, const std::string& body = "body\n",
                  const std::string& flags = "", const std::string& sub = "cur") {
    ++seq_;
    std::string name = std::to_string(1600000000 + seq_) + ".M" + std::to_string(seq_) + "P1Q" + std::to_string(seq_) +
                       ".test" + (sub == "cur" ? ":2," + flags : "");
    auto dir = maildir_ / (folder == "INBOX" ? "" : "." + folder) / sub;
    std::ofstream(dir / name, std::ios::binary) << headers << "\r\n" << body;
    return name.substr(0, name.find(":2,"));
  }

  SyncStats sync() { return sync_maildir(*db_, maildir_.string(), {}); }

  std::string conv(const std::string& base) {
    auto id = db_->find(base);
    return id ? db_->stored(*id).conversation : "";
  }

  std::set<std::string> ids(const std::string& query) {
    SearchRequest r{query, 0, 100000, true, 1700000000};
    auto res = search(*db_, r);
    EXPECT_TRUE(res.ok()) << query << ": " << res.error_text;
    std::set<std::string> out;
    for (auto& m : res.messages) out.insert(m.id);
    return out;
  }

  fs::path root_, maildir_;
  std::unique_ptr<Database> db_;
  int seq_ = 0;
};

TEST_F(IndexTest, RepliesArrivingBeforeTheirParentJoinItsConversation) {
  auto reply = put("INBOX", "Message-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\nSubject: Re: hi\r\n");
  auto reply2 = put("INBOX", "Message-ID: <c@x>\r\nReferences: <a@x> <b@x>\r\nSubject: Re: hi\r\n");
  ASSERT_EQ(sync().added, 2u);
  auto parent = put("INBOX", "Message-ID: <a@x>\r\nSubject: hi\r\n");
  ASSERT_EQ(sync().added, 1u);
  EXPECT_EQ(conv(reply), conv(parent));
  EXPECT_EQ(conv(reply2), conv(parent));
  EXPECT_EQ(db_->message_count(), 3u);  // the ghost of <a@x> is gone
  auto members = conversation_messages(*db_, conv(parent));
  EXPECT_EQ(members.size(), 3u);
}

TEST_F(IndexTest, SiblingsOfAMissingParentShareAConversation) {
  auto a = put("INBOX", "Message-ID: <s1@x>\r\nIn-Reply-To: <never-seen@x>\r\n");
  auto b = put("INBOX", "Message-ID: <s2@x>\r\nReferences: <never-seen@x>\r\n");
  auto other = put("INBOX", "Message-ID: <unrelated@x>\r\n");
  sync();
  EXPECT_EQ(conv(a), conv(b));
  EXPECT_NE(conv(a), conv(other));
  auto res = search(*db_, {"", 0, 50, false, 1700000000});
  EXPECT_EQ(res.conversations.size(), 2u);  // ghosts are never listed
}

TEST_F(IndexTest, AMessageLinkingTwoConversationsMergesThem) {
  auto a = put("INBOX", "Message-ID: <m1@x>\r\n");
  auto b = put("INBOX", "Message-ID: <m2@x>\r\n");
  sync();
  ASSERT_NE(conv(a), conv(b));
  auto c = put("INBOX", "Message-ID: <m3@x>\r\nReferences: <m1@x> <m2@x>\r\n");
  sync();
  EXPECT_EQ(conv(a), conv(b));
  EXPECT_EQ(conv(a), conv(c));
}

TEST_F(IndexTest, SelfReferencesAreIgnored) {
  auto a = put("INBOX", "Message-ID: <self@x>\r\nReferences: <self@x>\r\nIn-Reply-To: <self@x>\r\n");
  auto b = put("INBOX", "Message-ID: <other@x>\r\n");
  sync();
  EXPECT_NE(conv(a), "");
  EXPECT_NE(conv(a), conv(b));
  EXPECT_EQ(db_->message_count(), 2u);
}

TEST_F(IndexTest, TheSentCopyOfAReplyJoinsTheConversation) {
  auto in = put("INBOX", "Message-ID: <q@x>\r\nFrom: Bob <bob@x>\r\nSubject: question\r\n");
  auto sent = put("Sent", "Message-ID: <r@y>\r\nFrom: Alice <alice@example.org>\r\nIn-Reply-To: <q@x>\r\n"
                          "Subject: Re: question\r\n");
  sync();
  EXPECT_EQ(conv(in), conv(sent));
  auto res = search(*db_, {"in:inbox", 0, 50, false, 1700000000});
  ASSERT_EQ(res.conversations.size(), 1u);
  EXPECT_EQ(res.conversations[0].messages, 2u);
  EXPECT_EQ(res.conversations[0].matched, 1u);
  EXPECT_EQ(res.conversations[0].subject, "question");
}

TEST_F(IndexTest, APageCountsMatchedUnreadAndStarredPerConversationWithTheNewestMatchsSnippet) {
  put("INBOX", "Message-ID: <p1@x>\r\nSubject: plan\r\nDate: Mon, 2 Jan 2019 10:00:00 +0000\r\n", "first words\n", "S");
  put("INBOX", "Message-ID: <p2@x>\r\nIn-Reply-To: <p1@x>\r\nDate: Tue, 3 Jan 2019 10:00:00 +0000\r\n",
      "second words\n", "");
  put("Sent", "Message-ID: <p3@x>\r\nIn-Reply-To: <p2@x>\r\nDate: Wed, 4 Jan 2019 10:00:00 +0000\r\n",
      "third words\n", "FS");
  put("INBOX", "Message-ID: <o1@x>\r\nSubject: other\r\nDate: Sun, 1 Jan 2019 10:00:00 +0000\r\n", "read\n", "S");
  sync();
  auto page = [&](const std::string& q) {
    auto res = search(*db_, {q, 0, 50, false, 1700000000});
    EXPECT_TRUE(res.ok()) << res.error_text;
    return res.conversations;
  };
  auto inbox = page("in:inbox");
  ASSERT_EQ(inbox.size(), 2u);
  EXPECT_EQ(inbox[0].subject, "plan");
  EXPECT_EQ(inbox[0].messages, 3u);
  EXPECT_EQ(inbox[0].matched, 2u);
  EXPECT_TRUE(inbox[0].unread) << "p2 is unread";
  EXPECT_FALSE(inbox[0].flagged) << "the starred message is in Sent, which in:inbox does not match";
  EXPECT_NE(inbox[0].snippet.find("second"), std::string::npos) << inbox[0].snippet;
  EXPECT_EQ(inbox[1].matched, 1u);
  EXPECT_FALSE(inbox[1].unread);
  auto all = page("words");
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].matched, 3u);
  EXPECT_TRUE(all[0].flagged);
  EXPECT_NE(all[0].snippet.find("third"), std::string::npos) << all[0].snippet;
  auto starred = page("is:starred");
  ASSERT_EQ(starred.size(), 1u);
  EXPECT_EQ(starred[0].matched, 1u);
  EXPECT_FALSE(starred[0].unread);
}

TEST_F(IndexTest, PooledReadersSeeEveryCommitAndAReplacedIndex) {
  const auto dir = (root_ / "index").string();
  put("INBOX", "Message-ID: <r1@x>\r\n");
  sync();
  db_->commit();
  ReaderPool pool(2, 3);
  {
    auto none = pool.open((root_ / "no-such-index").string(), {});
    EXPECT_FALSE(none);
  }
  {
    auto r = pool.open(dir, {});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->message_count(), 1u);
  }
  EXPECT_EQ(pool.idle(), 1u);
  put("INBOX", "Message-ID: <r2@x>\r\n");
  sync();
  db_->commit();
  {
    auto r = pool.open(dir, {});
    EXPECT_EQ(pool.idle(), 0u) << "the idle reader was lent";
    EXPECT_EQ(r->message_count(), 2u) << "a lent reader is at the newest commit";
  }
  db_->compact();  // a new directory takes the index's place
  put("INBOX", "Message-ID: <r3@x>\r\n");
  sync();
  db_->commit();
  {
    auto r = pool.open(dir, {});
    EXPECT_EQ(r->message_count(), 3u);
    auto found = search(*r, {"rfc822msgid:r3@x", 0, 10, true, 1700000000});
    EXPECT_EQ(found.messages.size(), 1u) << "written after the compaction, through the same writer";
    EXPECT_EQ(search(*r, {"in:inbox", 0, 10, true, 1700000000}).messages.size(), 3u);
  }
  {
    auto a = pool.open(dir, {}), b = pool.open(dir, {}), c = pool.open(dir, {});
    EXPECT_TRUE(a && b && c) << "more leases than idle readers: opened anew";
  }
  EXPECT_EQ(pool.idle(), 2u) << "at most 2 idle per account";
}

TEST_F(IndexTest, FlagRenamesAndMovesKeepIdentityAndLabels) {
  auto base = put("INBOX", "Message-ID: <f@x>\r\nSubject: flags\r\n", "text\n", "", "new");
  sync();
  auto docid = db_->find(base);
  ASSERT_TRUE(docid);
  db_->set_labels(*docid, {"Work"});
  db_->commit();
  EXPECT_EQ(ids("is:unread"), std::set<std::string>{base});
  // Dovecot: new/ → cur/ with flags, then a move to Archive.
  fs::rename(maildir_ / "new" / base, maildir_ / "cur" / (base + ":2,FS"));
  auto st = sync();
  EXPECT_EQ(st.updated, 1u);
  EXPECT_EQ(st.added, 0u);
  EXPECT_EQ(db_->find(base), docid);
  EXPECT_EQ(ids("is:read is:starred"), std::set<std::string>{base});
  EXPECT_TRUE(ids("is:unread").empty());
  fs::rename(maildir_ / "cur" / (base + ":2,FS"), maildir_ / ".Archive" / "cur" / (base + ":2,FS"));
  sync();
  EXPECT_EQ(ids("in:archive label:work"), std::set<std::string>{base});
  EXPECT_TRUE(ids("in:inbox").empty());
  EXPECT_EQ(db_->stored(*db_->find(base)).file.rel_path(), ".Archive/cur/" + base + ":2,FS");
  // Trash is left out unless named.
  fs::rename(maildir_ / ".Archive" / "cur" / (base + ":2,FS"), maildir_ / ".Trash" / "cur" / (base + ":2,FS"));
  sync();
  EXPECT_TRUE(ids("flags").empty());
  EXPECT_EQ(ids("flags in:trash"), std::set<std::string>{base});
  EXPECT_EQ(ids("flags in:anywhere"), std::set<std::string>{base});
  // Deleted: gone from the index.
  fs::remove(maildir_ / ".Trash" / "cur" / (base + ":2,FS"));
  EXPECT_EQ(sync().removed, 1u);
  EXPECT_FALSE(db_->find(base));
}

// The mailbox list's counts (a search with no page): exact, where Xapian's
// estimates of a conjunction are not; following flag changes; the same in an
// index of the older format (no unread term: "not seen").
TEST_F(IndexTest, CountsAreExactAndFollowFlagChanges) {
  std::vector<std::string> unread_inbox;
  for (int i = 0; i < 30; ++i) {
    auto mid = "<c" + std::to_string(i) + "@test>";
    auto base = put("INBOX", "Message-ID: " + mid + "\r\nSubject: c\r\n", "body\n", i % 3 == 0 ? "S" : "");
    if (i % 3 != 0) unread_inbox.push_back(base);
  }
  for (int i = 0; i < 5; ++i) put("Junk", "Message-ID: <j" + std::to_string(i) + "@test>\r\n");
  for (int i = 0; i < 3; ++i) put("Archive", "Message-ID: <a" + std::to_string(i) + "@test>\r\n", "body\n", "F");
  // A reply to a message never seen: its parent is a ghost, which no count includes.
  put("Archive", "Message-ID: <r@test>\r\nIn-Reply-To: <nowhere@test>\r\n", "body\n", "S");
  sync();
  auto count = [&](const std::string& q) {
    SearchRequest r{q, 0, 0, true, 1700000000};
    auto res = search(*db_, r);
    EXPECT_TRUE(res.ok()) << res.error_text;
    EXPECT_TRUE(res.total_exact) << q;
    return res.total;
  };
  for (const char* format : {prefix::kFormat, ""}) {
    db_->set_metadata(prefix::kFormatKey, format);
    SCOPED_TRACE(*format ? "current format" : "older format");
    EXPECT_EQ(count("in:inbox"), 30u);
    EXPECT_EQ(count("in:inbox is:unread"), 20u);
    EXPECT_EQ(count("is:unread"), 23u) << "Junk is left out";
    EXPECT_EQ(count("in:anywhere is:unread"), 28u);
    EXPECT_EQ(count("in:junk is:unread"), 5u);
    EXPECT_EQ(count(""), 34u) << "All Mail: not Junk, not the ghost";
    EXPECT_EQ(count("in:anywhere"), 39u);
    EXPECT_EQ(count("is:starred"), 3u);
    EXPECT_EQ(count("is:starred is:unread"), 3u);
    EXPECT_EQ(count("rfc822msgid:nowhere@test"), 0u);
  }
  db_->set_metadata(prefix::kFormatKey, prefix::kFormat);
  // Read in a mail client: the file is renamed with S; the count follows.
  auto cur = maildir_ / "cur";
  for (auto& e : fs::directory_iterator(cur))
    if (e.path().filename().string().starts_with(unread_inbox.front())) fs::rename(e.path(), e.path().string() + "S");
  sync();
  EXPECT_EQ(count("in:inbox is:unread"), 19u);
  EXPECT_EQ(count("is:unread"), 22u);
}

TEST_F(IndexTest, AnUnchangedMaildirIsNotReadAgain) {
  put("INBOX", "Message-ID: <u@x>\r\n");
  sync();
  // Directory mtimes within the last seconds are not trusted; age them.
  auto old = fs::file_time_type::clock::now() - std::chrono::hours(1);
  for (auto f : {"", ".Sent", ".Junk", ".Archive", ".Trash"})
    for (auto sub : {"cur", "new"}) fs::last_write_time(maildir_ / f / sub, old);
  auto first = sync();
  EXPECT_EQ(first.unchanged, 1u);  // read once more to record the aged mtimes
  auto second = sync();
  EXPECT_EQ(second.unchanged + second.added + second.updated + second.removed, 0u);
}

TEST_F(IndexTest, OperatorsReachTheRightFields) {
  auto a = put("INBOX",
               "Message-ID: <op1@x>\r\nFrom: Bob Smith <Bob@Example.COM>\r\nTo: alice@example.org\r\n"
               "Cc: Carol <carol@c.example>\r\nSubject: Quarterly reports\r\nDate: Tue, 15 Jan 2019 10:00:00 +0000\r\n"
               "List-Id: Robots <robots.lists.example>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=b\r\n",
               "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nthe quarterly report is attached\r\n"
               "--b\r\nContent-Type: application/pdf; name=\"q4.pdf\"\r\nContent-Disposition: attachment; "
               "filename=\"q4.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n",
               "S");
  auto b = put("INBOX",
               "Message-ID: <op2@x>\r\nFrom: =?utf-8?q?Ren=C3=A9e?= <renee@fr.example>\r\nTo: bob@example.com\r\n"
               "Subject: =?iso-8859-1?q?caf=E9_au_lait?=\r\nDate: Mon, 01 Jun 2015 08:00:00 +0000\r\n"
               "Content-Type: text/html; charset=utf-8\r\n",
               "<html><head><style>p{}</style><script>var hidden=1</script></head><body><p>Report of the "
               "日本語 meeting</p></body></html>\r\n",
               "FS");
  auto junk = put("Junk", "Message-ID: <op3@x>\r\nFrom: spammer@bad.example\r\nSubject: quarterly cash\r\n"
                          "Date: Mon, 01 Jun 2015 08:00:00 +0000\r\n");
  sync();
  using S = std::set<std::string>;
  const std::pair<const char*, S> cases[] = {
      {"from:bob", {a}},
      {"from:bob@example.com", {a}},
      {"from:BOB@EXAMPLE.COM", {a}},
      {"from:smith", {a}},
      {"to:alice@example.org", {a}},
      {"to:carol", {a}},  // to: covers Cc
      {"cc:carol", {a}},
      {"cc:alice", {}},
      {"to:bob", {b}},
      {"subject:report", {a}},  // stemming: reports → report
      {"subject:reports", {a}},
      {"quarterly", {a}},  // Junk left out
      {"quarterly in:junk", {junk}},
      {"\"quarterly report\"", {a}},
      {"\"report quarterly\"", {}},
      {"has:attachment", {a}},
      {"-has:attachment", {b}},
      {"filename:pdf", {a}},
      {"filename:q4.pdf", {a}},
      {"list:robots.lists.example", {a}},
      {"list:robots", {a}},
      {"rfc822msgid:op2@x", {b}},
      {"rfc822msgid:<op2@x>", {b}},
      {"after:2019/01/15", {a}},
      {"after:2019/01/16", {}},
      {"before:2019/01/15", {b}},
      {"after:2015/01/01 before:2019-01-01", {b}},
      {"subject:café", {b}},
      {"from:renée", {b}},
      {"meeting", {b}},
      {"hidden", {}},  // script text is not mail text
      {"日本", {b}},    // CJK n-grams
      {"is:starred", {b}},
      {"is:unread", {}},
      {"is:read", {a, b}},
      {"{bob renée}", {a, b}},
      {"report OR meeting", {a, b}},
      {"(report OR meeting) -from:bob", {b}},
      {"larger:100", {a, b}},
      {"smaller:100", {}},
      {"in:anywhere quarterly", {a, junk}},
  };
  for (auto& [q, want] : cases) EXPECT_EQ(ids(q), want) << "query: " << q;
}

TEST_F(IndexTest, DatesFallBackToArrivalWhenMissingOrAbsurd) {
  EXPECT_EQ(effective_date(0, 1600000000), 1600000000);
  EXPECT_EQ(effective_date(100, 1600000000), 1600000000);                // 1970
  EXPECT_EQ(effective_date(1600000000 + 2 * 86400, 1600000000), 1600000000);  // in the future
  EXPECT_EQ(effective_date(1500000000, 1600000000), 1500000000);
  auto base = put("INBOX", "Message-ID: <d@x>\r\nDate: not a date\r\n");
  sync();
  EXPECT_EQ(db_->stored(*db_->find(base)).date, 1600000000 + seq_);
}

// Search looks for the newest page in widening date windows (search.cpp):
// the pages must be those of a plain sort of every match, for conversations
// spread over years, with gaps, at any offset.
TEST_F(IndexTest, WindowedNewestFirstPagesEqualTheFullSort) {
  const int64_t now = 1599000000;  // before the files arrive (put() names them 1600000000+): a later Date is absurd
  // 3,600 messages (above the size below which search sorts at once): most of them years
  // old, a few in the newest weeks, some in threads whose newest reply is recent.
  for (int i = 0; i < 3600; ++i) {
    int64_t age = i < 40 ? int64_t(i) * 3600 * 7 : int64_t(i) * 86400 + 40 * 86400;
    int64_t date = now - age;
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", [&] {
      static struct tm tm;
      time_t t = date;
      gmtime_r(&t, &tm);
      return &tm;
    }());
    std::string mid = "<m" + std::to_string(i) + "@test>";
    std::string headers = "From: a@example.org\r\nTo: b@example.org\r\nSubject: s" + std::to_string(i) +
                          "\r\nMessage-ID: " + mid + "\r\nDate: " + buf + "\r\n";
    // Every 10th old message is a reply to a recent one: its conversation's newest is the recent one.
    if (i >= 40 && i % 10 == 0) headers += "In-Reply-To: <m" + std::to_string(i % 40) + "@test>\r\n";
    put("INBOX", headers);
  }
  sync();
  auto page = [&](const std::string& query, size_t offset, size_t limit, bool messages) {
    SearchRequest r{query, offset, limit, messages, now};
    auto res = search(*db_, r);
    EXPECT_TRUE(res.ok()) << res.error_text;
    std::vector<std::string> out;
    if (messages)
      for (auto& m : res.messages) out.push_back(m.id);
    else
      for (auto& c : res.conversations) out.push_back(c.id);
    return out;
  };
  // A new index has month terms (windows from the first of a month); one
  // written by an older build has not (windows filtered by the date slot).
  EXPECT_EQ(db_->metadata(prefix::kFormatKey), prefix::kFormat);
  // older_than: bounds the matches above: its windows start at that bound.
  for (std::string query : {"in:inbox", "in:inbox older_than:100d"}) {
    // The reference: one page holding everything (sorted at once, no window can hold it).
    auto all_messages = page(query, 0, 100000, true);
    auto all_conversations = page(query, 0, 100000, false);
    ASSERT_GT(all_messages.size(), 3000u) << query;
    ASSERT_LT(all_conversations.size(), all_messages.size()) << query;
    for (const char* months : {prefix::kFormat, ""}) {
      db_->set_metadata(prefix::kFormatKey, months);
      for (size_t offset : {0, 10, 35, 50, 200, 3000}) {
        for (bool messages : {true, false}) {
          auto& all = messages ? all_messages : all_conversations;
          auto got = page(query, offset, 50, messages);
          std::vector<std::string> want(all.begin() + std::min(offset, all.size()),
                                        all.begin() + std::min(offset + 50, all.size()));
          EXPECT_EQ(got, want) << query << ": offset " << offset << (messages ? " messages" : " conversations")
                               << (*months ? " month terms" : " date slot");
        }
      }
    }
    db_->set_metadata(prefix::kFormatKey, prefix::kFormat);
  }
  SearchRequest r{"in:inbox", 0, 50, false, now};
  auto res = search(*db_, r);
  EXPECT_GT(res.total, 50u);
  ASSERT_FALSE(res.conversations.empty());
  EXPECT_EQ(res.conversations.front().date, now) << "the dates are the Date headers'";
  EXPECT_FALSE(res.total_exact) << "a windowed page counts by estimate";
}

TEST(MessageFileTest, FlagLettersAndPaths) {
  MessageFile f{"Sent", "cur", "1.M2P3.host,S=10:2,SRF"};
  EXPECT_EQ(f.base(), "1.M2P3.host,S=10");
  EXPECT_EQ(f.flags(), "FRS");
  EXPECT_EQ(f.rel_path(), ".Sent/cur/1.M2P3.host,S=10:2,SRF");
  EXPECT_EQ(f.arrival(), 1);
  MessageFile g{"INBOX", "new", "1600000000.x"};
  EXPECT_EQ(g.flags(), "");
  EXPECT_EQ(g.rel_path(), "new/1600000000.x");
  auto parsed = message_file_from_rel(".Archive/cur/a:2,S");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->folder, "Archive");
  EXPECT_FALSE(message_file_from_rel("../x/cur/a"));
  EXPECT_FALSE(message_file_from_rel("tmp/a"));
}

TEST(CleanUtf8, ReplacesInvalidSequencesAndCutsOnBoundaries) {
  EXPECT_EQ(clean_utf8("ok", 10), "ok");
  EXPECT_EQ(clean_utf8("a\xff" "b", 10), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(clean_utf8("\xC3\xA9\xC3\xA9", 3), "\xC3\xA9");
  EXPECT_EQ(clean_utf8(std::string("a\0b", 3), 10), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(clean_utf8("\xED\xA0\x80", 10), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
}

}  // namespace
}  // namespace mk::index
