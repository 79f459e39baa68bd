"""Helpers for the archive state-change end-to-end tests: `mailkeep archive modify`,
`mailkeep archive import` and the index's crash safety (tests/e2e/test_archive_*.py,
test_index_crash.py). The contract is /work/search_spec.md ("archive modify", "archive import").

Builds on harness.py and backup_support.py:

* ArchiveEnv / archive_env fixture -- one account archive (alice@example.org) in a 0755
  directory under /var/tmp (Dovecot's mail processes run as uid 8 and must reach it), a
  mailkeep INI ([backup] domains/accounts/archive, [index] path/enabled), optionally a running
  `mailkeep serve` over it (SMTP delivery, live indexing), optionally a Dovecot over it
* Maildir writers and readers  -- files written the way the archive writes them (unique
  Maildir names with ,S=<size>, owned by uid 8), every file of an account with its folder,
  flags and Message-ID
* Imap                          -- an imaplib session with the few commands the tests need,
  and snapshot(): every message of every folder with its flags, by Message-ID
* the CLI                        -- `archive index`, `search --messages --json`,
  `archive modify`, `archive import`, with their last output lines parsed

Flags are compared as Maildir letters (S = \\Seen, F = \\Flagged, ...); IMAP's \\Recent and
keywords are ignored.
"""

from __future__ import annotations

import imaplib
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backup_support import (
    DOMAIN, MAIL_GID, MAIL_UID, MAILDIR_NAME, Dovecot, backup_config, mail_options, public_tempdir,
    write_accounts,
)
from harness import MAILKEEP_BIN, Capture, Mailkeep, asan_build, free_port, render_ini, require_binary

USER = f"alice@{DOMAIN}"
STANDARD_FOLDERS = ("INBOX", "Archive", "Trash", "Junk")

INDEX_LINE = re.compile(
    r"^indexed (\d+) messages \((\d+) added, (\d+) updated, (\d+) removed\) in (\d+\.\d\d)s$", re.M)
MODIFY_LINE = re.compile(
    r"^modified (\d+) messages \((\d+) moved, (\d+) flag changes, (\d+) label changes\)$", re.M)
IMPORT_LINE = re.compile(
    r"^imported (\d+) messages \((\d+) duplicates skipped, (\d+) errors\) from (\d+) files$", re.M)

IMAP_TO_LETTER = {"\\seen": "S", "\\flagged": "F", "\\answered": "R", "\\deleted": "T", "\\draft": "D"}
LETTER_TO_IMAP = {"S": "\\Seen", "F": "\\Flagged", "R": "\\Answered", "T": "\\Deleted", "D": "\\Draft"}


# --------------------------------------------------------------------------- the binary



def has_subcommand(*words: str) -> bool:
    """Whether `mailkeep WORDS... --help` knows the subcommand (CLI11 prints the parent's help
    and exits 0 for an unknown one, so the usage line must name it)."""
    res = subprocess.run([str(MAILKEEP_BIN), *words, "--help"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60)
    usage = re.search(r"^Usage: \S+ (.*)$", res.stdout, re.M)
    return res.returncode == 0 and bool(usage) and usage.group(1).startswith(" ".join(words) + " ")


def require_subcommand(*words: str) -> None:
    require_binary()
    if not has_subcommand(*words):
        msg = f"{MAILKEEP_BIN} has no `{' '.join(words)}` yet"
        if os.environ.get("MAILKEEP_REQUIRE_BINARY") == "1":
            pytest.fail(msg)
        pytest.skip(msg)




def sanitizer_report(text: str) -> bool:
    return "AddressSanitizer" in text or "runtime error:" in text or "LeakSanitizer" in text


# --------------------------------------------------------------------------- files

def chown_mail(path: Path) -> None:
    """path and everything below it to uid/gid 8 (Dovecot's mail processes, `[general] user = mail`)."""
    os.chown(path, MAIL_UID, MAIL_GID)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), MAIL_UID, MAIL_GID)


def make_folder(maildir: Path, folder: str) -> Path:
    """A Maildir (INBOX) or Maildir++ folder with cur/ new/ tmp/, owned by uid 8; returns its path."""
    d = maildir if folder == "INBOX" else maildir / f".{folder}"
    for sub in ("cur", "new", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    if folder != "INBOX":
        (d / "maildirfolder").touch()
    chown_mail(maildir)
    return d


_seq = itertools.count(1)


def maildir_name(size: int, when: int | None = None) -> str:
    """A unique Maildir base name of the archive's shape: time.M<usec>P<pid>Q<seq>.host,S=<size>."""
    now = time.time()
    t = int(now) if when is None else when
    return f"{t}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{next(_seq)}.mailkeep-test,S={size}"


def write_message(maildir: Path, folder: str, data: bytes, flags: str | None = None,
                  when: int | None = None) -> Path:
    """Writes data as one message of folder: new/<name> when flags is None, else cur/<name>:2,<flags>.
    tmp/ first, then rename (as a delivery agent does); owned by uid 8."""
    d = maildir if folder == "INBOX" else maildir / f".{folder}"
    if not (d / "cur").is_dir():
        make_folder(maildir, folder)
    base = maildir_name(len(data), when)
    tmp = d / "tmp" / base
    tmp.write_bytes(data)
    os.chown(tmp, MAIL_UID, MAIL_GID)
    tmp.chmod(0o600)
    dest = d / "new" / base if flags is None else d / "cur" / f"{base}:2,{''.join(sorted(flags))}"
    os.rename(tmp, dest)
    return dest


_MID = re.compile(rb"^Message-ID:[ \t]*(?:\r?\n[ \t]+)?<([^>\r\n]*)>", re.I | re.M)


def header_section(data: bytes) -> bytes:
    m = re.search(rb"\r?\n\r?\n", data)
    return data[:m.start() + 1] if m else data


def parse_message_id(data: bytes) -> str:
    """The first Message-ID of the header section, without <> ("" when none)."""
    m = _MID.search(header_section(data))
    return m.group(1).decode("utf-8", "replace") if m else ""


@dataclass
class MailFile:
    folder: str        # INBOX, Archive, ...
    sub: str           # new | cur
    name: str          # file name
    path: Path
    message_id: str

    @property
    def base(self) -> str:
        return self.name.split(":2,", 1)[0]

    @property
    def flags(self) -> str:
        return "".join(sorted(self.name.split(":2,", 1)[1])) if ":2," in self.name else ""

    @property
    def rel(self) -> str:
        prefix = "" if self.folder == "INBOX" else f".{self.folder}/"
        return f"{prefix}{self.sub}/{self.name}"


def account_folders(maildir: Path) -> list[str]:
    out = ["INBOX"]
    if maildir.is_dir():
        out += sorted(p.name[1:] for p in maildir.iterdir()
                      if p.is_dir() and p.name.startswith(".") and len(p.name) > 1
                      and ((p / "cur").is_dir() or (p / "new").is_dir()))
    return out


def walk_account(maildir: Path, read_ids: bool = True) -> list[MailFile]:
    """Every file in new/ and cur/ of every folder of the account."""
    out = []
    for folder in account_folders(maildir):
        d = maildir if folder == "INBOX" else maildir / f".{folder}"
        for sub in ("new", "cur"):
            if not (d / sub).is_dir():
                continue
            for p in sorted((d / sub).iterdir()):
                if not p.is_file():
                    continue
                mid = parse_message_id(p.read_bytes()[:65536]) if read_ids else ""
                out.append(MailFile(folder, sub, p.name, p, mid))
    return out


def check_name_and_size(path: Path) -> str | None:
    """None when the file name is a Maildir name whose ,S= is the file's size, else why not."""
    m = MAILDIR_NAME.match(path.name)
    if not m:
        return f"{path}: not a Maildir name of the archive's shape (time.MusecPpidQseq.host,S=size[:2,FLAGS])"
    size = path.stat().st_size
    if int(m.group(6)) != size:
        return f"{path}: S={m.group(6)} but the file has {size} bytes"
    return None


# --------------------------------------------------------------------------- messages

def build_message(mid: str, subject: str, date: str = "Sat, 28 Nov 2026 12:00:00 +0000",
                  body: str | None = None, sender: str = "bob@remote.test", to: str = USER,
                  extra_headers: str = "") -> bytes:
    """A small CRLF message with Message-ID <mid>."""
    if body is None:
        body = "".join(f"{subject} line {i}\r\n" for i in range(8))
    return (f"{extra_headers}From: Bob <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{mid}>\r\nDate: {date}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}").encode()


# --------------------------------------------------------------------------- the CLI

@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    def __str__(self) -> str:
        return (f"`mailkeep {' '.join(self.args)}` -> exit {self.returncode} in {self.elapsed:.2f}s; "
                f"stdout {self.stdout[-600:]!r}; stderr {self.stderr[-1200:]!r}")

    def last(self, pattern: re.Pattern) -> tuple[int, ...] | None:
        found = pattern.findall(self.stdout)
        return tuple(int(x) for x in found[-1][:4]) if found else None


def run_cli(*args: str, timeout: float = 300) -> Run:
    start = time.monotonic()
    res = subprocess.run([str(MAILKEEP_BIN), *args], capture_output=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    return Run(list(args), res.returncode, res.stdout.decode("utf-8", "replace"),
               res.stderr.decode("utf-8", "replace"), time.monotonic() - start)


class Cli:
    """The account-level commands for one INI file."""

    def __init__(self, config_path: Path, user: str = USER):
        self.config = str(config_path)
        self.user = user
        self.history: list[Run] = []

    def _run(self, *args: str, timeout: float = 300) -> Run:
        r = run_cli(*args, timeout=timeout)
        self.history.append(r)
        assert not sanitizer_report(r.stderr), f"sanitizer report: {r}"
        return r

    def index(self, rebuild: bool = False, user: str | None = None, check: bool = True) -> Run:
        args = ["archive", "index", "-c", self.config]
        if user:
            args += ["--user", user]
        if rebuild:
            args.append("--rebuild")
        r = self._run(*args)
        if check:
            assert r.returncode == 0 and r.last(INDEX_LINE), f"archive index failed: {r}"
        return r

    def search_run(self, query: str, limit: int = 100000, messages: bool = True) -> Run:
        args = ["search", "-c", self.config, "--user", self.user, "--json", "--limit", str(limit)]
        if messages:
            args.append("--messages")
        return self._run(*args, "--", query)

    def search(self, query: str, limit: int = 100000) -> list[dict]:
        """search --messages --json: the messages (asserting exit 0 and an exact page)."""
        r = self.search_run(query, limit)
        assert r.returncode == 0, f"search {query!r} failed: {r}"
        try:
            doc = json.loads(r.stdout)
        except ValueError as exc:
            raise AssertionError(f"search {query!r}: not JSON ({exc}): {r.stdout[:400]!r}")
        msgs = doc["messages"]
        assert len(msgs) < limit, f"search {query!r}: the page is full ({limit}); raise the limit"
        return msgs

    def search_ids(self, query: str) -> set[str]:
        return {m["message_id"] for m in self.search(query)}

    def modify(self, query: str, *actions: str, check: bool = True) -> Run:
        r = self._run("archive", "modify", "-c", self.config, "--user", self.user, query, *actions)
        if check:
            assert r.returncode == 0 and r.last(MODIFY_LINE), \
                f"archive modify {query!r} {' '.join(actions)} failed (spec: exit 0, last line " \
                f"`modified N messages (M moved, F flag changes, L label changes)`): {r}"
        return r

    def import_(self, *files: Path, check: bool = True, timeout: float = 600) -> Run:
        r = self._run("archive", "import", "-c", self.config, "--user", self.user, *map(str, files),
                      timeout=timeout)
        if check:
            assert r.returncode == 0 and r.last(IMPORT_LINE), \
                f"archive import failed (spec: exit 0, last line `imported N messages (D duplicates " \
                f"skipped, E errors) from K files`): {r}"
        return r

    def args(self, *words: str) -> list[str]:
        """argv of `mailkeep WORDS... -c INI --user USER` (for commands run in the background)."""
        return [str(MAILKEEP_BIN), *words[:2], "-c", self.config, "--user", self.user, *words[2:]]

    def import_cmd(self, *files: Path) -> list[str]:
        return [str(MAILKEEP_BIN), "archive", "import", "-c", self.config, "--user", self.user, *map(str, files)]

    def index_cmd(self) -> list[str]:
        return [str(MAILKEEP_BIN), "archive", "index", "-c", self.config]


def state_from_search(msgs: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """{Message-ID: [(folder, flags), ...]} from search --messages --json."""
    out: dict[str, list[tuple[str, str]]] = {}
    for m in msgs:
        out.setdefault(m["message_id"], []).append((m["folder"], m["flags"]))
    return out


def state_from_disk(files: list[MailFile]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for f in files:
        out.setdefault(f.message_id, []).append((f.folder, f.flags))
    return out


def compare_states(where: str, expected: dict[str, tuple[str, str]], got: dict[str, list[tuple[str, str]]],
                   history: dict[str, list[str]] | None = None, show: int = 8) -> list[str]:
    """Differences between the model ({mid: (folder, flags)}) and an observed state, as text lines."""
    problems = []
    for mid, want in sorted(expected.items()):
        have = got.get(mid, [])
        if have != [want]:
            line = f"{where}: <{mid}> expected {want}, found {have or 'nothing'}"
            if history and mid in history:
                line += "; its operations: " + " | ".join(history[mid][-6:])
            problems.append(line)
    for mid in sorted(set(got) - set(expected)):
        problems.append(f"{where}: unexpected message <{mid}>: {got[mid]}")
    if len(problems) > show:
        problems = problems[:show] + [f"{where}: ... {len(problems) - show} more"]
    return problems


# --------------------------------------------------------------------------- IMAP

def imap_flags_to_letters(text: str) -> str:
    return "".join(sorted(IMAP_TO_LETTER[f.lower()] for f in text.split() if f.lower() in IMAP_TO_LETTER))


_FETCH_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_FETCH_UID = re.compile(rb"UID (\d+)")


class Imap:
    """imaplib.IMAP4 logged in as alice; every command checked for OK."""

    def __init__(self, dovecot: Dovecot, user: str = USER, timeout: float = 60):
        self.c = imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=timeout)
        typ, data = self.c.login(user, Dovecot.PASSWORD)
        assert typ == "OK", f"IMAP LOGIN: {typ} {data}"
        self.selected: str | None = None

    def ok(self, res, what: str):
        typ, data = res
        assert typ == "OK", f"IMAP {what}: {typ} {data}"
        return data

    def close(self) -> None:
        try:
            self.c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass

    def __enter__(self) -> "Imap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- folders
    def list_folders(self) -> list[str]:
        data = self.ok(self.c.list(), "LIST")
        out = []
        for line in data:
            if not line:
                continue
            text = line.decode("utf-8", "replace")
            m = re.match(r'\((?P<attrs>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$', text)
            assert m, f"unexpected LIST line {text!r}"
            if "\\noselect" in m.group("attrs").lower():
                continue
            name = m.group("name")
            if name.startswith('"') and name.endswith('"'):
                name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            out.append(name)
        return out

    def create(self, folder: str) -> None:
        typ, data = self.c.create(folder)
        assert typ == "OK" or b"exists" in b" ".join(d for d in data if d).lower(), f"IMAP CREATE {folder}: {typ} {data}"

    def select(self, folder: str, readonly: bool = False) -> int:
        data = self.ok(self.c.select(folder, readonly=readonly), f"SELECT {folder}")
        self.selected = folder
        return int(data[0])

    def noop(self) -> None:
        self.ok(self.c.noop(), "NOOP")

    def status(self, folder: str) -> tuple[int, int]:
        """(MESSAGES, UNSEEN) of folder."""
        data = self.ok(self.c.status(folder, "(MESSAGES UNSEEN)"), f"STATUS {folder}")
        text = data[0].decode()
        msgs = int(re.search(r"MESSAGES (\d+)", text).group(1))
        unseen = int(re.search(r"UNSEEN (\d+)", text).group(1))
        return msgs, unseen

    def uids_of(self, mid: str) -> list[bytes]:
        """UIDs in the selected folder of messages whose Message-ID contains <mid>."""
        data = self.ok(self.c.uid("SEARCH", None, "HEADER", "Message-ID", f'"<{mid}>"'), f"SEARCH {mid}")
        return data[0].split() if data and data[0] else []

    def fetch_all(self) -> list[tuple[int, str, str]]:
        """[(uid, Message-ID, flag letters)] of the selected folder."""
        typ, data = self.c.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", f"IMAP FETCH in {self.selected}: {typ} {data}"
        out = []
        i = 0
        while i < len(data):
            item = data[i]
            if isinstance(item, tuple):
                meta, literal = item[0], item[1]
                tail = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
                whole = meta + b" " + tail
                fm = _FETCH_FLAGS.search(whole)
                um = _FETCH_UID.search(whole)
                assert fm and um, f"unexpected FETCH response {item!r} {tail!r}"
                out.append((int(um.group(1)), parse_message_id(literal + b"\r\n\r\n"),
                            imap_flags_to_letters(fm.group(1).decode())))
            i += 1
        return out

    def flags_of(self, mid: str) -> str | None:
        for _, m, flags in self.fetch_all():
            if m == mid:
                return flags
        return None

    def snapshot(self, errors: list[str] | None = None) -> dict[str, list[tuple[str, str]]]:
        """{Message-ID: [(folder, flags), ...]} over every selectable folder (LIST, SELECT, FETCH).
        errors: a list to note folders Dovecot cannot SELECT in (and go on), instead of raising."""
        out: dict[str, list[tuple[str, str]]] = {}
        for folder in self.list_folders():
            if errors is not None:
                typ, data = self.c.select(folder)
                if typ != "OK":
                    errors.append(f"IMAP SELECT {folder}: {typ} {data}")
                    continue
                self.selected = folder
                if int(data[0]) == 0:
                    continue
            elif self.select(folder) == 0:
                continue
            try:
                rows = self.fetch_all()
            except (imaplib.IMAP4.error, AssertionError) as exc:
                if errors is None:
                    raise
                errors.append(f"IMAP FETCH in {folder}: {exc}")
                if isinstance(exc, imaplib.IMAP4.abort):
                    break               # the connection is gone
                continue
            for _, mid, flags in rows:
                out.setdefault(mid, []).append((folder, flags))
        return out

    # -- changes (the selected folder)
    def store(self, uid: bytes, op: str, letters: str) -> None:
        flags = " ".join(LETTER_TO_IMAP[c] for c in letters)
        self.ok(self.c.uid("STORE", uid, f"{op}FLAGS.SILENT", f"({flags})"), f"STORE {uid} {op}{flags}")

    def move(self, uid: bytes, dest: str) -> None:
        self.ok(self.c.uid("MOVE", uid, dest), f"MOVE {uid} {dest}")

    def copy_delete_expunge(self, uid: bytes, dest: str) -> None:
        self.ok(self.c.uid("COPY", uid, dest), f"COPY {uid} {dest}")
        self.store(uid, "+", "T")
        self.ok(self.c.expunge(), "EXPUNGE")

    def delete(self, uid: bytes) -> None:
        self.store(uid, "+", "T")
        self.ok(self.c.expunge(), "EXPUNGE")


def start_dovecot(base: Path, maildir: Path) -> Dovecot:
    d = Dovecot(base, {USER: maildir})
    base.mkdir(parents=True, exist_ok=True)
    return d.start()


# --------------------------------------------------------------------------- the environment

def mailbox_config(base: Path, *, index_enabled: bool = True, user: str = "root",
                   smtp_port: int | None = None, smarthost: str = "127.0.0.1:9",
                   upstream: str | None = None, scan_interval: int = 3600,
                   index_path: Path | None = None) -> dict:
    """The INI (as a dict for harness.render_ini) of an ArchiveEnv: backup_support's config with
    [backup] domains = example.org, accounts = <base>/accounts.txt (alice), archive = <base>/archive
    and [index] path = <base>/index."""
    overrides = {"index": {"path": str(index_path or base / "index"),
                           "enabled": "true" if index_enabled else "false",
                           "scan_interval": scan_interval}}
    return backup_config(smtp_port or free_port(), smarthost, base / "archive", base / "accounts.txt",
                         upstream, user, **overrides)


def write_ini(path: Path, config: dict) -> Path:
    path.write_text(render_ini(config))
    path.chmod(0o644)
    return path


@dataclass
class ArchiveEnv:
    base: Path
    config_path: Path
    config: dict
    cli: Cli
    mk: Mailkeep | None = None           # `mailkeep serve`, when started
    inbound: Capture | None = None
    outbound: Capture | None = None
    dovecot: Dovecot | None = None
    extra: list = field(default_factory=list)

    @property
    def archive(self) -> Path:
        return self.base / "archive"

    @property
    def maildir(self) -> Path:
        return self.archive / DOMAIN / "alice"

    @property
    def index_dir(self) -> Path:
        return Path(self.config["index"]["path"])

    def files(self, read_ids: bool = True) -> list[MailFile]:
        return walk_account(self.maildir, read_ids)

    def start_dovecot(self) -> Dovecot:
        if self.dovecot is None:
            self.dovecot = start_dovecot(self.base / "dovecot", self.maildir)
        return self.dovecot

    def imap(self) -> Imap:
        return Imap(self.start_dovecot())

    def deliver(self, messages: list[bytes], sender: str = "sender@remote.test", timeout: float = 30) -> None:
        """Inbound SMTP to alice through `mailkeep serve`; waits until every copy is in new/ or cur/."""
        import smtplib
        assert self.mk is not None, "deliver() needs serve=True"
        before = len(self.files(read_ids=False))
        s = smtplib.SMTP(self.mk.host, self.mk.port, timeout=60)
        try:
            s.ehlo("mx.sender.test")
            for msg in messages:
                refused = s.sendmail(sender, [USER], msg, mail_options=mail_options(msg))
                assert refused == {}, refused
        finally:
            s.quit()
        deadline = time.monotonic() + timeout
        while len(self.files(read_ids=False)) < before + len(messages):
            assert time.monotonic() < deadline, \
                f"only {len(self.files(read_ids=False)) - before} of {len(messages)} SMTP deliveries reached the archive"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.dovecot is not None:
            print(f"--- dovecot log ({self.dovecot.logfile}) ---")
            print("\n".join(self.dovecot.log().splitlines()[-40:]))
            self.dovecot.stop()
        if self.mk is not None:
            code = self.mk.stop()
            print(f"--- mailkeep log ({self.mk.stderr_path}, exit {code}) ---")
            print("\n".join(self.mk.log().splitlines()[-60:]))
        for cap in (self.inbound, self.outbound):
            if cap is not None:
                cap.stop()
        for r in self.cli.history[-15:]:
            print(f"--- {r}")


def make_env(serve: bool = False, serve_user: str = "mail", index_enabled: bool = True,
             folders: tuple[str, ...] = STANDARD_FOLDERS, scan_interval: int = 3600,
             prefix: str = "mailkeep-mbox-", cli_user: str = "mail") -> ArchiveEnv:
    """A fresh ArchiveEnv. folders: created up front (owned by uid 8, as Dovecot would create
    them) -- () leaves even alice's Maildir to whoever writes first. serve: start `mailkeep serve`
    (as `serve_user`) with [index] enabled = index_enabled; otherwise the INI is for the CLI only,
    with `[general] user = cli_user` (the deployment's: serve runs as mail, whose archive Dovecot
    serves as uid 8; the commands themselves are run as root, as an administrator would)."""
    base = public_tempdir(prefix)
    write_accounts(base / "accounts.txt", ["alice"])
    archive = base / "archive"
    archive.mkdir()
    (base / "index").mkdir()
    chown_mail(archive)
    chown_mail(base / "index")
    inbound = outbound = None
    if serve:
        inbound, outbound = Capture().start(), Capture().start()
        config = mailkeep_config = mailbox_config(base, index_enabled=index_enabled, user=serve_user,
                                                  smarthost=outbound.address, upstream=inbound.address,
                                                  scan_interval=scan_interval)
        config["http"]["listen"] = f"127.0.0.1:{free_port()}"
    else:
        config = mailkeep_config = mailbox_config(base, index_enabled=index_enabled, scan_interval=scan_interval,
                                                  user=cli_user)
    config_path = write_ini(base / "mailkeep.ini", mailkeep_config)
    env = ArchiveEnv(base, config_path, config, Cli(config_path), inbound=inbound, outbound=outbound)
    if folders:
        maildir = archive / DOMAIN / "alice"
        for f in folders:
            make_folder(maildir, f)
        chown_mail(archive)
    if serve:
        mk = Mailkeep(base / "mailkeep", config)
        mk.config_path.chmod(0o644)
        mk.workdir.chmod(0o755)
        env.mk = mk
        try:
            mk.start()
        except Exception:
            env.stop()
            shutil.rmtree(base, ignore_errors=True)
            raise
    return env


@pytest.fixture
def archive_env(mailkeep_bin):
    """Factory: archive_env(serve=False, ...) -> ArchiveEnv (see make_env). Everything is
    stopped and removed at teardown; logs are printed (pytest shows them on failure)."""
    envs: list[ArchiveEnv] = []

    def start(**kwargs) -> ArchiveEnv:
        env = make_env(**kwargs)
        envs.append(env)
        return env

    yield start
    for env in envs:
        env.stop()
        shutil.rmtree(env.base, ignore_errors=True)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


__all__ = [
    "USER", "DOMAIN", "STANDARD_FOLDERS", "INDEX_LINE", "MODIFY_LINE", "IMPORT_LINE",
    "ArchiveEnv", "Cli", "Imap", "MailFile", "Run", "archive_env", "asan_build", "build_message",
    "check_name_and_size", "chown_mail", "compare_states", "make_env", "make_folder", "mailbox_config",
    "parse_message_id", "require_binary", "require_subcommand", "run_cli", "state_from_disk",
    "state_from_search", "walk_account", "write_ini", "write_message",
]
