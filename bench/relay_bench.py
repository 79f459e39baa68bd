#!/usr/bin/python3
"""mailkeep relay benchmark (loopback only, bounded in time).

1. Throughput: Postfix smtp-source -> {smtp-sink directly | mailkeep -> smtp-sink |
   Postfix (private instance, queueing) -> smtp-sink}, 5 KB messages, concurrency 1/10/50.
   Time runs from smtp-source start until the sink has counted every message.
2. Peak RSS growth (VmHWM) of mailkeep while relaying one 100 MB message.
3. RSS per idle session with 5,000 idle sessions open.

Usage: bench/relay_bench.sh [--messages N] [--concurrency 1,10,50] [--skip-rss] ...
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import (  # noqa: E402
    MAILKEEP_BIN, Mailkeep, PostfixInstance, RawSMTP, default_config, free_port,
)

SENDER = "bench@client.test"
RCPT = "user@example.org"


def raise_nofile(n: int = 20000) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard) if hard != resource.RLIM_INFINITY else n
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


from sink import Sink, smtp_source  # noqa: E402  (bench/sink.py)


def measure(name: str, port: int, sink: Sink, sessions: int, messages: int, size: int,
            timeout: float) -> float | None:
    """messages/s from smtp-source start until the sink has all messages; None on failure."""
    before = sink.count()
    t0 = time.monotonic()
    rc, out = smtp_source(port, sessions=sessions, messages=messages, size=size, sender=SENDER, rcpt=RCPT,
                          timeout=timeout)
    # a queueing relay (Postfix) may still be delivering after smtp-source exits
    grace = 5.0 if rc != 0 else max(5.0, timeout - (time.monotonic() - t0))
    complete = sink.wait_count(before + messages, timeout=grace)
    elapsed = time.monotonic() - t0
    got = sink.count() - before
    if rc != 0 or not complete:
        print(f"  {name:9s} s={sessions:<3d} FAILED rc={rc} sink got {got}/{messages} "
              f"in {elapsed:.1f}s: {out[-300:]}", flush=True)
        return None
    rate = messages / elapsed
    print(f"  {name:9s} s={sessions:<3d} {messages} msgs in {elapsed:6.2f}s = {rate:8.1f} msg/s", flush=True)
    return rate


def start_mailkeep(workdir: Path, smarthost: str, log_level: str = "info", sections: dict | None = None,
                   **smtp) -> Mailkeep:
    """sections: more configuration, e.g. {"metrics": {"listen": "127.0.0.1:PORT"}} (metrics_bench.py)."""
    smtp_settings = {"max_connections": 10000, "timeout": 300, "shutdown_timeout": 5,
                     "max_message_size": 200 * 1024 * 1024}
    smtp_settings.update(smtp)
    config = default_config(free_port(), smarthost, smtp=smtp_settings,
                            general={"log_level": log_level},
                            relay={"relay_from": "127.0.0.0/8"}, **(sections or {}))
    return Mailkeep(workdir, config).start()


# --------------------------------------------------------------------------- throughput

def throughput(args, workdir: Path) -> None:
    sink = Sink(workdir)
    targets: dict[str, int] = {"direct": sink.port}
    mk = pf = None
    try:
        if MAILKEEP_BIN.exists():
            mk = start_mailkeep(workdir / "mk-throughput", sink.address,
                                log_level=args.log_level)
            targets["mailkeep"] = mk.port
        else:
            print(f"NOTE: {MAILKEEP_BIN} missing: mailkeep column skipped", flush=True)
        if not args.no_postfix:
            pf = PostfixInstance(relayhost=sink.address).start()
            targets["postfix"] = pf.port

        # warm-up (not measured)
        for name, port in targets.items():
            measure(f"warmup:{name}", port, sink, 5, 50, args.size, 60)

        results: dict[tuple[str, int], float | None] = {}
        for c in args.concurrency:
            print(f"concurrency {c}:", flush=True)
            for name, port in targets.items():
                rates = [measure(name, port, sink, c, args.messages, args.size, args.timeout)
                         for _ in range(args.repeat)]
                ok = sorted(r for r in rates if r is not None)
                # median of the successful repetitions; a failed repetition voids the cell
                results[(name, c)] = ok[len(ok) // 2] if len(ok) == len(rates) else None

        print()
        print(f"Throughput, {args.size}-byte messages, {args.messages} per run, median of "
              f"{args.repeat} runs (msg/s, until the sink has counted all):")
        header = f"{'sessions':>8} | {'direct':>9} | {'mailkeep':>9} | {'postfix':>9} | {'mk/direct':>9} | {'mk/postfix':>10}"
        print(header)
        print("-" * len(header))

        def fmt(v):
            return f"{v:9.1f}" if v else f"{'-':>9}"

        def ratio(a, b):
            return f"{a / b:.2f}" if a and b else "-"

        for c in args.concurrency:
            d, m, p = (results.get((n, c)) for n in ("direct", "mailkeep", "postfix"))
            print(f"{c:>8} | {fmt(d)} | {fmt(m)} | {fmt(p)} | {ratio(m, d):>9} | {ratio(m, p):>10}")
        print()
    finally:
        if mk:
            mk.stop()
        if pf:
            pf.cleanup()
        sink.stop()


# --------------------------------------------------------------------------- memory

def big_message_rss(args, workdir: Path) -> None:
    sink = Sink(workdir)
    mk = start_mailkeep(workdir / "mk-bigmsg", sink.address)
    try:
        # warm up with one small message so the baseline includes normal allocations
        with RawSMTP(mk.host, mk.port, timeout=60) as c:
            c.ehlo()
            assert c.send_message(SENDER, [RCPT], b"Subject: warm\r\n\r\nx\r\n").code == 250
        hwm_before = mk.proc_status("VmHWM")
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n"  # 76
        chunk = line * (1024 * 1024 // len(line))
        chunks = args.big_mb * 1024 * 1024 // len(chunk)
        size = chunks * len(chunk)
        count_before = sink.count()
        t0 = time.monotonic()
        with RawSMTP(mk.host, mk.port, timeout=120) as c:
            c.ehlo()
            assert c.cmd(f"MAIL FROM:<{SENDER}> SIZE={size}").code == 250
            assert c.cmd(f"RCPT TO:<{RCPT}>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(b"Subject: big\r\n\r\n")
            sent = 0
            for _ in range(chunks):
                c.send(chunk)
                sent += len(chunk)
            c.send(b".\r\n")
            r = c.reply(timeout=120)
        elapsed = time.monotonic() - t0
        hwm_after = mk.proc_status("VmHWM")
        delivered = sink.wait_count(count_before + 1, 30)
        print(f"{args.big_mb} MB message: reply {r.code}, {'delivered to sink' if delivered else 'NOT at sink'}, {sent / 1048576:.0f} MiB in {elapsed:.2f}s "
              f"({sent / 1048576 / elapsed:.0f} MiB/s)")
        print(f"  VmHWM before {hwm_before} kB, after {hwm_after} kB, "
              f"peak RSS growth {hwm_after - hwm_before} kB ({(hwm_after - hwm_before) / 1024:.1f} MiB)")
        print()
    finally:
        mk.stop()
        sink.stop()


def idle_sessions_rss(args, workdir: Path) -> None:
    limit = raise_nofile(20000)
    n = min(args.idle, limit - 200)
    sink = Sink(workdir)
    mk = start_mailkeep(workdir / "mk-idle", sink.address, max_connections=n + 1000)
    socks: list[socket.socket] = []
    try:
        time.sleep(0.5)
        rss_before = mk.proc_status("VmRSS")
        deadline = time.monotonic() + 120
        banners = 0
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            s = socket.create_connection((mk.host, mk.port), timeout=10)
            socks.append(s)
            data = s.recv(512)
            if data.startswith(b"220"):
                banners += 1
        time.sleep(1.0)
        rss_after = mk.proc_status("VmRSS")
        fds = len(os.listdir(f"/proc/{mk.pid}/fd"))
        per = (rss_after - rss_before) / max(1, banners)
        print(f"Idle sessions: {banners}/{n} banners received, mailkeep fds {fds}")
        print(f"  VmRSS before {rss_before} kB, with sessions {rss_after} kB, "
              f"{per:.2f} kB per idle session")
        print()
    finally:
        for s in socks:
            s.close()
        mk.stop()
        sink.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000, help="messages per throughput run")
    ap.add_argument("--size", type=int, default=5120, help="message size (smtp-source -l)")
    ap.add_argument("--concurrency", default="1,10,50", help="comma-separated session counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell (median is reported)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per run")
    ap.add_argument("--log-level", default="info", help="mailkeep log_level during throughput runs")
    ap.add_argument("--no-postfix", action="store_true", help="skip the Postfix column")
    ap.add_argument("--big-mb", type=int, default=100, help="size of the big message in MiB")
    ap.add_argument("--idle", type=int, default=5000, help="idle sessions to open")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x]

    for tool in ("smtp-source", "smtp-sink"):
        if not shutil.which(tool):
            print(f"{tool} not found (apt-get install postfix)", file=sys.stderr)
            return 2
    raise_nofile(20000)
    workdir = Path(tempfile.mkdtemp(prefix="mailkeep-bench-"))
    print(f"workdir {workdir}; mailkeep {MAILKEEP_BIN}"
          f"{'' if MAILKEEP_BIN.exists() else ' (missing)'}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        if not args.skip_throughput:
            throughput(args, workdir)
        if not args.skip_rss:
            if MAILKEEP_BIN.exists():
                big_message_rss(args, workdir)
                idle_sessions_rss(args, workdir)
            else:
                print("memory figures skipped: mailkeep binary missing")
    finally:
        if os.environ.get("KEEP_BENCH_DIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
