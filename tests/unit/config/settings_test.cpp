// settings_test.cpp — the INI loader: defaults, every error names file, line, key.
#include "config/settings.h"

#include <gtest/gtest.h>

#include <fstream>

namespace mk {
namespace {

TEST(Settings, EmbeddedDefaults) {
  auto s = default_settings();
  ASSERT_EQ(s.smtp.listen.size(), 1u);
  EXPECT_EQ(s.smtp.listen[0].to_string(), "127.0.0.1:2525");
  EXPECT_EQ(s.smtp.max_message_size, 52428800u);
  EXPECT_EQ(s.smtp.max_recipients, 100u);
  EXPECT_EQ(s.smtp.recipient_overshoot_limit, 1000u);
  EXPECT_EQ(s.smtp.max_connections, 1000u);
  EXPECT_EQ(s.smtp.timeout, 300u);
  EXPECT_TRUE(s.delivery.smarthost.empty());
  EXPECT_EQ(s.delivery.outbox, "data/outbox");
  EXPECT_FALSE(s.smtp.hostname.empty());
}

TEST(Settings, ParsesIssueExample) {
  auto r = load_settings_text(
      "[smtp]\n"
      "listen = 127.0.0.1:2525, [::1]:2525   ; comment\n"
      "hostname = mx.example.org\n"
      "max_message_size = 1048576\n"
      "[delivery]\n"
      "smarthost = 127.0.0.1:25, relay2.example.org:25 ; tried in order\n"
      "  ; an indented comment line\n"
      "[relay]\n"
      "domains = Example.ORG, example.net\n"
      "relay_from = 127.0.0.0/8, 2001:db8::/32\n",
      "mk.ini");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  auto& s = r.settings;
  ASSERT_EQ(s.smtp.listen.size(), 2u);
  EXPECT_EQ(s.smtp.listen[1].host, "::1");
  EXPECT_EQ(s.smtp.hostname, "mx.example.org");
  EXPECT_EQ(s.delivery.helo_name, "mx.example.org");  // follows hostname
  EXPECT_EQ(s.smtp.max_message_size, 1048576u);
  ASSERT_EQ(s.delivery.smarthost.size(), 2u);
  EXPECT_EQ(s.delivery.smarthost[1].host, "relay2.example.org");
  EXPECT_EQ(s.relay.domains, (std::vector<std::string>{"example.org", "example.net"}));
  EXPECT_EQ(s.relay.relay_from.size(), 2u);
}

TEST(Settings, ErrorsNameFileLineAndKey) {
  struct Case {
    std::string text;
    const char* expected;  // substring of the first error
  } cases[] = {
      {"[smtp]\nmax_recipients = abc\n", "mk.ini:2: [smtp] max_recipients: expected a non-negative integer"},
      {"[smtp]\n\nmax_recipients = 0\n", "mk.ini:3: [smtp] max_recipients: value 0 out of range"},
      {"[smtp]\nlisten = 127.0.0.1:99999\n", "mk.ini:2: [smtp] listen:"},
      {"[smtp]\nlisten = mx.example.org:25\n", "mk.ini:2: [smtp] listen: 'mx.example.org:25': expected an IP address"},
      {"[smtp]\nlisten = 127.0.0.1\n", "mk.ini:2: [smtp] listen: '127.0.0.1': missing port"},
      // Found by fuzz_ini: a host name of control bytes did not survive check-config's output.
      {"[dnsbl]\nresolver = \x15\xcb.x:53\n", "mk.ini:2: [dnsbl] resolver: control characters are not allowed"},
      {"[dnsbl]\nresolver = \xcb.x:53\n", "mk.ini:2: [dnsbl] resolver: '\xcb.x:53': invalid host name"},
      {"[delivery]\nsmarthost = relay..example:25\n", "mk.ini:2: [delivery] smarthost: 'relay..example:25': invalid host name"},
      // Found by fuzz_ini: values check-config could not print back as the same value.
      {"[smtp]\nspool_dir=;x\n", "mk.ini:2: [smtp] spool_dir: a value cannot start with ';' or '#'"},
      {std::string("[smtp]\nspool_dir = a\0b\n", 23), "mk.ini:2: [smtp] spool_dir: control characters are not allowed"},
      {"[smtp]\nfrobnicate = 1\n", "mk.ini:2: [smtp] frobnicate: unknown key"},
      {"[nonsense]\nx = 1\n", "mk.ini:1: unknown section [nonsense]"},
      {"[relay]\nrelay_from = 10.0.0.0/40\n", "mk.ini:2: [relay] relay_from:"},
      {"[relay]\ndomains = exa mple.org\n", "mk.ini:2: [relay] domains: invalid domain"},
      {"[general]\nlog_level = loud\n", "mk.ini:2: [general] log_level: expected one of"},
      {"[smtp]\ntimeout = 5\ntimeout = 6\n", "mk.ini:3: [smtp] timeout: set twice (first on line 2)"},
      {"[smtp\n", "mk.ini:1: syntax error"},
      {"[smtp]\njust words\n", "mk.ini:2: syntax error"},
      {"hostname = x\n", "mk.ini:1: syntax error (key outside a [section])"},
      {"[smtp] listen = 127.0.0.1:25\n", "mk.ini:1: syntax error (text after [section])"},
  };
  for (auto& c : cases) {
    auto r = load_settings_text(c.text, "mk.ini");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.errors[0].find(c.expected), std::string::npos) << "got:  " << r.errors[0] << "\nwant: " << c.expected;
  }
}

// Found by fuzz_ini: Debian's inih split lines over 200 bytes into two keys.
TEST(Settings, LongLinesAndContinuationLines) {
  std::string many;
  for (int i = 0; i < 60; ++i) many += (i ? ", " : "") + std::string("d") + std::to_string(i) + ".example.org";
  ASSERT_GT(many.size(), 600u);
  auto r = load_settings_text("[relay]\ndomains = " + many + "\nrelay_from = 127.0.0.0/8,\n  10.0.0.0/8 ; ours\n"
                              "  ; a comment line inside\n  192.0.2.0/24\n",
                              "long.ini");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(r.settings.relay.domains.size(), 60u);
  EXPECT_EQ(r.settings.relay.domains.back(), "d59.example.org");
  EXPECT_EQ(r.settings.relay.relay_from.size(), 3u);
}

TEST(Settings, UnreadableFileIsAnError) {
  auto r = load_settings_file("/nonexistent/mailkeep.ini");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors[0].find("/nonexistent/mailkeep.ini"), std::string::npos);
  EXPECT_NE(r.errors[0].find("cannot read"), std::string::npos);
}

TEST(Settings, FileLoadCountsLines) {
  auto path = ::testing::TempDir() + "/mk_settings_test.ini";
  std::ofstream(path) << "; header comment\n[smtp]\nhostname = a.b\n\n[delivery]\nbogus = 1\n";
  auto r = load_settings_file(path);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], path + ":6: [delivery] bogus: unknown key");
}

TEST(Settings, FormatShowsEveryKeyAndRoundTrips) {
  auto r = load_settings_text("[relay]\ndomains = a.example, b.example\n", "x");
  ASSERT_TRUE(r.ok());
  auto text = format_settings(r.settings);
  EXPECT_NE(text.find("domains = a.example, b.example"), std::string::npos) << text;
  EXPECT_NE(text.find("max_connections = 1000"), std::string::npos);
  auto again = load_settings_text(text, "formatted");
  ASSERT_TRUE(again.ok()) << again.errors[0];
  EXPECT_EQ(format_settings(again.settings), text);
}

TEST(Settings, SpamKeysAndTheAdminTokenNeverShown) {
  auto r = load_settings_text(
      "[spam]\nhistory = /var/lib/mk/h.db\nsignature_days = 7\nhistory_days = 30\n"
      "[http]\nadmin_token = 0123456789abcdef-secret\n",
      "t.ini");
  ASSERT_TRUE(r.ok()) << r.errors[0];
  EXPECT_EQ(r.settings.spam.history, "/var/lib/mk/h.db");
  EXPECT_EQ(r.settings.spam.signature_days, 7u);
  EXPECT_EQ(r.settings.spam.history_days, 30u);
  EXPECT_EQ(r.settings.http.admin_token, "0123456789abcdef-secret");
  auto shown = format_settings(r.settings);
  EXPECT_EQ(shown.find("0123456789abcdef"), std::string::npos) << "check-config never prints the token";
  EXPECT_NE(shown.find("admin_token = \n"), std::string::npos);

  auto weak = load_settings_text("[http]\nadmin_token = short\n", "t.ini");
  ASSERT_EQ(weak.errors.size(), 1u);
  EXPECT_NE(weak.errors[0].find("t.ini:2: [http] admin_token"), std::string::npos) << weak.errors[0];
  EXPECT_NE(weak.errors[0].find("16"), std::string::npos);
  EXPECT_FALSE(load_settings_text("[spam]\nsignature_days = 0\n", "t.ini").ok());
}


TEST(Settings, ProviderGoneKeys) {
  auto s = default_settings();
  EXPECT_FALSE(s.backup.standalone);
  EXPECT_EQ(s.backup.replay, "data/replay");
  EXPECT_EQ(s.users.passwd, "data/users.passwd");
  EXPECT_TRUE(s.submission.listen.empty()) << "submission is off unless configured";
  EXPECT_TRUE(s.submission.tls_listen.empty());
  EXPECT_EQ(s.submission.auth_without_tls_from.size(), 2u);
  auto ok = load_settings_text("[backup]\ndomains = example.org\nstandalone = true\n[submission]\nlisten = 0.0.0.0\n", "t");
  ASSERT_TRUE(ok.ok()) << ok.errors[0];
  EXPECT_TRUE(ok.settings.backup.standalone);
  EXPECT_EQ(ok.settings.submission.listen[0].to_string(), "0.0.0.0:587");
  auto no_domains = load_settings_text("[submission]\nlisten = 127.0.0.1:587\n", "t");
  ASSERT_EQ(no_domains.errors.size(), 1u);
  EXPECT_EQ(no_domains.errors[0], "t:2: [submission]: needs [backup] domains (the accounts that may log in)");
  auto no_cert = load_settings_text("[backup]\ndomains = example.org\n[submission]\ntls_listen = 127.0.0.1:465\n", "t");
  ASSERT_EQ(no_cert.errors.size(), 1u);
  EXPECT_EQ(no_cert.errors[0], "t:4: [submission] tls_listen: needs [tls] cert and key");
}

}  // namespace
}  // namespace mk
