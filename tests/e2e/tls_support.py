"""TLS helpers for the mailkeep end-to-end tests.

* make_pki(dir)      -- a throw-away CA and certificates generated with the `openssl` CLI:
                        server (mx.test, for mailkeep), upstream (CA-signed, SAN IP:127.0.0.1 +
                        DNS:upstream.test), wrong (self-signed, same names, not from the CA)
* make_leaf(...)     -- one more CA-signed certificate (for SIGHUP reload tests)
* TLSCapture         -- aiosmtpd capture upstream that offers STARTTLS and records, per
                        message, whether the session was encrypted (and the cipher)
* PlainCapture       -- the same recorder without STARTTLS
* client_context()   -- a client-side SSLContext trusting the test CA (or not verifying)
* starttls(client)   -- after a 220 to STARTTLS: the handshake, and a harness.RawSMTP over TLS

Everything is stdlib + aiosmtpd (Debian python3-aiosmtpd) + the openssl CLI.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from harness import Capture, CaptureHandler, RawSMTP, _CaptureController, free_port

OPENSSL = "openssl"


def _run(*args: str, cwd: Path | None = None) -> None:
    res = subprocess.run([OPENSSL, *args], capture_output=True, text=True, cwd=cwd,
                         stdin=subprocess.DEVNULL, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass
class CertPair:
    cert: Path
    key: Path

    def subject(self) -> str:
        return subprocess.run([OPENSSL, "x509", "-in", str(self.cert), "-noout", "-subject"],
                              capture_output=True, text=True, check=True).stdout.strip()

    def serial(self) -> int:
        out = subprocess.run([OPENSSL, "x509", "-in", str(self.cert), "-noout", "-serial"],
                             capture_output=True, text=True, check=True).stdout.strip()
        return int(out.split("=", 1)[1], 16)

    def der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.cert.read_text())


@dataclass
class PKI:
    dir: Path
    ca: CertPair
    server: CertPair       # mailkeep: CN=mx.test, SAN DNS:mx.test
    upstream: CertPair     # CA-signed, SAN IP:127.0.0.1, DNS:upstream.test
    wrong: CertPair        # self-signed, same names, NOT from the CA

    _serial = 1000

    def leaf(self, name: str, cn: str, sans: str) -> CertPair:
        PKI._serial += 1
        return make_leaf(self.dir, self.ca, name, cn, sans, PKI._serial)


def make_ca(d: Path) -> CertPair:
    pair = CertPair(d / "ca.pem", d / "ca.key")
    _run("req", "-x509", *_EC, "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "3",
         "-subj", "/CN=mailkeep test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return pair


def make_leaf(d: Path, ca: CertPair, name: str, cn: str, sans: str, serial: int) -> CertPair:
    """A CA-signed server certificate `name`.pem/.key; sans like 'DNS:a,IP:127.0.0.1'."""
    pair = CertPair(d / f"{name}.pem", d / f"{name}.key")
    csr = d / f"{name}.csr"
    ext = d / f"{name}.ext"
    ext.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n")
    _run("req", "-new", *_EC, "-keyout", str(pair.key), "-out", str(csr), "-subj", f"/CN={cn}")
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
         "-set_serial", str(serial), "-days", "3", "-out", str(pair.cert), "-extfile", str(ext))
    return pair


def make_self_signed(d: Path, name: str, cn: str, sans: str) -> CertPair:
    pair = CertPair(d / f"{name}.pem", d / f"{name}.key")
    _run("req", "-x509", *_EC, "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "3",
         "-subj", f"/CN={cn}", "-addext", f"subjectAltName={sans}",
         "-addext", "extendedKeyUsage=serverAuth")
    return pair


def make_pki(d: Path | None = None) -> PKI:
    d = Path(d) if d else Path(tempfile.mkdtemp(prefix="mailkeep-pki-"))
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)     # the privilege-drop tests run mailkeep as an unprivileged user
    ca = make_ca(d)
    server = make_leaf(d, ca, "server", "mx.test", "DNS:mx.test", 101)
    upstream = make_leaf(d, ca, "upstream", "upstream.test", "IP:127.0.0.1,DNS:upstream.test", 102)
    wrong = make_self_signed(d, "wrong", "upstream.test", "IP:127.0.0.1,DNS:upstream.test")
    return PKI(d, ca, server, upstream, wrong)


# --------------------------------------------------------------------------- client side

def client_context(ca: CertPair | None = None) -> ssl.SSLContext:
    """Verifying client context trusting only `ca` (or, with None, not verifying at all)."""
    if ca is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    return ctx


def starttls(client: RawSMTP, ctx: ssl.SSLContext, server_hostname: str = "mx.test") -> RawSMTP:
    """Upgrade a harness.RawSMTP after a 220 to STARTTLS.

    Asserts that no bytes followed the 220 in plaintext (nothing may arrive before the
    handshake) and returns a RawSMTP over the wrapped socket.
    """
    assert client.buf == b"", f"plaintext bytes after the STARTTLS reply: {client.buf!r}"
    tls = ctx.wrap_socket(client.sock, server_hostname=server_hostname)
    return RawSMTP.over(tls)


# --------------------------------------------------------------------------- upstreams

@dataclass
class TLSRecord:
    encrypted: bool
    cipher: tuple | None
    version: str | None


class TLSCaptureHandler(CaptureHandler):
    """CaptureHandler that also records, per message, whether the session was TLS."""

    def __init__(self):
        super().__init__()
        self.tls: list[TLSRecord] = []
        self.starttls_done = 0

    async def handle_DATA(self, server, session, envelope):
        extra = session.ssl
        ssl_obj = extra.get("ssl_object") if extra else None
        with self.cond:
            self.tls.append(TLSRecord(
                encrypted=extra is not None,
                cipher=extra.get("cipher") if extra else None,
                version=ssl_obj.version() if ssl_obj is not None else None,
            ))
        return await super().handle_DATA(server, session, envelope)

    def handle_STARTTLS(self, server, session, envelope):   # sync hook, after the handshake
        with self.cond:
            self.starttls_done += 1
        return True


def server_context(pair: CertPair, *, max_tls12_no_shared_cipher: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pair.cert), str(pair.key))
    if max_tls12_no_shared_cipher:
        # An upstream whose handshake always fails: TLS 1.2 only with a cipher no normal
        # client offers.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("aNULL:@SECLEVEL=0")
    return ctx


class TLSCapture(Capture):
    """harness.Capture that offers STARTTLS with `pair` (tls_context, require_starttls=False).

    With pair=None it is a plaintext capture that never offers STARTTLS but still records
    the per-message TLS state (always unencrypted).
    """

    def __init__(self, pair: CertPair | None, port: int | None = None, hostname: str = "upstream.test",
                 context: ssl.SSLContext | None = None):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.handler = TLSCaptureHandler()
        kwargs = {}
        if pair is not None or context is not None:
            kwargs = dict(tls_context=context or server_context(pair), require_starttls=False)
        self._controller = _CaptureController(
            self.handler, hostname=self.host, port=self.port,
            server_hostname=hostname, enable_SMTPUTF8=True,
            data_size_limit=64 * 1024 * 1024, ready_timeout=10, **kwargs,
        )

    @property
    def tls(self) -> list[TLSRecord]:
        with self.handler.cond:
            return list(self.handler.tls)


def PlainCapture(port: int | None = None) -> TLSCapture:
    return TLSCapture(None, port=port)


# --------------------------------------------------------------------------- misc

def received_header(data: bytes) -> str:
    """The first header field (unfolded) as text."""
    from harness import split_received
    rec, _ = split_received(data)
    return " ".join(rec.decode("latin-1").split())


_lock = threading.Lock()
_shared: PKI | None = None


def shared_pki() -> PKI:
    """One PKI per test process (certificate generation costs ~0.1 s per certificate)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = make_pki()
            import atexit
            import shutil
            atexit.register(shutil.rmtree, _shared.dir, True)
        return _shared
