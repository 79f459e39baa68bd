"""The fake DNS server of dns_support.py itself (so a DNSBL test failure is mailkeep's, not the helper's)."""

from __future__ import annotations

import socket
import time

import pytest
from dnslib import QTYPE, RCODE

from dns_support import dns_server, query_name  # noqa: F401  (fixture)


def test_query_names():
    assert query_name("127.0.0.2", "zen.test") == "2.0.0.127.zen.test"
    assert query_name("192.0.2.99", "bl.test.") == "99.2.0.192.bl.test"
    assert query_name("2001:db8:1:2::ab", "v6.test") == \
        "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.v6.test"


@pytest.mark.parametrize("tcp", [False, True])
def test_answer_nxdomain_soa_and_counts(dns_server, tcp):
    z = dns_server.zone("zen.test")
    name = z.list("127.0.0.2", "127.0.0.4", "127.255.255.254", ttl=123)
    r = dns_server.query(name, tcp=tcp)
    assert r.header.rcode == RCODE.NOERROR
    assert sorted(str(rr.rdata) for rr in r.rr) == ["127.0.0.4", "127.255.255.254"]
    assert all(rr.ttl == 123 for rr in r.rr)
    r = dns_server.query(query_name("127.0.0.3", "zen.test"), tcp=tcp)
    assert r.header.rcode == RCODE.NXDOMAIN and not r.rr
    assert len(r.auth) == 1 and r.auth[0].rtype == QTYPE.SOA and r.auth[0].ttl == 300
    assert r.auth[0].rdata.times[-1] == 300
    assert dns_server.count(name) == 1
    assert dns_server.count_ip("127.0.0.3", "zen.test") == 1
    assert dns_server.total("zen.test") == 2
    # outside every zone: REFUSED
    assert dns_server.query("example.com", tcp=tcp).header.rcode == RCODE.REFUSED


def test_nxdomain_without_soa_and_rcodes(dns_server):
    dns_server.zone("nosoa.test", soa=False)
    r = dns_server.query("3.0.0.127.nosoa.test")
    assert r.header.rcode == RCODE.NXDOMAIN and not r.auth
    dns_server.zone("fail.test", mode="servfail")
    assert dns_server.query("3.0.0.127.fail.test").header.rcode == RCODE.SERVFAIL


@pytest.mark.parametrize("tcp", [False, True])
def test_blackhole_never_answers_but_counts(dns_server, tcp):
    dns_server.zone("hole.test", mode="blackhole")
    t0 = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError, ConnectionError, OSError)):
        dns_server.query("2.0.0.127.hole.test", tcp=tcp, timeout=1.0)
    assert time.monotonic() - t0 >= 0.9
    assert dns_server.count("2.0.0.127.hole.test") == 1
