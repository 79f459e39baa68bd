"""`mailkeep spam learn --spam|--ham`: one message on standard input, as Dovecot's IMAPSieve pipes
it when a user moves mail into or out of Junk. A message mailkeep scored (its X-Mailkeep-Signature
still in the history) is learned from the stored features, anything else is tokenized; the
correction is in `spam stats`; bad input and a locked model get their exit codes (1: not
learnable, 75: try again) and leave the model file as it was."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness import MAILKEEP_BIN, corpus_available, normalize_message
from test_spam_history import SpamGateway, send_until
from test_spam_smtp import model, pick, score_of  # noqa: F401  (model is a fixture)

pytestmark = pytest.mark.skipif(not corpus_available(), reason="run tests/data/fetch.sh for the corpus")


def learn(ini: Path, label: str, stdin: bytes, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MAILKEEP_BIN), "spam", "learn", label, "-c", str(ini), *extra], input=stdin,
                          capture_output=True, timeout=120)


def stats(ini: Path) -> dict[str, str]:
    res = subprocess.run([str(MAILKEEP_BIN), "spam", "stats", "-c", str(ini)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    return dict(line.split(" ", 1) for line in res.stdout.splitlines())


@pytest.fixture
def gateway(tmp_path, model):  # noqa: F811
    gw = SpamGateway(tmp_path, model)
    yield gw
    gw.stop()


@pytest.fixture
def offline(tmp_path, model):  # noqa: F811
    """A config with its own copy of the trained model and an empty history; no server."""
    copy = tmp_path / "spam.model"
    shutil.copy(model, copy)
    ini = tmp_path / "mk.ini"
    ini.write_text(f"[spam]\nmodel = {copy}\nhistory = {tmp_path / 'history.db'}\ntag_score = 0.5\n")
    return ini, copy


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_message_mailkeep_scored_is_learned_from_its_stored_features(gateway, model):  # noqa: F811
    ham_path, _ = pick(model, "easy-ham-1", False, 0)
    ham = normalize_message(ham_path.read_bytes())
    status, sig = gateway.send(ham)
    assert status.startswith("No"), status
    relayed = gateway.capture.messages[-1].data
    # What Dovecot pipes: the delivered message, signature header and all, but a body
    # that no longer matches (a client re-encoded it): the stored features still apply.
    moved = relayed.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\nre-encoded by a mail client\r\n"
    gateway.stats_when(lambda s: s["ham"] == "1")  # the server writes verdicts to the history every 50 ms
    res = learn(gateway.mk.config_path, "--spam", moved)
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert out.startswith(f"{sig}\tspam\tscore ") and out.rstrip().endswith("(stored features)"), out
    before, after = (float(x) for x in out.split("score ")[1].split("\t")[0].split(" -> "))
    assert before < 0.5 <= after, (out, status)
    s = stats(gateway.mk.config_path)
    assert (s["errors.missed_spam"], s["errors.false_positives"]) == ("1", "0"), s
    status, _ = send_until(gateway, ham, want_spam=True)
    assert status.startswith("Yes"), f"the same message after learning it as spam: {status}"


def test_an_unsigned_message_is_tokenized_and_the_correction_counted(offline, model, tmp_path):  # noqa: F811
    ini, copy = offline
    ham_path, before = pick(model, "easy-ham-1", False, 10)
    res = learn(ini, "--spam", ham_path.read_bytes())
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().rstrip().endswith("(tokenized)"), res.stdout
    assert score_of(copy, ham_path) >= 0.5 > before
    s = stats(ini)
    assert (s["errors.missed_spam"], s["errors.false_positives"], s["ham"]) == ("1", "0", "1"), s
    # Back out of Junk: learned as ham, now counted as a false positive of the spam verdict it had.
    res = learn(ini, "--ham", ham_path.read_bytes())
    assert res.returncode == 0, res.stderr
    assert score_of(copy, ham_path) < 0.5
    s = stats(ini)
    assert (s["errors.missed_spam"], s["errors.false_positives"], s["spam"]) == ("1", "1", "1"), s


def test_bad_input_and_a_locked_model_get_exit_codes_and_leave_the_model_alone(offline, tmp_path):
    ini, copy = offline
    original = digest(copy)
    garbage = os.urandom(4096).replace(b":", b"")
    cases = {
        "garbage": (b"\x00\x01" + garbage, 1, "not a message"),
        "empty": (b"", 1, "empty input"),
        "60 MB": (b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 60_000, 1, "max_message_size"),
    }
    for name, (data, code, text) in cases.items():
        res = learn(ini, "--spam", data)
        assert res.returncode == code and text in res.stderr.decode(), (name, res.returncode, res.stderr)
        assert digest(copy) == original, f"{name}: the model changed"
    res = learn(ini, "--spam", b"Subject: x\r\n\r\nhello\r\n", "--lock-wait", "x")
    assert res.returncode != 0 and digest(copy) == original
    res = subprocess.run([str(MAILKEEP_BIN), "spam", "learn", "-c", str(ini)], input=b"Subject: x\r\n\r\nhi\r\n",
                         capture_output=True, timeout=60)
    assert res.returncode != 0 and b"--spam or --ham" in res.stderr, res.stderr
    res = learn(ini, "--spam", b"Subject: x\r\n\r\nhi\r\n", "--ham")
    assert res.returncode != 0 and digest(copy) == original
    # Another writer holds the model's lock: 75 (EX_TEMPFAIL) after --lock-wait, not a hang.
    with open(str(copy) + ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        t = time.monotonic()
        res = learn(ini, "--spam", b"Subject: locked\r\n\r\nhello there\r\n", "--lock-wait", "300")
        elapsed = time.monotonic() - t
    assert res.returncode == 75 and b"locked" in res.stderr, res.stderr
    assert 0.3 <= elapsed < 5, elapsed
    assert digest(copy) == original
    # Released: the same message is learned.
    res = learn(ini, "--spam", b"Subject: locked\r\n\r\nhello there\r\n")
    assert res.returncode == 0, res.stderr
    assert digest(copy) != original
