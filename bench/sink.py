"""smtp-sink as a benchmark peer, shared by the bench scripts (loopback only)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from harness import free_port, wait_port  # noqa: E402


class Sink:
    """smtp-sink with a running counter (-c) written to a file."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.out = workdir / f"sink-{self.port}.out"
        self._f = open(self.out, "wb")
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{self.port}", "1000"],
            stdout=self._f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port("127.0.0.1", self.port, 10, self.proc)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def count(self) -> int:
        found = re.findall(rb"mesg=(\d+)", self.out.read_bytes()[-4096:])
        return int(found[-1]) if found else 0

    def wait_count(self, target: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= target:
                return True
            time.sleep(0.002)
        return self.count() >= target

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._f.close()


def smtp_source(port: int, *, sessions: int, messages: int, sender: str, rcpt: str, timeout: float,
                size: int | None = None, message_file: Path | None = None,
                host: str = "127.0.0.1") -> tuple[int, str]:
    """Postfix smtp-source: `messages` over `sessions` sessions, either generated (`size` bytes,
    -l) or a file sent as it is (-F). Returns (exit status, its output); -1 on timeout."""
    cmd = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-f", sender, "-t", rcpt]
    cmd += ["-F", str(message_file)] if message_file else ["-l", str(size)]
    cmd.append(f"{host}:{port}")
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return res.returncode, (res.stdout + res.stderr).strip()
    except subprocess.TimeoutExpired:
        return -1, f"smtp-source timed out after {timeout}s"
