"""SMTP smuggling: bare LF / bare CR / NUL in DATA are rejected with 554 5.6.0 after the
real <CRLF>.<CRLF>; nothing reaches the upstream and smuggled commands are never executed."""

import time

import pytest

from harness import RawSMTP

SMUGGLED_RCPT = "smuggled-victim@example.org"
SMUGGLED_FROM = "smuggled-sender@bank.test"
SMUGGLED = (f"MAIL FROM:<{SMUGGLED_FROM}>{{eol}}RCPT TO:<{SMUGGLED_RCPT}>{{eol}}DATA{{eol}}"
            f"From: ceo@bank.test{{eol}}Subject: smuggled{{eol}}{{eol}}wire money{{eol}}")

HEAD = b"From: a@client.test\r\nTo: user@example.org\r\nSubject: innocent\r\n\r\nhello\r\n"


def smuggle(fake_end: bytes, eol: bytes = b"\r\n") -> bytes:
    """Message content: a fake end-of-data `fake_end`, then commands, then more text."""
    cmds = SMUGGLED.format(eol=eol.decode("latin-1")).encode("latin-1")
    return HEAD.rstrip(b"\r\n") + fake_end + cmds + b"tail\r\n"


CASES = {
    # name: content sent between 354 and the real CRLF.CRLF
    "lf-dot-lf": smuggle(b"\n.\n", b"\n"),
    "lf-dot-crlf": smuggle(b"\n.\r\n"),
    "crlf-dot-lf": smuggle(b"\r\n.\n", b"\n"),
    "cr-dot-cr": smuggle(b"\r.\r", b"\r"),
    "cr-dot-crlf": smuggle(b"\r.\r\n"),
    "crlf-dot-cr": smuggle(b"\r\n.\r", b"\r"),
    "cr-lf-dot-lf-mixed": smuggle(b"\r\n.\n", b"\r\n"),
    "nul-before-dot": smuggle(b"\r\n\x00.\r\n"),
    "bare-lf-only": HEAD + b"line one\nline two\r\n",
    "bare-cr-only": HEAD + b"line one\rline two\r\n",
    "nul-only": HEAD + b"before\x00after\r\n",
    "bare-lf-in-header": b"Subject: x\nX-Evil: y\r\n\r\nbody\r\n",
    "lf-lf-terminating-pair": HEAD + b"text\n\n",
}


def run_case(mk, content: bytes):
    with RawSMTP(mk.host, mk.port, timeout=20) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        # Everything in one write, followed by the real end of data and a NOOP.
        # If the server ended DATA early, extra replies (250 for MAIL/RCPT, 354...) would
        # arrive before the final one and the NOOP reply would be out of step.
        c.send(content + b"\r\n.\r\nNOOP\r\n")
        final = c.reply()
        noop = c.reply()
        rset = c.cmd("RSET")
        return final, noop, rset


@pytest.mark.parametrize("content", list(CASES.values()), ids=list(CASES.keys()))
def test_smuggling_rejected(mailkeep, capture, content):
    final, noop, rset = run_case(mailkeep, content)
    assert final.code == 554 and final.enhanced == "5.6.0", f"end of data reply: {final}"
    assert noop.code == 250, f"session out of step after DATA (smuggled commands executed?): {noop}"
    assert rset.code == 250
    time.sleep(0.5)
    assert capture.messages == [], "a message reached the upstream"
    assert capture.handler.data_attempts == 0
    assert SMUGGLED_RCPT not in capture.rcpt_log, "smuggled RCPT was executed"
    assert SMUGGLED_FROM not in capture.mail_log, "smuggled MAIL was executed"


def test_session_usable_after_smuggling_attempt(mailkeep, capture):
    run_case(mailkeep, CASES["lf-dot-lf"])
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        r = c.send_message("clean@client.test", ["user@example.org"], HEAD)
        assert r.code == 250
    (msg,) = capture.wait_for(1)
    assert msg.mail_from == "clean@client.test"
    assert msg.data.endswith(HEAD)


def test_dot_inside_line_is_data(mailkeep, capture):
    """'.' not at line start, and '..' stuffing, are ordinary data; only CRLF.CRLF ends DATA."""
    content = b"Subject: dots\r\n\r\na.b\r\n..\r\n...x\r\n. \r\n"
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(content + b".\r\n")
        assert c.reply().code == 250
    (msg,) = capture.wait_for(1)
    assert msg.data.endswith(b"Subject: dots\r\n\r\na.b\r\n.\r\n..x\r\n \r\n")
