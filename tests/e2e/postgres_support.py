"""A throwaway PostgreSQL 15 for the shared-store tests (Debian's postgresql-15).

`initdb` as an unprivileged user (the package's `postgres` when we are root: PostgreSQL refuses to
run as root), the Unix socket in the data directory's parent, TCP on one free loopback port, trust
authentication for the `mailkeep` superuser, and fsync off: tests only. stop()/start() keep the data,
so a test can take the server away and bring it back.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness import free_port

BIN_DIRS = [Path("/usr/lib/postgresql/15/bin")]


def pg_bin() -> Path | None:
    for d in BIN_DIRS:
        if (d / "initdb").exists() and (d / "postgres").exists():
            return d
    return None


class Postgres:
    def __init__(self) -> None:
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL 15 is not installed (apt-get install postgresql-15)")
        self.base = Path(tempfile.mkdtemp(prefix="mk-pg-", dir="/var/tmp"))
        self.data = self.base / "data"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.proc: subprocess.Popen | None = None
        self.log = self.base / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://mailkeep@127.0.0.1:{self.port}/mailkeep"

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.user is not None:
            cmd = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, cwd=self.base,
                              env={**os.environ, "LC_ALL": "C.UTF-8"})

    def init(self) -> "Postgres":
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "mailkeep", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        return self

    def start(self) -> "Postgres":
        cmd = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
               "-k", str(self.base), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
               "-c", "max_connections=200", "-c", "shared_buffers=32MB"]
        if self.user is not None:
            cmd = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups", *cmd]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=self.base)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            r = self._run(str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), check=False)
            if r.returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def createdb(self, name: str = "mailkeep") -> "Postgres":
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mailkeep", name)
        return self

    def psql(self, sql: str, db: str = "mailkeep") -> str:
        psql = shutil.which("psql") or str(self.bin / "psql")
        return self._run(psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "mailkeep", "-d", db, "-At", "-c",
                         sql).stdout.strip()

    def stop(self) -> None:
        """Fast shutdown (connections are cut, as in a restart)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
