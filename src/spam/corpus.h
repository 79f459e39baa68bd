// corpus.h — message files for training and classifying: single files,
// Maildirs (cur/ and new/) and directories of files. A leading mbox "From "
// line is skipped.
#pragma once
#include <string>
#include <vector>

#include "spam/tokenizer.h"

namespace mk::spam {

// Expands PATHs (files, Maildirs, directories) into message files, sorted, appended
// to `out`. Returns "" or an error naming the first PATH that is missing, is neither a
// file nor a directory, or cannot be listed: a mistyped path must not silently train
// on fewer messages.
std::string message_files(const std::vector<std::string>& paths, std::vector<std::string>& out);

// Tokenizes one message file; false if it cannot be read.
bool tokenize_file(const std::string& path, Tokenizer& tokenizer);

}  // namespace mk::spam
