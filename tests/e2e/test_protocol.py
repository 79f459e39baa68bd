"""Basic SMTP dialogue: banner, EHLO keywords, VRFY/HELP/NOOP/RSET/QUIT, idle timeout."""

import socket
import time

from harness import ConnectionClosed, RawSMTP


def connect(mk, **kw) -> RawSMTP:
    return RawSMTP(mk.host, mk.port, **kw)


def test_banner(mailkeep):
    with connect(mailkeep) as c:
        assert c.banner.code == 220
        assert c.banner.lines[0].startswith("mx.test.example ESMTP mailkeep"), str(c.banner)


def test_ehlo_keywords(mailkeep):
    with connect(mailkeep) as c:
        r = c.ehlo("client.test")
        assert r.code == 250
        keywords = {line.split()[0].upper(): line for line in r.lines[1:]}
        for kw in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "SIZE"):
            assert kw in keywords, f"{kw} not advertised: {r}"
        assert keywords["SIZE"].split()[1] == str(10 * 1024 * 1024), r
        assert r.lines[0].startswith("mx.test.example"), r


def test_helo(mailkeep):
    with connect(mailkeep) as c:
        assert c.cmd("HELO client.test").code == 250


def test_simple_commands(mailkeep):
    with connect(mailkeep) as c:
        c.ehlo()
        assert c.cmd("NOOP").code == 250
        assert c.cmd("VRFY postmaster").code == 252
        assert c.cmd("HELP").code == 214
        assert c.cmd("RSET").code == 250
        r = c.cmd("QUIT")
        assert r.code == 221
        # the server closes the connection after QUIT
        c.sock.settimeout(5)
        assert c.sock.recv(100) == b""


def test_unknown_command(mailkeep):
    with connect(mailkeep) as c:
        c.ehlo()
        r = c.cmd("FROBNICATE now")
        assert r.code == 500
        assert c.cmd("NOOP").code == 250


def test_bad_sequence(mailkeep):
    with connect(mailkeep) as c:
        c.ehlo()
        assert c.cmd("RCPT TO:<user@example.org>").code == 503   # no MAIL yet
        assert c.cmd("DATA").code == 503                          # no RCPT yet
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        assert c.cmd("MAIL FROM:<a@client.test>").code == 503     # nested MAIL
        assert c.cmd("DATA").code in (503, 554)                    # still no recipient


def test_mail_syntax_error(mailkeep):
    with connect(mailkeep) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:missing-brackets-and-@")
        assert r.code in (501, 553), r
        assert c.cmd("MAIL FROM:<>").code == 250                   # null sender is valid


def test_rset_clears_transaction(mailkeep, capture):
    with connect(mailkeep) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        assert c.cmd("RCPT TO:<first@example.org>").code == 250
        assert c.cmd("RSET").code == 250
        assert c.cmd("DATA").code == 503
        r = c.send_message("b@client.test", ["second@example.org"], b"Subject: x\r\n\r\nbody\r\n")
        assert r.code == 250, r
    msgs = capture.wait_for(1)
    assert len(msgs) == 1
    assert msgs[0].rcpt_tos == ["second@example.org"]
    assert msgs[0].mail_from == "b@client.test"


def test_idle_timeout_closes_connection(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"timeout": 2})
    with connect(mk) as c:
        c.ehlo()
        start = time.monotonic()
        c.sock.settimeout(10)
        data = b""
        try:
            while True:
                chunk = c.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ConnectionClosed):
            raise AssertionError("idle connection was not closed within 10s (timeout = 2)")
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - start
        assert 1.0 <= elapsed < 8, elapsed
        if data:
            assert data.startswith(b"421"), data


def test_commands_case_insensitive(mailkeep, capture):
    with connect(mailkeep) as c:
        assert c.cmd("ehlo client.test").code == 250
        assert c.cmd("mail from:<lower@client.test>").code == 250
        assert c.cmd("rcpt to:<user@example.org>").code == 250
        assert c.cmd("data").code == 354
        c.send(b"Subject: lower\r\n\r\nx\r\n.\r\n")
        assert c.reply().code == 250
    assert capture.wait_for(1)[0].mail_from == "lower@client.test"


def test_ehlo_resets_transaction(mailkeep, capture):
    with connect(mailkeep) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("EHLO client.test").code == 250
        assert c.cmd("DATA").code == 503
