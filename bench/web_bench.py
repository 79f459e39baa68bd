#!/usr/bin/python3
"""mailkeep web view benchmark: the JSON API under wrk, page loads in headless Chromium, and search
against Roundcube over Dovecot, all on the search issue's synthetic archive (bench/index_bench.py).

  1 archive   index_bench's Synthetic archive of N messages (default 200,000) for alice@example.org,
              written straight into cur/, indexed once by `mailkeep archive index`
  2 api       `mailkeep serve` with [http] listen on 127.0.0.1 and the mail reader, one session
              (POST /api/v1/mail/session); wrk -t2 -c10 --latency for --wrk-seconds each on
              GET threads?mailbox=inbox&limit=50 and on index_bench's 20 queries in turn
              (GET threads?q=...&limit=50, bench/web_bench_paths.lua): requests/s, p50, p99
  3 browser   headless Debian Chromium through playwright-core (bench/web_bench.mjs), a fresh
              context per repetition holding the session cookie: navigation start -> first Inbox
              rows drawn; a click on a row not prefetched -> its messages drawn; `j` in the list
              -> cursor drawn; `j` in an open conversation -> the next one drawn; `/` query Enter
              -> the result rows drawn; each with the API's server time (Resource Timing:
              responseStart - requestStart of the requests on the way)
  4 peer      the same searches through Debian's Roundcube (its own web server: a private Apache
              with mod_php on 127.0.0.3) over a private Dovecot IMAP on the same Maildir (no FTS),
              the search request Roundcube's page sends (_action=search, "Entire message", all
              subscribed folders: INBOX, Sent, Archive), against mailkeep's API one request at a
              time. Without Roundcube: Dovecot's IMAP SEARCH (index_bench's dovecot_part) stands in,
              and the output says why

Prints a table per part and the issue's targets with PASS/FAIL; --out FILE writes every figure as
JSON. Exit status 1 if a target failed or a step failed, 2 if a tool is missing, 130 on Ctrl-C.

Usage: /usr/bin/python3 bench/web_bench.py [--quick] [--messages N] [--out FILE]
       (KEEP_BENCH_DIR=1 keeps the work directory)
"""

from __future__ import annotations

import argparse
import glob
import http.client
import http.cookiejar
import imaplib
import json
import os
import pwd
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(BENCH))

from index_bench import (  # noqa: E402
    DOMAIN, ENV, LOCAL, USER, BenchDovecot, MailkeepTool, Query, Synthetic, build_queries, chown_tree,
    dovecot_part, fmt, load_corpus, log, mailkeep_search_ready, median, p99, ratio,
)
from alias_bench import parse_wrk, to_ms  # noqa: E402
from standalone_bench import CpuMeter  # noqa: E402
from harness import CORPUS_DIR, MAILKEEP_BIN, Mailkeep, free_port, wait_port  # noqa: E402
from backup_support import MAIL_GID, MAIL_UID, Dovecot, backup_config, write_accounts  # noqa: E402

API = "/api/v1/mail/"
PASSWORD = "web-bench-Secret-7"
NODE_SCRIPT = BENCH / "web_bench.mjs"
LUA_PATHS = BENCH / "web_bench_paths.lua"
PLAYWRIGHT = REPO / "tests" / "browser" / "node_modules" / "playwright-core"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class Meter(CpuMeter):
    """standalone_bench's CpuMeter with `roots` as the servers under test: their CPU (and that of this
    script and its reaped children: wrk, node with its Chromium) is not "other" work."""

    def __init__(self, roots: list[int]):
        super().__init__([r for r in roots if r])
        CpuMeter.roots = [r for r in roots if r]

    def __enter__(self) -> "Meter":
        self.start = time.monotonic()
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.server_cores = self.server_seconds / max(1e-6, time.monotonic() - self.start)


def pct(xs: list[float], q: int) -> float | None:
    """The q-th percentile (1..99) of xs, inclusive method; None for no samples."""
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


# --------------------------------------------------------------------------- mailkeep serve

class WebMailkeep:
    """`mailkeep serve` over the indexed archive: [http] listen on loopback with the mail reader,
    [users] passwd holding alice's password, [index] enabled as in production (same index path as
    the `archive index` run, so the indexer only rescans)."""

    def __init__(self, base: Path, archive: Path, index_dir: Path):
        d = base / "mk-serve"
        d.mkdir(parents=True)
        accounts = d / "accounts.txt"
        write_accounts(accounts, [LOCAL])
        self.http_port = free_port()
        config = backup_config(free_port(), "127.0.0.1:9", archive, accounts, user="root",
                               index={"path": str(index_dir), "enabled": "true"},
                               http={"listen": f"127.0.0.1:{self.http_port}", "mail_reader": "true"})
        config["users"] = {"passwd": str(d / "users.passwd")}
        self.mk = Mailkeep(d, config)
        self.cookie = ""
        self.csrf = ""

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(MAILKEEP_BIN), *args, "-c", str(self.mk.config_path)], capture_output=True,
                              text=True, input=input, env=ENV, timeout=120)

    def start(self) -> "WebMailkeep":
        res = self.cli("user", "passwd", USER, "--stdin", input=PASSWORD + "\n")
        if res.returncode != 0:
            raise RuntimeError(f"mailkeep user passwd failed ({res.returncode}): {res.stdout}{res.stderr}")
        self.mk.start()
        wait_port("127.0.0.1", self.http_port, 30, self.mk.proc)
        return self

    def login(self) -> None:
        """One web session (one Argon2id verification); its cookie serves wrk and Chromium."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
        conn.request("POST", API + "session", body=json.dumps({"username": USER, "password": PASSWORD}),
                     headers={"Content-Type": "application/json"})
        res = conn.getresponse()
        body = res.read()
        if res.status != 200:
            raise RuntimeError(f"login failed: {res.status} {body[:300]!r}")
        m = re.match(r"mk_mail=([^;]+)", res.getheader("Set-Cookie") or "")
        if not m:
            raise RuntimeError(f"login: no mk_mail cookie in {res.getheader('Set-Cookie')!r}")
        self.cookie, self.csrf = m.group(1), json.loads(body)["csrfToken"]
        conn.close()

    def client(self) -> "ApiClient":
        return ApiClient(self.http_port, self.cookie)

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (all threads), from /proc."""
        fields = Path(f"/proc/{self.mk.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_quiet(self, timeout: float = 600, below: float = 0.05) -> float:
        """Waits until the server used less than `below` of a core for two seconds in a row (the
        indexer's start-up scan of the archive is done); returns the seconds waited."""
        t0 = time.monotonic()
        quiet = 0
        last = self.cpu_seconds()
        while time.monotonic() - t0 < timeout and quiet < 2:
            time.sleep(1)
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - last < below else 0
            last = now
        return time.monotonic() - t0

    def stop(self) -> None:
        self.mk.stop()


class ApiClient:
    """Keep-alive HTTP/1.1 client of the mail API with the session cookie."""

    def __init__(self, port: int, cookie: str):
        self.port = port
        self.cookie = cookie
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def get(self, path: str) -> tuple[int, bytes, float]:
        t0 = time.perf_counter()
        try:
            self.conn.request("GET", path, headers={"Cookie": f"mk_mail={self.cookie}"})
            res = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            self.conn.request("GET", path, headers={"Cookie": f"mk_mail={self.cookie}"})
            res = self.conn.getresponse()
        body = res.read()
        return res.status, body, time.perf_counter() - t0

    def close(self) -> None:
        self.conn.close()


def threads_path(q: str | None = None, mailbox: str = "inbox", limit: int = 50) -> str:
    if q is None:
        return f"{API}threads?mailbox={mailbox}&limit={limit}"
    return f"{API}threads?q={urllib.parse.quote(q, safe='')}&limit={limit}"


# --------------------------------------------------------------------------- 2 the API under wrk

def run_wrk(url: str, seconds: int, threads: int, conns: int, extra: list[str], env: dict | None = None) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "30s", *extra, url]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, stdin=subprocess.DEVNULL,
                             env=env)
    except subprocess.TimeoutExpired:
        return {"rps": None, "error": "wrk timed out", "cmd": " ".join(cmd[:-1])}
    out = res.stdout + res.stderr
    parsed = parse_wrk(out)
    for p in ("75", "90"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", out, re.M)
        parsed[f"p{p}"] = None
        if m:
            parsed[f"p{p}"] = to_ms(m.group(1))
    parsed["rc"] = res.returncode
    parsed["output"] = out
    return parsed


def api_part(mk: WebMailkeep, queries: list[Query], base: Path, seconds: int, threads: int, conns: int) -> dict:
    """Every URL once (a warm-up that also checks status and counts), then wrk on the Inbox and on
    the queries in turn."""
    client = mk.client()
    inbox = threads_path()
    search = [threads_path(q.mk) for q in queries]
    checks = []
    failed = []
    for path, text in [(inbox, "Inbox")] + list(zip(search, [q.mk for q in queries])):
        status, body, dt = client.get(path)
        row = {"query": text, "status": status, "ms": 1000 * dt}
        if status == 200:
            d = json.loads(body)
            row.update(threads=len(d["threads"]), total=d["total"], total_exact=d["totalExact"])
        else:
            failed.append(f"{text}: {status} {body[:200]!r}")
        checks.append(row)
    client.close()
    for f in failed:
        log(f"  FAILED {f}")
    (base / "web_bench_paths.txt").write_text("".join(p + "\n" for p in search))
    url = f"http://127.0.0.1:{mk.http_port}"
    hdr = ["-H", f"Cookie: mk_mail={mk.cookie}"]
    log(f"  wrk -t{threads} -c{conns} -d{seconds}s --latency {inbox}")
    with Meter([mk.mk.pid]) as cpu:
        r_inbox = run_wrk(url + inbox, seconds, threads, conns, hdr)
    r_inbox.update(other_cores=cpu.other_cores, server_cores=cpu.server_cores)
    log(f"  wrk -t{threads} -c{conns} -d{seconds}s --latency -s {LUA_PATHS.name} ({len(search)} queries in turn)")
    with Meter([mk.mk.pid]) as cpu:
        r_search = run_wrk(url + search[0], seconds, threads, conns, hdr + ["-s", str(LUA_PATHS)],
                           env=dict(os.environ, WEB_BENCH_PATHS=str(base / "web_bench_paths.txt")))
    r_search.update(other_cores=cpu.other_cores, server_cores=cpu.server_cores)
    return {"checks": checks, "failed": failed, "inbox": r_inbox, "search": r_search,
            "wrk": {"threads": threads, "connections": conns, "seconds": seconds}}


def print_api(res: dict) -> None:
    w = res["wrk"]
    log()
    log(f"(2) JSON API under wrk -t{w['threads']} -c{w['connections']} -d{w['seconds']}s --latency "
        "(keep-alive, one session cookie)")
    header = (f"{'request':>44} | {'req/s':>8} | {'p50 ms':>7} | {'p90 ms':>7} | {'p99 ms':>7} | {'requests':>8} | "
              f"{'non-2xx':>7} | {'mk cores':>8} | {'other':>5} | errors")
    log(header)
    log("-" * len(header))
    n = len(res["checks"]) - 1
    for name, r in (("GET threads?mailbox=inbox&limit=50", res["inbox"]),
                    (f"GET threads?q=... ({n} queries in turn)", res["search"])):
        log(f"{name:>44} | {fmt(r.get('rps'), '8.0f')} | {fmt(r.get('p50'), '7.2f')} | {fmt(r.get('p90'), '7.2f')} | "
            f"{fmt(r.get('p99'), '7.2f')} | {fmt(r.get('requests'), '8d')} | {fmt(r.get('non2xx'), '7d')} | "
            f"{fmt(r.get('server_cores'), '8.2f')} | {fmt(r.get('other_cores'), '5.2f')} | "
            f"{r.get('socket_errors') or r.get('error') or ''}")
    log("  (mk cores: mailkeep's CPU during the run; other: cores busy with work outside this bench, its wrk and "
        "mailkeep)")
    log("  first request of each, ms, and what it found (conversations on the page / total):")
    cells = [f"{c['query'][:28]} {c['ms']:.0f} ({c.get('threads', '-')}/{c.get('total', '-')})" for c in res["checks"]]
    for i in range(0, len(cells), 3):
        log("    " + "; ".join(cells[i:i + 3]))


# --------------------------------------------------------------------------- 3 Chromium

def kind_of(path: str) -> str:
    p = urllib.parse.urlsplit(path)
    if p.path == API + "session":
        return "session"
    if p.path == API + "mailboxes":
        return "mailboxes"
    if p.path == API + "threads":
        return "search" if "q=" in p.query else "list"
    if p.path.startswith(API + "threads/"):
        return "thread"
    if p.path == API + "modify":
        return "modify"
    return "other"


def short_path(path: str) -> str:
    p = urllib.parse.urlsplit(path)
    name = p.path[len(API):] if p.path.startswith(API) else p.path
    if name.startswith("threads/"):
        name = "threads/ID" + name[name.index("/", 8):] if "/" in name[8:] else "threads/ID"
    if name.startswith("emails/"):
        name = "emails/ID/" + name.rsplit("/", 1)[-1]
    return name + ("?q=..." if "q=" in p.query else "?" + p.query.split("&")[0] if p.query else "")


def end_node(p: subprocess.Popen) -> None:
    """Stops the node script: SIGTERM (Playwright then closes its browser), then SIGKILL to node's
    process group and to those of its children (Playwright starts Chromium in a group of its own)."""
    groups = {p.pid}
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == p.pid:
                groups.add(os.getpgid(int(d.name)))
        except (OSError, ValueError):
            pass
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        pass
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    p.wait()


def browser_part(mk: WebMailkeep, base: Path, reps: int, warmup: int, j_list: int, j_open: int,
                 queries: list[str], timeout: float) -> dict:
    cfg = {"url": f"http://127.0.0.1:{mk.http_port}", "cookie": {"name": "mk_mail", "value": mk.cookie},
           "reps": reps, "warmup": warmup, "jList": j_list, "jOpen": j_open, "queries": queries,
           "pressGapMs": 150, "chromium": CHROMIUM, "timeoutMs": 120000, "out": str(base / "browser.json")}
    cfg_path = base / "browser-config.json"
    cfg_path.write_text(json.dumps(cfg))
    t0 = time.monotonic()
    meter = Meter([mk.mk.pid]).__enter__()
    with open(base / "node.log", "wb") as out:
        p = subprocess.Popen(["node", str(NODE_SCRIPT), str(cfg_path)], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True, cwd=base)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:                        # also on Ctrl-C or SIGTERM: node and its Chromium go
            if p.poll() is None:
                end_node(p)
    meter.__exit__(None, None, None)
    node_log = (base / "node.log").read_text(errors="replace")
    if rc != 0 or not (base / "browser.json").exists():
        return {"error": f"node exited {rc} after {time.monotonic() - t0:.0f}s: {node_log[-2000:]}"}
    raw = json.loads((base / "browser.json").read_text())
    out = summarize_browser(raw, time.monotonic() - t0)
    out["other_cores"] = meter.other_cores
    out["mailkeep_cores"] = meter.server_cores
    return out


def summarize_browser(raw: dict, seconds: float) -> dict:
    reps = [r for r in raw["reps"] if r["rep"] >= 0]

    def server(entries: list[dict], kinds: tuple[str, ...]) -> float | None:
        """Sum of the server times (TTFB) of the first request of each kind on the way."""
        total, seen = 0.0, set()
        for e in entries:
            k = kind_of(e["path"])
            if k in kinds and k not in seen:
                seen.add(k)
                total += e["ttfb"]
        return total if seen == set(kinds) else None

    steps = {
        "load": ([r["load"]["ms"] for r in reps], [server(r["load"]["requests"], ("session", "mailboxes", "list"))
                                                   for r in reps]),
        "open": ([r["open"]["ms"] for r in reps if r.get("open")],
                 [server(r["open"]["requests"], ("thread",)) for r in reps if r.get("open")]),
        "search": ([r["search"]["ms"] for r in reps if r.get("search")],
                   [server(r["search"]["requests"], ("mailboxes", "search")) for r in reps if r.get("search")]),
    }
    jl = [x for r in reps for x in r.get("jList", [])]
    jo = [x for r in reps for x in r.get("jOpen", [])]
    steps["j_list"] = ([x["ms"] for x in jl], [])
    steps["j_open"] = ([x["ms"] for x in jo], [x["server"] for x in jo if x.get("server") is not None])
    dom = {"load": [r["load"]["seen"] for r in reps], "open": [r["open"]["seenMs"] for r in reps if r.get("open")],
           "search": [r["search"]["seenMs"] for r in reps if r.get("search")],
           "j_list": [x["seenMs"] for x in jl], "j_open": [x["seenMs"] for x in jo]}
    out: dict = {"seconds": seconds, "reps": len(reps), "errors": raw.get("errors", []), "steps": {},
                 "chromium": raw.get("version")}
    for name, (ms, srv) in steps.items():
        srv = [s for s in srv if s is not None]
        out["steps"][name] = {"samples": len(ms), "median_ms": median(ms), "p90_ms": pct(ms, 90),
                              "p99_ms": pct(ms, 99), "max_ms": max(ms) if ms else None,
                              "server_median_ms": median(srv), "server_p90_ms": pct(srv, 90),
                              "dom_median_ms": median(dom[name])}
    out["steps"]["j_open"]["prefetched"] = sum(1 for x in jo if x.get("prefetched"))
    by_kind: dict[str, list[float]] = {}
    for r in reps:
        for part in ("load", "open", "search"):
            for e in (r.get(part) or {}).get("requests", []):
                by_kind.setdefault(kind_of(e["path"]), []).append(e["ttfb"])
    for x in jo:
        if x.get("server") is not None:
            by_kind.setdefault("thread", []).append(x["server"])
    out["server_by_kind"] = {k: {"median_ms": median(v), "p90_ms": pct(v, 90), "samples": len(v)}
                             for k, v in sorted(by_kind.items())}
    out["search_queries"] = sorted({r["search"]["query"] for r in reps if r.get("search")})
    out["rows"] = median([r["load"]["rows"] for r in reps])
    for part in ("load", "search"):          # the repetition with the median time, request by request
        done = sorted((r for r in reps if r.get(part) and r[part].get("waterfall") is not None),
                      key=lambda r: r[part]["ms"])
        if done:
            mid = done[len(done) // 2][part]
            out[f"{part}_waterfall"] = {"ms": mid["ms"], "dom_ms": mid.get("seenMs", mid.get("seen")),
                                        "requests": mid["waterfall"], "long_tasks": mid.get("longTasks", [])}
    out["long_tasks"] = {"count": median([len(r["load"].get("longTasks", [])) for r in reps]),
                         "ms": median([sum(t["duration"] for t in r["load"].get("longTasks", [])) for r in reps])}
    nav = [r["load"]["nav"] for r in reps if r["load"].get("nav")]
    out["load_breakdown"] = {k: median([x[k] for x in nav]) for k in ("responseEnd", "domContentLoaded", "appStart")
                             } if nav else {}
    return out


def print_browser(res: dict) -> None:
    log()
    if "error" in res:
        log(f"(3) Chromium: FAILED {res['error']}")
        return
    log(f"(3) Headless Chromium {res.get('chromium') or ''}, {res['reps']} repetitions (fresh context each, logged in by cookie; "
        f"{res['seconds']:.0f}s), ms")
    header = (f"{'step':>44} | {'median':>7} | {'p90':>7} | {'p99':>7} | {'samples':>7} | {'DOM med':>7} | "
              f"{'server med':>10} | {'server p90':>10}")
    log(header)
    log("-" * len(header))
    names = {"load": "navigation -> first Inbox rows drawn", "open": "click on a row -> conversation drawn",
             "search": "/ query Enter -> result rows drawn", "j_list": "j in the list -> cursor drawn",
             "j_open": "j in a conversation -> next one drawn"}
    for k, name in names.items():
        s = res["steps"][k]
        log(f"{name:>44} | {fmt(s['median_ms'], '7.1f')} | {fmt(s['p90_ms'], '7.1f')} | {fmt(s['p99_ms'], '7.1f')} | "
            f"{s['samples']:>7} | {fmt(s['dom_median_ms'], '7.1f')} | {fmt(s['server_median_ms'], '10.1f')} | "
            f"{fmt(s['server_p90_ms'], '10.1f')}")
    j = res["steps"]["j_open"]
    b = res.get("load_breakdown") or {}
    log(f"  DOM = until the DOM change was seen (the rest is waiting for the frame that paints it); the load, "
        f"median: document received {fmt(b.get('responseEnd'), '.0f')} ms, DOMContentLoaded "
        f"{fmt(b.get('domContentLoaded'), '.0f')} ms, first API request {fmt(b.get('appStart'), '.0f')} ms "
        "after navigation start")
    for part in ("load", "search"):
        w = res.get(f"{part}_waterfall")
        if w:
            cells = [f"{short_path(e['path'])} {e['start']:.0f}-{e['end']:.0f} "
                     f"(server {e['responseStart'] - e['requestStart']:.0f})"
                     for e in w["requests"] if kind_of(e["path"]) != "thread" or part != "search"]
            cells += [f"long task {t['start']:.0f}-{t['start'] + t['duration']:.0f}" for t in w["long_tasks"]]
            log(f"  the median {part}, ms from {'navigation start' if part == 'load' else 'Enter'}: "
                + ", ".join(cells) + f"; DOM {w['dom_ms']:.0f}, painted {w['ms']:.0f}")
    log(f"  server = responseStart - requestStart (Resource Timing) of the API requests on the way: load = session + "
        f"mailboxes + list, search = mailboxes + threads?q=; {j['prefetched']} of {j['samples']} j presses in a "
        "conversation found it prefetched")
    log("  server time by request, median ms: " + ", ".join(
        f"{k} {fmt(v['median_ms'], '.1f')} (p90 {fmt(v['p90_ms'], '.1f')}, n={v['samples']})"
        for k, v in res["server_by_kind"].items()))
    lt = res.get("long_tasks") or {}
    log(f"  the page's long tasks (> 50 ms) during a load, median: {fmt(lt.get('count'), '.0f')}, "
        f"{fmt(lt.get('ms'), '.0f')} ms together")
    log(f"  other work on the machine meanwhile: {res['other_cores']:.2f} cores (mailkeep {res['mailkeep_cores']:.2f})")
    if res["errors"]:
        log(f"  NOTE: {len(res['errors'])} page errors or bad responses, first: {res['errors'][:3]}")


# --------------------------------------------------------------------------- 4 the peer: Roundcube

RC_ROOT = Path("/var/lib/roundcube")          # Debian's INSTALL_PATH; public_html/ is the document root
RC_SQL = Path("/usr/share/roundcube/SQL/sqlite.initial.sql")
RC_DEFAULTS = Path("/etc/roundcube/defaults.inc.php")
APACHE = Path("/usr/sbin/apache2")
APACHE_MODULES = Path("/usr/lib/apache2/modules")
RC_HOST = "127.0.0.3"


def roundcube_missing() -> str | None:
    """Why Roundcube cannot run here, or None."""
    php = sorted(glob.glob(str(APACHE_MODULES / "libphp*.so")))
    need = [(RC_ROOT / "public_html" / "index.php", "roundcube-core"), (RC_SQL, "roundcube-core"),
            (RC_DEFAULTS, "roundcube-core"), (APACHE, "apache2"),
            (APACHE_MODULES / "mod_mpm_prefork.so", "apache2-bin")]
    missing = sorted({pkg for path, pkg in need if not path.exists()} | (set() if php else {"libapache2-mod-php"}))
    if not missing and not glob.glob("/etc/php/*/apache2/conf.d/*pdo_sqlite.ini"):
        missing = ["php-sqlite3"]
    if missing:
        return (f"{', '.join(missing)} not installed (apt-get install --no-install-recommends roundcube-core "
                "roundcube-sqlite3)")
    try:
        pwd.getpwnam("www-data")
    except KeyError:
        return "no www-data user for Apache's children"
    return None


class Roundcube:
    """Debian's Roundcube under its own web server: a private Apache (prefork, mod_php, the package's
    php.ini) on RC_HOST:port, configured in `base` only (ROUNDCUBE_CONFIG_DIR points Roundcube at a
    config dir there: SQLite database, logs, temp), talking IMAP to 127.0.0.1:imap_port. Children
    run as www-data."""

    def __init__(self, base: Path, imap_port: int):
        self.base = base
        self.port = free_port(RC_HOST)
        self.imap_port = imap_port
        self.proc: subprocess.Popen | None = None
        self.url = f"http://{RC_HOST}:{self.port}"

    def _configure(self) -> None:
        b = self.base
        www = pwd.getpwnam("www-data")
        for d in ("config", "logs", "temp", "db", "run"):
            (b / d).mkdir(parents=True, exist_ok=True)
        b.chmod(0o755)
        (b / "config" / "defaults.inc.php").symlink_to(RC_DEFAULTS)
        if (RC_DEFAULTS.parent / "mimetypes.php").exists():
            (b / "config" / "mimetypes.php").symlink_to(RC_DEFAULTS.parent / "mimetypes.php")
        des_key = os.urandom(12).hex()
        (b / "config" / "config.inc.php").write_text(f"""<?php
// written by bench/web_bench.py; everything else is Debian's defaults.inc.php
$config = [];
$config['db_dsnw'] = 'sqlite:///{b}/db/roundcube.db?mode=0640';
$config['imap_host'] = '127.0.0.1:{self.imap_port}';
$config['imap_timeout'] = 1800;
$config['smtp_host'] = '';
$config['des_key'] = '{des_key}';
$config['plugins'] = [];
$config['skin'] = 'elastic';
$config['log_dir'] = '{b}/logs/';
$config['temp_dir'] = '{b}/temp/';
$config['session_lifetime'] = 600;
$config['enable_spellcheck'] = false;
$config['enable_installer'] = false;
$config['mail_pagesize'] = 50;
$config['support_url'] = '';
""")
        db = sqlite3.connect(b / "db" / "roundcube.db")
        db.executescript(RC_SQL.read_text())
        db.close()
        for d in ("logs", "temp", "db"):
            for p in [b / d, *(b / d).iterdir()]:
                os.chown(p, www.pw_uid, www.pw_gid)
        php = sorted(glob.glob(str(APACHE_MODULES / "libphp*.so")))[-1]
        (b / "apache2.conf").write_text(f"""# written by bench/web_bench.py: a private Apache for Roundcube
ServerRoot "{b}"
ServerName {RC_HOST}
Listen {RC_HOST}:{self.port}
PidFile {b}/run/apache2.pid
DefaultRuntimeDir {b}/run
Mutex file:{b}/run default
ErrorLog {b}/logs/apache-error.log
LogLevel warn
User www-data
Group www-data
LoadModule mpm_prefork_module {APACHE_MODULES}/mod_mpm_prefork.so
LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so
LoadModule mime_module {APACHE_MODULES}/mod_mime.so
LoadModule dir_module {APACHE_MODULES}/mod_dir.so
LoadModule env_module {APACHE_MODULES}/mod_env.so
LoadModule php_module {php}
TypesConfig /etc/mime.types
StartServers 4
MinSpareServers 2
MaxSpareServers 8
MaxRequestWorkers 32
KeepAlive On
Timeout 1800
DocumentRoot {RC_ROOT}/public_html
DirectoryIndex index.php
<Directory />
  AllowOverride None
  Require all denied
</Directory>
<Directory {RC_ROOT}/public_html/>
  Options +FollowSymLinks
  AllowOverride None
  Require all granted
</Directory>
<FilesMatch "\\.php$">
  SetHandler application/x-httpd-php
</FilesMatch>
SetEnv ROUNDCUBE_CONFIG_DIR {b}/config
php_admin_value max_execution_time 1800
php_admin_value default_socket_timeout 1800
php_admin_value memory_limit 512M
""")

    def start(self) -> "Roundcube":
        self._configure()
        self._out = open(self.base / "apache.stdout", "ab")
        self.proc = subprocess.Popen([str(APACHE), "-f", str(self.base / "apache2.conf"), "-DFOREGROUND"],
                                     stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._out,
                                     start_new_session=True)
        try:
            wait_port(RC_HOST, self.port, 30, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"Apache did not start: {exc}\n{self.log()}") from exc
        return self

    def version(self) -> str:
        m = re.search(r"RCMAIL_VERSION', '([^']+)'", (RC_ROOT / "program/include/iniset.php").read_text())
        return m.group(1) if m else "?"

    def login(self, user: str, password: str) -> "RoundcubeSession":
        """Through the login form, as a browser does: GET the form (session cookie, _token), POST it;
        the mail page it leads to carries the request token of the AJAX calls."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(self.url + "/?_task=login", timeout=120).read().decode(errors="replace")
        m = re.search(r'name="_token" value="([^"]+)"', page)
        if not m:
            raise RuntimeError(f"Roundcube: no login form: {page[:500]}")
        form = urllib.parse.urlencode({"_token": m.group(1), "_task": "login", "_action": "login", "_timezone": "UTC",
                                       "_url": "", "_user": user, "_pass": password}).encode()
        try:
            page = opener.open(self.url + "/?_task=login", data=form, timeout=1800).read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"Roundcube login refused ({e.code}): {self.log()[-1500:]}") from e
        m = re.search(r'"request_token":"([^"]+)"', page)
        if not m:
            raise RuntimeError(f"Roundcube login failed: {page[:300]} {self.log()[-1500:]}")
        return RoundcubeSession(self.url, opener, m.group(1))

    def log(self) -> str:
        """Apache's output and error log, and Roundcube's own logs (errors.log, ...)."""
        out = []
        for p in [self.base / "apache.stdout", *sorted((self.base / "logs").glob("*"))]:
            if p.is_file():
                out.append(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()               # SIGTERM to the parent: it stops its children
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # children that outlived the parent (they are in its process group)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None
        self._out.close()


class RoundcubeSession:
    def __init__(self, url: str, opener, token: str):
        self.url, self.opener, self.token = url, opener, token

    def search(self, q: str, headers: str = "text") -> tuple[float, int]:
        """The request Roundcube's page sends for a search typed into its box with "Entire message"
        and "All folders" (scope all: the subscribed folders); returns (seconds, messages found)."""
        params = {"_task": "mail", "_action": "search", "_q": q, "_mbox": "INBOX", "_headers": headers,
                  "_filter": "ALL", "_scope": "all", "_interval": "", "_remote": "1", "_unlock": "loading1"}
        req = urllib.request.Request(self.url + "/?" + urllib.parse.urlencode(params),
                                     headers={"X-Roundcube-Request": self.token, "X-Requested-With": "XMLHttpRequest"})
        t0 = time.perf_counter()
        body = self.opener.open(req, timeout=1800).read()
        dt = time.perf_counter() - t0
        try:
            d = json.loads(body)
            count = int(d["env"]["messagecount"])
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"Roundcube search {q!r}: unexpected answer {body[:300]!r}") from e
        return dt, count


def dv_master(dv: BenchDovecot) -> int:
    pidfile = dv.run_dir / "master.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else 0


def prepare_dovecot(dv: BenchDovecot, folders=("INBOX", "Sent", "Archive")) -> dict:
    """Subscribes the folders mailkeep searches by default (not Junk) and lets Dovecot build its
    index of each (untimed for the searches, reported)."""
    imap = imaplib.IMAP4("127.0.0.1", dv.port, timeout=3600)
    imap.login(USER, Dovecot.PASSWORD)
    t0 = time.perf_counter()
    total = 0
    for f in folders:
        imap.subscribe(f)
        typ, data = imap.status(f, "(MESSAGES)")
        total += int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
        imap.select(f, readonly=True)
    imap.logout()
    return {"folders": list(folders), "messages": total, "index_s": time.perf_counter() - t0}


class PeerQuery:
    """A query as mailkeep's API takes it, as Roundcube's search box takes it (with its "Entire
    message" setting, IMAP TEXT, or a from: prefix, IMAP HEADER FROM), and as IMAP criteria."""

    def __init__(self, mk: str, roundcube: str, headers: str, imap: list[str]):
        self.mk, self.roundcube, self.headers, self.imap = mk, roundcube, headers, imap

    def as_query(self) -> Query:
        return Query(self.mk, None, None, self.imap)


def peer_queries(g: Synthetic) -> list[PeerQuery]:
    """index_bench's single-word and phrase queries (IMAP TEXT), and its frequent sender's name."""
    out = [PeerQuery(q.mk, q.imap[1].strip('"'), "text", q.imap) for q in build_queries(g)
           if q.imap and len(q.imap) == 2 and q.imap[0] == "TEXT"]
    name = g.from_name.lower()
    out.append(PeerQuery(f"from:{name}", f"from:{name}", "from", ["FROM", name]))
    return out


def mailkeep_latency(mk: WebMailkeep, queries: list[PeerQuery], seconds: float) -> dict:
    """Each query one request at a time on one keep-alive connection: a warm-up, then requests
    for `seconds` (at least 5)."""
    client = mk.client()
    per = []
    meter = Meter([mk.mk.pid]).__enter__()
    for q in queries:
        path = threads_path(q.mk)
        status, body, _ = client.get(path)
        if status != 200:
            per.append({"query": q.mk, "error": f"{status} {body[:200]!r}"})
            continue
        d = json.loads(body)
        runs = []
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end or len(runs) < 5:
            status, _, dt = client.get(path)
            if status != 200:
                break
            runs.append(1000 * dt)
        per.append({"query": q.mk, "runs_ms": runs, "median_ms": median(runs), "p99_ms": p99(runs),
                    "conversations": len(d["threads"]), "total": d["total"]})
    client.close()
    meter.__exit__(None, None, None)
    return {"per_query": per, "other_cores": meter.other_cores}


def roundcube_part(base: Path, maildir: Path, queries: list[PeerQuery], runs: int, budget: float) -> dict:
    dbase = base / "rc-dovecot"
    dbase.mkdir()
    dv = BenchDovecot(dbase, maildir).start()
    rc = None
    res: dict = {"peer": "roundcube", "per_query": []}
    try:
        res["dovecot"] = prepare_dovecot(dv)
        log(f"  Dovecot indexed {res['dovecot']['messages']} messages of {', '.join(res['dovecot']['folders'])} "
            f"(subscribed) in {res['dovecot']['index_s']:.1f}s")
        rc = Roundcube(base / "roundcube", dv.port).start()
        res["version"] = f"Roundcube {rc.version()}"
        t0 = time.perf_counter()
        session = rc.login(USER, Dovecot.PASSWORD)
        res["login_s"] = time.perf_counter() - t0
        log(f"  {res['version']} on http://{RC_HOST}:{rc.port}/ (Apache prefork + mod_php), logged in through "
            f"its form in {res['login_s']:.1f}s")
        deadline = time.monotonic() + budget
        meter = Meter([rc.proc.pid, dv_master(dv)]).__enter__()
        for q in queries:
            if time.monotonic() > deadline:
                log(f"  {q.mk:24s} skipped: the peer's time budget ({budget:.0f}s) is used up")
                continue
            warm, found = session.search(q.roundcube, q.headers)
            times = []
            for _ in range(runs):
                if time.monotonic() > deadline and times:
                    break
                dt, found = session.search(q.roundcube, q.headers)
                times.append(1000 * dt)
            res["per_query"].append({"query": q.mk, "peer_query": q.roundcube, "headers": q.headers,
                                     "warmup_ms": 1000 * warm, "runs_ms": times, "median_ms": median(times),
                                     "p99_ms": p99(times), "messages": found})
            log(f"  {q.mk:24s} Roundcube _q={q.roundcube!r} ({q.headers}) {median(times):10.1f} ms median of "
                f"{len(times)} (warm-up {1000 * warm:.0f} ms), {found} messages")
        meter.__exit__(None, None, None)
        res["other_cores"] = meter.other_cores
    finally:
        if rc:
            res["log_tail"] = rc.log()[-2000:]
            rc.stop()
        dv.stop()
    return res


def peer_part(base: Path, maildir: Path, queries: list[PeerQuery], runs: int, budget: float,
              force_dovecot: bool) -> dict:
    why = "--peer dovecot" if force_dovecot else roundcube_missing()
    if why is None:
        try:
            return roundcube_part(base, maildir, queries, runs, budget)
        except Exception as e:       # Roundcube broken here: say why, measure the stand-in
            why = f"Roundcube failed: {' '.join(str(e).split())[:600]}"
    log(f"  NOTE: Dovecot's IMAP SEARCH stands in for Roundcube: {why}")
    res = dovecot_part(maildir, base, [q.as_query() for q in queries], runs, budget)
    res["peer"] = "dovecot"
    res["why"] = why
    for row in res["per_query"]:
        row["peer_query"] = row.get("imap")
    return res


def print_peer(peer: dict, mkl: dict) -> dict:
    log()
    name = peer.get("version", "Dovecot IMAP SEARCH") if peer["peer"] == "roundcube" else "Dovecot IMAP SEARCH"
    if peer["peer"] == "roundcube":
        log(f"(4) Search: {name} (Apache prefork + mod_php, Dovecot IMAP without FTS; \"Entire message\" over "
            "INBOX, Sent, Archive) against mailkeep's API, one request at a time, ms")
    else:
        log(f"(4) Search: Dovecot IMAP SEARCH (stand-in for Roundcube: {peer.get('why')}; EXAMINE + SEARCH of "
            "INBOX, Sent, Archive on one connection) against mailkeep's API, one request at a time, ms")
    header = (f"{'query':>24} | {'peer med':>10} | {'peer p99':>10} | {'mailkeep med':>12} | {'mk p99':>7} | "
              f"{'ratio':>6} | {'peer msgs':>9} | {'mk conv':>7}")
    log(header)
    log("-" * len(header))
    mk_rows = {r["query"]: r for r in mkl["per_query"]}
    peer_meds, mk_meds, ratios = [], [], []
    for row in peer["per_query"]:
        mk = mk_rows.get(row["query"], {})
        if mk.get("median_ms") and row.get("median_ms"):
            peer_meds.append(row["median_ms"])
            mk_meds.append(mk["median_ms"])
            ratios.append(row["median_ms"] / mk["median_ms"])
        log(f"{row['query'][:24]:>24} | {fmt(row.get('median_ms'), '10.1f')} | {fmt(row.get('p99_ms'), '10.1f')} | "
            f"{fmt(mk.get('median_ms'), '12.2f')} | {fmt(mk.get('p99_ms'), '7.2f')} | "
            f"{fmt(ratio(row.get('median_ms'), mk.get('median_ms')), '6.0f')} | {fmt(row.get('messages'), '9d')} | "
            f"{fmt(mk.get('total'), '7d')}")
    out = {"queries": len(ratios), "peer_set_ms": sum(peer_meds) if ratios else None,
           "mailkeep_set_ms": sum(mk_meds) if ratios else None,
           "ratio_set": ratio(sum(peer_meds), sum(mk_meds)) if ratios else None,
           "ratio_lowest": min(ratios) if ratios else None,
           "ratio_geomean": statistics.geometric_mean(ratios) if ratios else None}
    log(f"the {out['queries']} queries once each (sum of the medians): peer {fmt(out['peer_set_ms'], '.1f')} ms, "
        f"mailkeep {fmt(out['mailkeep_set_ms'], '.2f')} ms = {fmt(out['ratio_set'], '.0f')}x; per query: lowest "
        f"{fmt(out['ratio_lowest'], '.0f')}x, geometric mean {fmt(out['ratio_geomean'], '.0f')}x")
    log(f"  other work on the machine: {fmt(peer.get('other_cores'), '.2f')} cores during the peer's searches, "
        f"{fmt(mkl.get('other_cores'), '.2f')} during mailkeep's")
    log("  (peer msgs: messages the peer found; mk conv: the conversations mailkeep reports as its total. "
        "IMAP TEXT is a substring match, mailkeep's words are stemmed terms, so the counts differ)")
    return out


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, help="synthetic archive size (default 200000; --quick 5000)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run (~2 minutes)")
    ap.add_argument("--wrk-seconds", type=int, help="seconds per wrk run (default 20; --quick 5)")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--wrk-connections", type=int, default=10)
    ap.add_argument("--reps", type=int, help="Chromium repetitions (default 20; --quick 3), after one warm-up")
    ap.add_argument("--j-list", type=int, default=20, help="j presses in the list per repetition")
    ap.add_argument("--j-open", type=int, default=15, help="j presses in an open conversation per repetition")
    ap.add_argument("--latency-seconds", type=float, help="mailkeep: seconds of one-at-a-time requests per peer "
                                                          "query (default 10; --quick 2)")
    ap.add_argument("--peer-runs", type=int, help="timed peer searches per query after one warm-up (default 3; "
                                                  "--quick 2)")
    ap.add_argument("--peer-budget", type=float, default=1800, help="seconds allowed for the peer's searches")
    ap.add_argument("--peer", choices=("roundcube", "dovecot"), default="roundcube",
                    help="dovecot: measure the IMAP SEARCH stand-in even where Roundcube is installed")
    ap.add_argument("--skip-api", action="store_true")
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--index-timeout", type=float, default=7200, help="seconds allowed for `mailkeep archive index`")
    ap.add_argument("--out", type=Path, help="write all figures as JSON")
    args = ap.parse_args()
    q = args.quick
    n = args.messages or (5000 if q else 200000)
    wrk_seconds = args.wrk_seconds or (5 if q else 20)
    reps = args.reps or (3 if q else 20)
    latency_seconds = args.latency_seconds or (2 if q else 10)
    peer_runs = args.peer_runs or (2 if q else 3)

    if not (CORPUS_DIR / "easy-ham-1").is_dir():
        print("the corpus is missing: run tests/data/fetch.sh", file=sys.stderr)
        return 2
    need = [] if args.skip_api else ["wrk"]
    need += [] if args.skip_browser else ["node"]
    need += [] if args.skip_peer else ["dovecot", "doveadm"]
    missing = [t for t in need if not shutil.which(t)]
    if not args.skip_browser:
        if not Path(CHROMIUM).exists():
            missing.append(f"{CHROMIUM} (apt-get install chromium)")
        if not PLAYWRIGHT.is_dir():
            missing.append("tests/browser/node_modules/playwright-core (npm ci --prefix tests/browser)")
    if not mailkeep_search_ready():
        missing.append(f"{MAILKEEP_BIN} with `archive index` (build it)")
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install wrk nodejs dovecot-imapd)", file=sys.stderr)
        return 2

    base = Path(tempfile.mkdtemp(prefix="mailkeep-web-bench-", dir="/var/tmp"))
    base.chmod(0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": q, "messages": n,
                     "cores": os.cpu_count(), "parts_s": {}}
    failed = False
    rc = 0
    web: WebMailkeep | None = None
    t_all = time.monotonic()
    try:
        log(f"workdir {base}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
        # ---------------------------------------------------------------- 1 archive
        t_part = time.monotonic()
        g = Synthetic(load_corpus())
        archive = base / "archive"
        md, st = g.generate(archive / DOMAIN / LOCAL, n)
        chown_tree(md.root, MAIL_UID, MAIL_GID)         # Dovecot reads it as uid 8; mailkeep runs as root
        tool = MailkeepTool(base, archive, "web")
        tool.reset()
        run = tool.index(args.index_timeout)
        indexed = tool.indexed(run)
        results["archive"] = {"messages": st.messages, "bytes": st.bytes, "folders": dict(st.folders),
                              "generate_s": st.seconds, "index_s": run.wall, "index_cpu_s": run.cpu,
                              "indexed": indexed, "index_ok": run.ok}
        log(f"(1) synthetic Maildir: {st.messages} messages, {st.bytes / 2**20:.1f} MiB in {st.seconds:.1f}s, "
            f"folders {dict(st.folders)}; `mailkeep archive index`: {indexed} messages in {run.wall:.1f}s "
            f"({st.messages / run.wall:.0f} msg/s, cpu {run.cpu:.1f}s)")
        if not run.ok:
            log(f"  FAILED: mailkeep archive index exit {run.rc}: {run.err[-500:]}")
            return 1
        results["parts_s"]["archive"] = time.monotonic() - t_part

        # ---------------------------------------------------------------- mailkeep serve
        web = WebMailkeep(base, archive, tool.idx).start()
        waited = web.wait_quiet()
        web.login()
        log(f"mailkeep serve on http://127.0.0.1:{web.http_port}/mail/ (quiet after {waited:.0f}s: the indexer's "
            "start-up scan); one session for wrk and Chromium")
        queries = build_queries(g)
        pq = peer_queries(g)

        # ---------------------------------------------------------------- 2 api
        if not args.skip_api:
            t_part = time.monotonic()
            log()
            log(f"(2) JSON API: GET threads (Inbox, and {len(queries)} queries of index_bench in turn)")
            api = api_part(web, queries, base, wrk_seconds, args.wrk_threads, args.wrk_connections)
            results["api"] = {k: v for k, v in api.items()}
            for k in ("inbox", "search"):
                results["api"][k] = {kk: vv for kk, vv in api[k].items() if kk != "output"}
                if api[k].get("rps") is None or api[k].get("non2xx") or api[k].get("rc"):
                    failed = True
                    log(f"  wrk {k} FAILED or saw errors:\n{api[k].get('output', api[k].get('error'))}")
            failed |= bool(api["failed"])
            print_api(api)
            results["parts_s"]["api"] = time.monotonic() - t_part

        # ---------------------------------------------------------------- 3 browser
        if not args.skip_browser:
            t_part = time.monotonic()
            browser_queries = [x.mk for x in pq]
            log()
            log(f"(3) Chromium: {reps} repetitions after 1 warm-up; {args.j_list} j in the list and {args.j_open} in "
                f"a conversation per repetition; searches {browser_queries}")
            br = browser_part(web, base, reps, 1, args.j_list, args.j_open, browser_queries,
                              timeout=600 + reps * 120)
            results["browser"] = br
            failed |= "error" in br
            print_browser(br)
            results["parts_s"]["browser"] = time.monotonic() - t_part

        # ---------------------------------------------------------------- 4 peer
        if not args.skip_peer:
            t_part = time.monotonic()
            log()
            log(f"(4) search, one request at a time: mailkeep's API ({latency_seconds:.0f}s per query), then the peer "
                f"(1 warm-up + {peer_runs} runs per query, budget {args.peer_budget:.0f}s)")
            mkl = mailkeep_latency(web, pq, latency_seconds)
            for row in mkl["per_query"]:
                if "error" in row:
                    failed = True
                    log(f"  mailkeep FAILED on {row['query']!r}: {row['error']}")
                else:
                    log(f"  {row['query']:24s} mailkeep {row['median_ms']:8.2f} ms median of {len(row['runs_ms'])}, "
                        f"p99 {row['p99_ms']:.2f} ms, {row['total']} conversations")
            web.stop()              # the peer runs alone
            web = None
            peer = peer_part(base, md.root, pq, peer_runs, args.peer_budget, args.peer == "dovecot")
            summary = print_peer(peer, mkl)
            results["peer"] = {"mailkeep": mkl, "peer": peer, "summary": summary}
            results["parts_s"]["peer"] = time.monotonic() - t_part

        # ---------------------------------------------------------------- targets
        api = results.get("api") or {}
        steps = (results.get("browser") or {}).get("steps", {})
        peer_sum = (results.get("peer") or {}).get("summary", {})
        peer_name = ((results.get("peer") or {}).get("peer") or {}).get("peer", "roundcube")
        targets = [
            ("Inbox JSON p99 (wrk -c10)", (api.get("inbox") or {}).get("p99"), "<", 50, "ms"),
            ("search JSON p99 (wrk -c10)", (api.get("search") or {}).get("p99"), "<", 100, "ms"),
            ("page load to first Inbox rows, median", (steps.get("load") or {}).get("median_ms"), "<", 500, "ms"),
            ("j in the list -> cursor drawn, p99", (steps.get("j_list") or {}).get("p99_ms"), "<", 50, "ms"),
            ("j in a conversation -> next drawn, p99", (steps.get("j_open") or {}).get("p99_ms"), "<", 50, "ms"),
            (f"search {'Roundcube' if peer_name == 'roundcube' else 'IMAP SEARCH'} / mailkeep (query set)",
             peer_sum.get("ratio_set"), ">=", 20, "x"),
        ]
        log()
        log(f"Targets ({'--quick: sizes too small to judge' if q else f'synthetic archive of {n} messages'}):")
        header = f"{'figure':>44} | {'value':>9} | {'target':>9} | result"
        log(header)
        log("-" * len(header))
        results["targets"] = []
        for name, value, op, goal, unit in targets:
            verdict = "n/a" if value is None else (
                "PASS" if {">=": value >= goal, "<": value < goal}[op] else "FAIL")
            failed |= verdict == "FAIL"
            results["targets"].append({"figure": name, "value": value, "op": op, "target": goal, "unit": unit,
                                       "result": verdict})
            log(f"{name:>44} | {fmt(value, '9.2f')} | {op + ' ' + str(goal) + ' ' + unit:>9} | {verdict}")
        results["parts_s"]["total"] = time.monotonic() - t_all
        log(f"total {results['parts_s']['total']:.0f}s; parts " +
            ", ".join(f"{k} {v:.0f}s" for k, v in results["parts_s"].items() if k != "total"))
        rc = 1 if failed else 0
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        if web:
            web.stop()
        if args.out:
            args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
            log(f"figures written to {args.out}")
        if os.environ.get("KEEP_BENCH_DIR") != "1":
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"kept {base}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
