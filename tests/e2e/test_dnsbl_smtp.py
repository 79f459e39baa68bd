"""DNSBL checks at SMTP connect ([dnsbl] smtp_zones) against a real DNS server (dns_support.py).

Client addresses: 127.0.0.1 is in the default [dnsbl] allow and 127.0.0.9 is relay_from
(both exempt), so the tests connect from other 127/8 addresses (each its own cache entry).
"""

from __future__ import annotations

import time

import pytest

from harness import RawSMTP
from dns_support import dns_server, dnsbl_overrides, query_name, smtp_connect, wait_log  # noqa: F401

ZONES = "zen.test=127.0.0.[2..11], bl.test"
MSG = b"From: a@client.test\r\nTo: user@example.org\r\nSubject: dnsbl\r\n\r\nhello\r\n"


def start(start_mailkeep, capture, dns, smtp_zones=ZONES, **kw):
    extra = {k: kw.pop(k) for k in list(kw) if k in ("relay", "backup", "limits", "smtp")}
    return start_mailkeep(capture.address, dnsbl=dnsbl_overrides(dns, smtp_zones=smtp_zones, **kw), **extra)


def assert_listed(g, ip: str, zone: str):
    assert g.reply is not None, f"no greeting: {g}"
    assert g.reply.code == 554 and g.reply.enhanced == "5.7.1", str(g)
    assert f"Service unavailable; client [{ip}] blocked using {zone}" in g.reply.text, str(g)
    assert g.closed_after, f"connection not closed after the 554 greeting: {g}"


def assert_banner(g):
    assert g.reply is not None and g.reply.code == 220, f"expected a 220 banner: {g}"


def assert_tempfail(g):
    assert g.reply is not None, f"no greeting: {g}"
    assert g.reply.code == 421 and g.reply.enhanced == "4.7.0", str(g)
    assert "DNSBL lookup failed" in g.reply.text, str(g)
    assert g.closed_after, f"connection not closed after the 421 greeting: {g}"


# --------------------------------------------------------------------------- listed / not listed

def test_listed_client_refused_with_554_and_logged(start_mailkeep, capture, dns_server):
    dns_server.zone("zen.test").list("127.0.0.2", "127.0.0.2")
    dns_server.zone("bl.test")
    mk = start(start_mailkeep, capture, dns_server)
    g = smtp_connect(mk.host, mk.port, "127.0.0.2")
    assert_listed(g, "127.0.0.2", "zen.test")
    assert g.reply.text == "5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.test", str(g)
    assert dns_server.count("2.0.0.127.zen.test") == 1
    log = wait_log(mk, "dnsbl zen.test=127.0.0.2")
    lines = [l for l in log.splitlines() if "reject: CONNECT from [127.0.0.2]" in l]
    assert lines, f"no reject line in log:\n{log}"
    assert "dnsbl zen.test=127.0.0.2" in lines[0], lines[0]
    assert "554" in lines[0], lines[0]
    assert capture.mail_log == []


def test_listed_client_gets_no_smtp_dialogue(start_mailkeep, capture, dns_server):
    """Commands a listed client pipelines right after connecting are not executed."""
    dns_server.zone("zen.test").list("127.0.0.2")
    dns_server.zone("bl.test")
    mk = start(start_mailkeep, capture, dns_server)
    c = RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.2", 0), read_banner=False)
    data, reset = b"", False
    try:
        c.send(b"EHLO x.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<user@example.org>\r\nDATA\r\n"
               b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        reset = True            # closing with unread input sends a RST: fine
    finally:
        c.close()
    if not reset:
        assert data.startswith(b"554 5.7.1 "), data
    assert data == b"" or (data.startswith(b"554 5.7.1 ") and data.count(b"\r\n") == 1), \
        f"more than the greeting was answered: {data!r}"
    time.sleep(0.3)
    assert capture.mail_log == [] and capture.messages == []
    assert "a@client.test" not in mk.log()


def test_clean_client_gets_banner_and_relays(start_mailkeep, capture, dns_server):
    dns_server.zone("zen.test").list("127.0.0.2")
    dns_server.zone("bl.test")
    mk = start(start_mailkeep, capture, dns_server)
    with RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.3", 0)) as c:
        assert c.banner.code == 220, str(c.banner)
        assert c.ehlo().code == 250
        assert c.send_message("a@client.test", ["user@example.org"], MSG).code == 250
        c.cmd("QUIT")
    assert len(capture.wait_for(1)) == 1
    # every zone was asked, once, with the reversed-octet name
    assert dns_server.count("3.0.0.127.zen.test") == 1
    assert dns_server.count("3.0.0.127.bl.test") == 1
    assert dns_server.total() == 2, dns_server.log


def test_second_zone_lists(start_mailkeep, capture, dns_server):
    dns_server.zone("zen.test")
    dns_server.zone("bl.test").list("127.0.0.2", "127.0.0.99")     # no filter: any 127/8 answer lists
    mk = start(start_mailkeep, capture, dns_server)
    assert_listed(smtp_connect(mk.host, mk.port, "127.0.0.2"), "127.0.0.2", "bl.test")
    assert "dnsbl bl.test=127.0.0.99" in wait_log(mk, "dnsbl bl.test=127.0.0.99")


# --------------------------------------------------------------------------- return-code filters

# (client, zone, answers, listed?)
FILTER_CASES = [
    ("127.0.1.2", "zen.test", ["127.0.0.2"], True),                 # lower bound of [2..11]
    ("127.0.1.11", "zen.test", ["127.0.0.11"], True),               # upper bound
    ("127.0.1.12", "zen.test", ["127.0.0.12"], False),              # just outside
    ("127.0.1.20", "zen.test", ["127.0.0.20"], False),
    ("127.0.1.21", "zen.test", ["127.0.0.1"], False),
    ("127.0.1.22", "zen.test", ["127.0.1.2"], False),               # third octet differs
    ("127.0.1.23", "zen.test", ["127.0.0.20", "127.0.0.4"], True),  # any matching A record lists
    ("127.0.1.30", "multi.test", ["127.0.0.4"], True),              # [2;4;10..12]
    ("127.0.1.31", "multi.test", ["127.0.0.3"], False),
    ("127.0.1.32", "multi.test", ["127.0.0.12"], True),
    ("127.0.1.33", "multi.test", ["127.0.0.13"], False),
    ("127.0.1.34", "exact.test", ["127.0.0.5"], True),              # =127.0.0.5
    ("127.0.1.35", "exact.test", ["127.0.0.6"], False),
    ("127.0.1.40", "bl.test", ["127.0.0.20"], True),                # no filter
    ("127.0.1.41", "bl.test", ["127.1.2.3"], True),
]


def test_return_code_filters(start_mailkeep, capture, dns_server):
    zones = {z: dns_server.zone(z) for z in ("zen.test", "multi.test", "exact.test", "bl.test")}
    for client, zone, answers, _ in FILTER_CASES:
        zones[zone].list(client, *answers)
    mk = start(start_mailkeep, capture, dns_server,
               smtp_zones="zen.test=127.0.0.[2..11], multi.test=127.0.0.[2;4;10..12], exact.test=127.0.0.5, bl.test")
    failures = []
    for client, zone, answers, listed in FILTER_CASES:
        g = smtp_connect(mk.host, mk.port, client)
        want = 554 if listed else 220
        if g.reply is None or g.reply.code != want or (listed and f"blocked using {zone}" not in g.reply.text):
            failures.append(f"{client} {zone} answers {answers}: expected {want}, got {g}")
        if dns_server.count_ip(client, zone) != 1:
            failures.append(f"{client}: {dns_server.count_ip(client, zone)} queries for {query_name(client, zone)}")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- error answers

@pytest.mark.parametrize("answer", ["127.255.255.254", "127.255.255.252", "192.0.2.2", "10.0.0.2"])
def test_error_answer_on_error_accept(start_mailkeep, capture, dns_server, answer):
    """127.255.255.0/24 and answers outside 127/8 are errors, never listings."""
    dns_server.zone("zen.test").list("127.0.0.2", answer)
    dns_server.zone("bl.test")
    mk = start(start_mailkeep, capture, dns_server, on_error="accept")
    g = smtp_connect(mk.host, mk.port, "127.0.0.2")
    assert_banner(g)
    assert g.seconds < 1.5, f"an error answer is final, no need to wait: {g}"
    with RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.2", 0)) as c:
        assert c.banner.code == 220
        c.ehlo()
        assert c.send_message("a@client.test", ["user@example.org"], MSG).code == 250
    assert len(capture.wait_for(1)) == 1
    assert "accepting (on_error = accept)" in wait_log(mk, "on_error = accept")


@pytest.mark.parametrize("answer", ["127.255.255.254", "192.0.2.2"])
def test_error_answer_on_error_tempfail(start_mailkeep, capture, dns_server, answer):
    dns_server.zone("zen.test").list("127.0.0.2", answer)
    dns_server.zone("bl.test")
    mk = start(start_mailkeep, capture, dns_server, on_error="tempfail")
    g = smtp_connect(mk.host, mk.port, "127.0.0.2")
    assert_tempfail(g)
    assert g.seconds < 1.5, str(g)
    log = wait_log(mk, "reject: CONNECT from [127.0.0.2]")
    assert "reject: CONNECT from [127.0.0.2]" in log and "dnsbl error zen.test" in log, log[-2000:]
    # a clean client is not affected by on_error = tempfail
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.3"))


def test_error_answer_mixed_with_filter_match_is_error(start_mailkeep, capture, dns_server):
    """An answer set containing 127.255.255.254 is an error even when another A would match."""
    dns_server.zone("zen.test").list("127.0.0.2", "127.255.255.254", "127.0.0.2")
    dns_server.zone("bl.test")
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="zen.test=127.0.0.[2..11]", on_error="tempfail")
    g = smtp_connect(mk.host, mk.port, "127.0.0.2")
    assert g.reply is not None and g.reply.code != 554, f"an error answer counted as a listing: {g}"


@pytest.mark.parametrize("on_error", ["accept", "tempfail"])
def test_servfail(start_mailkeep, capture, dns_server, on_error):
    dns_server.zone("zen.test", mode="servfail")
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="zen.test", on_error=on_error)
    g = smtp_connect(mk.host, mk.port, "127.0.0.2")
    (assert_banner if on_error == "accept" else assert_tempfail)(g)
    assert g.seconds < 1.5, str(g)


# --------------------------------------------------------------------------- DNS server that never answers

@pytest.mark.parametrize("on_error", ["accept", "tempfail"])
def test_blackholed_zone_times_out(start_mailkeep, capture, dns_server, on_error):
    timeout_ms = 1000
    dns_server.zone("hole.test", mode="blackhole")
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="hole.test", on_error=on_error,
               timeout_ms=timeout_ms)
    g = smtp_connect(mk.host, mk.port, "127.0.0.2", timeout=timeout_ms / 1000 + 2)
    assert g.reply is not None, f"no greeting within timeout_ms + 2 s: {g}"
    assert g.seconds <= timeout_ms / 1000 + 2, str(g)
    assert g.seconds >= timeout_ms / 1000 * 0.8, f"did not wait for the DNS answer at all? {g}"
    assert dns_server.count("2.0.0.127.hole.test") >= 1
    if on_error == "accept":
        assert_banner(g)
    else:
        assert_tempfail(g)


def test_blackholed_zone_does_not_block_other_sessions(start_mailkeep, capture, dns_server):
    """While one client waits for a silent DNS server, an exempt client is served at once."""
    dns_server.zone("hole.test", mode="blackhole")
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="hole.test", timeout_ms=3000)
    c = RawSMTP(mk.host, mk.port, timeout=10, source_address=("127.0.0.2", 0), read_banner=False)
    try:
        dns_server.wait_count("2.0.0.127.hole.test", 1, timeout=3)
        g = smtp_connect(mk.host, mk.port, "127.0.0.1")
        assert_banner(g)
        assert g.seconds < 1.0, str(g)
        t0 = time.monotonic()
        r = c.reply(timeout=5.5)
        assert r.code == 220 and time.monotonic() - t0 < 5.0
    finally:
        c.close()


# --------------------------------------------------------------------------- cache

def test_listing_is_cached_for_its_ttl(start_mailkeep, capture, dns_server):
    zen = dns_server.zone("zen.test")
    zen.list("127.0.0.2", ttl=300)
    dns_server.zone("bl.test")
    mk = start(start_mailkeep, capture, dns_server)
    assert_listed(smtp_connect(mk.host, mk.port, "127.0.0.2"), "127.0.0.2", "zen.test")
    assert dns_server.count("2.0.0.127.zen.test") == 1
    zen.unlist("127.0.0.2")                     # the cache, not the server, decides now
    for _ in range(2):
        assert_listed(smtp_connect(mk.host, mk.port, "127.0.0.2"), "127.0.0.2", "zen.test")
    time.sleep(0.2)
    assert dns_server.count("2.0.0.127.zen.test") == 1, dns_server.log


def test_listing_cache_expires_with_ttl(start_mailkeep, capture, dns_server):
    zen = dns_server.zone("zen.test")
    zen.list("127.0.0.2", ttl=1)
    dns_server.zone("bl.test")
    mk = start(start_mailkeep, capture, dns_server)
    assert_listed(smtp_connect(mk.host, mk.port, "127.0.0.2"), "127.0.0.2", "zen.test")
    zen.unlist("127.0.0.2")
    time.sleep(2.2)
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.2"))
    assert dns_server.count("2.0.0.127.zen.test") == 2


def test_nxdomain_is_cached(start_mailkeep, capture, dns_server):
    zen = dns_server.zone("zen.test", soa_ttl=300, soa_minimum=300)
    dns_server.zone("bl.test", soa_ttl=300, soa_minimum=300)
    mk = start(start_mailkeep, capture, dns_server)
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.3"))
    zen.list("127.0.0.3")                         # listed now, but the NXDOMAIN is cached
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.3"))
    time.sleep(0.2)
    assert dns_server.count("3.0.0.127.zen.test") == 1, dns_server.log
    assert dns_server.count("3.0.0.127.bl.test") == 1, dns_server.log


@pytest.mark.parametrize("soa_ttl,soa_minimum", [(300, 1), (1, 300)])
def test_nxdomain_cached_for_min_of_soa_ttl_and_minimum(start_mailkeep, capture, dns_server, soa_ttl, soa_minimum):
    zen = dns_server.zone("zen.test", soa_ttl=soa_ttl, soa_minimum=soa_minimum)
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="zen.test")
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.3"))
    zen.list("127.0.0.3")
    time.sleep(2.2)                               # min(...) = 1 s has passed
    assert_listed(smtp_connect(mk.host, mk.port, "127.0.0.3"), "127.0.0.3", "zen.test")
    assert dns_server.count("3.0.0.127.zen.test") == 2


def test_nxdomain_without_soa_is_not_cached(start_mailkeep, capture, dns_server):
    dns_server.zone("zen.test", soa=False)
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="zen.test")
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.3"))
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.3"))
    assert dns_server.count("3.0.0.127.zen.test") == 2


def test_cache_is_per_client_address(start_mailkeep, capture, dns_server):
    dns_server.zone("zen.test").list("127.0.0.2")
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="zen.test")
    assert_listed(smtp_connect(mk.host, mk.port, "127.0.0.2"), "127.0.0.2", "zen.test")
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.3"))
    assert dns_server.count("2.0.0.127.zen.test") == 1
    assert dns_server.count("3.0.0.127.zen.test") == 1


# --------------------------------------------------------------------------- zones in parallel

@pytest.mark.parametrize("zones", ["hole.test, zen.test=127.0.0.[2..11]", "zen.test=127.0.0.[2..11], hole.test"])
def test_listing_decides_without_waiting_for_a_silent_zone(start_mailkeep, capture, dns_server, zones):
    dns_server.zone("hole.test", mode="blackhole")
    dns_server.zone("zen.test").list("127.0.0.2")
    mk = start(start_mailkeep, capture, dns_server, smtp_zones=zones, timeout_ms=8000)
    g = smtp_connect(mk.host, mk.port, "127.0.0.2", timeout=12)
    assert_listed(g, "127.0.0.2", "zen.test")
    assert g.seconds < 2.0, f"the listing should decide without the 8 s timeout: {g}"
    # It was asked too (in parallel): the query left with the other one, but the server may
    # log it a moment after the listing decided, so wait for it briefly.
    assert dns_server.wait_count("2.0.0.127.hole.test", 1, timeout=2.0) == 1


def test_zones_are_queried_in_parallel(start_mailkeep, capture, dns_server):
    for z in ("a.test", "b.test", "c.test"):
        dns_server.zone(z, delay=1.0)
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="a.test, b.test, c.test", timeout_ms=5000)
    g = smtp_connect(mk.host, mk.port, "127.0.0.3", timeout=10)
    assert_banner(g)
    assert 0.9 <= g.seconds < 2.5, f"3 zones answering after 1 s each, sequential would take 3 s: {g}"
    stamps = [t for t, name, _, _ in dns_server.log if name.startswith("3.0.0.127.")]
    assert len(stamps) == 3, dns_server.log
    assert max(stamps) - min(stamps) < 0.5, f"queries not sent together: {dns_server.log}"


def test_error_zone_and_listing_zone(start_mailkeep, capture, dns_server):
    """A listing in one zone wins over an error answer in another, even with on_error = accept."""
    dns_server.zone("err.test").list("127.0.0.2", "127.255.255.254")
    dns_server.zone("zen.test").list("127.0.0.2")
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="err.test, zen.test", on_error="accept")
    assert_listed(smtp_connect(mk.host, mk.port, "127.0.0.2"), "127.0.0.2", "zen.test")


# --------------------------------------------------------------------------- exempt clients

def test_default_allow_and_relay_from_are_not_checked(start_mailkeep, capture, dns_server):
    zen = dns_server.zone("zen.test")
    for ip in ("127.0.0.1", "127.0.0.9", "127.0.0.2"):
        zen.list(ip)
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="zen.test")
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.1"))       # default allow 127.0.0.1/32
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.9"))       # [relay] relay_from
    assert dns_server.total() == 0, f"exempt clients were looked up: {dns_server.log}"
    assert_listed(smtp_connect(mk.host, mk.port, "127.0.0.2"), "127.0.0.2", "zen.test")
    assert dns_server.total() == 1


def test_custom_allow_and_backup_relay_from_are_not_checked(start_mailkeep, capture, dns_server):
    zen = dns_server.zone("zen.test")
    for ip in ("127.0.0.1", "127.0.0.50", "127.0.0.51", "127.0.0.60"):
        zen.list(ip)
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="zen.test", allow="127.0.0.50/31",
               backup={"relay_from": "127.0.0.60/32"})
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.50"))
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.51"))
    assert_banner(smtp_connect(mk.host, mk.port, "127.0.0.60"))
    for ip in ("127.0.0.50", "127.0.0.51", "127.0.0.60"):
        assert dns_server.count_ip(ip, "zen.test") == 0, f"exempt {ip} was looked up: {dns_server.log}"
    # 127.0.0.1 is no longer in allow: checked like anyone (the harness' port probe from
    # 127.0.0.1 may have queried it already, so the answer may come from the cache)
    assert_listed(smtp_connect(mk.host, mk.port, "127.0.0.1"), "127.0.0.1", "zen.test")
    assert dns_server.count_ip("127.0.0.1", "zen.test") == 1


# --------------------------------------------------------------------------- IPv6

def test_ipv6_client_listed_by_nibble_name(start_mailkeep, capture, dns_server):
    from harness import free_port
    name = dns_server.zone("zen.test").list("::1", "127.0.0.3")
    assert name == "1." + "0." * 31 + "zen.test"
    port = free_port()
    mk = start(start_mailkeep, capture, dns_server, smtp_zones="zen.test=127.0.0.[2..11]",
               allow="127.0.0.1/32", smtp={"listen": f"[::1]:{port}"})
    assert mk.host == "::1"
    g = smtp_connect("::1", mk.port, "::1")
    assert_listed(g, "::1", "zen.test")
    # (the harness' port probe came from ::1 too: one query in all, the rest from the cache)
    assert dns_server.count(name) == 1, dns_server.log
    assert "dnsbl zen.test=127.0.0.3" in wait_log(mk, "dnsbl zen.test=127.0.0.3")
