"""Hostile clients on the submission listeners (RFC 6409 / RFC 4954; /work/standalone_spec.md,
"SMTP behaviour"): AUTH before TLS from another host, brute force and the lockouts (per client
IP and per account), forged senders, broken SASL exchanges, a 100 KB AUTH line, MAIL before
AUTH, AUTH on port 25, unknown user against wrong password (same reply, similar time), the
fail2ban log line; swaks and smtplib as well-behaved peers on STARTTLS and implicit TLS.

The lockout tests have their own mailkeep each (the lockout state lives in the server); the
others share one with max_auth_failures = 1000 and look at their own part of its log. An
Argon2id check costs tens of milliseconds, so the attempt counts are kept small.
"""

from __future__ import annotations

import base64
import re
import smtplib
import statistics
import subprocess
import shutil
import time
from collections import Counter

import pytest

from backup_support import DOMAIN, message_id
from harness import ConnectionClosed, RawSMTP, require_binary, split_received
from standalone_support import (  # noqa: F401  (pytest fixtures)
    SwitchCapture, build_site, destroy_site, pki, smtp_tls_context, tagged_message,
)
from tls_support import starttls

ALICE, BOB, CAROL = f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"carol@{DOMAIN}"
PASSWORDS = {ALICE: "alice-Secret-9731", BOB: "bob-Secret-4418", CAROL: "carol-Secret-2206"}
WRONG = "Wr0ng-guess-5150"
AUTH_FAILED = re.compile(r": auth failed: client=\[([^\]]+)\] user=<([^>]*)> mechanism=(\S*) reply=(\d+) reason=")


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture(scope="module")
def peers():
    up, smart = SwitchCapture(hostname="inbound.test").start(), SwitchCapture(hostname="smarthost.test").start()
    yield up, smart
    up.stop()
    smart.stop()


def new_site(peers, pki, passwords=(ALICE, BOB, CAROL), **opts):
    up, smart = peers
    site = build_site(up.address, smart.address, users=["alice", "bob", "carol"], pki=pki, tls_listen=True,
                      submission_opts=opts)
    try:
        for user in passwords:
            site.set_password(user, PASSWORDS[user])
    except Exception:
        destroy_site(site)
        raise
    return site


@pytest.fixture
def submission(peers, pki):
    """Factory: submission(passwords=[...], **[submission] options) -> a Site of its own."""
    require_binary()
    sites = []

    def start(passwords=(ALICE, BOB, CAROL), **opts):
        sites.append(new_site(peers, pki, passwords, **opts))
        return sites[-1]
    yield start
    for s in sites:
        destroy_site(s)


class LogView:
    """A Site whose log() starts where the test started (one mailkeep for several tests)."""

    def __init__(self, site):
        self.site = site
        self.offset = len(site.log())

    def __getattr__(self, name):
        return getattr(self.site, name)

    def log(self) -> str:
        return self.site.log()[self.offset:]


@pytest.fixture(scope="module")
def shared_site(peers, pki):
    require_binary()
    site = new_site(peers, pki, max_auth_failures=1000)
    yield site
    destroy_site(site)


@pytest.fixture(scope="module")
def lockout_site(peers, pki):
    """max_auth_failures = 5 and every loopback address may AUTH without TLS; the two lockout
    tests use disjoint client addresses and accounts (bob is locked only by the second)."""
    require_binary()
    site = new_site(peers, pki, max_auth_failures=5, auth_without_tls_from="127.0.0.0/8")
    yield site
    destroy_site(site)


@pytest.fixture
def shared(shared_site, peers):
    """The module's mailkeep (max_auth_failures = 1000), its log from now on, the smarthost emptied."""
    peers[0].clear()
    peers[1].clear()
    assert shared_site.mk.proc.poll() is None, "the shared mailkeep died"
    return LogView(shared_site)


def connect(site, source: str = "127.0.0.1", port: int | None = None) -> RawSMTP:
    c = RawSMTP("127.0.0.1", port or site.submission_port, timeout=30, source_address=(source, 0))
    assert c.banner.code == 220, c.banner
    r = c.ehlo("client.test")
    assert r.code == 250, r
    return c


def tls(site, c: RawSMTP) -> RawSMTP:
    r = c.cmd("STARTTLS")
    assert r.code == 220, r
    t = starttls(c, smtp_tls_context(site.pki), server_hostname="mx.test")
    r = t.ehlo("client.test")
    assert r.code == 250, r
    return t


def auth_offered(ehlo) -> bool:
    return any(line.upper().startswith("AUTH ") for line in ehlo.lines)


def auth_failures(site) -> list[tuple[str, str, str, int]]:
    """(client IP, user, mechanism, reply code) of every 'auth failed' log line."""
    return [(m.group(1), m.group(2), m.group(3), int(m.group(4))) for m in AUTH_FAILED.finditer(site.log())]


def assert_no_secrets(site, *extra: str) -> None:
    log = site.log()
    for secret in [*PASSWORDS.values(), WRONG, *extra]:
        assert secret not in log, f"{secret!r} is in the log"
    for user, pw in [*PASSWORDS.items(), (ALICE, WRONG), (BOB, WRONG)]:
        assert plain(user, pw) not in log, "a base64 AUTH PLAIN response is in the log"
    for pw in [*PASSWORDS.values(), WRONG]:
        assert b64(pw) not in log, "a base64 password is in the log"


def attempt(site, user: str, password: str, source: str, mechanism: str = "PLAIN") -> int:
    """One AUTH on a fresh connection (no error budget carried over); returns the reply code."""
    with connect(site, source) as c:
        if mechanism == "PLAIN":
            r = c.cmd(f"AUTH PLAIN {plain(user, password)}")
        else:
            r = c.cmd("AUTH LOGIN")
            assert (r.code, r.lines[0]) == (334, "VXNlcm5hbWU6"), r
            r = c.cmd(b64(user))
            assert (r.code, r.lines[0]) == (334, "UGFzc3dvcmQ6"), r
            r = c.cmd(b64(password))
        return r.code


# --------------------------------------------------------------------------- TLS first

def test_auth_needs_tls_from_other_hosts(shared):
    site = shared
    # 127.0.0.2 is not in auth_without_tls_from: no AUTH before STARTTLS
    with connect(site, "127.0.0.2") as c:
        assert not auth_offered(c.ehlo("client.test")), "EHLO offers AUTH before TLS to 127.0.0.2"
        for line in (f"AUTH PLAIN {plain(ALICE, PASSWORDS[ALICE])}", "AUTH LOGIN", "AUTH PLAIN"):
            r = c.cmd(line)
            assert (r.code, r.enhanced) == (538, "5.7.11"), f"{line}: {r}"
        r = c.cmd("MAIL FROM:<alice@example.org>")
        assert (r.code, r.enhanced) == (530, "5.7.0"), r
        t = tls(site, c)
        ehlo = t.ehlo("client.test")
        assert any(line.upper().split()[:1] == ["AUTH"] and {"PLAIN", "LOGIN"} <= set(line.upper().split())
                   for line in ehlo.lines), ehlo
        r = t.cmd(f"AUTH PLAIN {plain(ALICE, PASSWORDS[ALICE])}")
        assert (r.code, r.enhanced) == (235, "2.7.0"), r
        r = t.send_message(ALICE, ["friend@outside.test"], tagged_message("tls-first", ALICE, "friend@outside.test"))
        assert r.code == 250, r
    # 127.0.0.1 is (default auth_without_tls_from): AUTH offered in the clear
    with connect(site) as c:
        assert auth_offered(c.ehlo("client.test"))
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334
        assert c.cmd(b64(ALICE)).code == 334
        r = c.cmd(b64(PASSWORDS[ALICE]))
        assert (r.code, r.enhanced) == (235, "2.7.0"), r
        r = c.send_message(ALICE, ["friend@outside.test"], tagged_message("clear", ALICE, "friend@outside.test"))
        assert r.code == 250, r
    fails = auth_failures(site)
    assert [f[3] for f in fails] == [538, 538, 538], fails
    assert all(f[0] == "127.0.0.2" for f in fails), fails
    assert_no_secrets(site)
    assert "auth ok: client=[127.0.0.2] user=<alice@example.org> mechanism=PLAIN" in site.log()
    assert "auth ok: client=[127.0.0.1] user=<alice@example.org> mechanism=LOGIN" in site.log()


def test_auth_on_port_25_is_not_offered(shared):
    site = shared
    with RawSMTP(site.host, site.port) as c:
        ehlo = c.ehlo("client.test")
        assert not auth_offered(ehlo), ehlo
        r = c.cmd(f"AUTH PLAIN {plain(ALICE, PASSWORDS[ALICE])}")
        assert (r.code, r.enhanced) == (502, "5.5.1"), r
        t = tls(site, c)                      # not after STARTTLS either
        assert not auth_offered(t.ehlo("client.test"))
        r = t.cmd("AUTH LOGIN")
        assert (r.code, r.enhanced) == (502, "5.5.1"), r
        # and port 25 is no submission port: mail for outside is relay-denied, not taken
        r = t.cmd(f"MAIL FROM:<{ALICE}>")
        assert r.code == 250, r
        r = t.cmd("RCPT TO:<friend@outside.test>")
        assert r.code >= 500, r


# --------------------------------------------------------------------------- broken exchanges

def test_broken_sasl_exchanges(shared, peers):
    up, smart = peers
    site = shared
    expected_failures = []           # reply codes, in order
    with connect(site) as c:
        r = c.cmd(f"MAIL FROM:<{ALICE}>")
        assert (r.code, r.enhanced) == (530, "5.7.0"), r
        r = c.cmd("AUTH PLAIN !!!!not*base64")
        assert (r.code, r.enhanced) == (501, "5.5.2"), r
        expected_failures.append(501)
        r = c.cmd("AUTH PLAIN")
        assert (r.code, r.text) == (334, ""), r
        r = c.cmd("*")
        assert (r.code, r.enhanced) == (501, "5.0.0"), r
        expected_failures.append(501)
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334
        r = c.cmd("*")
        assert (r.code, r.enhanced) == (501, "5.0.0"), r
        expected_failures.append(501)
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334
        assert c.cmd(b64(ALICE)).code == 334
        r = c.cmd("*")
        assert (r.code, r.enhanced) == (501, "5.0.0"), r
        expected_failures.append(501)
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334
        r = c.cmd("%%%")
        assert (r.code, r.enhanced) == (501, "5.5.2"), r
        expected_failures.append(501)
        r = c.cmd("AUTH CRAM-MD5")
        assert 500 <= r.code < 600, r
        expected_failures.append(r.code)
        # RFC 4616 authzid: alice's password does not make her bob
        r = c.cmd("AUTH PLAIN " + b64(f"{BOB}\0{ALICE}\0{PASSWORDS[ALICE]}"))
        assert r.code == 535, r
        expected_failures.append(535)
        # a user name that tries to write a log line of its own (fail2ban would ban 10.9.8.7)
        r = c.cmd("AUTH PLAIN " + b64(f"\0x\r\n2026-12-01 mailkeep: warning: A1: auth failed: client=[10.9.8.7] "
                                      f"user=<x> mechanism=PLAIN reply=535 reason=wrong password\0{WRONG}"))
        assert r.code == 535, r
        expected_failures.append(535)
        r = c.cmd("NOOP")
        assert r.code == 250, r
    with connect(site) as c:
        # a 100 KB AUTH line: 500, and the session goes on
        r = c.cmd("AUTH PLAIN " + "A" * 100_000)
        assert (r.code, r.enhanced) == (500, "5.5.2"), r
        assert "too long" in r.text
        assert c.cmd("NOOP").code == 250
        # a 100 KB continuation line
        assert c.cmd("AUTH PLAIN").code == 334
        r = c.cmd("B" * 100_000)
        assert (r.code, r.enhanced) == (500, "5.5.6"), r
        assert c.cmd("NOOP").code == 250
        r = c.cmd(f"AUTH PLAIN {plain(ALICE, PASSWORDS[ALICE])}")
        assert (r.code, r.enhanced) == (235, "2.7.0"), r
        r = c.cmd(f"AUTH PLAIN {plain(ALICE, PASSWORDS[ALICE])}")
        assert r.code == 503, r                    # once per session
        # forged senders
        for forged in (BOB, "alice@outside.test", "postmaster@example.net", f"alice@{DOMAIN}.evil.test"):
            r = c.cmd(f"MAIL FROM:<{forged}>")
            assert (r.code, r.enhanced) == (553, "5.7.1"), f"{forged}: {r}"
        msg = tagged_message("own-address", ALICE, "friend@outside.test")
        r = c.send_message(ALICE, ["friend@outside.test"], msg)
        assert r.code == 250, r
    got = smart.wait_for(1, 15)
    assert [message_id(m.data) for m in got] == ["<own-address@drill.test>"]
    assert [m.mail_from for m in got] == [ALICE]
    assert split_received(got[0].data)[1] == msg
    assert b"with ESMTPA " in split_received(got[0].data)[0], got[0].data[:300]
    fails = auth_failures(site)
    # each failed exchange exactly once; the over-long continuation line ends an AUTH exchange
    # (logged, reply=500); the over-long command line may or may not count as one
    assert [f[3] for f in fails if f[3] != 500] == expected_failures, fails
    assert [f[2] for f in fails if f[3] == 500][-1:] == ["PLAIN"], fails
    assert 1 <= sum(1 for f in fails if f[3] == 500) <= 2, fails
    assert all(f[0] == "127.0.0.1" for f in fails), fails
    assert "10.9.8.7" not in {f[0] for f in fails}
    assert not re.search(r"^\S* ?mailkeep: warning: A1:", site.log(), re.M), "log line injected"
    assert_no_secrets(site)


# --------------------------------------------------------------------------- brute force

def test_brute_force_locks_out_the_client_ip(lockout_site):
    """20 wrong passwords from 127.0.0.3, each for another account name (so that no account
    reaches the per-account limit): after max_auth_failures the IP gets 454, even with the right
    password; 127.0.0.4 logs in as alice and carol meanwhile."""
    limit = 5
    site = LogView(lockout_site)
    codes = []
    names = [f"guess{i}@{DOMAIN}" for i in range(18)] + [ALICE, CAROL]
    c = connect(site, "127.0.0.3")
    try:
        for i, name in enumerate(names):
            if i and i % 8 == 0:              # stay below [smtp] max_errors
                c.close()
                c = connect(site, "127.0.0.3")
            r = c.cmd(f"AUTH PLAIN {plain(name, WRONG)}")
            codes.append((r.code, r.enhanced))
        r = c.cmd(f"AUTH PLAIN {plain(ALICE, PASSWORDS[ALICE])}")
        assert (r.code, r.enhanced) == (454, "4.7.0"), f"the right password during the IP lockout: {r}"
    finally:
        c.close()
    assert codes[:limit] == [(535, "5.7.8")] * limit, codes
    assert codes[limit:] == [(454, "4.7.0")] * (20 - limit), codes
    assert attempt(site, ALICE, PASSWORDS[ALICE], "127.0.0.3", "LOGIN") == 454
    # another address is not locked out, and neither is alice's account
    assert attempt(site, ALICE, PASSWORDS[ALICE], "127.0.0.4") == 235
    assert attempt(site, CAROL, PASSWORDS[CAROL], "127.0.0.4", "LOGIN") == 235
    assert attempt(site, ALICE, PASSWORDS[ALICE], "127.0.0.3") == 454, "the IP lockout ended early"
    fails = auth_failures(site)
    from_3 = [f for f in fails if f[0] == "127.0.0.3"]
    assert Counter(f[3] for f in from_3) == Counter({535: limit, 454: 20 - limit + 3}), from_3
    assert [f[1] for f in from_3][:20] == names, "user=<...> does not name the account tried"
    assert not [f for f in fails if f[0] == "127.0.0.4"]
    assert_no_secrets(site)


def test_brute_force_locks_out_the_account(lockout_site):
    """Wrong passwords for bob from 5 addresses, one each: bob's account is locked (454 even
    with the right password, from a fresh address), alice from that address is not."""
    limit = 5
    site = LogView(lockout_site)
    codes = [attempt(site, BOB, WRONG, f"127.0.0.{10 + i}", "LOGIN" if i % 2 else "PLAIN") for i in range(limit)]
    assert codes == [535] * limit, codes
    assert attempt(site, BOB, PASSWORDS[BOB], "127.0.0.20") == 454
    assert attempt(site, BOB, PASSWORDS[BOB], "127.0.0.21", "LOGIN") == 454
    # the account name is case-insensitive for the count as well as for the login
    assert attempt(site, BOB.upper(), PASSWORDS[BOB], "127.0.0.22") == 454
    assert attempt(site, ALICE, PASSWORDS[ALICE], "127.0.0.20") == 235
    assert attempt(site, CAROL, PASSWORDS[CAROL], "127.0.0.21") == 235
    fails = auth_failures(site)
    assert [f[3] for f in fails] == [535] * limit + [454] * 3, fails
    assert {f[1].lower() for f in fails} == {BOB}
    assert_no_secrets(site)


def test_lockout_ends_after_auth_lockout(submission):
    site = submission(passwords=(ALICE,), max_auth_failures=2, auth_lockout=2, auth_without_tls_from="127.0.0.0/8")
    assert [attempt(site, f"x{i}@{DOMAIN}", WRONG, "127.0.0.30") for i in range(2)] == [535] * 2
    assert attempt(site, ALICE, PASSWORDS[ALICE], "127.0.0.30") == 454
    time.sleep(2.6)
    assert attempt(site, ALICE, PASSWORDS[ALICE], "127.0.0.30") == 235, "still locked out after auth_lockout"


# --------------------------------------------------------------------------- unknown user

def test_unknown_user_and_wrong_password_look_the_same(shared):
    site = shared
    assert site.cli("user", "lock", CAROL).returncode == 0
    try:
        times, replies = measure(site)
    finally:
        assert site.cli("user", "unlock", CAROL).returncode == 0
    # one reply, the same for all four
    assert len(set().union(*replies.values())) == 1, replies
    assert next(iter(replies["wrong password"])).startswith("535 5.7.8"), replies
    base = statistics.median(times["wrong password"])
    for name, ts in times.items():
        ratio = statistics.median(ts) / base
        assert 0.5 <= ratio <= 2.0, (f"{name}: median {statistics.median(ts) * 1000:.1f} ms against "
                                     f"{base * 1000:.1f} ms for a wrong password (ratio {ratio:.2f})")
    assert attempt(site, ALICE, PASSWORDS[ALICE], "127.0.0.1") == 235
    fails = auth_failures(site)
    assert Counter(f[1].lower() for f in fails) == Counter(
        {ALICE: 10, f"zed@{DOMAIN}": 10, "alice@outside.test": 4, CAROL: 4}), fails
    assert_no_secrets(site)


def measure(site):
    """Interleaved rounds: 10 wrong passwords and 10 unknown users, 4 each of the others."""
    cases = {
        "wrong password": (ALICE, WRONG),
        "unknown user": (f"zed@{DOMAIN}", WRONG),
        "unlisted domain": ("alice@outside.test", WRONG),
        "locked account": (CAROL, PASSWORDS[CAROL]),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    replies: dict[str, set[str]] = {k: set() for k in cases}
    c = connect(site)
    try:
        for i in range(10):
            c.close()
            c = connect(site)
            for name, (user, pw) in cases.items():
                if i % 3 and name in ("unlisted domain", "locked account"):
                    continue
                t0 = time.perf_counter()
                r = c.cmd(f"AUTH PLAIN {plain(user, pw)}")
                times[name].append(time.perf_counter() - t0)
                replies[name].add(str(r))
    finally:
        c.close()
    return times, replies


# --------------------------------------------------------------------------- well-behaved clients

def swaks(site, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--server", "127.0.0.1", "--helo", "laptop.test", *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


def test_swaks_and_smtplib_as_mail_clients(shared, peers, pki, tmp_path):
    if not shutil.which("swaks"):
        pytest.skip("swaks is not installed")
    up, smart = peers
    site = shared
    runs = [
        ("swaks-plain-starttls", ALICE, ["--port", str(site.submission_port), "--tls", "--auth", "PLAIN"]),
        ("swaks-login-starttls", BOB, ["--port", str(site.submission_port), "--tls", "--auth", "LOGIN"]),
        ("swaks-plain-465", ALICE, ["--port", str(site.tls_port), "--tls-on-connect", "--auth", "PLAIN"]),
        ("swaks-login-465", BOB, ["--port", str(site.tls_port), "--tls-on-connect", "--auth", "LOGIN"]),
    ]
    expected = {}
    for tag, user, args in runs:
        data = tmp_path / f"{tag}.eml"
        data.write_text(f"From: <{user}>\nTo: <friend@outside.test>\nSubject: {tag}\n"
                        f"Message-ID: <{tag}@drill.test>\n\nsent by swaks\n")
        res = swaks(site, *args, "--tls-verify", "--tls-ca-path", str(pki.ca.cert),
                    "--auth-user", user, "--auth-password", PASSWORDS[user],
                    "--from", user, "--to", "friend@outside.test", "--data", f"@{data}")
        assert res.returncode == 0, f"{tag}: swaks exit {res.returncode}\n{res.stdout[-3000:]}{res.stderr}"
        assert "235 2.7.0" in res.stdout, res.stdout[-2000:]
        expected[f"<{tag}@drill.test>"] = user
    # a wrong password: swaks fails, nothing is sent
    res = swaks(site, "--port", str(site.submission_port), "--tls", "--auth", "LOGIN",
                "--auth-user", ALICE, "--auth-password", WRONG, "--from", ALICE, "--to", "friend@outside.test")
    assert res.returncode != 0 and "535 5.7.8" in res.stdout, res.stdout[-2000:]

    # smtplib: SMTP_SSL on the implicit-TLS port, and STARTTLS on the submission port
    ctx = smtp_tls_context(pki)
    with smtplib.SMTP_SSL("127.0.0.1", site.tls_port, context=ctx, timeout=30) as s:
        s.ehlo("laptop.test")
        assert {"PLAIN", "LOGIN"} <= set(s.esmtp_features["auth"].upper().split())
        assert "starttls" not in s.esmtp_features, "STARTTLS offered inside TLS"
        s.login(CAROL, PASSWORDS[CAROL])
        assert s.sendmail(CAROL, ["friend@outside.test", "other@outside.test"],
                          tagged_message("smtplib-465", CAROL, "friend@outside.test")) == {}
        expected["<smtplib-465@drill.test>"] = CAROL
    with smtplib.SMTP("127.0.0.1", site.submission_port, timeout=30) as s:
        s.starttls(context=ctx)
        s.login(ALICE, PASSWORDS[ALICE])
        assert s.sendmail(ALICE, ["friend@outside.test"], tagged_message("smtplib-587", ALICE,
                                                                         "friend@outside.test")) == {}
        expected["<smtplib-587@drill.test>"] = ALICE
    # a plaintext client on the implicit-TLS port gets no SMTP banner
    with pytest.raises((ConnectionClosed, OSError, ValueError)):
        RawSMTP("127.0.0.1", site.tls_port, timeout=3)

    got = smart.wait_for(len(expected), 30)
    assert Counter(message_id(m.data) for m in got) == Counter(expected.keys())
    for m in got:
        assert m.mail_from == expected[message_id(m.data)]
        received = split_received(m.data)[0]
        assert b"with ESMTPSA " in received, received
    assert up.messages == []
    for user in (ALICE, BOB, CAROL):
        local = user.split("@")[0]
        sent = Counter({k: n for k, n in site.archived_ids(local, "Sent").items()
                        if k.startswith(("<swaks-", "<smtplib-"))})
        assert sent == Counter(k for k, v in expected.items() if v == user), f"{user}'s Sent: {sent}"
    assert [f[3] for f in auth_failures(site)] == [535]
    assert_no_secrets(site)
