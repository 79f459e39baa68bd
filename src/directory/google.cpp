// google.cpp — Google Workspace: a service account with domain-wide
// delegation signs a JWT (RS256, RFC 7515/7519), trades it for an access
// token (OAuth 2.0 JWT bearer grant, RFC 7523), and reads the Admin SDK
// Directory API's users.list (500 per page) and groups.list (200 per page),
// following nextPageToken. Shapes as documented at
// developers.google.com/identity/protocols/oauth2/service-account and
// developers.google.com/admin-sdk/directory/reference/rest/v1/users/list.
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <boost/json.hpp>
#include <ctime>
#include <fstream>
#include <sstream>

#include "core/strings.h"
#include "directory/provider.h"
#include "directory/request.h"

namespace mk::directory {
namespace json = boost::json;
namespace {

constexpr const char* kScopes =
    "https://www.googleapis.com/auth/admin.directory.user.readonly "
    "https://www.googleapis.com/auth/admin.directory.group.readonly";

std::string base64url(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), int(in.size()));
  out.resize(size_t(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (auto& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

class Google final : public Provider, BearerSession {
 public:
  Google(const Settings& s, Sleeper sleep)
      : BearerSession(s, std::move(sleep)),
        admin_(s.directory.admin),
        customer_(s.directory.customer) {
    std::ifstream in(s.directory.credentials, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) throw SyncError("cannot read [directory] credentials " + s.directory.credentials);
    json::error_code ec;
    auto v = json::parse(text.str(), ec);
    if (ec || !v.is_object()) throw SyncError(s.directory.credentials + ": not a service account key (JSON)");
    email_ = json_string(v, "client_email");
    key_id_ = json_string(v, "private_key_id");
    auto pem = json_string(v, "private_key");
    token_url_ = s.directory.token_url.empty() ? json_string(v, "token_uri") : s.directory.token_url;
    if (token_url_.empty()) token_url_ = "https://oauth2.googleapis.com/token";
    if (email_.empty() || pem.empty())
      throw SyncError(s.directory.credentials + ": no client_email or private_key (a service account key file?)");
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), int(pem.size())), BIO_free);
    key_.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    OPENSSL_cleanse(pem.data(), pem.size());
    if (!key_ || EVP_PKEY_base_id(key_.get()) != EVP_PKEY_RSA)
      throw SyncError(s.directory.credentials + ": private_key is not an RSA key in PEM");
    api_ = s.directory.api_url.empty() ? "https://admin.googleapis.com" : s.directory.api_url;
    while (!api_.empty() && api_.back() == '/') api_.pop_back();
  }

  FetchResult fetch() override {
    FetchResult r;
    list(r, "users", 500, "nextPageToken,users(primaryEmail,aliases,nonEditableAliases)", "primaryEmail", false);
    list(r, "groups", 200, "nextPageToken,groups(email,aliases,nonEditableAliases)", "email", true);
    return r;
  }

 private:
  std::string jwt() const {
    auto now = int64_t(::time(nullptr));
    json::object header{{"alg", "RS256"}, {"typ", "JWT"}};
    if (!key_id_.empty()) header["kid"] = key_id_;
    json::object claims{{"iss", email_}, {"scope", kScopes}, {"aud", token_url_},
                        {"iat", now},    {"exp", now + 3600}, {"sub", admin_}};
    auto input = base64url(json::serialize(header)) + "." + base64url(json::serialize(claims));
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    size_t len = 0;
    if (EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1 ||
        EVP_DigestSign(md.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
      throw SyncError("cannot sign the token request (OpenSSL)");
    std::string sig(len, '\0');
    if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
      throw SyncError("cannot sign the token request (OpenSSL)");
    sig.resize(len);
    return input + "." + base64url(sig);
  }

  JsonRequest token_request() const override {
    JsonRequest req;
    req.method = "POST";
    req.url = token_url_;
    req.content_type = "application/x-www-form-urlencoded";
    req.body = "grant_type=" + url_encode("urn:ietf:params:oauth:grant-type:jwt-bearer") + "&assertion=" + jwt();
    return req;
  }

  void list(FetchResult& r, const std::string& kind, int page_size, const char* fields, const char* primary_key,
            bool group) {
    std::string page_token;
    for (int page = 1;; ++page) {
      if (page > 100000) throw SyncError(kind + ": more than 100000 pages");
      JsonRequest req;
      req.url = api_ + "/admin/directory/v1/" + kind + "?customer=" + url_encode(customer_) +
                "&maxResults=" + std::to_string(page_size) + "&fields=" + url_encode(fields);
      if (!page_token.empty()) req.url += "&pageToken=" + url_encode(page_token);
      req.what = kind + " page " + std::to_string(page);
      auto v = get(std::move(req), r.requests);
      ++r.pages;
      auto* o = v.if_object();
      auto what = kind + " page " + std::to_string(page);
      if (!o) throw SyncError(what + ": not a JSON object");
      if (auto it = o->find(kind); it != o->end()) {
        if (!it->value().is_array()) throw SyncError(what + ": '" + kind + "' is not a list");
        for (auto& item : it->value().as_array()) {
          DirectoryEntry e;
          e.group = group;
          e.primary = to_lower(json_string(item, primary_key));
          if (e.primary.empty()) throw SyncError(what + ": an entry without " + primary_key);
          for (auto* list_key : {"aliases", "nonEditableAliases"}) {
            auto* io = item.if_object();
            if (!io) continue;
            auto a = io->find(list_key);
            if (a == io->end() || !a->value().is_array()) continue;
            for (auto& alias : a->value().as_array())
              if (alias.is_string()) e.aliases.push_back(to_lower(std::string(alias.as_string())));
          }
          r.entries.push_back(std::move(e));
        }
      }
      page_token = json_string(v, "nextPageToken");
      if (page_token.empty()) return;
    }
  }

  std::string admin_, customer_, email_, key_id_, token_url_, api_;
  std::unique_ptr<EVP_PKEY, KeyDeleter> key_;
};

}  // namespace

std::unique_ptr<Provider> make_google(const Settings& s, Sleeper sleep) {
  return std::make_unique<Google>(s, std::move(sleep));
}

}  // namespace mk::directory
