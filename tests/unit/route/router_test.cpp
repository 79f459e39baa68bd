// router_test.cpp — relay decisions, including the classic open-relay tricks.
#include "route/router.h"

#include <gtest/gtest.h>

#include <ctime>
#include <fstream>

namespace mk::route {
namespace {

smtp::Mailbox rcpt(const std::string& arg) {
  auto p = smtp::parse_path_argument("TO:<" + arg + ">", "TO", false);
  EXPECT_TRUE(p.ok()) << arg << ": " << p.error;
  return p.mailbox;
}

TEST(Router, RelayDecisionTable) {
  auto r = load_settings_text("[relay]\ndomains = example.org\nrelay_from = 127.0.0.9/32\n", "t");
  ASSERT_TRUE(r.ok());
  Router router(r.settings, nullptr);
  auto outsider = router.classify_client(*IpAddress::parse("127.0.0.1"));
  auto trusted = router.classify_client(*IpAddress::parse("127.0.0.9"));
  EXPECT_FALSE(outsider.relay_allowed);
  EXPECT_TRUE(trusted.relay_allowed);

  struct Case {
    const char* address;
    bool outsider_ok;
    bool trusted_ok;
  } cases[] = {
      {"user@example.org", true, true},
      {"user@EXAMPLE.Org", true, true},
      {"user@other.com", false, true},
      {"user@sub.example.org", false, true},
      {"user%other.com@example.org", false, true},
      {"other.com!user@example.org", false, true},
      {"\"user@other.com\"@example.org", false, true},
      {"@example.org:user@other.com", false, true},  // source route dropped: other.com
  };
  for (auto& c : cases) {
    auto mb = rcpt(c.address);
    auto d1 = router.route(outsider, mb);
    EXPECT_EQ(d1.outcome == Outcome::Ok, c.outsider_ok) << c.address;
    if (!c.outsider_ok) {
      EXPECT_EQ(d1.reply.code, 550) << c.address;
      EXPECT_EQ(d1.reply.status, "5.7.1") << c.address;
    }
    EXPECT_EQ(router.route(trusted, mb).outcome == Outcome::Ok, c.trusted_ok) << c.address;
  }
}

TEST(Router, BackupRoutesAndSanitisedLocalParts) {
  auto path = ::testing::TempDir() + "/mk_router_accounts.txt";
  { std::ofstream(path) << "alice\nsales\n"; }
  auto r = load_settings_text("[relay]\ndomains = example.net\nrelay_from = 127.0.0.9/32\n"
                              "[backup]\ndomains = example.org\narchive = /srv/archive\nrelay_from = 127.0.0.7/32\n"
                              "accounts = " + path + "\n",
                              "t");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  archive::AccountDirectory accounts(path);
  ASSERT_TRUE(accounts.reload(true));
  Router router(r.settings, &accounts);
  auto internet = router.classify_client(*IpAddress::parse("127.0.0.1"));
  auto provider = router.classify_client(*IpAddress::parse("127.0.0.7"));
  EXPECT_TRUE(provider.backup_outbound);

  auto alice = router.route(internet, rcpt("Alice@Example.ORG"));
  ASSERT_EQ(alice.outcome, Outcome::Ok);
  EXPECT_EQ(alice.destination, Destination::BackupInbound);
  ASSERT_TRUE(alice.archive);
  EXPECT_EQ(alice.archive->folder, "/srv/archive/example.org/alice");  // case variants share one folder
  EXPECT_EQ(alice.archive->delivered_to, "alice@example.org");

  // Unlisted or hostile local parts never reach the file system: 550 5.1.1.
  for (auto addr : {"bob@example.org", "\"../../etc\"@example.org", "\".hidden\"@example.org", "\"a/b\"@example.org",
                    "\"alice/../sales\"@example.org", "sales%evil@example.org"}) {
    auto d = router.route(internet, rcpt(addr));
    EXPECT_EQ(d.outcome, Outcome::PermFail) << addr;
    EXPECT_EQ(d.reply.code, 550) << addr;
    EXPECT_EQ(d.reply.status, "5.1.1") << addr;
    EXPECT_FALSE(d.archive) << addr;
  }
  // A quoted-pair is the same local part (RFC 5321 4.1.2): "al\ice" is alice.
  EXPECT_EQ(router.route(internet, rcpt("\"al\\ice\"@example.org")).archive->folder, "/srv/archive/example.org/alice");
  auto overlong = router.route(internet, rcpt(std::string(100, 'a') + "@example.org"));
  EXPECT_EQ(overlong.reply.status, "5.1.1");

  // The provider's outbound relay sends anywhere, to the smarthost, with a Sent copy for listed senders.
  auto out = router.route(provider, rcpt("someone@gmail.test"));
  EXPECT_EQ(out.outcome, Outcome::Ok);
  EXPECT_EQ(out.destination, Destination::Outbound);
  EXPECT_FALSE(out.archive);
  auto sent = router.sent_folder(provider, rcpt("SALES@example.org"));
  ASSERT_TRUE(sent);
  EXPECT_EQ(sent->folder, "/srv/archive/example.org/sales/.Sent");
  EXPECT_FALSE(sent->dedupe_dir.empty());
  EXPECT_FALSE(router.sent_folder(provider, rcpt("bob@example.org")));
  EXPECT_FALSE(router.sent_folder(internet, rcpt("sales@example.org")));  // only the provider's relays
}

TEST(Router, SubmissionAccountsSendersAndSent) {
  auto path = ::testing::TempDir() + "/mk_router_sub_accounts.txt";
  { std::ofstream(path) << "alice\nbob\n"; }
  auto r = load_settings_text("[backup]\ndomains = example.org, example.com\narchive = /srv/archive\naccounts = " + path + "\n", "t");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  archive::AccountDirectory accounts(path);
  ASSERT_TRUE(accounts.reload(true));
  Router router(r.settings, &accounts);
  EXPECT_TRUE(router.is_account("Alice@Example.ORG"));
  EXPECT_TRUE(router.is_account("bob@example.com"));
  EXPECT_FALSE(router.is_account("carol@example.org"));
  EXPECT_FALSE(router.is_account("alice@other.test"));
  EXPECT_FALSE(router.is_account("alice"));
  EXPECT_FALSE(router.is_account("../x@example.org"));
  EXPECT_TRUE(router.may_send_as("alice@example.org", rcpt("ALICE@example.com")));
  EXPECT_FALSE(router.may_send_as("alice@example.org", rcpt("bob@example.org")));
  EXPECT_FALSE(router.may_send_as("alice@example.org", rcpt("alice@other.test")));
  EXPECT_FALSE(router.may_send_as("al@example.org", rcpt("alice@example.org"))) << "no prefix match";
  // An authenticated client relays anywhere, and its mail gets a Sent copy.
  auto client = router.classify_client(*IpAddress::parse("192.0.2.1"));
  EXPECT_EQ(router.route(client, rcpt("x@remote.test")).outcome, Outcome::PermFail);
  EXPECT_FALSE(router.sent_folder(client, rcpt("alice@example.org")));
  client.user = "alice@example.org";
  client.relay_allowed = true;
  EXPECT_EQ(router.route(client, rcpt("x@remote.test")).outcome, Outcome::Ok);
  auto sent = router.sent_folder(client, rcpt("alice@example.org"));
  ASSERT_TRUE(sent);
  EXPECT_EQ(sent->folder, "/srv/archive/example.org/alice/.Sent");
}

TEST(Router, SrsBouncesGoBackAndForwardedSendersAreRewritten) {
  auto r = load_settings_text("[relay]\ndomains = example.org\n[aliases]\ndomains = alias.example\n", "t");
  ASSERT_TRUE(r.ok());
  srs::Rewriter srs("fwd.example.org", {"k"});
  Router router(r.settings, nullptr, {}, &srs);
  auto outsider = router.classify_client(*IpAddress::parse("127.0.0.1"));
  int64_t now = std::time(nullptr);

  // A plain sender: SRS0 at our domain; the null sender and our own stay.
  auto fwd = router.forwarding_sender(rcpt("bob@Shop.Example"), now);
  EXPECT_EQ(fwd.domain_lower, "fwd.example.org");
  EXPECT_EQ(fwd.local.rfind("SRS0=", 0), 0u) << fwd.local;
  smtp::Mailbox null_sender;
  null_sender.null = true;
  EXPECT_TRUE(router.forwarding_sender(null_sender, now).null);
  EXPECT_EQ(router.forwarding_sender(rcpt("x@fwd.example.org"), now).address(), "x@fwd.example.org");

  // Its bounce routes back to the sender, as forwarded mail.
  auto back = router.route(outsider, rcpt(fwd.address()));
  ASSERT_EQ(back.outcome, Outcome::Ok) << back.reason;
  EXPECT_EQ(back.recipient.address(), "bob@shop.example");
  EXPECT_TRUE(back.forwarded);
  EXPECT_FALSE(back.is_alias);
  EXPECT_EQ(back.destination, Destination::Alias);

  // A quoted original local part comes back quoted, as the same mailbox.
  auto quoted = router.forwarding_sender(rcpt("\"john smith\"@shop.example"), now);
  EXPECT_TRUE(quoted.quoted) << quoted.local;
  auto qback = router.route(outsider, quoted);
  ASSERT_EQ(qback.outcome, Outcome::Ok) << qback.reason;
  EXPECT_EQ(qback.recipient.local_unquoted(), "john smith");
  EXPECT_TRUE(qback.recipient.quoted);

  // Forged, foreign and unknown names at the SRS domain: 550 5.1.1, not "relaying denied".
  for (const char* bad : {"SRS0=zzzz=AA=shop.example=bob@fwd.example.org", "postmaster@fwd.example.org",
                          "SRS0=@fwd.example.org"}) {
    auto d = router.route(outsider, rcpt(bad));
    EXPECT_EQ(d.outcome, Outcome::PermFail) << bad;
    EXPECT_EQ(d.reply.code, 550) << bad;
    EXPECT_EQ(d.reply.status, "5.1.1") << bad;
    EXPECT_EQ(d.reason.rfind("SRS: ", 0), 0u) << d.reason;
  }
  // Aliases are forwarded mail too; relayed mail is not.
  EXPECT_TRUE(router.route(outsider, rcpt("abc@alias.example")).forwarded);
  EXPECT_FALSE(router.route(outsider, rcpt("a@example.org")).forwarded);
  // Without SRS, senders stay as they are.
  Router plain(r.settings, nullptr);
  EXPECT_EQ(plain.forwarding_sender(rcpt("bob@shop.example"), now).address(), "bob@shop.example");
}

}  // namespace
}  // namespace mk::route
