"""Upstream behaviour: down, broken, rejecting, failing at end of data, smarthost order,
Postfix as the smarthost, and Maildir outbox when no smarthost is set."""

import asyncio
import time

import pytest

from harness import Capture, RawSMTP, ScriptedUpstream, free_port, split_received

MSG = (b"From: a@client.test\r\nTo: user@example.org\r\nSubject: upstream test\r\n"
       b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <upstream-test@client.test>\r\n"
       b"\r\nHello.\r\n.leading dot\r\n")


def stuffed(msg: bytes) -> bytes:
    return msg.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def assert_nothing_acknowledged(c: RawSMTP, rcpt_reply) -> None:
    """After a failed RCPT the client must not get a 250 for the message."""
    assert 400 <= rcpt_reply.code < 500, f"expected 4xx at RCPT, got {rcpt_reply}"
    r = c.cmd("DATA")
    if r.code == 354:
        c.send(stuffed(MSG))
        r = c.reply()
    assert r.code >= 400, f"message was acknowledged although upstream is down: {r}"


def test_upstream_down_gives_4xx(start_mailkeep):
    dead = f"127.0.0.1:{free_port()}"       # nothing listens there
    mk = start_mailkeep(dead)
    with RawSMTP(mk.host, mk.port, timeout=30) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@client.test>")
        assert r.code == 250 or 400 <= r.code < 500, str(r)
        if r.code == 250:
            r = c.cmd("RCPT TO:<user@example.org>")
        assert r.code in (451, 421), str(r)
        if r.code == 451:
            assert r.enhanced == "4.4.1", str(r)
        if r.code == 421:
            return
        assert_nothing_acknowledged(c, r)


def test_upstream_greets_421(start_mailkeep):
    bad = ScriptedUpstream(b"421 4.3.2 too busy\r\n").start()
    try:
        mk = start_mailkeep(bad.address)
        with RawSMTP(mk.host, mk.port, timeout=30) as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<a@client.test>")
            if r.code == 250:
                r = c.cmd("RCPT TO:<user@example.org>")
            assert 400 <= r.code < 500, str(r)
            if r.code != 421:
                assert_nothing_acknowledged(c, r)
        assert bad.connections >= 1
    finally:
        bad.stop()


def test_upstream_stops_after_start(start_mailkeep):
    """The upstream was fine when mailkeep started and goes away later."""
    cap = Capture().start()
    mk = start_mailkeep(cap.address)
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        assert c.send_message("a@client.test", ["user@example.org"], MSG).code == 250
    cap.stop()
    with RawSMTP(mk.host, mk.port, timeout=30) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@client.test>")
        if r.code == 250:
            r = c.cmd("RCPT TO:<user@example.org>")
        assert 400 <= r.code < 500, str(r)
        if r.code != 421:
            assert_nothing_acknowledged(c, r)


def test_second_smarthost_used_when_first_is_down(start_mailkeep, capture):
    dead = f"127.0.0.1:{free_port()}"
    mk = start_mailkeep(f"{dead}, {capture.address}")
    with RawSMTP(mk.host, mk.port, timeout=30) as c:
        c.ehlo()
        r = c.send_message("a@client.test", ["user@example.org"], MSG)
        assert r.code == 250, str(r)
    (cap,) = capture.wait_for(1)
    assert split_received(cap.data)[1] == MSG


def test_upstream_rejects_one_recipient(mailkeep, capture):
    capture.reject_rcpt("nosuchuser@example.org", "550 5.1.1 <{addr}>: Recipient address rejected")
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        r = c.cmd("RCPT TO:<nosuchuser@example.org>")
        assert r.code == 550 and r.enhanced == "5.1.1", str(r)
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(stuffed(MSG))
        assert c.reply().code == 250
    (cap,) = capture.wait_for(1)
    assert cap.rcpt_tos == ["user@example.org"]


def test_upstream_rejects_only_recipient(mailkeep, capture):
    capture.reject_rcpt("nosuchuser@example.org")
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        r = c.cmd("RCPT TO:<nosuchuser@example.org>")
        assert r.code == 550 and r.enhanced == "5.1.1", str(r)
        assert c.cmd("DATA").code in (503, 554)
    time.sleep(0.5)
    assert capture.messages == []


def test_upstream_temporary_recipient_failure_passed_through(mailkeep, capture):
    capture.reject_rcpt("greylisted@example.org", "450 4.2.0 <{addr}>: greylisted, try later")
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        r = c.cmd("RCPT TO:<greylisted@example.org>")
        assert r.code == 450 and r.enhanced == "4.2.0", str(r)


@pytest.mark.parametrize("reply", ["451 4.3.0 Temporary local problem", "554 5.7.1 Message refused by policy"])
def test_upstream_end_of_data_reply_passed_through(mailkeep, capture, reply):
    capture.set_data_reply(reply)
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(stuffed(MSG))
        r = c.reply()
        code, enhanced = reply.split()[:2]
        assert r.code == int(code) and r.enhanced == enhanced, str(r)
        # the session goes on: the next transaction works once the upstream accepts again
        capture.set_data_reply(None)
        assert c.send_message("b@client.test", ["user@example.org"], MSG).code == 250
    (cap,) = capture.wait_for(1)
    assert cap.mail_from == "b@client.test"
    assert capture.handler.data_attempts == 2


def test_250_only_after_upstream_250(start_mailkeep):
    """The client's end-of-data reply waits for the upstream's reply."""
    cap = Capture()
    original = cap.handler.handle_DATA
    delay = 2.0

    async def slow_data(server, session, envelope):
        await asyncio.sleep(delay)
        return await original(server, session, envelope)

    cap.handler.handle_DATA = slow_data
    cap.start()
    try:
        mk = start_mailkeep(cap.address)
        with RawSMTP(mk.host, mk.port, timeout=30) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@client.test>").code == 250
            assert c.cmd("RCPT TO:<user@example.org>").code == 250
            assert c.cmd("DATA").code == 354
            t0 = time.monotonic()
            c.send(stuffed(MSG))
            r = c.reply()
            elapsed = time.monotonic() - t0
        assert r.code == 250
        assert elapsed >= delay * 0.9, f"250 came after {elapsed:.2f}s, upstream needed {delay}s"
        assert len(cap.wait_for(1)) == 1
    finally:
        cap.stop()


def test_postfix_as_smarthost(start_mailkeep, capture, postfix_factory):
    pf = postfix_factory(relayhost=capture.address)
    mk = start_mailkeep(f"127.0.0.1:{pf.port}")
    with RawSMTP(mk.host, mk.port, timeout=30) as c:
        c.ehlo()
        r = c.send_message("a@client.test", ["user@example.org", "second@example.net"], MSG)
        assert r.code == 250, str(r)
        assert "queued" in r.text.lower() or r.enhanced == "2.0.0", str(r)
    (cap,) = capture.wait_for(1, timeout=60)
    assert cap.mail_from == "a@client.test"
    assert sorted(cap.rcpt_tos) == ["second@example.net", "user@example.org"]
    # Postfix prepends its own Received; below it must be mailkeep's, then the message
    postfix_received, rest = split_received(cap.data)
    assert b"postfix.test" in postfix_received
    ours, rest = split_received(rest)
    assert b"mx.test.example" in ours
    assert rest == MSG


def test_postfix_smarthost_rejects_recipient(start_mailkeep, capture, postfix_factory):
    """A real MTA's RCPT rejection reaches the client at RCPT time."""
    pf = postfix_factory(relayhost=capture.address,
                         smtpd_recipient_restrictions="check_recipient_access inline:{ blocked@example.org=REJECT }, permit_mynetworks, reject")
    mk = start_mailkeep(f"127.0.0.1:{pf.port}")
    with RawSMTP(mk.host, mk.port, timeout=30) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        r = c.cmd("RCPT TO:<blocked@example.org>")
        assert r.code == 554 and r.enhanced == "5.7.1", str(r)
        assert c.cmd("RCPT TO:<user@example.org>").code == 250


def test_outbox_maildir_when_no_smarthost(mailkeep_bin, tmp_path):
    from harness import Mailkeep, default_config
    outbox = tmp_path / "outbox"
    config = default_config(free_port(), "", delivery={"outbox": str(outbox)})
    mk = Mailkeep(tmp_path / "mk", config).start()
    try:
        with RawSMTP(mk.host, mk.port) as c:
            c.ehlo()
            assert c.send_message("a@client.test", ["user@example.org"], MSG).code == 250
        deadline = time.monotonic() + 10
        files = []
        while time.monotonic() < deadline and not files:
            files = list((outbox / "new").glob("*"))
            time.sleep(0.1)
        assert len(files) == 1, files
        data = files[0].read_bytes()
        # Maildir files use the local convention (LF) or keep CRLF; compare line by line
        lines = data.replace(b"\r\n", b"\n")
        assert lines.endswith(MSG.replace(b"\r\n", b"\n")), data[-300:]
        assert b"mx.test.example" in lines.split(b"\n\n", 1)[0]
        assert list((outbox / "tmp").glob("*")) == []
    finally:
        mk.stop()
