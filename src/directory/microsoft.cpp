// microsoft.cpp — Microsoft 365 through Microsoft Graph: the OAuth 2.0
// client-credentials grant (an application secret), then GET /v1.0/users and
// the mail-enabled /v1.0/groups, following @odata.nextLink. In proxyAddresses
// "SMTP:" marks the primary address and "smtp:" the others; other types
// (SIP:, X500:) are not mail addresses. Users without `mail` have no mailbox.
// Shapes as documented at learn.microsoft.com/en-us/graph/auth-v2-service
// and learn.microsoft.com/en-us/graph/api/user-list.
#include <boost/json.hpp>
#include <fstream>
#include <sstream>

#include "core/strings.h"
#include "directory/provider.h"
#include "directory/request.h"

namespace mk::directory {
namespace json = boost::json;
namespace {

class Microsoft final : public Provider, BearerSession {
 public:
  Microsoft(const Settings& s, Sleeper sleep) : BearerSession(s, std::move(sleep)), client_id_(s.directory.client_id) {
    std::ifstream in(s.directory.client_secret_file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) throw SyncError("cannot read [directory] client_secret_file " + s.directory.client_secret_file);
    secret_ = std::string(trim(text.str()));
    if (secret_.empty() || secret_.find_first_of("\r\n") != std::string::npos)
      throw SyncError(s.directory.client_secret_file + ": expected the client secret on one line");
    token_url_ = s.directory.token_url.empty()
                     ? "https://login.microsoftonline.com/" + url_encode(s.directory.tenant) + "/oauth2/v2.0/token"
                     : s.directory.token_url;
    api_ = s.directory.api_url.empty() ? "https://graph.microsoft.com" : s.directory.api_url;
    while (!api_.empty() && api_.back() == '/') api_.pop_back();
  }

  FetchResult fetch() override {
    FetchResult r;
    list(r, "users", api_ + "/v1.0/users?$select=userPrincipalName,mail,proxyAddresses,accountEnabled&$top=999", false);
    list(r, "groups",
         api_ + "/v1.0/groups?$filter=" + url_encode("mailEnabled eq true") + "&$select=mail,proxyAddresses&$top=999",
         true);
    return r;
  }

 private:
  JsonRequest token_request() const override {
    JsonRequest req;
    req.method = "POST";
    req.url = token_url_;
    req.content_type = "application/x-www-form-urlencoded";
    req.body = "client_id=" + url_encode(client_id_) + "&client_secret=" + url_encode(secret_) +
               "&scope=" + url_encode("https://graph.microsoft.com/.default") + "&grant_type=client_credentials";
    return req;
  }

  void list(FetchResult& r, const std::string& kind, std::string url, bool group) {
    for (int page = 1; !url.empty(); ++page) {
      if (page > 100000) throw SyncError(kind + ": more than 100000 pages");
      JsonRequest req;
      req.url = url;
      req.what = kind + " page " + std::to_string(page);
      auto what = req.what;
      auto v = get(std::move(req), r.requests);
      ++r.pages;
      auto* o = v.if_object();
      if (!o) throw SyncError(what + ": not a JSON object");
      auto it = o->find("value");
      if (it == o->end() || !it->value().is_array()) throw SyncError(what + ": no 'value' list");
      for (auto& item : it->value().as_array()) {
        DirectoryEntry e;
        e.group = group;
        auto mail = to_lower(json_string(item, "mail"));
        std::vector<std::string> others;
        std::string primary;
        if (auto* io = item.if_object()) {
          auto p = io->find("proxyAddresses");
          if (p != io->end() && p->value().is_array())
            for (auto& a : p->value().as_array()) {
              if (!a.is_string()) continue;
              std::string_view s = a.as_string();
              if (s.substr(0, 5) == "SMTP:") primary = to_lower(s.substr(5));
              else if (s.substr(0, 5) == "smtp:") others.push_back(to_lower(s.substr(5)));
            }
        }
        if (mail.empty() && primary.empty()) continue;  // no mailbox
        e.primary = primary.empty() ? mail : primary;
        if (!mail.empty() && mail != e.primary) others.push_back(mail);
        for (auto& a : others)
          if (a != e.primary) e.aliases.push_back(std::move(a));
        r.entries.push_back(std::move(e));
      }
      url = json_string(v, "@odata.nextLink");
      // The next page must be on the same API host: a link elsewhere would carry our token away.
      if (!url.empty() && url.rfind(api_ + "/", 0) != 0)
        throw SyncError(what + ": @odata.nextLink points outside " + api_);
    }
  }

  std::string client_id_, secret_, token_url_, api_;
};

}  // namespace

std::unique_ptr<Provider> make_microsoft(const Settings& s, Sleeper sleep) {
  return std::make_unique<Microsoft>(s, std::move(sleep));
}

}  // namespace mk::directory
