"""Edge cases: TCP segmentation, dot-stuffing at the start, client/upstream dropping in the
middle of DATA, a silent upstream, long command lines, IPv6 and several listen addresses."""

import socket
import time

import pytest

from harness import (RawSMTP, ScriptedUpstream, Mailkeep, default_config, free_port,
                     ipv6_loopback_available, split_received)

MSG = (b"From: a@client.test\r\nTo: user@example.org\r\nSubject: robustness\r\n\r\n"
       b".starts with a dot\r\nline\r\n\r\n.\r\n..\r\nend\r\n")


def stuffed(msg: bytes) -> bytes:
    return (b"." + msg if msg.startswith(b".") else msg).replace(b"\r\n.", b"\r\n..")


def open_transaction(mk, **kw) -> RawSMTP:
    c = RawSMTP(mk.host, mk.port, **kw)
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@client.test>").code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250
    assert c.cmd("DATA").code == 354
    return c


def test_data_in_tiny_segments(mailkeep, capture):
    """Every byte in its own segment: CR and LF of a CRLF (and the final CRLF.CRLF) arrive
    separately, which must not look like a bare CR or bare LF."""
    c = open_transaction(mailkeep)
    with c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire = stuffed(MSG) + b".\r\n"
        for i in range(len(wire)):
            c.send(wire[i:i + 1])
            if wire[i:i + 1] in (b"\r", b"\n", b"."):
                time.sleep(0.005)
        r = c.reply()
        assert r.code == 250, str(r)
    (m,) = capture.wait_for(1)
    assert split_received(m.data)[1] == MSG


@pytest.mark.parametrize("split_at", [1, 2, 3, 4])
def test_terminator_split_across_segments(mailkeep, capture, split_at):
    c = open_transaction(mailkeep)
    with c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire = stuffed(MSG) + b".\r\n"          # ends with \r\n.\r\n
        cut = len(wire) - 5 + split_at
        c.send(wire[:cut])
        time.sleep(0.2)
        c.send(wire[cut:])
        r = c.reply()
        assert r.code == 250, str(r)
    (m,) = capture.wait_for(1)
    assert split_received(m.data)[1] == MSG


def test_first_line_dot_stuffed(mailkeep, capture):
    msg = b".hidden first line\r\nSubject: x\r\n\r\nbody\r\n"
    c = open_transaction(mailkeep)
    with c:
        c.send(b"." + msg + b".\r\n")
        assert c.reply().code == 250
    (m,) = capture.wait_for(1)
    assert split_received(m.data)[1] == msg


def test_received_header_names_client(mailkeep, capture):
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo("helo-name.client.test")
        assert c.send_message("a@client.test", ["user@example.org"], MSG).code == 250
    (m,) = capture.wait_for(1)
    received, _ = split_received(m.data)
    assert b"127.0.0.1" in received, received
    assert b"helo-name.client.test" in received, received


def test_client_disconnects_mid_data(mailkeep, capture):
    c = open_transaction(mailkeep)
    c.send(stuffed(MSG) + b"partial line without end")
    time.sleep(0.3)
    c.close()
    time.sleep(1.0)
    assert capture.messages == [], "a partially received message was completed upstream"
    assert capture.handler.data_attempts == 0
    # the server is fine afterwards
    with RawSMTP(mailkeep.host, mailkeep.port) as c2:
        c2.ehlo()
        assert c2.send_message("b@client.test", ["user@example.org"], MSG).code == 250
    assert [m.mail_from for m in capture.wait_for(1)] == ["b@client.test"]


def test_client_disconnects_after_dot_stuffed_terminator_lookalike(mailkeep, capture):
    """'..' at line start is not an end of data: closing after it completes nothing."""
    c = open_transaction(mailkeep)
    c.send(b"Subject: x\r\n\r\nbody\r\n..\r\n")
    time.sleep(0.3)
    c.close()
    time.sleep(1.0)
    assert capture.messages == []


def test_upstream_drops_during_data(start_mailkeep):
    up = ScriptedUpstream(behaviour=ScriptedUpstream.drop_during_data).start()
    try:
        mk = start_mailkeep(up.address)
        with RawSMTP(mk.host, mk.port, timeout=30) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@client.test>").code == 250
            assert c.cmd("RCPT TO:<user@example.org>").code == 250
            r = c.cmd("DATA")
            if r.code == 354:
                c.send(stuffed(MSG) + b"x" * 5000 + b"\r\n.\r\n")
                r = c.reply()
            assert 400 <= r.code < 500, f"expected a temporary failure, got {r}"
        assert up.connections >= 1
    finally:
        up.stop()


def test_silent_upstream_times_out_with_4xx(start_mailkeep):
    up = ScriptedUpstream(behaviour=ScriptedUpstream.silent).start()
    try:
        mk = start_mailkeep(up.address, delivery={"connect_timeout": 2})
        with RawSMTP(mk.host, mk.port, timeout=40) as c:
            c.ehlo()
            t0 = time.monotonic()
            r = c.cmd("MAIL FROM:<a@client.test>")
            if r.code == 250:
                r = c.cmd("RCPT TO:<user@example.org>")
            elapsed = time.monotonic() - t0
            assert 400 <= r.code < 500, str(r)
            assert elapsed < 20, f"waited {elapsed:.1f}s for a silent upstream (connect_timeout = 2)"
    finally:
        up.stop()


def test_overlong_command_line(mailkeep):
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<" + "a" * 5000 + "@client.test>")
        assert 500 <= r.code < 600, str(r)
        # still in sync afterwards
        assert c.cmd("NOOP").code == 250
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250


def test_garbage_bytes_in_commands(mailkeep):
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        c.send(b"\x00\xff\xfe garbage\r\n")
        r = c.reply()
        assert r.code == 421 or 500 <= r.code < 600, str(r)
        if r.code != 421:
            assert c.cmd("NOOP").code == 250


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")
def test_multiple_listen_addresses_and_ipv6(mailkeep_bin, tmp_path, capture):
    p4, p6 = free_port(), free_port()
    config = default_config(p4, capture.address, smtp={"listen": f"127.0.0.1:{p4}, [::1]:{p6}"})
    mk = Mailkeep(tmp_path / "mk", config).start()
    try:
        for host, port in (("127.0.0.1", p4), ("::1", p6)):
            deadline = time.monotonic() + 5
            while True:
                try:
                    c = RawSMTP(host, port)
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"nothing listens on [{host}]:{port}"
                    time.sleep(0.1)
            with c:
                assert c.banner.code == 220
                c.ehlo()
                assert c.send_message(f"via-{port}@client.test", ["user@example.org"], MSG).code == 250
        got = capture.wait_for(2)
        assert sorted(m.mail_from for m in got) == sorted([f"via-{p4}@client.test", f"via-{p6}@client.test"])
    finally:
        mk.stop()
