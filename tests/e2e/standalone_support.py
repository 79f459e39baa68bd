"""Helpers for the users / submission / standalone end-to-end tests
(test_users_dovecot.py, test_standalone_drill.py, test_submission_hostile.py).
The contract is /work/standalone_spec.md.

Builds on harness.py, backup_support.py and tls_support.py:

* SwitchCapture       -- a recording upstream (like harness.Capture) that can be told to answer
                         550 to everything (the provider account is closed), to be slow (a sleep
                         before the end-of-data reply), or to hold one message's end-of-data reply
                         until the test releases it; a message counts as delivered only when the
                         capture answered 250 on a live connection
* Site                -- one mailkeep (`serve`) with [backup], [users], [submission] and [tls] in
                         a 0755 directory under /var/tmp (uid 8 must reach it), with the CLI
                         (`user ...`, `backup replay`, `dovecot-config`) run against the same
                         file, config rewrites and SIGHUP mode switches
* MkDovecot           -- Dovecot started from exactly `mailkeep dovecot-config`
* messages and IMAP   -- Message-ID-tagged messages, counting archive files by Message-ID,
                         every message of an IMAP folder
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import shutil
import signal
import smtplib
import ssl
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backup_support import (
    DOMAIN, MAIL_GID, MAIL_UID, OUTBOUND_IP, Dovecot, backup_config, imap_folder, message_id, public_tempdir,
    write_accounts,
)
from harness import (
    MAILKEEP_BIN, CaptureHandler, Capture, Mailkeep, _CaptureController, free_port,
    render_ini, wait_port,
)
from tls_support import PKI, CertPair, make_pki

MAILKEEP = str(MAILKEEP_BIN)


# --------------------------------------------------------------------------- upstream

@dataclass
class SwitchHandler(CaptureHandler):
    """CaptureHandler with a 'closed account' switch, a per-message delay and a hold point.

    refuse:   when set (e.g. "550 5.1.1 ..."), MAIL, RCPT and DATA are all answered with it.
    delay:    seconds slept (asynchronously) after the message arrived, before the reply.
    hold_at:  the data attempt number (1-based) whose reply waits until `release` is set;
              `held` is set when that message has arrived.
    A message is recorded only after the sleep/hold: if the client went away in between
    (aiosmtpd cancels the handler on connection loss) it was never acknowledged and is not
    counted as delivered.
    """
    refuse: str | None = None
    delay: float = 0.0
    hold_at: int | None = None
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    cancelled: int = 0            # deliveries abandoned because the client disappeared

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.refuse:
            with self.cond:
                self.mail_log.append(address)
            return self.refuse
        return await super().handle_MAIL(server, session, envelope, address, mail_options)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse:
            with self.cond:
                self.rcpt_log.append(address)
            return self.refuse
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            with self.cond:
                self.data_attempts += 1
            return self.refuse
        with self.cond:
            attempt = self.data_attempts + 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.hold_at is not None and attempt == self.hold_at:
                self.held.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.01)
                # give the event loop the chance to notice a closed connection
                for _ in range(50):
                    if server.transport is None or server.transport.is_closing():
                        raise asyncio.CancelledError()
                    await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            with self.cond:
                self.cancelled += 1
                self.data_attempts += 1
                self.cond.notify_all()
            raise
        if server.transport is None or server.transport.is_closing():
            with self.cond:
                self.cancelled += 1
                self.data_attempts += 1
            return "451 4.3.0 client gone"
        return await super().handle_DATA(server, session, envelope)


class SwitchCapture(Capture):
    """harness.Capture with a SwitchHandler."""

    def __init__(self, port: int | None = None, hostname: str = "capture.test"):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.handler = SwitchHandler()
        self._controller = _CaptureController(
            self.handler, hostname=self.host, port=self.port, server_hostname=hostname,
            enable_SMTPUTF8=True, data_size_limit=64 * 1024 * 1024, ready_timeout=10,
        )

    def refuse(self, reply: str | None = "550 5.2.1 mailbox closed: the account was terminated") -> None:
        self.handler.refuse = reply

    def ids(self) -> Counter:
        """Captured messages counted by (Message-ID, recipient)."""
        return Counter((message_id(m.data), r.lower()) for m in self.messages for r in m.rcpt_tos)

    def message_ids(self) -> Counter:
        return Counter(message_id(m.data) for m in self.messages)

    def clear(self) -> None:
        with self.handler.cond:
            self.handler.messages.clear()
            self.handler.rcpt_log.clear()
            self.handler.mail_log.clear()
            self.handler.data_attempts = 0
            self.handler.cancelled = 0


# --------------------------------------------------------------------------- mailkeep

@dataclass
class Site:
    """A running mailkeep with [backup] + [users] + [submission] (+ [tls]); paths absolute."""
    mk: Mailkeep
    base: Path
    archive: Path
    accounts: Path
    passwd: Path
    journal: Path
    pki: PKI | None
    submission_port: int | None
    tls_port: int | None

    @property
    def host(self) -> str:
        return self.mk.host

    @property
    def port(self) -> int:
        return self.mk.port

    @property
    def config(self) -> dict:
        return self.mk.config

    @property
    def config_path(self) -> Path:
        return self.mk.config_path

    def log(self) -> str:
        return self.mk.log()

    # ---- configuration
    def write_config(self) -> None:
        tmp = self.config_path.with_name(self.config_path.name + ".new")
        tmp.write_text(render_ini(self.config))
        os.rename(tmp, self.config_path)

    def set_standalone(self, on: bool, timeout: float = 10.0) -> None:
        """Rewrite the config with [backup] standalone = on, SIGHUP, wait for the log line."""
        word = "SIGHUP: standalone mode" if on else "SIGHUP: gateway mode"
        before = self.log().count(word)
        self.config["backup"]["standalone"] = "true" if on else "false"
        self.write_config()
        self.mk.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log().count(word) <= before:
            assert time.monotonic() < deadline, f"no {word!r} line after SIGHUP:\n{self.log()[-3000:]}"
            assert self.mk.proc.poll() is None, f"mailkeep died on SIGHUP:\n{self.log()[-3000:]}"
            time.sleep(0.02)

    # ---- the CLI on the same configuration
    def cli(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([MAILKEEP, *args, "-c", str(self.config_path)], capture_output=True, text=True,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              timeout=timeout)

    def set_password(self, address: str, password: str) -> None:
        res = self.cli("user", "passwd", address, "--stdin", input=password + "\n")
        assert res.returncode == 0, f"user passwd {address}: {res.returncode} {res.stdout}{res.stderr}"
        assert res.stdout.strip() == f"password set for {address}", res.stdout

    def replay(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.cli("backup", "replay", *args, timeout=timeout)

    # ---- the archive
    def folder(self, user: str, folder: str = "INBOX", domain: str = DOMAIN) -> Path:
        maildir = self.archive / domain / user
        return maildir if folder == "INBOX" else maildir / f".{folder}"

    def delivered(self, user: str, folder: str = "INBOX", domain: str = DOMAIN) -> list[Path]:
        d = self.folder(user, folder, domain)
        out: list[Path] = []
        for sub in ("new", "cur"):
            if (d / sub).is_dir():
                out.extend(sorted((d / sub).iterdir()))
        return out

    def archived_ids(self, user: str, folder: str = "INBOX") -> Counter:
        """Message-IDs of every file in the folder's new/ and cur/."""
        return Counter(message_id(p.read_bytes()) for p in self.delivered(user, folder))

    def journal_files(self, sub: str = "new") -> list[Path]:
        d = self.journal / sub
        return sorted(d.iterdir()) if d.is_dir() else []


def site_config(base: Path, upstream: str, smarthost: str, *, pki: PKI | None = None,
                submission: bool = True, tls_listen: bool = False, standalone: bool = False,
                user: str = "mail", submission_opts: dict | None = None, **overrides) -> tuple[dict, dict]:
    accounts = base / "accounts.txt"
    archive = base / "archive"
    config = backup_config(free_port(), smarthost, archive, accounts, upstream, user,
                           backup={"replay": str(base / "replay"), "standalone": "true" if standalone else "false",
                                   **overrides.pop("backup", {})},
                           **overrides)
    config["users"] = {"passwd": str(base / "users.passwd")}
    ports = {"submission": None, "tls": None}
    if submission:
        ports["submission"] = free_port()
        config["submission"] = {"listen": f"127.0.0.1:{ports['submission']}"}
        if tls_listen:
            ports["tls"] = free_port()
            config["submission"]["tls_listen"] = f"127.0.0.1:{ports['tls']}"
        config["submission"].update(submission_opts or {})
    if pki is not None:
        config["tls"] = {"cert": str(pki_server(pki).cert), "key": str(pki_server(pki).key)}
    return config, ports


def pki_server(pki: PKI) -> CertPair:
    """A server certificate valid for mx.test and IP 127.0.0.1 (smtplib and imaplib check the
    name they connected to); made once per PKI."""
    pair = getattr(pki, "_loopback", None)
    if pair is None:
        pair = pki.leaf("loopback", "mx.test", "DNS:mx.test,IP:127.0.0.1")
        for p in (pair.cert, pair.key):
            os.chmod(p, 0o644 if p == pair.cert else 0o600)
        pki._loopback = pair
    return pair


def build_site(upstream: str, smarthost: str, users=("alice", "bob"), start: bool = True, **kw) -> Site:
    """A Site in a fresh 0755 directory under /var/tmp (started unless start=False);
    destroy_site() stops it, prints the tail of its log and removes the directory."""
    base = public_tempdir("mailkeep-standalone-")
    write_accounts(base / "accounts.txt", list(users))
    config, ports = site_config(base, upstream, smarthost, **kw)
    mk = Mailkeep(base / "mailkeep", config)
    mk.workdir.chmod(0o755)
    site = Site(mk, base, base / "archive", base / "accounts.txt", base / "users.passwd", base / "replay",
                kw.get("pki"), ports["submission"], ports["tls"])
    if start:
        try:
            mk.start()
            for p in (site.submission_port, site.tls_port):
                if p:
                    wait_port("127.0.0.1", p, 15, mk.proc)
        except Exception:
            destroy_site(site)
            raise
    return site


def destroy_site(site: Site) -> None:
    code = site.mk.stop() if site.mk.proc is not None else None
    print(f"--- mailkeep log ({site.mk.stderr_path}, exit {code}) ---")
    print("\n".join(site.log().splitlines()[-80:]))
    shutil.rmtree(site.base, ignore_errors=True)


@pytest.fixture
def site_factory(mailkeep_bin):
    """Factory: site_factory(upstream, smarthost, users=[...], start=True, pki=None, tls_listen=False,
    standalone=False, user="mail", submission_opts={...}, **config_overrides) -> Site.
    Everything is removed at teardown; the mailkeep log is printed (shown on failure)."""
    sites: list[Site] = []

    def start(upstream: str, smarthost: str, users=("alice", "bob"), start: bool = True, **kw) -> Site:
        site = build_site(upstream, smarthost, users, start, **kw)
        sites.append(site)
        return site

    yield start
    for s in sites:
        destroy_site(s)


@pytest.fixture(scope="module")
def pki():
    d = public_tempdir("mailkeep-pki-")
    p = make_pki(d)
    yield p
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- Dovecot from dovecot-config

class MkDovecot(Dovecot):
    """Dovecot started from exactly `mailkeep dovecot-config -c INI --listen 127.0.0.1 ...`: the
    private instance of backup_support.Dovecot, with mailkeep's configuration instead of the recipe's."""

    def __init__(self, config_path: Path, base: Path, tls: bool = False):
        self.config_path = Path(config_path)
        base = Path(base)
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        super().__init__(base, users={})
        self.imaps_port = free_port() if tls else None
        self.config_text = ""

    def generate(self) -> subprocess.CompletedProcess:
        args = [MAILKEEP, "dovecot-config", "-c", str(self.config_path), "--listen", "127.0.0.1",
                "--imap-port", str(self.port), "--base-dir", str(self.run_dir), "--log-path", str(self.logfile)]
        if self.imaps_port:
            args += ["--imaps-port", str(self.imaps_port)]
        return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)

    def _write_config(self) -> None:
        res = self.generate()
        assert res.returncode == 0, f"dovecot-config failed ({res.returncode}): {res.stderr}"
        self.config_text = res.stdout
        self.conf.write_text(res.stdout)      # exactly the output, nothing added
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)

    def start(self, timeout: float = 20) -> "MkDovecot":
        super().start(timeout)
        if self.imaps_port:
            wait_port("127.0.0.1", self.imaps_port, timeout)
        return self

    def imap(self) -> imaplib.IMAP4:
        return imaplib.IMAP4("127.0.0.1", self.port, timeout=30)


def imap_login(imap: imaplib.IMAP4, user: str, password: str) -> tuple[bool, str]:
    """(logged in?, server text) without raising."""
    try:
        typ, data = imap.login(user, password)
        return typ == "OK", b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")
    except imaplib.IMAP4.error as exc:
        return False, str(exc)


def close_imap(imap: imaplib.IMAP4) -> None:
    try:
        imap.logout()
    except Exception:
        try:
            imap.shutdown()
        except Exception:
            pass


# --------------------------------------------------------------------------- messages and clients

def tagged_message(tag: str, sender: str, to: str, size: int = 20) -> bytes:
    """A CRLF message with Message-ID <tag@drill.test>, a body naming the tag."""
    body = "".join(f"line {i} of {tag} .. text\r\n" for i in range(size))
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {tag}\r\nMessage-ID: <{tag}@drill.test>\r\n"
            f"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n\r\n{body}").encode()


def mid(tag: str) -> str:
    return f"<{tag}@drill.test>"


def split_prefix(data: bytes) -> tuple[list[bytes], bytes]:
    """Split the lines mailkeep prepends to an archived/journal file (Return-Path, X-Original-To,
    Delivered-To, its Received field with continuation lines) from the message. The message is
    recognised as starting at its first 'From: ' line of our test messages."""
    idx = data.find(b"\r\nFrom: <")
    assert idx >= 0, data[:300]
    head, msg = data[:idx + 2], data[idx + 2:]
    return head.split(b"\r\n")[:-1], msg


def smtp_tls_context(pki: PKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca.cert))


def submission_client(site: Site, user: str, password: str, *, starttls: bool = True,
                      source: str | None = None, timeout: float = 30) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", site.submission_port, timeout=timeout,
                     source_address=(source, 0) if source else None)
    s.ehlo("laptop.client.test")
    if starttls:
        s.starttls(context=smtp_tls_context(site.pki))
        s.ehlo("laptop.client.test")
    s.login(user, password)
    return s


__all__ = [
    "DOMAIN", "MAIL_GID", "MAIL_UID", "OUTBOUND_IP", "MkDovecot", "Site", "SwitchCapture", "SwitchHandler",
    "build_site", "close_imap", "destroy_site", "imap_folder", "imap_login", "mid", "pki", "pki_server",
    "site_config", "site_factory",
    "smtp_tls_context", "split_prefix", "submission_client", "tagged_message",
]
