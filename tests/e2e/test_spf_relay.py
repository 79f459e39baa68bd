"""`spf:NAME` entries in [relay] relay_from and [backup] relay_from (issue 14, the SPF part).

mailkeep resolves NAME's SPF record with c-ares against the dnslib server of dns_support.py
([dnsbl] resolver = 127.0.0.1:PORT, no DNSBL zones): the ip4:/ip6: mechanisms of the record and
of everything it include:s or redirect=s to become relay networks; at most 10 DNS-querying terms
(RFC 7208 4.6.4), a loop is an error, and any error fails the whole entry. The set is refreshed
at the smallest TTL seen (1 s .. 3600 s); a failed refresh keeps the last good set. While an
entry of [relay] relay_from has never resolved, a RCPT that would be denied as relaying gets
451 4.4.3 instead of 550 5.7.1.

Clients connect from chosen 127.0.0.x source addresses (each a fresh connection: a client is
classified when it connects). 127.0.0.9/32 stays a plain CIDR relay_from entry beside the spf:
ones. Addresses used: 127.0.0.16-26 (the example.net record), .30-.31 (loops), .33-.35 (changed
record), .36-.39 (failed refresh), .40-.42 and 127.0.2.x / 127.0.3.x (lookup limit), .44-.48
(backup provider), .50 (unresolved at start), .52-.53 and 127.0.4.x (record forms), .60-.63
(diamond).

The first tests check the TXT serving of dns_support.py itself (no mailkeep binary needed), so
that a failure further down is mailkeep's, not the helper's.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time

import pytest
from dnslib import QTYPE, RCODE

from backup_support import DOMAIN, backup_gateway, make_message, upstreams  # noqa: F401  (fixtures)
from dns_support import DnsServer, dns_server, dnsbl_overrides  # noqa: F401  (dns_server is a fixture)
from harness import (RawSMTP, Reply, default_config, free_port, ipv6_loopback_available, render_ini, run_mailkeep,
                     wait_port)

OUTSIDE = "someone@outside.test"        # neither a relay domain nor a backup domain: needs relay rights
RELAY_DOMAIN_RCPT = "user@example.org"  # a [relay] domain of default_config: anyone may send to it
TIMEOUT_MS = 500                        # [dnsbl] timeout_ms: per query (c-ares retries on top)
RESOLVE_WAIT = 15.0                     # first resolution / a refresh at TTL 1 (with c-ares retries)
# How long a failed entry may take to be tried again. The spec fixes the refresh of a resolved entry
# (the smallest TTL seen) but not the retry after a failure: a minute covers any sensible choice.
RETRY_WAIT = 65.0

ALLOWED = "250"
DENIED = "550 5.7.1"
DEFERRED = "451 4.4.3"


# --------------------------------------------------------------------------- the helper's TXT serving

@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dns_support_serves_txt_records(dns_server, tcp):
    z = dns_server.zone("example.net")
    z.txt("_spf.example.net", "google-site-verification=abc123",
          ("v=spf1 ip4:127.0.0.16/30 ", "include:_v6.example.net -all"), ttl=77)
    z.txt("_v6.example.net", "v=spf1 ip6:::1/128 -all", ttl=1)
    dns_server.zone("zen.test").list("127.0.0.2")       # the DNSBL side is unchanged

    r = dns_server.query("_spf.example.net", "TXT", tcp=tcp)
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1 and not r.header.tc
    assert [rr.rtype for rr in r.rr] == [QTYPE.TXT, QTYPE.TXT] and {rr.ttl for rr in r.rr} == {77}
    assert [rr.rdata.data for rr in r.rr] == [[b"google-site-verification=abc123"],
                                              [b"v=spf1 ip4:127.0.0.16/30 ", b"include:_v6.example.net -all"]]
    assert z.get_txt("_spf.example.net")[1] == "v=spf1 ip4:127.0.0.16/30 include:_v6.example.net -all"
    r = dns_server.query("_v6.example.net", "TXT", tcp=tcp)
    assert [(rr.ttl, rr.rdata.data) for rr in r.rr] == [(1, [b"v=spf1 ip6:::1/128 -all"])]

    # the TTL changes while the server runs; so does the record
    z.set_ttl("_v6.example.net", 3)
    assert [rr.ttl for rr in dns_server.query("_v6.example.net", "TXT", tcp=tcp).rr] == [3]
    z.txt("_v6.example.net", "v=spf1 ip6:2001:db8::/32 -all", ttl=5)
    r = dns_server.query("_v6.example.net", "TXT", tcp=tcp)
    assert [(rr.ttl, rr.rdata.data) for rr in r.rr] == [(5, [b"v=spf1 ip6:2001:db8::/32 -all"])]

    # a TXT-only name asked for A or AAAA: NODATA with an SOA; ANY: the TXT records
    for qtype in ("A", "AAAA", "MX"):
        r = dns_server.query("_v6.example.net", qtype, tcp=tcp)
        assert r.header.rcode == RCODE.NOERROR and not r.rr, (qtype, r)
        assert [a.rtype for a in r.auth] == [QTYPE.SOA], (qtype, r)
    assert [rr.rtype for rr in dns_server.query("_spf.example.net", "ANY", tcp=tcp).rr] == [QTYPE.TXT] * 2
    # unknown name: NXDOMAIN; a removed record: NXDOMAIN
    assert dns_server.query("_nope.example.net", "TXT", tcp=tcp).header.rcode == RCODE.NXDOMAIN
    z.txt("_v6.example.net")
    assert dns_server.query("_v6.example.net", "TXT", tcp=tcp).header.rcode == RCODE.NXDOMAIN
    # an A-record (DNSBL) name asked for TXT: NODATA, as before; its A answer unchanged
    r = dns_server.query("2.0.0.127.zen.test", "TXT", tcp=tcp)
    assert r.header.rcode == RCODE.NOERROR and not r.rr and len(r.auth) == 1
    assert [str(rr.rdata) for rr in dns_server.query("2.0.0.127.zen.test", tcp=tcp).rr] == ["127.0.0.2"]
    # a name with both types: each type gets its own records, ANY both
    z.txt("both.example.net", "v=spf1 -all")
    z.records["both.example.net"] = (["127.0.0.42"], 60)
    assert [rr.rtype for rr in dns_server.query("both.example.net", "TXT", tcp=tcp).rr] == [QTYPE.TXT]
    assert [rr.rtype for rr in dns_server.query("both.example.net", "A", tcp=tcp).rr] == [QTYPE.A]
    assert sorted(rr.rtype for rr in dns_server.query("both.example.net", "ANY", tcp=tcp).rr) == [QTYPE.A, QTYPE.TXT]
    # counting by type and protocol
    proto = "tcp" if tcp else "udp"
    assert dns_server.count("_spf.example.net", "TXT") == 1
    assert dns_server.count("_spf.example.net", "ANY", proto) == 1
    assert dns_server.count("_spf.example.net") == 2
    assert dns_server.count("_v6.example.net", "TXT", proto) == 4      # + A, AAAA, MX
    assert dns_server.count("_v6.example.net") == 7
    assert dns_server.count("_v6.example.net", protocol="udp" if tcp else "tcp") == 0
    # the zone's modes apply to TXT names too
    z.mode = "servfail"
    assert dns_server.query("_spf.example.net", "TXT", tcp=tcp).header.rcode == RCODE.SERVFAIL
    z.mode = "answer"
    with pytest.raises(ValueError):
        z.txt("_spf.other.test", "v=spf1 -all")        # not in the zone


def test_dns_support_truncates_long_udp_answers(dns_server):
    z = dns_server.zone("big.test")
    record = "v=spf1 " + " ".join(f"ip4:127.0.4.{i}" for i in range(1, 41)) + " -all"
    assert len(record) > 600
    name = z.txt("_spf.big.test", record, ttl=60)
    assert len(z.texts[name][0][0]) == 3 and z.get_txt(name) == [record]   # cut into 255-octet strings
    r = dns_server.query(name, "TXT")                   # UDP without EDNS: 512 octets at most
    assert r.header.tc == 1 and not r.rr and r.header.rcode == RCODE.NOERROR
    assert str(r.q.qname).rstrip(".") == name           # the question is kept
    assert dns_server.truncated[name] == 1
    for kw in ({"tcp": True}, {"edns": 1232}):
        r = dns_server.query(name, "TXT", **kw)
        assert not r.header.tc and b"".join(r.rr[0].rdata.data).decode() == record, kw
    assert dns_server.truncated[name] == 1
    assert dns_server.count(name, "TXT", "udp") == 2 and dns_server.count(name, "TXT", "tcp") == 1
    # the short answers of the DNSBL tests are never truncated
    dns_server.zone("zen.test").list("127.0.0.2")
    assert not dns_server.query("2.0.0.127.zen.test").header.tc


def test_dns_support_stopped_server_answers_nothing():
    srv = DnsServer().start()
    srv.zone("example.net").txt("_spf.example.net", "v=spf1 -all")
    assert srv.query("_spf.example.net", "TXT").rr
    srv.stop()
    with pytest.raises((socket.timeout, TimeoutError, ConnectionError, OSError)):
        srv.query("_spf.example.net", "TXT", timeout=0.5)
    srv.stop()                                          # twice (a test, then the fixture): harmless


# --------------------------------------------------------------------------- mailkeep side: helpers

def spf_dnsbl(dns: DnsServer) -> dict:
    """[dnsbl]: no zones, only the resolver (and its timeout) the spf: entries use."""
    return dnsbl_overrides(dns, timeout_ms=TIMEOUT_MS)


def start_spf(start_mailkeep, capture, dns: DnsServer, relay_from: str, ipv6_port: int | None = None):
    relay = {"relay_from": relay_from}
    smtp = {}
    if ipv6_port is not None:
        port = free_port()
        smtp["listen"] = f"127.0.0.1:{port}, [::1]:{ipv6_port}"
    return start_mailkeep(capture.address, relay=relay, dnsbl=spf_dnsbl(dns), **({"smtp": smtp} if smtp else {}))


def rcpt_from(host: str, port: int, source: str, rcpt: str = OUTSIDE,
              sender: str = "sender@client.test") -> Reply:
    """A fresh connection from `source`: EHLO, MAIL, one RCPT; returns the RCPT reply."""
    with RawSMTP(host, port, timeout=20, source_address=(source, 0)) as c:
        assert c.banner.code == 220, f"from {source}: banner {c.banner}"
        assert c.ehlo().code == 250
        r = c.cmd(f"MAIL FROM:<{sender}>")
        assert r.code == 250, f"from {source}: MAIL {r}"
        reply = c.cmd(f"RCPT TO:<{rcpt}>")
        c.cmd("QUIT")
        return reply


def verdict(r: Reply) -> str:
    return "250" if r.code == 250 else f"{r.code} {r.enhanced}"


def check_relay(mk, expected: dict[str, str], rcpt: str = OUTSIDE, host: str | None = None,
                port: int | None = None) -> None:
    """Every source in `expected` gets the expected RCPT verdict ("250", "550 5.7.1", "451 4.4.3")."""
    wrong = []
    for source, want in expected.items():
        r = rcpt_from(host or mk.host, port or mk.port, source, rcpt)
        if verdict(r) != want:
            wrong.append(f"from {source}: RCPT TO:<{rcpt}> expected {want}, got {r}")
    assert not wrong, "\n".join(wrong) + "\n--- log tail ---\n" + "\n".join(mk.log().splitlines()[-30:])


def resolved_re(name: str) -> re.Pattern:
    return re.compile(rf"spf:{re.escape(name)}: (\d+) networks? \(([^)\n]*)\)", re.M)


def changed_re(name: str) -> re.Pattern:
    return re.compile(rf"spf:{re.escape(name)}: networks changed: ([^\n]*)$", re.M)


def failed_re(name: str, first: bool | None = None) -> re.Pattern:
    """first=True: `...; starting without these networks`; False: `...; keeping N networks`."""
    tail = {True: r"(starting without these networks)()", False: r"(keeping (\d+) networks?)",
            None: r"(starting without these networks|keeping (\d+) networks?)"}[first]
    return re.compile(rf"spf:{re.escape(name)}: resolution failed: ([^\n]*); {tail}", re.M)


def wait_match(mk, pattern: re.Pattern, timeout: float = RESOLVE_WAIT, after: int = 0) -> re.Match:
    """Waits for a log line matching `pattern` (searching from offset `after`); fails with the log."""
    deadline = time.monotonic() + timeout
    while True:
        log = mk.log()
        m = pattern.search(log, after)
        if m:
            return m
        if mk.proc is not None and mk.proc.poll() is not None:
            pytest.fail(f"mailkeep exited ({mk.proc.returncode}) while waiting for {pattern.pattern!r}\n{log}")
        if time.monotonic() > deadline:
            tail = "\n".join(log.splitlines()[-40:])
            pytest.fail(f"no log line matching {pattern.pattern!r} within {timeout:.0f}s\n--- log tail ---\n{tail}")
        time.sleep(0.05)


def networks(text: str) -> set:
    """The networks named in a log line's list, normalised (a bare address is /32 or /128)."""
    out = set()
    for tok in re.findall(r"[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*(?:/\d{1,3})?", text):
        try:
            out.add(ipaddress.ip_network(tok, strict=False))
        except ValueError:
            pass
    return out


def changes(text: str) -> tuple[set, set]:
    """(added, removed) networks of a `networks changed: +NET -NET` line."""
    added, removed = set(), set()
    for sign, tok in re.findall(r"(?:^|[\s,(])([+-])\s*([0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*(?:/\d{1,3})?)", text):
        (added if sign == "+" else removed).add(ipaddress.ip_network(tok, strict=False))
    return added, removed


def nets(*items: str) -> set:
    return {ipaddress.ip_network(i) for i in items}


# --------------------------------------------------------------------------- 1. networks from includes

def example_net_records(dns: DnsServer, ttl: int = 300):
    z = dns.zone("example.net")
    z.txt("_spf.example.net", "v=spf1 include:_v4.example.net include:_v6.example.net ~all", ttl=ttl)
    z.txt("_v4.example.net", "v=spf1 ip4:127.0.0.16/30 ip4:127.0.0.20 -all", ttl=ttl)
    z.txt("_v6.example.net", "v=spf1 ip6:::1/128 ip4:127.0.0.24/31 -all", ttl=ttl)
    return z


EXAMPLE_NET_NETWORKS = nets("127.0.0.16/30", "127.0.0.20/32", "::1/128", "127.0.0.24/31")


def test_spf_include_networks_may_relay(start_mailkeep, capture, dns_server):
    example_net_records(dns_server)
    mk = start_spf(start_mailkeep, capture, dns_server, "127.0.0.9/32, spf:_spf.example.net")
    m = wait_match(mk, resolved_re("_spf.example.net"))
    assert int(m.group(1)) == 4, m.group(0)
    assert networks(m.group(2)) == EXAMPLE_NET_NETWORKS, m.group(0)
    names = ("_spf.example.net", "_v4.example.net", "_v6.example.net")
    asked = {name: dns_server.count(name, "TXT") for name in names}
    assert all(asked.values()), (asked, dns_server.log)

    check_relay(mk, {
        "127.0.0.16": ALLOWED, "127.0.0.17": ALLOWED, "127.0.0.19": ALLOWED,   # ip4:127.0.0.16/30
        "127.0.0.20": ALLOWED,                                                # ip4:127.0.0.20 (no /len)
        "127.0.0.24": ALLOWED, "127.0.0.25": ALLOWED,                         # the ip6 record's ip4
        "127.0.0.9": ALLOWED,                                                 # the CIDR entry beside it
        "127.0.0.15": DENIED, "127.0.0.21": DENIED, "127.0.0.23": DENIED, "127.0.0.26": DENIED,
        "127.0.0.1": DENIED,
    })
    # a denied client still reaches the relay domains
    check_relay(mk, {"127.0.0.21": ALLOWED}, rcpt=RELAY_DOMAIN_RCPT)
    # and an allowed one really relays: the message reaches the smarthost
    with RawSMTP(mk.host, mk.port, source_address=("127.0.0.17", 0)) as c:
        c.ehlo()
        r = c.send_message("sender@client.test", [OUTSIDE], b"Subject: spf relay\r\n\r\nhello\r\n")
        assert r.code == 250, str(r)
    [msg] = capture.wait_for(1)
    assert msg.rcpt_tos == [OUTSIDE]

    log = mk.log()
    assert len(resolved_re("_spf.example.net").findall(log)) == 1, log    # the first-time line, once
    assert not failed_re("_spf.example.net").search(log), log
    # TTL 300: no refresh during the test (a c-ares retransmission while resolving is no refresh)
    assert {name: dns_server.count(name, "TXT") for name in names} == asked, dns_server.log


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback (::1) on this machine")
@pytest.mark.parametrize("mechanism,want", [
    ("ip6:::1/128", ALLOWED),
    ("ip6:::1", ALLOWED),                   # no /len: /128
    ("ip6:::/127", ALLOWED),                # :: and ::1
    ("ip6:2001:db8::/32", DENIED),
    ("ip4:127.0.0.1", DENIED),              # an IPv4 network never matches an IPv6 client
])
def test_spf_ip6_network(start_mailkeep, capture, dns_server, mechanism, want):
    dns_server.zone("example.net").txt("_spf6.example.net", f"v=spf1 {mechanism} -all")
    port6 = free_port()
    mk = start_spf(start_mailkeep, capture, dns_server, "127.0.0.9/32, spf:_spf6.example.net", ipv6_port=port6)
    wait_port("::1", port6, timeout=10)                 # the harness waited for the first listener only
    m = wait_match(mk, resolved_re("_spf6.example.net"))
    assert int(m.group(1)) == 1, m.group(0)
    check_relay(mk, {"::1": want}, host="::1", port=port6)


def test_spf_record_forms(start_mailkeep, capture, dns_server):
    """The name also has a non-SPF TXT record; the SPF record is split into two character-strings
    (joined without a space, RFC 7208 3.3); the included record is longer than 512 octets, so its
    UDP answer is truncated and c-ares must ask again over TCP."""
    z = dns_server.zone("forms.test")
    z.txt("_spf.forms.test", "google-site-verification=Zm9ybXMudGVzdA", "MS=ms12345678",
          ("v=spf1 ip4:127.0.0.52 ip4:127.0.0", ".53 include:_big.forms.test -all"))
    big = [f"127.0.4.{i}" for i in range(1, 41)]
    z.txt("_big.forms.test", "v=spf1 " + " ".join(f"ip4:{ip}" for ip in big) + " ~all")
    mk = start_spf(start_mailkeep, capture, dns_server, "127.0.0.9/32, spf:_spf.forms.test")
    m = wait_match(mk, resolved_re("_spf.forms.test"))
    assert int(m.group(1)) == 42, m.group(0)
    assert networks(m.group(2)) == nets("127.0.0.52/32", "127.0.0.53/32", *big), m.group(0)
    assert dns_server.truncated["_big.forms.test"] >= 1, dns_server.log
    assert dns_server.count("_big.forms.test", "TXT", "tcp") >= 1, dns_server.log
    check_relay(mk, {"127.0.0.52": ALLOWED, "127.0.0.53": ALLOWED, "127.0.4.1": ALLOWED, "127.0.4.40": ALLOWED,
                     "127.0.4.41": DENIED, "127.0.0.54": DENIED})


def test_spf_diamond_is_not_a_loop(start_mailkeep, capture, dns_server):
    """A loop is a name included twice on one path; two paths meeting in one record are not."""
    z = dns_server.zone("diamond.test")
    z.txt("top.diamond.test", "v=spf1 include:left.diamond.test include:right.diamond.test -all")
    z.txt("left.diamond.test", "v=spf1 ip4:127.0.0.61 include:bottom.diamond.test -all")
    z.txt("right.diamond.test", "v=spf1 ip4:127.0.0.62 include:bottom.diamond.test -all")
    z.txt("bottom.diamond.test", "v=spf1 ip4:127.0.0.60 -all")
    mk = start_spf(start_mailkeep, capture, dns_server, "127.0.0.9/32, spf:top.diamond.test")
    m = wait_match(mk, resolved_re("top.diamond.test"))
    assert networks(m.group(2)) == nets("127.0.0.60/32", "127.0.0.61/32", "127.0.0.62/32"), m.group(0)
    check_relay(mk, {"127.0.0.60": ALLOWED, "127.0.0.61": ALLOWED, "127.0.0.62": ALLOWED, "127.0.0.63": DENIED})


# --------------------------------------------------------------------------- 2. loops

LOOPS = {
    "self": {"a.loop.test": "v=spf1 ip4:127.0.0.30 include:a.loop.test -all"},
    "pair": {"a.loop.test": "v=spf1 ip4:127.0.0.30 include:b.loop.test -all",
             "b.loop.test": "v=spf1 ip4:127.0.0.31 include:a.loop.test -all"},
    "redirect": {"a.loop.test": "v=spf1 ip4:127.0.0.30 include:b.loop.test -all",
                 "b.loop.test": "v=spf1 ip4:127.0.0.31 redirect=a.loop.test"},
}


@pytest.mark.parametrize("shape", list(LOOPS))
def test_spf_loop_fails_and_defers_relaying(start_mailkeep, capture, dns_server, shape):
    z = dns_server.zone("loop.test")
    for name, record in LOOPS[shape].items():
        z.txt(name, record)
    mk = start_spf(start_mailkeep, capture, dns_server, "127.0.0.9/32, spf:a.loop.test")
    m = wait_match(mk, failed_re("a.loop.test", first=True))
    assert re.search(r"loop", m.group(1), re.I), f"the reason does not name the loop: {m.group(0)}"
    assert not resolved_re("a.loop.test").search(mk.log()), mk.log()

    # never resolved: what would be denied as relaying is deferred -- also from the loop's own networks
    check_relay(mk, {"127.0.0.30": DEFERRED, "127.0.0.31": DEFERRED, "127.0.0.1": DEFERRED,
                     "127.0.0.9": ALLOWED})
    # the server runs: relay domains are accepted and delivered
    with RawSMTP(mk.host, mk.port, source_address=("127.0.0.30", 0)) as c:
        c.ehlo()
        assert c.send_message("sender@client.test", [RELAY_DOMAIN_RCPT], b"Subject: loop\r\n\r\nhi\r\n").code == 250
    [msg] = capture.wait_for(1)
    assert msg.rcpt_tos == [RELAY_DOMAIN_RCPT]
    assert mk.proc.poll() is None


# --------------------------------------------------------------------------- 3. the 10-lookup limit

def build_limit_records(z, prefix: str, terms: int, variant: str, final_net: str) -> tuple[str, set]:
    """An SPF tree under `prefix` with exactly `terms` DNS-querying terms; `final_net` is in its last
    record. Returns (root name, the networks it must yield, or None where a/mx may add some)."""
    zone = z.name
    if variant == "wide":
        # one record including `terms` leaves: the limit counts the whole tree, not its depth
        root = f"{prefix}.{zone}"
        leaves = [f"{prefix}-leaf{i}.{zone}" for i in range(1, terms + 1)]
        z.txt(root, "v=spf1 " + " ".join(f"include:{leaf}" for leaf in leaves) + " -all")
        octet = final_net.rsplit(".", 1)[0]
        for i, leaf in enumerate(leaves, start=1):
            z.txt(leaf, f"v=spf1 ip4:{octet}.{i} -all")
        return root, {ipaddress.ip_network(f"{octet}.{i}/32") for i in range(1, terms + 1)}
    names = [f"{prefix}-{i}.{zone}" for i in range(terms + 1)]
    root = names[0]
    first_hop = 0
    if variant == "mixed":
        # a, mx, ptr and exists are DNS-querying terms too (4 of the `terms`); give `a` and the
        # exists target an A record so neither is a void lookup
        z.records[root] = (["127.0.0.42"], 300)
        z.records[f"{prefix}-exists.{zone}"] = (["127.0.0.2"], 300)
        others = f"a mx ptr exists:{prefix}-exists.{zone}"
        chain = names[:terms - 4 + 1]
        z.txt(chain[0], f"v=spf1 {others} include:{chain[1]} -all")
        first_hop = 1
        names = chain
    for i in range(first_hop, len(names) - 1):
        nxt = names[i + 1]
        last_hop = i == len(names) - 2
        if variant == "redirect" and last_hop:
            z.txt(names[i], f"v=spf1 redirect={nxt}")
        else:
            z.txt(names[i], f"v=spf1 include:{nxt} -all")
    z.txt(names[-1], f"v=spf1 ip4:{final_net} -all")
    expected = None if variant == "mixed" else {ipaddress.ip_network(f"{final_net}/32")}
    return root, expected


LIMIT_RE = re.compile(r"limit|too many|more than 10|lookups|\b1[01]\b", re.I)


@pytest.mark.parametrize("variant", ["include", "redirect", "mixed", "wide"])
def test_spf_lookup_limit(start_mailkeep, capture, dns_server, variant):
    """10 DNS-querying terms resolve; 11 fail (the entry as a whole), the other entry unaffected."""
    z = dns_server.zone("limit.test")
    ten_net, eleven_net = ("127.0.2.0", "127.0.3.0") if variant == "wide" else ("127.0.0.40", "127.0.0.41")
    ten, ten_expected = build_limit_records(z, "ten", 10, variant, ten_net)
    eleven, _ = build_limit_records(z, "eleven", 11, variant, eleven_net)
    mk = start_spf(start_mailkeep, capture, dns_server, f"127.0.0.9/32, spf:{ten}, spf:{eleven}")

    m = wait_match(mk, resolved_re(ten))
    if ten_expected is not None:
        assert networks(m.group(2)) == ten_expected, m.group(0)
    else:
        assert ipaddress.ip_network(f"{ten_net}/32") in networks(m.group(2)), m.group(0)
    f = wait_match(mk, failed_re(eleven, first=True))
    assert LIMIT_RE.search(f.group(1)), f"the reason does not name the lookup limit: {f.group(0)}"
    assert not resolved_re(eleven).search(mk.log())

    if variant == "wide":
        expected = {"127.0.2.1": ALLOWED, "127.0.2.10": ALLOWED, "127.0.3.1": DEFERRED, "127.0.3.11": DEFERRED}
    else:
        expected = {"127.0.0.40": ALLOWED, "127.0.0.41": DEFERRED}
    # the eleven-term entry never resolved: everyone outside the resolved networks is deferred
    expected.update({"127.0.0.1": DEFERRED, "127.0.0.9": ALLOWED})
    check_relay(mk, expected)
    assert mk.proc.poll() is None


# --------------------------------------------------------------------------- 4. a changed record

def test_spf_changed_record_is_picked_up(start_mailkeep, capture, dns_server):
    """The root has TTL 300, the record it includes TTL 1: the refresh follows the smallest TTL."""
    z = dns_server.zone("change.test")
    z.txt("_spf.change.test", "v=spf1 include:_nets.change.test -all", ttl=300)
    z.txt("_nets.change.test", "v=spf1 ip4:127.0.0.33 ip4:127.0.0.35 -all", ttl=1)
    mk = start_spf(start_mailkeep, capture, dns_server, "127.0.0.9/32, spf:_spf.change.test")
    m = wait_match(mk, resolved_re("_spf.change.test"))
    assert networks(m.group(2)) == nets("127.0.0.33/32", "127.0.0.35/32"), m.group(0)
    check_relay(mk, {"127.0.0.33": ALLOWED, "127.0.0.35": ALLOWED, "127.0.0.34": DENIED})

    z.txt("_nets.change.test", "v=spf1 ip4:127.0.0.34 ip4:127.0.0.35 -all", ttl=1)
    c = wait_match(mk, changed_re("_spf.change.test"))
    added, removed = changes(c.group(1))
    assert (added, removed) == (nets("127.0.0.34/32"), nets("127.0.0.33/32")), c.group(0)
    check_relay(mk, {"127.0.0.34": ALLOWED, "127.0.0.35": ALLOWED, "127.0.0.33": DENIED})

    # later refreshes find the same record: no second `changed` line, no second first-time line
    n = dns_server.count("_nets.change.test")          # (wait_count counts queries of every type)
    # (a refresh waits its TTL after it ends: the (n+1)th one's outcome is logged before the (n+2)th query)
    assert dns_server.wait_count("_nets.change.test", n + 2, timeout=RESOLVE_WAIT) >= n + 2, dns_server.log
    log = mk.log()
    assert len(changed_re("_spf.change.test").findall(log)) == 1, log
    assert len(resolved_re("_spf.change.test").findall(log)) == 1, log
    assert not failed_re("_spf.change.test").search(log), log


# Mostly waiting (backoff, TTLs, sync intervals): not repeated in the ASan pass, whose
# C++ paths the other tests of this file reach (conftest.py, release_only).
@pytest.mark.release_only
def test_spf_refresh_follows_the_ttl(start_mailkeep, capture, dns_server):
    """TTL 0 is refreshed once a second at most (the 1 s floor); raised to 300 while mailkeep runs,
    the refreshes stop. Rates need a time window, hence the sleeps."""
    z = dns_server.zone("ttl.test")
    z.txt("_spf.ttl.test", "v=spf1 ip4:127.0.0.33 -all", ttl=0)
    mk = start_spf(start_mailkeep, capture, dns_server, "127.0.0.9/32, spf:_spf.ttl.test")
    wait_match(mk, resolved_re("_spf.ttl.test"))
    n0 = dns_server.count("_spf.ttl.test", "TXT")
    time.sleep(4.0)
    n1 = dns_server.count("_spf.ttl.test", "TXT")
    assert 2 <= n1 - n0 <= 6, f"{n1 - n0} refreshes of a TTL-0 record in 4 s (1 s floor): {dns_server.log}"

    z.set_ttl("_spf.ttl.test", 300)
    n2 = dns_server.count("_spf.ttl.test")
    # the first query after the change sees TTL 300; after it, nothing for a while
    assert dns_server.wait_count("_spf.ttl.test", n2 + 1, timeout=RESOLVE_WAIT) >= n2 + 1
    n3 = dns_server.count("_spf.ttl.test")
    time.sleep(3.5)
    n4 = dns_server.count("_spf.ttl.test")
    assert n4 - n3 <= 1, f"{n4 - n3} refreshes in 3.5 s after the TTL went up to 300: {dns_server.log}"
    check_relay(mk, {"127.0.0.33": ALLOWED, "127.0.0.34": DENIED})


# --------------------------------------------------------------------------- 5. a failed refresh

KEEP_MODES = ["stopped", "servfail", "sub-servfail", "sub-blackhole"]


# Mostly waiting (backoff, TTLs, sync intervals): not repeated in the ASan pass, whose
# C++ paths the other tests of this file reach (conftest.py, release_only).
@pytest.mark.release_only
@pytest.mark.parametrize("mode", KEEP_MODES)
def test_spf_failed_refresh_keeps_last_good_set(start_mailkeep, capture, dns_server, mode):
    root = dns_server.zone("keep.test")
    sub = dns_server.zone("keepsub.test")
    root.txt("_spf.keep.test", "v=spf1 ip4:127.0.0.36 include:_sub.keepsub.test -all", ttl=1)
    sub.txt("_sub.keepsub.test", "v=spf1 ip4:127.0.0.37 -all", ttl=1)
    mk = start_spf(start_mailkeep, capture, dns_server, "127.0.0.9/32, spf:_spf.keep.test")
    m = wait_match(mk, resolved_re("_spf.keep.test"))
    assert networks(m.group(2)) == nets("127.0.0.36/32", "127.0.0.37/32"), m.group(0)
    expected = {"127.0.0.36": ALLOWED, "127.0.0.37": ALLOWED, "127.0.0.38": DENIED}
    check_relay(mk, expected)

    offset = len(mk.log())
    if mode == "stopped":
        dns_server.stop()
    elif mode == "servfail":
        root.mode = "servfail"
    elif mode == "sub-servfail":
        sub.mode = "servfail"                            # the root answers; the entry fails as a whole
    else:
        sub.mode = "blackhole"                           # c-ares times out ([dnsbl] timeout_ms, retries)
    f = wait_match(mk, failed_re("_spf.keep.test", first=False), timeout=RESOLVE_WAIT + 10, after=offset)
    assert int(f.group(3)) == 2 and f.group(1).strip(), f.group(0)
    # the last good set stays; it had resolved once, so outsiders get 550, not 451
    check_relay(mk, expected)
    log = mk.log()
    assert not changed_re("_spf.keep.test").search(log), log
    assert mk.proc.poll() is None
    if mode == "stopped":
        return

    # the refreshes go on: the zone answers again, with a changed record
    sub.txt("_sub.keepsub.test", "v=spf1 ip4:127.0.0.39 -all", ttl=1)
    root.mode = sub.mode = "answer"
    c = wait_match(mk, changed_re("_spf.keep.test"), timeout=RETRY_WAIT)
    assert changes(c.group(1)) == (nets("127.0.0.39/32"), nets("127.0.0.37/32")), c.group(0)
    check_relay(mk, {"127.0.0.36": ALLOWED, "127.0.0.39": ALLOWED, "127.0.0.37": DENIED})


# Mostly waiting (backoff, TTLs, sync intervals): not repeated in the ASan pass, whose
# C++ paths the other tests of this file reach (conftest.py, release_only).
@pytest.mark.release_only
@pytest.mark.parametrize("mode", ["servfail", "blackhole"])
def test_spf_unresolved_at_start_defers_then_resolves(start_mailkeep, capture, dns_server, mode):
    """DNS fails when mailkeep starts: it starts anyway, defers (451) what it would deny, and once the
    record resolves, relays from its networks and denies (550) everyone else."""
    z = dns_server.zone("late.test", mode=mode)
    z.txt("_spf.late.test", "v=spf1 ip4:127.0.0.50 -all", ttl=1)
    mk = start_spf(start_mailkeep, capture, dns_server, "127.0.0.9/32, spf:_spf.late.test")
    f = wait_match(mk, failed_re("_spf.late.test", first=True), timeout=RESOLVE_WAIT + 10)
    assert f.group(1).strip(), f.group(0)
    check_relay(mk, {"127.0.0.50": DEFERRED, "127.0.0.1": DEFERRED, "127.0.0.9": ALLOWED})
    check_relay(mk, {"127.0.0.1": ALLOWED}, rcpt=RELAY_DOMAIN_RCPT)

    z.mode = "answer"
    m = wait_match(mk, resolved_re("_spf.late.test"), timeout=RETRY_WAIT)
    assert networks(m.group(2)) == nets("127.0.0.50/32"), m.group(0)
    check_relay(mk, {"127.0.0.50": ALLOWED, "127.0.0.1": DENIED, "127.0.0.51": DENIED})


# --------------------------------------------------------------------------- 6. [backup] relay_from

def test_backup_relay_from_spf_is_outbound(backup_gateway, upstreams, dns_server):
    z = dns_server.zone("provider.test")
    z.txt("_spf.provider.test", "v=spf1 include:_netblocks.provider.test ~all")
    z.txt("_netblocks.provider.test", "v=spf1 ip4:127.0.0.44/30 -all")
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"],
                        backup={"relay_from": "spf:_spf.provider.test"}, dnsbl=spf_dnsbl(dns_server))
    m = wait_match(gw.mk, resolved_re("_spf.provider.test"))
    assert networks(m.group(2)) == nets("127.0.0.44/30"), m.group(0)

    # from a provider address: Outbound -- to the smarthost, with a Sent copy for alice
    sender = f"alice@{DOMAIN}"
    msg = make_message("spf-outbound", sender=sender, to="friend@remote.test")
    with RawSMTP(gw.host, gw.port, source_address=("127.0.0.45", 0)) as c:
        c.ehlo("relay.provider.test")
        r = c.send_message(sender, ["friend@remote.test"], msg)
        assert r.code == 250, str(r)
    [out] = upstreams.outbound.wait_for(1)
    assert out.mail_from == sender and out.rcpt_tos == ["friend@remote.test"]
    assert len(gw.files("alice", "Sent")) == 1, gw.log()
    assert upstreams.inbound.messages == [] and gw.files("alice") == []

    # from outside the provider's networks: no relaying, and mail to alice is inbound (archived, upstream)
    check_relay(gw.mk, {"127.0.0.48": DENIED, "127.0.0.43": DENIED, "127.0.0.47": ALLOWED})
    with RawSMTP(gw.host, gw.port, source_address=("127.0.0.48", 0)) as c:
        c.ehlo("mx.sender.test")
        r = c.send_message("someone@sender.test", [sender], make_message("spf-inbound"))
        assert r.code == 250, str(r)
    [inb] = upstreams.inbound.wait_for(1)
    assert inb.rcpt_tos == [sender]
    assert len(gw.files("alice")) == 1 and len(upstreams.outbound.messages) == 1


# --------------------------------------------------------------------------- configuration

def write_config(tmp_path, relay_from: str, section: str = "relay"):
    config = default_config(2525, "127.0.0.1:25")
    config.setdefault(section, {})["relay_from"] = relay_from
    if section == "backup":
        config["backup"].update({"domains": DOMAIN, "accounts": str(tmp_path / "accounts"),
                                 "archive": str(tmp_path / "archive")})
        (tmp_path / "accounts").write_text("alice\n")
    path = tmp_path / "mailkeep.ini"
    path.write_text(render_ini(config))
    return path


def line_of(path, needle: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


@pytest.mark.parametrize("section", ["relay", "backup"])
def test_check_config_accepts_spf_entries(mailkeep_bin, tmp_path, section):
    path = write_config(tmp_path, "127.0.0.0/30, spf:_spf.example.net, spf:_netblocks.google.com", section)
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 0, res.stderr
    assert "spf:_spf.example.net" in res.stdout and "spf:_netblocks.google.com" in res.stdout, res.stdout


@pytest.mark.parametrize("section", ["relay", "backup"])
@pytest.mark.parametrize("entry", ["spf:", "spf:exa mple.net", "spf:a..b.test", "spf:a/b.test",
                                   "spf:" + "x" * 64 + ".test"],          # a label longer than 63 octets
                         ids=["empty", "space", "empty-label", "slash", "long-label"])
def test_check_config_rejects_bad_spf_names(mailkeep_bin, tmp_path, section, entry):
    path = write_config(tmp_path, f"127.0.0.9/32, {entry}", section)
    lineno = line_of(path, f"relay_from = 127.0.0.9/32, {entry}")
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert f"{path}:{lineno}: [{section}] relay_from:" in res.stderr, res.stderr
