"""The spam filter in the SMTP path, end to end: a model trained with `mailkeep spam train` on real
corpus mail, real SMTP clients, the capture upstream and the archive.

- every inbound message relayed carries X-Spam-Status / X-Spam-Score / X-Mailkeep-Signature;
- at or above reject_score, mail to an alias gets 550 5.7.1 and nothing reaches the upstream;
- for a backup domain the archive copy of such mail goes to the user's .Junk folder, and the
  message is still relayed, tagged.
"""
from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from backup_support import backup_gateway, upstreams  # noqa: F401  (fixtures)
from harness import CORPUS_DIR, MAILKEEP_BIN, RawSMTP, corpus_available, normalize_message

pytestmark = pytest.mark.skipif(not corpus_available(), reason="run tests/data/fetch.sh for the corpus")


def corpus(group: str, count: int, offset: int = 0) -> list[Path]:
    return sorted((CORPUS_DIR / group).glob("*.txt"))[offset:offset + count]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A model trained on 300 spam-1 and 600 easy-ham-1 messages with the real CLI."""
    work = tmp_path_factory.mktemp("spam")
    model = work / "spam.model"
    ini = work / "train.ini"
    ini.write_text(f"[spam]\nmodel = {model}\n")
    subprocess.run([str(MAILKEEP_BIN), "spam", "train", "-c", str(ini),
                    "--spam", *map(str, corpus("spam-1", 300)), "--ham", *map(str, corpus("easy-ham-1", 600))],
                   check=True, capture_output=True)
    model.chmod(0o644)
    work.chmod(0o755)
    return model


def score_of(model: Path, message: Path) -> float:
    ini = model.parent / "classify.ini"
    ini.write_text(f"[spam]\nmodel = {model}\n")
    out = subprocess.run([str(MAILKEEP_BIN), "spam", "classify", "-c", str(ini), str(message)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.split("\t")[1])


def pick(model: Path, group: str, want_spam: bool, offset: int) -> tuple[Path, float]:
    """A message the model scores clearly (>= 0.99 or < 0.2), so the test does not hinge on a borderline."""
    for path in corpus(group, 60, offset):
        s = score_of(model, path)
        if (want_spam and s >= 0.99) or (not want_spam and s < 0.2):
            return path, s
    pytest.fail(f"no clear {'spam' if want_spam else 'ham'} in {group}")


def header(message: bytes, name: str) -> str | None:
    head = message.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def create_alias(http_port: int, target: str) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/v1/aliases",
                                 data=json.dumps({"target": target}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)["alias"]


def test_spam_verdicts_in_the_smtp_path(backup_gateway, upstreams, model):  # noqa: F811
    spam_path, spam_score = pick(model, "spam-1", True, 0)      # learned: scores high
    ham_path, ham_score = pick(model, "easy-ham-1", False, 0)
    spam_msg = normalize_message(spam_path.read_bytes())
    ham_msg = normalize_message(ham_path.read_bytes())
    http_port = __import__("harness").free_port()
    gw = backup_gateway(upstreams.outbound.address, users=["alice"],
                        spam={"enabled": "true", "model": str(model), "tag_score": "0.5", "reject_score": "0.99"},
                        http={"listen": f"127.0.0.1:{http_port}"}, aliases={"create_interval": "0"})
    alias = create_alias(http_port, "owner@example.net")

    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        # Spam and ham to a relay domain: both relayed, tagged.
        for msg in (spam_msg, ham_msg):
            assert c.send_message("sender@internet.test", ["someone@example.net"], msg).code == 250
        # Spam to an alias: refused, permanently.
        r = c.send_message("sender@internet.test", [alias], spam_msg)
        assert (r.code, r.enhanced) == (550, "5.7.1"), r
        # Ham to the alias: delivered.
        assert c.send_message("sender@internet.test", [alias], ham_msg).code == 250
        # Spam and ham to an archived user: both relayed; spam archived in .Junk, ham in INBOX.
        assert c.send_message("sender@internet.test", ["alice@example.org"], spam_msg).code == 250
        assert c.send_message("sender@internet.test", ["alice@example.org"], ham_msg).code == 250

    got = upstreams.outbound.messages
    assert len(got) == 5, [m.rcpt_tos for m in got]  # the aliased spam never left
    statuses = [header(m.data, "X-Spam-Status") for m in got]
    assert all(s is not None for s in statuses), statuses
    assert statuses[0].startswith("Yes") and statuses[1].startswith("No"), statuses
    assert abs(float(header(got[0].data, "X-Spam-Score")) - spam_score) < 0.01
    assert header(got[0].data, "X-Mailkeep-Signature")
    assert got[2].rcpt_tos == ["owner@example.net"] and header(got[2].data, "X-Spam-Status").startswith("No")
    # The archive: .Junk for the spam, INBOX for the ham (Maildir++).
    junk = list((gw.folder("alice", "Junk") / "new").iterdir())
    inbox = list((gw.folder("alice") / "new").iterdir())
    assert len(junk) == 1 and len(inbox) == 1, (junk, inbox)
    assert b"X-Spam-Status: Yes" in junk[0].read_bytes()
    assert "reject.spam" in gw.log() or "spam score" in gw.log()


def without_received(msg: bytes) -> bytes:
    """The message as a spambot sends it straight to an MX: no Received field of its own."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    kept, skipping = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith(b"received:")
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def test_a_message_scores_the_same_live_and_from_the_archive(backup_gateway, upstreams, model):  # noqa: F811
    """The session tokenizes our own Received field ahead of the message, as it stands on top of
    the archived copy: `spam classify` of that copy gives the score the copy's X-Spam-Score
    header recorded when it arrived, so training from the archive teaches what live mail shows.
    Without a Received field of its own, ours is the message's only hop; the Return-Path and
    Delivered-To the archive delivery puts above it came after the verdict and do not count."""
    gw = backup_gateway(upstreams.outbound.address, users=["alice"],
                        spam={"enabled": "true", "model": str(model), "tag_score": "0.5", "reject_score": "0.99"})
    # Messages the model is unsure of (0.1 to 0.9): there a feature more or less shows in the score.
    candidates = model.parent / "unsure"
    candidates.mkdir(exist_ok=True)
    for p in corpus("spam-2", 150) + corpus("easy-ham-2", 150):
        (candidates / p.name).write_bytes(without_received(normalize_message(p.read_bytes())))
    ini = model.parent / "archive-classify.ini"
    ini.write_text(f"[spam]\nmodel = {model}\n")
    scored = subprocess.run([str(MAILKEEP_BIN), "spam", "classify", "-c", str(ini), *map(str, sorted(candidates.iterdir()))],
                            check=True, capture_output=True, text=True).stdout.splitlines()
    unsure = [Path(line.split("\t")[0]) for line in scored if 0.1 < float(line.split("\t")[1]) < 0.9][:6]
    assert len(unsure) >= 2, "no message the model is unsure of"
    sent = [p.read_bytes() for p in unsure]
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo("bulk.sender.example")
        for msg in sent:
            assert b"\r\nreceived:" not in msg.lower() and not msg.lower().startswith(b"received:")
            assert c.send_message("sender@internet.test", ["alice@example.org"], msg).code == 250
    copies = [p for folder in (gw.folder("alice"), gw.folder("alice", "Junk")) if (folder / "new").exists()
              for p in (folder / "new").iterdir()]
    assert len(copies) == len(sent)
    out = subprocess.run([str(MAILKEEP_BIN), "spam", "classify", "-c", str(ini), *map(str, copies)],
                         check=True, capture_output=True, text=True).stdout
    for line, copy in zip(out.splitlines(), copies):
        data = copy.read_bytes()
        # Above our field only the archive delivery's own: Return-Path and Delivered-To.
        assert data.startswith(b"Return-Path: <sender@internet.test>\r\nDelivered-To: alice@example.org\r\n"
                               b"Received: from bulk.sender.example ([127.0.0.1])"), data[:200]
        recorded = float(header(data, "X-Spam-Score"))
        assert abs(float(line.split("\t")[1]) - recorded) < 0.0006, (copy.name, line, recorded)


def test_unsure_mail_is_tagged_and_delivered_only_spam_goes_to_junk(backup_gateway, upstreams, model):  # noqa: F811
    """With the cutoffs the model's training chose (tag_score and reject_score `auto`): a message
    in between is tagged Unsure, archived in INBOX and delivered to an alias; only spam goes to
    .Junk and is refused for an alias."""
    ini = model.parent / "cutoffs.ini"
    ini.write_text(f"[spam]\nmodel = {model}\n")
    s = dict(line.split(" ", 1) for line in subprocess.run(
        [str(MAILKEEP_BIN), "spam", "stats", "-c", str(ini)], check=True, capture_output=True, text=True).stdout.splitlines())
    unsure_cut, spam_cut = float(s["cutoffs.unsure"]), float(s["cutoffs.spam"])
    assert s["cutoffs.spam.from"] == "model" and unsure_cut < spam_cut, s
    # Well inside the band (the live score differs from the file's by our Received field).
    out = subprocess.run([str(MAILKEEP_BIN), "spam", "classify", "-c", str(ini),
                          *map(str, corpus("spam-2", 200) + corpus("hard-ham-1", 100))],
                         check=True, capture_output=True, text=True).stdout.splitlines()
    margin = (spam_cut - unsure_cut) / 4
    middle = [Path(l.split("\t")[0]) for l in out if unsure_cut + margin < float(l.split("\t")[1]) < spam_cut - margin]
    assert middle, f"no message between {unsure_cut} and {spam_cut}"
    unsure_msg = normalize_message(middle[0].read_bytes())
    spam_msg = normalize_message(pick(model, "spam-1", True, 0)[0].read_bytes())
    http_port = __import__("harness").free_port()
    gw = backup_gateway(upstreams.outbound.address, users=["alice"], spam={"enabled": "true", "model": str(model)},
                        http={"listen": f"127.0.0.1:{http_port}"}, aliases={"create_interval": "0"})
    alias = create_alias(http_port, "owner@example.net")
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        assert c.send_message("sender@internet.test", [alias], unsure_msg).code == 250
        assert c.send_message("sender@internet.test", ["alice@example.org"], unsure_msg).code == 250
        r = c.send_message("sender@internet.test", [alias], spam_msg)
        assert (r.code, r.enhanced) == (550, "5.7.1"), r
        assert c.send_message("sender@internet.test", ["alice@example.org"], spam_msg).code == 250
    got = upstreams.outbound.messages
    assert [m.rcpt_tos for m in got] == [["owner@example.net"], ["alice@example.org"], ["alice@example.org"]]
    status = header(got[0].data, "X-Spam-Status")
    assert status.startswith("Unsure, score="), status
    assert f"tag={unsure_cut:.6g} reject={spam_cut:.6g}" in status, (status, s)
    assert header(got[2].data, "X-Spam-Status").startswith("Yes")
    inbox = list((gw.folder("alice") / "new").iterdir())
    junk = list((gw.folder("alice", "Junk") / "new").iterdir())
    assert len(inbox) == 1 and len(junk) == 1, (inbox, junk)
    assert b"X-Spam-Status: Unsure" in inbox[0].read_bytes()
    assert b"X-Spam-Status: Yes" in junk[0].read_bytes()
    assert f">= reject_score {spam_cut:.6g}" in gw.log()
