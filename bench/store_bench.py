#!/usr/bin/python3
"""The shared store's cost (issue 18): aliases in PostgreSQL against SQLite, and two gateways on one
PostgreSQL against one. Loopback only; a throwaway PostgreSQL 15 (tests/e2e/postgres_support.py:
Debian's postgresql-15, fsync off as in the tests, so the figure is the store's protocol and
locking cost rather than the disk's); cleans up after itself.

1. SMTP (Postfix smtp-source -> mailkeep -> smtp-sink) to --aliases aliases with a large max_usage,
   one smtp-source process each, --sessions in all: one gateway on SQLite, one gateway on PostgreSQL,
   and two gateways on the same PostgreSQL fed at once (half the aliases' processes to each; the rate
   is all messages over the time until the sink counted the last). The three alternate, median of
   --repeat. (One hot alias serialises every statement on its row: --aliases 1 shows that.)
2. HTTP (wrk): GET /api/v1/aliases/{aid} and POST /api/v1/aliases on one gateway, SQLite and PostgreSQL.

Targets: PostgreSQL / SQLite >= 0.7 on one gateway (SMTP); two gateways / one >= 1.6 (SMTP, PostgreSQL).
Two gateways and PostgreSQL share the same 2 cores here, so the second figure says how much of the
machine one gateway leaves idle, not how a second machine would scale.

--pinned: each gateway's threads are held to one core (the one-gateway runs to CPU 0, the two
gateways to CPU 0 and CPU 1; PostgreSQL, smtp-source and smtp-sink float), the fallback the issue
names for a 2-core machine: it asks whether a second gateway process adds throughput when one
gateway is limited to one core, which is what a second machine would add.

Usage: /usr/bin/python3 bench/store_bench.py [--messages 4000] [--sessions 50] [--repeat 3] [--duration 10] [--pinned]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import MAILKEEP_BIN, Mailkeep, free_port, wait_port  # noqa: E402
from alias_support import alias_config  # noqa: E402
from postgres_support import Postgres, pg_bin  # noqa: E402
from sink import Sink, smtp_source  # noqa: E402
from alias_bench import LUA_CREATE, SENDER, TARGET, api, fmt, run_wrk  # noqa: E402


CONNECTIONS = 8  # [store] connections (--pg-connections)


class Gateway:
    def __init__(self, workdir: Path, sink: Sink, url: str | None, log_level: str):
        self.smtp_port, self.http_port = free_port(), free_port()
        store = {"url": url, "connections": CONNECTIONS} if url else {"path": "data/mailkeep.db"}
        config = alias_config(self.smtp_port, sink.address, self.http_port,
                              aliases={"max_usage": 1_000_000, "create_interval": 0},
                              general={"log_level": log_level},
                              smtp={"max_connections": 10000, "timeout": 300, "shutdown_timeout": 5},
                              store=store)
        self.mk = Mailkeep(workdir, config)

    def start(self) -> "Gateway":
        self.mk.start()
        wait_port("127.0.0.1", self.http_port, 10, self.mk.proc)
        return self

    def stop(self) -> None:
        self.mk.stop()

    def pin(self, cpus: set[int] | None) -> None:
        """Every thread of the gateway to `cpus` (None: all of them)."""
        import os
        allowed = cpus if cpus is not None else set(range(os.cpu_count() or 1))
        for tid in os.listdir(f"/proc/{self.mk.proc.pid}/task"):
            try:
                os.sched_setaffinity(int(tid), allowed)
            except ProcessLookupError:
                pass


def run(sink: Sink, targets: list[tuple[Gateway, str]], sessions: int, messages: int, args) -> float | None:
    """smtp-source to each (gateway, rcpt) at once; returns all messages / time until the sink has them."""
    before = sink.count()
    per = messages // len(targets)
    results = []

    def one(gw: Gateway, rcpt: str) -> None:
        results.append(smtp_source(gw.smtp_port, sessions=max(1, sessions // len(targets)), messages=per, size=args.size,
                                   sender=SENDER, rcpt=rcpt, timeout=args.timeout))

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    complete = sink.wait_count(before + per * len(targets), timeout=10.0)
    elapsed = time.monotonic() - t0
    if any(rc != 0 for rc, _ in results) or not complete:
        print(f"  FAILED: {[(rc, out[-200:]) for rc, out in results]}, sink {sink.count() - before}", flush=True)
        return None
    return per * len(targets) / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--size", type=int, default=5120)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--duration", type=int, default=10, help="wrk -d seconds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--pg-connections", type=int, default=8, help="[store] connections of each gateway")
    ap.add_argument("--aliases", type=int, default=10, help="aliases the messages go to, one smtp-source each")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--pinned", action="store_true", help="each gateway held to one core (see above)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    global CONNECTIONS
    CONNECTIONS = args.pg_connections
    missing = [t for t in ("smtp-source", "smtp-sink", "wrk") if not shutil.which(t)]
    if missing or pg_bin() is None or not MAILKEEP_BIN.is_file():
        print(f"missing: {missing} {'postgresql-15' if pg_bin() is None else ''} {MAILKEEP_BIN}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="mailkeep-store-bench-", dir="/var/tmp"))
    sink = Sink(work)
    pg = Postgres().init().start().createdb()
    gws: list[Gateway] = []
    failed = False
    try:
        lite = Gateway(work / "sqlite", sink, None, args.log_level).start()
        pg_a = Gateway(work / "pg-a", sink, pg.url, args.log_level).start()
        pg_b = Gateway(work / "pg-b", sink, pg.url, args.log_level).start()
        gws = [lite, pg_a, pg_b]
        big = 10 * args.repeat * args.messages

        def make(gw: Gateway) -> list[dict]:
            return [api(gw.http_port, "POST", "/api/v1/aliases", {"target": TARGET, "max_usage": big, "days": 1})[1]
                    for _ in range(args.aliases)]

        a_lite, a_pg = make(lite), make(pg_a)
        print(f"smtp-source -m {args.messages} -l {args.size} in {args.aliases} processes of "
              f"{args.sessions // args.aliases} sessions, each to its own alias (two gateways: half of them to each) "
              f"-> mailkeep -> smtp-sink; PostgreSQL {pg.url}, [store] connections {CONNECTIONS}", flush=True)
        rates: dict[str, list[float]] = {"sqlite": [], "postgres": [], "two": []}
        plans = {
            "sqlite": [(lite, a["alias"]) for a in a_lite],
            "postgres": [(pg_a, a["alias"]) for a in a_pg],
            "two": [((pg_a, pg_b)[k % 2], a["alias"]) for k, a in enumerate(a_pg)],
        }
        for i in range(args.repeat):
            order = list(plans) if i % 2 == 0 else list(reversed(plans))
            for name in order:
                if args.pinned:
                    lite.pin({0})
                    pg_a.pin({0})
                    pg_b.pin({1})
                r = run(sink, plans[name], args.sessions, args.messages, args)
                print(f"  {name:9s} {fmt(r, '8.1f')} msg/s", flush=True)
                if r is None:
                    failed = True
                else:
                    rates[name].append(r)
        uses = sum(api(pg_a.http_port, "GET", f"/api/v1/aliases/{a['aid']}", token=a["manage_token"])[1]["uses"]
                   for a in a_pg)
        final = {"uses": uses}
        expected = (len(rates["postgres"]) + len(rates["two"])) * (args.messages // args.aliases) * args.aliases
        http_rows = []
        if not args.skip_http:
            for name, gw in (("sqlite", lite), ("postgres", pg_a)):
                status, a = api(gw.http_port, "POST", "/api/v1/aliases", {"target": TARGET, "max_usage": 5})
                url = f"http://127.0.0.1:{gw.http_port}/api/v1/aliases/{a['aid']}"
                get = run_wrk(args, url, ["-H", f"Authorization: Bearer {a['manage_token']}"])
                post = run_wrk(args, f"http://127.0.0.1:{gw.http_port}/api/v1/aliases", ["-s", str(LUA_CREATE)])
                http_rows += [(f"GET  {name}", get), (f"POST {name}", post)]
        med = {k: statistics.median(v) if v else None for k, v in rates.items()}
        print()
        print(f"SMTP to {args.aliases} aliases (median of {args.repeat}, msg/s): SQLite {fmt(med['sqlite'], '.1f')}, "
              f"PostgreSQL {fmt(med['postgres'], '.1f')}, two gateways on PostgreSQL {fmt(med['two'], '.1f')}")
        ok_uses = final.get("uses") == expected
        print(f"alias uses counted in PostgreSQL: {final.get('uses')} (expected {expected}) {'OK' if ok_uses else 'MISMATCH'}")
        failed |= not ok_uses
        if http_rows:
            print(f"HTTP API (wrk -t{args.threads} -c{args.connections} -d{args.duration}s)")
            for name, r in http_rows:
                print(f"  {name:14s} {fmt(r.get('rps'), '9.0f')} req/s  p50 {fmt(r.get('p50'), '7.2f')} ms  "
                      f"p99 {fmt(r.get('p99'), '7.2f')} ms  non-2xx {r.get('non2xx')}")
                failed |= r.get("rps") is None or bool(r.get("non2xx"))
        if med["sqlite"] and med["postgres"] and med["two"]:
            r1, r2 = med["postgres"] / med["sqlite"], med["two"] / med["postgres"]
            print("Targets:")
            print(f"  PostgreSQL / SQLite, one gateway  {r1:5.2f}  >= 0.7  {'PASS' if r1 >= 0.7 else 'FAIL'}")
            pinned = " (pinned, one core each)" if args.pinned else ""
            print(f"  two gateways / one (PostgreSQL)   {r2:5.2f}  >= 1.6  {'PASS' if r2 >= 1.6 else 'FAIL'}{pinned}")
            failed |= r1 < 0.7 or r2 < 1.6
    finally:
        for g in gws:
            g.stop()
        sink.stop()
        pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
