// fuzz_ini.cpp — libFuzzer target: the configuration loader (inih + the
// settings table). Invariant: valid input round-trips through format_settings.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config/settings.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto r = mk::load_settings_text(text, "fuzz.ini");
  if (!r.ok()) {
    for (auto& e : r.errors)
      if (e.rfind("fuzz.ini:", 0) != 0) abort();  // every error names the file
    return 0;
  }
  auto formatted = mk::format_settings(r.settings);
  auto again = mk::load_settings_text(formatted, "formatted.ini");
  if (!again.ok() || mk::format_settings(again.settings) != formatted) abort();
  return 0;
}
