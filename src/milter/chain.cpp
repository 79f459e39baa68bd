// chain.cpp — see chain.h.
#include "milter/chain.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <map>
#include <set>

#include "core/stats.h"
#include "core/strings.h"
#include "milter/client.h"
#include "milter/edit.h"

namespace mk::milter {
namespace {

namespace asio = boost::asio;
using smtp::CheckResult;
using smtp::Reply;

// Idle milter connections, per thread, by milter: a session that ended right
// after a message its milter answered with continue leaves its connection
// here (SMFIC_QUIT_NC) and the next session starts at SMFIC_CONNECT on it —
// no connect, no negotiation, and for libmilter no new thread per session.
// Only milters that answer SMFIC_CONNECT are kept: a reused connection that
// turns out dead fails that first answer, and the session opens a fresh one.
// Plain fds, so the list may outlive every io_context.
struct IdlePool {
  std::map<std::string, std::vector<Connection::Idle>, std::less<>> idle;
  ~IdlePool() {
    for (auto& [spec, list] : idle)
      for (auto& i : list) ::close(i.fd);
  }
};
constexpr size_t kMaxIdlePerMilter = 64;
constexpr auto kMaxIdleAge = std::chrono::seconds(60);

IdlePool& idle_pool() {
  thread_local IdlePool pool;
  return pool;
}

// Hands `conn` the newest idle connection to `spec` that is still good.
bool take_idle(const std::string& spec, Connection& conn) {
  auto it = idle_pool().idle.find(spec);
  if (it == idle_pool().idle.end()) return false;
  auto& list = it->second;
  const auto now = std::chrono::steady_clock::now();
  while (!list.empty()) {
    auto idle = list.back();
    list.pop_back();
    if (now - idle.since > kMaxIdleAge) {
      ::close(idle.fd);
      continue;
    }
    if (conn.adopt(idle)) return true;
  }
  return false;
}

void put_idle(const std::string& spec, const Connection::Idle& idle) {
  auto& list = idle_pool().idle[spec];
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(list, [&](const Connection::Idle& i) {
    if (now - i.since <= kMaxIdleAge) return false;
    ::close(i.fd);
    return true;
  });
  if (list.size() >= kMaxIdlePerMilter) {
    ::close(idle.fd);
    return;
  }
  list.push_back(idle);
}

// Postfix's default macro stages (milter_*_macros).
const std::map<std::string, Command, std::less<>>& macro_stages() {
  static const std::map<std::string, Command, std::less<>> stages = {
      {"j", Command::Connect},           {"{daemon_name}", Command::Connect}, {"{daemon_addr}", Command::Connect},
      {"v", Command::Connect},           {"_", Command::Connect},             {"{tls_version}", Command::Helo},
      {"{cipher}", Command::Helo},       {"{cipher_bits}", Command::Helo},    {"{cert_subject}", Command::Helo},
      {"{cert_issuer}", Command::Helo},  {"i", Command::Mail},                {"{auth_type}", Command::Mail},
      {"{auth_authen}", Command::Mail},  {"{auth_author}", Command::Mail},    {"{mail_addr}", Command::Mail},
      {"{mail_host}", Command::Mail},    {"{mail_mailer}", Command::Mail},    {"{rcpt_addr}", Command::Rcpt},
      {"{rcpt_host}", Command::Rcpt},    {"{rcpt_mailer}", Command::Rcpt},
  };
  return stages;
}

std::vector<std::string> split_words(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != ',') ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

const char* stage_name(Command c) {
  switch (c) {
    case Command::Connect: return "connect";
    case Command::Helo: return "HELO";
    case Command::Mail: return "MAIL";
    case Command::Rcpt: return "RCPT";
    case Command::Data: return "DATA";
    case Command::Header: return "header";
    case Command::Eoh: return "end of headers";
    case Command::Body: return "body";
    case Command::BodyEob: return "end of message";
    default: return "?";
  }
}

class Chain final : public smtp::SessionChecks {
 public:
  Chain(asio::any_io_executor ex, const Settings& s, bool outbound) : ex_(std::move(ex)), s_(s), outbound_(outbound) {
    for (auto& name : s.milter.macros) configured_macros_.insert(name);
    timeouts_.connect = std::chrono::seconds(s.milter.connect_timeout);
    timeouts_.command = std::chrono::seconds(s.milter.command_timeout);
    timeouts_.content = std::chrono::seconds(s.milter.content_timeout);
  }

  std::string_view name() const override { return "milter"; }

  awaitable<CheckResult> connect(const smtp::ConnectFacts& f) override {
    macros_["j"] = s_.smtp.hostname;
    macros_["{daemon_name}"] = f.listener.empty() ? "mailkeep" : f.listener;
    macros_["{daemon_addr}"] = f.local_address;
    macros_["v"] = std::string("mailkeep ") + MAILKEEP_VERSION;
    macros_["_"] = (f.client_name.empty() ? "unknown" : f.client_name) + " [" + f.client_address + "]";
    macros_["{client_addr}"] = f.client_address;
    macros_["{client_port}"] = std::to_string(f.client_port);
    Family family = f.client_address.find(':') != std::string::npos ? Family::Inet6 : Family::Inet;
    std::string host = f.client_name.empty() || f.client_name == "unknown" ? "[" + f.client_address + "]"
                                                                           : f.client_name;
    auto packet = encode_connect(host, family, f.client_port, f.client_address);
    for (auto& e : s_.milter.smtp) {
      Milter m;
      m.conn = std::make_unique<Connection>(ex_, Endpoint{e.spec, e.host, e.port, e.path}, timeouts_);
      m.reused = take_idle(e.spec, *m.conn);
      milters_.push_back(std::move(m));
    }
    for (auto& m : milters_) {
      if (m.reused) continue;
      if (!co_await m.conn->open(offered_actions())) {
        auto r = failed(m, Command::Connect);
        if (r.kind != CheckResult::Kind::Continue) co_return r;
        continue;
      }
    }
    co_return co_await each(Command::Connect, packet, false);
  }

  awaitable<CheckResult> helo(std::string_view name, std::string_view tls) override {
    // "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    if (!tls.empty()) {
      auto sp = tls.find(' ');
      macros_["{tls_version}"] = std::string(tls.substr(0, sp));
      auto c = tls.find("cipher ");
      if (c != std::string_view::npos) {
        auto rest = tls.substr(c + 7);
        macros_["{cipher}"] = std::string(rest.substr(0, rest.find(' ')));
        auto paren = rest.find('(');
        if (paren != std::string_view::npos) {
          auto bits = rest.substr(paren + 1);
          macros_["{cipher_bits}"] = std::string(bits.substr(0, bits.find('/')));
        }
      }
    }
    const auto packet = encode_helo(name);
    co_return co_await each(Command::Helo, packet, false);
  }

  awaitable<CheckResult> mail(const smtp::Mailbox& sender, std::string_view params, std::string_view user) override {
    // A new message: milters that accepted the previous one are back.
    for (auto& m : milters_)
      if (m.state == State::AcceptedMessage) m.state = State::Active;
    in_message_ = true;
    envelope_.clear();
    macros_["i"] = queue_id();
    macros_["{mail_addr}"] = sender.address();
    macros_["{mail_mailer}"] = "smtp";
    macros_["{mail_host}"] = s_.smtp.hostname;
    if (!user.empty()) {
      macros_["{auth_type}"] = "PLAIN";
      macros_["{auth_authen}"] = std::string(user);
    } else {
      macros_.erase("{auth_type}");
      macros_.erase("{auth_authen}");
    }
    std::vector<std::string> args{"<" + sender.address() + ">"};
    for (auto& p : split_words(params)) args.push_back(p);
    const auto packet = encode_mail(args);
    co_return co_await each(Command::Mail, packet, false);
  }

  awaitable<CheckResult> rcpt(const smtp::Mailbox& recipient) override {
    macros_["i"] = queue_id();
    macros_["{rcpt_addr}"] = recipient.address();
    macros_["{rcpt_host}"] = recipient.domain;
    macros_["{rcpt_mailer}"] = "smtp";
    const auto packet = encode_rcpt({"<" + recipient.address() + ">"});
    co_return co_await each(Command::Rcpt, packet, false);
  }

  awaitable<CheckResult> data() override {
    const auto packet = encode_data();
    co_return co_await each(Command::Data, packet, false);
  }

  awaitable<smtp::MessageChanges> message(std::string_view top, const ContentSource& content) override {
    smtp::MessageChanges out;
    MessageEditor ed(top, content, s_.smtp.spool_dir, s_.smtp.max_message_size);
    // RFC 8601 section 5: results that claim to be ours but come from outside are forged.
    if (!outbound_) {
      auto removed = ed.remove_foreign_authentication_results(s_.smtp.hostname);
      if (removed)
        spdlog::info("{}: removed {} Authentication-Results field(s) claiming authserv-id {} from outside",
                     queue_id(), removed, s_.smtp.hostname);
    }
    for (auto& m : milters_) {
      if (m.state == State::Failed) {
        auto r = failed(m, Command::BodyEob);
        if (r.kind != CheckResult::Kind::Continue) {
          out.verdict = r;
          co_return out;
        }
        continue;
      }
      if (m.state != State::Active) continue;
      auto r = co_await message_to(m, ed);
      ed.end_of_milter();
      if (r.kind == CheckResult::Kind::Quarantine && !quarantine_.empty()) continue;  // the others still judge
      if (r.kind != CheckResult::Kind::Continue) {
        out.verdict = r;
        co_return out;
      }
    }
    if (!quarantine_.empty()) {
      out.verdict.kind = CheckResult::Kind::Quarantine;
      out.verdict.reason = quarantine_;
    }
    if (ed.changed()) out.content = ed.result();
    out.envelope = std::move(envelope_);
    envelope_.clear();
    co_return out;
  }

  awaitable<void> abort() override {
    quarantine_.clear();
    envelope_.clear();
    if (!in_message_) co_return;
    in_message_ = false;
    const auto packet = encode_abort();
    for (auto& m : milters_) {
      if (m.state == State::Active || m.state == State::AcceptedMessage) co_await m.conn->send(packet);
      if (m.state == State::AcceptedMessage) m.state = State::Active;
    }
  }

  awaitable<void> close() override {
    const auto packet = encode_quit();
    for (auto& m : milters_) {
      const uint32_t p = m.conn->agreed().protocol;
      if (m.state != State::Failed && m.conn->reusable() && sends(Command::Connect, p) && replies(Command::Connect, p)) {
        auto idle = co_await m.conn->release_idle();
        if (idle) {
          put_idle(m.conn->endpoint().spec, *idle);
          continue;
        }
      }
      if (m.state != State::Failed) co_await m.conn->send(packet);
      m.conn->close();
    }
    milters_.clear();
  }

 private:
  enum class State { Active, AcceptedMessage, AcceptedConnection, Failed, Skipped };
  struct Milter {
    std::unique_ptr<Connection> conn;
    State state = State::Active;
    bool reused = false;  // an idle connection (IdlePool), not yet proven by its SMFIC_CONNECT answer
  };

  // The macros packet for command `c` to milter `m`: its own list when it sent one, else ours.
  std::string macros_for(const Milter& m, Command c) const {
    std::vector<std::pair<std::string, std::string>> list;
    auto add = [&](const std::string& name) {
      auto it = macros_.find(name);
      if (it != macros_.end() && !it->second.empty()) list.emplace_back(name, it->second);
    };
    bool own = false;
    for (auto& sl : m.conn->agreed().symbol_lists) {
      if (sl.stage != c) continue;
      own = true;
      for (auto& name : split_words(sl.macros)) add(name);
    }
    if (!own) {
      for (auto& [name, stage] : macro_stages())
        if (stage == c && configured_macros_.count(name)) add(name);
      if (c == Command::Rcpt || c == Command::Data || c == Command::Eoh || c == Command::BodyEob)
        if (configured_macros_.count("i")) add("i");
    }
    if (list.empty()) return {};
    return encode_macros(c, list);
  }

  // The verdict for a milter that failed (now or earlier), by default_action.
  CheckResult failed(Milter& m, Command c) {
    if (m.state != State::Failed) {
      m.state = State::Failed;
      stats::count_labeled("milter_verdicts", "milter=" + stats::label_value(m.conn->endpoint().spec) + ",verdict=\"error\"");
      spdlog::warn("{}: milter {}: {} at {}; following default_action = {}", queue_id(), m.conn->endpoint().spec,
                   m.conn->error(), stage_name(c), s_.milter.default_action);
    }
    CheckResult r;
    const bool greeting = c == Command::Connect;
    if (s_.milter.default_action == "accept") {
      m.state = State::Skipped;  // as if it were not configured, for the rest of the session
      return r;
    }
    r.kind = CheckResult::Kind::Reply;
    r.reason = "milter " + m.conn->endpoint().spec + " unavailable (" + m.conn->error() + ")";
    if (s_.milter.default_action == "reject")
      r.reply = greeting ? Reply{554, "5.7.1", "Service unavailable"} : Reply{550, "5.7.1", "Command rejected"};
    else
      r.reply = greeting ? Reply{421, "4.7.1", s_.smtp.hostname + " Service temporarily unavailable; try again later"}
                         : Reply{451, "4.7.1", "Service unavailable - try again later"};
    return r;
  }

  void count(const Milter& m, const char* verdict, Command c, const std::string& detail) {
    stats::count_labeled("milter_verdicts",
                         "milter=" + stats::label_value(m.conn->endpoint().spec) + ",verdict=\"" + verdict + "\"");
    spdlog::info("{}: milter {}: {} at {}{}{}", queue_id(), m.conn->endpoint().spec, verdict, stage_name(c),
                 detail.empty() ? "" : ": ", detail);
  }

  // Maps one milter's final reply for command `c`.
  CheckResult verdict(Milter& m, const milter::Reply& r, Command c) {
    CheckResult out;
    const bool greeting = c == Command::Connect;
    const bool connection_stage = greeting || c == Command::Helo;
    switch (r.action) {
      case Action::Continue:
      case Action::Skip:
        return out;
      case Action::Accept:
        m.state = connection_stage ? State::AcceptedConnection : State::AcceptedMessage;
        count(m, "accept", c, "");
        return out;
      case Action::Discard:
        count(m, "discard", c, "");
        out.kind = CheckResult::Kind::Discard;
        out.reason = "milter " + m.conn->endpoint().spec + " discarded it";
        return out;
      case Action::Reject:
        count(m, "reject", c, "");
        out.kind = CheckResult::Kind::Reply;
        out.reply = greeting ? Reply{554, "5.7.1", "Service unavailable"}
                    : c == Command::Rcpt ? Reply{550, "5.7.1", "Recipient rejected"}
                    : c == Command::Mail ? Reply{550, "5.7.1", "Sender rejected"}
                                         : Reply{550, "5.7.1", "Message rejected"};
        out.reason = "milter " + m.conn->endpoint().spec + " rejected";
        return out;
      case Action::TempFail:
        count(m, "tempfail", c, "");
        out.kind = CheckResult::Kind::Reply;
        out.reply = greeting ? Reply{421, "4.7.1", s_.smtp.hostname + " Service temporarily unavailable"}
                             : Reply{451, "4.7.1", "Service unavailable - try again later"};
        out.reason = "milter " + m.conn->endpoint().spec + " tempfailed";
        return out;
      case Action::Shutdown:
        count(m, "shutdown", c, "");
        out.kind = CheckResult::Kind::Reply;
        out.reply = Reply{421, "4.7.0", s_.smtp.hostname + " Service unavailable - closing connection"};
        out.reason = "milter " + m.conn->endpoint().spec + " asked to shut down";
        return out;
      case Action::ReplyCode: {
        // The milter's own words: lines joined by CRLF, code on each, '%%' undone.
        std::vector<std::string> lines;
        auto text = undouble_percent(r.text);
        size_t pos = 0;
        while (pos <= text.size()) {
          auto eol = text.find("\r\n", pos);
          lines.push_back(text.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos));
          if (eol == std::string::npos) break;
          pos = eol + 2;
        }
        auto reply = smtp::parse_reply_lines(lines);
        if (reply.code < 400) reply = r.code < 500 ? Reply{451, "4.7.1", "Service unavailable - try again later"}
                                                   : Reply{550, "5.7.1", "Command rejected"};
        if (greeting && reply.code >= 500) reply.code = 554;
        if (greeting && reply.code < 500) reply.code = 421;
        count(m, reply.code >= 500 ? "reject" : "tempfail", c, reply.summary());
        out.kind = CheckResult::Kind::Reply;
        out.reply = reply;
        out.reason = "milter " + m.conn->endpoint().spec + " replied " + std::to_string(reply.code);
        return out;
      }
      default:
        return out;  // modifications never arrive here (client.cpp sends them to the sink)
    }
  }

  // Sends command `c` to each milter in turn; the first that says more than continue decides.
  awaitable<CheckResult> each(Command c, const std::string& packet, bool content) {
    for (auto& m : milters_) {
      if (m.state == State::Failed) {
        auto r = failed(m, c);
        if (r.kind != CheckResult::Kind::Continue) co_return r;
        continue;
      }
      if (m.state != State::Active) continue;
      if (!sends(c, m.conn->agreed().protocol)) continue;
      const auto macros = macros_for(m, c);
      auto x = co_await m.conn->exchange(c, macros, packet, content);
      if (c == Command::Connect && m.reused && x.failed) {
        // The idle connection was not good after all: a fresh one, once.
        Endpoint endpoint = m.conn->endpoint();
        m.conn = std::make_unique<Connection>(ex_, std::move(endpoint), timeouts_);
        if (co_await m.conn->open(offered_actions())) {
          if (!sends(c, m.conn->agreed().protocol)) {
            m.reused = false;
            continue;
          }
          const auto fresh_macros = macros_for(m, c);
          x = co_await m.conn->exchange(c, fresh_macros, packet, content);
        }
      }
      m.reused = false;
      if (x.failed) {
        auto r = failed(m, c);
        if (r.kind != CheckResult::Kind::Continue) co_return r;
        continue;
      }
      auto r = verdict(m, x.final, c);
      if (r.kind != CheckResult::Kind::Continue) co_return r;
    }
    co_return CheckResult{};
  }

  // Headers, end of headers, body and end of message to one milter, its changes into `ed`.
  awaitable<CheckResult> message_to(Milter& m, MessageEditor& ed) {
    auto& conn = *m.conn;
    const uint32_t protocol = conn.agreed().protocol;
    const bool leading = (protocol & smfip::HDR_LEADSPC) != 0;
    const ChangeSink no_sink;
    auto step = [&](Command c, const std::string& packet, const ChangeSink& sink) -> awaitable<std::optional<CheckResult>> {
      const auto macros = macros_for(m, c);
      auto x = co_await conn.exchange(c, macros, packet, true, sink);
      if (x.failed) co_return failed(m, c);
      if (x.final.action == Action::Skip) co_return std::nullopt;  // no more body for this milter
      auto r = verdict(m, x.final, c);
      co_return r;
    };
    if (sends(Command::Header, protocol)) {
      for (auto& f : ed.shown_fields(leading)) {
        const auto packet = encode_header(f.name, f.value);
        auto r = co_await step(Command::Header, packet, no_sink);
        if (r && (r->kind != CheckResult::Kind::Continue || m.state != State::Active)) co_return *r;
      }
    }
    if (sends(Command::Eoh, protocol)) {
      const auto packet = encode_eoh();
      auto r = co_await step(Command::Eoh, packet, no_sink);
      if (r && (r->kind != CheckResult::Kind::Continue || m.state != State::Active)) co_return *r;
    }
    if (sends(Command::Body, protocol)) {
      std::string chunk(kBodyChunk, '\0');
      uint64_t size = ed.body_size(), offset = 0;
      while (offset < size) {
        size_t got = ed.read_body(offset, chunk.data(), chunk.size());
        if (got == 0) break;
        offset += got;
        const auto packet = encode_body(std::string_view(chunk.data(), got));
        auto r = co_await step(Command::Body, packet, no_sink);
        if (!r) break;  // skip
        if (r->kind != CheckResult::Kind::Continue || m.state != State::Active) co_return *r;
      }
    }
    std::string quarantine;
    ChangeSink sink = [&](milter::Reply&& change, std::string& why) -> bool {
      switch (change.action) {
        case Action::AddHeader: return ed.add(change.name, change.value, leading, why);
        case Action::InsertHeader: return ed.insert(change.index, change.name, change.value, leading, why);
        case Action::ChangeHeader: return ed.change(change.index, change.name, change.value, leading, why);
        case Action::ReplaceBody: return ed.replace_body_chunk(change.body, why);
        case Action::Quarantine:
          quarantine = change.text.empty() ? "quarantined" : printable_ascii(change.text, 200);
          return true;
        case Action::AddRcpt:
        case Action::AddRcptPar:
        case Action::DelRcpt:
        case Action::ChangeFrom: {
          if (envelope_.size() >= kMaxEnvelopeChanges) {
            why = "more than " + std::to_string(kMaxEnvelopeChanges) + " envelope changes";
            return false;
          }
          using Kind = smtp::EnvelopeChange::Kind;
          const Kind kind = change.action == Action::DelRcpt      ? Kind::DeleteRecipient
                            : change.action == Action::ChangeFrom ? Kind::ChangeSender
                                                                  : Kind::AddRecipient;
          envelope_.push_back({kind, std::move(change.address), std::move(change.args), conn.endpoint().spec});
          return true;
        }
        default:
          why = "change not offered";
          return false;
      }
    };
    const auto eom_macros = macros_for(m, Command::BodyEob);
    const auto eom = encode_eom();
    auto x = co_await conn.exchange(Command::BodyEob, eom_macros, eom, true, sink);
    if (x.failed) co_return failed(m, Command::BodyEob);
    in_message_ = false;
    auto r = verdict(m, x.final, Command::BodyEob);
    if (!quarantine.empty() && (r.kind == CheckResult::Kind::Continue)) {
      count(m, "quarantine", Command::BodyEob, quarantine);
      quarantine_ = "milter " + conn.endpoint().spec + " quarantined it: " + quarantine;
      r.kind = CheckResult::Kind::Quarantine;
      r.reason = quarantine_;
    }
    co_return r;
  }

  asio::any_io_executor ex_;
  const Settings& s_;
  const bool outbound_;  // relay_from or submission client: its results are its own business
  Timeouts timeouts_;
  std::vector<Milter> milters_;
  std::map<std::string, std::string, std::less<>> macros_;
  std::set<std::string, std::less<>> configured_macros_;
  bool in_message_ = false;
  std::string quarantine_;
  std::vector<smtp::EnvelopeChange> envelope_;  // this message's, from every milter in order
  static constexpr size_t kMaxEnvelopeChanges = 1000;  // bounds what a milter makes us route
};

}  // namespace

uint32_t offered_actions() {
  return smfif::ADDHDRS | smfif::CHGHDRS | smfif::CHGBODY | smfif::QUARANTINE | smfif::ADDRCPT | smfif::DELRCPT |
         smfif::ADDRCPT_PAR | smfif::CHGFROM;
}

smtp::SessionChecksFactory make_factory(const Settings& settings) {
  smtp::SessionChecksFactory f;
  if (settings.milter.smtp.empty()) return f;
  f.create = [&settings](asio::any_io_executor ex, bool outbound) -> std::unique_ptr<smtp::SessionChecks> {
    if (outbound && !settings.milter.outbound) return nullptr;
    return std::make_unique<Chain>(std::move(ex), settings, outbound);
  };
  return f;
}

}  // namespace mk::milter
