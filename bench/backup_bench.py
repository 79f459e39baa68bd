#!/usr/bin/python3
"""mailkeep backup benchmark: what does archiving every message (Maildir, fsync) cost?

One run, loopback only, bounded in time. Postfix smtp-source sends N messages of SIZE bytes
over C concurrent sessions into

  archive-on   mailkeep -> smtp-sink, recipient user@example.org: a listed user of a [backup]
               domain, so every message is also written to the archive (tmp/, fsync, new/, fsync dir)
  archive-off  the same mailkeep -> smtp-sink, recipient user@example.net: a plain [relay] domain
  postfix      a private Postfix instance (queueing, fsync) -> smtp-sink, recipient user@example.org

Time runs from smtp-source's start until smtp-sink has counted every message (end to end).
The archive is on the same disk as the rest (/var/tmp). Prints a table with ratios
archive-on / archive-off and archive-on / postfix.

Usage: /usr/bin/python3 bench/backup_bench.py [--messages 2000] [--concurrency 10,50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import MAILKEEP_BIN, Mailkeep, PostfixInstance, free_port  # noqa: E402
from backup_support import backup_config, write_accounts  # noqa: E402

SENDER = "sender@client.test"
ARCHIVED_RCPT = "user@example.org"     # listed user of the backup domain
RELAYED_RCPT = "user@example.net"      # plain relay domain: no archive


from sink import Sink, smtp_source  # noqa: E402  (bench/sink.py)


class Target:
    def __init__(self, name: str, port: int, rcpt: str, archive_new: Path | None = None):
        self.name, self.port, self.rcpt, self.archive_new = name, port, rcpt, archive_new

    def archived(self) -> int:
        return len(os.listdir(self.archive_new)) if self.archive_new and self.archive_new.is_dir() else 0


def run_once(t: Target, sink: Sink, sessions: int, messages: int, size: int, timeout: float) -> float | None:
    """messages/s from smtp-source start until the sink has them all; None on failure."""
    before, archived_before = sink.count(), t.archived()
    t0 = time.monotonic()
    deadline = t0 + timeout
    rc, out = smtp_source(t.port, sessions=sessions, messages=messages, size=size, sender=SENDER, rcpt=t.rcpt,
                          timeout=timeout)
    complete = rc == 0 and sink.wait_count(before + messages, max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - t0
    got = sink.count() - before
    archived = t.archived() - archived_before
    if not complete:
        print(f"  {t.name:11s} s={sessions:<3d} FAILED rc={rc}, sink got {got}/{messages} in {elapsed:.1f}s: "
              f"{out[-300:]}", flush=True)
        return None
    note = ""
    if t.archive_new:
        note = f"  archived {archived}" + ("" if archived == messages else f" (EXPECTED {messages}!)")
    rate = messages / elapsed
    print(f"  {t.name:11s} s={sessions:<3d} {messages} msgs in {elapsed:6.2f}s = {rate:8.1f} msg/s{note}", flush=True)
    return rate if not t.archive_new or archived == messages else None


def start_mailkeep(base: Path, sink: Sink) -> tuple[Mailkeep, Path]:
    accounts = base / "accounts.txt"
    write_accounts(accounts, [ARCHIVED_RCPT.split("@")[0]])
    archive = base / "archive"
    config = backup_config(free_port(), sink.address, archive, accounts, user="root",
                           smtp={"max_connections": 1000, "timeout": 300, "shutdown_timeout": 5})
    mk = Mailkeep(base / "mailkeep", config).start()
    return mk, archive / ARCHIVED_RCPT.split("@")[1] / ARCHIVED_RCPT.split("@")[0] / "new"


def fmt(v: float | None) -> str:
    return f"{v:11.1f}" if v else f"{'-':>11}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000, help="messages per run (smtp-source -m)")
    ap.add_argument("--size", type=int, default=5120, help="message size (smtp-source -l)")
    ap.add_argument("--concurrency", default="10,50", help="comma-separated session counts (smtp-source -s)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is reported")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per run")
    ap.add_argument("--no-postfix", action="store_true", help="skip the Postfix column")
    args = ap.parse_args()
    concurrency = [int(x) for x in args.concurrency.split(",") if x]

    for tool in ("smtp-source", "smtp-sink") + (() if args.no_postfix else ("postfix",)):
        if not shutil.which(tool):
            print(f"{tool} not found (apt-get install postfix)", file=sys.stderr)
            return 2
    if not MAILKEEP_BIN.exists():
        print(f"{MAILKEEP_BIN} missing: build it first", file=sys.stderr)
        return 2

    base = Path(tempfile.mkdtemp(prefix="mailkeep-backup-bench-", dir="/var/tmp"))
    base.chmod(0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sink = mk = pf = None
    try:
        sink = Sink(base)
        mk, archive_new = start_mailkeep(base, sink)
        targets = [Target("archive-on", mk.port, ARCHIVED_RCPT, archive_new),
                   Target("archive-off", mk.port, RELAYED_RCPT)]
        if not args.no_postfix:
            pf = PostfixInstance(relayhost=sink.address).start()
            targets.append(Target("postfix", pf.port, ARCHIVED_RCPT))
        print(f"workdir {base}; {args.messages} x {args.size}-byte messages per run; archive {archive_new.parent}",
              flush=True)

        for t in targets:  # warm-up, not measured
            run_once(t, sink, 5, 50, args.size, 60)

        results: dict[tuple[str, int], float | None] = {}
        for c in concurrency:
            print(f"concurrency {c}:", flush=True)
            for t in targets:
                rates = [run_once(t, sink, c, args.messages, args.size, args.timeout) for _ in range(args.repeat)]
                results[(t.name, c)] = None if None in rates else statistics.median(rates)

        print()
        print(f"Backup throughput, {args.size}-byte messages, {args.messages} per run, msg/s end to end "
              f"(median of {args.repeat}):")
        header = (f"{'sessions':>8} | {'archive-on':>11} | {'archive-off':>11} | {'postfix':>11} | "
                  f"{'on/off':>6} | {'on/postfix':>10}")
        print(header)
        print("-" * len(header))
        for c in concurrency:
            on, off, p = (results.get((n, c)) for n in ("archive-on", "archive-off", "postfix"))
            print(f"{c:>8} | {fmt(on)} | {fmt(off)} | {fmt(p)} | {ratio(on, off):>6} | {ratio(on, p):>10}")
        print()
    finally:
        if mk:
            mk.stop()
        if pf:
            pf.cleanup()
        if sink:
            sink.stop()
        if os.environ.get("KEEP_BENCH_DIR") != "1":
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
