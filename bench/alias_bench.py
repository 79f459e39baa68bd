#!/usr/bin/python3
"""mailkeep alias benchmark (loopback only, bounded in time, cleans up after itself).

1. HTTP (wrk): GET /api/v1/aliases/{aid} with the Bearer token, and POST /api/v1/aliases
   (creation, create_interval = 0, bench/alias_bench_create.lua): requests/s, p50, p99.
2. SMTP (Postfix smtp-source -> mailkeep -> smtp-sink): relayed messages/s to an alias address
   vs to user@example.org in a relay domain, in the same run, alternating, median of --repeat.

Usage: /usr/bin/python3 bench/alias_bench.py [--duration 10] [--connections 50] [--repeat 5] ...
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import MAILKEEP_BIN, Mailkeep, free_port, wait_port  # noqa: E402
from alias_support import alias_config  # noqa: E402

LUA_CREATE = Path(__file__).resolve().parent / "alias_bench_create.lua"
SENDER = "bench@client.test"
PLAIN_RCPT = "user@example.org"
TARGET = "bench-target@example.org"


from sink import Sink, smtp_source  # noqa: E402  (bench/sink.py)


def api(port: int, method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unparsable latency {text!r}")
    return float(m.group(1)) * UNIT[m.group(2)]


def parse_wrk(out: str) -> dict:
    res: dict = {"rps": None, "p50": None, "p99": None, "requests": None, "non2xx": 0, "socket_errors": ""}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res["rps"] = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        res["p50"] = to_ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        res["p99"] = to_ms(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        res["requests"] = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        res["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors:.*", out):
        res["socket_errors"] = m.group(0)
    return res


def run_wrk(args, url: str, extra: list[str]) -> dict:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
           "--timeout", "5s", *extra, url]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"rps": None, "error": "wrk timed out"}
    out = res.stdout + res.stderr
    parsed = parse_wrk(out)
    parsed["rc"] = res.returncode
    if args.verbose:
        print(out)
    return parsed


def count_aliases(db: Path) -> int:
    con = sqlite3.connect(str(db), timeout=10)
    try:
        return con.execute("SELECT count(*) FROM aliases").fetchone()[0]
    finally:
        con.close()


def http_bench(args, workdir: Path, sink: Sink) -> list[tuple[str, dict]]:
    mk = start(workdir / "http", sink, args)
    rows: list[tuple[str, dict]] = []
    try:
        status, a = api(mk.http_port, "POST", "/api/v1/aliases", {"target": TARGET, "max_usage": 5})
        assert status == 201, (status, a)
        url = f"http://127.0.0.1:{mk.http_port}/api/v1/aliases/{a['aid']}"
        print(f"wrk GET {url} (Bearer token), -t{args.threads} -c{args.connections} -d{args.duration}s", flush=True)
        get = run_wrk(args, url, ["-H", f"Authorization: Bearer {a['manage_token']}"])
        rows.append(("GET /api/v1/aliases/{aid}", get))

        before = count_aliases(mk.db_path)
        url = f"http://127.0.0.1:{mk.http_port}/api/v1/aliases"
        print(f"wrk POST {url} ({LUA_CREATE.name}), create_interval = 0", flush=True)
        post = run_wrk(args, url, ["-s", str(LUA_CREATE)])
        created = count_aliases(mk.db_path) - before
        post["created"] = created
        rows.append(("POST /api/v1/aliases", post))
    finally:
        mk.stop()
    return rows


# --------------------------------------------------------------------------- SMTP

def measure(label: str, mk, sink: Sink, rcpt: str, args) -> float | None:
    before = sink.count()
    t0 = time.monotonic()
    rc, out = smtp_source(mk.smtp_port, sessions=args.sessions, messages=args.messages, size=args.size,
                          sender=SENDER, rcpt=rcpt, timeout=args.timeout)
    complete = sink.wait_count(before + args.messages, timeout=5.0)
    elapsed = time.monotonic() - t0
    got = sink.count() - before
    if rc != 0 or not complete:
        print(f"  {label:6s} FAILED rc={rc} sink got {got}/{args.messages} in {elapsed:.1f}s: {out[-300:]}", flush=True)
        return None
    rate = args.messages / elapsed
    print(f"  {label:6s} {args.messages} msgs in {elapsed:6.2f}s = {rate:8.1f} msg/s", flush=True)
    return rate


def smtp_bench(args, workdir: Path, sink: Sink) -> tuple[list[float], list[float], dict | None]:
    mk = start(workdir / "smtp", sink, args)
    alias_rates: list[float] = []
    plain_rates: list[float] = []
    final = None
    try:
        big = args.repeat * args.messages + 1000
        status, a = api(mk.http_port, "POST", "/api/v1/aliases", {"target": TARGET, "max_usage": big, "days": 1})
        assert status == 201, (status, a)
        print(f"smtp-source -s {args.sessions} -m {args.messages} -l {args.size} -> mailkeep -> smtp-sink; "
              f"alias {a['alias']} (max_usage {big}) vs {PLAIN_RCPT}", flush=True)
        for i in range(args.repeat):
            # alternate the order so warm-up and drift do not favour one side
            order = [("alias", a["alias"]), ("plain", PLAIN_RCPT)]
            if i % 2:
                order.reverse()
            for label, rcpt in order:
                rate = measure(label, mk, sink, rcpt, args)
                if rate is not None:
                    (alias_rates if label == "alias" else plain_rates).append(rate)
        status, final = api(mk.http_port, "GET", f"/api/v1/aliases/{a['aid']}", token=a["manage_token"])
        final["expected_uses"] = len(alias_rates) * args.messages
    finally:
        mk.stop()
    return alias_rates, plain_rates, final


# --------------------------------------------------------------------------- mailkeep

class BenchMailkeep:
    def __init__(self, workdir: Path, sink: Sink, args):
        self.smtp_port = free_port()
        self.http_port = free_port()
        config = alias_config(self.smtp_port, sink.address, self.http_port,
                              aliases={"max_usage": 1_000_000, "create_interval": 0},
                              general={"log_level": args.log_level},
                              smtp={"max_connections": 10000, "timeout": 300, "shutdown_timeout": 5},
                              relay={"relay_from": "127.0.0.0/8"})
        self.mk = Mailkeep(workdir, config)
        self.db_path = workdir / config["store"]["path"]

    def start(self) -> "BenchMailkeep":
        self.mk.start()
        wait_port("127.0.0.1", self.http_port, 10, self.mk.proc)
        return self

    def stop(self) -> None:
        self.mk.stop()


def start(workdir: Path, sink: Sink, args) -> BenchMailkeep:
    return BenchMailkeep(workdir, sink, args).start()


def fmt(v: float | None, spec: str = "10.1f") -> str:
    return format(v, spec) if v is not None else f"{'-':>{int(spec.split('.')[0])}}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="wrk -d seconds (default 10)")
    ap.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    ap.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    ap.add_argument("--messages", type=int, default=2000, help="smtp-source -m (default 2000)")
    ap.add_argument("--sessions", type=int, default=50, help="smtp-source -s (default 50)")
    ap.add_argument("--size", type=int, default=5120, help="smtp-source -l (default 5120)")
    ap.add_argument("--repeat", type=int, default=5, help="SMTP runs per path, median reported (default 5)")
    ap.add_argument("--timeout", type=float, default=120, help="per smtp-source run (default 120 s)")
    ap.add_argument("--log-level", default="info", help="mailkeep's [general] log_level (default info)")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--skip-smtp", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="print wrk's full output")
    args = ap.parse_args()

    tools = ["wrk"] if not args.skip_http else []
    tools += ["smtp-source", "smtp-sink"]
    missing = [t for t in tools if not shutil.which(t)]
    if missing or not MAILKEEP_BIN.is_file():
        print(f"missing: {', '.join(missing + ([str(MAILKEEP_BIN)] if not MAILKEEP_BIN.is_file() else []))}",
              file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="mailkeep-alias-bench-"))
    sink = Sink(workdir)
    failed = False
    try:
        http_rows: list = []
        if not args.skip_http:
            http_rows = http_bench(args, workdir, sink)
        smtp = None
        if not args.skip_smtp:
            smtp = smtp_bench(args, workdir, sink)

        print()
        if http_rows:
            print(f"HTTP API (wrk -t{args.threads} -c{args.connections} -d{args.duration}s, keep-alive)")
            print(f"  {'endpoint':28s} | {'req/s':>9s} | {'p50 ms':>8s} | {'p99 ms':>8s} | {'requests':>8s} | non-2xx | notes")
            for name, r in http_rows:
                notes = []
                if "created" in r:
                    notes.append(f"{r['created']} aliases stored")
                    # requests still in flight when wrk stops are created but not counted by wrk
                    extra = r["created"] - (r["requests"] or 0) + r["non2xx"]
                    if r.get("requests") is None or not 0 <= extra <= args.connections:
                        notes.append("MISMATCH with the 2xx responses")
                        failed = True
                if r.get("socket_errors"):
                    notes.append(r["socket_errors"])
                if r.get("error"):
                    notes.append(r["error"])
                if r.get("rps") is None or r.get("non2xx"):
                    failed = True
                print(f"  {name:28s} | {fmt(r.get('rps'), '9.0f')} | {fmt(r.get('p50'), '8.2f')} | "
                      f"{fmt(r.get('p99'), '8.2f')} | {r.get('requests') or '-':>8} | {r.get('non2xx', '-'):>7} | "
                      f"{'; '.join(notes)}")
        if smtp:
            alias_rates, plain_rates, final = smtp
            a = statistics.median(alias_rates) if alias_rates else None
            p = statistics.median(plain_rates) if plain_rates else None
            print()
            print(f"SMTP relay (smtp-source -s {args.sessions} -m {args.messages} -l {args.size}, "
                  f"median of {args.repeat}; msg/s)")
            print(f"  {'recipient':26s} | {'msg/s':>9s} | runs")
            print(f"  {'alias (rewritten+counted)':26s} | {fmt(a, '9.1f')} | {', '.join(f'{x:.0f}' for x in alias_rates)}")
            print(f"  {PLAIN_RCPT + ' (relay)':26s} | {fmt(p, '9.1f')} | {', '.join(f'{x:.0f}' for x in plain_rates)}")
            print(f"  alias / plain ratio        | {fmt(a / p if a and p else None, '9.2f')}")
            if final:
                ok = final.get("uses") == final["expected_uses"]
                print(f"  alias uses counted: {final.get('uses')} (expected {final['expected_uses']}) "
                      f"{'OK' if ok else 'MISMATCH'}")
                failed |= not ok
            failed |= len(alias_rates) != args.repeat or len(plain_rates) != args.repeat
    finally:
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
