"""Limits: message size (SIZE= at MAIL and during DATA), recipients, connections."""

import socket
import time

from harness import ConnectionClosed, RawSMTP

LIMIT = 100_000


def body_of(size: int) -> bytes:
    line = b"0123456789" * 7 + b"\r\n"          # 72 octets
    head = b"From: a@client.test\r\nSubject: size\r\n\r\n"
    return head + line * ((size - len(head)) // len(line) + 1)


def test_size_param_over_limit_rejected_at_mail(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"max_message_size": LIMIT})
    with RawSMTP(mk.host, mk.port) as c:
        ehlo = c.ehlo()
        assert f"SIZE {LIMIT}" in ehlo.text
        r = c.cmd(f"MAIL FROM:<big@client.test> SIZE={LIMIT * 2}")
        assert r.code == 552 and r.enhanced == "5.3.4", str(r)
        # a declared size at the limit is not over it
        assert c.cmd(f"MAIL FROM:<small@client.test> SIZE={LIMIT}").code == 250
    time.sleep(0.3)
    assert "big@client.test" not in capture.mail_log


def test_data_over_limit_rejected_after_dot(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"max_message_size": LIMIT})
    big = body_of(LIMIT + 50_000)
    with RawSMTP(mk.host, mk.port, timeout=30) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250      # no SIZE= declared
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(big + b".\r\n")
        r = c.reply()
        assert r.code == 552 and r.enhanced == "5.3.4", str(r)
        # the session is still in sync and usable
        assert c.cmd("NOOP").code == 250
        small = body_of(LIMIT // 2)
        assert c.send_message("b@client.test", ["user@example.org"], small).code == 250
    msgs = capture.wait_for(1)
    time.sleep(0.3)
    msgs = capture.messages
    assert len(msgs) == 1 and msgs[0].mail_from == "b@client.test"
    assert capture.handler.data_attempts == 1


def test_data_over_limit_with_lying_size_param(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"max_message_size": LIMIT})
    big = body_of(LIMIT * 3)
    with RawSMTP(mk.host, mk.port, timeout=30) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test> SIZE=1000").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(big + b".\r\n")
        r = c.reply()
        assert r.code == 552 and r.enhanced == "5.3.4", str(r)
    time.sleep(0.5)
    assert capture.messages == []
    assert capture.handler.data_attempts == 0


def test_too_many_recipients(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"max_recipients": 3})
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        for i in range(3):
            assert c.cmd(f"RCPT TO:<u{i}@example.org>").code == 250
        r = c.cmd("RCPT TO:<u3@example.org>")
        assert r.code == 452 and r.enhanced == "4.5.3", str(r)
        r = c.cmd("RCPT TO:<u4@example.org>")
        assert r.code == 452, str(r)
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: many\r\n\r\nbody\r\n.\r\n")
        assert c.reply().code == 250
    (cap,) = capture.wait_for(1)
    assert cap.rcpt_tos == ["u0@example.org", "u1@example.org", "u2@example.org"]
    assert "u3@example.org" not in capture.rcpt_log


def test_max_connections(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"max_connections": 3})
    held = [RawSMTP(mk.host, mk.port) for _ in range(3)]
    try:
        assert all(c.banner.code == 220 for c in held)
        extra = RawSMTP(mk.host, mk.port, read_banner=False)
        try:
            r = extra.reply(timeout=10)
            assert r.code == 421 and r.enhanced == "4.7.0", str(r)
            extra.sock.settimeout(5)
            try:
                assert extra.sock.recv(100) == b"", "connection not closed after 421"
            except ConnectionResetError:
                pass
        finally:
            extra.close()
        # the held sessions still work
        assert held[0].cmd("NOOP").code == 250
        # after one session ends, a new client is served again
        held[0].cmd("QUIT")
        held[0].close()
        deadline = time.monotonic() + 10
        while True:
            c = RawSMTP(mk.host, mk.port, read_banner=False)
            try:
                r = c.reply(timeout=5)
            except (ConnectionClosed, OSError):
                r = None
            c.close()
            if r is not None and r.code == 220:
                break
            assert time.monotonic() < deadline, "slot was not freed after QUIT"
            time.sleep(0.2)
    finally:
        for c in held:
            c.close()


def test_many_concurrent_transactions(mailkeep, capture):
    """20 clients interleaving their transactions; every message arrives intact."""
    clients = [RawSMTP(mailkeep.host, mailkeep.port, timeout=30) for _ in range(20)]
    try:
        for c in clients:
            c.ehlo()
        for i, c in enumerate(clients):
            c.send(f"MAIL FROM:<c{i}@client.test>\r\nRCPT TO:<user@example.org>\r\nDATA\r\n".encode())
        for c in clients:
            assert [c.reply().code for _ in range(3)] == [250, 250, 354]
        for i, c in enumerate(clients):
            c.send(f"Subject: client {i}\r\n\r\n".encode() + b"x" * 1000 + b"\r\n")
        for i, c in enumerate(clients):
            c.send(b".\r\n")
        for c in clients:
            assert c.reply().code == 250
    finally:
        for c in clients:
            c.close()
    got = capture.wait_for(20)
    assert sorted(m.mail_from for m in got) == sorted(f"c{i}@client.test" for i in range(20))
    for m in got:
        i = int(m.mail_from[1:].split("@")[0])
        assert m.data.endswith(f"Subject: client {i}\r\n\r\n".encode() + b"x" * 1000 + b"\r\n")


def test_client_reset_does_not_break_server(start_mailkeep, capture):
    """Clients that reset the connection before reading the banner do no harm."""
    mk = start_mailkeep(capture.address)
    for _ in range(20):
        s = socket.create_connection((mk.host, mk.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()   # RST
    with RawSMTP(mk.host, mk.port) as c:
        assert c.banner.code == 220
        assert c.cmd("NOOP").code == 250
