"""`mailkeep stats -c FILE`: the counters the server writes to [general] stats_file
(every 5 s and at exit). Each test does a known set of things and checks exact numbers.

Note: harness.Mailkeep.start() waits for the SMTP port with one TCP connection from
127.0.0.1, which the server counts in `connections`.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from harness import MAILKEEP_BIN, RawSMTP, free_port, run_mailkeep, wait_port
from dns_support import (  # noqa: F401  (dns_server is a fixture)
    dns_server, dnsbl_overrides, http_create, http_overrides, read_stats, smtp_connect,
)

MSG = b"From: a@client.test\r\nTo: user@example.org\r\nSubject: stats\r\n\r\nhello\r\n"
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
EXPECTED_NAMES = {
    "connections", "messages.relayed", "reject.dnsbl_listed", "reject.dnsbl_error",
    "reject.connections_per_ip", "reject.messages_per_ip", "reject.relay_denied",
    "reject.too_many_connections", "http.reject.dnsbl_listed", "http.reject.rate_limited",
    "http.alias_created",
}


def parse_iso(value: str) -> float:
    m = ISO_RE.match(value)
    assert m, f"not an ISO time: {value!r}"
    dt = datetime.strptime(m.group(0), "%Y-%m-%dT%H:%M:%S")
    if value.endswith("Z") or value.endswith("+00:00") or "+" not in value[10:]:
        return dt.replace(tzinfo=timezone.utc).timestamp()
    return datetime.fromisoformat(value).timestamp()


def wait_minute_window(margin: float = 15.0) -> None:
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


def test_stats_counts_what_happened(start_mailkeep, capture, dns_server):
    wait_minute_window()
    zen = dns_server.zone("zen.test")
    zen.list("127.0.0.2", "127.0.0.2")
    zen.list("127.0.0.4", "127.255.255.254")
    http_port = free_port()
    overrides = http_overrides(http_port, create_interval=30)
    mk = start_mailkeep(
        capture.address,
        dnsbl=dnsbl_overrides(dns_server, smtp_zones="zen.test=127.0.0.[2..11]", http_zones="zen.test=127.0.0.[2..9]",
                              on_error="tempfail"),
        limits={"smtp_connections_per_ip": 2, "smtp_messages_per_ip_per_minute": 3},
        smtp={"max_connections": 4},
        **overrides,
    )
    wait_port("127.0.0.1", http_port, 10, mk.proc)
    t_start = time.time()
    connections = 1                                     # harness wait_port

    # DNSBL: listed x2 (the second from the cache), error answer x1 (tempfail)
    for _ in range(2):
        g = smtp_connect(mk.host, mk.port, "127.0.0.2")
        assert g.reply is not None and g.reply.code == 554, str(g)
        connections += 1
    g = smtp_connect(mk.host, mk.port, "127.0.0.4")
    assert g.reply is not None and g.reply.code == 421, str(g)
    connections += 1

    # a clean client: 2 messages relayed, 1 relay denial, 1 MAIL accepted then RSET, 1 over the limit
    with RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.3", 0)) as c:
        connections += 1
        assert c.banner.code == 220, str(c.banner)
        c.ehlo()
        assert c.send_message("a@client.test", ["user@example.org"], MSG).code == 250
        assert c.send_message("b@client.test", ["user@example.net"], MSG).code == 250
        assert c.cmd("MAIL FROM:<c@client.test>").code == 250
        r = c.cmd("RCPT TO:<victim@elsewhere.test>")
        assert r.code == 554 or r.code // 100 == 5, str(r)
        assert c.cmd("RSET").code == 250
        r = c.cmd("MAIL FROM:<d@client.test>")
        assert r.code == 450, str(r)
        c.cmd("QUIT")
    assert len(capture.wait_for(2)) == 2

    time.sleep(0.5)         # the sessions above have ended (max_connections counts live ones)
    # connections per IP: 2 held from .5, the third refused
    held = [RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.5", 0)) for _ in range(2)]
    connections += 2
    try:
        assert all(h.banner.code == 220 for h in held)
        g = smtp_connect(mk.host, mk.port, "127.0.0.5")
        assert g.reply is not None and g.reply.code == 421 and "from your address" in g.reply.text, str(g)
        connections += 1
        # max_connections = 4: two more from .6, then one from .7 is refused (not counted in connections)
        held += [RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.6", 0)) for _ in range(2)]
        connections += 2
        assert all(h.banner.code == 220 for h in held)
        g = smtp_connect(mk.host, mk.port, "127.0.0.7")
        assert g.reply is not None and g.reply.code == 421, str(g)
        assert "from your address" not in g.reply.text, str(g)
    finally:
        for h in held:
            h.close()

    # HTTP: listed -> 403, clean -> 201, clean again -> 429
    assert http_create(http_port, "127.0.0.2").status == 403
    assert http_create(http_port, "127.0.0.3").status == 201
    assert http_create(http_port, "127.0.0.3").status == 429

    assert mk.stop() == 0, "mailkeep did not exit 0 on SIGTERM"
    t_stop = time.time()
    counters, times, out = read_stats(mk.config_path, mk.workdir)
    assert EXPECTED_NAMES <= set(counters), f"missing counters: {EXPECTED_NAMES - set(counters)}\n{out}"
    expected = {
        "connections": connections,
        "messages.relayed": 2,
        "messages.inbound.accepted": 2,                 # .3 is not a relay client
        "reject.dnsbl_listed": 2,
        "reject.dnsbl_error": 1,
        "reject.relay_denied": 1,
        "reject.messages_per_ip": 1,
        "reject.connections_per_ip": 1,
        "reject.too_many_connections": 1,
        "http.reject.dnsbl_listed": 1,
        "http.alias_created": 1,
        "http.reject.rate_limited": 1,
    }
    wrong = {k: (counters.get(k), v) for k, v in expected.items() if counters.get(k) != v}
    assert not wrong, f"(got, expected): {wrong}\n{out}"
    others = {k: v for k, v in counters.items() if k not in expected and v != 0}
    assert not others, f"counters for things the test did not do: {others}\n{out}"
    # started / updated: ISO times around the run
    assert set(times) == {"started", "updated"}, out
    assert out.splitlines()[0].startswith("started ") and out.splitlines()[1].startswith("updated "), out
    started, updated = parse_iso(times["started"]), parse_iso(times["updated"])
    assert t_start - 20 <= started <= t_start + 1, (times, t_start)
    assert t_start - 1 <= updated <= t_stop + 1, (times, t_stop)
    assert started <= updated


def test_stats_file_written_while_running(start_mailkeep, capture, dns_server):
    dns_server.zone("zen.test").list("127.0.0.2")
    mk = start_mailkeep(capture.address, dnsbl=dnsbl_overrides(dns_server, smtp_zones="zen.test"))
    g = smtp_connect(mk.host, mk.port, "127.0.0.2")
    assert g.reply is not None and g.reply.code == 554, str(g)
    t0 = time.monotonic()
    seen = None
    while time.monotonic() - t0 < 7.5:                  # written every 5 s
        stats_file = mk.workdir / "data" / "stats"
        if stats_file.exists():
            counters, times, out = read_stats(mk.config_path, mk.workdir)
            if counters.get("reject.dnsbl_listed") == 1:
                seen = (counters, times, out)
                break
        time.sleep(0.25)
    assert seen, f"the running server did not write reject.dnsbl_listed 1 within 7.5 s; last: " \
                 f"{(mk.workdir / 'data' / 'stats').read_text() if (mk.workdir / 'data' / 'stats').exists() else 'no file'}"
    assert mk.proc.poll() is None, "the server is still running"
    assert seen[0]["connections"] == 2, seen[2]          # wait_port + ours
    first_update = parse_iso(seen[1]["updated"])
    # it keeps being rewritten
    time.sleep(5.5)
    counters, times, out = read_stats(mk.config_path, mk.workdir)
    assert parse_iso(times["updated"]) > first_update, out


def test_stats_file_path_is_configurable(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, general={"stats_file": "counters/here.txt"})
    with RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.3", 0)) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        assert c.cmd("RCPT TO:<x@elsewhere.test>").code // 100 == 5
    assert mk.stop() == 0
    assert (mk.workdir / "counters" / "here.txt").is_file()
    assert not (mk.workdir / "data" / "stats").exists()
    counters, _, out = read_stats(mk.config_path, mk.workdir)
    assert counters["reject.relay_denied"] == 1 and counters["connections"] == 2, out


def test_stats_without_file(tmp_path):
    if not MAILKEEP_BIN.exists():
        import pytest
        pytest.skip("no binary")
    ini = tmp_path / "m.ini"
    ini.write_text(f"[general]\nstats_file = {tmp_path}/nothing/stats\nuser = root\n[http]\nlisten =\n")
    res = run_mailkeep("stats", "-c", str(ini))
    assert res.returncode != 0, res
    assert "no stats file" in res.stderr, res
