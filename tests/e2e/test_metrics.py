"""[metrics] listen: the Prometheus endpoint (GET /metrics, text format 0.0.4).

* A real Prometheus (Debian's `prometheus`) on loopback scrapes mailkeep every second; after a
  known load (25 messages archived and relayed, 3 relay denials, 1 DNSBL-listed client) its
  HTTP API answers the exact figures, and `mailkeep stats` reports the same counters as
  /metrics.
* `promtool check metrics` passes on the endpoint's output after some load (histograms with
  data, DNSBL lookups with labels, the index gauges of a server with an archive).
* The endpoint's HTTP: 404 off /metrics, 405 for other methods, the 0.0.4 content type,
  keep-alive, no client address anywhere in the output; off by default.

The tests skip (with the reason) only when Prometheus's tools are missing: test.sh installs
Debian's `prometheus` package, which brings both `prometheus` and `promtool`.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import smtplib
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from harness import RawSMTP, free_port, wait_port
from backup_support import backup_gateway  # noqa: F401  (fixture)
from dns_support import (  # noqa: F401  (dns_server is a fixture)
    dns_server, dnsbl_overrides, read_stats, smtp_connect,
)

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
CONTENT_TYPE = "text/plain; version=0.0.4"
MSG = (b"From: sender@client.test\r\nTo: alice@example.org\r\nSubject: metrics {n}\r\n"
       b"Message-ID: <metrics-{n}@client.test>\r\n\r\nmessage {n}\r\n")
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$')
IPV4_RE = re.compile(r"(?<![\d.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.])")


def need(*tools: tuple[str, str | None]) -> None:
    missing = [name for name, path in tools if not path]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian's prometheus package; test.sh installs it)")


# --------------------------------------------------------------------------- helpers

def http_get(port: int, path: str = "/metrics", method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def scrape(port: int) -> str:
    status, headers, body = http_get(port)
    assert status == 200, (status, body[:300])
    assert headers["content-type"].startswith(CONTENT_TYPE), headers
    return body.decode("utf-8")


def parse_samples(text: str) -> dict[str, float]:
    """'name{labels}' (as written) -> value, for every sample line."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        key = m.group(1) + (m.group(2) or "")
        assert key not in out, f"sample twice: {line!r}"
        out[key] = float(m.group(3))
    return out


def stats_to_samples(name: str) -> str | None:
    """The /metrics sample that shows a `mailkeep stats` counter (exposition.cpp's mapping)."""
    fixed = {
        "connections": "mailkeep_connections_total",
        "archive.copies": "mailkeep_archive_copies_total",
        "messages.standalone": "mailkeep_standalone_deliveries_total",
        "http.alias_created": "mailkeep_aliases_created_total",
        "alias.used": "mailkeep_alias_uses_total",
        "defer.upstream": 'mailkeep_deferrals_total{cause="upstream"}',
        "defer.archive": 'mailkeep_deferrals_total{cause="archive"}',
        "spam.detected": 'mailkeep_spam_verdicts_total{verdict="spam"}',
        "spam.ham": 'mailkeep_spam_verdicts_total{verdict="ham"}',
        "spam.unsure": 'mailkeep_spam_verdicts_total{verdict="unsure"}',
        "auth.ok": 'mailkeep_auth_total{result="ok"}',
    }
    if name in fixed:
        return fixed[name]
    if m := re.fullmatch(r"messages\.(inbound|outbound)\.(accepted|deferred|rejected)", name):
        return f'mailkeep_messages_total{{direction="{m.group(1)}",result="{m.group(2)}"}}'
    if name.startswith("http.reject."):
        return f'mailkeep_http_rejections_total{{reason="{name[12:]}"}}'
    if name.startswith("reject."):
        return f'mailkeep_rejections_total{{reason="{name[7:]}"}}'
    if name.startswith("milter{"):   # per milter and verdict: milter{milter="inet:…",verdict="reject"}
        return "mailkeep_milter_verdicts_total" + name[6:]
    return None


# Counters of `mailkeep stats` with no sample of their own in /metrics (the messages_total
# family replaced them there).
NOT_EXPOSED = {"messages.relayed", "messages.archived"}


class Prometheus:
    """A private Prometheus on 127.0.0.1 scraping `targets` every second (own config, TSDB
    and log under `base`); stopped (SIGTERM, then SIGKILL) by stop()."""

    def __init__(self, base: Path, targets: list[str]):
        self.base = base
        self.port = free_port()
        base.mkdir(parents=True, exist_ok=True)
        self.config = base / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: mailkeep\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
        self.log_path = base / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Prometheus":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.base / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, cwd=self.base)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"prometheus exited {self.proc.returncode}:\n{self.log()}"
            try:
                if self.get("/-/ready")[0] == 200:
                    return self
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready within {timeout}s:\n{self.log()}"
            time.sleep(0.2)

    def get(self, path: str) -> tuple[int, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def api(self, path: str) -> object:
        status, body = self.get(path)
        doc = json.loads(body)
        assert status == 200 and doc.get("status") == "success", (path, status, body[:500])
        return doc["data"]

    def query(self, expr: str) -> float | None:
        """An instant query with one-element result (or none: None) as a number."""
        data = self.api("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert data["resultType"] == "vector", data
        result = data["result"]
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def wait(self, what: str, done, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"Prometheus: {what} not seen within {timeout}s"
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@pytest.fixture
def prometheus(tmp_path):
    """Factory: prometheus(["127.0.0.1:PORT", ...]) -> a started Prometheus (stopped at teardown)."""
    need(("prometheus", PROMETHEUS))
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        p = Prometheus(tmp_path / f"prometheus{len(started)}", targets)
        started.append(p)
        return p.start()

    yield start
    for p in started:
        p.stop()
        print(f"--- prometheus log ({p.log_path}) ---")
        print("\n".join(p.log().splitlines()[-30:]))


def metrics_gateway(backup_gateway, capture, dns_server):
    """mailkeep with an archive for alice@example.org (relayed to `capture`), the DNSBL zone
    zen.test listing 127.0.0.2, and [metrics] listen on a free loopback port."""
    dns_server.zone("zen.test").list("127.0.0.2")
    metrics_port = free_port()
    gw = backup_gateway(capture.address, upstream=capture.address,
                        metrics={"listen": f"127.0.0.1:{metrics_port}"},
                        dnsbl=dnsbl_overrides(dns_server, smtp_zones="zen.test"))
    wait_port("127.0.0.1", metrics_port, 10, gw.mk.proc)
    assert f"metrics listening on 127.0.0.1:{metrics_port}" in gw.log(), gw.log()
    return gw, metrics_port


def send_load(gw, messages: int, relay_denials: int, source: str = "127.0.0.23") -> None:
    """`messages` messages to alice@example.org (archived, relayed) and `relay_denials` RCPTs
    to another domain, on one SMTP session from `source`; one connection from the listed
    127.0.0.2 (refused at the greeting)."""
    with smtplib.SMTP(gw.host, gw.port, timeout=30, source_address=(source, 0)) as s:
        s.ehlo("client.test")
        for n in range(messages):
            refused = s.sendmail("sender@client.test", ["alice@example.org"], MSG.replace(b"{n}", str(n).encode()))
            assert refused == {}, refused
        for n in range(relay_denials):
            assert s.mail("sender@client.test")[0] == 250
            code, text = s.rcpt(f"victim{n}@elsewhere.test")
            assert code == 550, (code, text)
            assert s.rset()[0] == 250
    g = smtp_connect(gw.host, gw.port, "127.0.0.2")
    assert g.reply is not None and g.reply.code == 554, str(g)


# --------------------------------------------------------------------------- tests

MESSAGES = 25
RELAY_DENIALS = 3


@pytest.mark.release_only
def test_prometheus_scrapes_the_known_load(backup_gateway, capture, dns_server, prometheus):
    """Prometheus scraping every second sees exactly what was sent; `mailkeep stats` agrees
    with /metrics counter for counter. (release_only: the ASan pass meets the same endpoint
    in the other tests of this file, without a Prometheus.)"""
    gw, metrics_port = metrics_gateway(backup_gateway, capture, dns_server)
    prom = prometheus([f"127.0.0.1:{metrics_port}"])
    prom.wait("up{job=\"mailkeep\"} == 1", lambda: prom.query('up{job="mailkeep"}') == 1)

    send_load(gw, MESSAGES, RELAY_DENIALS)
    assert len(capture.wait_for(MESSAGES)) == MESSAGES
    t_loaded = time.time()
    connections = 3     # the harness's wait_port, the client's session, the listed client

    # Until Prometheus shows the figures, or has scraped 2 s after the load (so that a wrong
    # figure fails below with what Prometheus has rather than as a timeout).
    def seen() -> bool:
        accepted = prom.query('sum(mailkeep_messages_total{result="accepted"})')
        denied = prom.query('mailkeep_rejections_total{reason="relay_denied"}')
        ts = prom.query("timestamp(mailkeep_connections_total)")
        return (accepted, denied) == (MESSAGES, RELAY_DENIALS) or (ts is not None and ts > t_loaded + 2)
    prom.wait("the load", seen)

    expected = {
        'sum(mailkeep_messages_total{result="accepted"})': MESSAGES,
        'mailkeep_messages_total{direction="inbound",result="accepted"}': MESSAGES,
        "sum(mailkeep_messages_total)": MESSAGES,
        'mailkeep_rejections_total{reason="relay_denied"}': RELAY_DENIALS,
        'mailkeep_rejections_total{reason="dnsbl_listed"}': 1,
        "sum(mailkeep_rejections_total)": RELAY_DENIALS + 1,
        'mailkeep_dnsbl_lookups_total{zone="zen.test",result="listed"}': 1,
        "mailkeep_archive_copies_total": MESSAGES,
        "mailkeep_transaction_duration_seconds_count": MESSAGES,
        'mailkeep_transaction_duration_seconds_bucket{le="+Inf"}': MESSAGES,
        "mailkeep_archive_write_duration_seconds_count": MESSAGES,
        "mailkeep_connections_total": connections,
        "sum(mailkeep_deferrals_total)": 0,
        "count(mailkeep_build_info == 1)": 1,
        'up{job="mailkeep"}': 1,
    }
    got = {expr: prom.query(expr) for expr in expected}
    wrong = {expr: (got[expr], want) for expr, want in expected.items() if got[expr] != want}
    assert not wrong, f"(Prometheus, expected): {wrong}"
    assert len(gw.delivered("alice")) == MESSAGES, "archive copies on disk"
    targets = prom.api("/api/v1/targets")["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")], targets

    # `mailkeep stats` (written at exit) and /metrics read the same counters: no traffic
    # between the scrape and the stop, Prometheus's scrapes are not SMTP connections.
    samples = parse_samples(scrape(metrics_port))
    assert gw.mk.stop() == 0, "mailkeep did not exit 0 on SIGTERM with Prometheus connected"
    counters, _, out = read_stats(gw.config_path, gw.mk.workdir)
    assert counters["messages.relayed"] == MESSAGES and counters["messages.archived"] == MESSAGES, out
    unmapped = {name for name in counters if name not in NOT_EXPOSED and stats_to_samples(name) is None}
    assert not unmapped, f"stats counters without a metric: {unmapped}"
    differ = {name: (v, samples.get(stats_to_samples(name))) for name, v in counters.items()
              if name not in NOT_EXPOSED and samples.get(stats_to_samples(name)) != v}
    assert not differ, f"(stats, /metrics): {differ}\n{out}"
    assert samples['mailkeep_auth_total{result="failed"}'] == counters["reject.auth"]
    assert counters["connections"] == connections and counters["reject.relay_denied"] == RELAY_DENIALS, out


def test_promtool_check_metrics(backup_gateway, capture, dns_server):
    """The exposition after some load passes promtool's parser and linter; histograms are
    cumulative and agree with their counts."""
    need(("promtool", PROMTOOL))
    gw, metrics_port = metrics_gateway(backup_gateway, capture, dns_server)
    send_load(gw, 5, 1)
    assert len(capture.wait_for(5)) == 5
    text = scrape(metrics_port)
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), \
        f"promtool check metrics exit {res.returncode}:\n{res.stdout.decode()}{res.stderr.decode()}\n---\n{text}"

    samples = parse_samples(text)
    for family in ("mailkeep_transaction_duration_seconds", "mailkeep_archive_write_duration_seconds"):
        buckets = [(k, v) for k, v in samples.items() if k.startswith(family + "_bucket{")]
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{family} buckets not cumulative: {buckets}"
        assert buckets[-1][0] == family + '_bucket{le="+Inf"}', buckets
        assert values[-1] == samples[family + "_count"] == 5, (family, buckets, samples[family + "_count"])
        assert 0 < samples[family + "_sum"] < 5 * 30, samples[family + "_sum"]
    assert samples['mailkeep_dnsbl_lookups_total{zone="zen.test",result="listed"}'] == 1, text
    assert samples['mailkeep_messages_total{direction="inbound",result="accepted"}'] == 5, text
    assert "mailkeep_index_pending_messages" in samples, "an archive with [index] on shows the index gauges"


def test_metrics_http(start_mailkeep, capture):
    """404 off /metrics, 405 for methods other than GET and HEAD, the 0.0.4 content type,
    keep-alive (Prometheus reuses its connection), no client address in the output."""
    metrics_port = free_port()
    mk = start_mailkeep(capture.address, metrics={"listen": f"127.0.0.1:{metrics_port}"})
    wait_port("127.0.0.1", metrics_port, 10, mk.proc)
    with RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.23", 0)) as c:
        c.ehlo()
        assert c.send_message("a@client.test", ["user@example.org"], b"Subject: x\r\n\r\nhi\r\n").code == 250
        assert c.cmd("MAIL FROM:<b@client.test>").code == 250
        assert c.cmd("RCPT TO:<x@elsewhere.test>").code == 550
    with RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.24", 0)) as c:
        c.cmd("NONSENSE")

    for path in ("/", "/metrics/", "/favicon.ico", "/metricsx"):
        status, _, body = http_get(metrics_port, path)
        assert status == 404, (path, status, body)
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = http_get(metrics_port, "/metrics", method)
        assert status == 405, (method, status)
        assert headers.get("allow") == "GET, HEAD", headers
    status, headers, body = http_get(metrics_port, "/metrics", "HEAD")
    assert status == 200 and body == b"" and headers["content-type"].startswith(CONTENT_TYPE), (status, headers)

    # keep-alive: three scrapes on one connection
    c = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10)
    try:
        for _ in range(3):
            c.request("GET", "/metrics")
            r = c.getresponse()
            body = r.read()
            assert r.status == 200 and r.getheader("Content-Type").startswith(CONTENT_TYPE), r.getheaders()
            assert not r.will_close, r.getheaders()
    finally:
        c.close()

    text = scrape(metrics_port)
    samples = parse_samples(text)
    assert samples['mailkeep_messages_total{direction="inbound",result="accepted"}'] == 1, text
    assert samples['mailkeep_rejections_total{reason="relay_denied"}'] == 1, text
    for needle in ("127.0.0.23", "127.0.0.24", "23.0.0.127", "24.0.0.127"):
        assert needle not in text, f"client address {needle} in /metrics"
    assert not IPV4_RE.findall(text), f"an IPv4 address in /metrics: {IPV4_RE.findall(text)}"
    assert "[::1]" not in text and "::ffff:" not in text, text
    # every sample belongs to a family with HELP and TYPE (promtool checks this too, where installed)
    typed = set(re.findall(r"^# TYPE (\S+) (?:counter|gauge|histogram)$", text, re.M))
    helped = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    for key in samples:
        name = key.split("{")[0]
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert base in typed and base in helped, f"{key}: no TYPE/HELP"


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (its socket fds matched in /proc/net/tcp{,6})."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:          # 0A: LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_off_by_default(start_mailkeep, capture):
    """Without [metrics] listen nothing serves /metrics: SMTP is the only listener."""
    mk = start_mailkeep(capture.address)
    assert "metrics" not in mk.config_path.read_text()
    assert listening_ports(mk.pid) == {mk.port}
    assert "metrics listening" not in mk.log(), mk.log()


# --------------------------------------------------------------------------- known bugs (src/ not changed here)

# Messages mailkeep itself refuses at the end of DATA (bare LF 554, size 552) are counted too.
def test_messages_rejected_at_end_of_data_are_counted(start_mailkeep, capture):
    metrics_port = free_port()
    mk = start_mailkeep(capture.address, metrics={"listen": f"127.0.0.1:{metrics_port}"},
                        smtp={"max_message_size": 2048})
    wait_port("127.0.0.1", metrics_port, 10, mk.proc)
    with RawSMTP(mk.host, mk.port, timeout=10) as c:
        c.ehlo()
        assert c.send_message("a@client.test", ["user@example.org"], b"Subject: ok\r\n\r\nhi\r\n").code == 250
        assert c.send_message("a@client.test", ["user@example.org"], b"Subject: lf\r\n\r\nbare\nlf\r\n").code == 554
        big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 60
        assert c.send_message("a@client.test", ["user@example.org"], big).code == 552
    samples = parse_samples(scrape(metrics_port))
    assert samples['mailkeep_rejections_total{reason="bare_cr_lf_or_nul"}'] == 1
    assert samples['mailkeep_rejections_total{reason="message_size"}'] == 1
    assert samples['mailkeep_messages_total{direction="inbound",result="accepted"}'] == 1
    assert samples['mailkeep_messages_total{direction="inbound",result="rejected"}'] == 2
    assert samples["mailkeep_transaction_duration_seconds_count"] == 3


# Every zone queried is counted, also after the first listing.
def test_dnsbl_lookups_count_every_zone(start_mailkeep, capture, dns_server):
    dns_server.zone("a.test").list("127.0.0.2")
    dns_server.zone("b.test")
    metrics_port = free_port()
    mk = start_mailkeep(capture.address, metrics={"listen": f"127.0.0.1:{metrics_port}"},
                        dnsbl=dnsbl_overrides(dns_server, smtp_zones="a.test, b.test"))
    wait_port("127.0.0.1", metrics_port, 10, mk.proc)
    assert smtp_connect(mk.host, mk.port, "127.0.0.2").reply.code == 554       # listed in a.test
    assert smtp_connect(mk.host, mk.port, "127.0.0.3").reply.code == 220       # clean
    samples = parse_samples(scrape(metrics_port))
    checks = 2                 # .2 and .3 (the harness's wait_port from 127.0.0.1 is a trusted client: no check)
    for zone in ("a.test", "b.test"):
        per_zone = sum(v for k, v in samples.items()
                       if k.startswith(f'mailkeep_dnsbl_lookups_total{{zone="{zone}",'))
        assert per_zone == checks, (zone, {k: v for k, v in samples.items() if "dnsbl_lookups" in k})
