// search.cpp — see search.h. Here a query becomes Xapian terms: compile()
// walks the parser's tree and asks prefix.h's table which terms and value
// slots each operator reaches.
#include "index/search.h"

#include <algorithm>
#include <ctime>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "core/strings.h"
#include "index/database_impl.h"
#include "index/prefix.h"

namespace mk::index {
namespace {

using Xapian::Query;

class Compiler {
 public:
  explicit Compiler(const Database::Impl& x) : x_(x), current_(x.db.get_metadata(prefix::kFormatKey) == prefix::kFormat) {
    tg_.set_stemming_strategy(Xapian::TermGenerator::STEM_NONE);
    tg_.set_flags(Xapian::TermGenerator::FLAG_CJK_NGRAM);
  }

  bool current_format() const { return current_; }

  Query compile(const QueryNode& n) {
    using K = QueryNode::Kind;
    switch (n.kind) {
      case K::All:
        return Query::MatchAll;
      case K::Term:
        return term(n);
      case K::Not:
        return Query(Query::OP_AND_NOT, Query::MatchAll, compile(n.children.front()));
      case K::Or: {
        std::vector<Query> qs;
        for (auto& c : n.children) qs.push_back(compile(c));
        return Query(Query::OP_OR, qs.begin(), qs.end());
      }
      case K::And: {
        std::vector<Query> pos, neg;
        for (auto& c : n.children) {
          if (c.kind == K::Not) neg.push_back(compile(c.children.front()));
          else pos.push_back(compile(c));
        }
        Query p = pos.empty() ? Query::MatchAll : Query(Query::OP_AND, pos.begin(), pos.end());
        if (neg.empty()) return p;
        return Query(Query::OP_AND_NOT, p, Query(Query::OP_OR, neg.begin(), neg.end()));
      }
    }
    return Query::MatchNothing;
  }

 private:
  const Database::Impl& x_;
  const bool current_;  // the index has every term of prefix::kFormat
  Xapian::TermGenerator tg_;

  static Query bool_term(const std::string& t) { return Query(Query::OP_SCALE_WEIGHT, Query(t), 0); }

  // Chinese, Japanese or Korean text (indexed as n-grams).
  static bool has_cjk(std::string_view v) {
    for (size_t i = 0; i + 1 < v.size(); ++i) {
      auto c = static_cast<unsigned char>(v[i]), d = static_cast<unsigned char>(v[i + 1]);
      if ((c >= 0xE3 && c <= 0xED) || (c == 0xE2 && d >= 0xBA) || (c == 0xEF && d >= 0xA4 && d <= 0xAB)) return true;
    }
    return false;
  }

  // Fields whose words have stems in the index (database.cpp).
  static bool stemmed_field(std::string_view p) { return p.empty() || p == prefix::kSubject; }

  // Fields indexed without positions (database.cpp): no phrases there.
  static bool positional(std::string_view p) { return p.empty() || p == prefix::kSubject; }

  // Words of `value` as the indexer made them under `p`.
  Query text(const std::string& value, bool phrase, std::string_view p) {
    Xapian::Document d;
    tg_.set_document(d);
    tg_.index_text(value, 1, std::string(p));
    std::vector<std::pair<Xapian::termpos, std::string>> exact;
    for (auto t = d.termlist_begin(); t != d.termlist_end(); ++t)
      for (auto pos = t.positionlist_begin(); pos != t.positionlist_end(); ++pos) exact.emplace_back(*pos, *t);
    if (exact.empty()) return Query::MatchNothing;
    std::sort(exact.begin(), exact.end());
    if (exact.size() == 1) {
      // The word, or any word with its stem (the index keeps a "Z" term
      // only where the stem differs from the word: database.cpp).
      const std::string& term = exact[0].second;
      if (!phrase && stemmed_field(p) && !x_.stemmer.is_none()) {
        std::string word = term.substr(p.size());
        std::string st = x_.stemmer(word);
        if (!st.empty()) {
          Query z("Z" + std::string(p) + st);
          Query same(std::string(p) + st);  // a word that is its own stem has only its exact term
          std::vector<Query> any{Query(term), z, same};
          return Query(Query::OP_OR, any.begin(), any.end());
        }
      }
      return Query(term);
    }
    std::vector<Query> qs;
    bool distinct = true;
    for (size_t i = 0; i < exact.size(); ++i) {
      if (i && exact[i].first == exact[i - 1].first) distinct = false;
      qs.emplace_back(exact[i].second);
    }
    // CJK n-grams share positions: all of them, in any order. Without
    // positions in the index, a phrase is all its words; except in file
    // names, where several words are found as the whole name (exact term).
    if (!distinct || has_cjk(value) || (!positional(p) && p != prefix::kFilename))
      return Query(Query::OP_AND, qs.begin(), qs.end());
    if (!positional(p)) return Query::MatchNothing;
    return Query(Query::OP_PHRASE, qs.begin(), qs.end());
  }

  Query text_any(const QueryNode& n, std::initializer_list<std::string_view> prefixes) {
    std::vector<Query> qs;
    for (auto p : prefixes) qs.push_back(text(n.value, n.phrase, p));
    return qs.size() == 1 ? qs.front() : Query(Query::OP_OR, qs.begin(), qs.end());
  }

  Query addresses(const QueryNode& n, std::initializer_list<std::string_view> text_prefixes,
                  std::initializer_list<std::string_view> exact_prefixes) {
    if (n.value.find('@') != std::string::npos) {
      std::vector<Query> qs;
      auto v = to_lower(trim(n.value));
      if (v.size() > 2 && v.front() == '<' && v.back() == '>') v = v.substr(1, v.size() - 2);
      for (auto p : exact_prefixes) qs.push_back(bool_term(prefix::exact(p, v)));
      return Query(Query::OP_OR, qs.begin(), qs.end());
    }
    return text_any(n, text_prefixes);
  }

  static Query date_ge(int64_t t) {
    return Query(Query::OP_VALUE_GE, prefix::kDateSlot, Xapian::sortable_serialise(static_cast<double>(t)));
  }
  static Query date_le(int64_t t) {
    return Query(Query::OP_VALUE_LE, prefix::kDateSlot, Xapian::sortable_serialise(static_cast<double>(t)));
  }

  Query term(const QueryNode& n) {
    using namespace prefix;
    switch (n.field) {
      case Field::Text:  // body, subject, From/To/Cc names and addresses, file names
        return text_any(n, {"", kSubject, kFrom, kTo, kCc, kFilename});
      case Field::From:
        return addresses(n, {kFrom}, {kFromAddr});
      case Field::To:
        return addresses(n, {kTo, kCc, kBcc, kDeliveredTo}, {kToAddr, kCcAddr, kBccAddr, kDeliveredToAddr});
      case Field::Cc:
        return addresses(n, {kCc}, {kCcAddr});
      case Field::Bcc:
        return addresses(n, {kBcc}, {kBccAddr});
      case Field::Subject:
        return text(n.value, n.phrase, kSubject);
      case Field::Filename:
        return Query(Query::OP_OR, bool_term(exact(kFilenameExact, to_lower(n.value))),
                     text(n.value, n.phrase, kFilename));
      case Field::List: {
        auto v = to_lower(trim(n.value));
        if (v.size() > 2 && v.front() == '<' && v.back() == '>') v = v.substr(1, v.size() - 2);
        return Query(Query::OP_OR, bool_term(exact(kListId, v)), text(n.value, n.phrase, kListWord));
      }
      case Field::MessageId: {
        std::string v(trim(n.value));
        if (v.size() > 2 && v.front() == '<' && v.back() == '>') v = v.substr(1, v.size() - 2);
        return bool_term(exact(kMessageId, v));
      }
      case Field::Label:
        return bool_term(exact(kLabel, to_lower(n.value)));
      case Field::In: {
        auto v = to_lower(n.value);
        if (v == "anywhere") return Query::MatchAll;
        if (v == "spam") v = "junk";
        return bool_term(exact(kFolder, v));
      }
      case Field::Is:
        if (n.value == "unread")
          return current_ ? bool_term(std::string(kUnread))
                          : Query(Query::OP_AND_NOT, Query::MatchAll, bool_term(std::string(kFlag) + "s"));
        return bool_term(std::string(kFlag) + (n.value == "read" ? "s" : "f"));
      case Field::Has:
        return bool_term(std::string(kHasAttachment));
      case Field::After:
        return date_ge(n.number);
      case Field::Before:
        return date_le(n.number - 1);
      case Field::NewerThan:
        return date_ge(n.number);
      case Field::OlderThan:
        return date_le(n.number);
      case Field::Larger:
        return Query(Query::OP_VALUE_GE, kSizeSlot, Xapian::sortable_serialise(static_cast<double>(n.number + 1)));
      case Field::Smaller:
        return Query(Query::OP_VALUE_LE, kSizeSlot, Xapian::sortable_serialise(static_cast<double>(n.number - 1)));
    }
    return Query::MatchNothing;
  }
};

// Counts, per conversation of a page, its matching messages and whether one
// of them is unread or starred (the Maildir flags of its file name).
struct PageSpy : Xapian::MatchSpy {
  std::map<std::string, Conversation*> by_id;
  void operator()(const Xapian::Document& doc, double) override {
    auto it = by_id.find(doc.get_value(prefix::kThreadSlot));
    if (it == by_id.end()) return;
    ++it->second->matched;
    auto f = message_file_from_rel(doc.get_value(prefix::kPathSlot));
    if (f && f->flags().find('S') == std::string::npos) it->second->unread = true;
    if (f && f->flags().find('F') != std::string::npos) it->second->flagged = true;
  }
};

// The latest date a match can have when the query bounds it (before: or
// older_than: as one of its AND terms, or on every side of an OR).
std::optional<int64_t> date_ceiling(const QueryNode& n) {
  switch (n.kind) {
    case QueryNode::Kind::Term:
      if (n.field == Field::Before) return n.number - 1;
      if (n.field == Field::OlderThan) return n.number;
      return std::nullopt;
    case QueryNode::Kind::And: {
      std::optional<int64_t> out;
      for (auto& c : n.children)
        if (auto d = date_ceiling(c)) out = out ? std::min(*out, *d) : *d;
      return out;
    }
    case QueryNode::Kind::Or: {
      std::optional<int64_t> out;
      for (auto& c : n.children) {
        auto d = date_ceiling(c);
        if (!d) return std::nullopt;
        out = out ? std::max(*out, *d) : *d;
      }
      return out;
    }
    default:
      return std::nullopt;
  }
}

// What a query's top-level AND says of every match, so that search() adds
// only the exclusions that can change its result: one named folder (then
// Junk and Trash need no excluding), or a term that only a message's
// document has (then ghosts need none). A count of "in:inbox" is then one
// term's frequency, not a walk through the whole Inbox.
struct TopLevel {
  bool folder = false;
  bool message = false;
};
TopLevel top_level(const QueryNode& n, bool current_format) {
  TopLevel out;
  auto look = [&](const QueryNode& t) {
    if (t.kind != QueryNode::Kind::Term) return;
    switch (t.field) {
      case Field::In:
        if (to_lower(t.value) != "anywhere") out.folder = out.message = true;
        break;
      case Field::Is:  // is:unread is "not seen" in an index of an older format
        if (t.value != "unread" || current_format) out.message = true;
        break;
      case Field::MessageId:  // a ghost has its Message-ID
      case Field::After: case Field::Before: case Field::OlderThan: case Field::NewerThan:
      case Field::Larger: case Field::Smaller:
        break;
      default:  // words, addresses, labels, has:attachment: terms of a message's text and state
        out.message = true;
    }
  };
  if (n.kind == QueryNode::Kind::And)
    for (auto& c : n.children) look(c);
  else
    look(n);
  return out;
}

Query ghost_free(Query q) {
  return Query(Query::OP_AND_NOT, q, Query(std::string(prefix::kGhost)));
}

}  // namespace

std::vector<StoredMessage> conversation_messages(const Database& db, const std::string& conversation) {
  auto& x = db.impl();
  std::vector<StoredMessage> out;
  std::string term = std::string(prefix::kThread) + conversation;
  for (auto it = x.db.postlist_begin(term); it != x.db.postlist_end(term); ++it) {
    auto doc = x.db.get_document(*it, Xapian::DOC_ASSUME_VALID);
    if (doc.get_data().empty()) continue;  // a ghost (Xapian keeps the data it read)
    out.push_back(stored_of(doc, *it, &conversation));
  }
  std::stable_sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.date < b.date; });
  return out;
}

std::optional<StoredMessage> message_by_id(const Database& db, const std::string& id) {
  auto docid = db.find(id);
  if (!docid) return std::nullopt;
  return db.stored(*docid);
}

SearchResult search(const Database& db, const SearchRequest& req) {
  SearchResult out;
  auto parsed = parse_query(req.query, req.now);
  if (!parsed.ok()) {
    out.error = parsed.error;
    out.error_text = parsed.error_text;
    return out;
  }
  auto& x = db.impl();
  Compiler c(x);
  const auto top = top_level(parsed.root, c.current_format());
  const std::string junk = prefix::exact(prefix::kFolder, "junk"), trash = prefix::exact(prefix::kFolder, "trash");
  Query q = c.compile(parsed.root);
  if (!top.message) q = ghost_free(q);
  if (!top.folder && !names_junk_or_trash(parsed.root))
    q = Query(Query::OP_AND_NOT, q, Query(Query::OP_OR, Query(junk), Query(trash)));
  if (!req.only_ids.empty()) {  // within these messages only (a filter meeting new mail)
    std::vector<Query> ids;
    for (auto& id : req.only_ids) ids.emplace_back(prefix::exact(prefix::kId, id));
    q = Query(Query::OP_FILTER, q, Query(Query::OP_OR, ids.begin(), ids.end()));
  }
  Xapian::Enquire enq(x.db);
  enq.set_weighting_scheme(Xapian::BoolWeight());
  const auto all = x.db.get_doccount();
  if (req.limit == 0 && req.messages) {
    // A count (the mailbox list): exact, and without the sort, with which
    // Xapian reads every match's date even for no page. A term's frequency
    // is exact from the statistics; a conjunction walks its rarest term.
    if (parsed.root.kind == QueryNode::Kind::All && req.only_ids.empty()) {
      // All Mail: every document is a ghost or a message in one folder.
      out.total = all - x.db.get_termfreq(std::string(prefix::kGhost)) - x.db.get_termfreq(junk) -
                  x.db.get_termfreq(trash);
      return out;
    }
    enq.set_query(q);
    auto m = enq.get_mset(0, 0, Xapian::doccount(0));
    if (m.get_matches_lower_bound() != m.get_matches_upper_bound()) m = enq.get_mset(0, 0, all);
    out.total = m.get_matches_estimated();
    out.total_exact = m.get_matches_lower_bound() == m.get_matches_upper_bound();
    return out;
  }
  enq.set_sort_by_value(prefix::kDateSlot, true);
  const Xapian::doccount check = static_cast<Xapian::doccount>(std::min<size_t>(req.offset + req.limit + 1, all));
  if (!req.messages) enq.set_collapse_key(prefix::kThreadSlot);

  // Newest first without sorting every match: the query runs within the
  // newest weeks, then months, years, ... until the page is full. A window
  // [lower, ∞) holds exactly the conversations whose newest match is at or
  // after `lower`, in the same order as the whole archive, so a full page
  // from a window is the whole archive's page. The Inbox of a large archive
  // sorts a month of mail instead of all of it.
  //
  // Where the index has month terms (prefix::kMonth), a window starts on the
  // first of a month and is the OR of its months' terms: Xapian walks the
  // window's postings and skips through the query's, so a window costs what
  // it holds. An older index filters by the date slot, which reads the date
  // of every match of the query: a window costs what the query matches.
  static constexpr int64_t kWindowDays[] = {7, 31, 92, 366, 3 * 366, 10 * 366};
  static constexpr int kWindowMonths[] = {0, 1, 2, 5, 11, 35};  // months before the newest's
  static constexpr int kMaxMonthTerms = 48;  // wider windows filter by the slot
  static constexpr size_t kWindowMinMatches = 3000;
  std::vector<Query> windows;  // the filters, narrowest first
  Xapian::MSet mset;
  std::optional<Xapian::ValueCountMatchSpy> spy;
  bool windowed = false;
  // Few matches are sorted at once: windows would only add passes. A count
  // alone (limit 0, the mailbox counts) needs no page, nor this estimate.
  Xapian::doccount estimated = 0;
  if (req.limit > 0) {
    // Xapian's estimate from the terms' statistics, without a match run (a
    // phrase's estimate is rough; looking at 2,000 matches to refine it cost a
    // fifth of the searches' throughput in bench/web_bench.py).
    Xapian::Enquire estimate(x.db);
    estimate.set_query(q);
    estimate.set_weighting_scheme(Xapian::BoolWeight());
    estimated = estimate.get_mset(0, 0, Xapian::doccount(0)).get_matches_estimated();
    if (estimated > std::max<size_t>(kWindowMinMatches, 20 * (req.offset + req.limit))) {
      // Anchored at the archive's newest date (an archive whose mail stopped
      // years ago still starts with its newest week), or now if that lies ahead.
      const int64_t now = req.now > 0 ? req.now : static_cast<int64_t>(::time(nullptr));
      // A query bounded above (older_than:15y) starts at its bound: the newest
      // windows would hold none of its matches.
      const auto upper = x.db.get_value_upper_bound(prefix::kDateSlot);
      int64_t top = upper.empty() ? now : static_cast<int64_t>(Xapian::sortable_unserialise(upper));
      if (auto ceiling = date_ceiling(parsed.root)) top = std::min(top, *ceiling);
      const int64_t newest = std::min(now, top);
      // Each window's pass costs, so windows that cannot fill the page are
      // skipped: at the archive's average rate of matches a window must be
      // expected to hold twice the page. Mail denser lately only means a
      // fuller window; sparser, the next one.
      const auto lower_bound = x.db.get_value_lower_bound(prefix::kDateSlot);
      const double oldest = lower_bound.empty() ? double(newest) : Xapian::sortable_unserialise(lower_bound);
      const double span_days = std::max(1.0, (double(newest) - oldest) / 86400.0);
      const double per_day = double(estimated) / span_days;
      auto enough = [&](int64_t lower) {
        return per_day * double(newest - lower) / 86400.0 >= 2.0 * double(req.offset + req.limit);
      };
      auto by_slot = [&](int64_t lower) {
        return Query(Query::OP_VALUE_GE, prefix::kDateSlot, Xapian::sortable_serialise(static_cast<double>(lower)));
      };
      if (c.current_format()) {
        const time_t nt = static_cast<time_t>(newest), tt = static_cast<time_t>(top);
        struct tm n {}, t {};
        ::gmtime_r(&nt, &n);
        ::gmtime_r(&tt, &t);
        const int last = (t.tm_year + 1900) * 12 + t.tm_mon;  // the newest month a match can have
        for (int back : kWindowMonths) {
          const int first = (n.tm_year + 1900) * 12 + n.tm_mon - back;
          struct tm m {};
          m.tm_year = first / 12 - 1900;
          m.tm_mon = first % 12;
          m.tm_mday = 1;
          const int64_t lower = static_cast<int64_t>(::timegm(&m));
          if (!enough(lower)) continue;
          if (last - first + 1 > kMaxMonthTerms) {
            windows.push_back(by_slot(lower));
            continue;
          }
          std::vector<Query> months;
          for (int mo = first; mo <= last; ++mo) months.emplace_back(prefix::month(mo / 12, mo % 12 + 1));
          windows.push_back(Query(Query::OP_OR, months.begin(), months.end()));
        }
      } else {
        for (int64_t days : kWindowDays)
          if (enough(newest - days * 86400)) windows.push_back(by_slot(newest - days * 86400));
      }
    }
  }
  for (size_t w = 0;; ++w) {
    const bool last = w == windows.size();
    enq.set_query(last ? q : Query(Query::OP_FILTER, q, windows[w]));
    if (!req.messages) {
      enq.clear_matchspies();
      spy.emplace(prefix::kThreadSlot);
      enq.add_matchspy(&*spy);
    }
    mset = enq.get_mset(req.offset, req.limit, check);
    if (last || mset.size() >= req.limit) {
      windowed = !last;
      break;
    }
  }

  if (req.messages) {
    if (windowed) {
      // The page is right; the count is the whole query's estimate.
      out.total = estimated;
      out.total_exact = false;
    } else {
      out.total = mset.get_matches_estimated();
      out.total_exact = mset.size() < req.limit || mset.get_matches_lower_bound() == mset.get_matches_upper_bound();
      if (mset.size() < req.limit) {
        out.total = req.offset + mset.size();
        if (mset.size() == 0 && req.offset > 0) out.total = enq.get_mset(0, 0, all).get_matches_estimated();  // past the end
      }
    }
    for (auto it = mset.begin(); it != mset.end(); ++it) out.messages.push_back(db.stored(*it));
    return out;
  }
  // With collapsing, Xapian's counts are estimates. When every match was
  // looked at (the page was not filled), the distinct conversations seen
  // are the exact count; otherwise the estimate stands, and says so. Checking
  // every match of a broad query on a large archive would cost more than the
  // page itself.
  if (windowed) {
    // Conversations per message in the window, times the whole query's message estimate.
    size_t threads = 0;
    for (auto v = spy->values_begin(); v != spy->values_end(); ++v) ++threads;
    double per_message = spy->get_total() ? double(threads) / double(spy->get_total()) : 1.0;
    out.total = std::max<uint64_t>(req.offset + mset.size(), uint64_t(double(estimated) * per_message + 0.5));
    out.total_exact = false;
  } else if (mset.size() < req.limit || mset.get_matches_lower_bound() == mset.get_matches_upper_bound()) {
    out.total = 0;
    for (auto v = spy->values_begin(); v != spy->values_end(); ++v) ++out.total;
  } else {
    out.total = mset.get_matches_estimated();
    out.total_exact = false;
  }
  for (auto it = mset.begin(); it != mset.end(); ++it) {
    Conversation conv;
    conv.id = it.get_collapse_key();  // the conversation slot, without reading the document
    auto members = conversation_messages(db, conv.id);
    conv.messages = members.size();
    // The newest match is one of the members: its snippet without reading it again.
    for (auto& m : members)
      if (m.docid == *it) conv.snippet = m.snippet;
    std::set<std::string> labels, folders;
    for (auto& m : members) {
      conv.date = std::max(conv.date, m.date);
      auto name = m.from_name.empty() ? m.from_address : m.from_name;  // the address when there is no name
      if (!name.empty() && std::find(conv.senders.begin(), conv.senders.end(), name) == conv.senders.end())
        conv.senders.push_back(name);
      labels.insert(m.labels.begin(), m.labels.end());
      folders.insert(m.file.folder);
    }
    if (!members.empty()) conv.subject = members.front().subject;
    conv.labels.assign(labels.begin(), labels.end());
    conv.folders.assign(folders.begin(), folders.end());
    out.conversations.push_back(std::move(conv));
  }
  // Which messages of the page's conversations match, and which of those are
  // unread or starred: one more query, within those conversations only. A
  // match spy reads the conversation and file slots as the matcher streams
  // them; reading each match's document instead is a B-tree lookup apiece.
  if (!out.conversations.empty()) {
    std::vector<Query> threads;
    PageSpy spy;
    for (auto& c : out.conversations) {
      threads.emplace_back(std::string(prefix::kThread) + c.id);
      spy.by_id[c.id] = &c;
    }
    Xapian::Enquire inner(x.db);
    inner.set_query(Query(Query::OP_FILTER, q, Query(Query::OP_OR, threads.begin(), threads.end())));
    inner.set_weighting_scheme(Xapian::BoolWeight());
    inner.add_matchspy(&spy);
    inner.get_mset(0, 0, all);
  }
  return out;
}

}  // namespace mk::index
