#!/usr/bin/python3
"""mailkeep standalone benchmark: local delivery into the archive, and the cost of SMTP AUTH.

(A) Standalone delivery. mailkeep with `[backup] standalone = true` (mail for listed accounts of
    example.org is delivered into <archive>/example.org/<local>/new/ and recorded in the replay
    journal, each file fsynced, no upstream), `[general] user = mail`, `[index] enabled = false`
    (so that indexing does not skew the rate), against the peer that does the same job the
    classic way: a private Postfix instance (queue, fsync) handing every message over LMTP to a
    private Dovecot (`protocols = lmtp`, `mail_location = maildir:~`, a passwd-file userdb with
    the same accounts and homes), which writes the same kind of Maildir. Load: Postfix
    smtp-source, 5 KB messages; the sessions are spread over the accounts (one smtp-source process
    per account in use, each with its own -t recipient, together -s C sessions and -m N messages).
    Time runs from the start of the load until all N messages are files in the Maildirs' new/
    (counted); every measurement starts from empty Maildirs; the sides alternate within each round.

    Each measurement also reports the CPU the side's servers used per message and how many
    cores other work on the machine took meanwhile (/proc accounting, see CpuMeter).

(B) AUTH cost. mailkeep with `[submission] listen`, one account whose password was set with
    `mailkeep user passwd --stdin` (Argon2id, mailkeep's parameters), `max_auth_failures` high;
    successful AUTH PLAIN logins for --auth-seconds, one connection each (connect, EHLO, AUTH,
    QUIT) from one client thread, then from 2 threads; against `doveadm pw -t` verifying the same
    hash (process start subtracted by timing `doveadm pw -t {PLAIN}...` too), and the same hash
    verified in this process by libargon2 (mailkeep's library) and libsodium (Dovecot's).

Usage: /usr/bin/python3 bench/standalone_bench.py [--quick] [--messages N] [--rounds 3]
       [--concurrency 10,50] [--skip-delivery] [--skip-auth] [--strace-messages N] [--out FILE]
       (KEEP_BENCH_DIR=1 keeps the work directory)
Exit status 1 if the 3x target of (A) failed, 2 if a tool is missing, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import MAILKEEP_BIN, Mailkeep, PostfixInstance, free_port, wait_port  # noqa: E402
from backup_support import MAIL_GID, MAIL_UID, backup_config, public_tempdir, write_accounts  # noqa: E402

DOMAIN = "example.org"
SENDER = "sender@client.test"
AUTH_USER = f"alice@{DOMAIN}"
AUTH_PASSWORD = "bench-password-42"

CHILDREN: list[subprocess.Popen] = []   # running smtp-source processes, killed on the way out
OTHER_CPU: list[float] = []              # cores used by other work during each measurement
SERVER_CPU_MS: dict[tuple[str, int], list[float]] = {}   # CPU ms per message of the side's servers


def kill_children() -> None:
    for p in list(CHILDREN):
        if p.poll() is None:
            p.kill()
        p.wait()
        CHILDREN.remove(p)


def log(msg: str = "") -> None:
    print(msg, flush=True)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(v: float | None, width: int = 10, digits: int = 1) -> str:
    return f"{v:{width}.{digits}f}" if v else f"{'-':>{width}}"


# --------------------------------------------------------------------------- Maildirs

def accounts(n: int) -> list[str]:
    return [f"user{i:02d}" for i in range(1, n + 1)]


def fresh_maildirs(root: Path, locals_: list[str], trash: Path) -> None:
    """<root>/example.org/<local>/{tmp,new,cur}, empty, owned by mail (uid 8), as both sides
    create them; whatever a previous measurement left is moved to the trash, which is removed
    only at the end of the run: ext4 without a journal skips inodes freed in the last 30 s when it
    allocates new ones (fs/ext4/ialloc.c, recently_deleted()), so deleting thousands of files
    between measurements made the next one pay for the bench's own clean-up (perf: a third of
    the server's CPU in recently_deleted; rates of one side varied 2.5x between rounds)."""
    domain_dir = root / DOMAIN
    if domain_dir.exists():
        target = trash / f"{root.name}-{time.monotonic_ns()}"
        os.rename(domain_dir, target)
    for d in (root, domain_dir):
        d.mkdir(exist_ok=True)
        os.chown(d, MAIL_UID, MAIL_GID)
        d.chmod(0o755)
    for local in locals_:
        home = domain_dir / local
        home.mkdir(mode=0o700)
        os.chown(home, MAIL_UID, MAIL_GID)
        for sub in ("tmp", "new", "cur"):
            (home / sub).mkdir(mode=0o700)
            os.chown(home / sub, MAIL_UID, MAIL_GID)


def fresh_dir(path: Path, trash: Path) -> None:
    """An empty directory owned by mail in place of `path` (the replay journal's new/)."""
    if path.exists():
        target = trash / f"{path.parent.name}-{path.name}-{time.monotonic_ns()}"
        os.rename(path, target)   # removed at the end of the run (see fresh_maildirs)
    path.mkdir(mode=0o700)
    os.chown(path, MAIL_UID, MAIL_GID)


def count_delivered(root: Path, locals_: list[str]) -> int:
    """Message files in new/ and cur/ of every account (Dovecot's LMTP and mailkeep both
    deliver into new/; cur/ is counted only so that a side that moved files is not missed)."""
    n = 0
    for local in locals_:
        for sub in ("new", "cur"):
            try:
                n += len(os.listdir(root / DOMAIN / local / sub))
            except FileNotFoundError:
                pass
    return n


# --------------------------------------------------------------------------- other work

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime in ticks) of every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            rest = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(name)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    return table


def _descendants(table: dict[int, tuple[int, int]], root: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = set(), [root] if root in table else []
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += kids.get(pid, [])
    return out


def _tree_ticks(table: dict[int, tuple[int, int]], roots: list[int]) -> int:
    """CPU ticks of every process below the roots (each one's own time plus its reaped children's)."""
    return sum(table[p][1] for p in set().union(set(), *(_descendants(table, r) for r in roots)))


def _busy_ticks() -> int:
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f[:7])
    return user + nice + system + irq + softirq


class CpuMeter:
    """CPU used on the whole machine during an interval, and how much of it was not the bench's:
    busy ticks of /proc/stat minus the CPU of this script, its reaped children (smtp-source) and
    the process trees of the servers under test (a process's own time plus that of the children
    it reaped, so short-lived Postfix/Dovecot workers are counted). "Other" also holds kernel
    threads (kworker writeback): a few hundredths of a core on an idle machine."""

    roots: list[int] = []   # root pids of the servers (mailkeep, Postfix master, Dovecot master)

    @staticmethod
    def _ours() -> int:
        me = os.times()
        own = (me.user + me.system + me.children_user + me.children_system) * CLK_TCK
        return int(own) + _tree_ticks(_proc_table(), CpuMeter.roots)

    def __init__(self, server_roots: list[int] | None = None):
        self.server_roots = server_roots or []   # also measured on their own: the side under test

    def __enter__(self) -> "CpuMeter":
        self.t0, self.busy0, self.ours0 = time.monotonic(), _busy_ticks(), self._ours()
        self.server0 = _tree_ticks(_proc_table(), self.server_roots)
        return self

    def __exit__(self, *exc) -> None:
        dt = max(1e-6, time.monotonic() - self.t0)
        busy = (_busy_ticks() - self.busy0) / CLK_TCK
        ours = (self._ours() - self.ours0) / CLK_TCK
        self.server_seconds = (_tree_ticks(_proc_table(), self.server_roots) - self.server0) / CLK_TCK
        self.busy_cores = busy / dt
        self.bench_cores = ours / dt
        self.other_cores = max(0.0, busy - ours) / dt

    def text(self) -> str:
        return f"cpu: bench {self.bench_cores:.2f}, other {self.other_cores:.2f} cores"


def wait_quiet(max_seconds: float, threshold: float = 0.25) -> str:
    """Wait (up to max_seconds) for a 1-second window in which other work used < threshold cores.
    Returns a note for the measurement line ("" if nothing was waited for)."""
    if max_seconds <= 0:
        return ""
    t0 = time.monotonic()
    while True:
        with CpuMeter() as cpu:
            time.sleep(1.0)
        if cpu.other_cores < threshold:
            waited = time.monotonic() - t0
            return f"; waited {waited:.0f}s for quiet" if waited > 1.5 else ""
        if time.monotonic() - t0 >= max_seconds:
            return f"; not quiet after {max_seconds:.0f}s"


# --------------------------------------------------------------------------- peers

class LmtpDovecot:
    """A private Dovecot that only speaks LMTP, on a Unix socket, delivering to maildir:~ of a
    passwd-file userdb (uid/gid 8). Default fsync behaviour (mail_fsync = optimized)."""

    def __init__(self, base: Path, homes: dict[str, Path], log_path: Path | None = None):
        self.base = base
        self.homes = homes
        self.conf = base / "dovecot.conf"
        self.run_dir = base / "run"
        self.socket = self.run_dir / "lmtp"
        self.logfile = log_path or base / "dovecot.log"
        self.started = False

    def start(self, timeout: float = 20) -> "LmtpDovecot":
        (self.run_dir / "state").mkdir(parents=True, exist_ok=True)
        for d in (self.base, self.run_dir):
            d.chmod(0o755)
        passwd = self.base / "passwd"
        passwd.write_text("".join(f"{login}:{{PLAIN}}unused-password:{MAIL_UID}:{MAIL_GID}::{home}::\n"
                                  for login, home in self.homes.items()))
        passwd.chmod(0o644)
        self.conf.write_text(f"""\
base_dir = {self.run_dir}
state_dir = {self.run_dir}/state
log_path = {self.logfile}
protocols = lmtp
ssl = no
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = {MAIL_UID}
mail_location = maildir:~
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
""")
        with open(self.base / "dovecot.stdout", "ab") as out:  # never a pipe: the daemon keeps it open
            res = subprocess.run(["dovecot", "-c", str(self.conf)], stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"dovecot failed to start ({res.returncode}): {self.log()}")
        self.started = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(5)
                    s.connect(str(self.socket))
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot's LMTP socket {self.socket} did not answer: {self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if not self.started:
            return
        pidfile = self.run_dir / "master.pid"
        pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        subprocess.run(["doveadm", "-c", str(self.conf), "stop"], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=30)
        deadline = time.monotonic() + 15
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.started = False

    def log(self) -> str:
        texts = []
        for p in (self.logfile, self.base / "dovecot.stdout"):
            if p.exists():
                texts.append(p.read_text(errors="replace")[-3000:])
        return "\n".join(texts)


# --------------------------------------------------------------------------- load

class Side:
    """One system under test: an SMTP port and the Maildir root it delivers into."""

    def __init__(self, name: str, port: int, root: Path, trash: Path, journal_new: Path | None = None,
                 roots: list[int] | None = None):
        self.name, self.port, self.root, self.trash, self.journal_new = name, port, root, trash, journal_new
        self.roots = roots or []   # the side's server processes (for CPU accounting and strace)

    def reset(self, locals_: list[str]) -> None:
        fresh_maildirs(self.root, locals_, self.trash)
        if self.journal_new:
            fresh_dir(self.journal_new, self.trash)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(port: int, sessions: int, messages: int, size: int, rcpts: list[str], workdir: Path,
             timeout: float) -> tuple[bool, str]:
    """len(rcpts) smtp-source processes in parallel, process i sending to rcpts[i]; together
    `sessions` sessions and `messages` messages. (smtp-source -r/-N only make numbered recipients,
    so spreading the load over accounts takes one process per recipient.)"""
    procs = []
    deadline = time.monotonic() + timeout
    for i, (s, m, rcpt) in enumerate(zip(split(sessions, len(rcpts)), split(messages, len(rcpts)), rcpts)):
        out = open(workdir / f"smtp-source-{i}.out", "w+b")
        cmd = ["smtp-source", "-s", str(s), "-m", str(m), "-l", str(size), "-f", SENDER, "-t", rcpt,
               f"127.0.0.1:{port}"]
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        CHILDREN.append(p)
        procs.append((p, out))
    ok, notes = True, []
    for p, out in procs:
        try:
            rc = p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            notes.append("smtp-source timed out")
        CHILDREN.remove(p)
        if rc != 0:
            ok = False
            out.seek(0)
            notes.append(f"smtp-source rc={rc}: {out.read().decode(errors='replace')[-200:]}")
        out.close()
    return ok, "; ".join(notes[:3])


def measure(side: Side, c: int, n: int, size: int, locals_: list[str], workdir: Path,
            timeout: float, sources: int = 0, record: bool = True, quiet: float = 0) -> float | None:
    """messages/s from the start of the load until all n are files in the Maildirs.
    sources: smtp-source processes (= accounts receiving); 0 = one per session, up to all accounts."""
    rcpts = [f"{l}@{DOMAIN}" for l in locals_[:min(sources or c, c, len(locals_))]]
    used = [r.split("@")[0] for r in rcpts]
    side.reset(locals_)
    os.sync()          # the previous measurement's writeback is not billed to this one
    time.sleep(0.5)
    quiet_note = wait_quiet(quiet)
    with CpuMeter(side.roots) as cpu:
        t0 = time.monotonic()
        ok, note = run_load(side.port, c, n, size, rcpts, workdir, timeout)
        t_load = time.monotonic() - t0
        got = count_delivered(side.root, used)
        deadline = t0 + timeout
        while ok and got < n and time.monotonic() < deadline:
            time.sleep(0.02)
            got = count_delivered(side.root, used)
        elapsed = time.monotonic() - t0
    if record:
        OTHER_CPU.append(cpu.other_cores)
    if not ok or got != n:
        log(f"  {side.name:9s} c={c:<3d} FAILED: {got}/{n} delivered in {elapsed:.1f}s {note}")
        return None
    rate = n / elapsed
    if record:
        SERVER_CPU_MS.setdefault((side.name, c), []).append(cpu.server_seconds * 1000 / n)
    log(f"  {side.name:9s} c={c:<3d} {n} msgs to {len(used)} accounts in {elapsed:6.2f}s = {rate:7.1f} msg/s"
        f"  (load done at {t_load:5.2f}s; server cpu {cpu.server_seconds * 1000 / n:.2f} ms/msg; {cpu.text()}{quiet_note})")
    return rate


def start_mailkeep_standalone(base: Path, locals_: list[str], log_level: str) -> tuple[Mailkeep, Path, Path]:
    acc = base / "accounts.txt"
    write_accounts(acc, locals_)
    archive = base / "mk-archive"
    journal = base / "mk-replay"
    config = backup_config(
        free_port(), f"127.0.0.1:{free_port()}", archive, acc, user="mail",
        general={"log_level": log_level},
        smtp={"max_connections": 1000, "timeout": 300, "shutdown_timeout": 5},
        backup={"standalone": "true", "replay": str(journal)},
        index={"enabled": "false"},
    )
    mk = Mailkeep(base / "mailkeep", config)
    mk.workdir.chmod(0o755)
    mk.start()
    return mk, archive, journal


def start_dovecot_lmtp(base: Path, locals_: list[str]) -> tuple[LmtpDovecot, Path]:
    archive = base / "pf-archive"
    archive.mkdir()
    dc_base = base / "dovecot"
    dc_base.mkdir()
    dc = LmtpDovecot(dc_base, {f"{l}@{DOMAIN}": archive / DOMAIN / l for l in locals_})
    return dc, archive


def start_postfix_lmtp(base: Path, locals_: list[str], dc: LmtpDovecot) -> PostfixInstance:
    vmaps = base / "virtual_mailboxes"
    vmaps.write_text("".join(f"{l}@{DOMAIN} OK\n" for l in locals_))
    vmaps.chmod(0o644)
    pf_base = base / "postfix"
    pf_base.mkdir()
    pf = PostfixInstance(base=pf_base, extra={
        "virtual_mailbox_domains": DOMAIN,
        "virtual_mailbox_maps": f"texthash:{vmaps}",
        "virtual_transport": f"lmtp:unix:{dc.socket}",
        "lmtp_destination_concurrency_limit": "50",
    })
    return pf


def pid_of(pidfile: Path) -> int:
    return int(pidfile.read_text().split()[0])


STRACE_CALLS = ("fsync", "fdatasync", "rename", "openat", "write", "unlink")


def strace_run(side: Side, roots: list[int], c: int, n: int, args, locals_: list[str], workdir: Path) -> None:
    """One extra, untimed measurement under `strace -c -f` attached to every process of the side:
    system calls per message (strace slows everything down; only the counts mean something)."""
    table = _proc_table()
    pids = sorted(set().union(*(_descendants(table, r) for r in roots)))
    out = workdir / f"strace-{side.name}.txt"
    cmd = ["strace", "-c", "-f", "-o", str(out)] + [a for p in pids for a in ("-p", str(p))]
    st = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # attached
        measure(side, c, n, args.size, locals_, workdir, args.timeout, args.sources, record=False)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(30)
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[-1] in STRACE_CALLS + ("total",) and f[3].isdigit():
            counts[f[-1]] = int(f[3])
        elif len(f) >= 4 and f[-1] in STRACE_CALLS + ("total",) and f[2].isdigit():
            counts[f[-1]] = int(f[2])
    per = ", ".join(f"{k} {counts.get(k, 0) / n:.2f}" for k in STRACE_CALLS)
    log(f"  strace -c -f {side.name:9s} ({len(pids)} processes): per message {per}; "
        f"all system calls {counts.get('total', 0) / n:.0f}")


def part_a(args, base: Path) -> dict:
    locals_ = accounts(args.accounts)
    trash = base / "trash"
    trash.mkdir()
    loadlogs = base / "load"
    loadlogs.mkdir()
    mk, mk_archive, journal = start_mailkeep_standalone(base, locals_, args.log_level)
    pf = dc = None
    results: dict[tuple[str, int], list[float | None]] = {}
    try:
        sides = [Side("mailkeep", mk.port, mk_archive, trash, journal / "new", [mk.pid])]
        CpuMeter.roots = [mk.pid]
        if not args.no_peer:
            dc, pf_archive = start_dovecot_lmtp(base, locals_)
            dc.start()
            pf = start_postfix_lmtp(base, locals_, dc)
            pf.start()
            pf_roots = [pid_of(pf.queue / "pid" / "master.pid"), pid_of(dc.run_dir / "master.pid")]
            sides.append(Side("postfix", pf.port, pf_archive, trash, roots=pf_roots))
            CpuMeter.roots += pf_roots
        log(f"(A) standalone delivery: {args.size}-byte messages, {args.accounts} accounts, "
            f"{args.rounds} round(s), workdir {base}")
        log("    messages per measurement: " + ", ".join(f"c={c}: {n}" for c, n in zip(args.conc, args.msgs)))
        for s in sides:  # warm-up, not measured
            measure(s, 10, 200, args.size, locals_, loadlogs, 60, record=False)
        for r in range(args.rounds):
            log(f" round {r + 1}/{args.rounds}")
            for i, (c, n) in enumerate(zip(args.conc, args.msgs)):
                order = sides if (r + i) % 2 == 0 else list(reversed(sides))
                for s in order:
                    results.setdefault((s.name, c), []).append(
                        measure(s, c, n, args.size, locals_, loadlogs, args.timeout, args.sources,
                                quiet=args.wait_quiet))
        if args.strace_messages and shutil.which("strace"):
            log(f" strace: {args.strace_messages} messages at c={args.conc[-1]} per side (untimed)")
            for s in sides:
                strace_run(s, s.roots, args.conc[-1], args.strace_messages, args, locals_, loadlogs)
        for s in sides:
            s.reset(locals_)
    finally:
        kill_children()   # an interrupted load first, so that the servers stop at once
        errors = [l for l in mk.log().splitlines() if ": error:" in l or ": critical:" in l]
        mk.stop()
        if pf:
            pf.stop()
        if dc:
            dc.stop()
    if errors:
        log(f"  NOTE: mailkeep logged {len(errors)} error(s), e.g. {errors[0][:200]}")
    out: dict = {}
    if not args.rounds:
        return out
    log()
    log(f"(A) Standalone delivery, {args.size}-byte messages, msg/s from the first message until all are in new/ "
        f"(median of {args.rounds})")
    header = (f"{'sessions':>8} | {'messages':>8} | {'mailkeep':>9} | {'postfix+lmtp':>12} | {'mk/peer':>7} | "
              f"runs: mailkeep / postfix+lmtp")
    log(header)
    log("-" * len(header))
    for c, n in zip(args.conc, args.msgs):
        mk_runs = results.get(("mailkeep", c), [])
        pf_runs = results.get(("postfix", c), [])
        m = None if None in mk_runs else median(mk_runs)
        p = None if (None in pf_runs or not pf_runs) else median(pf_runs)
        ratio = m / p if m and p else None
        runs = (", ".join(f"{x:.0f}" if x else "-" for x in mk_runs) + " / " +
                ", ".join(f"{x:.0f}" if x else "-" for x in pf_runs))
        log(f"{c:>8} | {n:>8} | {fmt(m, 9)} | {fmt(p, 12)} | {fmt(ratio, 6, 2)}x | {runs}")
        out[str(c)] = {"messages": n, "mailkeep": m, "postfix_lmtp": p, "ratio": ratio,
                       "mailkeep_runs": mk_runs, "postfix_lmtp_runs": pf_runs}
    cpu_cells = []
    for c in args.conc:
        for name in ("mailkeep", "postfix"):
            if SERVER_CPU_MS.get((name, c)):
                cpu_cells.append(f"{name} c={c} {median(SERVER_CPU_MS[(name, c)]):.2f}")
                out[str(c)][f"{name}_cpu_ms_per_msg"] = median(SERVER_CPU_MS[(name, c)])
    if cpu_cells:
        log("server CPU per message, ms (mailkeep; Postfix + Dovecot): " + ", ".join(cpu_cells))
    if OTHER_CPU:
        log(f"other work on the machine during the measurements: mean {statistics.mean(OTHER_CPU):.2f}, "
            f"max {max(OTHER_CPU):.2f} of {os.cpu_count()} cores")
        out["other_cores_mean"] = statistics.mean(OTHER_CPU)
        out["other_cores_max"] = max(OTHER_CPU)
    ratios = [v["ratio"] for k, v in out.items() if isinstance(v, dict)]
    if ratios and not args.no_peer:
        verdict = "PASS" if all(x and x >= 3 for x in ratios) else "FAIL"
        log(f"target mailkeep / (postfix+lmtp) >= 3x at every concurrency: {verdict}")
        out["target"] = verdict
    log()
    return out


# --------------------------------------------------------------------------- (B) AUTH

def auth_once(port: int) -> bool:
    """One login as a mail client makes it: connect, EHLO, AUTH PLAIN (initial response), QUIT."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{AUTH_USER}\0{AUTH_PASSWORD}".encode()).decode())
        s.docmd("QUIT")
        s.close()
        return code == 235


def connect_once(port: int) -> bool:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        code, _ = s.ehlo("client.test")
        s.docmd("QUIT")
        s.close()
        return code == 250


def timed_rate(fn, port: int, seconds: float, threads: int, at_least: int) -> tuple[float, int, int, CpuMeter]:
    """Calls of fn from `threads` client threads, each going on until `seconds` passed and
    together at least `at_least` calls were made: (successes/s, successes, failures, cpu)."""
    lock = threading.Lock()
    done = [0, 0]  # ok, failed

    stop = threading.Event()

    def worker(deadline: float) -> None:
        while not stop.is_set():
            with lock:
                if time.monotonic() >= deadline and sum(done) >= at_least:
                    return
            try:
                ok = fn(port)
            except (OSError, smtplib.SMTPException):
                ok = False
            with lock:
                done[0 if ok else 1] += 1

    with CpuMeter() as cpu:
        t0 = time.monotonic()
        ts = [threading.Thread(target=worker, args=(t0 + seconds,), daemon=True) for _ in range(threads)]
        try:
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        finally:
            stop.set()   # on Ctrl-C: the client threads end after their login in flight
        elapsed = time.monotonic() - t0
    return done[0] / elapsed, done[0], done[1], cpu


def doveadm_verify(hashed: str, password: str, runs: int) -> tuple[float, bool]:
    """Mean seconds of one `doveadm pw -t HASH -p PW` process; and whether every run said (verified)."""
    ok = True
    t0 = time.perf_counter()
    for _ in range(runs):
        res = subprocess.run(["doveadm", "pw", "-t", hashed, "-p", password], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60)
        ok = ok and res.returncode == 0 and "(verified)" in res.stdout + res.stderr
    return (time.perf_counter() - t0) / runs, ok


def library_verify(hashed: str, password: str, runs: int) -> dict[str, float]:
    """ms per verification of the same PHC string in this process, through ctypes: libargon2 (the
    library mailkeep links) and libsodium (what Dovecot's ARGON2ID scheme uses). No process start."""
    import ctypes
    phc, pw = hashed.split("}", 1)[1].encode(), password.encode()
    out = {}
    try:
        a2 = ctypes.CDLL("libargon2.so.1")
        out["libargon2"] = lambda: a2.argon2id_verify(phc, pw, ctypes.c_size_t(len(pw))) == 0
    except OSError:
        pass
    try:
        so = ctypes.CDLL("libsodium.so.23")
        so.sodium_init()
        out["libsodium"] = lambda: so.crypto_pwhash_str_verify(phc, pw, ctypes.c_ulonglong(len(pw))) == 0
    except OSError:
        pass
    times = {}
    for name, fn in out.items():
        if not fn():
            times[name] = float("nan")
            continue
        t0 = time.perf_counter()
        for _ in range(runs):
            fn()
        times[name] = (time.perf_counter() - t0) / runs * 1000
    return times


def part_b(args, base: Path) -> dict:
    work = base / "auth"
    work.mkdir()
    work.chmod(0o755)
    acc = work / "accounts.txt"
    write_accounts(acc, ["alice"])
    passwd = work / "users.passwd"
    sub_port = free_port()
    config = backup_config(
        free_port(), f"127.0.0.1:{free_port()}", work / "archive", acc, user="mail",
        general={"log_level": args.log_level},
        smtp={"max_connections": 1000, "timeout": 60, "shutdown_timeout": 5},
        index={"enabled": "false"},
        users={"passwd": str(passwd)},
        submission={"listen": f"127.0.0.1:{sub_port}", "max_auth_failures": 1000000},
    )
    mk = Mailkeep(work / "mailkeep", config)   # writes the config file
    mk.workdir.chmod(0o755)
    t0 = time.perf_counter()
    res = subprocess.run([str(MAILKEEP_BIN), "user", "passwd", AUTH_USER, "--stdin", "-c", str(mk.config_path)],
                         input=AUTH_PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    t_set = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"mailkeep user passwd failed ({res.returncode}): {res.stdout}{res.stderr}")
    line = next(l for l in passwd.read_text().splitlines() if l.startswith(AUTH_USER + ":"))
    hashed = line.split(":")[1]
    m = re.search(r"\$(argon2id?)\$v=\d+\$([^$]+)\$", hashed)
    params = f"{m.group(1)} {m.group(2)}" if m else hashed[:30]
    log(f"(B) AUTH cost: {AUTH_USER}, hash {params} (`mailkeep user passwd --stdin`: {t_set * 1000:.0f} ms "
        f"incl. process start); {args.auth_seconds:.0f} s per figure")
    out: dict = {"hash": params}
    CpuMeter.roots = []
    mk.start()
    try:
        wait_port("127.0.0.1", sub_port, 15)
        CpuMeter.roots = [mk.pid]
        if not auth_once(sub_port):
            raise RuntimeError(f"AUTH PLAIN failed: {mk.log()[-2000:]}")
        for _ in range(2):
            auth_once(sub_port)
        conn, conn_n, conn_fail, cpu0 = timed_rate(connect_once, sub_port, 2, 1, 50)
        q1 = wait_quiet(args.wait_quiet)
        one, n1, f1, cpu1 = timed_rate(auth_once, sub_port, args.auth_seconds, 1, 20)
        q2 = wait_quiet(args.wait_quiet)
        two, n2, f2, cpu2 = timed_rate(auth_once, sub_port, args.auth_seconds, 2, 20)
        ok_lines = mk.log().count("auth ok:")
    finally:
        mk.stop()
        CpuMeter.roots = []
    log(f"  connect+EHLO+QUIT without AUTH, 1 thread: {conn:8.1f} /s  ({conn_n} ok, {conn_fail} failed; {cpu0.text()})")
    log(f"  AUTH PLAIN logins, 1 client thread     : {one:8.1f} /s = {1000 / one:6.1f} ms per login "
        f"({n1} ok, {f1} failed; {cpu1.text()}{q1})")
    log(f"  AUTH PLAIN logins, 2 client threads    : {two:8.1f} /s = {two / one:.2f}x one thread "
        f"({n2} ok, {f2} failed; {cpu2.text()}{q2})")
    if ok_lines != n1 + n2 + 3:
        log(f"  NOTE: mailkeep logged {ok_lines} 'auth ok' lines, expected {n1 + n2 + 3}")
    out.update({"connect_per_s": conn, "logins_per_s_1_thread": one, "logins_per_s_2_threads": two,
                "logins": [n1, n2], "failures": f1 + f2 + conn_fail,
                "other_cores": [cpu1.other_cores, cpu2.other_cores]})
    if args.doveadm_runs and shutil.which("doveadm"):
        doveadm_verify("{PLAIN}" + AUTH_PASSWORD, AUTH_PASSWORD, 3)  # page cache warm
        with CpuMeter() as cpu:
            t_plain, ok_plain = doveadm_verify("{PLAIN}" + AUTH_PASSWORD, AUTH_PASSWORD, args.doveadm_runs)
            t_argon, ok_argon = doveadm_verify(hashed, AUTH_PASSWORD, args.doveadm_runs)
        per = t_argon - t_plain
        log(f"  doveadm pw -t, {args.doveadm_runs} runs each: {{PLAIN}} {t_plain * 1000:.1f} ms, the Argon2id hash "
            f"{t_argon * 1000:.1f} ms per process ({'verified' if ok_argon and ok_plain else 'NOT VERIFIED'}; "
            f"{cpu.text()})")
        log(f"  => Dovecot verifies the same hash in {per * 1000:.1f} ms = {1 / per:.1f} /s on one core; "
            f"a mailkeep login takes {1000 / one:.1f} ms ({1000 / one / (per * 1000):.2f}x)")
        out.update({"doveadm_plain_ms": t_plain * 1000, "doveadm_hash_ms": t_argon * 1000,
                    "dovecot_verify_ms": per * 1000, "doveadm_verified": ok_argon and ok_plain})
    if args.library_runs:
        with CpuMeter() as cpu:
            lib = library_verify(hashed, AUTH_PASSWORD, args.library_runs)
        if lib:
            log(f"  in-process verification of the same hash ({args.library_runs} runs, ctypes): " +
                ", ".join(f"{k} {v:.1f} ms" for k, v in lib.items()) + f" ({cpu.text()})")
            out["library_verify_ms"] = lib
    log()
    return out


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke run (small sizes, 1 round)")
    ap.add_argument("--concurrency", default="10,50", help="comma-separated session counts")
    ap.add_argument("--messages", default="10000", help="messages per measurement: one figure, or one per concurrency")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per side and concurrency (median)")
    ap.add_argument("--accounts", type=int, default=50, help="accounts (recipients are spread over them)")
    ap.add_argument("--sources", type=int, default=0,
                    help="smtp-source processes, each to its own account (0 = one per session up to --accounts; "
                         "1 = a single smtp-source -s C to one account)")
    ap.add_argument("--size", type=int, default=5120, help="message body size (smtp-source -l)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per measurement")
    ap.add_argument("--log-level", default="info", help="mailkeep's [general] log_level")
    ap.add_argument("--no-peer", action="store_true", help="skip Postfix + Dovecot LMTP")
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="before each measurement, wait up to this many seconds for a second in which other "
                         "work used < 0.25 cores (for shared machines; 0 = off)")
    ap.add_argument("--strace-messages", type=int, default=0,
                    help="after the rounds, one untimed run of N messages per side under strace -c -f")
    ap.add_argument("--auth-seconds", type=float, default=20, help="seconds per AUTH figure (at least 20 logins)")
    ap.add_argument("--doveadm-runs", type=int, default=40, help="doveadm pw -t runs per hash (0 = skip)")
    ap.add_argument("--library-runs", type=int, default=10, help="in-process libargon2/libsodium runs (0 = skip)")
    ap.add_argument("--skip-delivery", action="store_true", help="skip (A)")
    ap.add_argument("--skip-auth", action="store_true", help="skip (B)")
    ap.add_argument("--out", help="write every figure as JSON to this file")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.rounds, args.auth_seconds, args.doveadm_runs, args.library_runs = "1000,2000", 1, 5, 10, 3
    args.conc = [int(x) for x in args.concurrency.split(",") if x]
    msgs = [int(x) for x in args.messages.split(",") if x]
    args.msgs = msgs * len(args.conc) if len(msgs) == 1 else msgs
    if len(args.msgs) != len(args.conc):
        ap.error("--messages: one figure or one per concurrency")

    tools = ["smtp-source"]
    if not args.skip_delivery and not args.no_peer:
        tools += ["postfix", "dovecot", "doveadm"]
    for tool in tools:
        if not shutil.which(tool):
            print(f"{tool} not found (apt-get install postfix dovecot-lmtpd)", file=sys.stderr)
            return 2
    if not args.skip_delivery and not args.no_peer and not Path("/usr/lib/dovecot/lmtp").exists():
        print("Dovecot's LMTP server is missing (apt-get install dovecot-lmtpd)", file=sys.stderr)
        return 2
    if not MAILKEEP_BIN.exists():
        print(f"{MAILKEEP_BIN} missing: build it first", file=sys.stderr)
        return 2

    base = public_tempdir("mailkeep-standalone-bench-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    t_start = time.monotonic()
    figures: dict = {}
    rc = 0
    try:
        if not args.skip_delivery:
            figures["delivery"] = part_a(args, base)
            if figures["delivery"].get("target") == "FAIL":
                rc = 1
        if not args.skip_auth:
            figures["auth"] = part_b(args, base)
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        kill_children()
        if os.environ.get("KEEP_BENCH_DIR") != "1":
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"kept {base}")
    log(f"total run time {time.monotonic() - t_start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
