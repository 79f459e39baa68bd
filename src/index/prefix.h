// prefix.h — the one table of what the index stores per message: the Xapian
// term prefixes and value slots that indexing (database.cpp) writes and the
// query compiler (query_compile.cpp) reads, after notmuch's prefix.cc.
//
// Text fields are indexed with Xapian's TermGenerator (positions, English
// stemming as Z-prefixed terms beside the exact ones, CJK n-grams); "exact"
// fields are one boolean term of the whole lower-cased value.
//
//   operator          text prefix      exact prefix    also bare-word text
//   (bare word)       ""                -               body, subject, names, addresses, file names
//   from:             XF               XFA (address)    yes
//   to:               XT XC XB XD      XTA XCA XBA XDA  To and Cc yes
//   cc: / bcc:        XC / XB          XCA / XBA
//   subject:          S                -                yes
//   filename:         XN               XNA (whole name) yes
//   list:             XLW              XLI (the id)
//   rfc822msgid:      -                XMID (as written, case kept)
//   label:            -                XL (lower-cased)
//   in:               -                XO (folder, lower-cased: inbox, sent, junk, ...)
//   is:               -                XK (Maildir flag letter: S seen, F flagged, R replied, D draft, T trashed;
//                                      XKu: no S, in databases of kFormat 2)
//   has:attachment    -                XHA
//   conversation      -                G (16 hex digits), also value kThread
//   identity          -                Q (Maildir base name); XDIR (folder/new|cur) for the rescans
//   ghost parent      -                XGHOST (a Message-ID seen only in references)
//   identity digest   -                XSUM (Message-ID + body, message.h)
//   month (UTC)       -                XYM (yyyymm of the date slot) for the page windows (search.cpp),
//                                      in databases of kFormat 2
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace mk::index::prefix {

inline constexpr std::string_view kFrom = "XF", kFromAddr = "XFA";
inline constexpr std::string_view kTo = "XT", kToAddr = "XTA";
inline constexpr std::string_view kCc = "XC", kCcAddr = "XCA";
inline constexpr std::string_view kBcc = "XB", kBccAddr = "XBA";
inline constexpr std::string_view kDeliveredTo = "XD", kDeliveredToAddr = "XDA";
inline constexpr std::string_view kSubject = "S";
inline constexpr std::string_view kFilename = "XN", kFilenameExact = "XNA";
inline constexpr std::string_view kListWord = "XLW", kListId = "XLI";
inline constexpr std::string_view kMessageId = "XMID";
inline constexpr std::string_view kLabel = "XL";
inline constexpr std::string_view kFolder = "XO";
inline constexpr std::string_view kFlag = "XK";
inline constexpr std::string_view kHasAttachment = "XHA";
inline constexpr std::string_view kThread = "G";
inline constexpr std::string_view kId = "Q";
inline constexpr std::string_view kDir = "XDIR";
inline constexpr std::string_view kGhost = "XGHOST";
inline constexpr std::string_view kDigest = "XSUM";  // identity digest (message.h): imports' dedupe, labels
inline constexpr std::string_view kMonth = "XYM";
inline constexpr std::string_view kUnread = "XKu";

// The metadata key kFormatKey is kFormat on a database created empty by a
// build that writes every term above: "2" adds kMonth and kUnread. An older
// index lacks them; its search windows filter by the date slot and is:unread
// is "not seen".
inline constexpr const char* kFormatKey = "format";
inline constexpr const char* kFormat = "2";

// Value slots.
inline constexpr unsigned kDateSlot = 0;    // sortable_serialise(unix time)
inline constexpr unsigned kSizeSlot = 1;    // sortable_serialise(bytes)
inline constexpr unsigned kThreadSlot = 2;  // the conversation id (collapse key)
inline constexpr unsigned kPathSlot = 3;    // the file, relative to the Maildir root (".Sent/cur/NAME")

// A boolean term: prefix + value, hashed when Xapian's 245-byte term limit
// would be passed (a 10,000-character address must not fail the document).
std::string exact(std::string_view prefix, std::string_view value);

// kMonth + the UTC year and month of `unix_time` ("XYM202612"), or of a
// year and month (1-12).
std::string month(int64_t unix_time);
std::string month(int year, int mon);

}  // namespace mk::index::prefix
