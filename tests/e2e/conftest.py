"""Fixtures for the mailkeep end-to-end suite.

Run with:  /usr/bin/python3 -m pytest tests/e2e -q
Binary:    build/mailkeep (override with MAILKEEP_BIN=...). Tests that need it are skipped
           when it is missing, unless MAILKEEP_REQUIRE_BINARY=1 (then they fail).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    MAILKEEP_BIN, Capture, Mailkeep, PostfixInstance, corpus_available, corpus_messages,
    default_config, free_port, require_binary,
)


# The ASan pass (test.sh) repeats the suite on the sanitizer build. Tests marked
# `release_only` run once, on the release build: they drive a browser or a
# corpus for minutes while the code they reach is covered under ASan by the
# unit tests, the fuzzers and the rest of this suite. Keeps CI under its budget.
def pytest_configure(config):
    config.addinivalue_line("markers", "release_only: run on the release build only, not in the ASan pass")


def pytest_collection_modifyitems(config, items):
    from harness import asan_build
    if not asan_build():
        return
    skip = pytest.mark.skip(reason="release_only: not repeated in the ASan pass (see conftest.py)")
    for item in items:
        if item.get_closest_marker("release_only"):
            item.add_marker(skip)


@pytest.fixture
def mailkeep_bin() -> Path:
    require_binary()
    return MAILKEEP_BIN


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def capture():
    """A recording upstream (aiosmtpd, SMTPUTF8 on, long lines allowed)."""
    cap = Capture().start()
    yield cap
    cap.stop()


@pytest.fixture
def start_mailkeep(mailkeep_bin, tmp_path):
    """Factory: start_mailkeep(smarthost="127.0.0.1:N", smtp={...}, relay={...}, ...).

    Every instance is stopped at teardown; its log is printed (shown by pytest on failure).
    """
    started: list[Mailkeep] = []

    def start(smarthost: str, name: str | None = None, **overrides) -> Mailkeep:
        workdir = tmp_path / (name or f"mailkeep{len(started)}")
        config = default_config(free_port(), smarthost, **overrides)
        mk = Mailkeep(workdir, config)
        started.append(mk)
        return mk.start()

    yield start
    for mk in started:
        code = mk.stop()
        print(f"--- mailkeep log ({mk.stderr_path}, exit {code}) ---")
        print("\n".join(mk.log().splitlines()[-60:]))


@pytest.fixture
def mailkeep(start_mailkeep, capture) -> Mailkeep:
    """mailkeep relaying to `capture`; clients on 127.0.0.1 are not relay clients."""
    return start_mailkeep(capture.address)


@pytest.fixture
def postfix_factory():
    """Factory: postfix_factory(relayhost="127.0.0.1:N") -> started PostfixInstance."""
    if not shutil.which("postfix") or not Path("/etc/postfix/master.cf").exists():
        pytest.skip("postfix is not installed")
    instances: list[PostfixInstance] = []

    def start(relayhost: str, **extra: str) -> PostfixInstance:
        pf = PostfixInstance(relayhost=relayhost, extra=extra)
        instances.append(pf)
        return pf.start()

    yield start
    for pf in instances:
        print(f"--- postfix maillog ({pf.maillog}) ---")
        print("\n".join(pf.log().splitlines()[-40:]))
        pf.cleanup()


@pytest.fixture(scope="session")
def corpus() -> list[tuple[str, bytes]]:
    if not corpus_available():
        pytest.skip("SpamAssassin corpus missing: run tests/data/fetch.sh first")
    return corpus_messages(200)
