"""spamass-milter (Debian's spamass-milter) in front of SpamAssassin's spamd as a real milter:
GTUBE is rejected at DATA with spamass-milter's own reply, ham goes through with the X-Spam-*
header fields spamass-milter adds, the same bytes in the relayed copy and in the archive copy.

spamd runs in the foreground on a free loopback port with local tests only (-L, no network),
its site configuration (Debian's .pre files plus a local.cf without Bayes) and helper home dir
in a 0755 directory under /var/tmp (spamd drops to debian-spamd before it reads its
configuration, and pytest's tmp_path sits below a 0700 directory); the rules are the ones
Debian ships in /usr/share/spamassassin (sa-update's would be in /var/lib/spamassassin).
spamass-milter listens on a unix socket in tmp_path and runs spamc against that spamd for each
message. Both are started once for the module, each in its own process group, and stopped (with
their children: spamd's preforked workers, spamass-milter's spamc) at teardown; libmilter takes
about 5 s to notice SIGTERM, most of the file's run time."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from backup_support import backup_gateway, make_message, public_tempdir  # noqa: F401  (fixture)
from harness import free_port
from test_milter import archived_bodies, gateway, send

SPAMD = shutil.which("spamd") or "/usr/sbin/spamd"
SPAMASS_MILTER = shutil.which("spamass-milter") or "/usr/sbin/spamass-milter"
SPAMC = shutil.which("spamc") or "/usr/bin/spamc"
# Release only, like the OpenDKIM tests: this file is about spamass-milter's side; the ASan pass
# repeats the script and hostile milter tests (test_milter.py) that take mailkeep's code there.
pytestmark = [pytest.mark.skipif(not all(Path(p).exists() for p in (SPAMD, SPAMASS_MILTER, SPAMC)),
                                 reason="spamd, spamc or spamass-milter is not installed "
                                        "(Debian packages spamd, spamc, spamass-milter)"),
              pytest.mark.release_only]

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SITE_PRE = Path("/etc/spamassassin")      # Debian's v3xx/v4xx.pre: the plugins (Check among them)
SPAMD_USER = "debian-spamd"                # the spamd package's user; as root spamd wants -u


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to proc (spamd passes it on to its workers as SIGINT), then SIGKILL to whatever is
    left of the process group we created for it (a stuck worker, a spamc in flight)."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)     # children (spamd workers, spamc) that outlived it
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


def spamd_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """spamd opens its port before it has loaded its rules; it is ready when it answers PING."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"spamd exited with code {proc.returncode} before it answered PING")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"PING SPAMC/1.5\r\n\r\n")
                if b"PONG" in s.recv(100):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"spamd on 127.0.0.1:{port} did not answer PING within {timeout}s")
        time.sleep(0.1)


def unix_ready(path: Path, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"spamass-milter exited with code {proc.returncode} before {path} opened")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not open within {timeout}s")
            time.sleep(0.05)


class SpamAss:
    """spamd on 127.0.0.1:port and spamass-milter on unix:<dir>/milter.sock rejecting at >= 15."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.public = public_tempdir("mailkeep-spamd-")     # readable by debian-spamd
        site, home = self.public / "site", self.public / "home"
        site.mkdir(mode=0o755)
        home.mkdir(mode=0o755)
        for pre in sorted(SITE_PRE.glob("*.pre")):
            (site / pre.name).symlink_to(pre)
        (site / "local.cf").write_text("use_bayes 0\nbayes_auto_learn 0\n")
        (site / "local.cf").chmod(0o644)
        self.port = free_port()
        self.spamd_log = open(tmp / "spamd.log", "w")
        self.spamd = subprocess.Popen(
            [SPAMD, "-L", "-x", "-u", SPAMD_USER, "-H", str(home), f"--siteconfigpath={site}",
             "-i", f"127.0.0.1:{self.port}", "-s", "stderr",
             "-m", "2", "--min-children=1", "--min-spare=1", "--max-spare=1"],
            stdout=self.spamd_log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
        self.milter = None
        try:
            spamd_ready(self.port, self.spamd)
            self.socket = tmp / "milter.sock"
            self.spec = f"unix:{self.socket}"
            self.milter_log = open(tmp / "spamass-milter.log", "w")
            # No -f: it stays in the foreground. No -i: mailkeep's client is 127.0.0.1 and must be
            # scanned. -r 15: reject flagrant spam (GTUBE scores 1000), tag the rest.
            self.milter = subprocess.Popen(
                [SPAMASS_MILTER, "-p", self.spec, "-r", "15", "-P", str(tmp / "spamass-milter.pid"),
                 "--", "-d", "127.0.0.1", "-p", str(self.port)],
                stdout=self.milter_log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
            unix_ready(self.socket, self.milter)
        except BaseException:
            self.stop()
            raise

    def spamd_lines(self) -> str:
        return (self.tmp / "spamd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.milter is not None:
            stop_group(self.milter)
            self.milter_log.close()
        stop_group(self.spamd)
        self.spamd_log.close()
        shutil.rmtree(self.public, ignore_errors=True)


@pytest.fixture(scope="module")
def spamass(tmp_path_factory):
    s = SpamAss(tmp_path_factory.mktemp("spamass"))
    yield s
    s.stop()


def spam_gateway(backup_gateway, capture, spamass):  # noqa: F811
    # spamc's first scan in a fresh spamd worker can take a second or two on a shared machine.
    return gateway(backup_gateway, capture, [spamass.spec], content_timeout=30)


def header_fields(data: bytes) -> list[bytes]:
    """The header section's fields, each with its folded continuation lines and final CRLF."""
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    return re.findall(rb"[^ \t\r\n][^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", head)


def test_gtube_is_rejected_at_data_with_spamass_milters_reply(backup_gateway, capture, spamass):  # noqa: F811
    gw = spam_gateway(backup_gateway, capture, spamass)
    msg = make_message("gtube", body=b"This is the GTUBE test message.\r\n\r\n" + GTUBE + b"\r\n")
    rcpt, data = send(gw, ["alice@example.org"], msg)
    assert rcpt["alice@example.org"][0] == 250, rcpt
    # spamass-milter's reply for a score at or over -r: 550 5.7.1 "Blocked by SpamAssassin".
    assert data is not None and data[0] == 550, data
    assert data[1].startswith(b"5.7.1 ") and b"Blocked by SpamAssassin" in data[1], data
    assert "identified spam" in spamass.spamd_lines() and "GTUBE" in spamass.spamd_lines()
    time.sleep(0.3)
    assert capture.messages == [] and capture.handler.data_attempts == 0, "nothing relayed"
    assert archived_bodies(gw) == [], "nothing archived"
    assert f"milter {spamass.spec}: reject at end of message" in gw.log()


def test_ham_is_relayed_and_archived_with_the_same_x_spam_fields(backup_gateway, capture, spamass):  # noqa: F811
    gw = spam_gateway(backup_gateway, capture, spamass)
    msg = make_message("ham", body=b"Hello Alice,\r\n\r\nthe minutes of Tuesday's meeting are attached"
                                   b" to the wiki page.\r\n\r\nRegards,\r\nSomeone\r\n")
    # Today's date: SpamAssassin scores a Date far in the past (make_message's is fixed).
    msg = re.sub(rb"^Date: [^\r]*", b"Date: " + formatdate(usegmt=True).encode(), msg, count=1, flags=re.M)
    rcpt, data = send(gw, ["alice@example.org"], msg)
    assert data is not None and data[0] == 250, (rcpt, data)
    up = capture.wait_for(1)[0]
    assert up.rcpt_tos == ["alice@example.org"]
    fields = header_fields(up.data)
    spam_fields = [f for f in fields if f.lower().startswith(b"x-spam-")]
    names = {f.split(b":", 1)[0] for f in spam_fields}
    # What spamass-milter adds for ham: X-Spam-Status and X-Spam-Checker-Version, and X-Spam-Level
    # only when its value is not empty (a score of 1 or more; it never adds an empty field).
    assert {b"X-Spam-Checker-Version", b"X-Spam-Status"} <= names <= {
        b"X-Spam-Checker-Version", b"X-Spam-Status", b"X-Spam-Level"}, spam_fields
    status = [f for f in spam_fields if f.startswith(b"X-Spam-Status:")]
    assert len(status) == 1 and status[0].startswith(b"X-Spam-Status: No, score="), status
    score = float(re.match(rb"X-Spam-Status: No, score=(-?[0-9.]+) ", status[0]).group(1))
    level = [f for f in spam_fields if f.startswith(b"X-Spam-Level:")]
    assert level == ([b"X-Spam-Level: " + b"*" * int(score) + b"\r\n"] if score >= 1 else []), (score, level)
    assert b" required=5.0 " in status[0] and b"tests=" in status[0], status
    # spamd folds X-Spam-Status with LF + tab; what reaches the upstream has CRLF lines only.
    assert b"\r\n\t" in status[0] and b"\n" not in up.data.replace(b"\r\n", b""), status
    assert [f for f in spam_fields if f.startswith(b"X-Spam-Checker-Version:")][0].startswith(
        b"X-Spam-Checker-Version: SpamAssassin "), spam_fields
    # The client's header fields and the body are untouched: spamass-milter only added fields.
    client_head, client_body = msg.split(b"\r\n\r\n", 1)
    for f in header_fields(msg):
        assert f in fields, f
    assert up.data.split(b"\r\n\r\n", 1)[1] == client_body
    # The archive copy is the relayed message after the archive's own lines, so its X-Spam-*
    # fields (folded continuation lines included) are byte for byte those of the relayed copy.
    copies = archived_bodies(gw)
    assert len(copies) == 1
    assert copies[0].endswith(up.data), (copies[0][:600], up.data[:600])
    archived_spam = [f for f in header_fields(copies[0]) if f.lower().startswith(b"x-spam-")]
    assert archived_spam == spam_fields
    assert status[0] in copies[0]
    assert "clean message" in spamass.spamd_lines() or "result: ." in spamass.spamd_lines()
