#!/usr/bin/python3
"""What serving Prometheus metrics costs the relay: the relay benchmark at concurrency 50 with
`[metrics] listen` on and off, in the same run (loopback only, bounded in time).

Two mailkeep instances configured as bench/relay_bench.py's (relay_from 127.0.0.0/8, the
smarthost an `smtp-sink -c`), one with `[metrics] listen = 127.0.0.1:PORT`, one without. Load:
Postfix `smtp-source -s 50 -m N -l 5120`; time runs from smtp-source's start until the sink has
counted all N. While the metrics side is measured, a scraper in this script polls GET /metrics
every second on one keep-alive connection with Prometheus's request headers, as a Prometheus
with a 1 s scrape interval would (the off side is measured with no scraper). The sides
alternate (on, off, then off, on, ...) for --rounds rounds; each run is N messages, N chosen
from a calibration run so that one run lasts about --seconds. The metrics side's
mailkeep_messages_total{direction="outbound",result="accepted"} must grow by exactly N in each
of its runs.

Printed per run: msg/s, mailkeep's CPU per message, the scrapes (count, failures, latency) and
the cores other work on the machine took meanwhile (standalone_bench's CpuMeter). At the end:
the median msg/s of each side, the ratio on/off of the medians (the issue's figure, which must
be at least --min-ratio, 0.97), the median of the per-round ratios, and mailkeep's median CPU
per message on each side (on a shared machine a steadier view of the cost than msg/s).

Usage: bench/metrics_bench.py [--rounds 5] [--seconds 20] [--concurrency 50] [--messages N]
       [--quick] [--wait-quiet S] [--out FILE]     (KEEP_BENCH_DIR=1 keeps the work directory)
Exit status 1 when the ratio is below --min-ratio, a run failed or the counter did not match;
2 when a tool is missing; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))

from harness import MAILKEEP_BIN, Mailkeep, free_port, wait_port  # noqa: E402
from relay_bench import RCPT, SENDER, raise_nofile, start_mailkeep  # noqa: E402
from sink import Sink, smtp_source  # noqa: E402
from standalone_bench import CpuMeter, wait_quiet  # noqa: E402

# What Prometheus 2.x sends with each scrape.
SCRAPE_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
              "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "1",
}
OUTBOUND_ACCEPTED = re.compile(rb'^mailkeep_messages_total\{direction="outbound",result="accepted"\} (\d+)$', re.M)


def log(msg: str = "") -> None:
    print(msg, flush=True)


def outbound_accepted(port: int) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read()
    finally:
        c.close()
    m = OUTBOUND_ACCEPTED.search(body)
    if r.status != 200 or not m:
        raise RuntimeError(f"GET /metrics: {r.status}, no outbound accepted counter: {body[:200]!r}")
    return int(m.group(1))


class Scraper(threading.Thread):
    """GET /metrics every `interval` seconds on one keep-alive connection (reopened after an
    error), as Prometheus does; records each scrape's latency and failures."""

    def __init__(self, port: int, interval: float):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.bytes = 0
        self._done = threading.Event()

    def run(self) -> None:
        conn = None
        next_at = time.monotonic()
        while not self._done.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.interval * 10)
                conn.request("GET", "/metrics", headers=SCRAPE_HEADERS)
                r = conn.getresponse()
                body = r.read()
                if r.status != 200 or not OUTBOUND_ACCEPTED.search(body):
                    self.failures.append(f"status {r.status}")
                else:
                    self.latencies.append(time.monotonic() - t0)
                    self.bytes = len(body)
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._done.set()
        self.join(30)

    def text(self) -> str:
        if not self.latencies:
            return f"scrapes: 0 ok, {len(self.failures)} failed"
        lat = sorted(self.latencies)
        return (f"scrapes: {len(lat)} ok, {len(self.failures)} failed, {self.bytes} B, "
                f"p50 {lat[len(lat) // 2] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")


class Side:
    def __init__(self, name: str, mk: Mailkeep, metrics_port: int | None):
        self.name, self.mk, self.metrics_port = name, mk, metrics_port
        self.rates: list[float] = []
        self.cpu_ms: list[float] = []
        self.other: list[float] = []


def measure(side: Side, sink: Sink, args, n: int, record: bool = True, quiet: float = 0) -> float | None:
    """msg/s from smtp-source's start until the sink has counted all n; None on failure."""
    quiet_note = wait_quiet(quiet)
    before = sink.count()
    counter0 = outbound_accepted(side.metrics_port) if side.metrics_port else 0
    scraper = Scraper(side.metrics_port, args.scrape_interval) if side.metrics_port else None
    with CpuMeter([side.mk.pid]) as cpu:
        if scraper:
            scraper.start()
        t0 = time.monotonic()
        rc, out = smtp_source(side.mk.port, sessions=args.concurrency, messages=n, size=args.size,
                              sender=SENDER, rcpt=RCPT, timeout=args.timeout)
        complete = rc == 0 and sink.wait_count(before + n, timeout=5)
        elapsed = time.monotonic() - t0
        if scraper:
            scraper.stop()
    got = sink.count() - before
    label = f"  {side.name:4s} c={args.concurrency}"
    if not complete:
        log(f"{label} FAILED rc={rc} sink got {got}/{n} in {elapsed:.1f}s: {out[-300:]}")
        return None
    notes = []
    if scraper:
        counted = outbound_accepted(side.metrics_port) - counter0
        if counted != n:
            log(f"{label} FAILED: mailkeep_messages_total grew by {counted}, {n} messages were relayed")
            return None
        if scraper.failures or not scraper.latencies:
            log(f"{label} FAILED: {scraper.text()}: {scraper.failures[:3]}")
            return None
        notes.append(scraper.text())
    rate = n / elapsed
    cpu_ms = cpu.server_seconds * 1000 / n
    if record:
        side.rates.append(rate)
        side.cpu_ms.append(cpu_ms)
        side.other.append(cpu.other_cores)
    log(f"{label} {n} msgs in {elapsed:6.2f}s = {rate:7.1f} msg/s  (mailkeep cpu {cpu_ms:.3f} ms/msg; "
        f"{cpu.text()}{quiet_note}{'; ' + '; '.join(notes) if notes else ''})")
    return rate


def run(args, workdir: Path) -> int:
    sink = Sink(workdir)
    metrics_port = free_port()
    sides: list[Side] = []
    try:
        on = start_mailkeep(workdir / "mk-metrics-on", sink.address, log_level=args.log_level,
                            sections={"metrics": {"listen": f"127.0.0.1:{metrics_port}"}})
        sides.append(Side("on", on, metrics_port))
        wait_port("127.0.0.1", metrics_port, 10, on.proc)
        off = start_mailkeep(workdir / "mk-metrics-off", sink.address, log_level=args.log_level)
        sides.append(Side("off", off, None))
        CpuMeter.roots = [on.pid, off.pid, sink.proc.pid]   # ours, not "other"

        log("warm-up (not counted):")
        for side in sides:
            if measure(side, sink, args, 2000, record=False) is None:
                return 1
        n = args.messages
        if not n:
            rate = measure(sides[1], sink, args, args.calibrate, record=False)
            if rate is None:
                return 1
            n = max(5000, int(rate * args.seconds / 1000) * 1000)
            log(f"calibration: {rate:.0f} msg/s -> {n} messages per run (~{args.seconds:.0f} s)")

        for r in range(args.rounds):
            log(f"round {r + 1}/{args.rounds}:")
            for side in (sides if r % 2 == 0 else sides[::-1]):
                if measure(side, sink, args, n, quiet=args.wait_quiet) is None:
                    return 1
        return report(args, sides, n)
    finally:
        for side in sides:
            side.mk.stop()
        sink.stop()


def report(args, sides: list[Side], n: int) -> int:
    on, off = sides
    med_on, med_off = statistics.median(on.rates), statistics.median(off.rates)
    ratio = med_on / med_off
    per_round = [a / b for a, b in zip(on.rates, off.rates)]
    other = on.other + off.other
    log()
    log(f"Relay at concurrency {args.concurrency}, {args.size}-byte messages, {n} per run, {args.rounds} rounds "
        f"(on: [metrics] listen + GET /metrics every {args.scrape_interval:g} s; off: no [metrics]):")
    log(f"  {'side':4s} | {'median msg/s':>12} | {'runs (msg/s)':<40} | {'mailkeep cpu ms/msg':>19}")
    for s in sides:
        runs = ", ".join(f"{x:.0f}" for x in s.rates)
        log(f"  {s.name:4s} | {statistics.median(s.rates):12.1f} | {runs:<40} | {statistics.median(s.cpu_ms):19.3f}")
    log(f"  ratio on/off of the medians: {ratio:.3f} (target >= {args.min_ratio}); "
        f"per-round ratios {', '.join(f'{x:.3f}' for x in per_round)}, median {statistics.median(per_round):.3f}")
    cpu_on, cpu_off = statistics.median(on.cpu_ms), statistics.median(off.cpu_ms)
    log(f"  mailkeep CPU per message on/off (medians): {cpu_on:.3f} / {cpu_off:.3f} ms = {cpu_on / cpu_off:.3f} "
        f"(less sensitive to other work than msg/s)")
    log(f"  other work on the machine during the runs: mean {statistics.mean(other):.2f}, "
        f"max {max(other):.2f} cores")
    if max(other) - min(other) > 0.25:
        log(f"  NOTE: other work took {min(other):.2f}-{max(other):.2f} cores from run to run: on 2 cores that moves "
            f"msg/s far more than the scrapes do; judge the ratio on a quiet machine (or with --wait-quiet)")
    verdict = "PASS" if ratio >= args.min_ratio else "FAIL"
    log(f"{verdict}: metrics on/off = {ratio:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "concurrency": args.concurrency, "size": args.size, "messages_per_run": n, "rounds": args.rounds,
            "scrape_interval": args.scrape_interval,
            "on": {"rates": on.rates, "median": med_on, "cpu_ms_per_msg": on.cpu_ms, "other_cores": on.other},
            "off": {"rates": off.rates, "median": med_off, "cpu_ms_per_msg": off.cpu_ms, "other_cores": off.other},
            "ratio": ratio, "per_round_ratios": per_round, "cpu_ratio": cpu_on / cpu_off, "min_ratio": args.min_ratio, "pass": ratio >= args.min_ratio,
        }, indent=2) + "\n")
    return 0 if ratio >= args.min_ratio else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="rounds; each measures both sides, alternating the order")
    ap.add_argument("--seconds", type=float, default=20, help="target length of one run (sets the message count)")
    ap.add_argument("--messages", type=int, default=0, help="messages per run (0: from a calibration run)")
    ap.add_argument("--calibrate", type=int, default=20000, help="messages of the calibration run")
    ap.add_argument("--concurrency", type=int, default=50, help="smtp-source sessions (-s)")
    ap.add_argument("--size", type=int, default=5120, help="message size (smtp-source -l)")
    ap.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between scrapes on the metrics side")
    ap.add_argument("--min-ratio", type=float, default=0.97, help="the target for median(on) / median(off)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per run")
    ap.add_argument("--log-level", default="info", help="mailkeep's log_level (both sides)")
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="before each run, wait up to this many seconds for a second in which other work used "
                         "< 0.25 cores (for shared machines; 0 = off)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round of ~3 s runs (too short to judge)")
    ap.add_argument("--out", help="write every figure as JSON to this file")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.calibrate = 1, 3, 5000

    for tool in ("smtp-source", "smtp-sink"):
        if not shutil.which(tool):
            print(f"{tool} not found (apt-get install postfix)", file=sys.stderr)
            return 2
    if not MAILKEEP_BIN.exists():
        print(f"{MAILKEEP_BIN} missing (build it, or MAILKEEP_BIN=...)", file=sys.stderr)
        return 2
    raise_nofile(20000)
    workdir = Path(tempfile.mkdtemp(prefix="mailkeep-metrics-bench-"))
    log(f"workdir {workdir}; mailkeep {MAILKEEP_BIN}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        return run(args, workdir)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if os.environ.get("KEEP_BENCH_DIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
