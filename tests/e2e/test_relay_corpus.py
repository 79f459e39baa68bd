"""Byte-exact relay of real mail (SpamAssassin corpus) through mailkeep to a capture upstream.

Only a Received: header may be added (at the top); everything after it must be identical.
"""

import re
import shutil
import smtplib
import subprocess
import time

import pytest

from harness import WELLFORMED_RECEIVED, RawSMTP, dot_stuff, split_received

SENDER = "sender@client.test"
RCPT = "user@example.org"


def has_8bit(msg: bytes) -> bool:
    return re.search(rb"[\x80-\xff]", msg) is not None


def assert_relayed_exactly(captured, original: bytes, name: str = "") -> None:
    received, rest = split_received(captured.data)
    assert WELLFORMED_RECEIVED.match(received), f"{name}: malformed Received header {received!r}"
    assert b"mx.test.example" in received, f"{name}: Received does not name our host: {received!r}"
    if rest != original:
        # locate the first difference for a readable failure
        i = next((k for k, (a, b) in enumerate(zip(rest, original)) if a != b), min(len(rest), len(original)))
        raise AssertionError(
            f"{name}: relayed bytes differ at offset {i} (got {len(rest)} bytes, sent {len(original)}):\n"
            f"  got:  {rest[max(0, i - 40):i + 40]!r}\n  sent: {original[max(0, i - 40):i + 40]!r}")


def test_corpus_smtplib_one_session(mailkeep, capture, corpus):
    """~200 real messages, one smtplib session (many transactions, no pipelining)."""
    with smtplib.SMTP(mailkeep.host, mailkeep.port, timeout=30) as s:
        s.ehlo("client.test")
        for i, (name, msg) in enumerate(corpus):
            opts = ["BODY=8BITMIME"] if has_8bit(msg) else []
            refused = s.sendmail(f"s{i}@client.test", [RCPT], msg, mail_options=opts)
            assert refused == {}, (name, refused)
    got = capture.wait_for(len(corpus), timeout=30)
    assert len(got) == len(corpus)
    for i, ((name, msg), cap) in enumerate(zip(corpus, got)):
        assert cap.mail_from == f"s{i}@client.test", name
        assert cap.rcpt_tos == [RCPT], name
        assert_relayed_exactly(cap, msg, name)


def test_corpus_raw_pipelined(mailkeep, capture, corpus):
    """RFC 2920 pipelining with raw writes: each write carries the previous message's
    content + end-of-data + the next MAIL/RCPT/RCPT/DATA group."""
    batch = corpus[::4][:50]
    rcpts = [RCPT, "other@example.net"]
    envelope = lambda i: (f"MAIL FROM:<p{i}@client.test>\r\n"
                          + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts) + "DATA\r\n").encode()
    with RawSMTP(mailkeep.host, mailkeep.port, timeout=30) as c:
        ehlo = c.ehlo()
        assert "PIPELINING" in ehlo.text
        c.send(envelope(0))
        for i, (name, msg) in enumerate(batch):
            replies = [c.reply() for _ in range(2 + len(rcpts))]
            assert [r.code for r in replies] == [250, 250, 250, 354], (name, [str(r) for r in replies])
            last = i == len(batch) - 1
            c.send(dot_stuff(msg) + b".\r\n" + (b"QUIT\r\n" if last else envelope(i + 1)))
            r = c.reply()
            assert r.code == 250, (name, str(r))
        assert c.reply().code == 221
    got = capture.wait_for(len(batch), timeout=30)
    assert len(got) == len(batch)
    for i, ((name, msg), cap) in enumerate(zip(batch, got)):
        assert cap.mail_from == f"p{i}@client.test"
        assert sorted(cap.rcpt_tos) == sorted(rcpts)
        assert_relayed_exactly(cap, msg, name)


def test_pipelined_whole_transaction_in_one_write(mailkeep, capture):
    """Commands, content and QUIT in a single write after the 354 arrives in the same stream."""
    msg = b"From: a@client.test\r\nSubject: one write\r\n\r\n.dot line\r\n..two dots\r\nend\r\n"
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.send(b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<user@example.org>\r\nDATA\r\n")
        assert c.reply().code == 250     # EHLO
        assert [c.reply().code for _ in range(3)] == [250, 250, 354]
        c.send(dot_stuff(msg) + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        assert [c.reply().code for _ in range(4)] == [250, 250, 250, 221]
    (cap,) = capture.wait_for(1)
    assert_relayed_exactly(cap, msg)


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks not installed")
@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipeline"])
def test_corpus_swaks(mailkeep, capture, corpus, tmp_path, pipeline):
    batch = [m for m in corpus if not has_8bit(m[1])][1:40:8]
    for name, msg in batch:
        f = tmp_path / "msg.eml"
        f.write_bytes(msg[:-2])   # swaks adds the final CRLF itself
        cmd = ["swaks", "--server", f"{mailkeep.host}:{mailkeep.port}", "--from", SENDER,
               "--to", RCPT, "--helo", "client.test", "--data", f"@{f}", "--suppress-data"]
        if pipeline:
            cmd.append("--pipeline")
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, (name, res.stdout[-2000:], res.stderr[-2000:])
    got = capture.wait_for(len(batch), timeout=30)
    assert len(got) == len(batch)
    for (name, msg), cap in zip(batch, got):
        assert cap.mail_from == SENDER
        assert_relayed_exactly(cap, msg, name)


def test_pipelined_rcpt_replies_keep_order(mailkeep, capture):
    """Local relay denials and upstream RCPT rejections interleaved in one pipelined group."""
    capture.reject_rcpt("gone@example.org")
    group = (b"MAIL FROM:<order@client.test>\r\n"
             b"RCPT TO:<first@example.org>\r\n"
             b"RCPT TO:<victim@other.com>\r\n"
             b"RCPT TO:<gone@example.org>\r\n"
             b"RCPT TO:<last@example.net>\r\n"
             b"DATA\r\n")
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        c.send(group)
        replies = [c.reply() for _ in range(6)]
        got = [(r.code, r.enhanced) for r in replies]
        assert [g[0] for g in got] == [250, 250, 550, 550, 250, 354], [str(r) for r in replies]
        assert got[2][1] == "5.7.1" and got[3][1] == "5.1.1", [str(r) for r in replies]
        c.send(b"Subject: order\r\n\r\nx\r\n.\r\n")
        assert c.reply().code == 250
    (m,) = capture.wait_for(1)
    assert m.rcpt_tos == ["first@example.org", "last@example.net"]


def test_corpus_messages_with_bare_cr_rejected(mailkeep, capture, corpus):
    """Real spam with stray CR characters is refused with 554 5.6.0, not relayed."""
    from harness import CORPUS_DIR, normalize_message, is_clean
    bad = []
    for p in sorted((CORPUS_DIR / "spam-2").glob("*.txt")):
        msg = normalize_message(p.read_bytes())
        if not is_clean(msg):
            bad.append((p.name, msg))
    if not bad:
        pytest.skip("no corpus message with a bare CR")
    with RawSMTP(mailkeep.host, mailkeep.port, timeout=30) as c:
        c.ehlo()
        for name, msg in bad:
            assert c.cmd("MAIL FROM:<spam@client.test>").code == 250
            assert c.cmd(f"RCPT TO:<{RCPT}>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(dot_stuff(msg) + b".\r\n")
            r = c.reply()
            assert r.code == 554 and r.enhanced == "5.6.0", (name, str(r))
    time.sleep(0.3)
    assert capture.messages == []


def test_corpus_messages_with_lf_endings_rejected(mailkeep, capture, corpus):
    """The corpus files as stored (bare LF line ends) are refused, never relayed."""
    from harness import CORPUS_DIR
    paths = sorted((CORPUS_DIR / "easy-ham-1").glob("*.txt"))[:3]
    with RawSMTP(mailkeep.host, mailkeep.port, timeout=30) as c:
        c.ehlo()
        for p in paths:
            raw = p.read_bytes().split(b"\n", 1)[1]
            assert c.cmd("MAIL FROM:<lf@client.test>").code == 250
            assert c.cmd(f"RCPT TO:<{RCPT}>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(raw.replace(b"\n.", b"\n..") + b"\r\n.\r\n")
            r = c.reply()
            assert r.code == 554 and r.enhanced == "5.6.0", (p.name, str(r))
    time.sleep(0.3)
    assert capture.messages == []
