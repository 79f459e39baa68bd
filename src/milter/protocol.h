// protocol.h — the MTA side of the Sendmail milter protocol, version 6, as a
// pure codec: encoders for the commands the MTA sends, an incremental reader
// for the packets the milter sends back, and parsers that turn those packets
// into typed replies. No sockets, no threads: the session that puts this on
// a socket lives elsewhere; these are values and pure functions, so they are
// table-tested and fuzzed (tests/fuzz/fuzz_milter.cpp).
//
// Hand-written: no Debian library provides the MTA side of the protocol.
// libmilter (libmilter-dev) is the filter side — it listens, decodes commands
// and encodes replies; Postfix (src/milter/milter8.c) and Sendmail
// (sendmail/milter.c) each carry their own MTA side inside the MTA.
//
// Sources (read, not copied): sendmail include/libmilter/mfdef.h and mfapi.h
// for the codes and flags; Postfix milter8.c for how an MTA speaks version 6
// (what it checks in each reply, how it frames each command); libmilter's
// engine.c and smfi.c for what a real milter actually sends; T. Vierling's
// milter-protocol.txt for the framing.
//
// Framing (both directions): a 4-byte big-endian length N, then N bytes —
// one code byte and N-1 bytes of payload. Integers in payloads are 32-bit
// (16-bit for the connect port) big-endian; strings are NUL-terminated.
//
// A typical conversation (the MTA drives; the milter speaks only when asked):
//   O (optneg) → O;  [D macros] C → reply;  [D] H → reply;  [D] M → reply;
//   [D] R → reply (per recipient);  [D] T → reply;  L → reply (per header);
//   [D] N → reply;  B → reply (per chunk);  [D] E → modifications…, reply;
//   then M again for the next message, A to abort one, Q/K to end.
// A reply is one final action (continue, accept, reject, …) optionally
// preceded by SMFIR_PROGRESS packets and, after E only, modifications. The
// SMFIP_NO* bits the milter negotiated drop commands; the SMFIP_NR_* bits
// drop the reply to a command (see sends() and replies()).
//
// The milter is untrusted input: every length and shape is checked, nothing
// reads past a buffer, and the parse functions never throw. Encoders throw
// std::length_error / std::invalid_argument only on a caller's bug (a body
// chunk over kBodyChunk, a MAIL with no address).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mk::milter {

// The protocol version this codec speaks (SMFI_PROT_VERSION of libmilter 8.14+).
constexpr uint32_t kVersion = 6;

// Bound on a reply's length field (code byte + payload). libmilter never
// writes more data than its negotiated maximum, whose largest setting is
// MILTER_MDS_1M = 1 MiB - 1 (mfdef.h; mi_wr_cmd refuses more), so no real
// milter sends a longer packet; a longer length field is a hostile or broken
// peer asking us to buffer without bound. (Postfix bounds it at INT_MAX/2.)
constexpr size_t kMaxPacket = size_t{1} << 20;

// MILTER_CHUNK_SIZE: the largest SMFIC_BODY chunk. Callers split the body.
constexpr size_t kBodyChunk = 65535;

// Commands the MTA sends (SMFIC_*).
enum class Command : char {
  Abort = 'A',    // SMFIC_ABORT: forget the current message, keep the connection
  Body = 'B',     // SMFIC_BODY: a body chunk (raw bytes, CRLF lines)
  Connect = 'C',  // SMFIC_CONNECT
  Macro = 'D',    // SMFIC_MACRO: macros for the command that follows
  BodyEob = 'E',  // SMFIC_BODYEOB: end of message; modifications come back
  Helo = 'H',     // SMFIC_HELO
  QuitNc = 'K',   // SMFIC_QUIT_NC: end this session, a new one follows on the connection
  Header = 'L',   // SMFIC_HEADER
  Mail = 'M',     // SMFIC_MAIL
  Eoh = 'N',      // SMFIC_EOH
  OptNeg = 'O',   // SMFIC_OPTNEG
  Quit = 'Q',     // SMFIC_QUIT
  Rcpt = 'R',     // SMFIC_RCPT
  Data = 'T',     // SMFIC_DATA (protocol 4+)
  Unknown = 'U',  // SMFIC_UNKNOWN: an SMTP command the MTA did not recognise (protocol 3+)
};

// Codes the milter sends back (SMFIR_*), as they appear on the wire.
enum class Response : char {
  AddRcpt = '+',       // SMFIR_ADDRCPT
  DelRcpt = '-',       // SMFIR_DELRCPT
  AddRcptPar = '2',    // SMFIR_ADDRCPT_PAR (with ESMTP args)
  Shutdown = '4',      // SMFIR_SHUTDOWN: 421 and close (Postfix honours it)
  Accept = 'a',        // SMFIR_ACCEPT
  ReplaceBody = 'b',   // SMFIR_REPLBODY: one chunk of the new body
  Continue = 'c',      // SMFIR_CONTINUE
  Discard = 'd',       // SMFIR_DISCARD
  ChangeFrom = 'e',    // SMFIR_CHGFROM
  ConnFail = 'f',      // SMFIR_CONN_FAIL: defined, sent by no libmilter; rejected
  AddHeader = 'h',     // SMFIR_ADDHEADER
  InsertHeader = 'i',  // SMFIR_INSHEADER
  SetSymList = 'l',    // SMFIR_SETSYMLIST: symbol lists travel inside the optneg reply; rejected here
  ChangeHeader = 'm',  // SMFIR_CHGHEADER (an empty value deletes)
  OptNeg = 'O',        // SMFIC_OPTNEG echoed as the negotiation reply
  Progress = 'p',      // SMFIR_PROGRESS: still working, restart the timer
  Quarantine = 'q',    // SMFIR_QUARANTINE
  Reject = 'r',        // SMFIR_REJECT
  Skip = 's',          // SMFIR_SKIP: send no more body chunks
  TempFail = 't',      // SMFIR_TEMPFAIL
  ReplyCode = 'y',     // SMFIR_REPLYCODE: an explicit 4xx/5xx reply
};

// SMFIC_CONNECT address families (SMFIA_*).
enum class Family : char { Unknown = 'U', Unix = 'L', Inet = '4', Inet6 = '6' };

// Actions the MTA offers and the milter requests in the optneg (SMFIF_*).
// (Nested namespaces rather than the C names, which libmilter defines as macros.)
namespace smfif {
constexpr uint32_t ADDHDRS = 0x001;      // add (and insert) headers
constexpr uint32_t CHGBODY = 0x002;      // replace the body
constexpr uint32_t ADDRCPT = 0x004;      // add recipients
constexpr uint32_t DELRCPT = 0x008;      // delete recipients
constexpr uint32_t CHGHDRS = 0x010;      // change or delete headers
constexpr uint32_t QUARANTINE = 0x020;   // quarantine the message
constexpr uint32_t CHGFROM = 0x040;      // change the envelope sender (v6)
constexpr uint32_t ADDRCPT_PAR = 0x080;  // add recipients with ESMTP args (v6)
constexpr uint32_t SETSYMLIST = 0x100;   // send macro lists in the optneg reply (v6)
constexpr uint32_t ALL = 0x1FF;
}  // namespace smfif

// Protocol flags (SMFIP_*). In the MTA's offer: what it is able to do; in the
// milter's reply: what it wants. NO* = do not send that command; NR_* = the
// milter will not reply to it; the rest are extensions.
namespace smfip {
constexpr uint32_t NOCONNECT = 0x000001;
constexpr uint32_t NOHELO = 0x000002;
constexpr uint32_t NOMAIL = 0x000004;
constexpr uint32_t NORCPT = 0x000008;
constexpr uint32_t NOBODY = 0x000010;
constexpr uint32_t NOHDRS = 0x000020;
constexpr uint32_t NOEOH = 0x000040;
constexpr uint32_t NR_HDR = 0x000080;
constexpr uint32_t NOHREPL = NR_HDR;  // the protocol-4 name
constexpr uint32_t NOUNKNOWN = 0x000100;
constexpr uint32_t NODATA = 0x000200;
constexpr uint32_t SKIP = 0x000400;      // the MTA understands SMFIR_SKIP
constexpr uint32_t RCPT_REJ = 0x000800;  // send RCPTs the MTA already rejected too
constexpr uint32_t NR_CONN = 0x001000;
constexpr uint32_t NR_HELO = 0x002000;
constexpr uint32_t NR_MAIL = 0x004000;
constexpr uint32_t NR_RCPT = 0x008000;
constexpr uint32_t NR_DATA = 0x010000;
constexpr uint32_t NR_UNKN = 0x020000;
constexpr uint32_t NR_EOH = 0x040000;
constexpr uint32_t NR_BODY = 0x080000;
// Header values keep their leading space, both ways: without it the MTA
// strips one space after the colon and adds one back to the milter's values.
constexpr uint32_t HDR_LEADSPC = 0x100000;
constexpr uint32_t ALL = 0x1FFFFF;  // SMFI_CURR_PROT
}  // namespace smfip

// Macro stages of the optneg symbol lists (SMFIM_*).
namespace smfim {
constexpr uint32_t CONNECT = 0;
constexpr uint32_t HELO = 1;
constexpr uint32_t ENVFROM = 2;
constexpr uint32_t ENVRCPT = 3;
constexpr uint32_t DATA = 4;
constexpr uint32_t EOM = 5;
constexpr uint32_t EOH = 6;
}  // namespace smfim

// The command whose SMFIC_MACRO packet a macro stage's list governs
// (ENVFROM → Mail, EOM → BodyEob, …); nullopt for an unknown stage.
std::optional<Command> macro_stage_command(uint32_t smfim_stage);

// "SMFIC_CONNECT", "SMFIR_ACCEPT", … for logs; "unknown" for other codes.
std::string_view command_name(Command c);
std::string_view response_name(char code);

// ---- Encoders: each returns a whole packet (length, code, payload). ----
// Strings are written up to their first NUL byte (a NUL inside one would
// shift every field after it; C MTAs truncate there too).

std::string encode_optneg(uint32_t version, uint32_t actions, uint32_t protocol);
// SMFIC_MACRO for the command `stage`; names as Sendmail spells them: one
// letter bare ("j", "_", "i"), longer ones in braces ("{daemon_name}").
std::string encode_macros(Command stage, const std::vector<std::pair<std::string, std::string>>& macros);
// Family Unknown omits port and address, as the protocol says; Unix sends port 0.
std::string encode_connect(std::string_view hostname, Family family, uint16_t port, std::string_view address);
std::string encode_helo(std::string_view helo);
// args[0] is the path with its brackets ("<a@b>", "<>"), then ESMTP params
// ("SIZE=123", "BODY=8BITMIME"). Throws std::invalid_argument when args is empty.
std::string encode_mail(const std::vector<std::string>& args);
std::string encode_rcpt(const std::vector<std::string>& args);
std::string encode_data();
// The value as the milter should see it: without SMFIP_HDR_LEADSPC the
// caller drops one leading space; folded lines keep their line breaks.
std::string encode_header(std::string_view name, std::string_view value);
std::string encode_eoh();
// One chunk of at most kBodyChunk bytes (std::length_error beyond).
std::string encode_body(std::string_view chunk);
std::string encode_eom();
std::string encode_abort();
std::string encode_quit();
std::string encode_quit_nc();  // SMFIC_QUIT_NC, for connection reuse
std::string encode_unknown(std::string_view command_line);

// ---- Decoding the milter's packets. ----

struct Packet {
  char code = 0;
  std::string payload;
};

// Incremental framing of the milter's byte stream: feed what the socket
// read, take complete packets. Validates each length field as soon as its
// four bytes arrive.
class ReplyReader {
 public:
  // Appends bytes; returns false (with error()) on a length field of 0 (no
  // code byte) or above kMaxPacket. Once false, stays false and next()
  // yields nothing more: the stream has lost its framing.
  bool feed(std::string_view bytes);
  // A complete packet, or nullopt until more bytes arrive.
  std::optional<Packet> next();
  const std::string& error() const { return error_; }
  bool failed() const { return !error_.empty(); }
  size_t buffered() const { return buf_.size() - pos_; }  // bytes not yet taken

 private:
  std::string buf_;
  size_t pos_ = 0;   // start of the first packet not yet taken
  size_t scan_ = 0;  // start of the first frame whose header is not yet checked
  std::string error_;
};

// Macro names a milter asks for at one stage (SMFIF_SETSYMLIST).
struct SymbolList {
  Command stage = Command::Connect;  // whose SMFIC_MACRO packet they go in
  std::string macros;                // space-separated, as sent: "{rcpt_mailer} {rcpt_host}"
};

struct OptNeg {
  uint32_t version = 0;
  uint32_t actions = 0;   // SMFIF_*
  uint32_t protocol = 0;  // SMFIP_*
  std::vector<SymbolList> symbol_lists;  // in the reply only
};

// Parses the milter's SMFIC_OPTNEG reply: three 32-bit fields, then any
// number of (32-bit SMFIM stage, NUL-terminated macro list) pairs. An unknown
// stage or one listed twice is an error (Sendmail's MTA rejects them too).
std::optional<OptNeg> parse_optneg(const Packet& packet, std::string& error);

// Checks the milter's reply against what we offered and returns what was
// agreed: the milter's version (2 to ours: an older milter is fine, Postfix
// allows it), its actions and protocol bits, which must be subsets of the
// offer (libmilter and Sendmail's MTA both refuse more; an unoffered NR_* bit
// would leave us waiting for a reply that never comes). For version <= 2 the
// agreed protocol gains NOUNKNOWN, for <= 3 NODATA: those commands did not
// exist yet.
std::optional<OptNeg> negotiate(const OptNeg& offer, const OptNeg& reply, std::string& error);

enum class Action {
  Continue, Accept, Discard, Reject, TempFail, ReplyCode, Shutdown, Skip,  // final
  Progress,                                                                // keep waiting
  Quarantine, AddHeader, InsertHeader, ChangeHeader, AddRcpt, AddRcptPar,  // modifications
  DelRcpt, ReplaceBody, ChangeFrom,
};

struct Reply {
  Action action = Action::Continue;
  // ReplyCode: the 3-digit code (400-599) and the whole reply as the milter
  // wrote it, code included — one line, or several joined by CRLF, each
  // starting with the same code ("550-5.7.1 a\r\n550 5.7.1 b"). Sendmail
  // milters double '%' (see undouble_percent).
  int code = 0;
  std::string text;  // ReplyCode: as above; Quarantine: the reason
  // ChangeHeader: 1-based occurrence of `name` (0 arrives as 1, as Sendmail
  // and Postfix read it), an empty value deletes it; InsertHeader: position
  // among all headers, 0 = first. At most INT32_MAX (libmilter's int).
  uint32_t index = 0;
  std::string name, value;  // AddHeader, InsertHeader, ChangeHeader
  std::string address;      // AddRcpt, AddRcptPar, DelRcpt, ChangeFrom
  std::string args;         // AddRcptPar, ChangeFrom: ESMTP args, space-separated, maybe empty
  std::string body;         // ReplaceBody: this chunk, raw
};

// Parses one reply packet, validating its shape: empty payloads for the bare
// actions, NUL terminators, the 4-byte index fields, header names (RFC 5322
// field-name characters), addresses without control characters, reply codes
// [45]xx followed by ' ' (last line) or '-' (others), the same code on every
// line, an enhanced status code of the same class. An unknown code, an optneg
// outside negotiation, SMFIR_CONN_FAIL or SMFIR_SETSYMLIST → error.
std::optional<Reply> parse_reply(const Packet& packet, std::string& error);

// Ends the exchange for the current command: Continue, Accept, Discard,
// Reject, TempFail, ReplyCode, Shutdown, Skip.
bool is_final(Action a);
// Changes the message: legal only in the reply to BodyEob, and only if negotiated.
bool is_modification(Action a);
// Whether the agreed masks allow `a`: each modification needs its SMFIF_*
// bit (insert is SMFIF_ADDHDRS, as in libmilter); Skip needs SMFIP_SKIP.
bool may(Action a, uint32_t actions, uint32_t protocol);
// Whether the agreed protocol mask has the MTA send command `c` at all, and
// whether the milter replies to it (SMFIP_NO*, SMFIP_NR_*). BodyEob and
// OptNeg are always sent and answered; Macro, Abort, Quit, QuitNc are never answered.
bool sends(Command c, uint32_t protocol);
bool replies(Command c, uint32_t protocol);
// Whether `a` is a legal reply to command `after` under the agreement:
// the command must expect a reply, may() must hold, modifications only after
// BodyEob, Skip only after Body (libmilter allows it from xxfi_body only),
// Discard not after Connect or Helo (Postfix refuses it there).
bool permitted(Action a, Command after, const OptNeg& agreed, std::string& why);

// Sendmail treats a reply text as a printf format, so milters write '%' as
// "%%". Returns the text with "%%" → "%" and a lone '%' dropped (Postfix).
std::string undouble_percent(std::string_view text);

}  // namespace mk::milter
