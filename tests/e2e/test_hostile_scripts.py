"""Hostile-client transcripts (in the spirit of OpenSMTPD's smtpscript) from scripts/*.txt.

Script format (one directive per line; blank lines and lines starting with '#' ignored):

  Header (before the first body line):
    @config SECTION.KEY = VALUE   mailkeep setting on top of harness.default_config
    @tls                          give mailkeep the test STARTTLS certificate ([tls] cert/key)
    @limit SECONDS                the whole script must finish within SECONDS (default 30)

  Body:
    >> TEXT                       send TEXT + CRLF (TEXT literal, UTF-8)
    >>raw BYTES                   send BYTES: Python bytes escapes (\\r \\n \\x00 \\\\), no CRLF added
    >>repeat N BYTES              send BYTES N times ({i} in BYTES becomes 0..N-1), from a
                                  background thread so that replies can be read meanwhile
    >>slow SECONDS BYTES          send BYTES one byte at a time, SECONDS apart (stops quietly
                                  if the server closes the connection)
    << CODE [ENH] [~ TEXT]        read one (multi-line) reply; CODE is 3 chars, '.' = any digit;
                                  ENH an enhanced status code prefix; TEXT a case-insensitive
                                  substring of the reply
    <<repeat N CODE [ENH] [~ TEXT]  N such replies
    connect                       (re)connect; the banner is NOT read (use `<< 220`)
    starttls                      TLS handshake (client trusts the test CA, expects mx.test);
                                  fails if any plaintext byte is pending
    shutdown-write                shutdown(SHUT_WR) of the client side
    expect-close [SECONDS]        the server closes within SECONDS (default 5), no more bytes
    expect-silence SECONDS        nothing arrives for SECONDS
    sleep SECONDS
    mark                          remember now and mailkeep's VmRSS
    elapsed-max SECONDS           at most SECONDS since `mark`
    elapsed-min SECONDS           at least SECONDS since `mark`
    rss-growth-max KB             VmRSS grew by at most KB since `mark`
    upstream-messages N           (after 0.5 s) exactly N messages reached the upstream
    upstream-wait N               wait until N messages reached the upstream
    upstream-no-mail ADDR         the upstream never saw MAIL FROM:<ADDR>
    upstream-no-rcpt ADDR         the upstream never saw RCPT TO:<ADDR>
    upstream-rcpts-max N          the upstream saw at most N RCPT commands in total
    log-contains TEXT             mailkeep's log has TEXT (waits up to 3 s)

After every script mailkeep must still be running and relay a clean message on a new
connection.
"""

from __future__ import annotations

import codecs
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import CRLF, RawSMTP
from tls_support import client_context, shared_pki

SCRIPTS = Path(__file__).resolve().parent / "scripts"


class ScriptError(AssertionError):
    pass


def unescape(text: str) -> bytes:
    return codecs.escape_decode(text.encode("utf-8"))[0]


@dataclass
class Script:
    path: Path
    config: dict
    tls: bool
    limit: float
    body: list[tuple[int, str]]     # (line number, directive line)


def parse(path: Path) -> Script:
    config: dict[str, dict[str, str]] = {}
    tls, limit, body = False, 30.0, []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("@"):
            if body:
                raise ScriptError(f"{path.name}:{no}: header directive after the body")
            word, _, rest = stripped.partition(" ")
            if word == "@config":
                key, _, value = rest.partition("=")
                section, _, name = key.strip().partition(".")
                config.setdefault(section, {})[name] = value.strip()
            elif word == "@tls":
                tls = True
            elif word == "@limit":
                limit = float(rest)
            else:
                raise ScriptError(f"{path.name}:{no}: unknown header {word}")
            continue
        body.append((no, line.rstrip("\n")))
    return Script(path, config, tls, limit, body)


REPLY_SPEC = re.compile(r"^(?P<code>[0-9.]{3})(?:\s+(?P<enh>[245]\.[0-9.]+))?(?:\s+~\s+(?P<text>.*))?$")


class Runner:
    def __init__(self, script: Script, mk, capture, pki):
        self.s = script
        self.mk = mk
        self.capture = capture
        self.pki = pki
        self.sock: socket.socket | None = None
        self.buf = b""
        self.transcript: list[str] = []
        self.sender: threading.Thread | None = None
        self.send_error: BaseException | None = None
        self.mark_time = time.monotonic()
        self.mark_rss = 0
        self.deadline = time.monotonic() + script.limit

    # ------------------------------------------------------------------ io
    def left(self) -> float:
        return max(0.05, self.deadline - time.monotonic())

    def connect(self) -> None:
        self.close()
        self.sock = socket.create_connection((self.mk.host, self.mk.port), timeout=10)
        self.buf = b""

    def close(self) -> None:
        self.join_sender()
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def join_sender(self) -> None:
        if self.sender is not None:
            self.sender.join(self.left())
            if self.sender.is_alive():
                raise ScriptError("background send did not finish in time")
            self.sender = None
        if self.send_error is not None:
            err, self.send_error = self.send_error, None
            raise ScriptError(f"background send failed: {err!r}")

    def send(self, data: bytes) -> None:
        self.join_sender()
        self.transcript.append(f">> {data[:200]!r}{' ...' if len(data) > 200 else ''} ({len(data)} bytes)")
        self.sock.sendall(data)

    def recv_more(self, timeout: float) -> bytes:
        self.sock.settimeout(min(timeout, self.left()))
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            raise ScriptError(f"timeout waiting for data (pending {self.buf[:200]!r})")

    def readline(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.recv_more(15)
            if not chunk:
                raise ScriptError(f"connection closed while waiting for a reply (pending {self.buf!r})")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "surrogateescape")

    def reply(self) -> tuple[str, list[str]]:
        lines = []
        while True:
            raw = self.readline()
            if len(raw) < 3 or not raw[:3].isdigit():
                raise ScriptError(f"malformed reply line {raw!r}")
            lines.append(raw)
            if len(raw) == 3 or raw[3] == " ":
                return raw[:3], lines

    def expect(self, spec: str) -> None:
        m = REPLY_SPEC.match(spec.strip())
        if not m:
            raise ScriptError(f"bad reply spec {spec!r}")
        code, lines = self.reply()
        self.transcript.append("<< " + " | ".join(lines))
        text = "\n".join(l[4:] for l in lines)
        ok = all(p in (".", c) for p, c in zip(m["code"], code))
        if ok and m["enh"]:
            ok = text.startswith(m["enh"])
        if ok and m["text"]:
            ok = m["text"].lower() in text.lower()
        if not ok:
            raise ScriptError(f"expected {spec!r}, got {' | '.join(lines)!r}")

    # ------------------------------------------------------------------ directives
    def run(self) -> None:
        self.connect()
        for no, line in self.s.body:
            if time.monotonic() > self.deadline:
                raise ScriptError(f"line {no}: script exceeded its {self.s.limit}s limit")
            try:
                self.step(line)
            except ScriptError as exc:
                raise ScriptError(f"{self.s.path.name}:{no}: {line.strip()[:120]!r}: {exc}\n"
                                  f"--- transcript (last 40) ---\n" + "\n".join(self.transcript[-40:])) from None
            except (OSError, ssl.SSLError) as exc:
                raise ScriptError(f"{self.s.path.name}:{no}: {line.strip()[:120]!r}: {exc!r}\n"
                                  f"--- transcript (last 40) ---\n" + "\n".join(self.transcript[-40:])) from None
        self.close()

    def step(self, line: str) -> None:
        if line.startswith(">>raw "):
            self.send(unescape(line[6:]))
        elif line.startswith(">>repeat "):
            _, n, pattern = line.split(" ", 2)
            self.start_repeat(int(n), pattern)
        elif line.startswith(">>slow "):
            _, delay, data = line.split(" ", 2)
            self.send_slowly(float(delay), unescape(data))
        elif line.startswith(">> ") or line == ">>":
            self.send(line[3:].encode("utf-8") + CRLF)
        elif line.startswith("<<repeat "):
            _, n, spec = line.split(" ", 2)
            for _ in range(int(n)):
                self.expect(spec)
        elif line.startswith("<< "):
            self.expect(line[3:])
        else:
            word, _, arg = line.strip().partition(" ")
            getattr(self, "do_" + word.replace("-", "_"))(arg.strip())

    def start_repeat(self, n: int, pattern: str) -> None:
        self.join_sender()
        if "{i}" in pattern:
            data = b"".join(unescape(pattern.replace("{i}", str(i))) for i in range(n))
        else:
            data = unescape(pattern) * n
        self.transcript.append(f">> {n} x {pattern[:80]!r} ({len(data)} bytes, background)")
        sock = self.sock

        def run():
            try:
                sock.sendall(data)
            except BaseException as exc:   # noqa: BLE001 - reported by join_sender
                self.send_error = exc

        self.sender = threading.Thread(target=run, daemon=True)
        self.sender.start()

    def send_slowly(self, delay: float, data: bytes) -> None:
        self.join_sender()
        self.transcript.append(f">> slowly ({delay}s/byte) {data!r}")
        for i in range(len(data)):
            if self.deadline - time.monotonic() < 3:
                self.transcript.append(f"   (gave up after {i} bytes: script time limit)")
                return
            try:
                self.sock.sendall(data[i:i + 1])
            except OSError:
                self.transcript.append(f"   (server closed after {i} bytes)")
                return
            # stop early if the server has already said something final
            r, _, _ = __import__("select").select([self.sock], [], [], delay)
            if r:
                self.transcript.append(f"   (server spoke after {i + 1} bytes)")
                return

    def do_connect(self, arg: str) -> None:
        self.connect()

    def do_starttls(self, arg: str) -> None:
        if self.buf:
            raise ScriptError(f"plaintext bytes pending before the handshake: {self.buf!r}")
        ctx = client_context(self.pki.ca)
        self.sock.settimeout(10)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.test")
        self.transcript.append(f"-- TLS {self.sock.version()} {self.sock.cipher()[0]}")

    def do_shutdown_write(self, arg: str) -> None:
        self.join_sender()
        self.sock.shutdown(socket.SHUT_WR)
        self.transcript.append("-- shutdown(SHUT_WR)")

    def do_expect_close(self, arg: str) -> None:
        limit = float(arg or 5)
        end = time.monotonic() + limit
        while True:
            if self.buf:
                raise ScriptError(f"expected close, got data {self.buf[:300]!r}")
            left = end - time.monotonic()
            if left <= 0:
                raise ScriptError(f"connection still open after {limit}s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise ScriptError(f"connection still open after {limit}s")
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.transcript.append("-- closed by server")
                return
            self.buf += chunk

    def do_expect_silence(self, arg: str) -> None:
        self.sock.settimeout(float(arg))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        raise ScriptError(f"expected silence, got {(self.buf + chunk)[:300]!r}")

    def do_sleep(self, arg: str) -> None:
        time.sleep(float(arg))

    def do_mark(self, arg: str) -> None:
        self.join_sender()
        self.mark_time = time.monotonic()
        self.mark_rss = self.mk.proc_status("VmRSS")
        self.transcript.append(f"-- mark (VmRSS {self.mark_rss} kB)")

    def do_elapsed_max(self, arg: str) -> None:
        took = time.monotonic() - self.mark_time
        if took > float(arg):
            raise ScriptError(f"took {took:.2f}s > {arg}s")

    def do_elapsed_min(self, arg: str) -> None:
        took = time.monotonic() - self.mark_time
        if took < float(arg):
            raise ScriptError(f"took only {took:.2f}s < {arg}s")

    def do_rss_growth_max(self, arg: str) -> None:
        rss = self.mk.proc_status("VmRSS")
        self.transcript.append(f"-- VmRSS {rss} kB (mark {self.mark_rss} kB)")
        if rss - self.mark_rss > int(arg):
            raise ScriptError(f"VmRSS grew by {rss - self.mark_rss} kB (> {arg} kB): {self.mark_rss} -> {rss}")

    def do_upstream_messages(self, arg: str) -> None:
        time.sleep(0.5)
        msgs = self.capture.messages
        if len(msgs) != int(arg):
            raise ScriptError(f"upstream has {len(msgs)} messages, expected {arg}: "
                              f"{[(m.mail_from, m.rcpt_tos, m.data[-200:]) for m in msgs]}")

    def do_upstream_wait(self, arg: str) -> None:
        msgs = self.capture.wait_for(int(arg), timeout=min(15, self.left()))
        if len(msgs) < int(arg):
            raise ScriptError(f"upstream has {len(msgs)} messages, waited for {arg}")

    def do_upstream_no_mail(self, arg: str) -> None:
        if arg in self.capture.mail_log:
            raise ScriptError(f"upstream saw MAIL FROM:<{arg}>: {self.capture.mail_log}")

    def do_upstream_no_rcpt(self, arg: str) -> None:
        if arg in self.capture.rcpt_log:
            raise ScriptError(f"upstream saw RCPT TO:<{arg}>")

    def do_upstream_rcpts_max(self, arg: str) -> None:
        n = len(self.capture.rcpt_log)
        if n > int(arg):
            raise ScriptError(f"upstream saw {n} RCPT commands (> {arg})")

    def do_log_contains(self, arg: str) -> None:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            if arg in self.mk.log():
                return
            time.sleep(0.05)
        raise ScriptError(f"log lacks {arg!r}:\n{self.mk.log()[-2000:]}")


def assert_still_serving(mk, capture) -> None:
    code = mk.proc.poll()
    assert code is None, f"mailkeep died (exit {code})\n{mk.log()[-3000:]}"
    before = len(capture.messages)
    with RawSMTP(mk.host, mk.port, timeout=15) as c:
        assert c.banner.code == 220
        assert c.ehlo().code == 250
        body = b"From: check@client.test\r\nSubject: still alive\r\n\r\nok\r\n"
        r = c.send_message("alive-check@client.test", ["user@example.org"], body)
        assert r.code == 250, f"after the script a clean message got {r}"
    msgs = capture.wait_for(before + 1)
    assert msgs[-1].mail_from == "alive-check@client.test"


def run_script(path: Path, start_mailkeep, capture) -> None:
    script = parse(path)
    pki = shared_pki()
    overrides = {k: dict(v) for k, v in script.config.items()}
    if script.tls:
        overrides.setdefault("tls", {}).update(cert=pki.server.cert, key=pki.server.key)
    mk = start_mailkeep(capture.address, **overrides)
    runner = Runner(script, mk, capture, pki)
    started = time.monotonic()
    try:
        runner.run()
    finally:
        runner.close()
    took = time.monotonic() - started
    assert took <= script.limit, f"{path.name} took {took:.1f}s > {script.limit}s"
    assert_still_serving(mk, capture)


ALL = sorted(SCRIPTS.glob("*.txt"))


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_script(path, start_mailkeep, capture):
    run_script(path, start_mailkeep, capture)
