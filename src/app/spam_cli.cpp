// spam_cli.cpp — see spam_cli.h. Training and reclassification hold the
// model's lock (spam/trainer.h); classification reads the file as it is.
#include "app/spam_cli.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>

#include "app/stores.h"
#include "core/strings.h"
#include "spam/corpus.h"
#include "spam/tokenizer.h"
#include "spam/history.h"
#include "spam/model.h"
#include "spam/trainer.h"

namespace mk::app {
namespace {

using spam::Model;
using spam::TokenizerSettings;

// Prints a command's error the CLI way; true when there was one.
bool report(const std::string& error) {
  if (error.empty()) return false;
  std::cerr << "mailkeep: " << error << "\n";
  return true;
}

bool features_of(const TokenizerSettings& tok, const std::string& path, std::vector<uint32_t>& out) {
  spam::Tokenizer t(tok, /*synchronous=*/true);
  if (!spam::tokenize_file(path, t)) return false;
  out = t.finish();
  return true;
}

int classify(const Settings& settings, const SpamCommand& cmd) {
  TokenizerSettings tok;
  Model model(tok);
  if (report(Model::load(settings.spam.model, model, tok))) return 1;
  std::vector<std::string> files = cmd.files;
  if (!cmd.files_from.empty()) {
    std::ifstream list_file;
    std::istream* list = &std::cin;
    if (cmd.files_from != "-") {
      list_file.open(cmd.files_from);
      if (!list_file) {
        std::cerr << "mailkeep: cannot read " << cmd.files_from << "\n";
        return 1;
      }
      list = &list_file;
    }
    for (std::string line; std::getline(*list, line);)
      if (!line.empty()) files.push_back(line);
  }
  const auto cut = spam::effective_cutoffs(&model, settings.spam.tag_score, settings.spam.reject_score);
  int status = 0;
  std::vector<uint32_t> features;
  std::string out;
  for (auto& f : files) {
    if (!features_of(tok, f, features)) {
      std::cerr << "mailkeep: cannot read " << f << "\n";
      status = 1;
      continue;
    }
    double s = model.score(features);
    char score[32];
    std::snprintf(score, sizeof score, "%.6f", s);
    out += f + "\t" + score + "\t" + spam::call_name(spam::call_of(s, cut)) + "\n";
    if (out.size() > 64 * 1024) {
      std::cout << out;
      out.clear();
    }
  }
  std::cout << out;
  return status;
}

// Why a message scored as it did: its strongest features, with the tokens they stand for.
int explain(const Settings& settings, const SpamCommand& cmd) {
  TokenizerSettings tok;
  Model model(tok);
  if (report(Model::load(settings.spam.model, model, tok))) return 1;
  int status = 0;
  for (auto& path : cmd.files) {
    spam::Tokenizer t(tok);
    t.keep_tokens(true);
    if (!spam::tokenize_file(path, t)) {
      std::cerr << "mailkeep: cannot read " << path << "\n";
      status = 1;
      continue;
    }
    std::printf("%s\t%.6f\t%zu features\n", path.c_str(), model.score(t.finish()), t.finish().size());
    std::vector<std::pair<float, size_t>> strongest;
    std::vector<bool> seen(size_t(1) << tok.hash_bits);
    for (size_t i = 0; i < t.tokens().size(); ++i) {
      uint32_t f = t.token_features()[i];
      if (seen[f]) continue;
      seen[f] = true;
      strongest.push_back({model.weight(f), i});
    }
    std::sort(strongest.begin(), strongest.end(), [](auto& a, auto& b) { return std::fabs(a.first) > std::fabs(b.first); });
    if (strongest.size() > size_t(cmd.top)) strongest.resize(size_t(cmd.top));
    for (auto& [w, i] : strongest) std::printf("  %+8.4f\t%s\n", w, t.tokens()[i].c_str());
  }
  return status;
}

// --folds: cross-validates the batch and stores the cutoffs it reads off the
// out-of-fold scores in the model (spam/calibration.h); --cv-scores writes
// those scores. Returns "" or the error.
std::string calibrate(Model& model, const spam::TrainingSet& set, const std::vector<size_t>& order,
                      const spam::BatchOptions& options, const SpamCommand& cmd,
                      const std::function<const std::string&(size_t)>& path_of) {
  if (cmd.folds < 2) {
    std::cerr << "cutoffs: --folds " << cmd.folds << ": not chosen; the model keeps "
              << (model.calibration() ? "the ones it had" : "none ([spam] defaults apply)") << "\n";
    return "";
  }
  size_t count[2] = {0, 0};
  for (auto i : order) ++count[set.spam[i]];
  if (count[0] < size_t(cmd.folds) || count[1] < size_t(cmd.folds)) {
    std::cerr << "cutoffs: not chosen: " << cmd.folds << " folds need at least " << cmd.folds
              << " spam and " << cmd.folds << " good messages (have " << count[1] << " and " << count[0]
              << "); the model keeps " << (model.calibration() ? "the ones it had" : "none ([spam] defaults apply)")
              << "\n";
    return "";
  }
  std::vector<size_t> which;
  auto scored = spam::cross_validate(model, set, order, unsigned(cmd.folds), options, &which);
  if (!cmd.cv_scores.empty()) {
    std::ofstream out(cmd.cv_scores, std::ios::trunc);
    char line[64];
    for (size_t j = 0; j < scored.size(); ++j) {
      std::snprintf(line, sizeof line, "%s\t%.9f\t", scored[j].spam ? "spam" : "ham", scored[j].score);
      out << line << path_of(which[j]) << "\n";
    }
    if (!out.flush()) return "cannot write " + cmd.cv_scores;
  }
  auto c = spam::choose_cutoffs(std::move(scored), cmd.max_fp_rate, cmd.max_fn_rate);
  if (!c) return "";
  c->folds = uint32_t(cmd.folds);
  model.set_calibration(c);
  std::fprintf(stderr,
               "cutoffs (%d-fold, %u spam, %u good): unsure at %.6g, spam at %.6g; on the folds: %u false positives, "
               "%u spam missed (%.1f%%), unsure %u spam and %u good\n",
               cmd.folds, c->spam, c->ham, c->cutoffs.unsure, c->cutoffs.spam, c->false_positives, c->missed,
               100.0 * c->missed / c->spam, c->unsure_spam, c->unsure_ham);
  return "";
}

int train(const Settings& settings, const SpamCommand& cmd) {
  struct Example {
    std::string path;
    bool spam;
  };
  std::vector<Example> examples;
  for (bool spam : {true, false}) {
    std::vector<std::string> paths;
    if (report(spam::message_files(spam ? cmd.spam : cmd.ham, paths))) return 1;
    for (auto& f : paths) examples.push_back({f, spam});
  }
  if (!cmd.labelled.empty()) {
    std::ifstream list(cmd.labelled);
    if (!list) {
      std::cerr << "mailkeep: cannot read " << cmd.labelled << "\n";
      return 1;
    }
    for (std::string line; std::getline(list, line);) {
      auto tab = line.find('\t');
      if (tab == std::string::npos) continue;
      auto label = line.substr(0, tab);
      if (label != "spam" && label != "ham") {
        std::cerr << "mailkeep: " << cmd.labelled << ": label must be spam or ham: " << label << "\n";
        return 1;
      }
      examples.push_back({line.substr(tab + 1), label == "spam"});
    }
  }
  if (examples.empty()) {
    std::cerr << "mailkeep: no messages to train on\n";
    return 1;
  }
  TokenizerSettings tok;
  spam::ModelLock lock(settings.spam.model);
  if (report(lock.error())) return 1;
  // With [store] url the model is shared: train on from the newest one, and publish the result.
  Stores stores(settings);
  std::unique_ptr<SharedFile> share;
  try {
    share = stores.model_share();
    if (share && !cmd.fresh) share->pull(settings.spam.model);
  } catch (const std::exception& e) {
    report(std::string("the shared spam model: ") + e.what());
    return 75;  // EX_TEMPFAIL: the store may answer later
  }
  Model model(tok);
  if (!cmd.fresh) {
    if (report(spam::load_or_new(settings.spam.model, tok, model))) return 1;
  }
  auto mode = cmd.mode == "everything" ? spam::TrainMode::Everything : spam::TrainMode::OnError;
  model.learning_rate = cmd.rate;
  model.margin = cmd.margin;
  model.ham_cost = cmd.ham_cost;
  size_t trained = 0;
  if (cmd.online) {
    // TREC style, in the order given: classify, report, then learn the truth.
    // An error: a spam not called spam, or a good message called spam.
    const auto cut = spam::effective_cutoffs(&model, settings.spam.tag_score, settings.spam.reject_score);
    uint64_t errors = 0;
    std::vector<uint32_t> features;
    for (auto& e : examples) {
      if (!features_of(tok, e.path, features)) {
        std::cerr << "mailkeep: cannot read " << e.path << "\n";
        continue;
      }
      ++trained;
      double s = model.score(features);
      bool wrong = (spam::call_of(s, cut) == spam::Call::Spam) != e.spam;
      errors += wrong;
      std::printf("%s\t%.6f\t%s\t%s\n", e.path.c_str(), s, e.spam ? "spam" : "ham", wrong ? "error" : "ok");
      model.train(features, e.spam, mode);
    }
    std::printf("# online errors %llu of %zu\n", (unsigned long long)errors, trained);
  } else {
    // Batch: tokenized once, interleaved in a fixed pseudo-random order, several passes.
    // A file that vanished since it was listed (a Maildir in use) is reported and left out.
    // Features are kept for the later passes up to --memory MB (about 4 kB a message);
    // past that, passes tokenize those files again, so a whole archive trains in bounded memory.
    std::vector<std::vector<uint32_t>> features(examples.size());
    std::vector<size_t> order;
    const uint64_t budget = uint64_t(cmd.memory_mb) << 20;
    uint64_t held = 0;
    size_t not_held = 0;
    for (size_t i = 0; i < examples.size(); ++i) {
      if (!features_of(tok, examples[i].path, features[i])) {
        std::cerr << "mailkeep: cannot read " << examples[i].path << "\n";
        continue;
      }
      order.push_back(i);
      held += features[i].size() * sizeof(uint32_t);
      if (held > budget) {
        held -= features[i].size() * sizeof(uint32_t);
        std::vector<uint32_t>().swap(features[i]);
        ++not_held;
      }
    }
    if (not_held > 0)
      std::cerr << "training: " << not_held << " messages past --memory " << cmd.memory_mb
                << " MB are read again in each pass\n";
    trained = order.size();
    uint64_t seed = 0x2545F4914F6CDD1Dull;
    for (size_t i = order.size(); i > 1; --i) {
      seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
      std::swap(order[i - 1], order[seed % i]);
    }
    spam::TrainingSet set;
    for (auto& e : examples) set.spam.push_back(e.spam);
    set.features = [&](size_t i, std::vector<uint32_t>& scratch) -> const std::vector<uint32_t>* {
      if (!features[i].empty()) return &features[i];
      return features_of(tok, examples[i].path, scratch) ? &scratch : nullptr;  // gone since the first read
    };
    spam::BatchOptions options{mode, cmd.passes, cmd.rate, cmd.margin, cmd.ham_cost, !cmd.no_average};
    auto path_of = [&](size_t i) -> const std::string& { return examples[i].path; };
    if (report(calibrate(model, set, order, options, cmd, path_of))) return 1;
    spam::train_batch(model, set, order, options,
                      [](int pass, size_t updates) { std::cerr << "pass " << pass + 1 << ": " << updates << " updates\n"; });
  }
  if (trained == 0) {
    std::cerr << "mailkeep: none of the messages could be read; model left as it was\n";
    return 1;
  }
  try {
    // In the turn across gateways (begin() brings the file up to date, which this save then replaces).
    auto turn = share ? share->begin(settings.spam.model) : nullptr;
    if (report(model.save(settings.spam.model))) return 1;
    if (turn) turn->publish();
  } catch (const std::exception& e) {
    report(std::string("the shared spam model: ") + e.what());
    return 75;  // EX_TEMPFAIL: the store may answer later
  }
  std::cerr << "trained on " << trained << " messages; model " << settings.spam.model
            << (share ? " (published to every gateway)" : "") << "\n";
  return 0;
}

// The spam history ([spam] history, or the shared store), or null after saying why it cannot be opened.
std::unique_ptr<spam::History> open_history(Stores& stores) {
  try {
    return stores.spam_history();
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: spam history: " << e.what() << "\n";
    return nullptr;
  }
}

// The shared model ([store] url; stays null without), or false after saying why it cannot be opened.
bool open_model_share(Stores& stores, std::unique_ptr<SharedFile>& share) {
  try {
    share = stores.model_share();
    return true;
  } catch (const std::exception& e) {
    std::cerr << "mailkeep: the shared spam model: " << e.what() << "\n";
    return false;
  }
}

int reclassify(const Settings& settings, const SpamCommand& cmd) {
  Stores stores(settings);
  auto history = open_history(stores);
  if (!history) return 1;
  std::unique_ptr<SharedFile> share;
  if (!open_model_share(stores, share)) return 75;
  auto r = spam::reclassify(*history, settings.spam.model, TokenizerSettings{}, cmd.signature, cmd.as == "spam",
                            {settings.spam.tag_score, settings.spam.reject_score}, share.get());
  if (r.outcome != Outcome::Ok) {
    std::cerr << "mailkeep: " << r.code << ": " << r.detail << "\n";
    return r.outcome == Outcome::TempFail ? 75 : 1;  // EX_TEMPFAIL: try again
  }
  std::printf("%s\t%s\tscore %.6f -> %.6f\t(was %s, from <%s>, subject: %s)\n", cmd.signature.c_str(),
              cmd.as.c_str(), r.before, r.after, spam::call_name(r.verdict.call), r.verdict.sender.c_str(),
              r.verdict.subject.c_str());
  return 0;
}

// True when `message` starts with a header field ("Name: value", RFC 5322
// field-name characters), after an optional mbox "From " line.
bool looks_like_a_message(std::string_view message) {
  if (message.starts_with("From ")) {
    auto eol = message.find('\n');
    if (eol == std::string_view::npos) return false;
    message.remove_prefix(eol + 1);
  }
  size_t i = 0;
  while (i < message.size() && i < 1000 && message[i] > 32 && message[i] < 127 && message[i] != ':') ++i;
  return i > 0 && i < message.size() && message[i] == ':';
}

// `mailkeep spam learn --spam|--ham`: one message on standard input (what
// Dovecot's IMAPSieve pipes when a user moves mail into or out of Junk).
// Exit codes as reclassify's: 0 learned, 1 not learnable (empty, not a
// message, too big), 75 try again (the model locked or unwritable).
int learn(const Settings& settings, const SpamCommand& cmd) {
  const uint64_t limit = settings.smtp.max_message_size;
  std::string message;
  char buf[65536];
  for (;;) {
    std::cin.read(buf, sizeof buf);
    const auto n = std::cin.gcount();
    if (n <= 0) break;
    if (message.size() + uint64_t(n) > limit) {
      std::cerr << "mailkeep: the message is larger than [smtp] max_message_size (" << limit
                << " bytes); not learned\n";
      return 1;
    }
    message.append(buf, size_t(n));
  }
  if (message.empty()) {
    std::cerr << "mailkeep: empty input: expected one message on standard input; not learned\n";
    return 1;
  }
  if (!looks_like_a_message(message)) {
    std::cerr << "mailkeep: standard input is not a message (it does not start with a header field); not learned\n";
    return 1;
  }
  const bool as_spam = cmd.as == "spam";
  TokenizerSettings tok;
  spam::Tokenizer t(tok, /*synchronous=*/true);
  t.feed(message);
  std::vector<uint32_t> features = t.finish();
  spam::Verdict fallback;
  fallback.sender = printable_ascii(header_value(message, "From"), 200);
  fallback.subject = t.subject();
  fallback.client = "learn";
  fallback.recipients = printable_ascii(header_value(message, "Delivered-To"), 200);
  const std::string signature = printable_ascii(header_value(message, "X-Mailkeep-Signature"), 100);
  Stores stores(settings);
  auto history = open_history(stores);
  if (!history) return 75;
  std::unique_ptr<SharedFile> share;
  if (!open_model_share(stores, share)) return 75;
  auto r = spam::learn(history.get(), settings.spam.model, tok, signature, features, as_spam,
                       {settings.spam.tag_score, settings.spam.reject_score}, fallback,
                       std::chrono::milliseconds(cmd.lock_wait_ms), share.get());
  if (r.outcome != Outcome::Ok) {
    std::cerr << "mailkeep: " << r.code << ": " << r.detail << "\n";
    return r.outcome == Outcome::TempFail ? 75 : 1;
  }
  std::printf("%s\t%s\tscore %.6f -> %.6f\t(%s)\n", r.signature.c_str(), cmd.as.c_str(), r.before, r.after,
              r.stored ? "stored features" : "tokenized");
  return 0;
}

int stats(const Settings& settings, const SpamCommand& cmd) {
  TokenizerSettings tok;
  Model model(tok);
  if (report(spam::load_or_new(settings.spam.model, tok, model))) return 1;
  int64_t since = 0;
  if (!cmd.since.empty()) {
    auto parsed = parse_date_utc(cmd.since);
    if (!parsed) {
      std::cerr << "mailkeep: --since: expected YYYY-MM-DD, got '" << cmd.since << "'\n";
      return 1;
    }
    since = *parsed;
  }
  spam::VerdictCounts counts;
  std::error_code ec;
  if (!settings.store.url.empty() || std::filesystem::exists(settings.spam.history, ec)) {
    try {
      counts = Stores(settings).spam_history()->counts(since);
    } catch (const std::exception& e) {
      std::cerr << "mailkeep: spam history: " << e.what() << "\n";
      return 1;
    }
  }
  bool trained = std::filesystem::exists(settings.spam.model, ec);
  std::cout << "model " << settings.spam.model << (trained ? "" : " (not trained yet)") << "\n"
            << "learned.spam " << model.trained_spam() << "\n"
            << "learned.ham " << model.trained_ham() << "\n"
            << "since " << (since ? cmd.since : std::string("all")) << "\n"
            << "spam " << counts.spam << "\n"
            << "unsure " << counts.unsure << "\n"
            << "ham " << counts.ham << "\n"
            << "errors.corrected " << counts.missed_spam + counts.false_positives << "\n"
            << "errors.missed_spam " << counts.missed_spam << "\n"
            << "errors.false_positives " << counts.false_positives << "\n";
  // The cutoffs in effect, and where they come from.
  const auto cut = spam::effective_cutoffs(&model, settings.spam.tag_score, settings.spam.reject_score);
  const auto& cal = model.calibration();
  auto source = [&](const std::optional<double>& configured) {
    return configured ? "config" : cal ? "model" : "default";
  };
  std::printf("cutoffs.unsure %.9g\ncutoffs.unsure.from %s\ncutoffs.spam %.9g\ncutoffs.spam.from %s\n", cut.unsure,
              source(settings.spam.tag_score), cut.spam, source(settings.spam.reject_score));
  // What `spam train` chose them on: the out-of-fold scores of its folds.
  if (cal)
    std::printf("calibration.folds %u\ncalibration.spam %u\ncalibration.ham %u\ncalibration.max_fp_rate %g\n"
                "calibration.max_fn_rate %g\ncalibration.unsure %.9g\ncalibration.spam_cutoff %.9g\n"
                "calibration.false_positives %u\ncalibration.missed_spam %u\ncalibration.unsure_spam %u\n"
                "calibration.unsure_ham %u\n",
                cal->folds, cal->spam, cal->ham, cal->max_fp_rate, cal->max_fn_rate, cal->cutoffs.unsure,
                cal->cutoffs.spam, cal->false_positives, cal->missed, cal->unsure_spam, cal->unsure_ham);
  return 0;
}

}  // namespace

int spam_command(const Settings& settings, const SpamCommand& cmd) {
  if (cmd.action == "classify") return classify(settings, cmd);
  if (cmd.action == "train") return train(settings, cmd);
  if (cmd.action == "reclassify") return reclassify(settings, cmd);
  if (cmd.action == "learn") return learn(settings, cmd);
  if (cmd.action == "explain") return explain(settings, cmd);
  return stats(settings, cmd);
}

}  // namespace mk::app
