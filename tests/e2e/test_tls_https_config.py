"""HTTPS on the HTTP listener ([http] cert/key) and check-config errors for the TLS keys."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from harness import Mailkeep, RawSMTP, default_config, free_port, render_ini, run_mailkeep
from tls_support import client_context, shared_pki


@pytest.fixture(scope="module")
def pki():
    return shared_pki()


def http_get(port: int, ctx: ssl.SSLContext | None, server_hostname: str = "mx.test",
             path: str = "/") -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname=server_hostname) if ctx else raw
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: mx.test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
        return data


def assert_alive(mk):
    time.sleep(0.2)     # a crash right after the response: let the exit be reaped
    code = mk.proc.poll()
    assert code is None, f"mailkeep died (exit {code}; negative = signal)\n{mk.log()[-2000:]}"


def test_https_listener_serves_index(start_mailkeep, capture, pki):
    hport = free_port()
    mk = start_mailkeep(capture.address, http={"listen": f"127.0.0.1:{hport}",
                                               "cert": pki.server.cert, "key": pki.server.key})
    ctx = client_context(pki.ca)
    raw = socket.create_connection(("127.0.0.1", hport), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="mx.test") as s:
        assert ("DNS", "mx.test") in s.getpeercert()["subjectAltName"]
        assert s.version() in ("TLSv1.2", "TLSv1.3")
    # Plain HTTP to the TLS port must not get the page.
    plain = http_get(hport, None)
    assert not plain.startswith(b"HTTP/1.1 200") and b"<html" not in plain.lower(), plain[:300]
    assert_alive(mk)
    resp = http_get(hport, ctx)
    assert_alive(mk)
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), resp[:500]
    assert b"<html" in body.lower() or b"<!doctype" in body.lower(), body[:300]
    # ...and the listener still works afterwards.
    assert http_get(hport, ctx).startswith(b"HTTP/1.1 200")
    assert_alive(mk)


def test_https_wrong_ca_fails_verification(start_mailkeep, capture, pki):
    hport = free_port()
    mk = start_mailkeep(capture.address, http={"listen": f"127.0.0.1:{hport}",
                                               "cert": pki.wrong.cert, "key": pki.wrong.key})
    with pytest.raises(ssl.SSLCertVerificationError):
        http_get(hport, client_context(pki.ca), server_hostname="upstream.test")
    # With no verification the page is served (the cert is simply one we don't trust).
    resp = http_get(hport, client_context(None))
    assert_alive(mk)
    assert resp.startswith(b"HTTP/1.1 200"), resp[:300]


def test_plain_http_without_cert(start_mailkeep, capture):
    hport = free_port()
    mk = start_mailkeep(capture.address, http={"listen": f"127.0.0.1:{hport}"})
    resp = http_get(hport, None)
    assert_alive(mk)
    assert resp.startswith(b"HTTP/1.1 200"), resp[:300]


# --------------------------------------------------------------------------- check-config

def check_config(tmp_path, **overrides):
    cfg = default_config(free_port(), "127.0.0.1:25", **overrides)
    path = tmp_path / "c.ini"
    path.write_text(render_ini(cfg))
    return run_mailkeep("check-config", "-c", str(path))


@pytest.mark.parametrize("overrides,needle", [
    ({"tls": {"cert": "CERT"}}, "[tls]"),
    ({"tls": {"key": "KEY"}}, "[tls]"),
    ({"smtp": {"require_tls": "true"}}, "require_tls"),
    ({"http": {"listen": "127.0.0.1:1", "cert": "CERT"}}, "[http]"),
    ({"http": {"listen": "127.0.0.1:1", "key": "KEY"}}, "[http]"),
    ({"delivery": {"tls": "sometimes"}}, "[delivery] tls"),
], ids=["tls-cert-only", "tls-key-only", "require-tls-without-cert", "http-cert-only",
        "http-key-only", "delivery-tls-bad-value"])
def test_check_config_tls_errors(mailkeep_bin, tmp_path, pki, overrides, needle):
    for section in overrides.values():
        for k, v in section.items():
            section[k] = {"CERT": pki.server.cert, "KEY": pki.server.key}.get(v, v)
    res = check_config(tmp_path, **overrides)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert needle in out, out


def test_check_config_tls_ok(mailkeep_bin, tmp_path, pki):
    res = check_config(tmp_path, tls={"cert": pki.server.cert, "key": pki.server.key},
                       smtp={"require_tls": "true"},
                       delivery={"tls": "required", "ca_file": pki.ca.cert, "tls_name": "upstream.test"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"cert = {pki.server.cert}" in res.stdout


def test_serve_fails_with_unusable_cert(mailkeep_bin, tmp_path, pki):
    """A key that does not match the certificate is a startup error, not a silent no-TLS."""
    cfg = default_config(free_port(), "127.0.0.1:25",
                         tls={"cert": pki.server.cert, "key": pki.upstream.key})
    mk = Mailkeep(tmp_path / "mk", cfg)
    try:
        mk.start(timeout=10)
    except RuntimeError:
        assert mk.proc.returncode not in (None, 0)
        return
    mk.stop()
    pytest.fail(f"mailkeep started with a mismatched key:\n{mk.log()}")
