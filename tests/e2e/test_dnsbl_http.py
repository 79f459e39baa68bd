"""DNSBL check before alias creation over HTTP ([dnsbl] http_zones)."""

from __future__ import annotations

import pytest

from harness import wait_port, free_port
from dns_support import (  # noqa: F401  (dns_server is a fixture)
    dns_server, dnsbl_overrides, http_create, http_overrides, smtp_connect, wait_log,
)


def start(start_mailkeep, capture, dns, http_zones="zen.test=127.0.0.[2..9]", smtp_zones="", **kw):
    http_port = free_port()
    mk = start_mailkeep(capture.address, dnsbl=dnsbl_overrides(dns, smtp_zones=smtp_zones, http_zones=http_zones, **kw),
                        **http_overrides(http_port, create_interval=0))
    wait_port("127.0.0.1", http_port, 10, mk.proc)
    return mk, http_port


def assert_refused(r):
    assert r.status == 403, str(r)
    body = r.json
    assert body.get("error") == "rbl-check-failed", str(r)
    assert isinstance(body.get("description"), str) and body["description"], str(r)


def test_listed_client_refused_clean_client_allowed(start_mailkeep, capture, dns_server):
    dns_server.zone("zen.test").list("127.0.0.2", "127.0.0.2")
    mk, port = start(start_mailkeep, capture, dns_server)
    r = http_create(port, "127.0.0.2")
    assert_refused(r)
    assert "zen.test" in r.json["description"], str(r)
    assert dns_server.count("2.0.0.127.zen.test") == 1
    assert "rbl-check-failed" in wait_log(mk, "rbl-check-failed")

    r = http_create(port, "127.0.0.3")
    assert r.status == 201, str(r)
    assert r.json["target"] == "me@example.com" and r.json["alias"].endswith("@alias.localhost"), str(r)
    assert dns_server.count("3.0.0.127.zen.test") == 1

    # cached: no second query either way
    assert_refused(http_create(port, "127.0.0.2"))
    assert http_create(port, "127.0.0.3").status == 201
    assert dns_server.count("2.0.0.127.zen.test") == 1
    assert dns_server.count("3.0.0.127.zen.test") == 1


def test_http_filter_is_its_own(start_mailkeep, capture, dns_server):
    """127.0.0.10 matches smtp_zones' [2..11] but not http_zones' [2..9]."""
    dns_server.zone("zen.test").list("127.0.0.2", "127.0.0.10")
    mk, port = start(start_mailkeep, capture, dns_server, smtp_zones="zen.test=127.0.0.[2..11]")
    r = http_create(port, "127.0.0.2")
    assert r.status == 201, f"127.0.0.10 is outside http_zones' filter [2..9]: {r}"
    g = smtp_connect(mk.host, mk.port, "127.0.0.2")
    assert g.reply is not None and g.reply.code == 554, f"but inside smtp_zones' [2..11]: {g}"


def test_smtp_zones_do_not_apply_to_http_and_vice_versa(start_mailkeep, capture, dns_server):
    dns_server.zone("smtp.test").list("127.0.0.2")
    dns_server.zone("web.test").list("127.0.0.3")
    mk, port = start(start_mailkeep, capture, dns_server, smtp_zones="smtp.test", http_zones="web.test")
    assert http_create(port, "127.0.0.2").status == 201
    assert_refused(http_create(port, "127.0.0.3"))
    g = smtp_connect(mk.host, mk.port, "127.0.0.3")
    assert g.reply is not None and g.reply.code == 220, str(g)
    assert dns_server.total("smtp.test") == 1 and dns_server.total("web.test") == 2, dns_server.log


def test_allowed_client_not_checked(start_mailkeep, capture, dns_server):
    dns_server.zone("zen.test").list("127.0.0.1")
    mk, port = start(start_mailkeep, capture, dns_server)
    r = http_create(port, "127.0.0.1")            # default allow 127.0.0.1/32
    assert r.status == 201, str(r)
    assert dns_server.total() == 0, dns_server.log


def test_only_creation_is_checked(start_mailkeep, capture, dns_server):
    import http.client
    dns_server.zone("zen.test").list("127.0.0.2")
    mk, port = start(start_mailkeep, capture, dns_server)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=("127.0.0.2", 0))
    try:
        conn.request("GET", "/api/v1/aliases/abcdefghjkmnpq", headers={"Authorization": "Bearer " + "0" * 64})
        r = conn.getresponse()
        r.read()
    finally:
        conn.close()
    assert r.status in (401, 404), r.status
    assert dns_server.total() == 0, dns_server.log


@pytest.mark.parametrize("on_error", ["accept", "tempfail"])
def test_silent_dns_server(start_mailkeep, capture, dns_server, on_error):
    dns_server.zone("hole.test", mode="blackhole")
    mk, port = start(start_mailkeep, capture, dns_server, http_zones="hole.test", timeout_ms=1000,
                     on_error=on_error)
    r = http_create(port, "127.0.0.2", timeout=3.5)
    assert r.seconds <= 3.0, str(r)
    assert dns_server.count("2.0.0.127.hole.test") >= 1
    if on_error == "accept":
        assert r.status == 201, str(r)
    else:
        assert r.status == 503 and r.json.get("error") == "dnsbl-unavailable", str(r)
        assert r.headers.get("retry-after"), str(r)
