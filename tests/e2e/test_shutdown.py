"""SIGTERM: stop accepting, idle sessions get 421 4.3.2, a transfer in flight finishes."""

import socket
import subprocess
import time

from harness import ConnectionClosed, RawSMTP, split_received

MSG_HEAD = b"From: a@client.test\r\nTo: user@example.org\r\nSubject: in flight\r\n\r\n"
MSG_BODY = b"".join(b"line %05d of a message being transferred during shutdown\r\n" % i for i in range(2000))
MSG = MSG_HEAD + MSG_BODY


def test_sigterm_lets_transfer_finish(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"shutdown_timeout": 10})
    busy = RawSMTP(mk.host, mk.port, timeout=20)
    idle = RawSMTP(mk.host, mk.port, timeout=20)
    try:
        busy.ehlo()
        idle.ehlo()
        assert busy.cmd("MAIL FROM:<inflight@client.test>").code == 250
        assert busy.cmd("RCPT TO:<user@example.org>").code == 250
        assert busy.cmd("DATA").code == 354
        half = len(MSG) // 2
        busy.send(MSG[:half])
        time.sleep(0.3)

        mk.terminate()
        t_term = time.monotonic()

        # the idle session is told to go away
        r = idle.reply(timeout=8)
        assert r.code == 421 and r.enhanced == "4.3.2", str(r)

        # new connections are no longer accepted
        time.sleep(0.3)
        try:
            probe = RawSMTP(mk.host, mk.port, timeout=3, read_banner=False)
            try:
                banner = probe.reply(timeout=3)
                assert banner.code != 220, "new session accepted after SIGTERM"
            except (ConnectionClosed, OSError):
                pass
            finally:
                probe.close()
        except OSError:
            pass    # connection refused: listener closed

        # the transfer in flight completes
        busy.send(MSG[half:] + b".\r\n")
        r = busy.reply(timeout=10)
        assert r.code == 250, f"in-flight message not accepted after SIGTERM: {r}"
        try:
            busy.cmd("QUIT")
        except (ConnectionClosed, OSError):
            pass
    finally:
        busy.close()
        idle.close()

    (msg,) = capture.wait_for(1)
    assert msg.mail_from == "inflight@client.test"
    assert split_received(msg.data)[1] == MSG

    code = mk.wait(timeout=15)
    assert code == 0, f"exit code {code}"
    assert time.monotonic() - t_term < 12


def test_sigterm_idle_only_exits_promptly(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"shutdown_timeout": 30})
    idle = [RawSMTP(mk.host, mk.port) for _ in range(5)]
    for c in idle:
        c.ehlo()
    t0 = time.monotonic()
    mk.terminate()
    try:
        for c in idle:
            r = c.reply(timeout=8)
            assert r.code == 421, str(r)
        code = mk.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("mailkeep with only idle sessions did not exit within 10s of SIGTERM")
    finally:
        for c in idle:
            c.close()
    assert code == 0
    assert time.monotonic() - t0 < 10


def test_sigterm_stalled_transfer_is_cut_after_shutdown_timeout(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"shutdown_timeout": 2})
    with RawSMTP(mk.host, mk.port, timeout=20) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<stall@client.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(MSG_HEAD + b"partial")
        t0 = time.monotonic()
        mk.terminate()
        try:
            code = mk.wait(timeout=12)
        except subprocess.TimeoutExpired:
            raise AssertionError("stalled transfer kept mailkeep alive past shutdown_timeout")
        elapsed = time.monotonic() - t0
        assert 1.5 <= elapsed < 10, elapsed
        assert code == 0
        # the stalled client got no 250
        c.sock.settimeout(2)
        try:
            rest = c.sock.recv(1000)
        except (socket.timeout, OSError):
            rest = b""
        assert not rest.startswith(b"250"), rest
    time.sleep(0.3)
    assert capture.messages == []
