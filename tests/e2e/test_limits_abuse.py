"""[limits] per-client limits and the alias creation rate limit.

smtp_connections_per_ip   simultaneous connections per IP -> 421 4.7.0 at connect
smtp_messages_per_ip_per_minute  transactions per IP per minute -> 450 4.7.1 at MAIL
[aliases] create_interval one alias creation per IP per N s -> 429 + Retry-After
Clients in [dnsbl] allow (default 127.0.0.1) and relay_from (127.0.0.9) are exempt.
"""

from __future__ import annotations

import time


from harness import RawSMTP, free_port, wait_port
from dns_support import http_create, http_overrides, read_stats, smtp_connect, wait_log

MSG = b"From: a@client.test\r\nTo: user@example.org\r\nSubject: limits\r\n\r\nhello\r\n"


def open_session(mk, source: str) -> RawSMTP:
    c = RawSMTP(mk.host, mk.port, timeout=10, source_address=(source, 0))
    assert c.banner.code == 220, f"{source}: {c.banner}"
    return c


def assert_per_ip_refusal(g):
    assert g.reply is not None, str(g)
    assert g.reply.code == 421 and g.reply.enhanced == "4.7.0", str(g)
    assert "too many connections from your address" in g.reply.text, str(g)
    assert g.closed_after, f"not closed after the 421: {g}"


def wait_minute_window(margin: float = 10.0) -> None:
    """The message limit counts in fixed one-minute windows: don't start close to a boundary."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


# --------------------------------------------------------------------------- connections per IP

def test_connections_per_ip(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, limits={"smtp_connections_per_ip": 2})
    held = [open_session(mk, "127.0.0.3"), open_session(mk, "127.0.0.3")]
    try:
        assert_per_ip_refusal(smtp_connect(mk.host, mk.port, "127.0.0.3"))
        assert_per_ip_refusal(smtp_connect(mk.host, mk.port, "127.0.0.3"))
        # another address is not affected
        other = open_session(mk, "127.0.0.4")
        assert other.cmd("EHLO b.test").code == 250
        other.cmd("QUIT")
        other.close()
        # the held sessions still work
        assert held[0].cmd("EHLO a.test").code == 250
        # one closes (QUIT) -> a new connection from the address is accepted again
        assert held[0].cmd("QUIT").code == 221
        held[0].close()
        deadline = time.monotonic() + 3
        while True:
            g = smtp_connect(mk.host, mk.port, "127.0.0.3")
            if g.reply is not None and g.reply.code == 220:
                break
            assert time.monotonic() < deadline, f"slot not released after QUIT: {g}"
            time.sleep(0.1)
        # ... and an abrupt close (no QUIT) releases its slot too
        held[1].close()
        deadline = time.monotonic() + 3
        fresh = []
        while len(fresh) < 2:
            try:
                fresh.append(open_session(mk, "127.0.0.3"))
            except AssertionError:
                assert time.monotonic() < deadline, "slots not released after the clients closed"
                time.sleep(0.1)
        held = fresh
        assert_per_ip_refusal(smtp_connect(mk.host, mk.port, "127.0.0.3"))
    finally:
        for c in held:
            c.close()
    log = wait_log(mk, "reason=smtp_connections_per_ip")
    assert "reason=smtp_connections_per_ip" in log and "connect from [127.0.0.3]" in log, log[-2000:]


def test_connections_per_ip_exempt_clients(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, limits={"smtp_connections_per_ip": 1},
                        dnsbl={"allow": "127.0.0.1/32, 127.0.0.50/32"})
    held = []
    try:
        for src in ("127.0.0.1", "127.0.0.50", "127.0.0.9"):   # allow (default entry, custom), relay_from
            for _ in range(4):
                held.append(open_session(mk, src))
        held.append(open_session(mk, "127.0.0.3"))
        assert_per_ip_refusal(smtp_connect(mk.host, mk.port, "127.0.0.3"))
    finally:
        for c in held:
            c.close()


def test_connections_per_ip_zero_is_off(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, limits={"smtp_connections_per_ip": 0})
    held = []
    try:
        for _ in range(8):
            held.append(open_session(mk, "127.0.0.3"))
    finally:
        for c in held:
            c.close()


# --------------------------------------------------------------------------- messages per minute

def test_messages_per_ip_per_minute(start_mailkeep, capture):
    wait_minute_window()
    mk = start_mailkeep(capture.address, limits={"smtp_messages_per_ip_per_minute": 2})
    with RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.3", 0)) as c:
        assert c.banner.code == 220
        c.ehlo()
        assert c.send_message("one@client.test", ["user@example.org"], MSG).code == 250
        assert c.cmd("MAIL FROM:<two@client.test>").code == 250      # counts at MAIL, not at delivery
        assert c.cmd("RSET").code == 250
        r = c.cmd("MAIL FROM:<three@client.test>")
        assert r.code == 450 and r.enhanced == "4.7.1", str(r)
        # no transaction was opened
        assert c.cmd("RCPT TO:<user@example.org>").code == 503
        # still over the limit in the same session ...
        r = c.cmd("MAIL FROM:<four@client.test>")
        assert r.code == 450 and r.enhanced == "4.7.1", str(r)
        c.cmd("QUIT")
    # ... and in a new one from the same address
    with RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.3", 0)) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<five@client.test>")
        assert r.code == 450 and r.enhanced == "4.7.1", str(r)
    # another address has its own allowance; exempt clients have none
    for src, n in (("127.0.0.4", 2), ("127.0.0.1", 5), ("127.0.0.9", 5)):
        with RawSMTP(mk.host, mk.port, timeout=10, source_address=(src, 0)) as c:
            c.ehlo()
            for i in range(n):
                r = c.cmd(f"MAIL FROM:<m{i}@client.test>")
                assert r.code == 250, f"{src} MAIL #{i + 1}: {r}"
                c.cmd("RSET")
    time.sleep(0.3)
    assert len(capture.messages) == 1 and capture.messages[0].mail_from == "one@client.test"
    refused = {"three@client.test", "four@client.test", "five@client.test"}
    assert not refused & set(capture.mail_log), capture.mail_log
    log = wait_log(mk, "smtp_messages_per_ip_per_minute")
    assert "reject: MAIL from [127.0.0.3]" in log and "smtp_messages_per_ip_per_minute" in log, log[-2000:]
    assert mk.stop() == 0
    counters, _, out = read_stats(mk.config_path, mk.workdir)
    assert counters["reject.messages_per_ip"] == 3, out
    assert counters["messages.relayed"] == 1, out


# --------------------------------------------------------------------------- alias creation

def test_alias_creation_rate_limit(start_mailkeep, capture):
    http_port = free_port()
    mk = start_mailkeep(capture.address, **http_overrides(http_port, create_interval=30))
    wait_port("127.0.0.1", http_port, 10, mk.proc)
    r = http_create(http_port, "127.0.0.3")
    assert r.status == 201, str(r)
    r = http_create(http_port, "127.0.0.3")
    assert r.status == 429, str(r)
    assert r.json.get("error") == "rate-limited", str(r)
    retry = int(r.headers.get("retry-after", "0"))
    assert 25 <= retry <= 30, str(r)
    # per address
    assert http_create(http_port, "127.0.0.4").status == 201
    assert mk.stop() == 0
    counters, _, out = read_stats(mk.config_path, mk.workdir)
    assert counters["http.alias_created"] == 2, out
    assert counters["http.reject.rate_limited"] == 1, out
