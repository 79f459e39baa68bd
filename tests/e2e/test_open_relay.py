"""Open-relay protection: only `domains` are accepted from non-relay clients (127.0.0.1 here);
routing tricks that hide a foreign domain behind ours are denied too; a client inside
`relay_from` (127.0.0.9) may relay anywhere."""

import time

import pytest

from harness import RawSMTP

DENIED = [
    "user@other.com",
    "user%other.com@example.org",
    "other.com!user@example.org",
    "@example.org:user@other.com",
    "@example.org,@example.net:user@other.com",
    '"user@other.com"@example.org',
    '"user%other.com"@example.org',
    "user@example.org.other.com",
    "user@notexample.org",
]

ACCEPTED = [
    "user@example.org",
    "user@example.net",
    "User.Name+tag@EXAMPLE.ORG",
    "postmaster@example.org",
]


@pytest.mark.parametrize("rcpt", DENIED)
def test_relay_denied(mailkeep, capture, rcpt):
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        assert r.code == 550 and r.enhanced == "5.7.1", f"RCPT TO:<{rcpt}> -> {r}"
        # nothing to send to
        r = c.cmd("DATA")
        assert r.code in (503, 554), str(r)
    time.sleep(0.2)
    assert capture.rcpt_log == [], "denied recipient was passed to the upstream"
    assert capture.messages == []


@pytest.mark.parametrize("rcpt", ["user@other.com@example.org", "user@[10.0.0.1]", "user@"])
def test_malformed_or_literal_never_accepted(mailkeep, capture, rcpt):
    """Malformed addresses and address literals are refused (5xx) and never reach upstream."""
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        assert 500 <= r.code < 600, f"RCPT TO:<{rcpt}> -> {r}"
    time.sleep(0.2)
    assert capture.rcpt_log == []


@pytest.mark.parametrize("rcpt", ACCEPTED)
def test_own_domains_accepted(mailkeep, capture, rcpt):
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        r = c.send_message("a@client.test", [rcpt], b"Subject: ours\r\n\r\nhi\r\n")
        assert r.code == 250, str(r)
    (msg,) = capture.wait_for(1)
    assert msg.rcpt_tos == [rcpt]


def test_denied_recipient_does_not_spoil_transaction(mailkeep, capture):
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        assert c.cmd("RCPT TO:<user%other.com@example.org>").code == 550
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("RCPT TO:<victim@other.com>").code == 550
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: mixed\r\n\r\nhi\r\n.\r\n")
        assert c.reply().code == 250
    (msg,) = capture.wait_for(1)
    assert msg.rcpt_tos == ["user@example.org"]
    assert not any("other.com" in r for r in capture.rcpt_log)


def test_relay_client_may_relay_anywhere(mailkeep, capture):
    with RawSMTP(mailkeep.host, mailkeep.port, source_address=("127.0.0.9", 0)) as c:
        c.ehlo()
        r = c.send_message("a@client.test", ["someone@other.com", "user@example.org"],
                           b"Subject: relayed\r\n\r\nhi\r\n")
        assert r.code == 250, str(r)
    (msg,) = capture.wait_for(1)
    assert msg.rcpt_tos == ["someone@other.com", "user@example.org"]


def test_relay_client_network_boundary(start_mailkeep, capture):
    """relay_from = 127.0.0.8/30: 127.0.0.9 relays, 127.0.0.12 (outside) does not."""
    mk = start_mailkeep(capture.address, relay={"relay_from": "127.0.0.8/30"})
    for source, expected in (("127.0.0.9", 250), ("127.0.0.11", 250), ("127.0.0.12", 550), ("127.0.0.7", 550)):
        with RawSMTP(mk.host, mk.port, source_address=(source, 0)) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@client.test>").code == 250
            r = c.cmd("RCPT TO:<someone@other.com>")
            assert r.code == expected, f"from {source}: {r}"
