// tls_context_test.cpp — the server context reads its PEM files through a
// PemReader: reloads take the reader's bytes, and a reload that cannot read or
// use them keeps the context in force. Keys and certificates are made here with
// OpenSSL (EC P-256, self-signed), not shipped as files.
#include "tls/tls_context.h"

#include <gtest/gtest.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <unistd.h>

#include <boost/asio/ssl/context.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

namespace mk::tls {
namespace {

struct Pem {
  std::string cert, key;
};

std::string to_pem(auto write) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  write(bio.get());
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size_t(n));
}

Pem self_signed(const char* cn) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  std::unique_ptr<X509, decltype(&X509_free)> x(X509_new(), X509_free);
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 3600);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
  X509_set_issuer_name(x.get(), X509_get_subject_name(x.get()));
  X509_set_pubkey(x.get(), key.get());
  X509_sign(x.get(), key.get(), EVP_sha256());
  return {to_pem([&](BIO* b) { PEM_write_bio_X509(b, x.get()); }),
          to_pem([&](BIO* b) { PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr); })};
}

// Files as a map; a missing entry reads as "Permission denied", as a root-only key would.
class FakePemReader : public PemReader {
 public:
  std::map<std::string, std::string> files;
  int reads = 0;
  std::string read(const std::string& path, std::string& contents) override {
    ++reads;
    auto it = files.find(path);
    if (it == files.end()) return "Permission denied";
    contents = it->second;
    return "";
  }
};

std::string subject_of(const ContextPtr& ctx) {
  X509* cert = SSL_CTX_get0_certificate(ctx->native_handle());
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
  return buf;
}

TEST(ServerContext, BuildsFromTheReadersBytes) {
  auto first = self_signed("first.test");
  FakePemReader reader;
  reader.files = {{"cert.pem", first.cert}, {"key.pem", first.key}};
  auto ctx = make_server_context("cert.pem", "key.pem", reader);
  EXPECT_EQ(subject_of(ctx), "/CN=first.test");
  EXPECT_EQ(reader.reads, 2);
}

TEST(ServerContext, ErrorsNameTheSectionAndFile) {
  auto a = self_signed("a.test"), b = self_signed("b.test");
  FakePemReader reader;
  reader.files = {{"cert.pem", a.cert}};
  try {
    make_server_context("cert.pem", "key.pem", reader, "[http]");
    FAIL() << "no error for an unreadable key";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "[http] key key.pem: Permission denied");
  }
  reader.files["key.pem"] = b.key;  // readable, but not this certificate's key
  try {
    make_server_context("cert.pem", "key.pem", reader);
    FAIL() << "no error for a mismatched key";
  } catch (const std::runtime_error& e) {
    // OpenSSL notices while loading the key ("key values mismatch"); SSL_CTX_check_private_key
    // is the backstop. Either way the error names the key.
    EXPECT_EQ(std::string(e.what()).rfind("[tls] key key.pem", 0), 0u) << e.what();
  }
  reader.files["cert.pem"] = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
  EXPECT_THROW(make_server_context("cert.pem", "key.pem", reader), std::runtime_error);
}

TEST(ServerContext, ReloadReadsThroughTheReaderAndKeepsTheOldContextOnFailure) {
  // The first load reads the real files directly (as root, before the drop).
  auto first = self_signed("first.test");
  auto dir = std::filesystem::temp_directory_path() / ("mk-tls-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  std::ofstream(cert) << first.cert;
  std::ofstream(key) << first.key;
  ServerContext server(cert, key);
  std::filesystem::remove_all(dir);  // later reads must go through the reader
  EXPECT_EQ(subject_of(server.current()), "/CN=first.test");

  FakePemReader reader;
  server.read_through(&reader);
  auto renewed = self_signed("renewed.test");
  reader.files = {{cert, renewed.cert}, {key, renewed.key}};
  EXPECT_EQ(server.reload(), "");
  auto in_force = server.current();
  EXPECT_EQ(subject_of(in_force), "/CN=renewed.test");

  reader.files.erase(key);
  EXPECT_EQ(server.reload(), "[tls] key " + key + ": Permission denied");
  EXPECT_EQ(server.current(), in_force);

  server.read_through(nullptr);  // directly again: the files are gone
  EXPECT_NE(server.reload().find("No such file or directory"), std::string::npos);
  EXPECT_EQ(server.current(), in_force);
}

}  // namespace
}  // namespace mk::tls
