// filters.cpp — see filters.h.
#include "filters/filters.h"

#include <fcntl.h>
#include <glib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>

#include "core/fd_io.h"
#include "core/strings.h"
#include "mailbox/mailbox.h"

namespace mk::filters {
namespace {

constexpr size_t kMaxFile = 4 * 1024 * 1024;
constexpr size_t kMaxFilters = 5000;

bool truthy(const std::string& v) { return v == "true" || v == "True" || v == "1"; }

void set_property(Filter& f, const std::string& name, const std::string& value) {
  if (name == "from") f.from = value;
  else if (name == "to") f.to = value;
  else if (name == "subject") f.subject = value;
  else if (name == "hasTheWord") f.has_words = value;
  else if (name == "doesNotHaveTheWord") f.not_words = value;
  else if (name == "hasAttachment") f.has_attachment = truthy(value);
  else if (name == "label") f.label = value;
  else if (name == "shouldArchive") f.skip_inbox = truthy(value);
  else if (name == "shouldMarkAsRead") f.mark_read = truthy(value);
  else if (name == "shouldStar") f.star = truthy(value);
  else if (name == "shouldNeverSpam") f.never_spam = truthy(value);
  else if (name == "shouldSpam") f.spam = truthy(value);
  else if (name == "shouldTrash") f.trash = truthy(value);
  else f.other.emplace_back(name, value);
}

struct ParseState {
  std::vector<Filter> filters;
  bool in_entry = false, in_id = false;
  Filter current;
  std::string id_text;
};

void on_start(GMarkupParseContext*, const gchar* element, const gchar** names, const gchar** values, gpointer data,
              GError** error) {
  auto* st = static_cast<ParseState*>(data);
  std::string_view e(element);
  if (e == "entry") {
    st->in_entry = true;
    st->current = Filter{};
    st->id_text.clear();
  } else if (st->in_entry && e == "id") {
    st->in_id = true;
  } else if (st->in_entry && (e == "apps:property" || e.ends_with(":property") || e == "property")) {
    const gchar *name = nullptr, *value = nullptr;
    for (int i = 0; names[i]; ++i) {
      if (std::strcmp(names[i], "name") == 0) name = values[i];
      if (std::strcmp(names[i], "value") == 0) value = values[i];
    }
    if (!name || !value) {
      g_set_error(error, G_MARKUP_ERROR, G_MARKUP_ERROR_INVALID_CONTENT, "a property needs name and value");
      return;
    }
    set_property(st->current, name, value);
  }
}

void on_end(GMarkupParseContext*, const gchar* element, gpointer data, GError** error) {
  auto* st = static_cast<ParseState*>(data);
  std::string_view e(element);
  if (e == "id") st->in_id = false;
  if (e == "entry" && st->in_entry) {
    st->in_entry = false;
    // Gmail's ids: "tag:mail.google.com,2008:filter:1234567890"; keep the last part.
    auto id = st->id_text;
    auto colon = id.rfind(':');
    st->current.id = colon == std::string::npos ? id : id.substr(colon + 1);
    if (st->filters.size() >= kMaxFilters) {
      g_set_error(error, G_MARKUP_ERROR, G_MARKUP_ERROR_INVALID_CONTENT, "more than 5000 filters");
      return;
    }
    st->filters.push_back(std::move(st->current));
  }
}

void on_text(GMarkupParseContext*, const gchar* text, gsize len, gpointer data, GError**) {
  auto* st = static_cast<ParseState*>(data);
  if (st->in_id) st->id_text.append(text, len);
}

std::string xml_escape(const std::string& s) {
  gchar* e = g_markup_escape_text(s.c_str(), gssize(s.size()));
  std::string out(e);
  g_free(e);
  return out;
}

// A criterion as a query term group: Gmail puts each one in parentheses.
std::string group(const std::string& field, const std::string& value) {
  if (value.empty()) return "";
  return field + "(" + value + ")";
}

mailbox::ModifyRequest request_of(const Filter& f) {
  mailbox::ModifyRequest r;
  r.query = f.query();
  if (!f.label.empty()) r.add_labels.push_back(f.label);
  if (f.mark_read) r.seen = true;
  if (f.star) r.flagged = true;
  if (f.trash) r.move_to = "Trash";
  else if (f.spam) r.move_to = "Junk";
  else if (f.skip_inbox) {
    r.move_to = "Archive";
    r.only_from_inbox = true;
  }
  return r;
}

void add(ApplyStats& st, const mailbox::ModifyResult& r) {
  st.matched += r.messages;
  st.moved += r.moved;
  st.changed += r.flag_changes + r.label_changes;
  if (!r.ok()) st.errors.push_back(r.error_text);
}

}  // namespace

std::string Filter::query() const {
  std::string q;
  auto append = [&](const std::string& part) {
    if (part.empty()) return;
    q += (q.empty() ? "" : " ") + part;
  };
  append(group("from:", from));
  append(group("to:", to));
  append(group("subject:", subject));
  if (!has_words.empty()) append("(" + has_words + ")");
  if (!not_words.empty()) append("-{" + not_words + "}");
  if (has_attachment) append("has:attachment");
  return q;
}

std::string Filter::actions() const {
  std::string a;
  auto add = [&](const std::string& s) { a += (a.empty() ? "" : " ") + s; };
  if (!label.empty()) add("label=" + label);
  if (skip_inbox) add("skip-inbox");
  if (mark_read) add("mark-read");
  if (star) add("star");
  if (never_spam) add("never-spam");
  if (spam) add("spam");
  if (trash) add("trash");
  return a;
}

FilterList parse_filters(std::string_view xml) {
  FilterList out;
  ParseState st;
  GMarkupParser parser{on_start, on_end, on_text, nullptr, nullptr};
  GMarkupParseContext* ctx = g_markup_parse_context_new(&parser, G_MARKUP_PREFIX_ERROR_POSITION, &st, nullptr);
  GError* error = nullptr;
  std::string_view body = xml;
  // GMarkup reads no XML declaration: skip it.
  if (body.starts_with("<?xml")) {
    auto end = body.find("?>");
    body.remove_prefix(end == std::string_view::npos ? body.size() : end + 2);
  }
  bool ok = g_markup_parse_context_parse(ctx, body.data(), gssize(body.size()), &error) &&
            g_markup_parse_context_end_parse(ctx, &error);
  if (!ok) {
    out.error = error ? error->message : "not a filter file";
    if (error) g_error_free(error);
  } else {
    out.filters = std::move(st.filters);
    std::set<std::string> seen;
    for (auto& f : out.filters) {
      if (f.id.empty() || !seen.insert(f.id).second) f.id = new_filter_id(out.filters);
      seen.insert(f.id);
      if (f.query().empty()) {
        out.error = "filter " + f.id + " has no criteria";
        out.filters.clear();
        break;
      }
    }
  }
  g_markup_parse_context_free(ctx);
  return out;
}

std::string format_filters(const std::vector<Filter>& filters) {
  std::ostringstream o;
  auto now = iso8601_utc(std::time(nullptr));
  o << "<?xml version='1.0' encoding='UTF-8'?>"
    << "<feed xmlns='http://www.w3.org/2005/Atom' xmlns:apps='http://schemas.google.com/apps/2006'>\n"
    << "<title>Mail Filters</title>\n<updated>" << now << "</updated>\n";
  auto prop = [&](const char* name, const std::string& value) {
    if (!value.empty()) o << "<apps:property name='" << name << "' value='" << xml_escape(value) << "'/>\n";
  };
  auto flag = [&](const char* name, bool on) {
    if (on) prop(name, "true");
  };
  for (auto& f : filters) {
    o << "<entry>\n<category term='filter'></category>\n<title>Mail Filter</title>\n"
      << "<id>tag:mailkeep,2026:filter:" << xml_escape(f.id) << "</id>\n<updated>" << now
      << "</updated>\n<content></content>\n";
    prop("from", f.from);
    prop("to", f.to);
    prop("subject", f.subject);
    prop("hasTheWord", f.has_words);
    prop("doesNotHaveTheWord", f.not_words);
    flag("hasAttachment", f.has_attachment);
    prop("label", f.label);
    flag("shouldArchive", f.skip_inbox);
    flag("shouldMarkAsRead", f.mark_read);
    flag("shouldStar", f.star);
    flag("shouldNeverSpam", f.never_spam);
    flag("shouldSpam", f.spam);
    flag("shouldTrash", f.trash);
    for (auto& [n, v] : f.other) prop(n.c_str(), v);
    o << "</entry>\n";
  }
  o << "</feed>\n";
  return o.str();
}

std::string filters_path(const std::string& index_dir) { return index_dir + "/filters.xml"; }

FilterList load_filters(const std::string& index_dir) {
  FilterList out;
  std::ifstream in(filters_path(index_dir), std::ios::binary);
  if (!in) return out;  // no file: no filters
  std::string text;
  text.resize(kMaxFile + 1);
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(in.gcount()));
  if (text.size() > kMaxFile) {
    out.error = filters_path(index_dir) + ": larger than 4 MiB";
    return out;
  }
  out = parse_filters(text);
  if (!out.error.empty()) out.error = filters_path(index_dir) + ": " + out.error;
  return out;
}

std::string save_filters(const std::string& index_dir, const std::vector<Filter>& filters) {
  auto path = filters_path(index_dir), tmp = path + ".tmp";
  auto text = format_filters(filters);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return "cannot create " + tmp + ": " + std::strerror(errno);
  bool ok = write_fully(fd, text.data(), text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return "cannot write " + path + ": " + err;
  }
  fsync_dir(index_dir);
  return "";
}

std::string new_filter_id(const std::vector<Filter>& existing) {
  uint64_t n = 1;
  for (auto& f : existing) {
    char* end = nullptr;
    auto v = std::strtoull(f.id.c_str(), &end, 10);
    if (end && *end == 0 && v >= n) n = v + 1;
  }
  return std::to_string(n);
}

ApplyStats apply_to_new(index::Database& db, const std::string& maildir, const std::vector<Filter>& filters,
                        const std::vector<std::string>& ids, int64_t now) {
  ApplyStats st;
  if (ids.empty()) return st;
  for (auto& f : filters) {
    auto req = request_of(f);
    req.ids = ids;
    req.sync_first = false;  // the indexer has just brought the index up to date
    add(st, mailbox::modify(db, maildir, req, now));
    if (f.never_spam) {
      // Never to spam: what the filter matches leaves Junk (for the Inbox, or Archive when it skips it).
      mailbox::ModifyRequest back;
      back.query = "in:junk (" + f.query() + ")";
      back.ids = ids;
      back.move_to = f.skip_inbox ? "Archive" : "INBOX";
      back.sync_first = false;
      add(st, mailbox::modify(db, maildir, back, now));
    }
  }
  return st;
}

ApplyStats apply_to_existing(index::Database& db, const std::string& maildir, const Filter& f, int64_t now) {
  ApplyStats st;
  add(st, mailbox::modify(db, maildir, request_of(f), now));
  return st;
}

}  // namespace mk::filters
