"""OpenDKIM (Debian's opendkim) as a real milter: verifying inbound mail whose key the test
publishes in a dnslib zone (OpenDKIM resolves through libunbound, forwarded to that server),
and signing outbound mail with [milter] outbound = true, checked with dkimpy (python3-dkim)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from backup_support import backup_gateway, make_message, outbound_smtp  # noqa: F401  (fixture)
from dns_support import dns_server  # noqa: F401  (fixture)
from harness import Capture, free_port, wait_port

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
# Release only: the ASan pass repeats the script and hostile milter tests (test_milter.py), which
# take mailkeep's milter code down the same paths; this file is about OpenDKIM's side (conftest.py).
pytestmark = [pytest.mark.skipif(not Path(OPENDKIM).exists(), reason="opendkim is not installed (test.sh installs it)"),
              pytest.mark.release_only]

dkim = pytest.importorskip("dkim")
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

AUTHSERV = "mx.test.example"     # default_config's [smtp] hostname


def make_key(tmp: Path, name: str) -> tuple[Path, bytes, str]:
    """(private key file, PEM bytes, the DNS TXT record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp / f"{name}.private"
    path.write_bytes(pem)
    path.chmod(0o600)
    return path, pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


class OpenDkim:
    def __init__(self, tmp: Path, dns, extra: str, name: str):
        self.port = free_port()
        self.spec = f"inet:127.0.0.1:{self.port}"
        unbound = tmp / f"{name}.unbound.conf"
        unbound.write_text("server:\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n  local-zone: \"test.\" nodefault\n"
                           f"forward-zone:\n  name: \".\"\n  forward-addr: {dns.host}@{dns.port}\n")
        conf = tmp / f"{name}.conf"
        conf.write_text(f"Socket inet:{self.port}@127.0.0.1\nSyslog no\nBackground no\nAuthservID {AUTHSERV}\n"
                        f"ResolverConfiguration {unbound}\nPidFile {tmp / (name + '.pid')}\n"
                        "Canonicalization relaxed/simple\n" + extra)
        self.log = open(tmp / f"{name}.log", "w")
        self.proc = subprocess.Popen([OPENDKIM, "-f", "-x", str(conf)], stdout=self.log, stderr=self.log)
        wait_port("127.0.0.1", self.port, proc=self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def opendkim(tmp_path):
    started = []

    def start(dns, extra: str, name: str = "opendkim"):
        o = OpenDkim(tmp_path, dns, extra, name)
        started.append(o)
        return o
    yield start
    for o in started:
        o.stop()


def warm_up(port: int | str) -> None:
    """OpenDKIM sets up its resolver on its first SMFIC_CONNECT, and two first connections at
    once race there ("can't initialize resolver": a tempfail, OpenDKIM's own bug). One milter
    conversation of our own (negotiate, connect, quit) before mailkeep starts sets it up alone.
    `port`: its TCP port on 127.0.0.1, or the path of its unix socket."""
    import socket
    import struct

    def packet(code: bytes, payload: bytes = b"") -> bytes:
        return struct.pack(">I", len(payload) + 1) + code + payload

    def reply(sock) -> bytes:
        head = b""
        while len(head) < 4:
            head += sock.recv(4 - len(head))
        (n,) = struct.unpack(">I", head)
        body = b""
        while len(body) < n:
            body += sock.recv(n - len(body))
        return body
    if isinstance(port, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(port)
    else:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with sock:
        sock.sendall(packet(b"O", struct.pack(">III", 6, 0x1FF, 0)))
        assert reply(sock)[:1] == b"O"
        sock.sendall(packet(b"C", b"warm.test\0" + b"4" + struct.pack(">H", 25) + b"192.0.2.9\0"))
        assert reply(sock)[:1] in (b"c", b"a"), "OpenDKIM refused the warm-up connection"
        sock.sendall(packet(b"Q"))


def authentication_results(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").replace("\r\n\t", " ").replace("\r\n ", " ")
    return [line for line in head.split("\r\n") if line.lower().startswith("authentication-results:")]


def test_opendkim_verifies_inbound_mail_pass_and_fail(backup_gateway, dns_server, opendkim, tmp_path):  # noqa: F811
    key_path, pem, record = make_key(tmp_path, "sender")
    dns_server.zone("sender.test").txt("sel._domainkey.sender.test", record)
    o = opendkim(dns_server, "Mode v\nInternalHosts 192.0.2.1\n")
    capture = Capture().start()
    try:
        warm_up(o.port)
        gw = backup_gateway(capture.address, milter={"smtp": o.spec, "content_timeout": 20})
        msg = make_message("dkim", sender="news@sender.test", to="alice@example.org")
        signed = dkim.sign(msg, b"sel", b"sender.test", pem,
                           include_headers=[b"from", b"to", b"subject", b"message-id"]) + msg
        # A forged result claiming our authserv-id, from outside: removed before OpenDKIM adds its own.
        forged = b"Authentication-Results: " + AUTHSERV.encode() + b"; dkim=pass header.d=paypal.com\r\n"
        import smtplib
        with smtplib.SMTP(gw.host, gw.port, timeout=60) as s:
            s.sendmail("news@sender.test", ["alice@example.org"], forged + signed)
            tampered = signed[:-3] + (b"X" if signed[-3:-2] != b"X" else b"Y") + signed[-2:]
            s.sendmail("news@sender.test", ["alice@example.org"], tampered)
        good, bad = capture.wait_for(2, timeout=30)
        ar = authentication_results(good.data)
        assert len(ar) == 1 and "dkim=pass" in ar[0] and "header.d=sender.test" in ar[0], ar
        assert "paypal" not in good.data.decode("latin-1")
        ar_bad = authentication_results(bad.data)
        assert len(ar_bad) == 1 and "dkim=fail" in ar_bad[0], ar_bad
        # The archive copies carry the same result, byte for byte the relayed message.
        copies = sorted((p.read_bytes() for p in gw.delivered("alice")), key=len)
        assert any(c.endswith(good.data) for c in copies) and any(c.endswith(bad.data) for c in copies)
    finally:
        capture.stop()


def test_opendkim_signs_outbound_mail_and_the_signature_verifies(backup_gateway, dns_server, opendkim, tmp_path):  # noqa: F811
    key_path, pem, record = make_key(tmp_path, "ours")
    dns_server.zone("example.org").txt("mk._domainkey.example.org", record)
    o = opendkim(dns_server, f"Mode s\nDomain example.org\nSelector mk\nKeyFile {key_path}\n"
                             "InternalHosts 127.0.0.7\nRequireSafeKeys false\n", name="signer")
    capture = Capture().start()
    try:
        warm_up(o.port)
        gw = backup_gateway(capture.address, milter={"smtp": o.spec, "outbound": "true", "content_timeout": 20})
        msg = make_message("signed", sender="alice@example.org", to="friend@elsewhere.test")
        with outbound_smtp(gw) as s:
            s.sendmail("alice@example.org", ["friend@elsewhere.test"], msg)
        m = capture.wait_for(1, timeout=30)[0]
        assert b"DKIM-Signature:" in m.data, m.data[:500]

        def dns(name, timeout=5):
            assert name == b"mk._domainkey.example.org.", name
            return record.encode()
        assert dkim.verify(m.data, dnsfunc=dns), "the upstream's copy must verify"
        # The Sent copy in the archive is the signed message too.
        sent = gw.delivered("alice", "Sent")
        assert sent and sent[0].read_bytes().endswith(m.data)
    finally:
        capture.stop()
