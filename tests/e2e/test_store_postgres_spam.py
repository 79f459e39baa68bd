"""The spam filter of several gateways on one PostgreSQL ([store] url), with a throwaway PostgreSQL 15
and two gateways, one on 127.0.0.2 and one on 127.0.0.3, neither with a model file of its own:

- `mailkeep spam train` on one publishes the model; both gateways load it within a second;
- a verdict recorded on gateway A is found on B's /spam page and reclassified from B's CLI, and the
  retrained model reaches A within a second: the same message through A gets the other verdict;
  `spam stats` on either counts the correction;
- PostgreSQL restarted: relayed mail is scored on meanwhile, and a model published after the restart
  still reaches both gateways (their listeners reconnect by themselves).
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from harness import MAILKEEP_BIN, Capture, Mailkeep, RawSMTP, default_config, free_port, normalize_message
from postgres_support import pg_bin
from test_spam_smtp import corpus, header, model, pick  # noqa: F401  (model is a fixture)
from test_store_postgres import fresh_db, postgres  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.skipif(pg_bin() is None and os.environ.get("MAILKEEP_REQUIRE_BINARY") != "1",
                                 reason="PostgreSQL 15 not installed"),
              pytest.mark.release_only]  # the shared model and history run under ASan in the unit suites and test_store_postgres.py

TOKEN = "op-secret-0123456789abcdef"


class SpamGateway:
    def __init__(self, workdir: Path, host: str, capture: Capture, url: str) -> None:
        self.host, self.capture = host, capture
        self.smtp_port, self.http_port = free_port(host), free_port()
        self.model = workdir / "spam.model"
        config = default_config(self.smtp_port, capture.address,
                                spam={"enabled": "true", "model": str(self.model),
                                      "history": str(workdir / "history.db"), "tag_score": "0.5",
                                      "reject_score": "0.99"},
                                http={"listen": f"127.0.0.1:{self.http_port}", "admin_token": TOKEN},
                                store={"url": url})
        config["smtp"]["listen"] = f"{host}:{self.smtp_port}"
        self.mk = Mailkeep(workdir / "mk", config)

    def start(self) -> "SpamGateway":
        self.mk.start()
        return self

    def send(self, message: bytes) -> tuple[str, str]:
        """Relays one message; returns its (X-Spam-Status, X-Mailkeep-Signature)."""
        before = len(self.capture.messages)
        with RawSMTP(self.host, self.smtp_port) as c:
            c.ehlo()
            r = c.send_message("sender@internet.test", ["someone@example.net"], message)
            assert r.code == 250, r
        got = self.capture.wait_for(before + 1)[-1]
        return header(got.data, "X-Spam-Status") or "", header(got.data, "X-Mailkeep-Signature") or ""

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(MAILKEEP_BIN), "spam", *args, "-c", str(self.mk.config_path)],
                              capture_output=True, text=True, timeout=120)

    def spam_page(self) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/spam",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture
def pair(tmp_path, fresh_db):  # noqa: F811
    capture = Capture().start()
    a = SpamGateway(tmp_path / "a", "127.0.0.2", capture, fresh_db.url).start()
    b = SpamGateway(tmp_path / "b", "127.0.0.3", capture, fresh_db.url).start()
    yield a, b
    for g in (a, b):
        code = g.mk.stop()
        print(f"--- {g.host} (exit {code}) ---\n" + "\n".join(g.mk.log().splitlines()[-30:]))
    capture.stop()


def wait_same_model(a: SpamGateway, b: SpamGateway, than: bytes | None, timeout: float) -> float:
    """Seconds until both gateways' model files are equal (and differ from `than`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if a.model.exists() and b.model.exists():
            da, db = a.model.read_bytes(), b.model.read_bytes()
            if da == db and da != than:
                return time.monotonic() - start
        time.sleep(0.02)
    pytest.fail(f"the model files did not converge within {timeout} s")


def loaded_count(g: SpamGateway) -> int:
    return g.mk.log().count("spam model: the shared model loaded")


def wait_loaded(g: SpamGateway, at_least: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while loaded_count(g) < at_least:
        assert time.monotonic() < deadline, g.mk.log()[-3000:]
        time.sleep(0.02)


def train(g: SpamGateway) -> subprocess.CompletedProcess:
    res = g.cli("train", "--spam", *map(str, corpus("spam-1", 300)), "--ham", *map(str, corpus("easy-ham-1", 600)))
    assert res.returncode == 0, res.stderr
    assert "published to every gateway" in res.stderr, res.stderr
    return res


def test_a_model_trained_on_one_gateway_serves_both_and_a_reclassification_on_b_reaches_a(pair, model):  # noqa: F811
    a, b = pair
    assert not a.model.exists() and not b.model.exists()
    train(a)
    wait_same_model(a, b, None, timeout=2.0)
    wait_loaded(a, 1)
    wait_loaded(b, 1)  # B never had a file: it came from PostgreSQL

    ham_path, _ = pick(model, "easy-ham-1", False, 0)  # the fixture's model is trained on the same messages
    ham = normalize_message(ham_path.read_bytes())
    status, sig = a.send(ham)
    assert status.startswith("No"), status
    status_b, _ = b.send(ham)
    assert status_b.split(",")[1] == status.split(",")[1], "one model: the same score on both"

    # B sees A's verdict (the buffered history writes every 50 ms) and reclassifies it.
    deadline = time.monotonic() + 5
    while sig not in [v["signature"] for v in b.spam_page()["verdicts"]]:
        assert time.monotonic() < deadline, "A's verdict never reached B's /spam page"
        time.sleep(0.05)
    before = a.model.read_bytes()
    loads = loaded_count(a)
    res = b.cli("reclassify", sig, "--as", "spam")
    assert res.returncode == 0, res.stderr
    seconds = wait_same_model(a, b, before, timeout=1.0)  # "within a second"
    wait_loaded(a, loads + 1, timeout=1.0)
    print(f"the retrained model reached A in {seconds * 1000:.0f} ms")
    status, _ = a.send(ham)
    assert status.startswith("Yes"), f"the same message through A after B's reclassify: {status}"

    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    for g in (a, b):
        deadline = time.monotonic() + 3  # A writes its last verdict within 50 ms
        while True:
            res = g.cli("stats", "--since", today)
            assert res.returncode == 0, res.stderr
            s = dict(line.split(" ", 1) for line in res.stdout.splitlines())
            if int(s["spam"]) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (s["errors.corrected"], s["errors.missed_spam"]) == ("1", "1"), s
        assert int(s["ham"]) >= 2 and int(s["spam"]) == 1, s
    # The /spam page's reclassify button on A (the other way round) retrains B too.
    before = b.model.read_bytes()
    req = urllib.request.Request(f"http://127.0.0.1:{a.http_port}/spam/reclassify",
                                 data=json.dumps({"signature": sig, "as": "ham"}).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
    wait_same_model(a, b, before, timeout=1.0)


def test_postgresql_restarted_mail_is_scored_on_and_the_next_model_still_reaches_both(pair, fresh_db, model):  # noqa: F811
    a, b = pair
    train(a)
    wait_same_model(a, b, None, timeout=2.0)
    spam_path, _ = pick(model, "spam-1", True, 0)
    spam = normalize_message(spam_path.read_bytes())
    fresh_db.stop()
    try:
        status, _ = b.send(spam)  # the loaded model scores on; the verdict row is dropped (logged)
        assert status.startswith("Yes"), status
    finally:
        fresh_db.start()
    before = a.model.read_bytes()
    loads_b = loaded_count(b)
    res = a.cli("train", "--fresh", "--spam", *map(str, corpus("spam-1", 50)), "--ham", *map(str, corpus("easy-ham-1", 100)))
    assert res.returncode == 0, res.stderr
    wait_same_model(a, b, before, timeout=8.0)  # the listeners reconnect with backoff (at most 5 s)
    wait_loaded(b, loads_b + 1, timeout=8.0)
    assert "change notifications: connection lost" in b.mk.log()
