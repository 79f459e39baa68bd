"""STARTTLS on mailkeep's SMTP server ([tls] cert/key, [smtp] require_tls).

swaks and `openssl s_client -starttls smtp` deliver over TLS; the Received header says
ESMTPS and names the cipher; STARTTLS pipelining injection (CVE-2011-0411) is not
executed; the session is reset after the handshake; STARTTLS twice / without [tls];
require_tls; TLS < 1.2 refused.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import subprocess
import time

import pytest

from harness import RawSMTP
from tls_support import client_context, received_header, shared_pki, starttls

MSG = b"From: a@client.test\r\nTo: user@example.org\r\nSubject: tls test\r\n\r\nover TLS\r\n"
RECEIVED_TLS = re.compile(
    r"\(using (TLSv1\.[23]) with cipher ([A-Z0-9_-]+) \((\d+)/(\d+) bits\)\)"
    r".* with ESMTPS id ")


@pytest.fixture(scope="module")
def pki():
    return shared_pki()


@pytest.fixture
def tls_mailkeep(start_mailkeep, capture, pki):
    return start_mailkeep(capture.address, tls={"cert": pki.server.cert, "key": pki.server.key})


def open_tls(mk, pki, ehlo_first: bool = True):
    """Connect, EHLO, STARTTLS, handshake (verifying mx.test against the CA), EHLO again."""
    c = RawSMTP(mk.host, mk.port, timeout=15)
    assert c.banner.code == 220
    r = c.ehlo()
    assert r.code == 250 and "STARTTLS" in r.lines, f"STARTTLS not advertised: {r}"
    r = c.cmd("STARTTLS")
    assert (r.code, r.enhanced) == (220, "2.0.0"), str(r)
    t = starttls(c, client_context(pki.ca))
    if ehlo_first:
        r = t.cmd("EHLO client.test")
        assert r.code == 250, str(r)
        assert "STARTTLS" not in r.lines, f"STARTTLS advertised again inside TLS: {r}"
    return t


def wait_log(mk, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = mk.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"log line {text!r} not found:\n{mk.log()[-3000:]}")


# --------------------------------------------------------------------------- delivery

def test_python_ssl_delivery_received_esmtps(tls_mailkeep, capture, pki):
    with open_tls(tls_mailkeep, pki) as t:
        assert t.sock.version() in ("TLSv1.2", "TLSv1.3")
        peer = t.sock.getpeercert()
        assert ("DNS", "mx.test") in peer["subjectAltName"]
        assert t.cmd("MAIL FROM:<a@client.test>").code == 250
        assert t.cmd("RCPT TO:<user@example.org>").code == 250
        assert t.cmd("DATA").code == 354
        t.send(MSG + b".\r\n")
        r = t.reply()
        assert r.code == 250, str(r)
        cipher = t.sock.cipher()
        t.cmd("QUIT")
    (msg,) = capture.wait_for(1)
    assert msg.data.endswith(MSG)
    rec = received_header(msg.data)
    m = RECEIVED_TLS.search(rec)
    assert m, f"Received header lacks ESMTPS/cipher: {rec}"
    assert m.group(1) == cipher[1] and m.group(2) == cipher[0], (rec, cipher)
    assert int(m.group(3)) == cipher[2] == int(m.group(4))
    log = tls_mailkeep.log()
    assert "TLS established" in log


def test_swaks_tls(tls_mailkeep, capture, pki):
    res = subprocess.run(
        ["swaks", "--server", tls_mailkeep.host, "--port", str(tls_mailkeep.port),
         "--tls", "--tls-verify", "--tls-ca-path", str(pki.ca.cert), "--tls-sni", "mx.test",
         "--helo", "swaks.client.test", "--from", "a@client.test", "--to", "user@example.org",
         "--header", "Subject: swaks tls", "--body", "swaks over tls",
         "--timeout", "15"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "TLS started" in out, out
    assert re.search(r"<~\s+250 ", out), out  # a 250 read inside TLS
    (msg,) = capture.wait_for(1)
    assert msg.rcpt_tos == ["user@example.org"]
    rec = received_header(msg.data)
    assert "from swaks.client.test" in rec
    assert RECEIVED_TLS.search(rec), rec
    assert b"swaks over tls" in msg.data


class SClient:
    """`openssl s_client -starttls smtp` driven line by line."""

    def __init__(self, mk, pki, extra: list[str] = ()):
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-starttls", "smtp", "-connect", f"{mk.host}:{mk.port}",
             "-CAfile", str(pki.ca.cert), "-verify_return_error", "-verify_hostname", "mx.test",
             "-servername", "mx.test", "-crlf", "-quiet", "-ign_eof", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""

    def reply(self, timeout: float = 10.0) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                    raise TimeoutError(f"no reply from s_client; have {lines} {self.buf!r}")
                chunk = self.proc.stdout.read1(65536)
                if not chunk:
                    raise EOFError(f"s_client ended: {self.proc.stderr.read().decode(errors='replace')}")
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\n")
            line = line.rstrip(b"\r").decode(errors="replace")
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line: str) -> tuple[int, str]:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def test_openssl_s_client_starttls(tls_mailkeep, capture, pki):
    s = SClient(tls_mailkeep, pki)
    try:
        # s_client has done EHLO + STARTTLS itself; the first thing inside TLS is ours.
        code, text = s.cmd("EHLO sclient.test")
        assert code == 250 and "STARTTLS" not in text, text
        assert s.cmd("MAIL FROM:<s@client.test>")[0] == 250
        assert s.cmd("RCPT TO:<user@example.org>")[0] == 250
        assert s.cmd("DATA")[0] == 354
        s.proc.stdin.write(MSG.replace(b"\r\n", b"\n") + b".\n")
        s.proc.stdin.flush()
        code, text = s.reply()
        assert code == 250, text
        assert s.cmd("QUIT")[0] == 221
    finally:
        s.close()
    err = s.proc.stderr.read().decode(errors="replace")
    assert "verify error" not in err, err
    (msg,) = capture.wait_for(1)
    assert msg.mail_from == "s@client.test"
    assert msg.data.endswith(MSG)
    assert RECEIVED_TLS.search(received_header(msg.data)), received_header(msg.data)


@pytest.mark.parametrize("version_args", [["-tls1_1"], ["-tls1"]], ids=["tls1.1", "tls1.0"])
def test_old_tls_versions_refused(tls_mailkeep, pki, version_args):
    res = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect",
         f"{tls_mailkeep.host}:{tls_mailkeep.port}", "-cipher", "DEFAULT:@SECLEVEL=0",
         *version_args],
        input=b"QUIT\n", capture_output=True, timeout=30)
    out = (res.stdout + res.stderr).decode(errors="replace")
    # s_client prints "Protocol: TLSv1.x" even for a failed handshake: the cipher tells.
    assert "Cipher is (NONE)" in out and "protocol version" in out, out
    assert not re.search(r"Cipher is (?!\(NONE\))", out), out
    wait_log(tls_mailkeep, "TLS handshake with [127.0.0.1] failed")
    with RawSMTP(tls_mailkeep.host, tls_mailkeep.port) as c:
        assert c.ehlo().code == 250


def test_tls12_accepted(tls_mailkeep, pki):
    ctx = client_context(pki.ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    c = RawSMTP(tls_mailkeep.host, tls_mailkeep.port)
    c.ehlo()
    assert c.cmd("STARTTLS").code == 220
    with starttls(c, ctx) as t:
        assert t.sock.version() == "TLSv1.2"
        assert t.cmd("EHLO x").code == 250


# --------------------------------------------------------------------------- protocol rules

def test_starttls_not_advertised_or_accepted_without_tls_config(mailkeep):
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        r = c.ehlo()
        assert "STARTTLS" not in r.lines, str(r)
        r = c.cmd("STARTTLS")
        assert (r.code, r.enhanced) == (502, "5.5.1"), str(r)
        assert c.cmd("NOOP").code == 250


def test_starttls_twice(tls_mailkeep, pki):
    with open_tls(tls_mailkeep, pki) as t:
        r = t.cmd("STARTTLS")
        assert (r.code, r.enhanced) == (503, "5.5.1"), str(r)
        assert t.cmd("NOOP").code == 250   # still inside the same TLS session


def test_starttls_with_argument_rejected(tls_mailkeep):
    with RawSMTP(tls_mailkeep.host, tls_mailkeep.port) as c:
        c.ehlo()
        r = c.cmd("STARTTLS now")
        assert r.code == 501, str(r)
        assert c.cmd("NOOP").code == 250


def test_session_reset_after_starttls(tls_mailkeep, capture, pki):
    c = RawSMTP(tls_mailkeep.host, tls_mailkeep.port)
    c.ehlo("before.tls")
    assert c.cmd("MAIL FROM:<pre-tls@client.test>").code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250
    assert c.cmd("STARTTLS").code == 220
    with starttls(c, client_context(pki.ca)) as t:
        # RFC 3207 4.2: all knowledge from before TLS is discarded, including EHLO.
        r = t.cmd("MAIL FROM:<post-tls@client.test>")
        assert (r.code, r.enhanced) == (503, "5.5.1"), f"MAIL without EHLO after TLS: {r}"
        assert t.cmd("EHLO after.tls").code == 250
        r = t.cmd("RCPT TO:<user@example.org>")
        assert r.code == 503, f"transaction from before TLS survived: {r}"
        r = t.cmd("DATA")
        assert r.code == 503, str(r)
        assert t.cmd("MAIL FROM:<post-tls@client.test>").code == 250
        assert t.cmd("RCPT TO:<user@example.org>").code == 250
        assert t.cmd("DATA").code == 354
        t.send(MSG + b".\r\n")
        assert t.reply().code == 250
    (msg,) = capture.wait_for(1)
    assert msg.mail_from == "post-tls@client.test"
    rec = received_header(msg.data)
    assert "from after.tls" in rec and "before.tls" not in rec, rec
    # (mailkeep opens the upstream transaction at MAIL time, so the upstream may have
    # seen MAIL FROM:<pre-tls@...>; what matters is that nothing was delivered for it.)
    time.sleep(0.3)
    assert len(capture.messages) == 1


INJECTIONS = {
    # name: bytes sent in the SAME write as STARTTLS, then the expectation inside TLS
    "rset": b"RSET\r\n",
    "mail": b"MAIL FROM:<evil@attacker.test>\r\n",
    "ehlo-mail-rcpt": b"EHLO evil.test\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.org>\r\n",
    "noop-no-crlf": b"NOOP",
}


@pytest.mark.parametrize("injected", list(INJECTIONS.values()), ids=list(INJECTIONS))
def test_starttls_pipelining_injection_discarded(tls_mailkeep, capture, pki, injected):
    c = RawSMTP(tls_mailkeep.host, tls_mailkeep.port)
    c.ehlo()
    c.send(b"STARTTLS\r\n" + injected)
    r = c.reply()
    assert (r.code, r.enhanced) == (220, "2.0.0"), str(r)
    # No reply to the injected commands may arrive in plaintext either.
    time.sleep(0.3)
    early = b""
    if select.select([c.sock], [], [], 0)[0]:
        early = c.sock.recv(4096, socket.MSG_PEEK)
    assert early == b"", f"plaintext after 220: {early!r}"
    with starttls(c, client_context(pki.ca)) as t:
        # Had the injected bytes been kept, their replies (or their effect) would show
        # up here: the first reply must be the one to this RCPT, and it must be 503.
        r = t.cmd("RCPT TO:<user@example.org>")
        assert (r.code, r.enhanced) == (503, "5.5.1"), f"injected command executed? first reply in TLS: {r}"
        assert t.cmd("EHLO client.test").code == 250
        r = t.cmd("RCPT TO:<user@example.org>")
        assert r.code == 503, f"injected MAIL survived the handshake: {r}"
        assert t.cmd("NOOP").code == 250
        assert t.cmd("MAIL FROM:<good@client.test>").code == 250
        assert t.cmd("RCPT TO:<user@example.org>").code == 250
        assert t.cmd("DATA").code == 354
        t.send(MSG + b".\r\n")
        assert t.reply().code == 250
    (msg,) = capture.wait_for(1)
    assert msg.mail_from == "good@client.test" and msg.rcpt_tos == ["user@example.org"]
    assert "evil@attacker.test" not in capture.mail_log
    assert "victim@example.org" not in capture.rcpt_log
    wait_log(tls_mailkeep, f"discarding {len(injected)} bytes pipelined after STARTTLS")


def test_starttls_split_across_segments_is_not_injection(tls_mailkeep, pki):
    """EHLO pipelined before STARTTLS (STARTTLS last in the group, RFC 2920) is fine."""
    c = RawSMTP(tls_mailkeep.host, tls_mailkeep.port)
    c.send(b"EHLO client.test\r\nSTARTTLS\r\n")
    assert c.reply().code == 250
    assert c.reply().code == 220
    with starttls(c, client_context(pki.ca)) as t:
        assert t.cmd("EHLO client.test").code == 250
    assert "discarding" not in tls_mailkeep.log()


# --------------------------------------------------------------------------- require_tls

def test_require_tls(start_mailkeep, capture, pki):
    mk = start_mailkeep(capture.address, smtp={"require_tls": "true"},
                        tls={"cert": pki.server.cert, "key": pki.server.key})
    with RawSMTP(mk.host, mk.port) as c:
        assert c.ehlo().code == 250
        for cmd in ("MAIL FROM:<a@client.test>", "RCPT TO:<user@example.org>", "DATA",
                    "VRFY user", "EXPN list"):
            r = c.cmd(cmd)
            assert (r.code, r.enhanced) == (530, "5.7.0"), f"{cmd}: {r}"
        for cmd in ("NOOP", "RSET", "HELP"):
            assert c.cmd(cmd).code in (214, 250), cmd
        assert c.cmd("STARTTLS").code == 220
        with starttls(c, client_context(pki.ca)) as t:
            assert t.cmd("EHLO client.test").code == 250
            assert t.cmd("MAIL FROM:<a@client.test>").code == 250
            assert t.cmd("RCPT TO:<user@example.org>").code == 250
            assert t.cmd("DATA").code == 354
            t.send(MSG + b".\r\n")
            assert t.reply().code == 250
    (msg,) = capture.wait_for(1)
    assert RECEIVED_TLS.search(received_header(msg.data))
    assert capture.mail_log == ["a@client.test"]
