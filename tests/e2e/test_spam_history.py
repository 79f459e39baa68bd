"""The spam history and reclassification, end to end: a model trained with the real CLI, mail sent
through mailkeep by a real SMTP client to the capture upstream, then

- `mailkeep spam stats [--since]` counts the verdicts, and after a correction the errors;
- `mailkeep spam reclassify SIGNATURE --as spam|ham` retrains from the stored features (no copy of
  the message), and the same message sent again gets the other verdict;
- the operator's GET /spam page: 401 without the admin token, rows with their signatures, and in
  headless Chromium (tests/browser/spam_history.mjs) spam, unsure and ham rows in three colours and
  working reclassify buttons.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness import REPO, Capture, Mailkeep, MAILKEEP_BIN, RawSMTP, default_config, free_port, normalize_message
from test_spam_smtp import corpus, header, model, pick, score_of  # noqa: F401  (model is a fixture)

BROWSER_DIR = REPO / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TOKEN = "op-secret-0123456789abcdef"


class SpamGateway:
    def __init__(self, workdir: Path, model_file: Path):
        self.capture = Capture().start()
        self.http_port = free_port()
        self.model = workdir / "spam.model"
        shutil.copy(model_file, self.model)  # reclassification rewrites it: never the shared one
        self.mk = Mailkeep(workdir / "mk", default_config(
            free_port(), self.capture.address,
            spam={"enabled": "true", "model": str(self.model), "history": str(workdir / "history.db"),
                  "tag_score": "0.5", "reject_score": "0.99"},
            http={"listen": f"127.0.0.1:{self.http_port}", "admin_token": TOKEN}))
        self.mk.start()

    def send(self, message: bytes) -> tuple[str, str]:
        """Sends to a relay domain; returns (X-Spam-Status, X-Mailkeep-Signature) as relayed."""
        before = len(self.capture.messages)
        with RawSMTP(self.mk.host, self.mk.port) as c:
            c.ehlo()
            r = c.send_message("sender@internet.test", ["someone@example.net"], message)
            assert r.code == 250, r
        got = self.capture.wait_for(before + 1)[-1]
        return header(got.data, "X-Spam-Status"), header(got.data, "X-Mailkeep-Signature")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(MAILKEEP_BIN), "spam", *args, "-c", str(self.mk.config_path)],
                              capture_output=True, text=True, timeout=60)

    def stats(self, *args: str) -> dict[str, str]:
        res = self.cli("stats", *args)
        assert res.returncode == 0, res.stderr
        return dict(line.split(" ", 1) for line in res.stdout.splitlines())

    def stats_when(self, ready, *args: str, timeout: float = 5.0) -> dict[str, str]:
        """The server writes verdicts to the history file in batches (every 50 ms): poll the CLI."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats(*args)
            if ready(s) or time.monotonic() > deadline:
                return s
            time.sleep(0.05)

    def get(self, path: str, auth: str | None, accept: str | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        if auth:
            req.add_header("Authorization", auth)
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self) -> None:
        self.mk.stop()
        self.capture.stop()


@pytest.fixture
def gateway(tmp_path, model):  # noqa: F811
    gw = SpamGateway(tmp_path, model)
    yield gw
    gw.stop()
    print(gw.mk.log()[-4000:])


def send_until(gw: SpamGateway, message: bytes, want_spam: bool, timeout: float = 8.0) -> tuple[str, int]:
    """The server picks up a model rewritten by the CLI within 2 s: resend until the verdict flips.
    Returns the last X-Spam-Status and how many sends it took."""
    deadline = time.monotonic() + timeout
    sends = 0
    while True:
        status, _ = gw.send(message)
        sends += 1
        if status.startswith("Yes") == want_spam or time.monotonic() > deadline:
            return status, sends
        time.sleep(0.5)


def test_cli_reclassify_changes_a_later_verdict_and_stats_count_it(gateway, model):  # noqa: F811
    ham_path, _ = pick(model, "easy-ham-1", False, 0)
    spam_path, _ = pick(model, "spam-1", True, 0)
    ham = normalize_message(ham_path.read_bytes())
    spam = normalize_message(spam_path.read_bytes())

    status, ham_sig = gateway.send(ham)
    assert status.startswith("No"), status
    status, spam_sig = gateway.send(spam)
    assert status.startswith("Yes"), status
    assert ham_sig != spam_sig and len(ham_sig) == 16

    today = datetime.datetime.now(datetime.timezone.utc).date()
    s = gateway.stats_when(lambda s: s["spam"] == "1" and s["ham"] == "1", "--since", today.isoformat())
    assert (s["spam"], s["ham"], s["errors.corrected"]) == ("1", "1", "0"), s
    assert int(s["learned.spam"]) > 0 and int(s["learned.ham"]) > 0

    # The operator says the ham was spam: retrained from the stored features alone.
    res = gateway.cli("reclassify", ham_sig, "--as", "spam")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{ham_sig}\tspam\t"), res.stdout
    status, sends = send_until(gateway, ham, want_spam=True)
    assert status.startswith("Yes"), f"the same message after reclassify: {status}"

    s = gateway.stats_when(lambda s: s["spam"] == "2", "--since", today.isoformat())
    assert (s["errors.corrected"], s["errors.missed_spam"], s["errors.false_positives"]) == ("1", "1", "0"), s
    # The last resend was spam; the ones before the model reload were still ham.
    assert (s["spam"], s["ham"]) == ("2", str(1 + sends - 1)), s
    tomorrow = gateway.stats("--since", (today + datetime.timedelta(days=1)).isoformat())
    assert (tomorrow["spam"], tomorrow["ham"]) == ("0", "0"), tomorrow

    # Why: `spam explain` names the strongest features, each a token of the message.
    res = gateway.cli("explain", "--top", "5", str(spam_path))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    path, score, count = lines[0].split("\t")
    assert path == str(spam_path) and float(score) > 0.5 and count.endswith(" features")
    assert len(lines) == 6
    weights = [float(line.split("\t")[0]) for line in lines[1:]]
    assert weights == sorted(weights, key=abs, reverse=True) and any(w > 0 for w in weights)

    # Clear failures, not guesses.
    res = gateway.cli("reclassify", "0000000000000000", "--as", "ham")
    assert res.returncode == 1 and "not-found" in res.stderr, res
    res = gateway.cli("reclassify", ham_sig, "--as", "maybe")
    assert res.returncode != 0 and "maybe" in res.stderr
    res = gateway.cli("stats", "--since", "28.11.2026")
    assert res.returncode == 1 and "YYYY-MM-DD" in res.stderr


def test_history_page_is_for_the_operator_only(gateway, model):  # noqa: F811
    ham_path, _ = pick(model, "easy-ham-1", False, 0)
    _, sig = gateway.send(normalize_message(ham_path.read_bytes()))
    code, body = gateway.get("/spam", None)
    assert code == 401 and json.loads(body)["error"] == "unauthorized"
    code, _ = gateway.get("/spam", "Bearer wrong-token-0123456789")
    assert code == 401
    basic = "Basic " + base64.b64encode(f"operator:{TOKEN}".encode()).decode()
    code, body = gateway.get("/spam", basic)
    assert code == 200 and f'data-signature="{sig}"' in body
    # The same for scripts, as JSON.
    code, body = gateway.get("/spam", f"Bearer {TOKEN}", accept="application/json")
    data = json.loads(body)
    assert code == 200 and data["verdicts"][0]["signature"] == sig and data["counts"]["ham"] == 1, data
    assert TOKEN not in gateway.mk.log()

    # Guessing: ten wrong tokens within a minute, then 429 for that client, the right token too.
    # (Up to 20 tries: a minute that ends in between starts the count again, once.)
    codes = []
    for i in range(20):
        code, body = gateway.get("/spam", f"Bearer wrong-token-{i:016d}")
        codes.append(code)
        if code == 429:
            break
    assert codes[-1] == 429 and json.loads(body)["error"] == "too-many-attempts", codes
    assert set(codes[:-1]) == {401} and len(codes) >= 10, codes  # one wrong token was sent above
    assert gateway.get("/spam", f"Bearer {TOKEN}")[0] in (429, 200)  # 200 only if the minute just ended
    assert "too-many-attempts" in gateway.mk.log()


def test_history_page_in_chromium(gateway, model, tmp_path):  # noqa: F811
    missing = [name for name, ok in (("node", shutil.which("node")), (CHROMIUM, Path(CHROMIUM).exists()),
                                     ("playwright-core", (BROWSER_DIR / "node_modules" / "playwright-core").is_dir()))
               if not ok]
    if missing:
        if os.environ.get("MAILKEEP_REQUIRE_BINARY") == "1":
            pytest.fail(f"browser test prerequisites missing: {missing}")
        pytest.skip(f"missing: {missing}")
    spam_path, _ = pick(model, "spam-1", True, 0)
    ham_path, _ = pick(model, "easy-ham-1", False, 0)
    spam = normalize_message(spam_path.read_bytes())
    status, spam_sig = gateway.send(spam)
    assert status.startswith("Yes")
    _, ham_sig = gateway.send(normalize_message(ham_path.read_bytes()))
    # And one the model is unsure of: between tag_score 0.5 and reject_score 0.99.
    unsure_sig = None
    for path in corpus("spam-2", 120) + corpus("hard-ham-1", 60):
        if 0.6 < score_of(model, path) < 0.9:
            status, sig = gateway.send(normalize_message(path.read_bytes()))
            if status.startswith("Unsure"):
                unsure_sig = sig
                break
    assert unsure_sig, "no message scored Unsure"

    env = dict(os.environ, MAILKEEP_URL=f"http://127.0.0.1:{gateway.http_port}", ADMIN_TOKEN=TOKEN,
               SPAM_SIGNATURE=spam_sig, HAM_SIGNATURE=ham_sig, UNSURE_SIGNATURE=unsure_sig,
               OUT_DIR=str(tmp_path / "out"), CHROMIUM=CHROMIUM)
    proc = subprocess.run(["node", "--test-reporter=spec", "spam_history.mjs"], cwd=BROWSER_DIR, env=env,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, "browser tests failed (see output above)"

    # The click retrained the server's model: the same spam now passes as ham.
    status, _ = gateway.send(spam)
    assert status.startswith("No"), status
    s = gateway.stats_when(lambda s: s["errors.false_positives"] == "1")
    assert s["errors.false_positives"] == "1", s
