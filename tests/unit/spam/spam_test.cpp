// spam_test.cpp — the tokenizer (MIME decoding, header tags, determinism
// under any chunking, malformed input) and the model file (round trip,
// corruption and settings checks).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "spam/model.h"
#include "spam/tokenizer.h"

namespace mk::spam {
namespace {

std::vector<std::string> tokens_of(const std::string& message, size_t chunk = 0) {
  Tokenizer t;
  t.keep_tokens(true);
  if (chunk == 0) chunk = message.size() + 1;
  for (size_t i = 0; i < message.size(); i += chunk) t.feed(std::string_view(message).substr(i, chunk));
  t.finish();
  return t.tokens();
}

bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

TEST(Tokenizer, MimeDecodingTable) {
  struct Case {
    const char* name;
    std::string message;
    std::vector<std::string> expected;  // tokens that must appear
    std::vector<std::string> absent;
  } cases[] = {
      {"plain with header tags",
       "Subject: Cheap Viagra now\r\nFrom: Bob <bob@spam.example>\r\n\r\nHello friend\r\n",
       {"subj:cheap", "subj:viagra", "from:bob", "hello", "friend", "hdr:subject"},
       {}},
      {"base64 body",
       "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQgbW9u\r\nZXk=\r\n",
       {"hello", "world", "money", "cte:base64"},
       {"agvsbg8gd29ybgqgbw9u"}},
      {"quoted-printable with soft break",
       "Content-Transfer-Encoding: quoted-printable\r\n\r\nfree=20mon=\r\ney caf=C3=A9\r\n",
       {"free", "money", "café"},
       {}},
      {"latin-1 converted to UTF-8",
       "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 cr=E8me\r\n",
       {"café", "crème", "charset:iso-8859-1"},
       {}},
      {"html reduced to text, tags and urls",
       "Content-Type: text/html\r\n\r\n<html><body><font color=red>Click</font> <a href=\"http://www.win.example.com/x?y\">here</a>"
       "<script>var hidden=1</script><img src='http://1.2.3.4/p.gif'></body></html>\r\n",
       {"click", "here", "tag:font", "attr:font:color", "url:www.win.example.com", "url:example.com", "url:numeric-host", "tag:img"},
       {"hidden", "var"}},
      {"multipart walk with nested parts",
       "Content-Type: multipart/mixed; boundary=\"OUTER\"\r\n\r\npreamble words\r\n--OUTER\r\n"
       "Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\nalpha\r\n"
       "--inner\r\nContent-Type: text/html\r\n\r\n<b>beta</b>\r\n--inner--\r\n--OUTER\r\n"
       "Content-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"x.GIF\"\r\n\r\n"
       "R0lGODlhAQABAIAAAP\r\n--OUTER--\r\nepilogue\r\n",
       {"alpha", "beta", "tag:b", "part:image/gif", "fileext:gif", "ct:multipart/alternative"},
       {"preamble", "epilogue", "r0lgodlhaqabaiaaap"}},
      {"spam verdicts of other filters are ignored",
       "X-Spam-Status: Yes, hits=20\r\nSubject: hi\r\n\r\nbody\r\n",
       {"subj:hi"},
       {"hdr:x-spam-status", "yes"}},
      {"received: the bottom-most field's ips and host names, not dates or queue ids",
       "Received: from relay.example.org ([198.51.100.9]) by store.example.com; Tue,  6 Aug 2002 23:34:00 -0400\r\n"
       "Received: from mx.example.net ([192.0.2.55]) by relay.example.org (Postfix) with ESMTP id 4F2A1C\r\n"
       "\tfor <a@example.org>; Tue,  6 Aug 2002 23:33:37 -0400 (EDT)\r\n\r\nbody\r\n",
       {"ip:192.0.2.55", "ip24:192.0.2", "rcvd:mx.example.net", "rcvd:relay.example.org", "rcvd:esmtp"},
       {"rcvd:tue", "rcvd:aug", "rcvd:2002", "rcvd:4f2a1c", "rcvd:23", "rcvd:store.example.com", "ip:198.51.100.9"}},
      {"html entities and a tag cut across lines",
       "Content-Type: text/html\r\n\r\nfish &amp; chips &nbsp;caf&eacute; <a\r\nhref=\"http://cut.example.org/\">x</a>\r\n",
       {"fish", "chips", "url:cut.example.org"},
       {"amp", "nbsp"}},
  };
  for (auto& c : cases) {
    auto got = tokens_of(c.message);
    for (auto& e : c.expected) EXPECT_TRUE(has(got, e)) << c.name << ": missing " << e;
    for (auto& a : c.absent) EXPECT_FALSE(has(got, a)) << c.name << ": unexpected " << a;
  }
}

TEST(Tokenizer, SameFeaturesWhateverTheChunking) {
  std::string m =
      "Subject: test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
      "aGVsbG8gd29ybGQ=\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>caf\xC3\xA9 <a href=http://x.example/>go</a>\r\n--b--\r\n";
  Tokenizer whole;
  whole.feed(m);
  auto expected = whole.finish();
  ASSERT_FALSE(expected.empty());
  for (size_t chunk : {1, 2, 3, 7, 64}) {
    Tokenizer t;
    for (size_t i = 0; i < m.size(); i += chunk) t.feed(std::string_view(m).substr(i, chunk));
    EXPECT_EQ(t.finish(), expected) << "chunk " << chunk;
  }
}

TEST(Tokenizer, EncodedWordsAreDecoded) {
  struct {
    const char* in;
    const char* out;
  } cases[] = {
      {"=?UTF-8?Q?caf=C3=A9?= =?ISO-8859-1?B?Y3LobWU=?=", "caf\xC3\xA9" "cr\xC3\xA8me"},
      {"Re: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus?= Berlin", "Re: Gr\xC3\xBC\xC3\x9F" "e aus Berlin"},
      {"=?GB2312?B?xOO6ww==?=", "\xE4\xBD\xA0\xE5\xA5\xBD"},  // 你好
      {"=?x-no-such-charset?Q?abc?=", "abc"},
      {"plain =? not ?= encoded", "plain =? not ?= encoded"},
      {"=?utf-8?X?abc?=", "=?utf-8?X?abc?="},
      {"=?utf-8?Q?unterminated", "=?utf-8?Q?unterminated"},
      {"", ""},
  };
  for (auto& c : cases) EXPECT_EQ(Tokenizer::decode_encoded_words(c.in), c.out) << c.in;
  Tokenizer t;
  t.keep_tokens(true);
  t.feed("Subject: =?UTF-8?B?RlJFRSBtb25leQ==?=\r\nFrom: =?iso-8859-1?q?J=F6rg?= <j@example.org>\r\n\r\nx\r\n");
  t.finish();
  EXPECT_TRUE(has(t.tokens(), "subj:free")) << "encoded subjects are tokenized decoded";
  EXPECT_TRUE(has(t.tokens(), "subj:money"));
  EXPECT_TRUE(has(t.tokens(), "from:j\xC3\xB6rg"));
  EXPECT_EQ(t.subject(), "FREE money");
}

TEST(Tokenizer, OurOwnReceivedFieldNamesTheClient) {
  auto tokens_of = [](const std::string& message) {
    Tokenizer t;
    t.keep_tokens(true);
    t.feed(message);
    t.finish();
    return t.tokens();
  };
  // On top: ours (as the session feeds it and the archive keeps it); below it, one a sender
  // forged to look like ours, and the sender's own hop.
  auto tokens = tokens_of(
      "Received: from Bulk.Sender.example ([192.0.2.7])\r\n\tby mx.test (mailkeep) with ESMTP id s1.1;\r\n"
      "\tSat, 28 Nov 2026 10:00:00 +0000\r\n"
      "Received: from trusted.example ([198.51.100.1]) by mx.test (mailkeep) with ESMTP id f.1; x\r\n"
      "Received: from pc ([10.1.2.3]) by smtp.sender.example; x\r\n"
      "Subject: hi\r\n\r\nbody\r\n");
  EXPECT_TRUE(has(tokens, "clientip:192.0.2.7"));
  EXPECT_TRUE(has(tokens, "clientnet:192.0.2"));
  EXPECT_TRUE(has(tokens, "clienthelo:bulk"));
  EXPECT_TRUE(has(tokens, "clienthelo:example"));
  EXPECT_FALSE(has(tokens, "clientip:198.51.100.1")) << "only the top-most (mailkeep) field is ours";
  EXPECT_TRUE(has(tokens, "ip:10.1.2.3")) << "the bottom-most hop still counts";
  EXPECT_FALSE(has(tokens, "ip:192.0.2.7"));

  tokens = tokens_of("Received: from v6.example ([2001:db8:7:1::5])\r\n\tby mx.test (mailkeep) with ESMTPS id a.1; x\r\n"
                     "\r\nbody\r\n");
  EXPECT_TRUE(has(tokens, "clientip:2001:db8:7:1::5"));
  EXPECT_TRUE(has(tokens, "clientnet:2001:db8:7"));
  // Alone, ours is also the bottom-most hop: its address counts as one too.
  tokens = tokens_of("Received: from a ([192.0.2.8]) by mx.test (mailkeep) with SMTP id c.1; x\r\n\r\nbody\r\n");
  EXPECT_TRUE(has(tokens, "clientip:192.0.2.8"));
  EXPECT_TRUE(has(tokens, "ip:192.0.2.8"));

  tokens = tokens_of("Received: from a ([::1]) by mx.test (mailkeep) with SMTP id b.1; x\r\n\r\nbody\r\n");
  EXPECT_TRUE(has(tokens, "clientip:::1"));
  EXPECT_FALSE(has(tokens, "clientnet:")) << "no empty network token";
  // Someone else's gateway is no client of ours.
  tokens = tokens_of("Received: from x ([192.0.2.9]) by relay.example (Postfix); x\r\n\r\nbody\r\n");
  EXPECT_FALSE(has(tokens, "clientip:192.0.2.9"));
}

TEST(Tokenizer, SynchronousTokenizersFindTheSameFeatures) {
  std::string m =
      "Subject: same\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n<p>caf\xE9 cr\xE8me <b>bold</b> words "
      "repeated repeated repeated words</p>\r\n";
  Tokenizer reference;  // the SMTP sessions' kind
  reference.feed(m);
  auto expected = reference.finish();
  for (int round = 0; round < 3; ++round) {  // the thread's bitmap is cleared after each message
    Tokenizer batch({}, /*synchronous=*/true);
    Tokenizer nested({}, /*synchronous=*/true);  // the bitmap is taken: this one uses its own set
    batch.feed(m);
    nested.feed(m);
    EXPECT_EQ(batch.finish(), expected);
    EXPECT_EQ(nested.finish(), expected);
  }
  auto sorted = expected;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end()) << "features are unique";
  // The same words in UTF-8 are the same features as in Latin-1.
  Tokenizer utf8;
  utf8.keep_tokens(true);
  utf8.feed("Content-Type: text/plain; charset=utf-8\r\n\r\ncaf\xC3\xA9\r\n");
  utf8.finish();
  Tokenizer latin1;
  latin1.keep_tokens(true);
  latin1.feed("Content-Type: text/plain; charset=ISO-8859-1\r\n\r\ncaf\xE9\r\n");
  latin1.finish();
  EXPECT_TRUE(has(utf8.tokens(), "café"));
  EXPECT_TRUE(has(latin1.tokens(), "café"));
}

TEST(Tokenizer, MalformedMimeNeverThrows) {
  const std::string bad[] = {
      "Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
      "Content-Transfer-Encoding: base64\r\n\r\n!!!!====****\r\n",
      "Content-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=4=\r\n",
      "Content-Type: text/plain; charset=no-such-charset\r\n\r\n\xff\xfe bytes\r\n",
      std::string(200000, 'x'),
      "Subject: " + std::string(100000, 'y') + "\r\n\r\n",
      std::string("\0\0\0\r\n\r\n\0", 8),
  };
  for (auto& m : bad) {
    Tokenizer t;
    EXPECT_NO_THROW(t.feed(m));
    EXPECT_NO_THROW(t.finish());
    EXPECT_LE(t.finish().size(), TokenizerSettings{}.max_features);
  }
}

TEST(Model, LearnsAndRoundTripsAndRejectsCorruption) {
  TokenizerSettings settings;
  settings.hash_bits = 16;
  Model m(settings);
  m.learning_rate = 0.5;
  std::vector<uint32_t> spam{1, 2, 3}, ham{4, 5, 6};
  for (int i = 0; i < 50; ++i) {
    m.train(spam, true, TrainMode::Everything);
    m.train(ham, false, TrainMode::Everything);
  }
  EXPECT_GT(m.score(spam), 0.9);
  EXPECT_LT(m.score(ham), 0.1);
  EXPECT_FALSE(m.train(spam, true, TrainMode::OnError));  // confidently right: no update
  auto path = ::testing::TempDir() + "/mk_spam_model_test.model";
  ASSERT_EQ(m.save(path), "");
  Model back(settings);
  ASSERT_EQ(Model::load(path, back, settings), "");
  EXPECT_DOUBLE_EQ(back.score(spam), m.score(spam));
  EXPECT_EQ(back.trained_spam(), m.trained_spam());

  TokenizerSettings other = settings;
  other.osb_window = 5;
  Model wrong(other);
  EXPECT_NE(Model::load(path, wrong, other).find("other tokenizer settings"), std::string::npos);

  {  // flip one byte of the weights
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    char c = 0;
    f.read(&c, 1);
    f.seekp(200);
    c ^= 0x5a;
    f.write(&c, 1);
  }
  EXPECT_NE(Model::load(path, back, settings).find("checksum"), std::string::npos);
  std::filesystem::resize_file(path, 100);
  EXPECT_FALSE(Model::load(path, back, settings).empty());
}

TEST(Model, AveragingEndsAtTheMeanOfTheWeightsOverTheTraining) {
  TokenizerSettings settings;
  settings.hash_bits = 8;
  Model m(settings), plain(settings);
  m.learning_rate = plain.learning_rate = 0.3;
  const std::vector<std::vector<uint32_t>> xs{{1, 2}, {2, 3}, {1, 3}, {4}, {1, 2, 4}, {3}};
  const bool ys[] = {true, false, true, false, true, false};
  m.begin_average();
  double sum_w2 = 0, sum_bias = 0;  // the start (all zero) is one of the 19 states averaged
  for (int pass = 0; pass < 3; ++pass)
    for (size_t i = 0; i < xs.size(); ++i) {
      m.train(xs[i], ys[i], TrainMode::Everything);
      plain.train(xs[i], ys[i], TrainMode::Everything);
      m.tick();
      sum_w2 += plain.weight(2);  // the weights after each example, as the mean counts them
      sum_bias += plain.bias();
    }
  EXPECT_FLOAT_EQ(m.weight(2), plain.weight(2)) << "not averaged before end_average()";
  m.end_average();
  EXPECT_NEAR(m.weight(2), sum_w2 / 19, 1e-5);
  EXPECT_NEAR(m.bias(), sum_bias / 19, 1e-5);
  EXPECT_NE(m.weight(2), plain.weight(2));
}

}  // namespace
}  // namespace mk::spam
