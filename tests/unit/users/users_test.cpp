// users_test.cpp — password hashes, the passwd-file, and the AUTH check with
// its failure limits.
#include <crypt.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "users/authenticator.h"
#include "users/passwd_file.h"
#include "users/password.h"

namespace mk::users {
namespace {

// Cheap parameters: the tests check behaviour, not cost.
const HashParams kFast{1, 1024};

std::string temp_dir(const char* name) {
  auto d = std::filesystem::path(::testing::TempDir()) / (std::string(name) + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

TEST(Password, Argon2idRoundTrip) {
  auto h = hash_password("correct horse", kFast);
  EXPECT_TRUE(h.starts_with("{ARGON2ID}$argon2id$v=19$m=1024,t=1,p=1$")) << h;
  EXPECT_TRUE(verify_password(h, "correct horse"));
  EXPECT_FALSE(verify_password(h, "correct horsE"));
  EXPECT_FALSE(verify_password(h, ""));
  EXPECT_NE(h, hash_password("correct horse", kFast)) << "a fresh salt each time";
  EXPECT_TRUE(known_scheme(h));
}

TEST(Password, DefaultParametersAreTheInteractiveOnes) {
  auto h = hash_password("x");
  EXPECT_NE(h.find("$m=65536,t=2,p=1$"), std::string::npos) << h;
}

TEST(Password, CryptSchemesDoveadmMakes) {
  crypt_data data{};
  std::string sha512 = crypt_r("s3cret", "$6$abcdefgh12345678$", &data);
  EXPECT_TRUE(verify_password("{SHA512-CRYPT}" + sha512, "s3cret"));
  EXPECT_FALSE(verify_password("{SHA512-CRYPT}" + sha512, "s3cre"));
  // A scheme's tag must match its hash: no SHA256 hash under a SHA512 tag.
  std::string sha256 = crypt_r("s3cret", "$5$abcdefgh$", &data);
  EXPECT_TRUE(verify_password("{SHA256-CRYPT}" + sha256, "s3cret"));
  EXPECT_FALSE(verify_password("{SHA512-CRYPT}" + sha256, "s3cret"));
}

TEST(Password, WeakOrBrokenHashesNeverMatch) {
  EXPECT_FALSE(verify_password("{PLAIN}secret", "secret"));
  EXPECT_FALSE(verify_password("{CLEARTEXT}secret", "secret"));
  EXPECT_FALSE(verify_password("secret", "secret"));
  EXPECT_FALSE(verify_password("{ARGON2ID}garbage", "garbage"));
  EXPECT_FALSE(verify_password("{SHA512-CRYPT}*", "*"));
  EXPECT_FALSE(known_scheme("{PLAIN}x"));
  EXPECT_FALSE(verify_password(hash_password("a", kFast), std::string(2000, 'a')));
  EXPECT_THROW(hash_password(std::string(2000, 'a'), kFast), std::runtime_error);
}

TEST(PasswdFile, RoundTripKeepsForeignLines) {
  std::string text =
      "# managed by mailkeep\n"
      "alice@example.org:{ARGON2ID}$argon2id$x::::/a/example.org/alice::\n"
      "other:{PLAIN}x:8:8::/home/other::userdb_quota_rule=*:storage=1G\n"
      "bob@example.org:{SHA512-CRYPT}$6$y::::/a/example.org/bob::nologin=y reason=Account_locked\n";
  auto f = parse_passwd(text);
  ASSERT_EQ(f.entries().size(), 2u);
  EXPECT_FALSE(f.find("alice@example.org")->locked);
  EXPECT_TRUE(f.find("bob@example.org")->locked);
  EXPECT_EQ(f.find("other"), nullptr) << "a line with extra fields we do not write is kept raw";
  EXPECT_EQ(format_passwd(f), text);
  f.find("alice@example.org")->locked = true;
  EXPECT_NE(format_passwd(f).find("alice@example.org:{ARGON2ID}$argon2id$x::::/a/example.org/alice::nologin=y"),
            std::string::npos);
  EXPECT_TRUE(f.erase("bob@example.org"));
  EXPECT_FALSE(f.erase("bob@example.org"));
  f.put(PasswdEntry{"carol@example.org", "{ARGON2ID}$z", "/h", false});
  EXPECT_NE(format_passwd(f).find("other:{PLAIN}x:8:8::/home/other::userdb_quota_rule"), std::string::npos);
  EXPECT_EQ(parse_passwd(format_passwd(f)).entries().size(), 2u);
}

TEST(PasswdFile, UpdateIsAtomicWithMode0640) {
  auto dir = temp_dir("passwd");
  auto path = dir + "/sub/users.passwd";
  ::umask(0);
  auto err = update_passwd(path, "", "", [](PasswdFile& f) {
    f.put(PasswdEntry{"alice@example.org", "{ARGON2ID}$h", "/h/alice", false});
    return std::string();
  });
  ::umask(022);
  ASSERT_EQ(err, "");
  struct stat st{};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  // A failing change writes nothing.
  err = update_passwd(path, "", "", [](PasswdFile& f) {
    f.erase("alice@example.org");
    return std::string("refused");
  });
  EXPECT_EQ(err, "refused");
  PasswdFile back;
  ASSERT_EQ(read_passwd(path, back), "");
  ASSERT_NE(back.find("alice@example.org"), nullptr);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

struct AuthFixture {
  std::string dir = temp_dir("auth");
  std::string passwd = dir + "/users.passwd";
  std::unique_ptr<Authenticator> auth;
  explicit AuthFixture(uint32_t max_failures = 3) {
    update_passwd(passwd, "", "", [](PasswdFile& f) {
      f.put(PasswdEntry{"alice@example.org", hash_password("alice-pass", kFast), "/h/alice", false});
      f.put(PasswdEntry{"locked@example.org", hash_password("locked-pass", kFast), "/h/locked", true});
      f.put(PasswdEntry{"gone@example.org", hash_password("gone-pass", kFast), "/h/gone", false});
      return std::string();
    });
    auth = std::make_unique<Authenticator>(AuthenticatorConfig{
        passwd, [](const std::string& a) { return a != "gone@example.org"; }, max_failures, 60});
  }
};

TEST(Authenticator, VerdictsAndReasons) {
  AuthFixture fx(100);
  auto ok = fx.auth->check("1.2.3.4", "Alice@Example.ORG", "alice-pass", 1000);
  EXPECT_EQ(ok.verdict, AuthVerdict::Ok);
  EXPECT_EQ(ok.user, "alice@example.org");
  auto wrong = fx.auth->check("1.2.3.4", "alice@example.org", "nope", 1000);
  EXPECT_EQ(wrong.verdict, AuthVerdict::Wrong);
  EXPECT_EQ(wrong.reason, "wrong password");
  EXPECT_EQ(fx.auth->check("1.2.3.4", "nobody@example.org", "x", 1000).reason, "unknown user");
  EXPECT_EQ(fx.auth->check("1.2.3.4", "locked@example.org", "locked-pass", 1000).verdict, AuthVerdict::Wrong);
  // A password for an address no longer in the accounts list does not log in.
  EXPECT_EQ(fx.auth->check("1.2.3.4", "gone@example.org", "gone-pass", 1000).verdict, AuthVerdict::Wrong);
}

TEST(Authenticator, LockoutPerClientAndPerAccount) {
  AuthFixture fx(3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(fx.auth->check("ip1", "nobody@example.org", "x", 1000).verdict, AuthVerdict::Wrong);
  // ip1 is locked out, even with the right password for another account.
  auto out = fx.auth->check("ip1", "alice@example.org", "alice-pass", 1001);
  EXPECT_EQ(out.verdict, AuthVerdict::LockedOut);
  // Another client is not.
  EXPECT_EQ(fx.auth->check("ip2", "alice@example.org", "alice-pass", 1001).verdict, AuthVerdict::Ok);
  // The account's own counter: three failures from three clients lock alice out everywhere.
  for (auto ip : {"ip3", "ip4", "ip5"}) fx.auth->check(ip, "alice@example.org", "bad", 1002);
  EXPECT_EQ(fx.auth->check("ip6", "alice@example.org", "alice-pass", 1003).verdict, AuthVerdict::LockedOut);
  // The lockout ends after its window.
  EXPECT_EQ(fx.auth->check("ip6", "alice@example.org", "alice-pass", 1002 + 61).verdict, AuthVerdict::Ok);
  EXPECT_EQ(fx.auth->check("ip1", "alice@example.org", "alice-pass", 1000 + 61).verdict, AuthVerdict::Ok);
}

TEST(Authenticator, SeesANewPasswordWithoutRestart) {
  AuthFixture fx(100);
  EXPECT_EQ(fx.auth->check("ip", "alice@example.org", "new-pass", 1000).verdict, AuthVerdict::Wrong);
  update_passwd(fx.passwd, "", "", [](PasswdFile& f) {
    f.find("alice@example.org")->password = hash_password("new-pass", kFast);
    return std::string();
  });
  EXPECT_EQ(fx.auth->check("ip", "alice@example.org", "new-pass", 1000).verdict, AuthVerdict::Ok);
}

TEST(Authenticator, UnknownUserCostsAVerification) {
  // The dummy hash has the default (production) parameters, like a real entry
  // made by `mailkeep user passwd`: compare against such an entry.
  auto dir = temp_dir("timing");
  auto passwd = dir + "/users.passwd";
  update_passwd(passwd, "", "", [](PasswdFile& f) {
    f.put(PasswdEntry{"alice@example.org", hash_password("alice-pass"), "/h", false});
    return std::string();
  });
  Authenticator auth({passwd, [](const std::string&) { return true; }, 1000, 60});
  auto time = [&](const char* user) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) auth.check("ip", user, "wrong", 1000);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  double known = time("alice@example.org"), unknown = time("nobody@example.org");
  EXPECT_GT(unknown, known * 0.5) << known << " s vs " << unknown << " s";
  EXPECT_LT(unknown, known * 2.0) << known << " s vs " << unknown << " s";
}

}  // namespace
}  // namespace mk::users
