// replay_test.cpp — the standalone journal and `backup replay` against a
// scripted upstream: what is selected, what is marked done, what stays.
#include "replay/replay.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

namespace mk::replay {
namespace {

namespace fs = std::filesystem;
using smtp::Reply;

struct Sent {
  std::string sender, recipient, bytes;
};

class ScriptedUpstream final : public delivery::Upstream {
 public:
  ScriptedUpstream(std::vector<Sent>& sent, std::map<std::string, Reply>& replies) : sent_(sent), replies_(replies) {}
  smtp::awaitable<Reply> mail(const smtp::Mailbox& s, const smtp::MailParams&) override {
    cur_ = Sent{s.address(), "", ""};
    co_return Reply{250, "2.1.0", "Ok"};
  }
  smtp::awaitable<Reply> rcpt(const smtp::Mailbox& r) override {
    cur_.recipient = r.address();
    auto it = replies_.find(r.address());
    co_return it == replies_.end() ? Reply{250, "2.1.5", "Ok"} : it->second;
  }
  smtp::awaitable<Reply> data(const delivery::MessageBody& body) override {
    std::string b(body.content->size(), '\0');
    body.content->read_at(0, b.data(), b.size());
    cur_.bytes = body.prefix + b;
    sent_.push_back(cur_);
    co_return Reply{250, "2.0.0", "Ok"};
  }
  smtp::awaitable<bool> reset() override { co_return true; }
  smtp::awaitable<void> quit() override { co_return; }
  void abort() override {}
  std::string peer_name() const override { return "scripted"; }

 private:
  std::vector<Sent>& sent_;
  std::map<std::string, Reply>& replies_;
  Sent cur_;
};

class Factory final : public delivery::UpstreamFactory {
 public:
  std::vector<Sent> sent;
  std::map<std::string, Reply> replies;
  std::unique_ptr<delivery::Upstream> create(boost::asio::any_io_executor) override {
    return std::make_unique<ScriptedUpstream>(sent, replies);
  }
};

struct Journal {
  std::string dir = (fs::path(::testing::TempDir()) / ("journal" + std::to_string(::getpid()))).string();
  Journal() {
    fs::remove_all(dir);
    for (auto sub : {"tmp", "new", "cur"}) fs::create_directories(dir + "/" + sub);
  }
  void add(int64_t time, const std::string& from, const std::string& to, const std::string& body) {
    std::ofstream(dir + "/new/" + std::to_string(time) + ".M1P1Q" + std::to_string(++seq) + ".host,S=1")
        << "Return-Path: <" << from << ">\r\nX-Original-To: <" << to << ">\r\n" << body;
  }
  size_t count(const char* sub) const {
    return size_t(std::distance(fs::directory_iterator(dir + "/" + sub), fs::directory_iterator{}));
  }
  int seq = 0;
};

TEST(Replay, SendsOnceOldestFirstAndMarksDone) {
  Journal j;
  j.add(2000, "b@x.test", "alice@example.org", "Subject: two\r\n\r\n2\r\n");
  j.add(1000, "", "Bob@example.org", "Subject: one\r\n\r\n1\r\n");
  std::ofstream(j.dir + "/new/1500.foreign") << "not ours\r\n";
  Factory f;
  ReplayOptions o{j.dir};
  auto r = replay(o, f);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.selected, 2u);
  EXPECT_EQ(r.sent, 2u);
  ASSERT_EQ(f.sent.size(), 2u);
  EXPECT_EQ(f.sent[0].sender, "");
  EXPECT_EQ(f.sent[0].recipient, "Bob@example.org");
  EXPECT_EQ(f.sent[0].bytes, "Subject: one\r\n\r\n1\r\n") << "the envelope lines are not sent";
  EXPECT_EQ(f.sent[1].bytes, "Subject: two\r\n\r\n2\r\n");
  EXPECT_EQ(j.count("cur"), 2u);
  EXPECT_EQ(j.count("new"), 1u) << "the foreign file stays";
  for (auto& e : fs::directory_iterator(j.dir + "/cur")) EXPECT_TRUE(e.path().string().ends_with(":2,S"));
  // A second replay has nothing to send.
  auto again = replay(o, f);
  EXPECT_EQ(again.selected, 0u);
  EXPECT_EQ(f.sent.size(), 2u);
}

TEST(Replay, FiltersByUserAndDay) {
  Journal j;
  j.add(1000, "s@x.test", "alice@example.org", "a\r\n");
  j.add(90000, "s@x.test", "alice@example.org", "b\r\n");
  j.add(90001, "s@x.test", "bob@example.org", "c\r\n");
  std::string err;
  ReplayOptions o{j.dir};
  o.user = "alice@example.org";
  EXPECT_EQ(pending_entries(o, err).size(), 2u);
  o.since = 86400;
  auto e = pending_entries(o, err);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].time, 90000);
  o.dry_run = true;
  Factory f;
  EXPECT_EQ(replay(o, f).selected, 1u);
  EXPECT_TRUE(f.sent.empty()) << "a dry run sends nothing";
  EXPECT_EQ(j.count("new"), 3u);
}

TEST(Replay, RefusedStaysDeferredStops) {
  Journal j;
  j.add(1, "s@x.test", "refused@example.org", "a\r\n");
  j.add(2, "s@x.test", "ok@example.org", "b\r\n");
  j.add(3, "s@x.test", "later@example.org", "c\r\n");
  j.add(4, "s@x.test", "ok@example.org", "d\r\n");
  Factory f;
  f.replies["refused@example.org"] = Reply{550, "5.1.1", "no such user"};
  f.replies["later@example.org"] = Reply{451, "4.3.0", "try later"};
  auto r = replay(ReplayOptions{j.dir}, f);
  EXPECT_EQ(r.sent, 1u);
  EXPECT_EQ(r.failed, 1u);
  EXPECT_TRUE(r.deferred);
  EXPECT_EQ(r.failures.size(), 2u);
  EXPECT_EQ(j.count("new"), 3u) << "the refused, the deferred and the one after it";
  f.replies.clear();
  auto again = replay(ReplayOptions{j.dir}, f);
  EXPECT_EQ(again.sent, 3u);
  EXPECT_EQ(f.sent.size(), 4u);
}

TEST(Replay, StopFlagEndsBeforeTheNextMessage) {
  Journal j;
  for (int i = 0; i < 5; ++i) j.add(i, "s@x.test", "a@example.org", "m\r\n");
  std::atomic<bool> stop{false};
  Factory f;
  ReplayOptions o{j.dir};
  o.stop = &stop;
  o.progress = [&](size_t done, size_t, const JournalEntry&, const Reply&) {
    if (done == 2) stop = true;
  };
  auto r = replay(o, f);
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.sent, 2u);
  EXPECT_EQ(j.count("new"), 3u);
}

}  // namespace
}  // namespace mk::replay
