"""Hostile clients that do not fit a transcript: byte-exact relay of over-long DATA lines,
broken TLS handshakes after STARTTLS, TLS spoken to the plaintext port, and memory while a
huge DATA line streams in."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from harness import RawSMTP, split_received
from test_hostile_scripts import assert_still_serving
from tls_support import client_context, shared_pki


@pytest.fixture(scope="module")
def pki():
    return shared_pki()


def test_overlong_data_lines_relayed_exactly(mailkeep, capture):
    body = (b"Subject: long lines\r\n\r\n" + b"x" * 5000 + b"\r\nshort\r\n" + b"y" * 200_000 +
            b"\r\n" + b"z" * 999 + b"\r\n")
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.send_message("long@client.test", ["user@example.org"], body).code == 250
    (msg,) = capture.wait_for(1)
    assert split_received(msg.data)[1] == body


def test_huge_data_line_memory_bounded(start_mailkeep, capture):
    """9 lines of 1 MB (under max_message_size; the capture accepts lines up to 1 MiB):
    relayed exactly, RSS growth stays bounded."""
    mk = start_mailkeep(capture.address)
    with RawSMTP(mk.host, mk.port, timeout=60) as c:
        c.ehlo()
        rss0 = mk.proc_status("VmRSS")
        body = b"Subject: huge line\r\n\r\n" + (b"h" * 1_000_000 + b"\r\n") * 9
        r = c.send_message("huge@client.test", ["user@example.org"], body)
        assert r.code == 250, str(r)
    (msg,) = capture.wait_for(1, timeout=30)
    assert split_received(msg.data)[1] == body
    time.sleep(0.5)
    grown = mk.proc_status("VmRSS") - rss0
    assert grown < 40 * 1024, f"VmRSS grew by {grown} kB for a 9 MB message"
    assert_still_serving(mk, capture)


def tls_mailkeep(start_mailkeep, capture, pki, **smtp):
    return start_mailkeep(capture.address, tls={"cert": pki.server.cert, "key": pki.server.key},
                          smtp={"timeout": 3, **smtp})


def read_until_close(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    start = time.monotonic()
    data = b""
    sock.settimeout(limit)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"connection still open after {limit}s; got {data[:300]!r}")
    return data, time.monotonic() - start


def test_garbage_instead_of_tls_handshake(start_mailkeep, capture, pki):
    mk = tls_mailkeep(start_mailkeep, capture, pki)
    c = RawSMTP(mk.host, mk.port)
    c.ehlo()
    assert c.cmd("STARTTLS").code == 220
    c.send(b"MAIL FROM:<plain@evil.test>\r\nRCPT TO:<victim@example.org>\r\n")
    data, _ = read_until_close(c.sock, 10)
    # Whatever the server sends now is TLS (an alert) or nothing, never an SMTP reply.
    assert not data.startswith((b"250", b"5", b"4")), data[:200]
    c.close()
    assert "plain@evil.test" not in capture.mail_log
    assert_still_serving(mk, capture)


def test_starttls_then_silence_is_bounded(start_mailkeep, capture, pki):
    """No ClientHello after 220: the handshake is bounded by [smtp] timeout."""
    mk = tls_mailkeep(start_mailkeep, capture, pki)
    c = RawSMTP(mk.host, mk.port)
    c.ehlo()
    assert c.cmd("STARTTLS").code == 220
    _, took = read_until_close(c.sock, 15)
    assert took < 8, f"handshake wait took {took:.1f}s with timeout = 3"
    c.close()
    assert_still_serving(mk, capture)


def test_tls_to_plaintext_port(start_mailkeep, capture, pki):
    """A client that starts TLS right away (SMTPS) on the STARTTLS port: the ClientHello is
    treated as (bad) commands, the session ends, nothing breaks."""
    mk = tls_mailkeep(start_mailkeep, capture, pki)
    raw = socket.create_connection((mk.host, mk.port), timeout=10)
    ctx = client_context(pki.ca)
    with pytest.raises((ssl.SSLError, OSError)):
        with ctx.wrap_socket(raw, server_hostname="mx.test"):
            pass
    raw.close()
    assert_still_serving(mk, capture)


def test_handshake_with_wrong_sni_and_no_verification_still_gets_cert(start_mailkeep, capture, pki):
    """mailkeep has one certificate: any SNI gets it (no crash on unknown names)."""
    mk = tls_mailkeep(start_mailkeep, capture, pki)
    c = RawSMTP(mk.host, mk.port)
    c.ehlo()
    assert c.cmd("STARTTLS").code == 220
    with client_context(None).wrap_socket(c.sock, server_hostname="unknown.invalid") as s:
        assert s.getpeercert(binary_form=True) == pki.server.der()
    assert_still_serving(mk, capture)
