"""Sent copies: the provider hands mailkeep one copy of an outgoing message per in-domain
recipient (separate transactions, possibly different Received headers); the sender's Sent
folder keeps it once. Identity is Message-ID + body: anything else is a different message."""

from __future__ import annotations

import threading

from backup_support import (  # noqa: F401,F811  (pytest fixtures)
    DOMAIN, OUTBOUND_IP, backup_gateway, make_message, read_archived, upstreams,
)
from harness import RawSMTP

ALICE = f"alice@{DOMAIN}"


def send_outbound(gw, sender: str, rcpts: list[str], msg: bytes) -> int:
    with RawSMTP(gw.host, gw.port, source_address=(OUTBOUND_IP, 0)) as c:
        c.ehlo("relay.provider.test")
        return c.send_message(sender, rcpts, msg).code


def provider_copy(msg: bytes, hop: int) -> bytes:
    """The provider's copy for one recipient: its own Received header on top."""
    return (f"Received: from webmail.provider.test by relay{hop}.provider.test with ESMTPSA id Q{hop}\r\n"
            f"\tfor <r{hop}@{DOMAIN}>; Sat, 28 Nov 2026 12:00:0{hop} +0000\r\n").encode() + msg


def sent_messages(gw, user: str = "alice") -> list[bytes]:
    return [read_archived(f, inbox=False).message for f in gw.files(user, "Sent")]


def test_duplicate_copies_stored_once(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice", "bob"])
    msg = make_message("dup-1", sender=ALICE, to=f"bob@{DOMAIN}, carol@{DOMAIN}")
    copy1, copy2, copy3 = (provider_copy(msg, hop) for hop in (1, 2, 3))
    assert send_outbound(gw, ALICE, [f"bob@{DOMAIN}"], copy1) == 250
    assert send_outbound(gw, ALICE, [f"carol@{DOMAIN}"], copy2) == 250
    assert send_outbound(gw, ALICE, ["friend@remote.test"], copy3) == 250
    # every copy went on to the smarthost ...
    got = upstreams.outbound.wait_for(3)
    assert [m.rcpt_tos for m in got] == [[f"bob@{DOMAIN}"], [f"carol@{DOMAIN}"], ["friend@remote.test"]]
    # ... and Sent holds the first one only
    assert sent_messages(gw) == [copy1]
    assert gw.files("alice", "Sent", "tmp") == []
    assert gw.files("bob") == [], "outbound mail to an in-domain user is not an INBOX copy"


def test_same_message_id_different_body_kept(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, users=["alice"])
    a = make_message("same-id", sender=ALICE, body=b"first version\r\n")
    b = make_message("same-id", sender=ALICE, body=b"second version\r\n")
    assert send_outbound(gw, ALICE, ["x@remote.test"], a) == 250
    assert send_outbound(gw, ALICE, ["y@remote.test"], b) == 250
    assert sorted(sent_messages(gw)) == sorted([a, b])


def test_same_body_different_message_id_kept(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, users=["alice"])
    body = b"identical body\r\n"
    a = make_message("id-a", sender=ALICE, body=body)
    b = make_message("id-b", sender=ALICE, body=body)
    assert send_outbound(gw, ALICE, ["x@remote.test"], a) == 250
    assert send_outbound(gw, ALICE, ["y@remote.test"], b) == 250
    assert sorted(sent_messages(gw)) == sorted([a, b])


def test_dedupe_is_per_folder(backup_gateway, upstreams):
    """The same message sent by alice and by bob belongs in both Sent folders."""
    gw = backup_gateway(upstreams.outbound.address, users=["alice", "bob"])
    msg = make_message("shared-draft", sender=ALICE)
    assert send_outbound(gw, ALICE, ["x@remote.test"], msg) == 250
    assert send_outbound(gw, f"bob@{DOMAIN}", ["x@remote.test"], msg) == 250
    assert sent_messages(gw, "alice") == [msg]
    assert sent_messages(gw, "bob") == [msg]


def test_concurrent_duplicates_stored_once(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, users=["alice"])
    msg = make_message("dup-concurrent", sender=ALICE)
    codes: list[int] = []
    start = threading.Barrier(6)

    def one(i: int) -> None:
        with RawSMTP(gw.host, gw.port, source_address=(OUTBOUND_IP, 0)) as c:
            c.ehlo()
            start.wait(10)
            codes.append(c.send_message(ALICE, [f"r{i}@{DOMAIN}"], provider_copy(msg, i)).code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [250] * 6
    assert len(upstreams.outbound.wait_for(6)) == 6
    assert len(gw.files("alice", "Sent")) == 1
    assert gw.files("alice", "Sent", "tmp") == []


def test_duplicate_recognised_after_restart(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, users=["alice"])
    msg = make_message("dup-restart", sender=ALICE)
    assert send_outbound(gw, ALICE, ["x@remote.test"], provider_copy(msg, 1)) == 250
    assert gw.mk.stop() == 0
    gw.mk.start()
    assert send_outbound(gw, ALICE, ["y@remote.test"], provider_copy(msg, 2)) == 250
    assert sent_messages(gw) == [provider_copy(msg, 1)]


def test_refused_copy_does_not_count_as_seen(backup_gateway, upstreams):
    """A copy the smarthost refused was never stored: its retry must be."""
    gw = backup_gateway(upstreams.outbound.address, users=["alice"])
    msg = make_message("dup-retry", sender=ALICE)
    upstreams.outbound.set_data_reply("451 4.3.0 try again later")
    assert send_outbound(gw, ALICE, ["x@remote.test"], msg) == 451
    assert gw.files("alice", "Sent") == []
    upstreams.outbound.set_data_reply(None)
    assert send_outbound(gw, ALICE, ["x@remote.test"], msg) == 250
    assert sent_messages(gw) == [msg]
