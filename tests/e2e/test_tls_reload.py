"""SIGHUP re-reads the STARTTLS certificate: new sessions get the new one, open sessions
keep working, a broken certificate keeps the old one and logs the failure."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from harness import RawSMTP
from tls_support import CertPair, client_context, shared_pki, starttls

MSG = b"From: a@client.test\r\nTo: user@example.org\r\nSubject: reload\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def pki():
    return shared_pki()


def install(pair: CertPair, cert, key) -> None:
    # Write to a temp name and rename: a reload never sees a half-written file.
    for src, dst in ((pair.cert, cert), (pair.key, key)):
        tmp = dst.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)


def tls_session(mk, pki):
    c = RawSMTP(mk.host, mk.port)
    assert c.ehlo().code == 250
    assert c.cmd("STARTTLS").code == 220
    t = starttls(c, client_context(pki.ca))
    assert t.cmd("EHLO client.test").code == 250
    return t


def presented(mk, pki) -> bytes:
    with tls_session(mk, pki) as t:
        return t.sock.getpeercert(binary_form=True)


def count_log(mk, text: str) -> int:
    return mk.log().count(text)


def hup_and_wait(mk, text: str, before: int, timeout: float = 5.0) -> str:
    mk.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_log(mk, text) > before:
            return mk.log()
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} log line after SIGHUP:\n{mk.log()[-3000:]}")


def send(t, sender: str) -> int:
    assert t.cmd(f"MAIL FROM:<{sender}>").code == 250
    assert t.cmd("RCPT TO:<user@example.org>").code == 250
    assert t.cmd("DATA").code == 354
    t.send(MSG + b".\r\n")
    return t.reply().code


def test_sighup_reload_and_failed_reload(start_mailkeep, capture, pki, tmp_path):
    certdir = tmp_path / "certs"
    certdir.mkdir()
    cert, key = certdir / "cert.pem", certdir / "key.pem"
    install(pki.server, cert, key)
    mk = start_mailkeep(capture.address, tls={"cert": cert, "key": key})

    first = presented(mk, pki)
    assert first == pki.server.der()

    old_session = tls_session(mk, pki)      # stays open across the reload

    new = pki.leaf("server-reloaded", "mx.test reloaded", "DNS:mx.test")
    assert new.serial() != pki.server.serial() and new.subject() != pki.server.subject()
    install(new, cert, key)
    log = hup_and_wait(mk, "SIGHUP: TLS certificate", count_log(mk, "SIGHUP: TLS certificate"))
    assert f"SIGHUP: TLS certificate {cert} reloaded" in log, log
    assert "reload failed" not in log

    assert presented(mk, pki) == new.der(), "new session did not get the reloaded certificate"
    # The session opened before the reload still works (and still has the old cert).
    with old_session as t:
        assert t.sock.getpeercert(binary_form=True) == first
        assert send(t, "old-session@client.test") == 250
        assert t.cmd("QUIT").code == 221

    # A broken certificate file: reload fails, the previous (reloaded) cert stays.
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    before = count_log(mk, "SIGHUP: TLS reload failed")
    hup_and_wait(mk, "SIGHUP: TLS reload failed", before)
    assert mk.proc.poll() is None
    assert presented(mk, pki) == new.der()

    # A key that does not match the certificate: also refused.
    install(pki.upstream, cert, key)
    key.write_bytes(pki.server.key.read_bytes())
    before = count_log(mk, "SIGHUP: TLS reload failed")
    hup_and_wait(mk, "SIGHUP: TLS reload failed", before)
    assert presented(mk, pki) == new.der()

    # Missing files: refused as well.
    cert.unlink()
    before = count_log(mk, "SIGHUP: TLS reload failed")
    hup_and_wait(mk, "SIGHUP: TLS reload failed", before)

    # Everything still serves, over TLS too.
    with tls_session(mk, pki) as t:
        assert send(t, "after@client.test") == 250
    msgs = capture.wait_for(2)
    assert [m.mail_from for m in msgs] == ["old-session@client.test", "after@client.test"]


def test_sighup_without_tls_is_harmless(mailkeep, capture):
    mailkeep.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert mailkeep.proc.poll() is None
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        assert "STARTTLS" not in c.ehlo().lines
        assert c.send_message("a@client.test", ["user@example.org"], MSG).code == 250
    capture.wait_for(1)
