#!/usr/bin/env bash
# test.sh — runs every test: unit (CTest/GoogleTest) and end-to-end (pytest
# against the real build/mailkeep and real peers). Sets up first if needed.
# Prints one closing line: "total: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")"

./setup.sh || { echo "total: 0 passed, 1 failed"; exit 1; }
tests/data/fetch.sh || echo "warning: could not fetch the SpamAssassin corpus; corpus tests will fail" >&2

mkdir -p build/test-results
rm -f build/test-results/*.xml

echo "== unit tests"
(cd build && ctest --output-on-failure -j 2 --output-junit test-results/unit.xml)
unit_rc=$?

echo "== end-to-end tests"
MAILKEEP_REQUIRE_BINARY=1 /usr/bin/python3 -m pytest tests/e2e -q -p no:cacheprovider \
  --junitxml=build/test-results/e2e.xml
e2e_rc=$?

/usr/bin/python3 - <<'PY'
import xml.etree.ElementTree as ET, glob
passed = failed = skipped = 0
for path in glob.glob("build/test-results/*.xml"):
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            failed += 1
        elif "skipped" in kinds:
            skipped += 1
        else:
            passed += 1
print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
PY
[ $unit_rc -eq 0 ] && [ $e2e_rc -eq 0 ]
