// users_cli.cpp — see users_cli.h. The runbook these commands serve is the
// README's "The provider is gone".
#include "app/users_cli.h"
#include "app/stores.h"

#include <CLI/CLI.hpp>
#include <openssl/crypto.h>
#include <pwd.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "app/privileges.h"
#include "archive/accounts.h"
#include "core/log.h"
#include "core/strings.h"
#include "delivery/smtp_upstream.h"
#include "replay/replay.h"
#include "route/router.h"
#include "users/passwd_file.h"
#include "users/password.h"

namespace mk::app {
namespace {

namespace fs = std::filesystem;
constexpr size_t kMinPassword = 8;

void wipe(std::string& s) { OPENSSL_cleanse(s.data(), s.size()); }

std::string absolute(const std::string& p) {
  std::error_code ec;
  auto a = fs::absolute(p, ec);
  return ec ? p : a.lexically_normal().string();
}

// One line from the terminal without echo (the prompt goes to stderr).
bool read_hidden(const char* prompt, std::string& out) {
  // Echo off first, then the prompt (as getpass(3) does): what is typed the
  // moment the prompt shows is never echoed, nor flushed away.
  termios old{};
  bool tty = ::tcgetattr(STDIN_FILENO, &old) == 0;
  if (tty) {
    termios quiet = old;
    quiet.c_lflag &= ~tcflag_t(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::cerr << prompt << std::flush;
  bool ok = bool(std::getline(std::cin, out));
  if (tty) ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
  std::cerr << "\n";
  return ok;
}

std::string home_of(const Settings& s, const std::string& address) {
  auto at = address.rfind('@');
  return absolute(s.backup.archive) + "/" + address.substr(at + 1) + "/" + address.substr(0, at);
}

// Changes [users] passwd: with [store] url in its turn of the shared file
// (which first brings this copy up to date) and published after, so that
// every gateway (and its Dovecot) has it at once. Returns "" or the error.
std::string change_passwd(const Settings& s, const std::function<std::string(users::PasswdFile&)>& change) {
  Stores stores(s);
  std::unique_ptr<SharedFile> share;
  std::unique_ptr<SharedFile::Turn> turn;
  try {
    share = stores.passwd_share();
    if (share) turn = share->begin(s.users.passwd);
  } catch (const std::exception& e) {
    return std::string("the shared password file: ") + e.what();
  }
  if (auto err = users::update_passwd(s.users.passwd, s.general.user, s.users.group, change); !err.empty()) return err;
  try {
    if (turn) turn->publish();
  } catch (const std::exception& e) {
    return std::string("changed here, but not shared with the other gateways: ") + e.what();
  }
  return "";
}

int user_passwd(const Settings& s, const UsersCommand& cmd) {
  auto address = account_address(s, cmd.address);
  if (!address) return 1;
  std::string password, again;
  if (cmd.from_stdin) {
    if (!std::getline(std::cin, password)) {
      std::cerr << "mailkeep: no password on standard input\n";
      return 1;
    }
    if (!password.empty() && password.back() == '\r') password.pop_back();
  } else {
    if (!::isatty(STDIN_FILENO)) {
      std::cerr << "mailkeep: standard input is not a terminal; use --stdin to read the password from it\n";
      return 1;
    }
    if (!read_hidden("New password: ", password) || !read_hidden("Retype new password: ", again)) return 1;
    bool same = password == again;
    wipe(again);
    if (!same) {
      wipe(password);
      std::cerr << "mailkeep: the passwords do not match; nothing changed\n";
      return 1;
    }
  }
  if (password.find('\0') != std::string::npos) {
    wipe(password);
    std::cerr << "mailkeep: the password contains a NUL byte, which no mail client can send; nothing changed\n";
    return 1;
  }
  if (password.size() < kMinPassword) {
    wipe(password);
    std::cerr << "mailkeep: the password is too short (at least " << kMinPassword << " characters); nothing changed\n";
    return 1;
  }
  std::string hash;
  try {
    hash = users::hash_password(password);
  } catch (const std::exception& e) {
    wipe(password);
    std::cerr << "mailkeep: cannot hash the password: " << e.what() << "\n";
    return 1;
  }
  wipe(password);
  auto err = change_passwd(s, [&](users::PasswdFile& f) {
    bool locked = f.find(*address) && f.find(*address)->locked;
    f.put(users::PasswdEntry{*address, hash, home_of(s, *address), locked});
    return std::string();
  });
  if (!err.empty()) {
    std::cerr << "mailkeep: " << err << "\n";
    return 1;
  }
  std::cout << "password set for " << *address << "\n";
  return 0;
}

int user_list(const Settings& s) {
  users::PasswdFile f;
  if (auto err = users::read_passwd(s.users.passwd, f); !err.empty()) {
    std::cerr << "mailkeep: " << err << "\n";
    return 1;
  }
  for (auto* e : f.entries()) {
    auto scheme = e->password.substr(1, e->password.find('}') - 1);
    std::cout << e->user << "\t" << (e->locked ? "locked" : "active") << "\t" << scheme << "\n";
  }
  return 0;
}

int user_change(const Settings& s, const UsersCommand& cmd) {
  auto address = to_lower(trim(cmd.address));
  auto err = change_passwd(s, [&](users::PasswdFile& f) {
    auto* e = f.find(address);
    if (!e) return address + " has no password (see mailkeep user list)";
    if (cmd.action == "delete") f.erase(address);
    else e->locked = cmd.action == "lock";
    return std::string();
  });
  if (!err.empty()) {
    std::cerr << "mailkeep: " << err << "\n";
    return 1;
  }
  std::cout << address << (cmd.action == "delete" ? ": password deleted" : cmd.action == "lock" ? ": locked" : ": unlocked")
            << "\n";
  return 0;
}

// A Sieve string literal (RFC 5228 2.4.2): backslash and quote escaped.
std::string sieve_string(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// The IMAPSieve scripts that teach the spam filter what users do in their
// mail client (Dovecot's imap_sieve and sieve_extprograms, Debian's
// dovecot-sieve): into Junk → `mailkeep spam learn --spam`, out of Junk
// (not to Trash) → `--ham`. Written into `dir` with the program they pipe to
// (a link to this binary: sieve_pipe_bin_dir runs only what is in it, and
// no shell is involved), owned by the mail user so that Dovecot can keep
// the compiled scripts beside them. Returns "" or the error.
std::string write_sieve_scripts(const std::string& dir, const std::string& config, uid_t uid, gid_t gid) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "bin", ec);
  if (ec) return "cannot create " + dir + "/bin: " + ec.message();
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return std::string("cannot find this program's path: ") + std::strerror(errno);
  self[n] = '\0';
  const fs::path link = fs::path(dir) / "bin" / "mailkeep";
  fs::remove(link, ec);
  fs::create_symlink(self, link, ec);
  if (ec) return "cannot link " + link.string() + ": " + ec.message();
  std::string args = config.empty() ? "" : ", \"-c\", " + sieve_string(config);
  const std::string spam =
      "# From `mailkeep dovecot-config`: a message moved or copied into Junk is spam.\n"
      "require [\"vnd.dovecot.pipe\", \"copy\", \"imapsieve\"];\n"
      "pipe :copy \"mailkeep\" [\"spam\", \"learn\", \"--spam\"" + args + "];\n";
  const std::string ham =
      "# From `mailkeep dovecot-config`: a message moved out of Junk, except to Trash, is good mail.\n"
      "require [\"vnd.dovecot.pipe\", \"copy\", \"imapsieve\", \"environment\", \"variables\"];\n"
      "if environment :matches \"imap.mailbox\" \"*\" { set \"mailbox\" \"${1}\"; }\n"
      "if string \"${mailbox}\" \"Trash\" { stop; }\n"
      "pipe :copy \"mailkeep\" [\"spam\", \"learn\", \"--ham\"" + args + "];\n";
  for (auto [name, text] : {std::pair{"learn-spam.sieve", &spam}, {"learn-ham.sieve", &ham}}) {
    const fs::path path = fs::path(dir) / name;
    // Written beside and renamed over, so that Dovecot never reads half a script.
    const fs::path tmp = path.string() + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f << *text;
      if (!f.flush()) return "cannot write " + tmp.string();
    }
    fs::permissions(tmp, fs::perms(0644), ec);
    fs::rename(tmp, path, ec);
    if (ec) return "cannot write " + path.string() + ": " + ec.message();
    fs::remove(fs::path(dir) / (std::string(name).substr(0, std::string(name).size() - 6) + ".svbin"), ec);
  }
  // Dovecot (as the mail user) writes the compiled .svbin files here.
  for (auto& p : {fs::path(dir), fs::path(dir) / "bin", fs::path(dir) / "learn-spam.sieve", fs::path(dir) / "learn-ham.sieve"})
    if (::lchown(p.c_str(), uid, gid) != 0 && ::geteuid() == 0)
      return "cannot give " + p.string() + " to the mail user: " + std::strerror(errno);
  fs::permissions(dir, fs::perms(0755), ec);
  return "";
}

int dovecot_config(const Settings& s, const UsersCommand& cmd) {
  const struct passwd* pw = ::getpwnam(s.general.user.c_str());
  if (!pw) {
    std::cerr << "mailkeep: [general] user " << s.general.user << " does not exist\n";
    return 1;
  }
  if (pw->pw_uid == 0) {
    std::cerr << "mailkeep: [general] user is root, and Dovecot serves no mail as root: "
                 "set [general] user to the account that owns the archive\n";
    return 1;
  }
  if (s.backup.domains.empty()) {
    std::cerr << "mailkeep: no [backup] domains: there is no archive to serve\n";
    return 1;
  }
  const bool tls = !s.tls.cert.empty();
  auto passwd = absolute(s.users.passwd);
  std::string out;
  auto line = [&](const std::string& l) { out += l + "\n"; };
  line("# Dovecot 2.3 configuration for the mailkeep archive, from `mailkeep dovecot-config`.");
  line("# Start: dovecot -c THIS_FILE. Passwords: mailkeep user passwd ADDRESS.");
  line("# Every account's archive (" + absolute(s.backup.archive) + "/<domain>/<localpart>) is its Maildir.");
  line("protocols = imap");
  line("listen = " + cmd.listen);
  if (!cmd.base_dir.empty()) {
    line("base_dir = " + absolute(cmd.base_dir));
    line("state_dir = " + absolute(cmd.base_dir) + "/state");
  }
  if (!cmd.log_path.empty()) line("log_path = " + absolute(cmd.log_path));
  line("mail_location = maildir:~");
  line("mail_uid = " + std::to_string(pw->pw_uid));
  line("mail_gid = " + std::to_string(pw->pw_gid));
  line("first_valid_uid = " + std::to_string(pw->pw_uid));
  line("last_valid_uid = " + std::to_string(pw->pw_uid));
  line("default_internal_user = dovecot");
  line("default_internal_group = dovecot");
  line("default_login_user = dovenull");
  line("auth_mechanisms = plain login");
  line("auth_verbose = yes");
  line("# Without TLS only clients on this machine may send a password.");
  line("disable_plaintext_auth = yes");
  line("passdb {");
  line("  driver = passwd-file");
  line("  args = scheme=ARGON2ID username_format=%Lu " + passwd);
  line("}");
  line("userdb {");
  line("  driver = passwd-file");
  line("  args = username_format=%Lu " + passwd);
  line("}");
  line("# RFC 6154 special-use folders, the Maildir++ folders mailkeep archives into.");
  line("namespace inbox {");
  line("  inbox = yes");
  for (auto [name, flag] : {std::pair{"Sent", "\\Sent"}, {"Junk", "\\Junk"}, {"Archive", "\\Archive"}, {"Trash", "\\Trash"}}) {
    line(std::string("  mailbox ") + name + " {");
    line(std::string("    special_use = ") + flag);
    line("    auto = subscribe");
    line("  }");
  }
  line("}");
  if (s.spam.enabled) {
    namespace fs = std::filesystem;
    const std::string dir = cmd.sieve_dir.empty() ? (fs::path(absolute(s.spam.model)).parent_path() / "sieve").string()
                                                  : absolute(cmd.sieve_dir);
    const std::string config = cmd.config_path.empty() ? "" : absolute(cmd.config_path);
    if (auto err = write_sieve_scripts(dir, config, pw->pw_uid, pw->pw_gid); !err.empty()) {
      std::cerr << "mailkeep: IMAPSieve scripts: " << err << "\n";
      return 1;
    }
    line("# The spam filter learns from what users do (Debian's dovecot-sieve): moved or copied into");
    line("# Junk -> mailkeep spam learn --spam; moved out of Junk, not to Trash -> --ham. The scripts");
    line("# are in " + dir + " (written by this command).");
    line("protocol imap {");
    line("  mail_plugins = $mail_plugins imap_sieve");
    line("}");
    line("plugin {");
    line("  sieve_plugins = sieve_imapsieve sieve_extprograms");
    line("  sieve_global_extensions = +vnd.dovecot.pipe +vnd.dovecot.environment");
    line("  sieve_pipe_bin_dir = " + dir + "/bin");
    line("  imapsieve_mailbox1_name = Junk");
    line("  imapsieve_mailbox1_causes = COPY");
    line("  imapsieve_mailbox1_before = file:" + dir + "/learn-spam.sieve");
    line("  imapsieve_mailbox2_name = *");
    line("  imapsieve_mailbox2_from = Junk");
    line("  imapsieve_mailbox2_causes = COPY");
    line("  imapsieve_mailbox2_before = file:" + dir + "/learn-ham.sieve");
    line("}");
  }
  if (tls) {
    line("ssl = required");
    line("ssl_cert = <" + absolute(s.tls.cert));
    line("ssl_key = <" + absolute(s.tls.key));
    line("ssl_min_protocol = TLSv1.2");
  } else {
    line("# [tls] has no certificate: no TLS (IMAP from this machine only).");
    line("ssl = no");
  }
  line("service imap-login {");
  line("  inet_listener imap {");
  line("    port = " + std::to_string(cmd.imap_port));
  line("  }");
  line("  inet_listener imaps {");
  line("    port = " + std::to_string(tls ? cmd.imaps_port : 0));
  line("    ssl = yes");
  line("  }");
  line("}");
  std::cout << out;
  return 0;
}

std::atomic<bool> g_stop{false};

int backup_replay(const Settings& s, const UsersCommand& cmd) {
  if (s.backup.domains.empty()) {
    std::cerr << "mailkeep: no [backup] domains: nothing was kept standalone\n";
    return 1;
  }
  if (s.backup.standalone) {
    std::cerr << "mailkeep: [backup] standalone is still true: switch back to gateway mode (standalone = false, "
                 "SIGHUP) before replaying\n";
    return 1;
  }
  const auto& hosts = s.backup.upstream.empty() ? s.delivery.smarthost : s.backup.upstream;
  if (hosts.empty() && !cmd.dry_run) {
    std::cerr << "mailkeep: no upstream to replay to: set [backup] upstream or [delivery] smarthost\n";
    return 1;
  }
  replay::ReplayOptions o;
  o.journal = s.backup.replay;
  o.user = to_lower(cmd.user);
  o.dry_run = cmd.dry_run;
  if (!cmd.since.empty()) {
    o.since = parse_date_utc(cmd.since);
    if (!o.since) {
      std::cerr << "mailkeep: --since " << cmd.since << ": expected YYYY-MM-DD\n";
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  if (::geteuid() == 0 && s.general.user != "root") {
    std::vector<std::string> dirs{o.journal, o.journal + "/new", o.journal + "/cur", o.journal + "/tmp"};
    if (auto err = drop_privileges(s.general.user, dirs, {o.journal + "/replay.lock"}); !err.empty()) {
      std::cerr << "mailkeep: " << err << "\n";
      return 1;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  o.stop = &g_stop;
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  std::signal(SIGPIPE, SIG_IGN);
  const bool tty = ::isatty(STDERR_FILENO);
  if (cmd.dry_run) {
    std::string err;
    auto entries = replay::pending_entries(o, err);
    if (!err.empty()) {
      std::cerr << "mailkeep: " << err << "\n";
      return 1;
    }
    for (auto& e : entries) {
      auto when = format_utc(e.time, "%Y-%m-%d %H:%M:%S");
      std::cout << when << "\t<" << e.sender << ">\t<" << e.recipient << ">\t" << e.size << "\t" << e.name << "\n";
    }
    std::cout << entries.size() << " message(s) would be replayed\n";
    return 0;
  }
  o.progress = [&](size_t done, size_t total, const replay::JournalEntry& e, const smtp::Reply& r) {
    if (!r.positive()) std::cerr << (tty ? "\n" : "") << e.name << " <" << e.recipient << ">: " << r.summary() << "\n";
    if (tty) std::cerr << "\rreplayed " << done << "/" << total << std::flush;
  };
  std::unique_ptr<delivery::UpstreamFactory> factory;
  try {
    auto cfg = delivery::smtp_upstream_config(s, hosts);
    cfg.pool = false;  // the replay's io_context ends before the factory
    factory = delivery::make_smtp_upstream_factory(cfg);
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: " << e.what() << "\n";
    return 1;
  }
  auto report = replay::replay(o, *factory);
  if (tty && report.selected) std::cerr << "\n";
  if (!report.error.empty()) std::cerr << "mailkeep: " << report.error << "\n";
  std::cout << "replayed " << report.sent << " of " << report.selected << " message(s) to "
            << hosts.front().to_string();
  if (report.failed) std::cout << "; " << report.failed << " refused (left in " << o.journal << "/new)";
  if (report.deferred) std::cout << "; the upstream defers: run the replay again later";
  if (report.interrupted) std::cout << "; interrupted: run it again to send the rest";
  std::cout << "\n";
  if (!report.error.empty()) return 1;
  if (report.deferred || report.interrupted) return 75;  // EX_TEMPFAIL
  return report.failed ? 1 : 0;
}

}  // namespace

std::optional<std::string> account_address(const Settings& s, const std::string& input) {
  auto address = to_lower(trim(input));
  archive::AccountDirectory accounts(accounts_file(s));
  spdlog::set_level(spdlog::level::err);
  accounts.reload(/*force=*/true);
  route::Router router(s, &accounts);
  if (auto owner = router.account_of_address(address); owner && owner->address() != address) {
    std::cerr << "mailkeep: " << address << " is an address of the account " << owner->address()
              << "; passwords belong to the account\n";
    return std::nullopt;
  }
  if (s.backup.domains.empty() || !router.is_account(address)) {
    std::cerr << "mailkeep: " << (address.empty() ? std::string("(empty)") : address)
              << " is not an archived account: only listed accounts (" << accounts_file(s)
              << ") of [backup] domains may have a password\n";
    return std::nullopt;
  }
  return address;
}

void add_users_commands(CLI::App& app, std::string& config_path, UsersCommand& cmd) {
  auto* user = app.add_subcommand("user", "Passwords of the archived accounts (IMAP through Dovecot, submission)");
  user->require_subcommand(1);
  auto* passwd = user->add_subcommand("passwd", "Set an account's password (asked twice on a terminal, or --stdin)");
  passwd->add_option("address", cmd.address, "the account, e.g. alice@example.org")->required();
  passwd->add_flag("--stdin", cmd.from_stdin, "read the password from the first line of standard input");
  std::vector<CLI::App*> subs{passwd, user->add_subcommand("list", "Accounts with a password: address, active|locked, scheme")};
  for (auto [name, help] : {std::pair{"lock", "Refuse an account's logins (the password stays)"},
                            {"unlock", "Allow a locked account's logins again"},
                            {"delete", "Remove an account's password"}}) {
    subs.push_back(user->add_subcommand(name, help));
    subs.back()->add_option("address", cmd.address, "the account")->required();
  }
  for (auto* sub : subs) sub->add_option("-c,--config", config_path, "INI configuration file");

  auto* dovecot = app.add_subcommand("dovecot-config", "Print a Dovecot 2.3 configuration that serves the archive");
  dovecot->add_option("-c,--config", config_path, "INI configuration file");
  dovecot->add_option("--listen", cmd.listen, "Dovecot's listen addresses (default *)");
  dovecot->add_option("--imap-port", cmd.imap_port, "IMAP port (default 143)");
  dovecot->add_option("--imaps-port", cmd.imaps_port, "IMAPS port when [tls] has a certificate (default 993)");
  dovecot->add_option("--base-dir", cmd.base_dir, "Dovecot's base_dir (and state_dir below it); default Dovecot's");
  dovecot->add_option("--log-path", cmd.log_path, "Dovecot's log file; default syslog");
  dovecot->add_option("--sieve-dir", cmd.sieve_dir,
                      "where the IMAPSieve scripts that train the spam filter are written ([spam] enabled); "
                      "default: a sieve/ directory beside [spam] model");

  auto* backup = app.add_subcommand("backup", "The backup archive's standalone mode");
  backup->require_subcommand(1);
  auto* replay = backup->add_subcommand("replay", "Relay what arrived while standalone to [backup] upstream, once");
  replay->add_option("-c,--config", config_path, "INI configuration file");
  replay->add_option("--user", cmd.user, "only this recipient's messages");
  replay->add_option("--since", cmd.since, "only what arrived on or after this day (YYYY-MM-DD, UTC)");
  replay->add_flag("--dry-run", cmd.dry_run, "list what would be sent, send nothing");
}

bool users_command_chosen(const CLI::App& app) {
  for (auto* name : {"user", "dovecot-config", "backup"})
    if (app.get_subcommand(name)->parsed()) return true;
  return false;
}

int users_command(const Settings& settings, const UsersCommand& cmd_in) {
  auto cmd = cmd_in;
  return cmd.group == "dovecot-config" ? dovecot_config(settings, cmd)
         : cmd.group == "backup"       ? backup_replay(settings, cmd)
         : cmd.action == "passwd"      ? user_passwd(settings, cmd)
         : cmd.action == "list"        ? user_list(settings)
                                       : user_change(settings, cmd);
}

}  // namespace mk::app
