"""THE DRILL: the provider closes the account, mailkeep carries on standalone, and later hands
everything back (/work/standalone_spec.md: [backup] standalone, SIGHUP, `mailkeep backup replay`).

One sequence, against real peers:

 1. gateway mode: 100 messages are archived (INBOX) and relayed to the upstream (a capture);
 2. the upstream starts answering 550 to everything: a message gets that 550 and is not archived;
 3. the config is rewritten with standalone = true and mailkeep gets SIGHUP while 8 client
    threads keep sending: every acknowledged message is in the archive exactly once, every
    refused one is not (counted by Message-ID over INBOX new/ and cur/);
 4. 100 more messages arrive standalone and are read back byte for byte over IMAP from a
    Dovecot started from exactly `mailkeep dovecot-config` (passwords from `user passwd --stdin`);
 5. a mail client (smtplib, STARTTLS with the test CA, AUTH LOGIN) sends 10 messages on the
    [submission] port: they are at the smarthost (another capture) and in the user's Sent;
 6. back to gateway mode: `backup replay` (--dry-run, --user, a refusing upstream, then for real)
    hands exactly the standalone-acknowledged messages to the upstream, once; a second replay
    sends none;
 7. another standalone round of 60 messages; a replay towards a slow upstream is SIGKILLed
    halfway (while the upstream holds the reply to one message), a second replay finishes:
    every message arrived exactly once overall.
"""

from __future__ import annotations

import random
import re
import signal
import smtplib
import subprocess
import threading
import time
from collections import Counter

import pytest

from backup_support import DOMAIN, message_id
from harness import ConnectionClosed, RawSMTP, dot_stuff, split_received
from standalone_support import (  # noqa: F401  (pytest fixtures)
    MAILKEEP, MkDovecot, SwitchCapture, close_imap, imap_folder, imap_login, mid, pki, site_factory,
    smtp_tls_context, split_prefix, tagged_message,
)

USERS = ["alice", "bob"]
PASSWORDS = {"alice": "drill-alice-pw-1", "bob": "drill-bob-pw-22"}
REPLAYED = re.compile(r"^replayed (\d+) of (\d+) message\(s\) to (\S+?)[;.:,\s]", re.M)
WOULD = re.compile(r"^(\d+) message\(s\) would be replayed$", re.M)


def addr(user: str) -> str:
    return f"{user}@{DOMAIN}"


# --------------------------------------------------------------------------- clients

def transaction(c: RawSMTP, sender: str, rcpt: str, msg: bytes, params: str = ""):
    """MAIL/RCPT/DATA without pipelining; RSET after a refusal (not after 421: the server has
    closed the connection). Returns the deciding reply."""
    def refused(r) -> bool:
        if r.code == 421:
            return True
        c.cmd("RSET")
        return True

    r = c.cmd(f"MAIL FROM:<{sender}>" + (f" {params}" if params else ""))
    if r.code != 250 and refused(r):
        return r
    r = c.cmd(f"RCPT TO:<{rcpt}>")
    if r.code != 250 and refused(r):
        return r
    r = c.cmd("DATA")
    if r.code != 354 and refused(r):
        return r
    c.send(dot_stuff(msg) + b".\r\n")
    return c.reply()


def send_batch(site, items: list[tuple[str, str, bytes, str]], per_session: int = 40) -> list:
    """items: (sender, rcpt, message, MAIL parameters). Returns the replies, in order."""
    replies = []
    for i in range(0, len(items), per_session):
        with RawSMTP(site.host, site.port, timeout=60) as c:
            c.ehlo("mx.sender.test")
            for sender, rcpt, msg, params in items[i:i + per_session]:
                replies.append(transaction(c, sender, rcpt, msg, params))
            c.cmd("QUIT")
    return replies


def varied_message(tag: str, sender: str, to: str, i: int) -> tuple[bytes, str]:
    """Mostly small messages, some with lines starting with a dot, 8-bit text, an over-long
    line or a large body. Returns (message, MAIL parameters)."""
    msg = tagged_message(tag, sender, to, size=10 + i % 7)
    params = ""
    kind = i % 10
    if kind == 1:
        msg += b".leading dot\r\n..two dots\r\n.\r\nafter a lone dot line\r\n"
    elif kind == 2:
        msg += "Gr\u00fc\u00dfe aus K\u00f6ln \u2014 \u65e5\u672c\u8a9e\r\n".encode()
        params = "BODY=8BITMIME"
    elif kind == 3:
        msg += b"x" * 1500 + b"\r\n"
    elif kind == 4 and i % 40 == 4:
        rnd = random.Random(tag)
        msg += b"".join(bytes(rnd.choice(b"abcdefghij klmnop") for _ in range(76)) + b"\r\n"
                        for _ in range(3000))
    return msg, params


# --------------------------------------------------------------------------- checks

def archive_ids(site) -> dict[str, Counter]:
    return {u: site.archived_ids(u) for u in USERS}


def journal_entries(site, sub: str = "new") -> Counter:
    """(Message-ID, X-Original-To) of each journal file in new/ (or cur/)."""
    out = Counter()
    for p in site.journal_files(sub):
        data = p.read_bytes()
        m = re.match(rb"Return-Path: <([^>]*)>\r\nX-Original-To: <([^>]*)>\r\n", data)
        assert m, f"{p.name}: journal file does not start with Return-Path/X-Original-To: {data[:200]!r}"
        out[(message_id(data), m.group(2).decode().lower())] += 1
    return out


def replay_result(res: subprocess.CompletedProcess) -> tuple[int, int]:
    m = REPLAYED.search(res.stdout)
    assert m, f"no 'replayed N of M' line (exit {res.returncode}): {res.stdout!r} {res.stderr!r}"
    return int(m.group(1)), int(m.group(2))


def check_replayed_copies(up: SwitchCapture, sent: dict[tuple[str, str], tuple[str, bytes]]) -> None:
    """Every message at the upstream is one we sent, to its recipient, with its original
    sender, and ends with the exact bytes the client sent (behind mailkeep's Received)."""
    for m in up.messages:
        assert len(m.rcpt_tos) == 1, m.rcpt_tos
        key = (message_id(m.data), m.rcpt_tos[0].lower())
        assert key in sent, f"unexpected message at the upstream: {key}"
        sender, msg = sent[key]
        assert m.mail_from == sender, (key, m.mail_from)
        received, rest = split_received(m.data)
        assert rest == msg, f"{key}: the replayed message differs from what the client sent"
        assert b"by mx.test.example (mailkeep)" in received, received


# --------------------------------------------------------------------------- the drill

@pytest.fixture
def peers():
    upstream, smarthost = SwitchCapture(hostname="inbound.provider.test").start(), \
        SwitchCapture(hostname="smarthost.test").start()
    yield upstream, smarthost
    upstream.stop()
    smarthost.stop()


def test_drill(site_factory, peers, pki):
    up, smart = peers
    site = site_factory(up.address, smart.address, users=USERS, pki=pki, user="mail")
    for u in USERS:
        site.set_password(addr(u), PASSWORDS[u])

    # ---------------------------------------------------------------- 1. gateway mode
    gateway = [(f"gw-{i}", USERS[i % 2]) for i in range(100)]
    items = []
    for tag, u in gateway:
        msg, params = varied_message(tag, f"s{tag}@remote.test", addr(u), int(tag.split("-")[1]))
        items.append((f"s{tag}@remote.test", addr(u), msg, params))
    replies = send_batch(site, items)
    assert [r.code for r in replies] == [250] * 100, [str(r) for r in replies if r.code != 250][:3]
    assert up.ids() == Counter((mid(tag), addr(u)) for tag, u in gateway)
    for m in up.messages:       # relayed with mailkeep's Received on top, otherwise unchanged
        tag = message_id(m.data)[1:].split("@")[0]
        assert split_received(m.data)[1] == items[int(tag.split("-")[1])][2], tag
    ids = archive_ids(site)
    for u in USERS:
        assert ids[u] == Counter(mid(t) for t, uu in gateway if uu == u), f"{u}: INBOX after gateway mode"
    assert journal_entries(site) == Counter(), "gateway mode wrote to the replay journal"
    assert smart.messages == []
    up.clear()

    # ---------------------------------------------------------------- 2. the account is closed
    up.refuse("550 5.2.1 <alice@example.org>: mailbox closed, account terminated")
    closed_msg = tagged_message("closed-1", "late@remote.test", addr("alice"))
    [r] = send_batch(site, [("late@remote.test", addr("alice"), closed_msg, "")])
    assert r.code == 550 and "account terminated" in r.text, f"the upstream's 550 was not passed on: {r}"
    assert mid("closed-1") not in site.archived_ids("alice"), "a message the upstream refused was archived"
    assert journal_entries(site) == Counter()

    # ---------------------------------------------------------------- 3. SIGHUP under load
    results: list[tuple[str, str, int]] = []      # (tag, user, reply code)
    lock = threading.Lock()
    switched = threading.Event()
    errors: list[str] = []
    bodies: dict[tuple[str, str], tuple[str, bytes]] = {}

    def sender_thread(n: int) -> None:
        acked_after_switch = 0
        seq = 0
        try:
            c = RawSMTP(site.host, site.port, timeout=60)
            c.ehlo(f"client{n}.test")
            while acked_after_switch < 12 and seq < 2000:
                seq += 1
                tag = f"hup-{n}-{seq}"
                u = USERS[(n + seq) % 2]
                sender = f"t{n}@remote.test"
                msg = tagged_message(tag, sender, addr(u))
                was_switched = switched.is_set()
                try:
                    r = transaction(c, sender, addr(u), msg)
                except (ConnectionClosed, OSError) as exc:
                    raise AssertionError(f"thread {n}: connection lost at {tag}: {exc}") from exc
                with lock:
                    results.append((tag, u, r.code))
                    bodies[(mid(tag), addr(u))] = (sender, msg)
                if r.code == 250 and was_switched:
                    acked_after_switch += 1
                elif r.code == 421:
                    c.close()
                    c = RawSMTP(site.host, site.port, timeout=60)
                    c.ehlo(f"client{n}.test")
                if not switched.is_set():
                    time.sleep(0.005)
            c.close()
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(f"thread {n}: {exc!r}")

    threads = [threading.Thread(target=sender_thread, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while sum(1 for _, _, code in list(results) if code == 550) < 24 and time.monotonic() < deadline:
        time.sleep(0.02)
    site.set_standalone(True)
    switched.set()
    for t in threads:
        t.join(120)
    assert not errors, errors
    codes = Counter(code for _, _, code in results)
    # 421: too many errors in one session ([smtp] max_errors), the thread reconnects
    assert set(codes) <= {250, 550, 421}, f"unexpected replies during the switch: {codes}"
    assert codes[550] >= 24 and codes[250] >= 8 * 12, codes
    acked = Counter((mid(tag), addr(u)) for tag, u, code in results if code == 250)
    refused = {(mid(tag), addr(u)) for tag, u, code in results if code != 250}
    ids = archive_ids(site)
    for u in USERS:
        doubled = [m for m, n in ids[u].items() if n > 1]
        assert not doubled, f"{u}: archived twice: {doubled[:5]}"
    archived = {(m, addr(u)) for u in USERS for m in ids[u]}
    missing = [k for k in acked if k not in archived]
    assert not missing, f"{len(missing)} acknowledged messages are not in the archive, e.g. {missing[:5]}"
    stray = [k for k in refused if k in archived]
    assert not stray, f"{len(stray)} refused messages were archived, e.g. {stray[:5]}"
    assert up.messages == [], "mail reached the closed upstream"
    # the journal holds exactly the standalone-acknowledged messages
    standalone_acked = Counter(acked)
    assert journal_entries(site) == standalone_acked

    # ---------------------------------------------------------------- 4. 100 more, over IMAP
    more = []
    expected_bytes: dict[str, bytes] = {}
    for i in range(100):
        tag = f"sa-{i}"
        u = "alice" if i % 4 else "bob"
        msg, params = varied_message(tag, f"m{i}@remote.test", addr(u), i)
        more.append((f"m{i}@remote.test", addr(u), msg, params))
        expected_bytes[mid(tag)] = msg
        bodies[(mid(tag), addr(u))] = (f"m{i}@remote.test", msg)
    replies = send_batch(site, more)
    assert all(r.code == 250 and "recorded for replay" in r.text for r in replies), \
        [str(r) for r in replies if r.code != 250 or "recorded for replay" not in r.text][:3]
    for _, rcpt, msg, _ in more:
        standalone_acked[(message_id(msg), rcpt)] += 1
    assert journal_entries(site) == standalone_acked
    assert up.messages == []
    # the replay refuses while the configuration still says standalone
    res = site.replay()
    assert res.returncode == 1 and "standalone" in res.stderr, (res.returncode, res.stdout, res.stderr)
    assert journal_entries(site) == standalone_acked and up.messages == []

    dovecot = MkDovecot(site.config_path, site.base / "dovecot", tls=True)
    try:
        dovecot.start()
        files = {message_id(p.read_bytes()): p.read_bytes() for u in USERS for p in site.delivered(u)}
        for u in USERS:
            imap = dovecot.imap()
            try:
                ok, why = imap_login(imap, addr(u), PASSWORDS[u])
                assert ok, f"{u}: {why}\n{dovecot.log()[-2000:]}"
                got = imap_folder(imap, "INBOX")
                got_ids = Counter(message_id(b) for b in got)
                assert got_ids == site.archived_ids(u), f"{u}: IMAP INBOX differs from the Maildir"
                assert max(got_ids.values()) == 1
                for body in got:
                    m = message_id(body)
                    assert body == files[m], f"{u} {m}: IMAP BODY[] differs from the archived file"
                    if m in expected_bytes:
                        assert split_prefix(body)[1] == expected_bytes[m], f"{u} {m}: not the message sent"
                n_sa = sum(1 for b in got if message_id(b) in expected_bytes)
                assert n_sa == sum(1 for _, rcpt, _, _ in more if rcpt == addr(u))
            finally:
                close_imap(imap)

        # ------------------------------------------------------------ 5. a mail client on submission
        assert site.submission_port
        client = smtplib.SMTP("127.0.0.1", site.submission_port, timeout=60)
        try:
            client.ehlo("laptop.alice.test")
            code, _ = client.starttls(context=smtp_tls_context(pki))
            assert code == 220
            assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
            client.ehlo("laptop.alice.test")
            assert "LOGIN" in client.esmtp_features.get("auth", "").upper().split()
            client.user, client.password = addr("alice"), PASSWORDS["alice"]
            code, resp = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            assert code == 235, (code, resp)
            sent_tags = []
            for i in range(10):
                tag = f"sub-{i}"
                msg = tagged_message(tag, addr("alice"), f"friend{i}@outside.test")
                refused = client.sendmail(addr("alice"), [f"friend{i}@outside.test"], msg)
                assert refused == {}, refused
                sent_tags.append((tag, msg))
            client.quit()
        finally:
            client.close()
        got = smart.wait_for(10, 30)
        assert Counter(message_id(m.data) for m in got) == Counter(mid(t) for t, _ in sent_tags)
        for m in got:
            assert m.mail_from == addr("alice")
            received, rest = split_received(m.data)
            assert rest == dict((mid(t), msg) for t, msg in sent_tags)[message_id(m.data)]
            assert b"ESMTPSA" in received, received
        assert f"auth ok: client=[127.0.0.1] user=<{addr('alice')}> mechanism=LOGIN" in site.log()
        sent_ids = site.archived_ids("alice", "Sent")
        assert sent_ids == Counter(mid(t) for t, _ in sent_tags), f"alice's Sent: {sent_ids}"
        assert up.messages == [], "outbound mail went to the (closed) upstream"
        assert journal_entries(site) == standalone_acked, "outbound mail was recorded for replay"
        # and alice sees it in Sent over IMAPS
        import imaplib
        imap = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=smtp_tls_context(pki), timeout=30)
        try:
            ok, why = imap_login(imap, addr("alice"), PASSWORDS["alice"])
            assert ok, why
            got = imap_folder(imap, "Sent")
            assert Counter(message_id(b) for b in got) == Counter(mid(t) for t, _ in sent_tags)
            for b in got:
                assert b.endswith(dict((mid(t), msg) for t, msg in sent_tags)[message_id(b)])
        finally:
            close_imap(imap)
    finally:
        dovecot.stop()
        print("--- dovecot log ---")
        print("\n".join(dovecot.log().splitlines()[-30:]))

    # ---------------------------------------------------------------- 6. back to gateway, replay
    site.set_standalone(False)
    total = sum(standalone_acked.values())
    up.clear()
    res = site.replay("--dry-run")
    assert res.returncode == 0, (res.stdout, res.stderr)
    m = WOULD.search(res.stdout)
    assert m and int(m.group(1)) == total, res.stdout[-500:]
    lines = [line for line in res.stdout.splitlines() if line and not WOULD.match(line)]
    assert len(lines) == total, f"{len(lines)} listed, {total} expected"
    assert Counter(re.search(r"<([^>]*@example\.org)>", line, re.I).group(1).lower() for line in lines) == \
        Counter(rcpt for _, rcpt in standalone_acked.elements())
    assert up.messages == [] and up.handler.mail_log == [], "--dry-run contacted the upstream"
    assert journal_entries(site) == standalone_acked

    # the upstream still refusing: refused messages stay in new/, exit 1
    res = site.replay()
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert replay_result(res)[0] == 0
    assert journal_entries(site) == standalone_acked, "refused replays left new/"
    assert up.messages == []

    up.refuse(None)
    up.clear()
    res = site.replay("--user", addr("bob"))
    assert res.returncode == 0, (res.stdout, res.stderr)
    bob_keys = Counter({k: n for k, n in standalone_acked.items() if k[1] == addr("bob")})
    assert replay_result(res) == (sum(bob_keys.values()), sum(bob_keys.values()))
    assert up.ids() == bob_keys, "--user replayed other recipients' mail (or not all of bob's)"
    res = site.replay()
    assert res.returncode == 0, (res.stdout, res.stderr)
    alice_n = total - sum(bob_keys.values())
    assert replay_result(res) == (alice_n, alice_n)
    assert up.ids() == standalone_acked, _diff(up.ids(), standalone_acked)
    check_replayed_copies(up, bodies)
    assert journal_entries(site, "new") == Counter()
    assert journal_entries(site, "cur") == standalone_acked
    assert all(p.name.endswith(":2,S") for p in site.journal_files("cur"))
    res = site.replay()
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert replay_result(res)[0] == 0
    assert up.ids() == standalone_acked, "a second replay sent mail again"
    # gateway mode again: new mail goes to the upstream, not to the journal
    [r] = send_batch(site, [("back@remote.test", addr("alice"), tagged_message("back-1", "back@remote.test",
                                                                                addr("alice")), "")])
    assert r.code == 250 and "recorded for replay" not in r.text, r
    assert up.ids()[(mid("back-1"), addr("alice"))] == 1
    assert journal_entries(site, "new") == Counter()

    # ---------------------------------------------------------------- 7. a replay killed halfway
    site.set_standalone(True)
    round2 = []
    for i in range(60):
        tag = f"r2-{i}"
        u = USERS[i % 2]
        msg = tagged_message(tag, f"r{i}@remote.test", addr(u))
        round2.append((f"r{i}@remote.test", addr(u), msg, ""))
        bodies[(mid(tag), addr(u))] = (f"r{i}@remote.test", msg)
    replies = send_batch(site, round2)
    assert all(r.code == 250 for r in replies), [str(r) for r in replies if r.code != 250][:3]
    site.set_standalone(False)
    expected2 = Counter((message_id(msg), rcpt) for _, rcpt, msg, _ in round2)
    assert journal_entries(site) == expected2

    up.clear()
    up.handler.delay = 0.05
    up.handler.hold_at = 30
    proc = subprocess.Popen([MAILKEEP, "backup", "replay", "-c", str(site.config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert up.handler.held.wait(60), f"the replay never reached message 30 (at {len(up.messages)})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        up.handler.release.set()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while up.handler.data_attempts < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    first = up.ids()
    assert len(first) == 29 and max(first.values()) == 1, first
    assert up.handler.cancelled == 1, "the held message should have been abandoned by the killed replay"
    up.handler.hold_at = None
    left = sum(journal_entries(site, "new").values())
    assert left == 60 - 29, f"{left} journal files left in new/ after the kill, expected 31"

    res = site.replay()
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "another replay is running" not in res.stderr
    assert replay_result(res) == (31, 31)
    assert up.ids() == expected2, _diff(up.ids(), expected2)
    check_replayed_copies(up, bodies)
    assert journal_entries(site, "new") == Counter()
    res = site.replay()
    assert res.returncode == 0 and replay_result(res)[0] == 0
    assert up.ids() == expected2
    assert mk_alive(site)


def mk_alive(site) -> bool:
    return site.mk.proc.poll() is None


def _diff(got: Counter, want: Counter) -> str:
    extra = got - want
    missing = want - got
    return f"missing {sum(missing.values())} e.g. {list(missing)[:5]}; extra {sum(extra.values())} e.g. {list(extra)[:5]}"


# --------------------------------------------------------------------------- around the drill

def test_replay_lock_deferral_and_sigterm(site_factory, peers):
    """One replay at a time (flock); a deferring upstream stops the replay (exit 75) and changes
    nothing; SIGTERM lets the message in flight finish (exit 75); a message to two accounts is
    one journal file and one replayed transaction per recipient."""
    up, smart = peers
    site = site_factory(up.address, smart.address, users=USERS, standalone=True)
    items = [(f"x{i}@remote.test", addr(USERS[i % 2]), tagged_message(f"lk-{i}", f"x{i}@remote.test",
                                                                    addr(USERS[i % 2])), "") for i in range(6)]
    assert all(r.code == 250 for r in send_batch(site, items))
    with RawSMTP(site.host, site.port) as c:
        c.ehlo()
        r = c.send_message("both@remote.test", [addr("alice"), addr("bob")],
                           tagged_message("lk-both", "both@remote.test", addr("alice")))
        assert r.code == 250 and r.text.count("recorded for replay") == 1 and r.text.count(",S=") == 2, r
        r = c.cmd("MAIL FROM:<x@remote.test>")
        r = c.cmd(f"RCPT TO:<carol@{DOMAIN}>")
        assert (r.code, r.enhanced) == (550, "5.1.1"), f"unlisted account while standalone: {r}"
    expected = Counter((message_id(m), rcpt) for _, rcpt, m, _ in items)
    expected[(mid("lk-both"), addr("alice"))] += 1
    expected[(mid("lk-both"), addr("bob"))] += 1
    assert journal_entries(site) == expected
    site.set_standalone(False)

    # the upstream defers: stop at the first message, leave everything in new/
    up.clear()
    up.set_data_reply("451 4.3.0 greylisted, try again later")
    res = site.replay()
    assert res.returncode == 75, (res.returncode, res.stdout, res.stderr)
    assert up.handler.data_attempts == 1, "the replay went on after a 4xx"
    assert journal_entries(site) == expected
    up.set_data_reply(None)

    # two replays at once: the second is refused; SIGTERM finishes the message in flight
    up.clear()
    up.handler.hold_at = 2
    up.handler.held.clear()
    up.handler.release.clear()
    proc = subprocess.Popen([MAILKEEP, "backup", "replay", "-c", str(site.config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert up.handler.held.wait(30), "the replay did not reach its second message"
        res = site.replay()
        assert res.returncode == 1 and "another replay is running" in res.stderr, (res.returncode, res.stderr)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None, "SIGTERM did not wait for the message in flight"
        up.handler.release.set()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        up.handler.release.set()
        up.handler.hold_at = None
    assert proc.returncode == 75, (proc.returncode, out, err)
    assert len(up.messages) == 2 and up.handler.cancelled == 0, "the message in flight was not finished"
    assert sum(journal_entries(site).values()) == sum(expected.values()) - 2
    res = site.replay()
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert up.ids() == expected, _diff(up.ids(), expected)
    assert all(len(m.rcpt_tos) == 1 for m in up.messages)
    assert journal_entries(site) == Counter()


def test_transaction_keeps_its_mode(site_factory, peers):
    """The upstream is chosen at a transaction's first RCPT: a SIGHUP between RCPT and DATA does
    not change where that message goes; the next transaction of the session follows the switch."""
    up, smart = peers
    up.clear()
    site = site_factory(up.address, smart.address, users=USERS)
    with RawSMTP(site.host, site.port) as c:
        c.ehlo()
        msg = tagged_message("mode-gw", "m@remote.test", addr("alice"))
        assert c.cmd("MAIL FROM:<m@remote.test>").code == 250
        assert c.cmd(f"RCPT TO:<{addr('alice')}>").code == 250
        site.set_standalone(True)
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        r = c.reply()
        assert r.code == 250 and "recorded for replay" not in r.text, r
        assert up.ids() == Counter({(mid("mode-gw"), addr("alice")): 1})
        assert journal_entries(site) == Counter()

        r = transaction(c, "m@remote.test", addr("bob"), tagged_message("mode-sa", "m@remote.test", addr("bob")))
        assert r.code == 250 and "recorded for replay" in r.text, r
        msg = tagged_message("mode-sa2", "m@remote.test", addr("alice"))
        assert c.cmd("MAIL FROM:<m@remote.test>").code == 250
        assert c.cmd(f"RCPT TO:<{addr('alice')}>").code == 250
        site.set_standalone(False)
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        r = c.reply()
        assert r.code == 250 and "recorded for replay" in r.text, r
        r = transaction(c, "m@remote.test", addr("bob"), tagged_message("mode-gw2", "m@remote.test", addr("bob")))
        assert r.code == 250 and "recorded for replay" not in r.text, r
    assert up.ids() == Counter({(mid("mode-gw"), addr("alice")): 1, (mid("mode-gw2"), addr("bob")): 1})
    assert journal_entries(site) == Counter({(mid("mode-sa"), addr("bob")): 1, (mid("mode-sa2"), addr("alice")): 1})
    for u, tags in (("alice", ["mode-gw", "mode-sa2"]), ("bob", ["mode-sa", "mode-gw2"])):
        assert site.archived_ids(u) == Counter(mid(t) for t in tags), u
