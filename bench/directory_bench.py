#!/usr/bin/python3
"""How long one directory sync takes, and how much memory, for a large directory (issue 14).

A fake Google Workspace directory (tests/e2e/directory_support.FakeDirectory, HTTPS on 127.0.0.1
with a throwaway CA, every request checked against the spec) holds --users users (default 50,000,
each with 0-2 aliases, seeded) and --groups groups (2,000, each with 0-1 alias), served --page-size
users (500: 100 pages) and --group-page-size groups (200: 10 pages) per page. `--provider
microsoft` serves the same directory as Graph (the page sizes stay as given; $top 999 allows them).

`mailkeep accounts sync -c FILE` runs --runs times (default 5) in each mode:

  cold    the cache removed before each run: every account is added, the whole diff is printed
  steady  the cache from the previous run is there and nothing changed (the hourly case)

Each run is one process started by this script; its wall time runs from the start of the process
to its exit. Its peak RSS is GNU time's %M (Debian package `time`): time forks mailkeep from its own
small process and reports that child's ru_maxrss. ru_maxrss of a child of this script itself would
be wrong: Linux folds the pre-exec high-water mark (a copy of this large Python process, which holds
the fake directory) into the child's, and every run would read ~110 MiB.
Each run must exit 0 with the summary line `accounts: N, added: ...` that its
mode implies, one token request and every page fetched once; the first cold run's cache must equal
the directory (the spec's model, directory_support.expected_accounts).

The fake runs in this script's process (Python threads), so its own serving time is inside each
sync's wall time: a pure-Python client fetching the whole directory once first gives that floor
("the fake alone").

Targets (the issue's): median wall time < --max-seconds (10) and peak RSS < --max-rss-mb (50) in
both modes. Exit status 1 when a target is missed or a run failed a check, 2 when the binary is
missing, 130 on Ctrl-C.

Usage: /usr/bin/python3 bench/directory_bench.py [--binary build/mailkeep] [--runs 5] [--users 50000]
       [--groups 2000] [--provider google] [--mode both] [--out FILE]   (KEEP_BENCH_DIR=1 keeps the work dir)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import MAILKEEP_BIN, render_ini  # noqa: E402
from directory_support import (  # noqa: E402
    FakeDirectory, _Client, directory_config, expected_accounts, group, make_directory_pki, parse_accounts_text,
    provider_setup, user,
)

SUMMARY = re.compile(r"^accounts: (\d+), added: (\d+), removed: (\d+), changed: (\d+)$", re.M)


def log(msg: str) -> None:
    print(msg, flush=True)


def make_directory(users: int, groups: int, seed: int):
    rng = random.Random(seed)
    out_users, out_groups = [], []
    for i in range(users):
        local = f"user{i:05d}"
        domain = "example.org" if i % 5 else "example.com"
        aliases = [f"{local}.a{j}@{rng.choice(('example.org', 'example.com'))}" for j in range(rng.randint(0, 2))]
        out_users.append(user(f"{local}@{domain}", *aliases))
    for i in range(groups):
        local = f"group{i:04d}"
        out_groups.append(group(f"{local}@example.org", *[f"{local}.list@example.org"] * rng.randint(0, 1)))
    return out_users, out_groups


class Run:
    def __init__(self, mode: str, seconds: float, rss_kb: int, rc: int, summary: tuple | None, note: str = ""):
        self.mode, self.seconds, self.rss_kb, self.rc, self.summary, self.note = mode, seconds, rss_kb, rc, summary, note

    def as_dict(self) -> dict:
        return {"mode": self.mode, "seconds": self.seconds, "rss_kb": self.rss_kb, "rc": self.rc,
                "summary": self.summary, "note": self.note}


TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"   # GNU time (Debian package time)


def run_sync(binary: Path, ini: Path, workdir: Path, timeout: float, name: str) -> tuple[int, float, int, str, str]:
    """(exit code, wall seconds, peak RSS kB of that process, stdout, stderr)."""
    out_path, err_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.monotonic()
        rss_path = workdir / f"{name}.rss"
        # GNU time forks mailkeep from its own small process and reports that child's
        # ru_maxrss. Measured from here, a child of this (large) Python process would carry
        # the pre-exec copy of our own RSS in its ru_maxrss (Linux folds the old mm's
        # high-water mark into it at exec), and every run would read ~110 MiB.
        proc = subprocess.Popen([TIME, "-f", "%M", "-o", str(rss_path), str(binary), "accounts", "sync", "-c", str(ini)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)     # reaped here: Popen must not wait again
    # time writes "Command exited with non-zero status N" before the figure when it failed.
    rss_lines = rss_path.read_text().split() if rss_path.exists() else []
    rss = int(rss_lines[-1]) if rss_lines and rss_lines[-1].isdigit() else 0
    return (proc.returncode, seconds, rss, out_path.read_text(errors="replace"),
            err_path.read_text(errors="replace"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path, default=MAILKEEP_BIN, help="the mailkeep binary (default build/mailkeep "
                    "or $MAILKEEP_BIN)")
    ap.add_argument("--provider", choices=("google", "microsoft"), default="google")
    ap.add_argument("--users", type=int, default=50000)
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--page-size", type=int, default=500, help="users per page (default 500: 100 pages)")
    ap.add_argument("--group-page-size", type=int, default=200, help="groups per page (default 200)")
    ap.add_argument("--runs", type=int, default=5, help="syncs per mode; the median is reported")
    ap.add_argument("--mode", choices=("both", "cold", "steady"), default="both")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per sync")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="target: median wall time of one sync")
    ap.add_argument("--max-rss-mb", type=float, default=50.0, help="target: peak RSS of a sync (MiB)")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--out", type=Path, help="write every figure as JSON to this file")
    args = ap.parse_args()

    if not (args.binary.is_file() and os.access(args.binary, os.X_OK)):
        print(f"{args.binary} missing (build it, or --binary / MAILKEEP_BIN=...)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mailkeep-directory-bench-", dir="/var/tmp"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    fake = None
    try:
        pki = make_directory_pki(workdir / "pki")
        fake = FakeDirectory(pki, page_size={"users": args.page_size, "groups": args.group_page_size}).start()
        users, groups = make_directory(args.users, args.groups, args.seed)
        fake.set_directory(users, groups)
        expected = expected_accounts(users, groups, args.provider)
        n_aliases = sum(len(v) for v in expected.values())
        setup = provider_setup(fake, args.provider, workdir, interval=3600)
        ini = workdir / "mailkeep.ini"
        ini.write_text(render_ini(directory_config(workdir, setup)))
        cache = Path(setup.section["cache"])
        user_pages = -(-args.users // min(args.page_size, 500 if args.provider == "google" else 999))
        group_pages = -(-args.groups // min(args.group_page_size, 200 if args.provider == "google" else 999))
        log(f"workdir {workdir}; mailkeep {args.binary}; provider {args.provider}")
        log(f"directory: {args.users} users, {args.groups} groups -> {len(expected)} accounts, {n_aliases} aliases; "
            f"{user_pages} user pages, {group_pages} group pages per sync")

        # the fake alone: a pure-Python client fetching everything once
        client = _Client(fake, pki.ca.cert)
        t0 = time.monotonic()
        if args.provider == "google":
            status, doc = client.google_token(setup.sa)
            assert status == 200, doc
            got = len(client.google_list(doc["access_token"], "users")) + len(client.google_list(doc["access_token"], "groups"))
        else:
            import urllib.parse
            app = setup.app
            status, _, body = client.form(fake.microsoft_token_url(app.tenant), {
                "client_id": app.client_id, "client_secret": app.secret,
                "scope": "https://graph.microsoft.com/.default", "grant_type": "client_credentials"})
            assert status == 200, body
            token = json.loads(body)["access_token"]
            got = len(client.graph_list(token, "users")) + len(client.graph_list(token, "groups"))
        fake_alone = time.monotonic() - t0
        assert got == args.users + args.groups, got
        log(f"the fake alone (Python client, same pages): {fake_alone:.2f} s")

        modes = ["cold", "steady"] if args.mode == "both" else [args.mode]
        runs: list[Run] = []
        failures: list[str] = []
        first_cold_checked = False
        if modes == ["steady"]:
            rc, sec, rss, out, err = run_sync(args.binary, ini, workdir, args.timeout, "fill")
            if rc != 0:
                failures.append(f"the sync filling the cache exited {rc}: {err[-500:]}")
        for mode in modes:
            for i in range(args.runs if not failures else 0):
                if mode == "cold" and cache.exists():
                    cache.unlink()
                tokens0, users0, groups0 = (fake.token_requests(), fake.pages_served("users"),
                                            fake.pages_served("groups"))
                rc, sec, rss, out, err = run_sync(args.binary, ini, workdir, args.timeout, f"{mode}{i}")
                m = SUMMARY.search(out)
                summary = tuple(int(x) for x in m.groups()) if m else None
                want = (len(expected), len(expected), 0, 0) if mode == "cold" else (len(expected), 0, 0, 0)
                problems = []
                if rc != 0:
                    problems.append(f"exit {rc}: {err.strip()[-300:]}")
                if summary != want:
                    problems.append(f"summary {summary}, expected {want}")
                fetched = (fake.token_requests() - tokens0, fake.pages_served("users") - users0,
                           fake.pages_served("groups") - groups0)
                if fetched != (1, user_pages, group_pages):
                    problems.append(f"token requests / user pages / group pages {fetched}, expected "
                                    f"(1, {user_pages}, {group_pages})")
                if mode == "cold" and not first_cold_checked and rc == 0:
                    first_cold_checked = True
                    if parse_accounts_text(cache.read_text()) != expected:
                        problems.append("the cache differs from the directory")
                note = "; ".join(problems)
                runs.append(Run(mode, sec, rss, rc, summary, note))
                log(f"  {mode:6s} run {i + 1}: {sec:7.2f} s  peak RSS {rss / 1024:7.1f} MiB"
                    + (f"  FAILED: {note}" if note else ""))
                if note:
                    failures.append(f"{mode} run {i + 1}: {note}")
        if fake.violations:
            failures.append(f"{len(fake.violations)} requests broke the spec, e.g. {fake.violations[0]}")

        log("")
        log(f"Directory sync, {len(expected)} accounts ({args.users} users, {args.groups} groups), "
            f"{args.provider}, {args.runs} runs per mode:")
        log(f"{'mode':>6} | {'median s':>8} | {'min s':>6} | {'max s':>6} | {'peak RSS MiB':>12} | "
            f"{'median RSS MiB':>14} | targets < {args.max_seconds:g} s, < {args.max_rss_mb:g} MiB")
        verdicts = []
        figures = {}
        for mode in modes:
            mine = [r for r in runs if r.mode == mode and not r.note]
            if not mine:
                log(f"{mode:>6} | {'-':>8} | {'-':>6} | {'-':>6} | {'-':>12} | {'-':>14} | no good run")
                verdicts.append(False)
                continue
            secs = [r.seconds for r in mine]
            rss = [r.rss_kb / 1024 for r in mine]
            med, peak = statistics.median(secs), max(rss)
            ok = med < args.max_seconds and peak < args.max_rss_mb
            verdicts.append(ok)
            figures[mode] = {"median_s": med, "min_s": min(secs), "max_s": max(secs), "peak_rss_mib": peak,
                             "median_rss_mib": statistics.median(rss)}
            log(f"{mode:>6} | {med:8.2f} | {min(secs):6.2f} | {max(secs):6.2f} | {peak:12.1f} | "
                f"{statistics.median(rss):14.1f} | {'PASS' if ok else 'FAIL'}")
        log(f"the fake alone: {fake_alone:.2f} s of each sync's wall time is the Python fake's serving")
        for f in failures:
            log(f"FAILED: {f}")
        if args.out:
            args.out.write_text(json.dumps({"provider": args.provider, "accounts": len(expected), "aliases": n_aliases,
                                            "fake_alone_s": fake_alone, "modes": figures,
                                            "runs": [r.as_dict() for r in runs], "failures": failures}, indent=2))
        return 0 if all(verdicts) and not failures else 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if fake:
            fake.stop()
        if os.environ.get("KEEP_BENCH_DIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
