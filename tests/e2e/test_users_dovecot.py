"""`mailkeep user ...` (the Dovecot passwd-file) and Dovecot started from exactly the output
of `mailkeep dovecot-config` (/work/standalone_spec.md, "Commands").

The passwords are set with `mailkeep user passwd` (--stdin, and once through a real pty
answering both prompts); `doveadm pw -t` verifies the stored {ARGON2ID} hash; Dovecot logs
in with them over IMAP, refuses wrong passwords and locked accounts, shows the special-use
folders, and serves mail that mailkeep archived byte for byte.
"""

from __future__ import annotations

import grp
import os
import pty
import re
import select
import signal
import socket
import shutil
import subprocess
import termios
import ssl
import stat
import threading
import time
import imaplib

import pytest

from backup_support import DOMAIN, MAIL_UID
from harness import RawSMTP
from standalone_support import (  # noqa: F401  (pytest fixtures)
    MAILKEEP, MkDovecot, SwitchCapture, close_imap, imap_folder, imap_login, pki, site_factory,
    split_prefix, tagged_message,
)

ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
PW_ALICE = "Tr0ub4dor&3-alice"
PW_BOB = "correct horse battery staple"
ENTRY = re.compile(r"^([^:]+):(\{ARGON2ID\}\$argon2id\$[^:]+):")


@pytest.fixture
def captures():
    up, smart = SwitchCapture().start(), SwitchCapture().start()
    yield up, smart
    up.stop()
    smart.stop()


def entries(site) -> dict[str, str]:
    """{address: the passwd-file line}."""
    if not site.passwd.exists():
        return {}
    out = {}
    for line in site.passwd.read_text().splitlines():
        if line.strip():
            out[line.split(":", 1)[0]] = line
    return out


def stored_hash(site, address: str) -> str:
    m = ENTRY.match(entries(site)[address])
    assert m, f"not a {{ARGON2ID}} entry: {entries(site)[address]!r}"
    return m.group(2)


def doveadm_verifies(hash_: str, password: str) -> bool:
    res = subprocess.run(["doveadm", "pw", "-t", hash_, "-p", password], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=30)
    if res.returncode == 0:
        assert "(verified)" in res.stdout, res.stdout
    return res.returncode == 0


def check_file_mode(site) -> None:
    st = site.passwd.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640, f"{site.passwd}: mode {oct(stat.S_IMODE(st.st_mode))}"
    assert st.st_uid == MAIL_UID, f"{site.passwd}: owner uid {st.st_uid}, expected {MAIL_UID} ([general] user)"
    assert st.st_gid == grp.getgrnam("dovecot").gr_gid, f"{site.passwd}: group {st.st_gid}, expected dovecot"


def user_list(site) -> list[tuple[str, str, str]]:
    res = site.cli("user", "list")
    assert res.returncode == 0, res.stderr
    rows = [tuple(line.split("\t")) for line in res.stdout.splitlines() if line]
    assert all(len(r) == 3 for r in rows), res.stdout
    return rows


# --------------------------------------------------------------------------- a pty

def run_on_pty(argv: list[str], answers: list[str], timeout: float = 30,
               wait_for_no_echo: bool = True, stop_on: bytes | None = None) -> tuple[int | None, bytes]:
    """Run argv on a new pty (its controlling terminal) and answer each "...password: " prompt
    with a line, as a person would: after the prompt is shown and (wait_for_no_echo) once the
    terminal no longer echoes. Returns (exit code or None if it had to be killed after `timeout`,
    everything the terminal showed). With stop_on, the program is killed as soon as the terminal
    shows those bytes (the test has seen enough)."""
    pid, fd = pty.fork()
    if pid == 0:       # child
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + timeout
    pending = list(answers)
    prompts = 0
    code: int | None = None
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:      # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if stop_on and stop_on in out:
                    os.killpg(pid, signal.SIGKILL)   # the pty session: strace and its child
                    break
            if pending and out.count(b"password: ") > prompts:
                if wait_for_no_echo and termios.tcgetattr(fd)[3] & termios.ECHO:
                    continue         # the program has not switched the echo off yet
                prompts += 1
                os.write(fd, pending.pop(0).encode() + b"\n")
        else:
            os.killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == -signal.SIGKILL:
            code = None
    finally:
        os.close(fd)
    return code, out


# --------------------------------------------------------------------------- the CLI

def test_user_commands_and_passwd_file(site_factory):
    site = site_factory("127.0.0.1:1", "127.0.0.1:1", users=["alice", "bob", "carol"], start=False)
    outputs: list[str] = []

    def cli(*args, **kw):
        res = site.cli(*args, **kw)
        outputs.append(res.stdout + res.stderr)
        return res

    assert user_list(site) == []

    res = cli("user", "passwd", ALICE, "--stdin", input=PW_ALICE + "\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"password set for {ALICE}"
    check_file_mode(site)
    h1 = stored_hash(site, ALICE)
    assert doveadm_verifies(h1, PW_ALICE)
    assert not doveadm_verifies(h1, PW_ALICE + "x")
    assert user_list(site) == [(ALICE, "active", "ARGON2ID")]

    # --stdin reads the first line only
    res = cli("user", "passwd", BOB, "--stdin", input=PW_BOB + "\nsecond line ignored\n")
    assert res.returncode == 0, res.stderr
    assert doveadm_verifies(stored_hash(site, BOB), PW_BOB)
    assert not doveadm_verifies(stored_hash(site, BOB), PW_BOB + "\nsecond line ignored")
    assert sorted(user_list(site)) == [(ALICE, "active", "ARGON2ID"), (BOB, "active", "ARGON2ID")]

    # exactly 8 characters is enough; a new password gets a new salt and replaces the old one
    res = cli("user", "passwd", ALICE, "--stdin", input="8chars!!\n")
    assert res.returncode == 0, res.stderr
    h2 = stored_hash(site, ALICE)
    assert h2 != h1 and doveadm_verifies(h2, "8chars!!") and not doveadm_verifies(h2, PW_ALICE)
    res = cli("user", "passwd", ALICE, "--stdin", input=PW_ALICE + "\n")
    assert res.returncode == 0
    h3 = stored_hash(site, ALICE)
    assert h3 != h1, "the same password twice must not give the same hash (salt)"
    assert doveadm_verifies(h3, PW_ALICE)

    # refusals change nothing
    before = site.passwd.read_bytes()
    for args, stdin, needle in [
        (("user", "passwd", f"carl@{DOMAIN}", "--stdin"), "longenough1\n", "is not an archived account"),
        (("user", "passwd", "alice@example.net", "--stdin"), "longenough1\n", "is not an archived account"),
        (("user", "passwd", "alice@elsewhere.test", "--stdin"), "longenough1\n", "is not an archived account"),
        (("user", "passwd", BOB, "--stdin"), "7chars!\n", "too short"),
        (("user", "passwd", BOB, "--stdin"), "\n", "too short"),
        (("user", "passwd", BOB), "longenough1\n", "not a terminal"),          # no tty, no --stdin
        (("user", "lock", f"carol@{DOMAIN}"), None, "has no password"),
        (("user", "unlock", f"carol@{DOMAIN}"), None, "has no password"),
        (("user", "delete", f"carol@{DOMAIN}"), None, "has no password"),
        (("user", "lock", f"nobody@{DOMAIN}"), None, ""),
    ]:
        res = cli(*args, input=stdin)
        assert res.returncode == 1, f"{args}: exit {res.returncode}, {res.stdout!r} {res.stderr!r}"
        assert needle in res.stderr, f"{args}: {res.stderr!r}"
        assert site.passwd.read_bytes() == before, f"{args} changed the passwd-file"
    assert doveadm_verifies(stored_hash(site, BOB), PW_BOB)

    # lock / unlock keep the hash
    res = cli("user", "lock", ALICE)
    assert res.returncode == 0, res.stderr
    assert sorted(user_list(site)) == [(ALICE, "locked", "ARGON2ID"), (BOB, "active", "ARGON2ID")]
    assert stored_hash(site, ALICE) == h3
    check_file_mode(site)
    res = cli("user", "unlock", ALICE)
    assert res.returncode == 0, res.stderr
    assert sorted(user_list(site)) == [(ALICE, "active", "ARGON2ID"), (BOB, "active", "ARGON2ID")]
    assert stored_hash(site, ALICE) == h3
    res = cli("user", "delete", BOB)
    assert res.returncode == 0, res.stderr
    assert user_list(site) == [(ALICE, "active", "ARGON2ID")]
    assert BOB not in entries(site)
    res = cli("user", "delete", BOB)
    assert res.returncode == 1 and "has no password" in res.stderr
    check_file_mode(site)

    text = site.passwd.read_text()
    for pw in (PW_ALICE, PW_BOB, "8chars!!", "longenough1", "7chars!"):
        assert pw not in text, f"password {pw!r} in the passwd-file"
        for out in outputs:
            assert pw not in out, f"password {pw!r} in the output {out!r}"
    # the passwd-file line is one a Dovecot passwd-file understands: user:hash:uid:gid:gecos:home:shell:extra
    line = entries(site)[ALICE]
    fields = line.split(":")
    assert len(fields) >= 7, line
    assert fields[5] == str(site.archive / DOMAIN / "alice"), f"home field: {line!r}"


def test_passwd_on_a_terminal(site_factory):
    site = site_factory("127.0.0.1:1", "127.0.0.1:1", start=False)
    argv = [MAILKEEP, "user", "passwd", ALICE, "-c", str(site.config_path)]
    code, shown = run_on_pty(argv, [PW_ALICE, PW_ALICE])
    assert code == 0, shown
    assert shown.count(b"password: ") == 2, f"expected two prompts: {shown!r}"
    assert f"password set for {ALICE}".encode() in shown
    assert PW_ALICE.encode() not in shown, f"the password was echoed: {shown!r}"
    check_file_mode(site)
    h = stored_hash(site, ALICE)
    assert doveadm_verifies(h, PW_ALICE)

    # a mismatch on the second prompt changes nothing
    before = site.passwd.read_bytes()
    code, shown = run_on_pty(argv, ["another-password-1", "another-password-2"])
    assert code == 1, shown
    assert shown.count(b"password: ") == 2, shown
    assert b"do not match" in shown, shown
    assert b"another-password" not in shown
    assert site.passwd.read_bytes() == before
    assert doveadm_verifies(stored_hash(site, ALICE), PW_ALICE)

    # a short password typed on the terminal is refused too (asked twice or not: nothing changes)
    code, shown = run_on_pty(argv, ["short", "short"])
    assert code == 1, shown
    assert site.passwd.read_bytes() == before


def test_passwd_prompt_shown_only_with_echo_off(site_factory):
    """An answer typed the moment the prompt appears must be neither echoed nor lost. The window
    between the prompt and the tcsetattr is widened deterministically with strace's syscall delay
    injection (every ioctl is delayed by 0.3 s); a program that turns the echo off first and then
    prompts is not affected by the delay."""
    if not shutil.which("strace") or subprocess.run(["strace", "-o", "/dev/null", "true"],
                                                     capture_output=True).returncode != 0:
        pytest.skip("strace is not installed or may not trace here")
    site = site_factory("127.0.0.1:1", "127.0.0.1:1", start=False)
    # LeakSanitizer cannot run under ptrace (it says so and aborts): off for the ASan build's traced run.
    asan = os.environ.get("ASAN_OPTIONS", "")
    argv = ["/usr/bin/env", f"ASAN_OPTIONS={asan + ':' if asan else ''}detect_leaks=0",
            shutil.which("strace"), "-o", "/dev/null", "-e", "trace=ioctl", "-e", "inject=ioctl:delay_enter=300000",
            MAILKEEP, "user", "passwd", ALICE, "-c", str(site.config_path)]
    code, shown = run_on_pty(argv, [PW_ALICE, PW_ALICE], timeout=15, wait_for_no_echo=False,
                             stop_on=PW_ALICE.encode())
    assert PW_ALICE.encode() not in shown, f"the password was echoed on the terminal: {shown!r}"
    assert code == 0, f"exit {code}: {shown!r}"
    assert doveadm_verifies(stored_hash(site, ALICE), PW_ALICE)


# --------------------------------------------------------------------------- Dovecot

def special_use_list(imap: imaplib.IMAP4) -> dict[str, set[str]]:
    typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
    assert typ == "OK", data
    typ, lines = imap._untagged_response(typ, data, "LIST")
    out = {}
    for line in lines:
        if line is None:
            continue
        m = re.match(rb'^\(([^)]*)\) (?:"[^"]*"|NIL) "?([^"]+)"?$', line)
        assert m, line
        out[m.group(2).decode()] = {f.lower() for f in m.group(1).decode().split()}
    return out


class SourceIMAP(imaplib.IMAP4):
    """imaplib.IMAP4 from a given source address (another host on loopback)."""

    def __init__(self, host: str, port: int, source: str):
        self._source = source
        super().__init__(host, port, timeout=30)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


def dovecot_rereads() -> None:
    """Dovecot's passwd-file driver looks at the file at most once a second (db-passwd-file.c
    passwd_file_sync): a change is seen by the first lookup in a later second."""
    time.sleep(1.1)


def try_login(dovecot: MkDovecot, user: str, password: str) -> tuple[bool, str]:
    imap = dovecot.imap()
    try:
        return imap_login(imap, user, password)
    finally:
        close_imap(imap)


def logins(dovecot: MkDovecot, attempts: list[tuple[str, str]]) -> list[tuple[bool, str]]:
    """Several logins at once (Dovecot delays each failure by ~2 s)."""
    results: list = [None] * len(attempts)

    def one(i, user, pw):
        results[i] = try_login(dovecot, user, pw)

    threads = [threading.Thread(target=one, args=(i, u, p)) for i, (u, p) in enumerate(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_dovecot_from_dovecot_config(site_factory, captures):
    up, smart = captures
    site = site_factory(up.address, smart.address, users=["alice", "bob", "carol"])
    site.set_password(ALICE, PW_ALICE)
    site.set_password(BOB, PW_BOB)

    # a message archived by mailkeep (gateway mode: it also goes to the upstream)
    msg = tagged_message("imap-exact", "sender@remote.test", ALICE, size=50) \
        + b"..a line starting with a dot\r\n\xc3\xa4 8bit text\r\n"
    with RawSMTP(site.host, site.port) as c:
        c.ehlo("mx.remote.test")
        r = c.send_message("sender@remote.test", [ALICE], msg, "BODY=8BITMIME")
        assert r.code == 250, r
    files = site.delivered("alice")
    assert len(files) == 1, files
    on_disk = files[0].read_bytes()
    assert split_prefix(on_disk)[1] == msg

    dovecot = MkDovecot(site.config_path, site.base / "dovecot")
    try:
        dovecot.start()
        text = dovecot.config_text
        assert re.search(r"^ssl = no$", text, re.M), text
        assert re.search(r"^mail_uid = 8$", text, re.M), text
        imap = dovecot.imap()
        try:
            ok, why = imap_login(imap, ALICE, PW_ALICE)
            assert ok, f"{why}\n{dovecot.log()[-3000:]}"
            folders = special_use_list(imap)
            expected = {"INBOX": None, "Sent": "\\sent", "Junk": "\\junk", "Archive": "\\archive",
                        "Trash": "\\trash"}
            assert set(folders) == set(expected), folders
            for name, flag in expected.items():
                if flag:
                    assert flag in folders[name], f"{name}: {folders[name]}"
            # auto = subscribe: listed before they exist (Dovecot creates them lazily), selectable
            for name in ("Sent", "Junk", "Archive", "Trash"):
                typ, data = imap.select(name, readonly=True)
                assert typ == "OK" and int(data[0]) == 0, f"SELECT {name}: {typ} {data}"
                assert site.folder("alice", name).is_dir(), f".{name} not created by SELECT"
            typ, subscribed = imap.lsub()
            assert typ == "OK"
            names = {s.decode().rsplit(" ", 1)[-1].strip('"') for s in subscribed}
            assert {"Sent", "Junk", "Archive", "Trash"} <= names, names
            bodies = imap_folder(imap, "INBOX")
            assert bodies == [on_disk], "IMAP BODY[] differs from the archived file"
            assert split_prefix(bodies[0])[1] == msg
        finally:
            close_imap(imap)

        # Dovecot delays every failed login (auth_failure_delay) and penalises the client IP
        # after failures: successes first, the failures together at the end.
        # The case of the login name does not matter (username_format=%Lu).
        for user, pw in ((BOB, PW_BOB), (ALICE.upper(), PW_ALICE)):
            ok, why = try_login(dovecot, user, pw)
            assert ok, f"{user}: {why}"
        # plaintext logins only from this machine's own address (disable_plaintext_auth = yes)
        imap = SourceIMAP("127.0.0.1", dovecot.port, "127.0.0.5")
        try:
            assert "LOGINDISABLED" in imap.capabilities, imap.capabilities
            ok, why = imap_login(imap, BOB, PW_BOB)
            assert not ok and "PRIVACYREQUIRED" in why, why
        finally:
            close_imap(imap)

        # locked: the right password is refused; unlock restores it
        assert site.cli("user", "lock", ALICE).returncode == 0
        dovecot_rereads()
        assert try_login(dovecot, BOB, PW_BOB)[0], "locking alice locked bob"
        ok, why = try_login(dovecot, ALICE, PW_ALICE)
        assert not ok, "a locked account logged in"
        assert "CONTACTADMIN" in why, why
        assert site.cli("user", "unlock", ALICE).returncode == 0
        dovecot_rereads()
        ok, why = try_login(dovecot, ALICE, PW_ALICE)
        assert ok, why

        # a new password takes effect while Dovecot runs; delete ends bob's logins
        site.set_password(ALICE, "a-new-password-2")
        assert site.cli("user", "delete", BOB).returncode == 0
        dovecot_rereads()
        ok, why = try_login(dovecot, ALICE, "a-new-password-2")
        assert ok, why
        results = logins(dovecot, [
            (ALICE, PW_ALICE), (BOB, PW_BOB), (ALICE, PW_BOB), (f"carol@{DOMAIN}", "whatever-pw"),
            (f"nobody@{DOMAIN}", "a-new-password-2"),
        ])
        assert [ok for ok, _ in results] == [False] * 5, results

        for pw in (PW_ALICE, PW_BOB, "a-new-password-2"):
            assert pw not in site.log()
            assert pw not in site.passwd.read_text()
    finally:
        dovecot.stop()
        print("--- dovecot log ---")
        print("\n".join(dovecot.log().splitlines()[-40:]))


def test_dovecot_config_with_tls(site_factory, captures, pki):
    up, smart = captures
    site = site_factory(up.address, smart.address, pki=pki)      # serve creates the account Maildirs
    site.set_password(ALICE, PW_ALICE)
    dovecot = MkDovecot(site.config_path, site.base / "dovecot", tls=True)
    try:
        dovecot.start()
        text = dovecot.config_text
        assert re.search(r"^ssl = required$", text, re.M), text
        assert site.config["tls"]["cert"] in text
        ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
        imap = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=ctx, timeout=30)
        try:
            assert imap.sock.version() in ("TLSv1.2", "TLSv1.3")
            ok, why = imap_login(imap, ALICE, PW_ALICE)
            assert ok, f"{why}\n{dovecot.log()[-2000:]}"
            typ, data = imap.select("INBOX", readonly=True)
            assert typ == "OK", data
        finally:
            close_imap(imap)
        # STARTTLS on the IMAP port with the same certificate
        imap = dovecot.imap()
        try:
            imap.starttls(ssl_context=ctx)
            ok, why = imap_login(imap, ALICE, PW_ALICE)
            assert ok, why
        finally:
            close_imap(imap)
        # ssl = required: another host sends no password before STARTTLS (Dovecot counts a
        # connection from 127.0.0.1 to itself as secured), and may after it
        imap = SourceIMAP("127.0.0.1", dovecot.port, "127.0.0.5")
        try:
            ok, why = imap_login(imap, ALICE, PW_ALICE)
            assert not ok and "PRIVACYREQUIRED" in why, why
        finally:
            close_imap(imap)
        imap = SourceIMAP("127.0.0.1", dovecot.port, "127.0.0.5")
        try:
            imap.starttls(ssl_context=ctx)
            ok, why = imap_login(imap, ALICE, PW_ALICE)
            assert ok, why
        finally:
            close_imap(imap)
        # a client that does not trust the test CA fails the handshake
        with pytest.raises(ssl.SSLError):
            imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=ssl.create_default_context(),
                              timeout=30)
    finally:
        dovecot.stop()
        print("--- dovecot log ---")
        print("\n".join(dovecot.log().splitlines()[-40:]))


def test_dovecot_config_refuses_root(site_factory):
    site = site_factory("127.0.0.1:1", "127.0.0.1:1", user="root", start=False)
    dovecot = MkDovecot(site.config_path, site.base / "dovecot")
    res = dovecot.generate()
    assert res.returncode == 1, (res.returncode, res.stdout[:500])
    assert "root" in res.stderr and "[general] user" in res.stderr, res.stderr
    assert "passdb" not in res.stdout, "a configuration was printed anyway"
