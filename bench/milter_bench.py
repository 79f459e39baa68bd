#!/usr/bin/python3
"""Milter benchmark (loopback only): relay throughput with one real milter, OpenDKIM verifying.

Postfix's smtp-source sends 5 KB messages, each signed with DKIM (so OpenDKIM verifies a real
signature against a key in a dnslib zone), at concurrency 10 and 50, to:

  mailkeep+milter  mailkeep -> smtp-sink, [milter] smtp = OpenDKIM
  mailkeep         the same mailkeep without the milter
  postfix+milter   a private Postfix with the same OpenDKIM as smtpd_milters -> smtp-sink

Time runs from smtp-source start until the sink has counted every message (a queueing Postfix
may still be delivering after smtp-source exits). The figures to quote: mailkeep+milter against
postfix+milter (target: >= 3x), and mailkeep+milter against mailkeep (the milter's cost).

OpenDKIM listens on a unix socket by default, as Debian's package sets it up and as the
issue's example configures it (`--socket inet` for 127.0.0.1:PORT instead); both MTAs use
the same socket.

Usage: bench/milter_bench.py [--messages N] [--concurrency 10,50] [--repeat 3] [--socket unix|inet]
"""

from __future__ import annotations

import argparse
import base64
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))

from harness import Mailkeep, PostfixInstance, default_config, free_port, wait_port  # noqa: E402
from dns_support import DnsServer  # noqa: E402
from relay_bench import measure  # noqa: E402  (one timing for every relay bench)
from sink import Sink  # noqa: E402

SENDER = "bench@bench.example.com"   # not .test: libunbound answers .test itself
RCPT = "user@example.org"


def signed_message(size: int) -> tuple[bytes, str]:
    """A DKIM-signed message of about `size` bytes and the TXT record of its key."""
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    line = b"The quick brown fox jumps over the lazy dog, benchmark text line.\r\n"
    body = line * max(1, size // len(line))
    msg = (b"From: <" + SENDER.encode() + b">\r\nTo: <" + RCPT.encode() + b">\r\nSubject: milter bench\r\n"
           b"Message-ID: <bench@bench.example.com>\r\n\r\n" + body)
    sig = dkim.sign(msg, b"sel", b"bench.example.com", pem, include_headers=[b"from", b"to", b"subject"])
    return sig + msg, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def start_opendkim(workdir: Path, dns: DnsServer, kind: str = "inet") -> tuple[subprocess.Popen, str]:
    """OpenDKIM verifying, resolving through `dns` (on port 53: `Nameservers` takes addresses
    only; its ResolverConfiguration file is parsed by every new connection's thread at once under
    load, and libunbound's parser is not thread-safe, so the bench does not use it)."""
    port = free_port()
    path = workdir / "opendkim.sock"
    socket_spec = f"local:{path}" if kind == "unix" else f"inet:{port}@127.0.0.1"
    conf = workdir / "opendkim.conf"
    conf.write_text(f"Socket {socket_spec}\nUMask 000\nSyslog no\nBackground no\nMode v\nInternalHosts 192.0.2.1\n"
                    f"Nameservers {dns.host}\nPidFile {workdir / 'opendkim.pid'}\n")
    log = open(workdir / "opendkim.log", "w")
    proc = subprocess.Popen([shutil.which("opendkim") or "/usr/sbin/opendkim", "-f", "-x", str(conf)],
                            stdout=log, stderr=log)
    if kind == "unix":
        import time
        for _ in range(100):
            if path.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
    else:
        wait_port("127.0.0.1", port, proc=proc)
    from test_milter_opendkim import warm_up  # OpenDKIM's resolver set-up, alone (see there)
    warm_up(str(path) if kind == "unix" else port)
    return proc, f"unix:{path}" if kind == "unix" else f"inet:127.0.0.1:{port}"


def dns_on_port_53(host: str) -> DnsServer:
    import dns_support
    saved = dns_support.free_port
    dns_support.free_port = lambda h="127.0.0.1": 53
    try:
        return DnsServer(host=host).start()
    finally:
        dns_support.free_port = saved


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--concurrency", default="10,50")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--socket", choices=("unix", "inet"), default="unix")
    args = ap.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="mailkeep-milter-bench-"))
    print(f"work directory {work}", flush=True)
    work.chmod(0o755)
    dns = dns_on_port_53("127.0.0.153")
    msg, record = signed_message(args.size)
    dns.zone("example.com").txt("sel._domainkey.bench.example.com", record)
    message_file = work / "message.eml"
    message_file.write_bytes(msg.replace(b"\r\n", b"\n"))  # smtp-source -F adds the CRs
    sink = Sink(work)
    opendkim, milter = start_opendkim(work, dns, args.socket)
    procs: list = []
    try:
        smtp = {"max_connections": 10000, "timeout": 300, "shutdown_timeout": 5}
        targets: dict[str, int] = {}
        for name, sections in (("mailkeep+milter", {"milter": {"smtp": milter}}), ("mailkeep", {})):
            config = default_config(free_port(), sink.address, smtp=smtp, general={"log_level": "warn"},
                                    **sections)
            mk = Mailkeep(work / name.replace("+", "-"), config).start()
            procs.append(mk)
            targets[name] = mk.port
        pf = PostfixInstance(relayhost=sink.address,
                             extra={"smtpd_milters": milter, "milter_default_action": "tempfail",
                                    "mynetworks": "127.0.0.0/8", "relay_domains": "example.org"}).start()
        procs.append(pf)
        targets["postfix+milter"] = pf.port
        for name, port in targets.items():      # warm-up, not measured
            measure(f"warmup:{name}", port, sink, 5, 50, None, 60, message_file, SENDER, RCPT)
        results: dict[tuple[str, int], float | None] = {}
        for c in concurrency:
            print(f"concurrency {c}:", flush=True)
            for name, port in targets.items():
                rates = [measure(name, port, sink, c, args.messages, None, args.timeout, message_file, SENDER, RCPT)
                         for _ in range(args.repeat)]
                ok = sorted(r for r in rates if r is not None)
                results[(name, c)] = ok[len(ok) // 2] if len(ok) == len(rates) else None
        print()
        print(f"Throughput with OpenDKIM verifying on {milter.split(':')[0]}, {len(msg)}-byte DKIM-signed messages, {args.messages} per run, "
              f"median of {args.repeat} (msg/s):")
        header = (f"{'sessions':>8} | {'mk+milter':>9} | {'mailkeep':>9} | {'pf+milter':>9} | "
                  f"{'mk+m/pf+m':>9} | {'mk+m/mk':>8}")
        print(header)
        print("-" * len(header))
        for c in concurrency:
            a, b, p = (results.get((n, c)) for n in ("mailkeep+milter", "mailkeep", "postfix+milter"))
            f = lambda v: f"{v:9.1f}" if v else f"{'-':>9}"  # noqa: E731
            r = lambda x, y: f"{x / y:.2f}" if x and y else "-"  # noqa: E731
            print(f"{c:>8} | {f(a)} | {f(b)} | {f(p)} | {r(a, p):>9} | {r(a, b):>8}")
        return 0
    finally:
        for p in procs:
            (p.cleanup if isinstance(p, PostfixInstance) else p.stop)()
        opendkim.terminate()
        sink.stop()
        dns.stop()


if __name__ == "__main__":
    sys.exit(main())
