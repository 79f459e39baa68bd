"""STARTTLS from mailkeep to the upstream ([delivery] tls / ca_file / tls_name).

opportunistic: TLS when offered (encrypted at the capture), plaintext upstream still
delivered, a failed handshake retried in plaintext; required: verified TLS only, anything
else → 451 4.4.1 to the client with nothing delivered or acknowledged; off: never TLS.
"""

from __future__ import annotations

import re
import time

import pytest

from harness import RawSMTP
from tls_support import TLSCapture, PlainCapture, server_context, shared_pki

MSG = b"From: a@client.test\r\nTo: user@example.org\r\nSubject: upstream tls\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def pki():
    return shared_pki()


@pytest.fixture
def upstreams():
    started = []

    def make(*args, **kwargs) -> TLSCapture:
        cap = TLSCapture(*args, **kwargs).start()
        started.append(cap)
        return cap

    yield make
    for cap in started:
        cap.stop()


def transaction(mk, rcpt: str = "user@example.org"):
    """One transaction; returns the list of replies from MAIL on (stops at the first failure)."""
    replies = []
    with RawSMTP(mk.host, mk.port, timeout=30) as c:
        c.ehlo()
        for cmd, ok in (("MAIL FROM:<a@client.test>", 250), (f"RCPT TO:<{rcpt}>", 250), ("DATA", 354)):
            r = c.cmd(cmd)
            replies.append(r)
            if r.code != ok:
                return replies
        c.send(MSG + b".\r\n")
        replies.append(c.reply())
        c.cmd("QUIT")
    return replies


def summary_line(mk, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [l for l in mk.log().splitlines() if "from=<a@client.test>" in l and "status=" in l]
        if lines:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError(f"no summary line:\n{mk.log()}")


def assert_delivered(mk, up: TLSCapture, encrypted: bool):
    replies = transaction(mk)
    assert replies[-1].code == 250, [str(r) for r in replies]
    (msg,) = up.wait_for(1)
    assert msg.data.endswith(MSG)
    (rec,) = up.tls
    assert rec.encrypted is encrypted, rec
    line = summary_line(mk)
    relay = f"relay={up.address} (TLS)" if encrypted else f"relay={up.address}"
    assert re.search(re.escape(relay) + r"(,|\s|$)", line), line
    if encrypted:
        assert rec.version in ("TLSv1.2", "TLSv1.3")
    else:
        assert "(TLS)" not in line, line


def assert_refused(mk, up: TLSCapture):
    """451 4.4.1 somewhere in the transaction, no 250 for the message, nothing upstream."""
    replies = transaction(mk)
    final = replies[-1]
    assert 400 <= final.code < 500, [str(r) for r in replies]
    assert (final.code, final.enhanced) == (451, "4.4.1"), [str(r) for r in replies]
    assert all(r.code in (250, 354) for r in replies[:-1])
    time.sleep(0.5)
    assert up.messages == [], "delivered to an upstream that does not satisfy tls = required"
    assert up.mail_log == [], f"MAIL sent to an unacceptable upstream: {up.mail_log}"
    assert up.handler.data_attempts == 0
    assert "status=sent" not in mk.log()


# --------------------------------------------------------------------------- opportunistic

def test_opportunistic_tls_upstream_is_encrypted(start_mailkeep, upstreams, pki):
    up = upstreams(pki.upstream)
    mk = start_mailkeep(up.address)          # tls = opportunistic is the default
    assert_delivered(mk, up, encrypted=True)
    assert up.handler.starttls_done == 1


def test_opportunistic_self_signed_upstream_still_encrypted(start_mailkeep, upstreams, pki):
    """opportunistic does not verify: an unverifiable cert is better than plaintext."""
    up = upstreams(pki.wrong)
    mk = start_mailkeep(up.address, delivery={"tls": "opportunistic"})
    assert_delivered(mk, up, encrypted=True)


def test_opportunistic_plaintext_upstream_delivered(start_mailkeep, upstreams):
    up = upstreams(None)
    mk = start_mailkeep(up.address, delivery={"tls": "opportunistic"})
    assert_delivered(mk, up, encrypted=False)


def test_opportunistic_failed_handshake_retried_in_plaintext(start_mailkeep, upstreams, pki):
    ctx = server_context(pki.upstream, max_tls12_no_shared_cipher=True)
    up = upstreams(None, context=ctx)
    mk = start_mailkeep(up.address, delivery={"tls": "opportunistic"})
    assert_delivered(mk, up, encrypted=False)
    assert up.handler.starttls_done == 0
    # It did try: the handshake failed and the retry was in plaintext.
    assert "TLS handshake failed" in mk.log() and "retrying without TLS" in mk.log(), mk.log()


# --------------------------------------------------------------------------- required

def test_required_verified_upstream(start_mailkeep, upstreams, pki):
    up = upstreams(pki.upstream)
    mk = start_mailkeep(up.address, delivery={"tls": "required", "ca_file": pki.ca.cert,
                                              "tls_name": "upstream.test"})
    assert_delivered(mk, up, encrypted=True)


def test_required_default_name_is_smarthost_ip(start_mailkeep, upstreams, pki):
    """Without tls_name the cert must match the smarthost as configured: IP:127.0.0.1."""
    up = upstreams(pki.upstream)
    mk = start_mailkeep(up.address, delivery={"tls": "required", "ca_file": pki.ca.cert})
    assert_delivered(mk, up, encrypted=True)


def test_required_plaintext_upstream_refused(start_mailkeep, upstreams, pki):
    up = upstreams(None)
    mk = start_mailkeep(up.address, delivery={"tls": "required", "ca_file": pki.ca.cert})
    assert_refused(mk, up)


def test_required_self_signed_upstream_refused(start_mailkeep, upstreams, pki):
    up = upstreams(pki.wrong)
    mk = start_mailkeep(up.address, delivery={"tls": "required", "ca_file": pki.ca.cert,
                                              "tls_name": "upstream.test"})
    assert_refused(mk, up)


def test_required_wrong_name_refused(start_mailkeep, upstreams, pki):
    up = upstreams(pki.upstream)
    mk = start_mailkeep(up.address, delivery={"tls": "required", "ca_file": pki.ca.cert,
                                              "tls_name": "other.test"})
    assert_refused(mk, up)


def test_required_without_ca_file_refuses_test_ca(start_mailkeep, upstreams, pki):
    """The test CA is not in the system store: without ca_file the cert is unverifiable."""
    up = upstreams(pki.upstream)
    mk = start_mailkeep(up.address, delivery={"tls": "required", "tls_name": "upstream.test"})
    assert_refused(mk, up)


def test_required_failed_handshake_not_retried_in_plaintext(start_mailkeep, upstreams, pki):
    ctx = server_context(pki.upstream, max_tls12_no_shared_cipher=True)
    up = upstreams(None, context=ctx)
    mk = start_mailkeep(up.address, delivery={"tls": "required", "ca_file": pki.ca.cert})
    assert_refused(mk, up)


def test_required_skips_to_next_acceptable_smarthost(start_mailkeep, upstreams, pki):
    plain = upstreams(None)
    good = upstreams(pki.upstream)
    mk = start_mailkeep(f"{plain.address}, {good.address}",
                        delivery={"tls": "required", "ca_file": pki.ca.cert})
    assert_delivered(mk, good, encrypted=True)
    assert plain.messages == [] and plain.mail_log == []


# --------------------------------------------------------------------------- off

def test_off_never_starttls(start_mailkeep, upstreams, pki):
    up = upstreams(pki.upstream)
    mk = start_mailkeep(up.address, delivery={"tls": "off"})
    assert_delivered(mk, up, encrypted=False)
    assert up.handler.starttls_done == 0
