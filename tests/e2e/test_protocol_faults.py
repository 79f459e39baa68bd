"""Small protocol faults an outside review found, each as a scripted SMTP transcript against the real
server (and one HTTP request for the alias API):

- a client that stalls inside DATA gets `421 4.4.2` and counts as a timeout;
- message text sent before our 354 gets `554 5.5.0` and nothing goes upstream (RFC 2920 3.1);
- a client hears a generic `451 4.4.1` when the smarthost is down; the log keeps the details and says
  which step failed (the connect), not "refused MAIL FROM";
- a MAIL rejected for SIZE is logged with the sender it named;
- `POST /api/v1/aliases` answers an unknown field with `400 invalid-data` naming it.
"""

from __future__ import annotations

import socket
import time

from alias_support import TARGET, alias_env, assert_error  # noqa: F401  (alias_env is a fixture)
import dns_support
from dns_support import read_stats
from harness import ConnectionClosed, RawSMTP

MSG = b"From: a@client.test\r\nTo: user@example.org\r\nSubject: faults\r\n\r\nhello\r\n"


def wait_log(mk, text: str, timeout: float = 10) -> str:
    """dns_support's wait, failing the test when the line never comes."""
    log = dns_support.wait_log(mk, text, timeout)
    assert text in log, f"{text!r} not in the log:\n{log[-3000:]}"
    return log


def test_stall_inside_data_gets_421_and_counts_as_timeout(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"timeout": 2})
    with RawSMTP(mk.host, mk.port, timeout=15) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<slow@client.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: half a message\r\n\r\nand then nothing")
        started = time.monotonic()
        r = c.reply(timeout=15)
        waited = time.monotonic() - started
        assert (r.code, r.enhanced) == (421, "4.4.2"), str(r)
        assert 1.5 < waited < 10, waited
        try:                                   # then the server closes the connection
            assert c.sock.recv(100) == b""
        except ConnectionResetError:
            pass
    log = wait_log(mk, "timeout after DATA")
    assert "nothing was acknowledged" in log
    time.sleep(0.3)
    assert capture.messages == [] and capture.handler.data_attempts == 0
    mk.stop()
    counters, _, _ = read_stats(mk.config_path, mk.workdir)
    assert counters.get("reject.timeout") == 1, counters


def test_message_text_before_354_is_refused(start_mailkeep, capture):
    mk = start_mailkeep(capture.address)
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        # The whole transaction in one write, as a spam bot does: the text does not wait for our 354.
        c.send(b"MAIL FROM:<bot@client.test>\r\nRCPT TO:<user@example.org>\r\nDATA\r\n" + MSG +
               b".\r\nMAIL FROM:<second@client.test>\r\nQUIT\r\n")
        replies = [c.reply(), c.reply(), c.reply()]
        assert [r.code for r in replies] == [250, 250, 554], [str(r) for r in replies]
        assert replies[2].enhanced == "5.5.0" and "synchronization" in replies[2].text, str(replies[2])
        try:   # the connection ends: nothing the client sent after DATA is read as a command
            extra = c.reply(timeout=5)
            raise AssertionError(f"a reply after the 554: {extra}")
        except (ConnectionClosed, ConnectionResetError):
            pass
    log = wait_log(mk, "input before 354")
    assert "reject: DATA" in log and "from=<bot@client.test>" in log
    time.sleep(0.5)
    assert capture.handler.data_attempts == 0 and capture.messages == []
    assert "second@client.test" not in capture.mail_log
    # A client that waits for the 354 is served as always, on a new connection.
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        assert c.send_message("polite@client.test", ["user@example.org"], MSG).code == 250
    assert [m.mail_from for m in capture.wait_for(1)] == ["polite@client.test"]
    mk.stop()
    counters, _, _ = read_stats(mk.config_path, mk.workdir)
    assert counters.get("reject.data_before_354") == 1, counters


def test_smarthost_down_client_hears_generic_451_log_says_connect(start_mailkeep):
    # A port nobody listens on: connect() is refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    mk = start_mailkeep(dead, delivery={"connect_timeout": 2})
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test>").code == 250
        r = c.cmd("RCPT TO:<user@example.org>")
        assert (r.code, r.enhanced) == (451, "4.4.1"), str(r)
        assert r.text == "4.4.1 Upstream unavailable, try again later", str(r)
        assert dead not in r.text and "refused" not in r.text.lower(), str(r)
    log = wait_log(mk, "MAIL FROM:<a@client.test> answered 451 4.4.1")
    line = next(l for l in log.splitlines() if "answered 451 4.4.1" in l)
    assert f"upstream {dead}: connect: Connection refused" in line, line
    assert "refused MAIL FROM" not in log, log[-2000:]


def test_mail_rejected_for_size_is_logged_with_its_sender(start_mailkeep, capture):
    mk = start_mailkeep(capture.address, smtp={"max_message_size": 10000})
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<big.sender@client.test> SIZE=20000")
        assert (r.code, r.enhanced) == (552, "5.3.4"), str(r)
    log = wait_log(mk, "reason=SIZE=20000")
    line = next(l for l in log.splitlines() if "reason=SIZE=20000" in l)
    assert "reject: MAIL" in line and "from=<big.sender@client.test>" in line, line


def test_alias_api_refuses_unknown_fields(alias_env):
    env = alias_env()
    api = env.http
    # tempalias's spelling on the v1 route: refused, not an alias without a limit
    body = assert_error(api.request("POST", "/api/v1/aliases", {"target": TARGET, "days": 2, "max-usage": 1}),
                        400, "invalid-data")
    assert '"max-usage"' in body["description"], body
    assert_error(api.request("POST", "/api/v1/aliases", {"target": TARGET, "colour": "red"}), 400, "invalid-data")
    wait_log(env.mk, 'invalid-data: unknown field "colour"')
    # the v1 spelling works, and the tempalias route keeps its own
    ok = api.request("POST", "/api/v1/aliases", {"target": TARGET, "days": 2, "max_usage": 1})
    assert ok.status == 201 and ok.json["max_usage"] == 1, str(ok)
    legacy = api.request("POST", "/aliases", {"target": TARGET, "days": 2, "max-usage": 3})
    assert legacy.status == 200 and legacy.json["max_usage"] == 3, str(legacy)
