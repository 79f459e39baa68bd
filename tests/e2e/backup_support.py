"""Helpers and fixtures for the mail-backup end-to-end tests (tests/e2e/test_backup_*.py).

Builds on harness.py (Capture, Mailkeep, default_config, ...):

* BackupGateway / backup_gateway fixture -- mailkeep with a [backup] section, in a
  world-traversable directory under /var/tmp so that `[general] user = mail` (uid 8)
  and Dovecot can reach the archive
* archive readers     -- Maildir file listing, the prepended Return-Path / Delivered-To /
                         Received lines split off, `archive stats` parsing
* Dovecot             -- a private Dovecot IMAP instance over the archive Maildirs
* Tmpfs               -- a small tmpfs mounted over the archive (disk-full tests)
* message builders    -- messages identified by a unique Message-ID
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import (
    CRLF, MAILKEEP_BIN, Capture, Mailkeep, default_config, free_port, run_mailkeep,
    split_received, wait_port,
)

DOMAIN = "example.org"            # the backup domain
RELAY_DOMAIN = "example.net"      # a plain [relay] domain (no archive)
OUTBOUND_IP = "127.0.0.7"         # the provider's outbound relay ([backup] relay_from)
MAIL_UID = 8                      # Debian's `mail` user
MAIL_GID = 8
MAILDIR_NAME = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.([^,/]+),S=(\d+)(:2,[A-Za-z]*)?$")
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.I | re.M)


# --------------------------------------------------------------------------- directories

def public_tempdir(prefix: str) -> Path:
    """A 0755 directory under /var/tmp (pytest's tmp_path sits below a 0700 directory that
    uid 8 -- mailkeep after the privilege drop, Dovecot's mail processes -- cannot traverse)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    return path


def write_accounts(path: Path, lines: list[str]) -> None:
    """Replace the accounts file atomically (write a new file, rename it over the old one)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.chmod(0o644)
    os.rename(tmp, path)


def tree(root: Path) -> set[str]:
    """Every path below root (relative, directories with a trailing '/')."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out.add(os.path.normpath(os.path.join(rel, d)) + "/")
        for f in filenames:
            out.add(os.path.normpath(os.path.join(rel, f)))
    return out


# --------------------------------------------------------------------------- the gateway

@dataclass
class BackupGateway:
    """A started mailkeep with [backup] configured; paths are absolute."""
    mk: Mailkeep
    base: Path            # world-traversable directory holding everything below
    archive: Path
    accounts: Path

    @property
    def host(self) -> str:
        return self.mk.host

    @property
    def port(self) -> int:
        return self.mk.port

    @property
    def config_path(self) -> Path:
        return self.mk.config_path

    def log(self) -> str:
        return self.mk.log()

    def folder(self, user: str, folder: str = "INBOX", domain: str = DOMAIN) -> Path:
        maildir = self.archive / domain / user
        return maildir if folder == "INBOX" else maildir / f".{folder}"

    def files(self, user: str, folder: str = "INBOX", sub: str = "new", domain: str = DOMAIN) -> list[Path]:
        d = self.folder(user, folder, domain) / sub
        return sorted(d.iterdir()) if d.is_dir() else []

    def delivered(self, user: str, folder: str = "INBOX", domain: str = DOMAIN) -> list[Path]:
        """Published messages: new/ and cur/ (Dovecot moves them to cur/)."""
        return self.files(user, folder, "new", domain) + self.files(user, folder, "cur", domain)

    def stats(self) -> list[tuple[str, str, int, int]]:
        res = run_mailkeep("archive", "stats", "-c", str(self.config_path))
        assert res.returncode == 0, f"archive stats failed ({res.returncode}): {res.stdout}{res.stderr}"
        return parse_stats(res.stdout)


def backup_config(listen_port: int, smarthost: str, archive: Path, accounts: Path,
                  upstream: str | None = None, user: str = "root", **overrides) -> dict:
    """default_config plus [backup]; example.net stays a plain relay domain."""
    backup = {
        "domains": DOMAIN,
        "accounts": str(accounts),
        "archive": str(archive),
        "relay_from": f"{OUTBOUND_IP}/32",
        "reload_interval": 1,
    }
    if upstream:
        backup["upstream"] = upstream
    backup.update(overrides.pop("backup", {}))
    http = overrides.pop("http", {})
    config = default_config(listen_port, smarthost, **overrides)
    config["general"]["user"] = user
    # the alias HTTP API defaults to 127.0.0.1:8080, which another instance may hold
    config.setdefault("http", {}).setdefault("listen", f"127.0.0.1:{free_port()}")
    config["http"].update(http)
    config["relay"]["domains"] = RELAY_DOMAIN
    config["backup"] = backup
    return config


@pytest.fixture
def backup_gateway(mailkeep_bin):
    """Factory: backup_gateway(smarthost, upstream=None, users=[...], user="root",
    archive=None, **config_overrides) -> BackupGateway (started).

    Everything lives in a fresh 0755 directory under /var/tmp, removed at teardown;
    the mailkeep log is printed at teardown (pytest shows it on failure)."""
    started: list[BackupGateway] = []
    bases: list[Path] = []

    def start(smarthost: str, upstream: str | None = None, users: list[str] = ("alice", "bob"),
              user: str = "root", archive: Path | None = None, **overrides) -> BackupGateway:
        base = public_tempdir("mailkeep-backup-")
        bases.append(base)
        accounts = base / "accounts.txt"
        write_accounts(accounts, list(users))
        archive = Path(archive) if archive else base / "archive"
        config = backup_config(free_port(), smarthost, archive, accounts, upstream, user, **overrides)
        gw = BackupGateway(Mailkeep(base / "mailkeep", config), base, archive, accounts)
        gw.mk.workdir.chmod(0o755)
        started.append(gw)
        gw.mk.start()
        return gw

    yield start
    for gw in started:
        code = gw.mk.stop()
        print(f"--- mailkeep log ({gw.mk.stderr_path}, exit {code}) ---")
        print("\n".join(gw.log().splitlines()[-60:]))
    for base in bases:
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Upstreams:
    inbound: Capture     # [backup] upstream: the provider's inbound servers
    outbound: Capture    # [delivery] smarthost: where the provider's outgoing mail goes


@pytest.fixture
def upstreams():
    """Two capture upstreams, so that inbound and outbound mail can be told apart."""
    pair = Upstreams(Capture().start(), Capture().start())
    yield pair
    pair.inbound.stop()
    pair.outbound.stop()


# --------------------------------------------------------------------------- archived files

@dataclass
class ArchivedCopy:
    path: Path
    return_path: str
    delivered_to: str | None
    received: bytes
    message: bytes        # what the client sent, if mailkeep kept it intact


def parse_archived(data: bytes, inbox: bool, path: Path | None = None) -> ArchivedCopy:
    """Split an archive file into its prepended lines and the message.

    The prefix is fixed: `Return-Path: <...>`, then `Delivered-To: ...` (INBOX copies only),
    then mailkeep's Received field. Corpus messages often start with their own Return-Path
    and Delivered-To, so the prefix is parsed by position, never by searching."""
    first, sep, rest = data.partition(CRLF)
    m = re.fullmatch(rb"Return-Path: <([^>]*)>", first)
    assert sep and m, f"{path}: archive file does not start with Return-Path: {data[:120]!r}"
    delivered_to = None
    if inbox:
        line, sep, rest = rest.partition(CRLF)
        assert sep and line.startswith(b"Delivered-To: "), f"{path}: no Delivered-To after Return-Path: {line!r}"
        delivered_to = line[len(b"Delivered-To: "):].decode()
    received, message = split_received(rest)
    return ArchivedCopy(path, m.group(1).decode(), delivered_to, received, message)


def read_archived(path: Path, inbox: bool) -> ArchivedCopy:
    return parse_archived(path.read_bytes(), inbox, path)


def message_id(data: bytes) -> str | None:
    """The first Message-ID header in the header section of data (None if absent)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    m = MESSAGE_ID.search(head)
    return m.group(1).decode("ascii", "replace") if m else None


def check_maildir_name(path: Path) -> None:
    """time.M<usec>P<pid>Q<seq>.<host>,S=<exact size> (Dovecot trusts S=)."""
    m = MAILDIR_NAME.match(path.name)
    assert m, f"bad Maildir file name {path.name!r}"
    size = path.stat().st_size
    assert int(m.group(6)) == size, f"{path.name}: S={m.group(6)} but the file has {size} bytes"


def parse_stats(text: str) -> list[tuple[str, str, int, int]]:
    """`archive stats` output -> [(user, folder, messages, bytes), ..., ('# total', '', N, B)]."""
    lines = text.splitlines()
    assert lines and lines[0] == "# user\tfolder\tmessages\tbytes", f"bad stats header: {text!r}"
    rows = []
    for line in lines[1:]:
        if not line:  # the index section follows an empty line
            break
        cols = line.split("\t")
        assert len(cols) == 4, f"bad stats line {line!r}"
        rows.append((cols[0], cols[1], int(cols[2]), int(cols[3])))
    assert rows and rows[-1][0] == "# total", f"no total line: {text!r}"
    return rows


# --------------------------------------------------------------------------- clients and messages

def make_message(tag: str, sender: str = "someone@client.test", to: str = "alice@example.org",
                 body: bytes | None = None, extra_headers: bytes = b"") -> bytes:
    """A small CRLF message with Message-ID <tag@client.test> and Subject tag."""
    if body is None:
        body = (f"Body of {tag}.\r\n" + "".join(f"line {i} of {tag}\r\n" for i in range(20))).encode()
    return (extra_headers
            + f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {tag}\r\n"
              f"Message-ID: <{tag}@client.test>\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\n\r\n".encode()
            + body)


def outbound_smtp(gw: BackupGateway, timeout: float = 30) -> smtplib.SMTP:
    """An SMTP session from the provider's outbound relay address."""
    s = smtplib.SMTP(gw.host, gw.port, timeout=timeout, source_address=(OUTBOUND_IP, 0))
    s.ehlo("relay.provider.test")
    return s


def inbound_smtp(gw: BackupGateway, timeout: float = 30) -> smtplib.SMTP:
    s = smtplib.SMTP(gw.host, gw.port, timeout=timeout)
    s.ehlo("mx.sender.test")
    return s


def mail_options(msg: bytes) -> list[str]:
    return ["BODY=8BITMIME"] if re.search(rb"[\x80-\xff]", msg) else []


# --------------------------------------------------------------------------- tmpfs

class Tmpfs:
    """`mount -t tmpfs -o size=SIZE tmpfs DIR` (root only); unmounted by close()."""

    def __init__(self, path: Path, size: str = "256k", mode: str = "0755"):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(self.path)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
        self.mounted = True

    def fill(self, name: str = "filler") -> Path:
        """Write until ENOSPC (4 KiB chunks, then single bytes); returns the filler file."""
        filler = self.path / name
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for chunk in (b"\0" * 4096, b"\0"):
                while True:
                    try:
                        os.write(fd, chunk)
                    except OSError as exc:
                        assert exc.errno == 28, exc  # ENOSPC
                        break
        finally:
            os.close(fd)
        return filler

    def close(self) -> None:
        if self.mounted:
            if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


# --------------------------------------------------------------------------- Dovecot

class Dovecot:
    """A private Dovecot IMAP instance (recipe from /work/shared/TESTING.md).

    users: {"alice@example.org": Path(<archive>/example.org/alice), ...}; password "secret".
    """

    PASSWORD = "secret"

    def __init__(self, base: Path, users: dict[str, Path], uid: int = MAIL_UID, gid: int = MAIL_GID):
        self.base = Path(base)
        self.users = users
        self.uid, self.gid = uid, gid
        self.port = free_port()
        self.conf = self.base / "dovecot.conf"
        self.logfile = self.base / "dovecot.log"
        self.run_dir = self.base / "run"
        self.started = False

    def _write_config(self) -> None:
        (self.run_dir / "state").mkdir(parents=True, exist_ok=True)
        for d in (self.base, self.run_dir):
            d.chmod(0o755)
        passwd = self.base / "passwd"
        passwd.write_text("".join(f"{login}:{{PLAIN}}{self.PASSWORD}:{self.uid}:{self.gid}::{home}\n"
                                  for login, home in self.users.items()))
        passwd.chmod(0o644)
        self.conf.write_text(f"""\
base_dir = {self.run_dir}
state_dir = {self.run_dir}/state
log_path = {self.logfile}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = {self.uid}
mail_location = maildir:~
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
service anvil {{
  chroot =
}}
""")

    def start(self, timeout: float = 20) -> "Dovecot":
        if not shutil.which("dovecot"):
            pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
        self._write_config()
        with open(self.base / "dovecot.stdout", "ab") as out:  # never a pipe: the daemon keeps it open
            res = subprocess.run(["dovecot", "-c", str(self.conf)], stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"dovecot failed to start ({res.returncode}): {self.log()}")
        self.started = True
        wait_port("127.0.0.1", self.port, timeout)
        return self

    def stop(self) -> None:
        if not self.started:
            return
        pidfile = self.run_dir / "master.pid"
        pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        subprocess.run(["doveadm", "-c", str(self.conf), "stop"], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=30)
        deadline = time.monotonic() + 15
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            if pid:
                os.kill(pid, signal.SIGKILL)
        self.started = False

    def log(self) -> str:
        texts = []
        for p in (self.logfile, self.base / "dovecot.stdout"):
            if p.exists():
                texts.append(p.read_text(errors="replace"))
        return "\n".join(texts)


__all__ = [
    "DOMAIN", "RELAY_DOMAIN", "OUTBOUND_IP", "MAIL_UID", "MAIL_GID", "MAILKEEP_BIN",
    "ArchivedCopy", "BackupGateway", "Dovecot", "Tmpfs", "Upstreams",
    "backup_config", "backup_gateway", "check_maildir_name", "inbound_smtp", "mail_options",
    "make_message", "message_id", "outbound_smtp", "parse_archived", "parse_stats", "public_tempdir",
    "read_archived", "tree", "upstreams", "write_accounts",
]


def imap_folder(imap, folder: str, peek: bool = True) -> list[bytes]:
    """Every message of folder via UID FETCH BODY[] (BODY.PEEK[] unless peek is False: then the
    reads set \\Seen, as a mail client's would), one at a time, the folder selected read-only."""
    typ, data = imap.select(folder, readonly=True)
    assert typ == "OK", f"SELECT {folder}: {typ} {data}"
    exists = int(data[0])
    typ, data = imap.uid("SEARCH", None, "ALL")
    assert typ == "OK", data
    uids = data[0].split()
    assert len(uids) == exists, f"{folder}: SEARCH ALL found {len(uids)} of {exists} messages"
    bodies = []
    for uid in uids:
        typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[])" if peek else "(BODY[])")
        assert typ == "OK", f"{folder} UID {uid}: FETCH BODY[] failed: {data}"
        parts = [p for p in data if isinstance(p, tuple)]
        assert len(parts) == 1, f"{folder} UID {uid}: unexpected FETCH response {data!r}"
        bodies.append(parts[0][1])
    return bodies
