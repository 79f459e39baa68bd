"""Training the spam filter from the mail client: a real Dovecot started from exactly
`mailkeep dovecot-config` (with Debian's dovecot-sieve: imap_sieve and sieve_extprograms), imaplib
as the mail client, and mail that came in through mailkeep's SMTP side, scored and signed.

- MOVE into Junk: the model learns the message as spam (its stored features), and `spam classify`
  on the archived file scores higher;
- MOVE out of Junk into INBOX: learned as ham; out of Junk into Trash: not learned;
- COPY into Junk works like MOVE; a message without a signature (APPENDed by the client) is
  tokenized; Dovecot's log has no sieve error.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from backup_support import DOMAIN, MAIL_UID, public_tempdir
from harness import RawSMTP, corpus_available, normalize_message
from standalone_support import (  # noqa: F401  (pytest fixtures)
    MkDovecot, close_imap, imap_login, site_factory,
)
from test_spam_smtp import corpus, header, model, score_of  # noqa: F401  (model is a fixture)
from test_users_dovecot import captures  # noqa: F401  (fixture)

SIEVE = Path("/usr/lib/dovecot/modules/lib95_imap_sieve_plugin.so")
# Release only: Dovecot runs the pipe under its imap process's address-space limit
# (default_vsz_limit), which an ASan binary's shadow memory cannot start in; `spam learn`
# itself is repeated under ASan by test_spam_learn.py, which runs the same command directly.
pytestmark = [pytest.mark.skipif(not corpus_available(), reason="run tests/data/fetch.sh for the corpus"),
              pytest.mark.skipif(not SIEVE.exists(), reason="dovecot-sieve is not installed (test.sh installs it)"),
              pytest.mark.release_only]

ALICE = f"alice@{DOMAIN}"
PASSWORD = "sieve-test-password-1"


def learned(site) -> dict[str, int]:
    res = site.cli("spam", "stats")
    assert res.returncode == 0, res.stderr
    return {k: int(v) for k, v in (line.split(" ", 1) for line in res.stdout.splitlines()) if v.isdigit()}


def wait_learned(site, key: str, want: int, timeout: float = 15.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        s = learned(site)
        if s.get(key) == want or time.monotonic() > deadline:
            return s
        time.sleep(0.1)


def low_scoring_spam(model_path: Path) -> Path:
    """A spam the trained model lets through (scores under 0.5): what a user corrects."""
    for path in corpus("spam-2", 400):
        if score_of(model_path, path) < 0.3:
            return path
    pytest.fail("every spam-2 message scores high: no missed spam to correct")


def send(site, message: bytes) -> None:
    with RawSMTP(site.host, site.port) as c:
        c.ehlo("mx.remote.test")
        r = c.send_message("sender@remote.test", [ALICE], message)
        assert r.code == 250, r


def uid_of(imap, folder: str, message_id: str) -> bytes:
    typ, _ = imap.select(folder)
    assert typ == "OK"
    typ, data = imap.uid("SEARCH", None, "HEADER", "Message-ID", message_id)
    assert typ == "OK" and data[0], (folder, message_id, data)
    return data[0].split()[-1]


def test_moves_and_copies_in_the_mail_client_train_the_filter(site_factory, captures, model, tmp_path):  # noqa: F811
    up, smart = captures
    # The server and Dovecot's pipe run as the mail user: the model's directory is theirs.
    data = public_tempdir("mailkeep-sieve-spam-")
    spam_model = data / "spam.model"
    shutil.copy(model, spam_model)
    for p in (data, spam_model):
        os.chown(p, MAIL_UID, MAIL_UID)
    history = data / "history.db"
    site = site_factory(up.address, smart.address, users=["alice"],
                        spam={"enabled": "true", "model": str(spam_model), "history": str(history),
                              "tag_score": "0.5", "reject_score": "0.99"})
    site.set_password(ALICE, PASSWORD)

    missed = low_scoring_spam(spam_model)
    spam_msg = normalize_message(missed.read_bytes())
    ham_msg = normalize_message(corpus("easy-ham-1", 1, 700)[0].read_bytes())
    send(site, spam_msg)
    send(site, ham_msg)
    inbox = {header(p.read_bytes(), "Message-ID"): p for p in site.delivered("alice")}
    assert len(inbox) == 2
    spam_id, ham_id = header(spam_msg, "Message-ID"), header(ham_msg, "Message-ID")
    spam_file = tmp_path / "missed-spam.eml"      # the archived copy as it was (MOVE renames it)
    spam_file.write_bytes(inbox[spam_id].read_bytes())
    assert header(spam_file.read_bytes(), "X-Spam-Status").startswith("No"), "the model missed it"
    before = score_of(spam_model, spam_file)

    dovecot = MkDovecot(site.config_path, site.base / "dovecot")
    dovecot.start()
    try:
        conf = dovecot.config_text
        assert "imap_sieve" in conf and "sieve_extprograms" in conf, conf
        imap = dovecot.imap()
        try:
            ok, why = imap_login(imap, ALICE, PASSWORD)
            assert ok, why
            start = learned(site)
            # 1. MOVE the missed spam from INBOX to Junk: learned as spam, from its stored features.
            typ, resp = imap.uid("MOVE", uid_of(imap, "INBOX", spam_id), "Junk")
            assert typ == "OK", resp
            s = wait_learned(site, "learned.spam", start["learned.spam"] + 1)
            assert s["learned.spam"] == start["learned.spam"] + 1, (s, dovecot.log()[-3000:])
            assert s["errors.missed_spam"] == start["errors.missed_spam"] + 1, s
            assert score_of(spam_model, spam_file) > before
            # 2. MOVE it back out of Junk into INBOX: learned as ham.
            typ, resp = imap.uid("MOVE", uid_of(imap, "Junk", spam_id), "INBOX")
            assert typ == "OK", resp
            s = wait_learned(site, "learned.ham", start["learned.ham"] + 1)
            assert s["learned.ham"] == start["learned.ham"] + 1, s
            # 3. COPY the ham into Junk: like a MOVE.
            typ, resp = imap.uid("COPY", uid_of(imap, "INBOX", ham_id), "Junk")
            assert typ == "OK", resp
            s = wait_learned(site, "learned.spam", start["learned.spam"] + 2)
            assert s["learned.spam"] == start["learned.spam"] + 2, s
            # 4. MOVE from Junk to Trash: deleting is not a verdict; nothing learned.
            typ, resp = imap.uid("MOVE", uid_of(imap, "Junk", ham_id), "Trash")
            assert typ == "OK", resp
            time.sleep(1.5)
            s2 = learned(site)
            assert (s2["learned.spam"], s2["learned.ham"]) == (s["learned.spam"], s["learned.ham"]), s2
            # 5. A message without a signature (the client APPENDs it), copied into Junk: tokenized,
            #    and the correction gets a history row of its own.
            plain = (b"From: someone@remote.test\r\nTo: " + ALICE.encode() + b"\r\nSubject: appended\r\n"
                     b"Message-ID: <appended-1@remote.test>\r\n\r\nwin a prize now, click here\r\n")
            typ, resp = imap.append("INBOX", None, None, plain)
            assert typ == "OK", resp
            rows = s2["spam"] + s2["unsure"] + s2["ham"]
            typ, resp = imap.uid("COPY", uid_of(imap, "INBOX", "<appended-1@remote.test>"), "Junk")
            assert typ == "OK", resp
            s3 = wait_learned(site, "learned.spam", s2["learned.spam"] + 1)
            assert s3["learned.spam"] == s2["learned.spam"] + 1, s3
            assert s3["spam"] + s3["unsure"] + s3["ham"] == rows + 1, s3
        finally:
            close_imap(imap)
        log = dovecot.log()
        errors = [line for line in log.splitlines() if "sieve" in line.lower() and ("error" in line.lower() or "fatal" in line.lower())]
        assert errors == [], "\n".join(errors)
    finally:
        dovecot.stop()
        shutil.rmtree(data, ignore_errors=True)
