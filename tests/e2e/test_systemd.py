"""mailkeep under systemd, without systemd: the unit file checked by systemd-analyze, and the
server's sd_notify(3) messages read from a NOTIFY_SOCKET datagram socket the test owns, as systemd
would (READY=1 only once the port accepts connections, RELOADING=1 then READY=1 around SIGHUP,
STOPPING=1 at SIGTERM, WATCHDOG=1 at half of WATCHDOG_USEC while every event loop answers, none while
one is blocked). And the journal's log format: with JOURNAL_STREAM naming stderr, every line carries
its sd-daemon priority prefix and no timestamp.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import MAILKEEP_BIN, REPO, Mailkeep, RawSMTP, default_config, free_port

UNIT = REPO / "packaging" / "mailkeep.service"


class NotifySocket:
    """The NOTIFY_SOCKET end systemd would own: every datagram with its arrival time."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.on_ready = None            # called in the reader thread when READY=1 arrives
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped:
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            if "READY=1" in data.split("\n") and self.on_ready:
                self.on_ready()
            with self.lock:
                self.messages.append((now, data))

    def assignments(self, since: float = 0.0) -> list[tuple[float, str]]:
        """Every VAR=value line, in order, after `since`."""
        with self.lock:
            return [(t, line) for t, d in self.messages if t >= since for line in d.split("\n") if line]

    def wait_for(self, line: str, since: float = 0.0, timeout: float = 10) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, l in self.assignments(since):
                if l == line:
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no {line} after {since:.2f}: {self.assignments(since)}")

    def close(self) -> None:
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


def start(tmp_path: Path, capture, notify: NotifySocket, env: dict[str, str], **overrides) -> Mailkeep:
    mk = Mailkeep(tmp_path / "mk", default_config(free_port(), capture.address, **overrides))
    return mk.start(env={"NOTIFY_SOCKET": str(notify.path), **env})


def test_ready_reload_stopping(tmp_path, capture, notify):
    banners: list[str] = []

    def connect_at_ready():   # at the moment READY=1 arrives, the port must answer
        try:
            with RawSMTP("127.0.0.1", port, timeout=5) as c:
                banners.append(c.banner.text if c.banner else "")
        except OSError as exc:
            banners.append(f"connect failed: {exc}")

    port = free_port()
    notify.on_ready = connect_at_ready
    mk = Mailkeep(tmp_path / "mk", default_config(port, capture.address))
    mk.start(env={"NOTIFY_SOCKET": str(notify.path)})
    notify.wait_for("READY=1")
    deadline = time.monotonic() + 5
    while not banners and time.monotonic() < deadline:
        time.sleep(0.02)
    assert banners and "ESMTP mailkeep" in banners[0], banners
    status = [l for _, l in notify.assignments() if l.startswith("STATUS=")]
    assert status and "SMTP on 127.0.0.1:" in status[0], status

    notify.on_ready = None
    t0 = time.monotonic()
    mk.proc.send_signal(signal.SIGHUP)
    t_reload = notify.wait_for("RELOADING=1", since=t0)
    t_ready = notify.wait_for("READY=1", since=t_reload)
    assert t_ready >= t_reload
    # Still serving after the reload.
    with RawSMTP("127.0.0.1", port) as c:
        assert c.ehlo().code == 250

    t1 = time.monotonic()
    mk.proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1", since=t1)
    assert mk.proc.wait(15) == 0
    assert [l for _, l in notify.assignments() if l.startswith("WATCHDOG")] == []  # no WATCHDOG_USEC, no pings


def test_watchdog_pings_and_stops_when_a_loop_is_blocked(tmp_path, capture, notify):
    mk = start(tmp_path, capture, notify, {"WATCHDOG_USEC": "1000000", "MAILKEEP_TEST_HOOKS": "1"},
               smtp={"threads": 2})
    t_ready = notify.wait_for("READY=1")
    time.sleep(3)
    pings = [t for t, l in notify.assignments(t_ready) if l == "WATCHDOG=1"]
    # every 0.5 s (half of WATCHDOG_USEC)
    assert 4 <= len(pings) <= 9, pings
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < 0.9, gaps

    t_block = time.monotonic()
    mk.proc.send_signal(signal.SIGUSR2)      # blocks event loop 1 for 3 s (three intervals)
    time.sleep(2.5)
    during = [t for t, l in notify.assignments(t_block + 0.8) if l == "WATCHDOG=1"]
    assert during == [], f"pings while a loop was blocked: {[round(t - t_block, 2) for t in during]}"
    assert "has not answered" in mk.log()
    # The loop comes back, and so do the pings.
    notify.wait_for("WATCHDOG=1", since=t_block + 3.0, timeout=5)
    mk.stop()


def test_journal_stream_lines_carry_priorities(tmp_path, capture, notify):
    mk = Mailkeep(tmp_path / "mk", default_config(free_port(), capture.address))
    mk.stderr_path.touch()
    st = os.stat(mk.stderr_path)
    mk.start(env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    with RawSMTP(mk.host, mk.port) as c:           # one rejection: an info line
        c.ehlo()
        c.cmd("MAIL FROM:<a@client.test>")
        assert c.cmd("RCPT TO:<x@elsewhere.test>").code == 550
    mk.stop()
    lines = [l for l in mk.log().splitlines() if l]
    assert lines, "no log"
    for line in lines:
        assert re.match(r"^<[2-7]>(debug|info|warning|error|critical): ", line), line
        assert not re.match(r"^<\d>\d{4}-", line), f"timestamp kept under the journal: {line}"
    assert any(l.startswith("<6>info: ") and "reject: RCPT" in l for l in lines), lines
    assert any(l.startswith("<4>warning: ") for l in lines), lines   # [general] user = root warns
    # Without JOURNAL_STREAM (or with one that is not stderr) the format stays as it was.
    mk2 = Mailkeep(tmp_path / "mk2", default_config(free_port(), capture.address))
    mk2.start(env={"JOURNAL_STREAM": "1:2"})
    mk2.stop()
    first = mk2.log().splitlines()[0]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} mailkeep\[\d+\]: info: ", first), first


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_verifies_and_is_hardened(tmp_path):
    unit = tmp_path / "mailkeep.service"
    # The installed path does not exist here: point it at the build (same binary).
    unit.write_text(UNIT.read_text().replace("/usr/sbin/mailkeep", str(MAILKEEP_BIN)))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    text = UNIT.read_text()
    for key in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=", "ProtectSystem=strict",
                "ReadWritePaths=/var/lib/mailkeep /var/mail/mailkeep", "NoNewPrivileges=yes", "PrivateTmp=yes",
                "ProtectHome=yes", "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
                "AmbientCapabilities=CAP_NET_BIND_SERVICE", "LogRateLimitBurst="):
        assert key in text, key
    sec = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                         text=True, timeout=60)
    m = re.search(r"Overall exposure level for mailkeep\.service: (\d+\.\d+)", sec.stdout + sec.stderr)
    assert m, sec.stdout[-2000:] + sec.stderr[-2000:]
    exposure = float(m.group(1))
    print(f"systemd-analyze security: exposure {exposure}")
    assert exposure <= 2.5, sec.stdout[-3000:]
