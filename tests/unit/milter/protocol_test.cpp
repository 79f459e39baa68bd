// protocol_test.cpp — the milter codec: byte-exact command encodings against
// hand-written packets (mfdef.h codes, milter-protocol.txt layouts), the
// reply reader's framing (byte at a time, several per feed, oversized,
// truncated), every reply code's payload shape and the malformed ones a
// hostile milter can send, and the negotiation rules.
#include "milter/protocol.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace mk::milter {
namespace {

// Hand-written wire bytes: two-digit hex bytes and 'quoted text', separated
// by spaces: wire("00 00 00 01 'c'").
std::string wire(std::string_view spec) {
  std::string out;
  size_t i = 0;
  auto hex = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  while (i < spec.size()) {
    if (spec[i] == ' ') {
      ++i;
    } else if (spec[i] == '\'') {
      size_t end = spec.find('\'', i + 1);
      out.append(spec.substr(i + 1, end - i - 1));
      i = end + 1;
    } else {
      out.push_back(static_cast<char>(hex(spec[i]) * 16 + hex(spec[i + 1])));
      i += 2;
    }
  }
  return out;
}

// A packet as the reader would hand it over: code and payload.
Packet packet(char code, std::string_view payload_spec) { return Packet{code, wire(payload_spec)}; }

// ---- Encoders ----

struct EncodeCase {
  const char* name;
  std::string got;
  std::string want;
};

TEST(MilterEncode, EachCommandByteExact) {
  const EncodeCase cases[] = {
      {"optneg", encode_optneg(6, smfif::ALL, smfip::ALL), wire("00 00 00 0d 'O' 00 00 00 06 00 00 01 ff 00 1f ff ff")},
      {"optneg v2 minimal", encode_optneg(2, smfif::ADDHDRS, 0), wire("00 00 00 0d 'O' 00 00 00 02 00 00 00 01 00 00 00 00")},
      {"macros", encode_macros(Command::Connect, {{"j", "mx.example"}, {"{daemon_name}", "mailkeep"}}),
       wire("00 00 00 26 'D' 'C' 'j' 00 'mx.example' 00 '{daemon_name}' 00 'mailkeep' 00")},
      {"macros, none", encode_macros(Command::BodyEob, {}), wire("00 00 00 02 'D' 'E'")},
      {"connect inet", encode_connect("mail.example.org", Family::Inet, 49152, "192.0.2.1"),
       wire("00 00 00 1f 'C' 'mail.example.org' 00 '4' c0 00 '192.0.2.1' 00")},
      {"connect inet6", encode_connect("[2001:db8::1]", Family::Inet6, 587, "2001:db8::1"),
       wire("00 00 00 1e 'C' '[2001:db8::1]' 00 '6' 02 4b '2001:db8::1' 00")},
      {"connect unix", encode_connect("localhost", Family::Unix, 0, "/run/x.sock"),
       wire("00 00 00 1a 'C' 'localhost' 00 'L' 00 00 '/run/x.sock' 00")},
      {"connect unknown omits port and address", encode_connect("localhost", Family::Unknown, 25, "ignored"),
       wire("00 00 00 0c 'C' 'localhost' 00 'U'")},
      {"helo", encode_helo("client.example"), wire("00 00 00 10 'H' 'client.example' 00")},
      {"mail with params", encode_mail({"<a@b.example>", "SIZE=100", "BODY=8BITMIME"}),
       wire("00 00 00 26 'M' '<a@b.example>' 00 'SIZE=100' 00 'BODY=8BITMIME' 00")},
      {"mail null sender", encode_mail({"<>"}), wire("00 00 00 04 'M' '<>' 00")},
      {"rcpt", encode_rcpt({"<c@d.example>"}), wire("00 00 00 0f 'R' '<c@d.example>' 00")},
      {"data", encode_data(), wire("00 00 00 01 'T'")},
      {"header", encode_header("Subject", "hello"), wire("00 00 00 0f 'L' 'Subject' 00 'hello' 00")},
      {"header folded", encode_header("To", "a,\n\tb"), wire("00 00 00 0a 'L' 'To' 00 'a,' 0a 09 'b' 00")},
      {"eoh", encode_eoh(), wire("00 00 00 01 'N'")},
      {"body", encode_body("line\r\n"), wire("00 00 00 07 'B' 'line' 0d 0a")},
      {"body keeps NUL bytes", encode_body(std::string("a\0b", 3)), wire("00 00 00 04 'B' 'a' 00 'b'")},
      {"eom", encode_eom(), wire("00 00 00 01 'E'")},
      {"abort", encode_abort(), wire("00 00 00 01 'A'")},
      {"quit", encode_quit(), wire("00 00 00 01 'Q'")},
      {"quit_nc", encode_quit_nc(), wire("00 00 00 01 'K'")},
      {"unknown", encode_unknown("XFOO bar"), wire("00 00 00 0a 'U' 'XFOO bar' 00")},
      {"string cut at NUL", encode_helo(std::string("evil\0rest", 9)), wire("00 00 00 06 'H' 'evil' 00")},
      {"header value cut at NUL", encode_header("X", std::string("v\0w", 3)), wire("00 00 00 05 'L' 'X' 00 'v' 00")},
  };
  for (auto& c : cases) EXPECT_EQ(c.got, c.want) << c.name;
}

TEST(MilterEncode, BodyChunkBound) {
  std::string chunk(kBodyChunk, 'x');
  auto p = encode_body(chunk);
  EXPECT_EQ(p.substr(0, 5), wire("00 01 00 00 'B'"));  // 65535 + 1
  EXPECT_EQ(p.size(), 5 + kBodyChunk);
  chunk.push_back('x');
  EXPECT_THROW(encode_body(chunk), std::length_error);
}

TEST(MilterEncode, MailNeedsAnAddress) {
  EXPECT_THROW(encode_mail({}), std::invalid_argument);
  EXPECT_THROW(encode_rcpt({}), std::invalid_argument);
}

// ---- ReplyReader ----

// A stream as a milter writes it after SMFIC_BODYEOB: two modifications, a progress, the verdict.
const std::string kEomStream = wire(
    "00 00 00 0f 'h' 'X-Spam' 00 'yes, 5' 00 "
    "00 00 00 14 'm' 00 00 00 01 'Subject' 00 '[SPAM]' 00 "
    "00 00 00 01 'p' "
    "00 00 00 01 'c'");

std::vector<Packet> drain(ReplyReader& r) {
  std::vector<Packet> out;
  while (auto p = r.next()) out.push_back(std::move(*p));
  return out;
}

TEST(MilterReader, WholeStreamYieldsEachPacket) {
  ReplyReader r;
  ASSERT_TRUE(r.feed(kEomStream)) << r.error();
  auto got = drain(r);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].code, 'h');
  EXPECT_EQ(got[0].payload, wire("'X-Spam' 00 'yes, 5' 00"));
  EXPECT_EQ(got[1].code, 'm');
  EXPECT_EQ(got[1].payload, wire("00 00 00 01 'Subject' 00 '[SPAM]' 00"));
  EXPECT_EQ(got[2].code, 'p');
  EXPECT_EQ(got[2].payload, "");
  EXPECT_EQ(got[3].code, 'c');
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(MilterReader, OneByteAtATimeYieldsTheSamePackets) {
  ReplyReader whole;
  ASSERT_TRUE(whole.feed(kEomStream));
  auto want = drain(whole);

  ReplyReader r;
  std::vector<Packet> got;
  for (char c : kEomStream) {
    ASSERT_TRUE(r.feed(std::string_view(&c, 1))) << r.error();
    while (auto p = r.next()) got.push_back(std::move(*p));
  }
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].code, want[i].code) << i;
    EXPECT_EQ(got[i].payload, want[i].payload) << i;
  }
}

TEST(MilterReader, TwoPacketsInOneFeed) {
  ReplyReader r;
  ASSERT_TRUE(r.feed(wire("00 00 00 01 'p' 00 00 00 01 'a'")));
  auto first = r.next();
  auto second = r.next();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->code, 'p');
  EXPECT_EQ(second->code, 'a');
  EXPECT_FALSE(r.next());
}

TEST(MilterReader, TruncatedPayloadWaitsUntilComplete) {
  ReplyReader r;
  ASSERT_TRUE(r.feed(wire("00 00 00 10 'y' '550 5.7'")));
  EXPECT_FALSE(r.next());
  EXPECT_EQ(r.buffered(), 12u);
  ASSERT_TRUE(r.feed(wire("'.1 spam' 00")));
  auto p = r.next();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->code, 'y');
  EXPECT_EQ(p->payload, wire("'550 5.7.1 spam' 00"));
}

TEST(MilterReader, PartialLengthFieldWaits) {
  ReplyReader r;
  ASSERT_TRUE(r.feed(wire("00 00")));
  EXPECT_FALSE(r.next());
  ASSERT_TRUE(r.feed(wire("00 01")));
  EXPECT_FALSE(r.next());  // length known, code byte missing
  ASSERT_TRUE(r.feed("c"));
  ASSERT_TRUE(r.next());
}

TEST(MilterReader, OversizedLengthIsAnErrorAtOnce) {
  ReplyReader r;
  EXPECT_FALSE(r.feed(wire("00 10 00 01")));  // kMaxPacket + 1, before any payload arrives
  EXPECT_NE(r.error().find("exceeds"), std::string::npos) << r.error();
  EXPECT_TRUE(r.failed());
}

TEST(MilterReader, LengthAtTheBoundIsAccepted) {
  ReplyReader r;
  std::string p = wire("00 10 00 00 'b'") + std::string(kMaxPacket - 1, 'x');
  for (size_t off = 0; off < p.size(); off += 4096) ASSERT_TRUE(r.feed(std::string_view(p).substr(off, 4096)));
  auto got = r.next();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->code, 'b');
  EXPECT_EQ(got->payload.size(), kMaxPacket - 1);
}

TEST(MilterReader, ZeroLengthIsAnErrorAndErrorsStick) {
  ReplyReader r;
  EXPECT_FALSE(r.feed(wire("00 00 00 01 'c' 00 00 00 00 'c'")));
  EXPECT_NE(r.error().find("length 0"), std::string::npos) << r.error();
  EXPECT_FALSE(r.next()) << "nothing is returned once framing is lost";
  EXPECT_FALSE(r.feed(wire("00 00 00 01 'c'")));
  EXPECT_FALSE(r.next());
}

TEST(MilterReader, LongRunOfPacketsDoesNotGrowTheBuffer) {
  ReplyReader r;
  for (int i = 0; i < 10000; ++i) {
    ASSERT_TRUE(r.feed(wire("00 00 00 01 'p' 00 00")));
    ASSERT_TRUE(r.next());
    ASSERT_TRUE(r.feed(wire("00 01 'c'")));
    ASSERT_TRUE(r.next());
    ASSERT_EQ(r.buffered(), 0u);
  }
}

// ---- parse_reply ----

struct ReplyCase {
  const char* name;
  Packet in;
  Action action;
  std::string text = {};
  int code = 0;
  uint32_t index = 0;
  std::string name_field = {}, value = {}, address = {}, args = {}, body = {};
};

TEST(MilterReply, EachCodeParses) {
  const ReplyCase cases[] = {
      {"continue", packet('c', ""), Action::Continue},
      {"accept", packet('a', ""), Action::Accept},
      {"discard", packet('d', ""), Action::Discard},
      {"reject", packet('r', ""), Action::Reject},
      {"tempfail", packet('t', ""), Action::TempFail},
      {"skip", packet('s', ""), Action::Skip},
      {"progress", packet('p', ""), Action::Progress},
      {"shutdown", packet('4', ""), Action::Shutdown},
      {"replycode", packet('y', "'550 5.7.1 Go away' 00"), Action::ReplyCode, "550 5.7.1 Go away", 550},
      {"replycode 421", packet('y', "'421 4.7.0 bye' 00"), Action::ReplyCode, "421 4.7.0 bye", 421},
      {"replycode without text (smfi_setreply, no message)", packet('y', "'450 ' 00"), Action::ReplyCode, "450 ", 450},
      {"replycode without enhanced code", packet('y', "'554 no thanks' 00"), Action::ReplyCode, "554 no thanks", 554},
      {"replycode multi-line (smfi_setmlreply)", packet('y', "'550-5.7.1 first' 0d 0a '550-5.7.1 second' 0d 0a '550 5.7.1 third' 00"),
       Action::ReplyCode, "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third", 550},
      {"quarantine", packet('q', "'virus found' 00"), Action::Quarantine, "virus found"},
      {"addheader", packet('h', "'X-Spam' 00 'yes' 00"), Action::AddHeader, "", 0, 0, "X-Spam", "yes"},
      {"addheader empty value", packet('h', "'X-Flag' 00 00"), Action::AddHeader, "", 0, 0, "X-Flag", ""},
      {"insheader at top", packet('i', "00 00 00 00 'DKIM-Signature' 00 'v=1; a=rsa' 00"), Action::InsertHeader, "", 0, 0,
       "DKIM-Signature", "v=1; a=rsa"},
      {"chgheader second", packet('m', "00 00 00 02 'Subject' 00 'new' 00"), Action::ChangeHeader, "", 0, 2, "Subject", "new"},
      {"chgheader index 0 is the first", packet('m', "00 00 00 00 'Subject' 00 00"), Action::ChangeHeader, "", 0, 1,
       "Subject", ""},
      {"addrcpt", packet('+', "'<new@x.example>' 00"), Action::AddRcpt, "", 0, 0, "", "", "<new@x.example>"},
      {"delrcpt", packet('-', "'<old@x.example>' 00"), Action::DelRcpt, "", 0, 0, "", "", "<old@x.example>"},
      {"addrcpt_par", packet('2', "'<new@x.example>' 00 'NOTIFY=NEVER' 00"), Action::AddRcptPar, "", 0, 0, "", "",
       "<new@x.example>", "NOTIFY=NEVER"},
      {"addrcpt_par without args", packet('2', "'<new@x.example>' 00"), Action::AddRcptPar, "", 0, 0, "", "",
       "<new@x.example>", ""},
      {"chgfrom", packet('e', "'<from@x.example>' 00 'SIZE=10 BODY=8BITMIME' 00"), Action::ChangeFrom, "", 0, 0, "", "",
       "<from@x.example>", "SIZE=10 BODY=8BITMIME"},
      {"replbody raw", packet('b', "'new body' 0d 0a 00 'x'"), Action::ReplaceBody, "", 0, 0, "", "", "", "",
       std::string("new body\r\n\0x", 12)},
      {"replbody empty (smfi_replacebody of 0 bytes)", packet('b', ""), Action::ReplaceBody},
  };
  for (auto& c : cases) {
    std::string error;
    auto r = parse_reply(c.in, error);
    ASSERT_TRUE(r) << c.name << ": " << error;
    EXPECT_EQ(r->action, c.action) << c.name;
    EXPECT_EQ(r->text, c.text) << c.name;
    EXPECT_EQ(r->code, c.code) << c.name;
    EXPECT_EQ(r->index, c.index) << c.name;
    EXPECT_EQ(r->name, c.name_field) << c.name;
    EXPECT_EQ(r->value, c.value) << c.name;
    EXPECT_EQ(r->address, c.address) << c.name;
    EXPECT_EQ(r->args, c.args) << c.name;
    EXPECT_EQ(r->body, c.body) << c.name;
  }
}

struct BadCase {
  const char* name;
  Packet in;
  const char* error_has;
};

TEST(MilterReply, MalformedRepliesAreErrors) {
  const BadCase cases[] = {
      {"continue with data", packet('c', "'x'"), "1 bytes after the payload"},
      {"accept with data", packet('a', "00"), "bytes after"},
      {"replycode 2xx", packet('y', "'250 ok' 00"), "4xx or 5xx"},
      {"replycode 3xx", packet('y', "'354 go' 00"), "4xx or 5xx"},
      {"replycode missing NUL", packet('y', "'550 no nul'"), "NUL-terminated"},
      {"replycode empty", packet('y', ""), "NUL-terminated"},
      {"replycode embedded NUL", packet('y', "'550 a' 00 'b' 00"), "NUL-terminated"},
      {"replycode too short", packet('y', "'550' 00"), "4xx or 5xx"},
      {"replycode two digits", packet('y', "'55 x' 00"), "4xx or 5xx"},
      {"replycode letters", packet('y', "'5xx text' 00"), "4xx or 5xx"},
      {"replycode no separator", packet('y', "'550x' 00"), "space"},
      {"replycode last line continued", packet('y', "'550-more' 00"), "space"},
      {"replycode first line not continued", packet('y', "'550 a' 0d 0a '550 b' 00"), "'-'"},
      {"replycode codes differ", packet('y', "'550-a' 0d 0a '451 b' 00"), "different codes"},
      {"replycode bare LF (SMTP injection)", packet('y', "'550 a' 0a '250 ok' 00"), "bare CR or LF"},
      {"replycode bare CR", packet('y', "'550 a' 0d '250 ok' 00"), "bare CR or LF"},
      {"replycode trailing CRLF", packet('y', "'550 a' 0d 0a 00"), "'-'"},
      {"replycode enhanced class differs", packet('y', "'550 4.7.1 x' 00"), "class"},
      {"quarantine missing NUL", packet('q', "'spam'"), "NUL"},
      {"quarantine trailing bytes", packet('q', "'spam' 00 'x'"), "bytes after"},
      {"addheader missing value NUL", packet('h', "'X-Spam' 00 'yes'"), "NUL"},
      {"addheader missing both", packet('h', "'X-Spam'"), "NUL"},
      {"addheader empty name", packet('h', "00 'v' 00"), "invalid header name"},
      {"addheader name with space", packet('h', "'X Spam' 00 'v' 00"), "invalid header name"},
      {"addheader name with colon", packet('h', "'X-Spam:' 00 'v' 00"), "invalid header name"},
      {"addheader name with CRLF", packet('h', "'X' 0d 0a 'Bcc' 00 'v' 00"), "invalid header name"},
      {"chgheader short index", packet('m', "00 00 01"), "4-byte index"},
      {"chgheader empty", packet('m', ""), "4-byte index"},
      {"chgheader negative index", packet('m', "ff ff ff ff 'Subject' 00 'x' 00"), "negative"},
      {"insheader missing strings", packet('i', "00 00 00 01"), "NUL"},
      {"insheader trailing bytes", packet('i', "00 00 00 01 'a' 00 'b' 00 'x'"), "bytes after"},
      {"addrcpt missing NUL", packet('+', "'<a@b>'"), "NUL"},
      {"addrcpt empty payload", packet('+', ""), "NUL"},
      {"addrcpt empty address", packet('+', "00"), "empty address"},
      {"addrcpt with CRLF (SMTP injection)", packet('+', "'<a@b>' 0d 0a 'DATA' 00"), "control character"},
      {"addrcpt two strings", packet('+', "'<a@b>' 00 'x' 00"), "bytes after"},
      {"delrcpt empty", packet('-', "00"), "empty address"},
      {"addrcpt_par args missing NUL", packet('2', "'<a@b>' 00 'NOTIFY=NEVER'"), "args lack"},
      {"addrcpt_par three strings", packet('2', "'<a@b>' 00 'x' 00 'y' 00"), "bytes after"},
      {"chgfrom args with LF", packet('e', "'<a@b>' 00 'SIZE=1' 0a 00"), "control character"},
      {"optneg outside negotiation", packet('O', "00 00 00 06 00 00 00 00 00 00 00 00"), "SMFIC_OPTNEG"},
      {"setsymlist", packet('l', "00 00 00 00 'j' 00"), "SMFIR_SETSYMLIST"},
      {"conn_fail", packet('f', ""), "SMFIR_CONN_FAIL"},
      {"unknown code", packet('Z', ""), "unknown milter reply code 0x5a 'Z'"},
      {"NUL code", packet('\0', ""), "unknown milter reply code 0x00"},
      {"high code", packet('\xff', ""), "0xff"},
  };
  for (auto& c : cases) {
    std::string error;
    auto r = parse_reply(c.in, error);
    EXPECT_FALSE(r) << c.name;
    EXPECT_NE(error.find(c.error_has), std::string::npos) << c.name << ": got '" << error << "', want '" << c.error_has << "'";
  }
}

TEST(MilterReply, PercentUndoubling) {
  EXPECT_EQ(undouble_percent("550 100%% sure"), "550 100% sure");
  EXPECT_EQ(undouble_percent("50% off"), "50 off");  // a lone '%' is dropped, as Postfix does
  EXPECT_EQ(undouble_percent("%%%"), "%");
  EXPECT_EQ(undouble_percent("end%"), "end");
  EXPECT_EQ(undouble_percent("plain"), "plain");
}

// ---- Negotiation ----

TEST(MilterOptNeg, PlainReply) {
  std::string error;
  auto o = parse_optneg(packet('O', "00 00 00 06 00 00 00 11 00 00 00 a0"), error);
  ASSERT_TRUE(o) << error;
  EXPECT_EQ(o->version, 6u);
  EXPECT_EQ(o->actions, smfif::ADDHDRS | smfif::CHGHDRS);
  EXPECT_EQ(o->protocol, smfip::NR_HDR | smfip::NOHDRS);
  EXPECT_TRUE(o->symbol_lists.empty());
}

TEST(MilterOptNeg, SymbolLists) {
  std::string error;
  auto o = parse_optneg(packet('O', "00 00 00 06 00 00 01 00 00 00 00 00 "
                                    "00 00 00 02 '{mail_addr} {auth_authen}' 00 "
                                    "00 00 00 06 00"),
                        error);
  ASSERT_TRUE(o) << error;
  ASSERT_EQ(o->symbol_lists.size(), 2u);
  EXPECT_EQ(o->symbol_lists[0].stage, Command::Mail);
  EXPECT_EQ(o->symbol_lists[0].macros, "{mail_addr} {auth_authen}");
  EXPECT_EQ(o->symbol_lists[1].stage, Command::Eoh);
  EXPECT_EQ(o->symbol_lists[1].macros, "");
}

TEST(MilterOptNeg, MalformedReplies) {
  const BadCase cases[] = {
      {"short", packet('O', "00 00 00 06 00 00 00 00"), "needs 12"},
      {"empty", packet('O', ""), "needs 12"},
      {"not optneg", packet('c', ""), "expected SMFIC_OPTNEG, got SMFIR_CONTINUE"},
      {"truncated stage", packet('O', "00 00 00 06 00 00 00 00 00 00 00 00 00 00"), "truncated"},
      {"unknown stage", packet('O', "00 00 00 06 00 00 00 00 00 00 00 00 00 00 00 07 'j' 00"), "unknown stage 7"},
      {"huge stage", packet('O', "00 00 00 06 00 00 00 00 00 00 00 00 ff ff ff ff 'j' 00"), "unknown stage"},
      {"list missing NUL", packet('O', "00 00 00 06 00 00 00 00 00 00 00 00 00 00 00 01 'j'"), "NUL"},
      {"stage twice", packet('O', "00 00 00 06 00 00 00 00 00 00 00 00 00 00 00 01 'j' 00 00 00 00 01 'i' 00"), "twice"},
  };
  for (auto& c : cases) {
    std::string error;
    EXPECT_FALSE(parse_optneg(c.in, error)) << c.name;
    EXPECT_NE(error.find(c.error_has), std::string::npos) << c.name << ": got '" << error << "', want '" << c.error_has << "'";
  }
}

TEST(MilterOptNeg, NegotiateChecksTheReplyAgainstTheOffer) {
  const OptNeg offer{kVersion, smfif::ALL & ~smfif::CHGBODY, smfip::ALL & ~smfip::NR_BODY, {}};
  std::string error;

  auto ok = negotiate(offer, OptNeg{6, smfif::ADDHDRS, smfip::NOBODY | smfip::NR_HDR, {}}, error);
  ASSERT_TRUE(ok) << error;
  EXPECT_EQ(ok->actions, smfif::ADDHDRS);
  EXPECT_EQ(ok->protocol, smfip::NOBODY | smfip::NR_HDR);

  struct {
    const char* name;
    OptNeg reply;
    const char* error_has;
  } bad[] = {
      {"newer version", {7, 0, 0, {}}, "version 7"},
      {"version 1", {1, 0, 0, {}}, "version 1"},
      {"version 0", {0, 0, 0, {}}, "version 0"},
      {"unoffered action", {6, smfif::CHGBODY | smfif::ADDHDRS, 0, {}}, "actions 0x2 "},
      {"unoffered protocol bit", {6, 0, smfip::NR_BODY, {}}, "protocol flags 0x80000 "},
      {"bit outside the protocol", {6, 0, 0x40000000, {}}, "protocol flags 0x40000000"},
  };
  for (auto& c : bad) {
    error.clear();
    EXPECT_FALSE(negotiate(offer, c.reply, error)) << c.name;
    EXPECT_NE(error.find(c.error_has), std::string::npos) << c.name << ": " << error;
  }
}

TEST(MilterOptNeg, OlderMilterGetsNoCommandsItsVersionLacks) {
  const OptNeg offer{kVersion, smfif::ALL, smfip::ALL, {}};
  std::string error;
  auto v2 = negotiate(offer, OptNeg{2, smfif::ADDHDRS, 0, {}}, error);
  ASSERT_TRUE(v2) << error;
  EXPECT_FALSE(sends(Command::Unknown, v2->protocol));
  EXPECT_FALSE(sends(Command::Data, v2->protocol));
  auto v3 = negotiate(offer, OptNeg{3, 0, 0, {}}, error);
  ASSERT_TRUE(v3);
  EXPECT_TRUE(sends(Command::Unknown, v3->protocol));
  EXPECT_FALSE(sends(Command::Data, v3->protocol));
  auto v4 = negotiate(offer, OptNeg{4, 0, 0, {}}, error);
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->protocol, 0u);
}

// ---- Stage and action rules ----

TEST(MilterRules, SendsAndReplies) {
  struct {
    Command c;
    uint32_t protocol;
    bool sends, replies;
  } cases[] = {
      {Command::Connect, 0, true, true},
      {Command::Connect, smfip::NOCONNECT, false, false},
      {Command::Connect, smfip::NR_CONN, true, false},
      {Command::Helo, smfip::NOHELO, false, false},
      {Command::Helo, smfip::NR_HELO, true, false},
      {Command::Mail, smfip::NOMAIL, false, false},
      {Command::Mail, smfip::NR_MAIL, true, false},
      {Command::Rcpt, smfip::NORCPT, false, false},
      {Command::Rcpt, smfip::NR_RCPT, true, false},
      {Command::Data, smfip::NODATA, false, false},
      {Command::Data, smfip::NR_DATA, true, false},
      {Command::Header, smfip::NOHDRS, false, false},
      {Command::Header, smfip::NOHREPL, true, false},
      {Command::Eoh, smfip::NOEOH, false, false},
      {Command::Eoh, smfip::NR_EOH, true, false},
      {Command::Body, smfip::NOBODY, false, false},
      {Command::Body, smfip::NR_BODY, true, false},
      {Command::Unknown, smfip::NOUNKNOWN, false, false},
      {Command::Unknown, smfip::NR_UNKN, true, false},
      {Command::Body, smfip::ALL & ~(smfip::NOBODY | smfip::NR_BODY), true, true},
      {Command::BodyEob, smfip::ALL, true, true},
      {Command::OptNeg, smfip::ALL, true, true},
      {Command::Macro, 0, true, false},
      {Command::Abort, 0, true, false},
      {Command::Quit, 0, true, false},
      {Command::QuitNc, 0, true, false},
  };
  for (auto& c : cases) {
    EXPECT_EQ(sends(c.c, c.protocol), c.sends) << command_name(c.c) << " protocol " << c.protocol;
    EXPECT_EQ(replies(c.c, c.protocol), c.replies) << command_name(c.c) << " protocol " << c.protocol;
  }
}

TEST(MilterRules, FinalAndModification) {
  struct {
    Action a;
    bool final, modification;
  } cases[] = {
      {Action::Continue, true, false},     {Action::Accept, true, false},      {Action::Discard, true, false},
      {Action::Reject, true, false},       {Action::TempFail, true, false},    {Action::ReplyCode, true, false},
      {Action::Shutdown, true, false},     {Action::Skip, true, false},        {Action::Progress, false, false},
      {Action::Quarantine, false, true},   {Action::AddHeader, false, true},   {Action::InsertHeader, false, true},
      {Action::ChangeHeader, false, true}, {Action::AddRcpt, false, true},     {Action::AddRcptPar, false, true},
      {Action::DelRcpt, false, true},      {Action::ReplaceBody, false, true}, {Action::ChangeFrom, false, true},
  };
  for (auto& c : cases) {
    EXPECT_EQ(is_final(c.a), c.final) << static_cast<int>(c.a);
    EXPECT_EQ(is_modification(c.a), c.modification) << static_cast<int>(c.a);
  }
}

TEST(MilterRules, MayFollowsTheActionMask) {
  struct {
    Action a;
    uint32_t needs;
  } cases[] = {
      {Action::AddHeader, smfif::ADDHDRS},   {Action::InsertHeader, smfif::ADDHDRS}, {Action::ChangeHeader, smfif::CHGHDRS},
      {Action::AddRcpt, smfif::ADDRCPT},     {Action::AddRcptPar, smfif::ADDRCPT_PAR}, {Action::DelRcpt, smfif::DELRCPT},
      {Action::ReplaceBody, smfif::CHGBODY}, {Action::ChangeFrom, smfif::CHGFROM},   {Action::Quarantine, smfif::QUARANTINE},
  };
  for (auto& c : cases) {
    EXPECT_TRUE(may(c.a, c.needs, 0)) << static_cast<int>(c.a);
    EXPECT_FALSE(may(c.a, smfif::ALL & ~c.needs, smfip::ALL)) << static_cast<int>(c.a);
  }
  EXPECT_TRUE(may(Action::Continue, 0, 0));
  EXPECT_TRUE(may(Action::ReplyCode, 0, 0));
  EXPECT_TRUE(may(Action::Progress, 0, 0));
  EXPECT_FALSE(may(Action::Skip, smfif::ALL, 0)) << "SMFIR_SKIP needs SMFIP_SKIP";
  EXPECT_TRUE(may(Action::Skip, 0, smfip::SKIP));
}

TEST(MilterRules, Permitted) {
  const OptNeg agreed{6, smfif::ADDHDRS | smfif::CHGHDRS, smfip::SKIP | smfip::NR_HDR, {}};
  struct {
    const char* name;
    Action a;
    Command after;
    bool ok;
    const char* why_has = "";
  } cases[] = {
      {"addheader at eom", Action::AddHeader, Command::BodyEob, true},
      {"chgheader at eom", Action::ChangeHeader, Command::BodyEob, true},
      {"continue at eom", Action::Continue, Command::BodyEob, true},
      {"progress at eom", Action::Progress, Command::BodyEob, true},
      {"replycode at rcpt", Action::ReplyCode, Command::Rcpt, true},
      {"discard at mail", Action::Discard, Command::Mail, true},
      {"skip at body", Action::Skip, Command::Body, true},
      {"accept at connect", Action::Accept, Command::Connect, true},
      {"addheader at rcpt", Action::AddHeader, Command::Rcpt, false, "only after SMFIC_BODYEOB"},
      {"unnegotiated replbody", Action::ReplaceBody, Command::BodyEob, false, "not negotiated"},
      {"unnegotiated quarantine", Action::Quarantine, Command::BodyEob, false, "not negotiated"},
      {"skip at rcpt", Action::Skip, Command::Rcpt, false, "only after SMFIC_BODY"},
      {"discard at connect", Action::Discard, Command::Connect, false, "no message"},
      {"discard at helo", Action::Discard, Command::Helo, false, "no message"},
      {"reply to a no-reply header", Action::Continue, Command::Header, false, "gets no reply"},
      {"reply to abort", Action::Continue, Command::Abort, false, "gets no reply"},
      {"reply to macro", Action::Continue, Command::Macro, false, "gets no reply"},
      {"action instead of optneg", Action::Continue, Command::OptNeg, false, "in place of"},
  };
  for (auto& c : cases) {
    std::string why;
    EXPECT_EQ(permitted(c.a, c.after, agreed, why), c.ok) << c.name << ": " << why;
    if (!c.ok) {
      EXPECT_NE(why.find(c.why_has), std::string::npos) << c.name << ": " << why;
    }
  }
  std::string why;
  const OptNeg no_skip{6, 0, 0, {}};
  EXPECT_FALSE(permitted(Action::Skip, Command::Body, no_skip, why));
  EXPECT_NE(why.find("not negotiated"), std::string::npos) << why;
}

TEST(MilterRules, MacroStagesAndNames) {
  EXPECT_EQ(macro_stage_command(smfim::CONNECT), Command::Connect);
  EXPECT_EQ(macro_stage_command(smfim::HELO), Command::Helo);
  EXPECT_EQ(macro_stage_command(smfim::ENVFROM), Command::Mail);
  EXPECT_EQ(macro_stage_command(smfim::ENVRCPT), Command::Rcpt);
  EXPECT_EQ(macro_stage_command(smfim::DATA), Command::Data);
  EXPECT_EQ(macro_stage_command(smfim::EOM), Command::BodyEob);
  EXPECT_EQ(macro_stage_command(smfim::EOH), Command::Eoh);
  EXPECT_FALSE(macro_stage_command(7));
  EXPECT_EQ(command_name(Command::QuitNc), "SMFIC_QUIT_NC");
  EXPECT_EQ(response_name('y'), "SMFIR_REPLYCODE");
  EXPECT_EQ(response_name('2'), "SMFIR_ADDRCPT_PAR");
  EXPECT_EQ(response_name('Z'), "unknown");
}

// The reader and the parser together over the end-of-message stream.
TEST(MilterReply, EomStreamEndToEnd) {
  ReplyReader r;
  ASSERT_TRUE(r.feed(kEomStream));
  const OptNeg agreed{6, smfif::ADDHDRS | smfif::CHGHDRS, 0, {}};
  std::vector<Action> actions;
  while (auto p = r.next()) {
    std::string error, why;
    auto reply = parse_reply(*p, error);
    ASSERT_TRUE(reply) << error;
    EXPECT_TRUE(permitted(reply->action, Command::BodyEob, agreed, why)) << why;
    actions.push_back(reply->action);
    if (is_final(reply->action)) break;
  }
  EXPECT_EQ(actions, (std::vector<Action>{Action::AddHeader, Action::ChangeHeader, Action::Progress, Action::Continue}));
}

}  // namespace
}  // namespace mk::milter
