"""Milters ([milter] smtp): a scripted milter on Debian's libmilter (python3-milter) for each
action, a hostile one on raw sockets for each way a milter can fail, and what the client, the
upstream and the archive see. Real peers only: libmilter speaks the MTA protocol's other side."""

from __future__ import annotations

import json
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from backup_support import backup_gateway, make_message, outbound_smtp  # noqa: F401  (fixture)
from harness import Capture, RawSMTP, free_port, wait_port
from milters.hostile_milter import HostileMilter

SCRIPT = Path(__file__).parent / "milters" / "script_milter.py"


class ScriptMilter:
    """script_milter.py on inet:127.0.0.1:PORT with `plan`; .events() reads what it saw."""

    def __init__(self, tmp: Path, plan: dict, name: str = "script", port: int | None = None):
        self.port = port or free_port()
        self.spec = f"inet:127.0.0.1:{self.port}"
        self.plan_path, self.record = tmp / f"{name}.plan.json", tmp / f"{name}.record.jsonl"
        self.plan_path.write_text(json.dumps(plan))
        self.record.write_text("")
        self.log = open(tmp / f"{name}.log", "w")
        self.proc = subprocess.Popen(["/usr/bin/python3", str(SCRIPT), f"inet:{self.port}@127.0.0.1",
                                      str(self.plan_path), str(self.record)], stdout=self.log, stderr=self.log)
        wait_port("127.0.0.1", self.port, proc=self.proc)

    def events(self, kind: str | None = None) -> list[dict]:
        out = [json.loads(line) for line in self.record.read_text().splitlines() if line]
        return [e for e in out if kind is None or e["event"] == kind]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def milters(tmp_path):
    started: list = []

    def start(plan: dict | None = None, name: str = "script", hostile: tuple | None = None, port: int | None = None):
        m = HostileMilter(*hostile).start() if hostile else ScriptMilter(tmp_path, plan or {}, name, port)
        started.append(m)
        return m
    yield start
    for m in started:
        m.stop()


@pytest.fixture
def capture():
    c = Capture().start()
    yield c
    c.stop()


def gateway(backup_gateway, capture, specs, **milter):  # noqa: F811
    cfg = {"smtp": ", ".join(specs), "connect_timeout": 3, "command_timeout": 3, "content_timeout": 5, **milter}
    return backup_gateway(capture.address, milter=cfg)


def send(gw, rcpts, msg: bytes, sender="someone@client.test"):
    """(RCPT replies, DATA reply) over smtplib, never raising for a refusal."""
    with smtplib.SMTP(gw.host, gw.port, timeout=60) as s:
        s.ehlo("client.test")
        code, text = s.mail(sender)
        if code != 250:
            return {"MAIL": (code, text)}, None
        replies = {r: s.rcpt(r) for r in rcpts}
        if not any(c == 250 for c, _ in replies.values()):
            return replies, None
        try:
            return replies, s.data(msg)        # (code, text): smtplib raises only for a refused DATA
        except smtplib.SMTPResponseException as e:
            return replies, (e.smtp_code, e.smtp_error)


def archived_bodies(gw, user="alice", folder="INBOX"):
    return [p.read_bytes() for p in gw.delivered(user, folder)]


# --------------------------------------------------------------------------- actions

def test_header_edits_reach_the_upstream_and_the_archive_byte_for_byte(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"edits": [["addheader", "X-Scanned", "by script milter"],
                           ["chgheader", "Subject", 1, "[checked] original subject"],
                           ["insheader", 0, "X-Top", "inserted at the very top"],
                           ["delheader", "X-Remove-Me", 1],
                           ["addheader", "X-Folded", "line one\n\tline two"]]})
    gw = gateway(backup_gateway, capture, [m.spec])
    msg = make_message("edits", to="alice@example.org").replace(
        b"\r\n\r\n", b"\r\nX-Remove-Me: secret\r\n\r\n", 1)
    rcpt, data = send(gw, ["alice@example.org"], msg)
    assert data[0] == 250, (rcpt, data)
    up = capture.wait_for(1)[0].data
    assert b"X-Scanned: by script milter\r\n" in up
    assert b"Subject: [checked] original subject\r\n" in up
    assert b"X-Remove-Me" not in up
    assert b"X-Folded: line one\r\n\tline two\r\n" in up
    assert up.startswith(b"X-Top: inserted at the very top\r\nReceived: from client.test"), up[:200]
    # The archive copy holds the same message: after its own Return-Path/Delivered-To lines.
    copy = archived_bodies(gw)[0]
    assert copy.endswith(up), (copy[:300], up[:300])
    # The milter saw the client's headers, not our Received field, and the body as sent.
    eom = m.events("eom")[0]
    names = [h[0] for h in eom["headers"]]
    assert "Received" not in names and "X-Remove-Me" in names and "Subject" in names
    assert eom["body"].replace("\r\n", "\n").strip() == msg.split(b"\r\n\r\n", 1)[1].decode().replace("\r\n", "\n").strip()
    assert eom["macros"]["i"].startswith(eom["macros"]["i"].split(".")[0])
    log = gw.log()
    assert f"milter {m.spec}" not in log or "error" not in log


def test_replace_body_reaches_upstream_and_archive(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"edits": [["replacebody", "the milter's own body\nwith a bare LF line\r\n"]]})
    gw = gateway(backup_gateway, capture, [m.spec])
    rcpt, data = send(gw, ["alice@example.org"], make_message("body"))
    assert data[0] == 250, (rcpt, data)
    up = capture.wait_for(1)[0].data
    assert up.split(b"\r\n\r\n", 1)[1] == b"the milter's own body\r\nwith a bare LF line\r\n"
    assert archived_bodies(gw)[0].endswith(up)


def test_quarantine_keeps_it_out_of_the_upstream_and_files_it_as_junk(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"edits": [["quarantine", "looks like a phish"]]})
    gw = gateway(backup_gateway, capture, [m.spec])
    rcpt, data = send(gw, ["alice@example.org"], make_message("quarantine"))
    assert data[0] == 250, (rcpt, data)
    time.sleep(0.5)
    assert capture.messages == [] and capture.rcpt_log == ["alice@example.org"]
    assert len(archived_bodies(gw, folder="Junk")) == 1 and archived_bodies(gw) == []
    assert "quarantined: milter" in gw.log() and "looks like a phish" in gw.log()


def test_added_recipient_is_routed_and_archived_like_any_recipient(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"edits": [["addrcpt", "<bob@example.org>"], ["addrcpt", "stranger@elsewhere.test"],
                           ["addrcpt", "<nobody@example.org>"], ["addrcpt_par", "<Alice@example.org>", "NOTIFY=NEVER"]]})
    gw = gateway(backup_gateway, capture, [m.spec])
    rcpt, data = send(gw, ["alice@example.org"], make_message("added", to="alice@example.org"))
    assert data[0] == 250, (rcpt, data)
    up = capture.wait_for(1)[0]
    # bob is a backed-up account: relayed and archived; an outside address and an unknown
    # account are refused by routing as they would be at RCPT; alice is there already.
    assert sorted(up.rcpt_tos) == ["alice@example.org", "bob@example.org"], up.rcpt_tos
    assert len(archived_bodies(gw, "bob")) == 1 and archived_bodies(gw, "bob")[0].endswith(up.data)
    assert len(archived_bodies(gw)) == 1
    log = gw.log()
    assert f"milter {m.spec}: recipient <bob@example.org> added" in log
    assert "add recipient <stranger@elsewhere.test> dropped: refused by routing" in log
    assert "add recipient <nobody@example.org> dropped: refused by routing" in log
    assert "add recipient <Alice@example.org> dropped: already a recipient" in log


def test_deleted_recipient_and_changed_sender_restart_the_upstream_transaction(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"edits": [["delrcpt", "<alice@example.org>"], ["chgfrom", "<rewritten@client.test>"],
                           ["delrcpt", "<carol@example.org>"]]})
    gw = gateway(backup_gateway, capture, [m.spec])
    rcpt, data = send(gw, ["alice@example.org", "bob@example.org"], make_message("deleted", to="alice@example.org"))
    assert data[0] == 250, (rcpt, data)
    up = capture.wait_for(1)[0]
    assert up.mail_from == "rewritten@client.test" and up.rcpt_tos == ["bob@example.org"], up
    assert capture.handler.mail_log == ["someone@client.test", "rewritten@client.test"]
    # The deleted recipient gets no archive copy either; the remaining one does.
    assert archived_bodies(gw) == [] and len(archived_bodies(gw, "bob")) == 1
    log = gw.log()
    assert "recipient <alice@example.org> deleted" in log and "sender <someone@client.test> changed to" in log
    assert "delete recipient <carol@example.org>: not a recipient of this message" in log


def test_milter_that_deletes_every_recipient_delivers_nowhere(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"edits": [["delrcpt", "<alice@example.org>"]]})
    gw = gateway(backup_gateway, capture, [m.spec])
    rcpt, data = send(gw, ["alice@example.org"], make_message("none left"))
    assert data[0] == 250, (rcpt, data)
    time.sleep(0.3)
    assert capture.messages == [] and archived_bodies(gw) == []
    assert "the milters removed every recipient" in gw.log()
    # The session goes on: the next message (subject differs, same plan) is judged the same way.
    assert send(gw, ["alice@example.org", "bob@example.org"], make_message("next"))[1][0] == 250
    assert capture.wait_for(1)[0].rcpt_tos == ["bob@example.org"]


def test_added_recipient_refused_upstream_is_dropped_and_a_4xx_defers(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"edits": [["addrcpt", "<bob@example.org>"]]})
    gw = gateway(backup_gateway, capture, [m.spec])
    capture.handler.reject_rcpts["bob@example.org"] = "550 5.1.1 no such user here"
    rcpt, data = send(gw, ["alice@example.org"], make_message("refused"))
    assert data[0] == 250, (rcpt, data)
    assert capture.wait_for(1)[0].rcpt_tos == ["alice@example.org"]
    assert archived_bodies(gw, "bob") == [], "no archive copy for a recipient the upstream refused"
    assert "refused the milter-added recipient <bob@example.org>" in gw.log()
    capture.handler.reject_rcpts["bob@example.org"] = "451 4.3.0 try later"
    rcpt, data = send(gw, ["alice@example.org"], make_message("deferred"))
    assert data[0] == 451, data
    time.sleep(0.3)
    assert len(capture.messages) == 1 and len(archived_bodies(gw)) == 1, "nothing new relayed or archived"


def test_reject_tempfail_and_replycode_at_each_stage(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"reject_rcpt": ["bob@example.org"],
                 "eom": ["reply", "554", "5.7.1", "rejected by policy: %% spam", "second line"],
                 "when_subject": "GTUBE"})
    gw = gateway(backup_gateway, capture, [m.spec])
    # RCPT: the milter's own reply, one recipient only.
    rcpt, data = send(gw, ["bob@example.org", "alice@example.org"], make_message("ok"))
    assert rcpt["bob@example.org"][0] == 550 and b"is not wanted here" in rcpt["bob@example.org"][1], rcpt
    assert rcpt["alice@example.org"][0] == 250 and data[0] == 250
    assert capture.wait_for(1)[0].rcpt_tos == ["alice@example.org"]
    # End of message: a multi-line reply as the milter wrote it, '%%' undone.
    msg = make_message("x").replace(b"Subject: ", b"Subject: GTUBE ", 1)
    rcpt, data = send(gw, ["alice@example.org"], msg)
    assert data[0] == 554 and b"rejected by policy: % spam" in data[1] and b"second line" in data[1], data
    time.sleep(0.3)
    assert len(capture.messages) == 1, "a rejected message never goes upstream"
    assert len(archived_bodies(gw)) == 1, "nor into the archive"
    assert f"milter {m.spec}: reject at end of message" in gw.log()


def milter_connections(port: int) -> list[str]:
    """Local ends ("127.0.0.1:PORT") of the established TCP connections to the milter's port."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "dport", "=", f":{port}"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[-2] for line in out.splitlines() if line.strip())


def test_milter_connection_is_reused_across_sessions_after_a_finished_message(backup_gateway, capture, milters):  # noqa: F811
    m = milters({})
    gw = gateway(backup_gateway, capture, [m.spec])
    assert send(gw, ["alice@example.org"], make_message("first"))[1][0] == 250
    time.sleep(0.2)
    idle = milter_connections(m.port)
    assert len(idle) == 1, idle          # kept after QUIT_NC for the next session
    assert send(gw, ["alice@example.org"], make_message("second"))[1][0] == 250
    time.sleep(0.2)
    assert milter_connections(m.port) == idle, "the second session reused the same connection"
    # The milter saw each session from its start: two connects, two messages, their own macros.
    # (one more connect: mailkeep's start-up check of the milter, on a connection of its own)
    assert len(m.events("helo")) == 2 and len(m.events("eom")) == 2 and len(m.events("connect")) == 3
    ids = [e["macros"]["i"] for e in m.events("eom")]
    assert ids[0] != ids[1]
    assert len(capture.wait_for(2)) == 2
    # A session that ends without a message takes the idle connection and cannot give it
    # back (libmilter takes QUIT_NC only after an end of message): it is closed, not left
    # in a state the next session would trip over.
    with RawSMTP(gw.host, gw.port) as c:
        assert c.ehlo().code == 250
        c.cmd("QUIT")
    time.sleep(0.3)
    assert milter_connections(m.port) == []
    assert send(gw, ["alice@example.org"], make_message("third"))[1][0] == 250
    assert len(capture.wait_for(3)) == 3


def test_idle_milter_connection_that_died_is_replaced(backup_gateway, capture, milters, tmp_path):  # noqa: F811
    m = milters({}, name="before")
    gw = gateway(backup_gateway, capture, [m.spec])
    assert send(gw, ["alice@example.org"], make_message("before restart"))[1][0] == 250
    port = m.port
    m.stop()                                     # the idle connection is now dead
    m2 = milters({}, name="after", port=port)
    rcpt, data = send(gw, ["alice@example.org"], make_message("after restart"))
    assert data[0] == 250, (rcpt, data)
    assert len(m2.events("eom")) == 1 and len(capture.wait_for(2)) == 2
    assert "following default_action" not in gw.log()


def test_connect_and_helo_verdicts(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"connect": "tempfail"})
    gw = gateway(backup_gateway, capture, [m.spec])
    with RawSMTP(gw.host, gw.port) as c:
        r = c.banner
        assert r.code == 421 and r.enhanced == "4.7.1", r
    m2 = milters({"helo": "reject"}, name="helo")
    gw2 = gateway(backup_gateway, capture, [m2.spec])
    with RawSMTP(gw2.host, gw2.port) as c:
        assert c.banner.code == 220
        r = c.ehlo()
        assert (r.code, r.enhanced) == (550, "5.7.1"), r
        assert c.cmd("MAIL FROM:<a@b.test>").code == 503     # no HELO was accepted
        c.cmd("QUIT")


def test_discard_answers_250_and_delivers_nowhere(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"eom": "discard"})
    gw = gateway(backup_gateway, capture, [m.spec])
    rcpt, data = send(gw, ["alice@example.org"], make_message("discard"))
    assert data[0] == 250, data
    time.sleep(0.3)
    assert capture.messages == [] and archived_bodies(gw) == []
    assert "discarded: milter" in gw.log()


def test_two_milters_run_in_order_and_the_second_sees_the_first_ones_header(backup_gateway, capture, milters):  # noqa: F811
    first = milters({"edits": [["addheader", "Authentication-Results", "mx.test.example; dkim=pass"]]}, name="first")
    second = milters({}, name="second")
    gw = gateway(backup_gateway, capture, [first.spec, second.spec])
    assert send(gw, ["alice@example.org"], make_message("two"))[1][0] == 250
    names = [h[0] for h in second.events("eom")[0]["headers"]]
    assert "Authentication-Results" in names
    assert b"Authentication-Results: mx.test.example; dkim=pass" in capture.wait_for(1)[0].data


def test_macros_and_envelope_reach_the_milter(backup_gateway, capture, milters):  # noqa: F811
    m = milters({})
    gw = gateway(backup_gateway, capture, [m.spec])
    assert send(gw, ["alice@example.org"], make_message("macros"), sender="Bob@client.test")[1][0] == 250
    conn = m.events("connect")[0]
    assert conn["addr"] == "127.0.0.1" and conn["macros"]["j"] == "mx.test.example"
    assert conn["macros"]["{daemon_name}"] == "smtp" and conn["macros"]["v"].startswith("mailkeep")
    assert m.events("helo")[0]["name"] == "client.test"
    env = m.events("envfrom")[0]
    assert env["sender"] == "<Bob@client.test>" and env["macros"]["{mail_addr}"] == "Bob@client.test"
    assert m.events("envrcpt")[0]["macros"]["{rcpt_addr}"] == "alice@example.org"
    assert m.events("eom")[0]["macros"]["i"]


def test_outbound_mail_skips_milters_unless_configured(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"eom": "reject"})
    gw = gateway(backup_gateway, capture, [m.spec])
    with outbound_smtp(gw) as s:     # from the provider's outbound relay
        s.sendmail("alice@example.org", ["someone@elsewhere.test"], make_message("out", sender="alice@example.org"))
    assert capture.wait_for(1)
    assert m.events("envfrom") == []     # (the start-up probe connected from 127.0.0.1; no mail)
    m2 = milters({"eom": "reject"}, name="out")
    gw2 = gateway(backup_gateway, capture, [m2.spec], outbound="true")
    with outbound_smtp(gw2) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("alice@example.org", ["someone@elsewhere.test"], make_message("out2", sender="alice@example.org"))
        assert e.value.smtp_code == 550


# --------------------------------------------------------------------------- failures

@pytest.mark.parametrize("mode,at", [("garbage", "R"), ("huge", "L"), ("stall", "B"), ("disconnect", "B"),
                                     ("badneg", "O"), ("stall", "E")])
def test_hostile_milter_follows_default_action_and_is_named(backup_gateway, capture, milters, mode, at):  # noqa: F811
    h = milters(hostile=(mode, at))
    gw = gateway(backup_gateway, capture, [h.spec])
    try:
        rcpt, data = send(gw, ["alice@example.org"], make_message(f"hostile-{mode}"))
        codes = [c for c, _ in rcpt.values()] + ([data[0]] if data else [])
    except smtplib.SMTPConnectError as e:      # failed at connect: the greeting says so
        rcpt, data, codes = {}, None, [e.smtp_code]
    assert any(400 <= c < 500 for c in codes), (rcpt, data)      # default_action = tempfail
    assert all(c != 250 for c in codes[-1:]), "never a 250 for mail a milter could not judge"
    time.sleep(0.3)
    assert capture.messages == [] and archived_bodies(gw) == []
    log = gw.log()
    assert f"milter {h.spec}:" in log and "following default_action = tempfail" in log, log[-2000:]
    # The session survives: the next command is answered.
    with RawSMTP(gw.host, gw.port) as c:
        assert c.banner.code in (220, 421)


def test_down_milter_with_accept_and_reject_default_actions(backup_gateway, capture):  # noqa: F811
    dead = f"inet:127.0.0.1:{free_port()}"
    gw = gateway(backup_gateway, capture, [dead], default_action="accept")
    assert send(gw, ["alice@example.org"], make_message("accept"))[1][0] == 250
    assert capture.wait_for(1)
    gw2 = gateway(backup_gateway, capture, [dead], default_action="reject")
    with RawSMTP(gw2.host, gw2.port) as c:
        r = c.banner
        assert (r.code, r.enhanced) == (554, "5.7.1"), r
    gw3 = gateway(backup_gateway, capture, [dead])    # the default: tempfail
    with RawSMTP(gw3.host, gw3.port) as c:
        r = c.banner
        assert (r.code, r.enhanced) == (421, "4.7.1"), r
    assert f"milter {dead}: connect:" in gw3.log()


def test_milter_verdicts_in_stats_and_metrics(backup_gateway, capture, milters):  # noqa: F811
    m = milters({"eom": "reject"})
    gw = gateway(backup_gateway, capture, [m.spec])
    send(gw, ["alice@example.org"], make_message("stats"))
    assert gw.mk.stop() == 0
    out = subprocess.run([str(gw.mk.binary), "stats", "-c", str(gw.config_path)], capture_output=True, text=True,
                         cwd=gw.mk.workdir, timeout=20).stdout
    assert f'milter{{milter="{m.spec}",verdict="reject"}} 1' in out, out


def test_bad_milter_configuration_is_refused_with_file_and_line(tmp_path):
    from harness import MAILKEEP_BIN
    cfg = tmp_path / "m.ini"
    for bad, what in [("smtp = tcp:1.2.3.4:5", "expected inet:HOST:PORT or unix:/PATH"),
                      ("smtp = inet:127.0.0.1", "expected inet:HOST:PORT"),
                      ("smtp = inet:127.0.0.1:99999", "bad port"),
                      ("smtp = unix:relative.sock", "absolute socket path"),
                      ("default_action = maybe", "expected one of tempfail | accept | reject")]:
        cfg.write_text(f"[milter]\n{bad}\n")
        r = subprocess.run([str(MAILKEEP_BIN), "check-config", "-c", str(cfg)], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode != 0 and f"{cfg}:2" in r.stderr and what in r.stderr, (bad, r.stderr)
