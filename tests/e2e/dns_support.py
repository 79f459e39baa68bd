"""A real DNS server on loopback for the DNSBL and SPF end-to-end tests (tests/e2e/test_dnsbl_*.py,
tests/e2e/test_spf_relay.py).

* DnsServer          -- python3-dnslib DNSServer on 127.0.0.1:<free port>, UDP and TCP, serving
                        DNSBL zones (A records) and TXT records (SPF) from dicts that tests change
                        while it runs; counts queries
* Zone               -- one zone's behaviour: answer / NXDOMAIN (+SOA) / blackhole / SERVFAIL / REFUSED
* query_name(ip, z)  -- the DNSBL query name (reversed IPv4 octets, IPv6 nibbles) + zone
* dns_server         -- pytest fixture: a started DnsServer, stopped at teardown
* dnsbl_overrides()  -- the [dnsbl] section pointing mailkeep at a DnsServer
* smtp_connect()     -- connect from a chosen source address, read the greeting, time it
* http_create()      -- POST /api/v1/aliases from a chosen source address
* read_stats()       -- `mailkeep stats -c FILE` parsed into a dict

Zone behaviour (per zone, changeable any time):
    mode "answer"    names in zone.records get their A records, names in zone.texts their TXT
                     records (zone.txt(...), each RRset with its own TTL, zone.set_ttl(...) changes
                     it); a name that has only the other type answers NODATA (NOERROR, no answer,
                     + SOA); any other name NXDOMAIN (with an SOA in the authority section unless
                     soa=False). ANY gets both types.
    mode "blackhole" every query is read, counted and never answered (UDP and TCP)
    mode "servfail" / "refused": that rcode
    delay            seconds to sleep before answering (each query has its own thread)
Names outside every zone are answered REFUSED (and counted, under their name).
Over UDP an answer longer than the client's limit (512 octets, or the payload size of its EDNS
OPT record) is sent truncated: TC set, the question kept, no records -- the client retries
over TCP, as with a real server (counted in DnsServer.truncated). The A answers of the DNSBL
tests are far below that limit.

Only the standard library, python3-dnslib and tests/e2e/harness.py are used.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import threading
import time
import http.client
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dnslib import A, DNSError, DNSRecord, EDNS0, QTYPE, RCODE, RR, SOA, TXT
from dnslib.server import DNSHandler, DNSLogger, DNSServer

from harness import MAILKEEP_BIN, RawSMTP, Reply, ConnectionClosed, free_port


def query_name(ip: str, zone: str) -> str:
    """`2.0.0.127.zen.test` for 127.0.0.2; 32 nibbles for IPv6 (RFC 5782 2.4)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        labels = reversed(str(addr).split("."))
    else:
        labels = reversed(addr.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone.strip(".").lower()


def _norm(name: str) -> str:
    return str(name).rstrip(".").lower()


def _txt_strings(record: str | bytes | tuple | list) -> tuple[bytes, ...]:
    """One TXT record's character-strings: a str/bytes is cut into 255-octet strings (as zone
    file tools do with long SPF records); a tuple/list is sent as exactly those strings."""
    if isinstance(record, (tuple, list)):
        parts = tuple(p.encode() if isinstance(p, str) else bytes(p) for p in record)
        too_long = [p for p in parts if len(p) > 255]
        if too_long:
            raise ValueError(f"TXT character-string longer than 255 octets: {too_long[0][:40]!r}...")
        return parts
    data = record.encode() if isinstance(record, str) else bytes(record)
    return tuple(data[i:i + 255] for i in range(0, len(data), 255)) or (b"",)


@dataclass
class Zone:
    name: str
    mode: str = "answer"                       # answer | blackhole | servfail | refused
    records: dict[str, tuple[list[str], int]] = field(default_factory=dict)   # name -> (A values, TTL)
    soa: bool = True                           # NXDOMAIN/NODATA carry an SOA in the authority section
    soa_ttl: int = 300
    soa_minimum: int = 300
    delay: float = 0.0
    # name -> (TXT records, each a tuple of character-strings; TTL of the RRset)
    texts: dict[str, tuple[tuple[tuple[bytes, ...], ...], int]] = field(default_factory=dict)

    def list(self, ip: str, *answers: str, ttl: int = 300) -> str:
        """Lists `ip` with the given A answers (default 127.0.0.2); returns the query name."""
        name = query_name(ip, self.name)
        self.records[name] = (list(answers or ("127.0.0.2",)), ttl)
        return name

    def unlist(self, ip: str) -> None:
        self.records.pop(query_name(ip, self.name), None)

    def _own(self, name: str) -> str:
        n = _norm(name)
        if n != self.name and not n.endswith("." + self.name):
            raise ValueError(f"{name!r} is not in zone {self.name!r} (names are absolute)")
        return n

    def txt(self, name: str, *records: str | bytes | tuple | list, ttl: int = 300) -> str:
        """Replaces the TXT RRset of `name` (an absolute name inside this zone) with `records`,
        all with `ttl`; each record is a string (cut into 255-octet strings when longer) or a
        tuple of strings sent as separate character-strings. No records: the name has no TXT
        (NXDOMAIN unless it has A records). Returns the normalised name."""
        n = self._own(name)
        if records:
            self.texts[n] = (tuple(_txt_strings(r) for r in records), int(ttl))
        else:
            self.texts.pop(n, None)
        return n

    def set_ttl(self, name: str, ttl: int) -> None:
        """Changes the TTL of `name`'s TXT RRset (and of its A records, if it has any)."""
        n = self._own(name)
        found = False
        if n in self.texts:
            self.texts[n] = (self.texts[n][0], int(ttl))
            found = True
        if n in self.records:
            self.records[n] = (self.records[n][0], int(ttl))
            found = True
        if not found:
            raise KeyError(f"{name!r} has no records in zone {self.name!r}")

    def get_txt(self, name: str) -> list[str]:
        """The TXT records of `name` as a resolver joins them (character-strings concatenated)."""
        recs, _ = self.texts.get(self._own(name), ((), 0))
        return [b"".join(r).decode() for r in recs]


class _Drop(DNSError):
    """Raised by the resolver to send no answer at all (DNSHandler swallows DNSError)."""


UDP_LIMIT_NO_EDNS = 512                        # RFC 1035 4.2.1


def _udp_limit(request: DNSRecord) -> int:
    """The largest UDP answer the client takes: its EDNS payload size (RFC 6891 6.2.3, at
    least 512), or 512 without an OPT record."""
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_LIMIT_NO_EDNS, int(rr.rclass))
    return UDP_LIMIT_NO_EDNS


class _Handler(DNSHandler):
    """DNSHandler that, for a blackholed query over TCP, keeps the connection open and silent
    (until the server stops, at most 60 s) instead of closing it at once; and truncates a UDP
    answer longer than the client takes (TC, question kept, no records)."""

    def get_reply(self, data):
        server = self.server.resolver.server
        try:
            request = DNSRecord.parse(data)
            reply = self.server.resolver.resolve(request, self)
        except _Drop:
            if self.protocol == "tcp":
                server._stopped.wait(60)
            raise
        rdata = reply.pack()
        if self.protocol == "udp" and len(rdata) > _udp_limit(request):
            short = request.reply()
            short.header.aa = reply.header.aa
            short.header.rcode = reply.header.rcode
            short.header.tc = 1
            with server.lock:
                server.truncated[_norm(request.q.qname)] += 1
            rdata = short.pack()
        return rdata


class _Resolver:
    def __init__(self, server: "DnsServer"):
        self.server = server

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        return self.server._resolve(request, handler)


class DnsServer:
    """dnslib DNSServer on host:<free port>, UDP and TCP on the same port."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.zones: dict[str, Zone] = {}
        self.lock = threading.Condition()
        self.counts: Counter[str] = Counter()       # query name -> queries received (UDP + TCP)
        self.truncated: Counter[str] = Counter()    # query name -> UDP answers sent truncated (TC)
        self.log: list[tuple[float, str, str, str]] = []   # (monotonic, name, qtype, protocol)
        self._quiet = DNSLogger(log="-recv,-send,-request,-reply,-truncated,-error,-data", prefix=False,
                                logf=lambda s: None)
        self._udp: DNSServer | None = None
        self._tcp: DNSServer | None = None
        self.port = 0
        self._stopped = threading.Event()

    # ---- zone data ---------------------------------------------------------------
    def zone(self, name: str, mode: str = "answer", **kw) -> Zone:
        """Creates (or replaces) a zone; returns it for .list(...)."""
        assert mode in ("answer", "blackhole", "servfail", "refused"), mode
        z = Zone(_norm(name), mode, **kw)
        with self.lock:
            self.zones[z.name] = z
        return z

    def _find_zone(self, qname: str) -> Zone | None:
        best = None
        for zname, z in self.zones.items():
            if qname == zname or qname.endswith("." + zname):
                if best is None or len(zname) > len(best.name):
                    best = z
        return best

    # ---- counting ----------------------------------------------------------------
    def count(self, name: str, qtype: str | None = None, protocol: str | None = None) -> int:
        """Queries received for `name` (of `qtype`, e.g. "TXT", and over `protocol`, "udp" or
        "tcp", when given)."""
        with self.lock:
            if qtype is None and protocol is None:
                return self.counts[_norm(name)]
            n = _norm(name)
            return sum(1 for _, qn, qt, proto in self.log
                       if qn == n and (qtype is None or qt == qtype) and (protocol is None or proto == protocol))

    def count_ip(self, ip: str, zone: str) -> int:
        return self.count(query_name(ip, zone))

    def total(self, zone: str | None = None) -> int:
        """Queries received in `zone` (or in all)."""
        with self.lock:
            if zone is None:
                return sum(self.counts.values())
            z = _norm(zone)
            return sum(n for name, n in self.counts.items() if name == z or name.endswith("." + z))

    def wait_count(self, name: str, n: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        name = _norm(name)
        with self.lock:
            while self.counts[name] < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.lock.wait(left)
            return self.counts[name]

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()
            self.truncated.clear()
            self.log.clear()

    # ---- the resolver --------------------------------------------------------------
    def _resolve(self, request: DNSRecord, handler) -> DNSRecord:
        qname = _norm(request.q.qname)
        qtype = QTYPE.get(request.q.qtype, str(request.q.qtype))
        with self.lock:
            self.counts[qname] += 1
            self.log.append((time.monotonic(), qname, qtype, handler.protocol))
            self.lock.notify_all()
            zone = self._find_zone(qname)
            # copy what we need under the lock (tests change zones concurrently)
            if zone is not None:
                mode, delay, soa = zone.mode, zone.delay, zone.soa
                soa_ttl, soa_min = zone.soa_ttl, zone.soa_minimum
                rec = zone.records.get(qname)
                txt = zone.texts.get(qname)
                zname = zone.name
        if zone is None:
            reply = request.reply()
            reply.header.rcode = RCODE.REFUSED
            return reply
        if mode == "blackhole":
            raise _Drop(f"blackhole {qname}")
        if delay:
            time.sleep(delay)
        reply = request.reply()
        reply.header.aa = 1
        if mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if mode == "refused":
            reply.header.rcode = RCODE.REFUSED
            return reply
        qt = request.q.qtype
        answered = False
        if txt is not None and qt in (QTYPE.TXT, QTYPE.ANY):
            strings, ttl = txt
            for parts in strings:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, ttl=ttl, rdata=TXT(list(parts))))
            answered = True
        if rec is not None and qt in (QTYPE.A, QTYPE.ANY):
            values, ttl = rec
            for v in values:
                reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=ttl, rdata=A(v)))
            answered = True
        if answered:
            return reply
        if rec is None and txt is None:
            reply.header.rcode = RCODE.NXDOMAIN
        # else the name exists, but has no records of this type: NODATA
        if soa:
            reply.add_auth(RR(zname + ".", QTYPE.SOA, ttl=soa_ttl,
                              rdata=SOA(f"ns.{zname}.", f"hostmaster.{zname}.",
                                        (1, 3600, 600, 86400, soa_min))))
        return reply

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> "DnsServer":
        resolver = _Resolver(self)
        for _ in range(20):
            port = free_port(self.host)
            try:
                udp = DNSServer(resolver, port=port, address=self.host, logger=self._quiet, handler=_Handler)
                try:
                    tcp = DNSServer(resolver, port=port, address=self.host, tcp=True, logger=self._quiet,
                                    handler=_Handler)
                except OSError:
                    udp.server.server_close()
                    continue
            except OSError:
                continue
            self._udp, self._tcp, self.port = udp, tcp, port
            udp.start_thread()
            tcp.start_thread()
            return self
        raise RuntimeError("no free port for the DNS server")

    def stop(self) -> None:
        self._stopped.set()
        for s in (self._udp, self._tcp):
            if s is not None:
                s.stop()
                s.server.server_close()
        self._udp = self._tcp = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    def query(self, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 2.0,
              edns: int | None = None) -> DNSRecord:
        """Asks the server directly (for the helper's own tests); raises socket.timeout on no answer.
        edns: add an OPT record with this UDP payload size."""
        q = DNSRecord.question(name, qtype)
        if edns is not None:
            q.add_ar(EDNS0(udp_len=edns))
        return DNSRecord.parse(q.send(self.host, self.port, tcp=tcp, timeout=timeout))


@pytest.fixture
def dns_server():
    srv = DnsServer().start()
    yield srv
    srv.stop()


# --------------------------------------------------------------------------- mailkeep side

def dnsbl_overrides(dns: DnsServer, smtp_zones: str = "", http_zones: str = "", on_error: str = "accept",
                    timeout_ms: int = 2000, allow: str | None = None) -> dict:
    """The [dnsbl] section for start_mailkeep(..., dnsbl=dnsbl_overrides(...))."""
    d = {"smtp_zones": smtp_zones, "http_zones": http_zones, "resolver": dns.address,
         "timeout_ms": timeout_ms, "on_error": on_error}
    if allow is not None:
        d["allow"] = allow
    return d


def http_overrides(http_port: int, create_interval: int = 0) -> dict:
    """[http] on 127.0.0.1:http_port and [aliases] with a chosen creation interval."""
    return {"http": {"listen": f"127.0.0.1:{http_port}", "trusted_proxies": "", "max_body": 4096},
            "aliases": {"domains": "alias.localhost", "create_interval": create_interval},
            "store": {"path": "data/mailkeep.db"}}


@dataclass
class Greeting:
    reply: Reply | None          # None: closed without a reply
    seconds: float               # connect -> greeting (or close)
    closed_after: bool | None    # the server closed the connection right after the greeting
    error: str = ""

    def __str__(self) -> str:
        return f"{self.reply} (after {self.seconds:.2f}s, closed_after={self.closed_after}) {self.error}"


def smtp_connect(host: str, port: int, source: str, timeout: float = 10.0, quit: bool = True) -> Greeting:
    """Connects from `source`, reads the greeting; for a 4xx/5xx greeting checks that the
    server closes the connection (within 3 s); for 220 sends QUIT (if `quit`)."""
    t0 = time.monotonic()
    c = RawSMTP(host, port, timeout=timeout, source_address=(source, 0), read_banner=False)
    sock = c.sock
    try:
        try:
            r = c.reply(timeout)
        except ConnectionClosed as e:
            return Greeting(None, time.monotonic() - t0, True, str(e))
        except socket.timeout:
            return Greeting(None, time.monotonic() - t0, False, "timeout waiting for the greeting")
        elapsed = time.monotonic() - t0
        closed = None
        if r.code >= 400:
            sock.settimeout(3)
            try:
                extra = sock.recv(4096)
                closed = extra == b""
            except socket.timeout:
                closed = False
            except ConnectionResetError:
                closed = True
        elif quit:
            c.cmd("QUIT")
        return Greeting(r, elapsed, closed)
    finally:
        c.close()


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    @property
    def json(self):
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.headers} {self.body[:400]!r} ({self.seconds:.2f}s)"


def http_create(port: int, source: str, target: str = "me@example.com", timeout: float = 10.0) -> HttpResponse:
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("POST", "/api/v1/aliases", body=json.dumps({"target": target}).encode(),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        body = r.read()
        return HttpResponse(r.status, {k.lower(): v for k, v in r.getheaders()}, body, time.monotonic() - t0)
    finally:
        conn.close()


def read_stats(config_path: Path, cwd: Path) -> tuple[dict[str, int], dict[str, str], str]:
    """`mailkeep stats -c FILE` (run in mailkeep's workdir: stats_file is relative).
    Returns (counters, {"started": iso, "updated": iso}, raw stdout)."""
    res = subprocess.run([str(MAILKEEP_BIN), "stats", "-c", str(config_path)], capture_output=True, text=True,
                         timeout=15, cwd=cwd, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"mailkeep stats failed ({res.returncode}): {res.stderr}"
    counters: dict[str, int] = {}
    times: dict[str, str] = {}
    for line in res.stdout.splitlines():
        if not line.strip():
            continue
        key, _, value = line.partition(" ")
        if key in ("started", "updated"):
            times[key] = value.strip()
        else:
            counters[key] = int(value)
    return counters, times, res.stdout


def wait_log(mk, needle: str, timeout: float = 3.0) -> str:
    """Waits until mailkeep's log contains `needle`; returns the log."""
    deadline = time.monotonic() + timeout
    while True:
        log = mk.log()
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)
