// database.cpp — see database.h. Which terms a message gets is prefix.h's table.
#include <sys/stat.h>

#include <algorithm>
#include <thread>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <openssl/evp.h>
#include <set>
#include <stdexcept>

#include "core/strings.h"
#include "index/database_impl.h"
#include "index/labels.h"
#include "index/prefix.h"

namespace mk::index {
namespace {


constexpr size_t kSnippet = 200;

std::string sha1_hex(std::string_view s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), md, &len, EVP_sha1(), nullptr);
  return to_hex(md, len);
}

std::string snippet_of(const std::string& text) {
  std::string out;
  bool space = false;
  for (size_t i = 0; i < text.size() && out.size() < kSnippet * 2; ++i) {
    char c = text[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  // Cut at kSnippet characters (not bytes).
  size_t chars = 0, i = 0;
  for (; i < out.size(); ++i)
    if ((static_cast<unsigned char>(out[i]) & 0xC0) != 0x80 && ++chars > kSnippet) break;
  // The loop above may have stopped inside a character: never emit half of one.
  return clean_utf8(out.substr(0, i), out.size());
}

// Data encoding: "key\tvalue\n" lines; \ \t \n escaped.
void put(std::string& out, const char* key, std::string_view v) {
  if (v.empty()) return;
  out += key;
  out += '\t';
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\t') out += "\\t";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  out += '\n';
}

std::string join(const std::vector<std::string>& v, char sep) {
  std::string out;
  for (auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t start = 0;
  for (;;) {
    auto p = s.find(sep, start);
    out.emplace_back(s.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  return out;
}

std::string folder_term(const std::string& folder) { return prefix::exact(prefix::kFolder, to_lower(folder)); }

}  // namespace

namespace prefix {
std::string exact(std::string_view p, std::string_view value) {
  std::string t(p);
  if (!value.empty() && value.front() >= 'A' && value.front() <= 'Z') t += ':';
  if (t.size() + value.size() > 240) return t + "#" + sha1_hex(value);
  t += value;
  return t;
}

std::string month(int64_t unix_time) {
  const time_t t = static_cast<time_t>(unix_time);
  struct tm tm {};
  ::gmtime_r(&t, &tm);
  return month(tm.tm_year + 1900, tm.tm_mon + 1);
}

std::string month(int year, int mon) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%04d%02d", year, mon);
  return std::string(kMonth) + buf;
}
}  // namespace prefix

bool term_has_prefix(const std::string& term, std::string_view p) {
  if (term.size() < p.size() || term.compare(0, p.size(), p) != 0) return false;
  return term.size() == p.size() || !(term[p.size()] >= 'A' && term[p.size()] <= 'Z') || term[p.size()] == ':';
}

std::string encode_data(const StoredMessage& m) {
  std::string out;
  put(out, "f", m.from);
  put(out, "fa", m.from_address);
  put(out, "fn", m.from_name);
  put(out, "t", join(m.to, ','));
  put(out, "c", join(m.cc, ','));
  put(out, "s", m.subject);
  put(out, "m", m.message_id);
  put(out, "n", m.snippet);
  put(out, "l", m.list_id);
  put(out, "d", std::to_string(m.date));
  put(out, "z", std::to_string(m.size));
  std::vector<std::string> atts;
  for (auto& a : m.attachments) atts.push_back(a.filename + '\x1f' + a.type + '\x1f' + std::to_string(a.size) + '\x1f' + a.content_id);
  put(out, "a", join(atts, '\x1e'));
  put(out, "b", join(m.labels, '\x1e'));
  put(out, "h", m.digest);
  return out;
}

void decode_data(const std::string& data, StoredMessage& m) {
  size_t pos = 0;
  while (pos < data.size()) {
    auto eol = data.find('\n', pos);
    if (eol == std::string::npos) eol = data.size();
    std::string_view line(data.data() + pos, eol - pos);
    pos = eol + 1;
    auto tab = line.find('\t');
    if (tab == std::string_view::npos) continue;
    auto key = line.substr(0, tab);
    std::string v;
    for (size_t i = tab + 1; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 1 < line.size()) {
        char n = line[++i];
        v += n == 't' ? '\t' : n == 'n' ? '\n' : n;
      } else {
        v += line[i];
      }
    }
    if (key == "f") m.from = v;
    else if (key == "fa") m.from_address = v;
    else if (key == "fn") m.from_name = v;
    else if (key == "t") m.to = split(v, ',');
    else if (key == "c") m.cc = split(v, ',');
    else if (key == "s") m.subject = v;
    else if (key == "m") m.message_id = v;
    else if (key == "n") m.snippet = v;
    else if (key == "l") m.list_id = v;
    else if (key == "d") m.date = std::stoll(v);
    else if (key == "z") m.size = std::stoull(v);
    else if (key == "b") m.labels = split(v, '\x1e');
    else if (key == "h") m.digest = v;
    else if (key == "a") {
      for (auto& a : split(v, '\x1e')) {
        auto f = split(a, '\x1f');
        f.resize(4);
        m.attachments.push_back({f[0], f[1], f[2].empty() ? 0 : std::stoull(f[2]), f[3]});
      }
    }
  }
}

// --- MessageFile ---

std::string MessageFile::base() const { return name.substr(0, name.find(":2,")); }

std::string MessageFile::flags() const {
  auto p = name.find(":2,");
  if (p == std::string::npos) return {};
  std::string f;
  for (char c : name.substr(p + 3))
    if (c >= 'A' && c <= 'Z' && f.find(c) == std::string::npos) f += c;
  std::sort(f.begin(), f.end());
  return f;
}

std::string MessageFile::rel_path() const {
  return (folder == "INBOX" ? std::string() : "." + folder + "/") + subdir + "/" + name;
}

std::string MessageFile::dir_key() const { return folder + "/" + subdir; }

int64_t MessageFile::arrival() const {
  int64_t t = 0;
  size_t i = 0;
  for (; i < name.size() && i < 12 && name[i] >= '0' && name[i] <= '9'; ++i) t = t * 10 + (name[i] - '0');
  return i > 0 ? t : 0;
}

std::optional<MessageFile> message_file_from_rel(const std::string& rel) {
  auto parts = split(rel, '/');
  MessageFile f;
  if (parts.size() == 2) {
    f.folder = "INBOX";
  } else if (parts.size() == 3 && parts[0].size() > 1 && parts[0][0] == '.') {
    f.folder = parts[0].substr(1);
  } else {
    return std::nullopt;
  }
  f.subdir = parts[parts.size() - 2];
  f.name = parts.back();
  if ((f.subdir != "new" && f.subdir != "cur") || f.name.empty() || f.name[0] == '.') return std::nullopt;
  return f;
}

std::string account_index_dir(const std::string& root, const std::string& domain, const std::string& local) {
  return root + "/" + domain + "/" + local;
}

// --- Database ---

Database::Impl::Impl(const IndexOptions& opt) {
  if (opt.language != "none") {
    try {
      stemmer = Xapian::Stem(opt.language);
    } catch (const Xapian::Error&) {
      throw std::runtime_error("[index] language: no stemmer for '" + opt.language + "'");
    }
  }
  tg.set_stemmer(stemmer);
  tg.set_stemming_strategy(Xapian::TermGenerator::STEM_SOME);
  tg.set_flags(Xapian::TermGenerator::FLAG_CJK_NGRAM);
}

Database::Database(std::unique_ptr<Impl> impl, const IndexOptions& opt)
    : impl_(std::move(impl)), options_(opt), dir_(impl_->dir) {}
Database::~Database() {
  if (impl_ && impl_->wdb) {
    try {
      impl_->wdb->close();  // uncommitted changes are dropped, never half-written
    } catch (const Xapian::Error&) {
    }
  }
}

namespace {

// A compaction swaps directories with two renames (compact()); a crash
// between them leaves xapian.old and no xapian: put it back.
void recover_swap(const std::string& dir) {
  struct stat st {};
  if (::stat((dir + "/xapian").c_str(), &st) == 0) return;
  if (::stat((dir + "/xapian.old").c_str(), &st) == 0) ::rename((dir + "/xapian.old").c_str(), (dir + "/xapian").c_str());
}

}  // namespace

std::unique_ptr<Database> Database::open_writable(const std::string& dir, const IndexOptions& opt) {
  auto impl = std::make_unique<Impl>(opt);
  recover_swap(dir);
  try {
    std::error_code ec;
    std::string path = dir + "/xapian";
    std::filesystem::create_directories(dir, ec);
    if (ec) throw std::runtime_error(dir + ": cannot create: " + ec.message());
    impl->wdb.emplace(path, Xapian::DB_CREATE_OR_OPEN);
    // Every document this build writes has the terms of prefix::kFormat; a
    // database that holds none yet (new, or rebuilt) can say so. Committed with the first batch.
    if (impl->wdb->get_doccount() == 0 && impl->wdb->get_metadata(prefix::kFormatKey).empty())
      impl->wdb->set_metadata(prefix::kFormatKey, prefix::kFormat);
    impl->dir = dir;
    impl->db = *impl->wdb;
    impl->writable = true;
  } catch (const Xapian::DatabaseLockError& e) {
    throw IndexLocked(dir + ": the index is being written by another process");
  } catch (const Xapian::Error& e) {
    throw std::runtime_error(dir + ": " + e.get_description());
  }
  return std::unique_ptr<Database>(new Database(std::move(impl), opt));
}

std::unique_ptr<Database> Database::open_writable_waiting(const std::string& dir, const IndexOptions& opt,
                                                          std::chrono::milliseconds patience,
                                                          const std::atomic<bool>* stop) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (true) {
    try {
      return open_writable(dir, opt);
    } catch (const IndexLocked&) {
      if (std::chrono::steady_clock::now() >= deadline || (stop && stop->load())) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

std::unique_ptr<Database> Database::open_readonly(const std::string& dir, const IndexOptions& opt) {
  recover_swap(dir);
  struct stat st {};
  if (::stat((dir + "/xapian").c_str(), &st) != 0) return nullptr;
  auto impl = std::make_unique<Impl>(opt);
  impl->opened = {st.st_dev, st.st_ino};
  impl->read_dir = dir;
  try {
    impl->db = Xapian::Database(dir + "/xapian");
  } catch (const Xapian::Error& e) {
    throw std::runtime_error(dir + ": " + e.get_description());
  }
  return std::unique_ptr<Database>(new Database(std::move(impl), opt));
}

bool Database::refresh() {
  if (impl_->writable) return true;
  struct stat st {};
  // A rebuild or compaction puts a new directory in place (compact()): this
  // handle would go on reading the old one.
  if (::stat((impl_->read_dir + "/xapian").c_str(), &st) != 0 ||
      std::pair<uint64_t, uint64_t>{st.st_dev, st.st_ino} != impl_->opened)
    return false;
  try {
    impl_->db.reopen();
    return true;
  } catch (const Xapian::Error&) {
    return false;
  }
}

namespace {

// The conversation ids of documents holding Message-ID `mid`.
void threads_of(Xapian::Database& db, const std::string& mid, std::set<std::string>& out,
                std::vector<Xapian::docid>* ghosts) {
  auto term = prefix::exact(prefix::kMessageId, mid);
  for (auto it = db.postlist_begin(term); it != db.postlist_end(term); ++it) {
    auto doc = db.get_document(*it);
    out.insert(doc.get_value(prefix::kThreadSlot));
    if (ghosts) {
      auto t = doc.termlist_begin();
      t.skip_to(std::string(prefix::kGhost));
      if (t != doc.termlist_end() && *t == prefix::kGhost) ghosts->push_back(*it);
    }
  }
}

std::string new_thread(Xapian::WritableDatabase& db) {
  auto v = db.get_metadata("next_thread");
  uint64_t n = v.empty() ? 1 : std::stoull(v);
  db.set_metadata("next_thread", std::to_string(n + 1));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(n));
  return buf;
}

void set_thread(Xapian::Document& doc, const std::string& thread) {
  doc.add_boolean_term(std::string(prefix::kThread) + thread);
  doc.add_value(prefix::kThreadSlot, thread);
}

void add_ghost(Xapian::WritableDatabase& db, const std::string& mid, const std::string& thread) {
  Xapian::Document g;
  g.add_boolean_term(prefix::exact(prefix::kMessageId, mid));
  g.add_boolean_term(std::string(prefix::kGhost));
  set_thread(g, thread);
  db.add_document(g);
}

void set_location_terms(Xapian::Document& doc, const MessageFile& f) {
  doc.add_boolean_term(folder_term(f.folder));
  const std::string flags = f.flags();
  for (char c : flags) doc.add_boolean_term(std::string(prefix::kFlag) + static_cast<char>(std::tolower(c)));
  if (flags.find('S') == std::string::npos) doc.add_boolean_term(std::string(prefix::kUnread));
  doc.add_boolean_term(prefix::exact(prefix::kDir, f.dir_key()));
  doc.add_value(prefix::kPathSlot, f.rel_path());
}

}  // namespace

struct PreparedMessage::Doc {
  Xapian::Document doc;
};

PreparedMessage::PreparedMessage() = default;
PreparedMessage::~PreparedMessage() = default;
PreparedMessage::PreparedMessage(PreparedMessage&&) noexcept = default;
PreparedMessage& PreparedMessage::operator=(PreparedMessage&&) noexcept = default;

namespace {

// The stems of the subject's and the body's words, as "Z" terms beside the
// exact ones (Xapian's STEM_SOME convention), but only where the stem
// differs from the word: a query for a word looks for both (search.cpp), so
// "Zthe" beside "the" would only double the postings. Stemming each distinct
// word once here also costs less than the TermGenerator stemming every
// occurrence.
void add_stems(Xapian::Document& doc, const Xapian::Stem& stem) {
  if (stem.is_none()) return;
  std::vector<std::pair<std::string, Xapian::termcount>> add;
  for (auto t = doc.termlist_begin(); t != doc.termlist_end(); ++t) {
    const std::string& term = *t;
    if (term.empty()) continue;
    size_t p = 0;
    if (term[0] >= 'A' && term[0] <= 'Z') {
      if (!term_has_prefix(term, prefix::kSubject)) continue;  // header words are not stemmed
      p = prefix::kSubject.size();
    }
    std::string word = term.substr(p);
    std::string s = stem(word);
    if (!s.empty() && s != word) add.emplace_back("Z" + term.substr(0, p) + s, t.get_wdf());
  }
  for (auto& [term, wdf] : add) doc.add_term(term, wdf);
}

}  // namespace

struct DocumentBuilder::Impl {
  Xapian::Stem stemmer;
  Xapian::TermGenerator tg;
};

DocumentBuilder::DocumentBuilder(const IndexOptions& opt) : impl_(std::make_unique<Impl>()) {
  Database::Impl config(opt);  // one place decides stemmer and flags
  impl_->stemmer = config.stemmer;
  impl_->tg = config.tg;
  impl_->tg.set_stemming_strategy(Xapian::TermGenerator::STEM_NONE);  // add_stems() does it
}
DocumentBuilder::~DocumentBuilder() = default;

bool DocumentBuilder::build(const std::string& maildir, const MessageFile& file, PreparedMessage& out) {
  auto& tg = impl_->tg;
  ParsedMessage pm;
  ParseOptions po;
  po.arrival = file.arrival();
  std::string path = maildir + "/" + file.rel_path();
  out.file = file;
  out.note.clear();
  if (!parse_message_file(path, po, pm, out.note)) return false;
  for (auto& n : pm.notes) out.note += (out.note.empty() ? "" : "; ") + n;
  struct stat st {};
  uint64_t size = ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;

  out.doc = std::make_unique<PreparedMessage::Doc>();
  Xapian::Document& doc = out.doc->doc;
  tg.set_document(doc);
  // The generator holds a handle on the document, and Xapian's handles
  // count references without atomics: let go of it before the document
  // leaves for the inserting thread (sync.cpp), or both threads touch the count.
  struct Release {
    Xapian::TermGenerator& tg;
    ~Release() { tg.set_document(Xapian::Document()); }
  } release{tg};
  // Positions only where phrases are asked for: the subject and the body.
  // Header words are found through their prefixes (a bare word searches
  // them too, search.cpp), so they are stored once.
  if (!pm.subject.empty()) {
    tg.index_text(pm.subject, 1, std::string(prefix::kSubject));
    tg.increase_termpos(10);
  }
  // Names, addresses, file names and list ids are not English: no stems.
  auto addresses = [&](const std::vector<Address>& list, std::string_view text_prefix, std::string_view exact_prefix) {
    for (auto& a : list) {
      if (!a.name.empty()) tg.index_text_without_positions(a.name, 1, std::string(text_prefix));
      if (!a.address.empty()) {
        tg.index_text_without_positions(a.address, 1, std::string(text_prefix));
        doc.add_boolean_term(prefix::exact(exact_prefix, a.address));
      }
    }
  };
  addresses(pm.from, prefix::kFrom, prefix::kFromAddr);
  addresses(pm.to, prefix::kTo, prefix::kToAddr);
  addresses(pm.cc, prefix::kCc, prefix::kCcAddr);
  addresses(pm.bcc, prefix::kBcc, prefix::kBccAddr);
  addresses(pm.delivered_to, prefix::kDeliveredTo, prefix::kDeliveredToAddr);
  for (auto& a : pm.attachments) {
    if (a.filename.empty()) continue;
    tg.index_text_without_positions(a.filename, 1, std::string(prefix::kFilename));
    doc.add_boolean_term(prefix::exact(prefix::kFilenameExact, to_lower(a.filename)));
  }
  if (!pm.list_id.empty()) {
    doc.add_boolean_term(prefix::exact(prefix::kListId, pm.list_id));
    tg.index_text_without_positions(pm.list_id, 1, std::string(prefix::kListWord));
  }
  tg.index_text(pm.body_text);
  add_stems(doc, impl_->stemmer);

  if (!pm.message_id.empty()) doc.add_boolean_term(prefix::exact(prefix::kMessageId, pm.message_id));
  if (pm.has_attachment) doc.add_boolean_term(std::string(prefix::kHasAttachment));
  doc.add_boolean_term(prefix::exact(prefix::kId, file.base()));
  set_location_terms(doc, file);
  doc.add_value(prefix::kDateSlot, Xapian::sortable_serialise(static_cast<double>(pm.date)));
  doc.add_boolean_term(prefix::month(pm.date));
  doc.add_value(prefix::kSizeSlot, Xapian::sortable_serialise(static_cast<double>(size)));

  StoredMessage m;
  if (!pm.from.empty()) {
    m.from = pm.from.front().display();
    m.from_address = pm.from.front().address;
    m.from_name = pm.from.front().name;
  }
  for (auto& a : pm.to) m.to.push_back(a.address);
  for (auto& a : pm.cc) m.cc.push_back(a.address);
  m.subject = pm.subject;
  m.message_id = pm.message_id;
  m.snippet = snippet_of(pm.body_text);
  m.list_id = pm.list_id;
  m.date = pm.date;
  m.size = size;
  m.attachments = pm.attachments;
  m.digest = identity_digest_of_file(path, pm.message_id);
  if (!m.digest.empty()) doc.add_boolean_term(std::string(prefix::kDigest) + m.digest);
  out.digest = m.digest;
  doc.set_data(encode_data(m));
  out.message_id = std::move(pm.message_id);
  out.references = std::move(pm.references);
  return true;
}

bool Database::add(const std::string& maildir, const MessageFile& file, std::string& note) {
  if (!builder_) builder_ = std::make_unique<DocumentBuilder>(options_);
  PreparedMessage pm;
  bool ok = builder_->build(maildir, file, pm);
  note = pm.note;
  if (ok) insert(std::move(pm));
  return ok;
}

void Database::insert(PreparedMessage&& pm) {
  auto& db = *impl_->wdb;
  Xapian::Document& doc = pm.doc->doc;
  // Conversation: every id it names joins one conversation (merging them).
  std::set<std::string> threads;
  std::vector<Xapian::docid> own_ghosts;
  if (!pm.message_id.empty()) threads_of(db, pm.message_id, threads, &own_ghosts);
  std::vector<std::string> missing;
  for (auto& ref : pm.references) {
    std::set<std::string> found;
    threads_of(db, ref, found, nullptr);
    if (found.empty()) missing.push_back(ref);
    threads.insert(found.begin(), found.end());
  }
  threads.erase(std::string());
  std::string thread = threads.empty() ? new_thread(db) : *threads.begin();
  for (auto& other : threads) {
    if (other == thread) continue;
    std::string term = std::string(prefix::kThread) + other;
    std::vector<Xapian::docid> ids(db.postlist_begin(term), db.postlist_end(term));
    for (auto id : ids) {
      auto d = db.get_document(id);
      d.remove_term(term);
      set_thread(d, thread);
      db.replace_document(id, d);
    }
  }
  for (auto g : own_ghosts) db.delete_document(g);
  for (auto& ref : missing) add_ghost(db, ref, thread);
  set_thread(doc, thread);
  // A message that comes back (a rebuild, a copy, a re-import) gets its labels back.
  if (labels_known_ != 0) {
    auto& store = label_store();
    if (labels_known_ < 0) labels_known_ = store.empty() ? 0 : 1;
    if (labels_known_ == 1) {
      auto labels = store.labels(pm.file.base(), pm.digest);
      if (!labels.empty()) {
        for (auto& l : labels) doc.add_boolean_term(prefix::exact(prefix::kLabel, to_lower(l)));
        StoredMessage m;
        decode_data(doc.get_data(), m);
        m.labels = labels;
        doc.set_data(encode_data(m));
        if (labels_known_ == 1) store.set(pm.file.base(), pm.digest, labels);  // under its base name from now on
      }
    }
  }
  // The callers know the base name is not indexed yet (sync, the live
  // queue): add, without replace_document's look-up of the id term, which
  // makes Xapian 1.4 merge its pending changes for that term.
  db.add_document(doc);
  ++pending_;
}

void Database::set_labels_for(const std::string& base, const std::string& digest,
                              const std::vector<std::string>& labels) {
  label_store().set(base, digest, labels);
  if (!labels.empty()) labels_known_ = 1;
}

LabelStore& Database::label_store() {
  if (!labels_) labels_ = std::make_unique<LabelStore>(dir_);
  return *labels_;
}

std::vector<uint32_t> Database::find_digest(const std::string& digest) const {
  std::string term = std::string(prefix::kDigest) + digest;
  return std::vector<uint32_t>(impl_->db.postlist_begin(term), impl_->db.postlist_end(term));
}

std::optional<uint32_t> Database::find(const std::string& base) const {
  auto term = prefix::exact(prefix::kId, base);
  auto it = impl_->db.postlist_begin(term);
  if (it == impl_->db.postlist_end(term)) return std::nullopt;
  return *it;
}

void Database::relocate(uint32_t docid, const MessageFile& file) {
  auto& db = *impl_->wdb;
  auto doc = db.get_document(docid);
  std::vector<std::string> old;
  for (auto t = doc.termlist_begin(); t != doc.termlist_end(); ++t) {
    const std::string& term = *t;
    if (term_has_prefix(term, prefix::kFolder) || term_has_prefix(term, prefix::kFlag) ||
        term_has_prefix(term, prefix::kDir))
      old.push_back(term);
  }
  for (auto& t : old) doc.remove_term(t);
  set_location_terms(doc, file);
  db.replace_document(docid, doc);
  ++pending_;
}

void Database::remove(uint32_t docid) {
  auto& db = *impl_->wdb;
  auto doc = db.get_document(docid);
  StoredMessage m;
  decode_data(doc.get_data(), m);
  std::string thread = doc.get_value(prefix::kThreadSlot);
  db.delete_document(docid);
  ++pending_;
  if (m.message_id.empty()) return;
  // Others still reference it (or share its id): keep the id as a ghost so
  // that the conversation stays whole.
  auto mid_term = prefix::exact(prefix::kMessageId, m.message_id);
  if (db.postlist_begin(mid_term) != db.postlist_end(mid_term)) return;
  auto thread_term = std::string(prefix::kThread) + thread;
  if (db.postlist_begin(thread_term) != db.postlist_end(thread_term)) add_ghost(db, m.message_id, thread);
}

std::vector<std::pair<uint32_t, MessageFile>> Database::files_in(const std::string& dir_key) const {
  std::vector<std::pair<uint32_t, MessageFile>> out;
  auto term = prefix::exact(prefix::kDir, dir_key);
  auto& db = impl_->db;
  for (auto it = db.postlist_begin(term); it != db.postlist_end(term); ++it) {
    auto rel = db.get_document(*it).get_value(prefix::kPathSlot);
    if (auto f = message_file_from_rel(rel)) out.emplace_back(*it, *f);
  }
  return out;
}

std::vector<std::string> Database::dir_keys() const {
  std::vector<std::string> out;
  std::string p(prefix::kDir);
  for (auto it = impl_->db.allterms_begin(p); it != impl_->db.allterms_end(p); ++it) {
    std::string t = *it;
    t.erase(0, p.size());
    if (!t.empty() && t[0] == ':') t.erase(0, 1);
    out.push_back(t);
  }
  return out;
}

void Database::set_labels(uint32_t docid, const std::vector<std::string>& labels) {
  auto& db = *impl_->wdb;
  auto doc = db.get_document(docid);
  std::vector<std::string> old;
  for (auto t = doc.termlist_begin(); t != doc.termlist_end(); ++t)
    if (term_has_prefix(*t, prefix::kLabel)) old.push_back(*t);
  for (auto& t : old) doc.remove_term(t);
  for (auto& l : labels) doc.add_boolean_term(prefix::exact(prefix::kLabel, to_lower(l)));
  StoredMessage m;
  decode_data(doc.get_data(), m);
  m.labels = labels;
  doc.set_data(encode_data(m));
  label_store().set(m.file.base().empty() ? stored(docid).id : m.file.base(), m.digest, labels);
  labels_known_ = labels.empty() ? labels_known_ : 1;
  db.replace_document(docid, doc);
  ++pending_;
}

void Database::compact() {
  // Written while this object holds the write lock, so no change is lost;
  // then swapped in: readers that have the old files open keep them.
  commit();
  const std::string tmp = dir_ + "/xapian.compact", old = dir_ + "/xapian.old", cur = dir_ + "/xapian";
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  std::filesystem::remove_all(old, ec);
  Xapian::Database(cur).compact(tmp, Xapian::DBCOMPACT_NO_RENUMBER);
  if (::rename(cur.c_str(), old.c_str()) != 0) throw std::runtime_error(cur + ": rename failed");
  if (::rename(tmp.c_str(), cur.c_str()) != 0) {
    ::rename(old.c_str(), cur.c_str());
    throw std::runtime_error(tmp + ": rename failed");
  }
  std::filesystem::remove_all(old, ec);
  // This handle still has the old files open: a commit through it would put
  // their revision into the new directory. Reopened on the compacted copy.
  try {
    impl_->wdb->close();
    impl_->wdb.emplace(cur, Xapian::DB_OPEN);
    impl_->db = *impl_->wdb;
  } catch (const Xapian::DatabaseLockError&) {
    throw IndexLocked(dir_ + ": the index is being written by another process");
  } catch (const Xapian::Error& e) {
    throw std::runtime_error(dir_ + ": " + e.get_description());
  }
}

std::string Database::metadata(const std::string& key) const { return impl_->db.get_metadata(key); }
void Database::set_metadata(const std::string& key, const std::string& value) { impl_->wdb->set_metadata(key, value); }

void Database::commit() {
  impl_->wdb->commit();
  pending_ = 0;
}

uint64_t Database::message_count() const {
  auto& db = impl_->db;
  return db.get_doccount() - db.get_termfreq(std::string(prefix::kGhost));
}

std::vector<LabelCount> Database::label_counts() const {
  std::vector<LabelCount> out;
  auto& db = impl_->db;
  const std::string prefix(prefix::kLabel);
  for (auto t = db.allterms_begin(prefix); t != db.allterms_end(prefix); ++t) {
    const std::string term = *t;
    // XLW, XLI: other prefixes that start with the same letters (labels are lower-cased).
    if (term.size() <= prefix.size() || !term_has_prefix(term, prefix)) continue;
    LabelCount c;
    c.name = term.substr(prefix.size() + (term[prefix.size()] == ':' ? 1 : 0));
    c.messages = t.get_termfreq();
    // The spelling the user gave, from one message that carries it.
    auto p = db.postlist_begin(term);
    if (p != db.postlist_end(term)) {
      StoredMessage m;
      decode_data(db.get_document(*p).get_data(), m);
      for (auto& l : m.labels)
        if (prefix::exact(prefix::kLabel, to_lower(l)) == term) c.name = l;
    }
    out.push_back(std::move(c));
  }
  return out;
}

StoredMessage Database::stored(uint32_t docid) const {
  return stored_of(impl_->db.get_document(docid, Xapian::DOC_ASSUME_VALID), docid);
}

StoredMessage stored_of(const Xapian::Document& doc, uint32_t docid, const std::string* conversation) {
  StoredMessage m;
  decode_data(doc.get_data(), m);
  m.docid = docid;
  m.conversation = conversation ? *conversation : doc.get_value(prefix::kThreadSlot);
  if (auto f = message_file_from_rel(doc.get_value(prefix::kPathSlot))) m.file = *f;
  m.id = m.file.base();
  return m;
}

}  // namespace mk::index
