// protocol.cpp — see protocol.h.
#include "milter/protocol.h"

#include <limits>
#include <stdexcept>

namespace mk::milter {
namespace {

// ---- Tables (one row per code: the rules live here, not in if-chains). ----

// What each command costs in the negotiated protocol mask.
struct CommandRow {
  Command command;
  std::string_view name;
  uint32_t skip_flag;   // SMFIP_NO*: the milter asked not to get it (0: always sent)
  uint32_t no_reply;    // SMFIP_NR_*: the milter will not answer (0: see `answered`)
  bool answered;        // whether a reply follows at all
};

constexpr CommandRow kCommands[] = {
    {Command::Abort, "SMFIC_ABORT", 0, 0, false},
    {Command::Body, "SMFIC_BODY", smfip::NOBODY, smfip::NR_BODY, true},
    {Command::Connect, "SMFIC_CONNECT", smfip::NOCONNECT, smfip::NR_CONN, true},
    {Command::Macro, "SMFIC_MACRO", 0, 0, false},
    {Command::BodyEob, "SMFIC_BODYEOB", 0, 0, true},
    {Command::Helo, "SMFIC_HELO", smfip::NOHELO, smfip::NR_HELO, true},
    {Command::QuitNc, "SMFIC_QUIT_NC", 0, 0, false},
    {Command::Header, "SMFIC_HEADER", smfip::NOHDRS, smfip::NR_HDR, true},
    {Command::Mail, "SMFIC_MAIL", smfip::NOMAIL, smfip::NR_MAIL, true},
    {Command::Eoh, "SMFIC_EOH", smfip::NOEOH, smfip::NR_EOH, true},
    {Command::OptNeg, "SMFIC_OPTNEG", 0, 0, true},
    {Command::Quit, "SMFIC_QUIT", 0, 0, false},
    {Command::Rcpt, "SMFIC_RCPT", smfip::NORCPT, smfip::NR_RCPT, true},
    {Command::Data, "SMFIC_DATA", smfip::NODATA, smfip::NR_DATA, true},
    {Command::Unknown, "SMFIC_UNKNOWN", smfip::NOUNKNOWN, smfip::NR_UNKN, true},
};

const CommandRow* command_row(Command c) {
  for (auto& row : kCommands)
    if (row.command == c) return &row;
  return nullptr;
}

// How a reply's payload is laid out.
enum class Shape {
  Empty,          // nothing
  ReplyText,      // "ddd text" NUL, possibly multi-line
  Text,           // one NUL-terminated string (quarantine reason)
  Address,        // one NUL-terminated address
  AddressArgs,    // address NUL [args NUL]
  Header,         // name NUL value NUL
  IndexedHeader,  // uint32 index, name NUL value NUL
  Raw,            // bytes, no terminator
  Refused,        // defined by the protocol, never valid as a reply here
};

struct ReplyRow {
  Response code;
  std::string_view name;
  Shape shape;
  Action action;          // meaningless for Refused
  uint32_t action_flag;   // SMFIF_* the action needs (0: none)
};

constexpr ReplyRow kReplies[] = {
    {Response::AddRcpt, "SMFIR_ADDRCPT", Shape::Address, Action::AddRcpt, smfif::ADDRCPT},
    {Response::DelRcpt, "SMFIR_DELRCPT", Shape::Address, Action::DelRcpt, smfif::DELRCPT},
    {Response::AddRcptPar, "SMFIR_ADDRCPT_PAR", Shape::AddressArgs, Action::AddRcptPar, smfif::ADDRCPT_PAR},
    {Response::Shutdown, "SMFIR_SHUTDOWN", Shape::Empty, Action::Shutdown, 0},
    {Response::Accept, "SMFIR_ACCEPT", Shape::Empty, Action::Accept, 0},
    {Response::ReplaceBody, "SMFIR_REPLBODY", Shape::Raw, Action::ReplaceBody, smfif::CHGBODY},
    {Response::Continue, "SMFIR_CONTINUE", Shape::Empty, Action::Continue, 0},
    {Response::Discard, "SMFIR_DISCARD", Shape::Empty, Action::Discard, 0},
    {Response::ChangeFrom, "SMFIR_CHGFROM", Shape::AddressArgs, Action::ChangeFrom, smfif::CHGFROM},
    {Response::ConnFail, "SMFIR_CONN_FAIL", Shape::Refused, Action::Continue, 0},
    {Response::AddHeader, "SMFIR_ADDHEADER", Shape::Header, Action::AddHeader, smfif::ADDHDRS},
    {Response::InsertHeader, "SMFIR_INSHEADER", Shape::IndexedHeader, Action::InsertHeader, smfif::ADDHDRS},
    {Response::SetSymList, "SMFIR_SETSYMLIST", Shape::Refused, Action::Continue, 0},
    {Response::ChangeHeader, "SMFIR_CHGHEADER", Shape::IndexedHeader, Action::ChangeHeader, smfif::CHGHDRS},
    {Response::OptNeg, "SMFIC_OPTNEG", Shape::Refused, Action::Continue, 0},
    {Response::Progress, "SMFIR_PROGRESS", Shape::Empty, Action::Progress, 0},
    {Response::Quarantine, "SMFIR_QUARANTINE", Shape::Text, Action::Quarantine, smfif::QUARANTINE},
    {Response::Reject, "SMFIR_REJECT", Shape::Empty, Action::Reject, 0},
    {Response::Skip, "SMFIR_SKIP", Shape::Empty, Action::Skip, 0},
    {Response::TempFail, "SMFIR_TEMPFAIL", Shape::Empty, Action::TempFail, 0},
    {Response::ReplyCode, "SMFIR_REPLYCODE", Shape::ReplyText, Action::ReplyCode, 0},
};

const ReplyRow* reply_row(char code) {
  for (auto& row : kReplies)
    if (static_cast<char>(row.code) == code) return &row;
  return nullptr;
}

const ReplyRow* action_row(Action a) {
  for (auto& row : kReplies)
    if (row.shape != Shape::Refused && row.action == a) return &row;
  return nullptr;
}

// SMFIM_* stage → the command whose macro packet carries its list.
constexpr Command kMacroStages[] = {Command::Connect, Command::Helo, Command::Mail,   Command::Rcpt,
                                    Command::Data,    Command::BodyEob, Command::Eoh};

// ---- Encoding. ----

void put_u32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>((v >> 24) & 0xff));
  out.push_back(static_cast<char>((v >> 16) & 0xff));
  out.push_back(static_cast<char>((v >> 8) & 0xff));
  out.push_back(static_cast<char>(v & 0xff));
}

// A string and its terminator, cut at an embedded NUL.
void put_cstr(std::string& out, std::string_view s) {
  out.append(s.substr(0, s.find('\0')));
  out.push_back('\0');
}

// Wraps a payload into a packet: length (code byte + payload), code, payload.
std::string frame(Command code, std::string_view payload) {
  if (payload.size() >= std::numeric_limits<uint32_t>::max())
    throw std::length_error("milter packet payload of " + std::to_string(payload.size()) + " bytes");
  std::string out;
  out.reserve(5 + payload.size());
  put_u32(out, static_cast<uint32_t>(payload.size() + 1));
  out.push_back(static_cast<char>(code));
  out.append(payload);
  return out;
}

std::string encode_args(Command code, const std::vector<std::string>& args) {
  if (args.empty()) throw std::invalid_argument(std::string(command_name(code)) + " needs at least the address");
  std::string payload;
  for (auto& a : args) put_cstr(payload, a);
  return frame(code, payload);
}

// ---- Decoding. ----

// Reads fields off a payload; every read checks what is left first.
struct Cursor {
  std::string_view rest;

  bool u32(uint32_t& v) {
    if (rest.size() < 4) return false;
    auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(rest[i])); };
    v = (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
    rest.remove_prefix(4);
    return true;
  }
  // A NUL-terminated string; false (nothing consumed) when the NUL is missing.
  bool cstr(std::string& s) {
    size_t nul = rest.find('\0');
    if (nul == std::string_view::npos) return false;
    s.assign(rest.substr(0, nul));
    rest.remove_prefix(nul + 1);
    return true;
  }
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// RFC 5322 3.6.8: field-name = 1*ftext, printable US-ASCII except ':'.
bool valid_header_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 33 || u > 126 || c == ':') return false;
  }
  return true;
}

// An envelope address or ESMTP args end up on an SMTP command line: no CR,
// LF or other control characters (they would let a milter inject commands).
bool has_control(std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 32 || u == 127) return true;
  }
  return false;
}

// SMFIR_REPLYCODE text: one line "ddd text" or several joined by CRLF,
// "ddd-text" on all but the last; the same [45]dd code on each (RFC 5321
// 4.2.1); an enhanced status code, when a line has one, of the same class
// (Postfix checks this on the first line; here on each).
bool check_reply_text(std::string_view text, int& code, std::string& why) {
  std::string_view first_code;
  size_t start = 0;
  for (;;) {
    size_t end = text.find("\r\n", start);
    bool last = end == std::string_view::npos;
    std::string_view line = text.substr(start, last ? std::string_view::npos : end - start);
    if (line.find_first_of("\r\n") != std::string_view::npos) {
      why = "bare CR or LF in the reply text";
      return false;
    }
    if (line.size() < 4 || (line[0] != '4' && line[0] != '5') || !is_digit(line[1]) || !is_digit(line[2])) {
      why = "a line does not start with a 4xx or 5xx code: '" + std::string(line.substr(0, 40)) + "'";
      return false;
    }
    if (first_code.empty()) {
      first_code = line.substr(0, 3);
    } else if (line.substr(0, 3) != first_code) {
      why = "lines carry different codes (" + std::string(first_code) + ", " + std::string(line.substr(0, 3)) + ")";
      return false;
    }
    char sep = line[3];
    if (sep != (last ? ' ' : '-')) {
      why = last ? "the last line's code is not followed by a space" : "a continued line's code is not followed by '-'";
      return false;
    }
    if (line.size() > 4 && is_digit(line[4]) && line[4] != line[0]) {
      why = "enhanced status code class differs from the reply code";
      return false;
    }
    if (last) break;
    start = end + 2;
  }
  code = (first_code[0] - '0') * 100 + (first_code[1] - '0') * 10 + (first_code[2] - '0');
  return true;
}

// The body of parse_reply; may only fail through `why`.
bool decode(const ReplyRow& row, std::string_view payload, Reply& r, std::string& why) {
  Cursor in{payload};
  r.action = row.action;
  switch (row.shape) {
    case Shape::Empty:
      break;
    case Shape::Raw:
      r.body.assign(payload);
      in.rest = {};
      break;
    case Shape::ReplyText: {
      if (payload.empty() || payload.back() != '\0' || payload.find('\0') != payload.size() - 1) {
        why = "reply text is not one NUL-terminated string";
        return false;
      }
      in.cstr(r.text);
      if (!check_reply_text(r.text, r.code, why)) return false;
      break;
    }
    case Shape::Text:
      if (!in.cstr(r.text)) {
        why = "reason lacks its NUL terminator";
        return false;
      }
      break;
    case Shape::Address:
    case Shape::AddressArgs:
      if (!in.cstr(r.address)) {
        why = "address lacks its NUL terminator";
        return false;
      }
      if (r.address.empty() || has_control(r.address)) {
        why = r.address.empty() ? "empty address" : "control character in the address";
        return false;
      }
      // The args string is optional (smfi_chgfrom / smfi_addrcpt_par with NULL args).
      if (row.shape == Shape::AddressArgs && !in.rest.empty()) {
        if (!in.cstr(r.args)) {
          why = "ESMTP args lack their NUL terminator";
          return false;
        }
        if (has_control(r.args)) {
          why = "control character in the ESMTP args";
          return false;
        }
      }
      break;
    case Shape::IndexedHeader:
      if (!in.u32(r.index)) {
        why = "payload shorter than its 4-byte index";
        return false;
      }
      if (r.index > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
        why = "header index " + std::to_string(r.index) + " is negative as libmilter's int";
        return false;
      }
      if (row.action == Action::ChangeHeader && r.index == 0) r.index = 1;
      [[fallthrough]];
    case Shape::Header:
      if (!in.cstr(r.name) || !in.cstr(r.value)) {
        why = "header name or value lacks its NUL terminator";
        return false;
      }
      if (!valid_header_name(r.name)) {
        why = "invalid header name '" + r.name.substr(0, 40) + "'";
        return false;
      }
      break;
    case Shape::Refused:
      switch (row.code) {
        case Response::OptNeg:
          why = "only valid as the answer to SMFIC_OPTNEG (parse_optneg)";
          break;
        case Response::SetSymList:
          why = "symbol lists travel inside the SMFIC_OPTNEG reply";
          break;
        default:
          why = "not sent by libmilter and not supported (Postfix refuses it too)";
          break;
      }
      return false;
  }
  if (!in.rest.empty()) {
    why = std::to_string(in.rest.size()) + " bytes after the payload";
    return false;
  }
  return true;
}

constexpr char kHex[] = "0123456789abcdef";

// "0x6c 'l'" for logs; the quoted form only for printable codes.
std::string hex_code(char code) {
  auto u = static_cast<unsigned char>(code);
  std::string out = "0x";
  out.push_back(kHex[u >> 4]);
  out.push_back(kHex[u & 15]);
  if (u >= 33 && u <= 126) out += std::string(" '") + code + "'";
  return out;
}

std::string hex32(uint32_t v) {
  std::string out = "0x";
  bool started = false;
  for (int shift = 28; shift >= 0; shift -= 4) {
    unsigned nibble = (v >> shift) & 15;
    if (nibble || started || shift == 0) {
      out.push_back(kHex[nibble]);
      started = true;
    }
  }
  return out;
}

}  // namespace

std::optional<Command> macro_stage_command(uint32_t smfim_stage) {
  if (smfim_stage >= std::size(kMacroStages)) return std::nullopt;
  return kMacroStages[smfim_stage];
}

std::string_view command_name(Command c) {
  auto* row = command_row(c);
  return row ? row->name : "unknown";
}

std::string_view response_name(char code) {
  auto* row = reply_row(code);
  return row ? row->name : "unknown";
}

// ---- Encoders. ----

std::string encode_optneg(uint32_t version, uint32_t actions, uint32_t protocol) {
  std::string payload;
  put_u32(payload, version);
  put_u32(payload, actions);
  put_u32(payload, protocol);
  return frame(Command::OptNeg, payload);
}

std::string encode_macros(Command stage, const std::vector<std::pair<std::string, std::string>>& macros) {
  std::string payload(1, static_cast<char>(stage));
  for (auto& [name, value] : macros) {
    put_cstr(payload, name);
    put_cstr(payload, value);
  }
  return frame(Command::Macro, payload);
}

std::string encode_connect(std::string_view hostname, Family family, uint16_t port, std::string_view address) {
  std::string payload;
  put_cstr(payload, hostname);
  payload.push_back(static_cast<char>(family));
  if (family != Family::Unknown) {
    payload.push_back(static_cast<char>(port >> 8));
    payload.push_back(static_cast<char>(port & 0xff));
    put_cstr(payload, address);
  }
  return frame(Command::Connect, payload);
}

std::string encode_helo(std::string_view helo) {
  std::string payload;
  put_cstr(payload, helo);
  return frame(Command::Helo, payload);
}

std::string encode_mail(const std::vector<std::string>& args) { return encode_args(Command::Mail, args); }
std::string encode_rcpt(const std::vector<std::string>& args) { return encode_args(Command::Rcpt, args); }
std::string encode_data() { return frame(Command::Data, {}); }

std::string encode_header(std::string_view name, std::string_view value) {
  std::string payload;
  put_cstr(payload, name);
  put_cstr(payload, value);
  return frame(Command::Header, payload);
}

std::string encode_eoh() { return frame(Command::Eoh, {}); }

std::string encode_body(std::string_view chunk) {
  if (chunk.size() > kBodyChunk)
    throw std::length_error("milter body chunk of " + std::to_string(chunk.size()) + " bytes (at most " +
                            std::to_string(kBodyChunk) + ")");
  return frame(Command::Body, chunk);
}

std::string encode_eom() { return frame(Command::BodyEob, {}); }
std::string encode_abort() { return frame(Command::Abort, {}); }
std::string encode_quit() { return frame(Command::Quit, {}); }
std::string encode_quit_nc() { return frame(Command::QuitNc, {}); }

std::string encode_unknown(std::string_view command_line) {
  std::string payload;
  put_cstr(payload, command_line);
  return frame(Command::Unknown, payload);
}

// ---- ReplyReader. ----

bool ReplyReader::feed(std::string_view bytes) {
  if (failed()) return false;
  // Drop what has been taken before growing, so the buffer holds at most
  // one partial packet plus this feed.
  if (pos_ > 0 && (pos_ == buf_.size() || pos_ >= buf_.size() / 2)) {
    buf_.erase(0, pos_);
    scan_ -= pos_;
    pos_ = 0;
  }
  buf_.append(bytes);
  // Check every length field that has arrived; stop at the first frame that
  // is not complete (its header is checked once its four bytes are here).
  while (buf_.size() - scan_ >= 4) {
    Cursor c{std::string_view(buf_).substr(scan_, 4)};
    uint32_t len = 0;
    c.u32(len);
    if (len == 0) {
      error_ = "milter packet with length 0 (no reply code)";
      return false;
    }
    if (len > kMaxPacket) {
      error_ = "milter packet length " + std::to_string(len) + " exceeds " + std::to_string(kMaxPacket);
      return false;
    }
    if (buf_.size() - scan_ - 4 < len) break;
    scan_ += 4 + len;
  }
  return true;
}

std::optional<Packet> ReplyReader::next() {
  if (failed() || pos_ == scan_) return std::nullopt;  // scan_ only passes whole, checked frames
  Cursor c{std::string_view(buf_).substr(pos_, 4)};
  uint32_t len = 0;
  c.u32(len);
  Packet p;
  p.code = buf_[pos_ + 4];
  p.payload.assign(buf_, pos_ + 5, len - 1);
  pos_ += 4 + len;
  return p;
}

// ---- Negotiation. ----

std::optional<OptNeg> parse_optneg(const Packet& packet, std::string& error) {
  if (packet.code != static_cast<char>(Response::OptNeg)) {
    error = "expected SMFIC_OPTNEG, got " + std::string(response_name(packet.code)) + " (" + hex_code(packet.code) + ")";
    return std::nullopt;
  }
  Cursor in{packet.payload};
  OptNeg out;
  if (!in.u32(out.version) || !in.u32(out.actions) || !in.u32(out.protocol)) {
    error = "SMFIC_OPTNEG reply of " + std::to_string(packet.payload.size()) + " bytes (needs 12)";
    return std::nullopt;
  }
  uint32_t seen = 0;
  while (!in.rest.empty()) {
    uint32_t stage = 0;
    SymbolList list;
    if (!in.u32(stage)) {
      error = "SMFIC_OPTNEG symbol list truncated in its stage field";
      return std::nullopt;
    }
    auto command = macro_stage_command(stage);
    if (!command) {
      error = "SMFIC_OPTNEG symbol list for unknown stage " + std::to_string(stage);
      return std::nullopt;
    }
    if (seen & (1u << stage)) {
      error = "SMFIC_OPTNEG symbol list for stage " + std::to_string(stage) + " sent twice";
      return std::nullopt;
    }
    seen |= 1u << stage;
    if (!in.cstr(list.macros)) {
      error = "SMFIC_OPTNEG symbol list for stage " + std::to_string(stage) + " lacks its NUL terminator";
      return std::nullopt;
    }
    list.stage = *command;
    out.symbol_lists.push_back(std::move(list));
  }
  return out;
}

std::optional<OptNeg> negotiate(const OptNeg& offer, const OptNeg& reply, std::string& error) {
  if (reply.version < 2 || reply.version > offer.version) {
    error = "milter protocol version " + std::to_string(reply.version) + " (we speak 2 to " +
            std::to_string(offer.version) + ")";
    return std::nullopt;
  }
  if ((reply.actions & ~offer.actions) != 0) {
    error = "milter requests actions " + hex32(reply.actions & ~offer.actions) + " that were not offered";
    return std::nullopt;
  }
  if ((reply.protocol & ~offer.protocol) != 0) {
    error = "milter requests protocol flags " + hex32(reply.protocol & ~offer.protocol) + " that were not offered";
    return std::nullopt;
  }
  OptNeg agreed = reply;
  if (agreed.version <= 2) agreed.protocol |= smfip::NOUNKNOWN;
  if (agreed.version <= 3) agreed.protocol |= smfip::NODATA;
  return agreed;
}

// ---- Replies. ----

std::optional<Reply> parse_reply(const Packet& packet, std::string& error) {
  auto* row = reply_row(packet.code);
  if (!row) {
    error = "unknown milter reply code " + hex_code(packet.code);
    return std::nullopt;
  }
  Reply r;
  std::string why;
  if (!decode(*row, packet.payload, r, why)) {
    error = std::string(row->name) + ": " + why;
    return std::nullopt;
  }
  return r;
}

bool is_final(Action a) {
  switch (a) {
    case Action::Continue:
    case Action::Accept:
    case Action::Discard:
    case Action::Reject:
    case Action::TempFail:
    case Action::ReplyCode:
    case Action::Shutdown:
    case Action::Skip:
      return true;
    default:
      return false;
  }
}

bool is_modification(Action a) { return !is_final(a) && a != Action::Progress; }

bool may(Action a, uint32_t actions, uint32_t protocol) {
  if (a == Action::Skip) return (protocol & smfip::SKIP) != 0;
  auto* row = action_row(a);
  return row && (row->action_flag & actions) == row->action_flag;
}

bool sends(Command c, uint32_t protocol) {
  auto* row = command_row(c);
  return row && (row->skip_flag & protocol) == 0;
}

bool replies(Command c, uint32_t protocol) {
  auto* row = command_row(c);
  return row && row->answered && sends(c, protocol) && (row->no_reply & protocol) == 0;
}

bool permitted(Action a, Command after, const OptNeg& agreed, std::string& why) {
  auto action = [&] {
    auto* row = action_row(a);
    return std::string(row ? row->name : "unknown");
  };
  if (!replies(after, agreed.protocol)) {
    why = action() + " after " + std::string(command_name(after)) + ", which gets no reply";
  } else if (after == Command::OptNeg) {
    why = action() + " in place of the SMFIC_OPTNEG reply";
  } else if (!may(a, agreed.actions, agreed.protocol)) {
    why = action() + " was not negotiated";
  } else if (is_modification(a) && after != Command::BodyEob) {
    why = action() + " after " + std::string(command_name(after)) + " (modifications only after SMFIC_BODYEOB)";
  } else if (a == Action::Skip && after != Command::Body) {
    why = "SMFIR_SKIP after " + std::string(command_name(after)) + " (only after SMFIC_BODY)";
  } else if (a == Action::Discard && (after == Command::Connect || after == Command::Helo)) {
    why = "SMFIR_DISCARD after " + std::string(command_name(after)) + " (no message to discard)";
  } else {
    return true;
  }
  return false;
}

std::string undouble_percent(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
    } else if (i + 1 < text.size() && text[i + 1] == '%') {
      out.push_back('%');
      ++i;
    }  // a lone '%' is dropped
  }
  return out;
}

}  // namespace mk::milter
