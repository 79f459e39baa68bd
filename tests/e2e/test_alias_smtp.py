"""The SMTP side of temporary aliases: rewriting, counting uses, expiry, concurrency."""

from __future__ import annotations

import smtplib
import socket
import threading
import time

import pytest

from harness import Capture, RawSMTP, dot_stuff
from alias_support import (  # noqa: F401  (alias_env is a fixture)
    ALIAS_DOMAIN, TARGET, alias_env, db_execute, message, parse_kv, send,
)


def uses(env, a: dict) -> int:
    r = env.http.get(a["aid"], a["manage_token"])
    assert r.status == 200, str(r)
    return r.json["uses"]


def status(env, a: dict) -> str:
    return env.http.get(a["aid"], a["manage_token"]).json["status"]


def rcpt_reply(env, address: str, mail_from: str = "s@sender.test"):
    with RawSMTP("127.0.0.1", env.smtp_port) as c:
        c.ehlo()
        assert c.cmd(f"MAIL FROM:<{mail_from}>").code == 250
        r = c.cmd(f"RCPT TO:<{address}>")
        c.cmd("QUIT")
        return r


def wait_until(pred, timeout: float = 5.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# --------------------------------------------------------------------------- rewriting

def test_api_alias_is_rewritten_to_target(alias_env):
    env = alias_env()
    target = "person@elsewhere.test"     # not a relay domain: the alias is the authorisation
    a = env.create(target)
    body = message(subject="via alias", to=a["alias"], body="line one\r\n.dot line")
    res = send(env.smtp_port, [a["alias"]], mail_from="shop@sender.test", body=body)
    assert res.rcpt[a["alias"]][0] == 250 and res.delivered, res
    msgs = env.capture.wait_for(1)
    assert len(msgs) == 1
    m = msgs[0]
    assert m.rcpt_tos == [target], m.rcpt_tos
    assert m.mail_from == "shop@sender.test"
    assert b"Subject: via alias" in m.data and b"\r\n.dot line" in m.data
    assert a["alias"].encode() in m.data            # headers are not rewritten, only the envelope
    assert uses(env, a) == 1


def test_cli_alias_is_rewritten_to_target(alias_env):
    env = alias_env()
    out = env.cli("create", "--target", "cli-user@example.net", "--days", "3", "--max-usage", "2")
    assert out.returncode == 0, out.stderr
    kv = parse_kv(out.stdout)
    res = send(env.smtp_port, [kv["alias"]])
    assert res.delivered, res
    assert env.capture.wait_for(1)[0].rcpt_tos == ["cli-user@example.net"]
    assert parse_kv(env.cli("show", kv["aid"]).stdout)["uses"] == "1"


def test_alias_lookup_is_case_insensitive(alias_env):
    env = alias_env(aliases={"domains": "alias.localhost, tmp.localhost"})
    a = env.create(TARGET)
    variants = [a["alias"].upper(), a["aid"].upper() + "@alias.localhost", a["aid"] + "@ALIAS.LocalHost",
                a["aid"] + "@tmp.localhost"]
    for i, addr in enumerate(variants, start=1):
        res = send(env.smtp_port, [addr])
        assert res.delivered, f"{addr}: {res}"
        assert env.capture.wait_for(i)[-1].rcpt_tos == [TARGET], addr
    assert uses(env, a) == len(variants)


def test_alias_mixed_with_relay_recipient(alias_env):
    env = alias_env()
    a = env.create(TARGET)
    res = send(env.smtp_port, ["bob@example.org", a["alias"]])
    assert res.delivered, res
    assert sorted(env.capture.wait_for(1)[0].rcpt_tos) == sorted(["bob@example.org", TARGET])


def test_null_sender_accepted(alias_env):
    env = alias_env()
    a = env.create(TARGET)
    res = send(env.smtp_port, [a["alias"]], mail_from="")
    assert res.delivered, res
    m = env.capture.wait_for(1)[0]
    assert m.mail_from in ("", "<>") and m.rcpt_tos == [TARGET]
    assert uses(env, a) == 1


def test_same_alias_twice_counts_once(alias_env):
    env = alias_env(aliases={"domains": "alias.localhost, tmp.localhost"})
    a = env.create(TARGET, max_usage=2)
    res = send(env.smtp_port, [a["alias"], a["alias"].upper(), a["aid"] + "@tmp.localhost"])
    assert all(code == 250 for code, _ in res.rcpt.values()), res
    assert res.delivered
    msgs = env.capture.wait_for(1)
    assert len(msgs) == 1 and set(msgs[0].rcpt_tos) == {TARGET}, msgs[0].rcpt_tos
    assert uses(env, a) == 1
    # the second use is still there
    assert send(env.smtp_port, [a["alias"]]).delivered
    assert uses(env, a) == 2 and status(env, a) == "used-up"


# --------------------------------------------------------------------------- unknown / dead aliases

@pytest.mark.parametrize("local", ["abcdefghjkmnpq", "0000000000000l", "short", "a" * 64, "postmaster"])
def test_unknown_alias_550_511(alias_env, local):
    env = alias_env()
    env.create(TARGET)
    r = rcpt_reply(env, f"{local}@{ALIAS_DOMAIN}")
    assert r.code == 550 and r.enhanced == "5.1.1", str(r)
    assert env.capture.rcpt_log == []


def test_used_up_550_521(alias_env):
    env = alias_env()
    a = env.create(TARGET, max_usage=2)
    assert send(env.smtp_port, [a["alias"]]).delivered
    assert send(env.smtp_port, [a["alias"]]).delivered
    r = rcpt_reply(env, a["alias"])
    assert r.code == 550 and r.enhanced == "5.2.1", str(r)
    assert len(env.capture.messages) == 2
    g = env.http.get(a["aid"], a["manage_token"]).json
    assert (g["status"], g["uses"], g["uses_left"]) == ("used-up", 2, 0), g


def test_expired_550_521(alias_env):
    env = alias_env()
    a = env.create(TARGET, days=1)
    assert send(env.smtp_port, [a["alias"]]).delivered
    n = db_execute(env.db_path, "UPDATE aliases SET valid_until = strftime('%s','now') - 10 WHERE id = ?",
                   (a["aid"],))
    assert n == 1
    r = rcpt_reply(env, a["alias"])
    assert r.code == 550 and r.enhanced == "5.2.1", str(r)
    assert status(env, a) == "expired"
    assert len(env.capture.messages) == 1


def test_disabled_550_521(alias_env):
    env = alias_env()
    a = env.create(TARGET)
    b = env.create(TARGET)
    assert env.http.delete(a["aid"], a["manage_token"]).status == 200
    r = rcpt_reply(env, a["alias"])
    assert r.code == 550 and r.enhanced == "5.2.1", str(r)
    out = env.cli("disable", b["aid"])
    assert out.returncode == 0 and out.stdout.strip() == f"disabled {b['aid']}", out
    r = rcpt_reply(env, b["alias"])
    assert r.code == 550 and r.enhanced == "5.2.1", str(r)
    assert env.capture.rcpt_log == []


def test_rejected_alias_does_not_spoil_the_transaction(alias_env):
    env = alias_env()
    live = env.create(TARGET)
    dead = env.create("dead@example.org")
    env.http.delete(dead["aid"], dead["manage_token"])
    res = send(env.smtp_port, [dead["alias"], "nobody0000000@" + ALIAS_DOMAIN, live["alias"]])
    assert res.rcpt[dead["alias"]][0] == 550 and res.rcpt[live["alias"]][0] == 250, res
    assert res.delivered
    assert env.capture.wait_for(1)[0].rcpt_tos == [TARGET]


# --------------------------------------------------------------------------- counting: only upstream 250 counts

def test_upstream_rcpt_rejection_spends_nothing(alias_env):
    cap = Capture().start()
    try:
        env = alias_env(capture=cap)
        a = env.create(TARGET, max_usage=1)
        cap.reject_rcpt(TARGET, "550 5.1.1 <{addr}>: no such user here")
        with RawSMTP("127.0.0.1", env.smtp_port) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<s@sender.test>").code == 250
            r = c.cmd(f"RCPT TO:<{a['alias']}>")
            if r.code == 250:             # RCPT answered before the upstream: then DATA must fail
                assert c.cmd("DATA").code == 354
                c.send(dot_stuff(message()) + b".\r\n")
                r = c.reply()
            assert r.code >= 400, f"upstream rejected the target, mailkeep said {r}"
            c.cmd("QUIT")
        assert TARGET in [x.lower() for x in cap.rcpt_log]
        assert cap.messages == []
        assert uses(env, a) == 0
        assert status(env, a) == "live"
        cap.handler.reject_rcpts.clear()
        assert send(env.smtp_port, [a["alias"]]).delivered   # the single use is still there
        assert uses(env, a) == 1
    finally:
        cap.stop()


@pytest.mark.parametrize("reply", ["451 4.3.0 try again later", "554 5.6.0 content rejected"])
def test_upstream_data_rejection_spends_nothing(alias_env, reply):
    cap = Capture().start()
    try:
        env = alias_env(capture=cap)
        a = env.create(TARGET, max_usage=1)
        cap.set_data_reply(reply)
        for _ in range(3):
            res = send(env.smtp_port, [a["alias"]])
            assert res.rcpt[a["alias"]][0] == 250
            assert res.data[0] == int(reply[:3]), f"expected the upstream's {reply!r}, got {res.data}"
        assert cap.handler.data_attempts == 3
        assert uses(env, a) == 0 and status(env, a) == "live"
        cap.set_data_reply(None)
        assert send(env.smtp_port, [a["alias"]]).delivered
        assert uses(env, a) == 1 and status(env, a) == "used-up"
        assert cap.messages[0].rcpt_tos == [TARGET]
    finally:
        cap.stop()


def test_upstream_down_spends_nothing(alias_env, tmp_path):
    from harness import free_port
    env = alias_env(smarthost=f"127.0.0.1:{free_port()}")   # nobody listens there
    a = env.create(TARGET, max_usage=1)
    with RawSMTP("127.0.0.1", env.smtp_port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@sender.test>").code == 250
        r = c.cmd(f"RCPT TO:<{a['alias']}>")
        if r.code == 250:
            assert c.cmd("DATA").code == 354
            c.send(dot_stuff(message()) + b".\r\n")
            r = c.reply()
        assert 400 <= r.code < 500, str(r)
    assert uses(env, a) == 0 and status(env, a) == "live"


def test_rset_releases_the_reservation(alias_env):
    env = alias_env()
    a = env.create(TARGET, max_usage=1)
    with RawSMTP("127.0.0.1", env.smtp_port) as first, RawSMTP("127.0.0.1", env.smtp_port) as second:
        first.ehlo()
        second.ehlo()
        assert first.cmd("MAIL FROM:<s@sender.test>").code == 250
        assert first.cmd(f"RCPT TO:<{a['alias']}>").code == 250       # holds the only use
        assert second.cmd("MAIL FROM:<s@sender.test>").code == 250
        r = second.cmd(f"RCPT TO:<{a['alias']}>")
        assert r.code == 550 and r.enhanced == "5.2.1", f"the held use was given out twice: {r}"
        assert first.cmd("RSET").code == 250                          # gives it back
        r = second.cmd(f"RCPT TO:<{a['alias']}>")
        assert r.code == 250, f"RSET did not release the reservation: {r}"
        assert second.cmd("DATA").code == 354
        second.send(dot_stuff(message()) + b".\r\n")
        assert second.reply().code == 250
        # first tries again: used up now
        assert first.cmd("MAIL FROM:<s@sender.test>").code == 250
        r = first.cmd(f"RCPT TO:<{a['alias']}>")
        assert r.code == 550 and r.enhanced == "5.2.1", str(r)
    assert uses(env, a) == 1
    assert len(env.capture.messages) == 1


def test_quit_after_rcpt_spends_nothing(alias_env):
    """QUIT after RCPT ends the transaction without delivery: the held use comes back."""
    env = alias_env()
    a = env.create(TARGET, max_usage=1)
    for _ in range(3):
        with RawSMTP("127.0.0.1", env.smtp_port) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<s@sender.test>").code == 250
            assert c.cmd(f"RCPT TO:<{a['alias']}>").code == 250
            assert c.cmd("QUIT").code == 221
    assert wait_until(lambda: rcpt_reply(env, a["alias"]).code == 250)
    assert uses(env, a) == 0


@pytest.mark.parametrize("where", ["after-rcpt", "in-data"])
def test_disconnect_spends_nothing(alias_env, where):
    env = alias_env()
    a = env.create(TARGET, max_usage=1)
    c = RawSMTP("127.0.0.1", env.smtp_port)
    c.ehlo()
    assert c.cmd("MAIL FROM:<s@sender.test>").code == 250
    assert c.cmd(f"RCPT TO:<{a['alias']}>").code == 250
    if where == "in-data":
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: half a message\r\n\r\nsome text but no end")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    c.close()
    # the reservation comes back once mailkeep notices the disconnect
    assert wait_until(lambda: rcpt_reply(env, a["alias"]).code == 250, timeout=10), \
        "the use held by a disconnected session was not released"
    assert uses(env, a) == 0
    assert env.capture.messages == []
    assert send(env.smtp_port, [a["alias"]]).delivered
    assert uses(env, a) == 1


# --------------------------------------------------------------------------- concurrency

def _concurrent_senders(env, alias: str, n: int, lockstep: bool):
    """n sessions. lockstep: all RCPTs are issued before any DATA (every use is in flight)."""
    rcpt_barrier = threading.Barrier(n)
    data_barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", env.smtp_port, timeout=60) as s:
                s.ehlo(f"c{i}.test")
                assert s.mail(f"s{i}@sender.test")[0] == 250
                if lockstep:
                    rcpt_barrier.wait(30)
                code, msg = s.rcpt(alias)
                if lockstep:
                    data_barrier.wait(30)
                if code != 250:
                    results[i] = ("rcpt", code, msg)
                    return
                dcode, dmsg = s.data(message(subject=f"concurrent {i}", to=alias))
                results[i] = ("data", dcode, dmsg)
        except Exception as exc:  # noqa: BLE001 -- reported below
            results[i] = ("error", repr(exc), b"")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


@pytest.mark.parametrize("lockstep", [True, False], ids=["all-rcpt-in-flight", "free-running"])
def test_max_usage_with_concurrent_senders(alias_env, lockstep):
    env = alias_env(smtp={"max_connections": 100})
    a = env.create(TARGET, max_usage=5)
    results = _concurrent_senders(env, a["alias"], 20, lockstep)
    errors = [r for r in results if r is None or r[0] == "error"]
    assert not errors, results
    delivered = [r for r in results if r[0] == "data" and r[1] == 250]
    refused = [r for r in results if r[0] == "rcpt"]
    assert len(delivered) == 5, results
    assert len(refused) == 15, results
    for _, code, msg in refused:
        assert code == 550 and msg.startswith(b"5.2.1"), (code, msg)
    msgs = env.capture.wait_for(5, timeout=5)
    time.sleep(0.3)
    assert len(env.capture.messages) == 5, len(env.capture.messages)
    assert all(m.rcpt_tos == [TARGET] for m in msgs)
    g = env.http.get(a["aid"], a["manage_token"]).json
    assert (g["uses"], g["status"], g["uses_left"]) == (5, "used-up", 0), g


def test_concurrent_senders_with_failing_upstream_do_not_leak_uses(alias_env):
    """10 concurrent transactions all refused at end of data: no use is spent or left held."""
    cap = Capture().start()
    try:
        env = alias_env(capture=cap)
        a = env.create(TARGET, max_usage=3)
        cap.set_data_reply("451 4.3.0 busy")
        results = _concurrent_senders(env, a["alias"], 10, lockstep=False)
        assert all(r[0] == "data" and r[1] == 451 or r[0] == "rcpt" and r[1] == 550 for r in results), results
        assert uses(env, a) == 0
        cap.set_data_reply(None)
        for _ in range(3):
            assert send(env.smtp_port, [a["alias"]]).delivered
        assert uses(env, a) == 3
        r = rcpt_reply(env, a["alias"])
        assert r.code == 550 and r.enhanced == "5.2.1"
    finally:
        cap.stop()


def test_uses_survive_restart(alias_env, capture):
    env = alias_env(capture=capture, name="persist")
    a = env.create(TARGET, max_usage=2)
    assert send(env.smtp_port, [a["alias"]]).delivered
    assert env.mk.stop() == 0
    env.start()
    assert send(env.smtp_port, [a["alias"]]).delivered
    r = rcpt_reply(env, a["alias"])
    assert r.code == 550 and r.enhanced == "5.2.1", f"use count lost over a restart: {r}"
    assert uses(env, a) == 2 and len(capture.messages) == 2
