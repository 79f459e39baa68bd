"""Aliases in a shared PostgreSQL ([store] url), with a throwaway PostgreSQL 15 (postgres_support.py)
and two gateways, one on 127.0.0.2 and one on 127.0.0.3:

- the store test suites (tests/unit/aliases/store_suite_test.cpp, tests/unit/store/history_suite_test.cpp)
  pass against PostgreSQL as they do against SQLite;
- the race: 20 clients send 200 messages at one max_usage = 50 alias, spread over both gateways:
  exactly 50 are delivered, the other 150 get 550 5.2.1;
- an alias created through gateway A's API works on gateway B at once, and disabling it on B
  stops it on A;
- the alias-creation limit per client holds across both gateways, racing requests included;
- kill -9 of a gateway that holds a use: the use comes back after [aliases] hold_seconds;
- PostgreSQL down: alias recipients get 451 4.3.0 while relay mail flows on; it recovers by itself;
- PostgreSQL restarted mid-load (10 clients, both gateways): 451 while down, recovery without a
  restart, every acknowledged message upstream, uses == deliveries;
- `mailkeep store migrate`: 10,000 aliases, and a spam history of 2,500 verdicts with the model file,
  each copied exactly once, a second run changing nothing;
- a web login on one gateway is good on the other, and a logout there ends it on both.
"""
from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path

import pytest

from alias_support import Http, alias_config, message, send, wait_http
from harness import MAILKEEP_BIN, Capture, Mailkeep, free_port
from postgres_support import Postgres, pg_bin

pytestmark = pytest.mark.skipif(pg_bin() is None and os.environ.get("MAILKEEP_REQUIRE_BINARY") != "1",
                                reason="PostgreSQL 15 not installed")


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().init().start().createdb()
    yield pg
    print(pg.log.read_text()[-3000:])
    pg.cleanup()


@pytest.fixture
def fresh_db(postgres):
    """Every test starts from an empty schema (the gateways migrate it)."""
    postgres.psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    return postgres


class Gateway:
    def __init__(self, workdir: Path, host: str, capture: Capture, url: str, **aliases) -> None:
        self.smtp_port, self.http_port = free_port(host), free_port()
        config = alias_config(self.smtp_port, capture.address, self.http_port,
                              store={"url": url}, aliases={"hold_seconds": 3600, **aliases})
        config["smtp"]["listen"] = f"{host}:{self.smtp_port}"
        self.host = host
        self.mk = Mailkeep(workdir, config)
        self.http = Http("127.0.0.1", self.http_port)

    def start(self) -> "Gateway":
        self.mk.start()
        wait_http(self.http_port, proc=self.mk.proc)
        return self

    def create(self, **fields) -> dict:
        r = self.http.create(**fields)
        assert r.status == 201, r
        return r.json

    def send(self, rcpt: str, subject: str = "via the shared store"):
        return send(self.smtp_port, [rcpt], host=self.host, body=message(subject=subject, to=rcpt))


@pytest.fixture
def gateways(tmp_path, fresh_db):
    capture = Capture().start()
    started: list[Gateway] = []

    def start(host: str, **aliases) -> Gateway:
        g = Gateway(tmp_path / f"gw-{host}", host, capture, fresh_db.url, **aliases).start()
        started.append(g)
        return g

    start.capture = capture
    yield start
    for g in started:
        code = g.mk.stop()
        print(f"--- {g.host} (exit {code}) ---\n" + "\n".join(g.mk.log().splitlines()[-40:]))
    capture.stop()


def test_the_store_suite_passes_against_postgresql(fresh_db):
    binary = Path(MAILKEEP_BIN).parent / "tests" / "unit" / "alias_store_test"
    if not binary.exists():
        pytest.fail(f"{binary} not built")
    r = subprocess.run([str(binary), "--gtest_filter=*StoreSuite*postgres*:PgPool.*:*HistorySuite*postgres*:SharedFileTest.*:"
                        "*SessionsSuite*postgres*",
                        "--gtest_brief=1"],
                       env={**os.environ, "MK_TEST_POSTGRES_URL": fresh_db.url}, capture_output=True, text=True,
                       timeout=300)
    print(r.stdout[-4000:], r.stderr[-2000:])
    assert r.returncode == 0
    # 8 alias store cases, 5 history and 2 shared-model cases (tests/unit/store/history_suite_test.cpp),
    # 1 sessions case (tests/unit/store/sessions_suite_test.cpp).
    assert "[  PASSED  ] 16 tests." in r.stdout and "SKIPPED" not in r.stdout, r.stdout


def test_the_race_two_gateways_never_deliver_more_than_max_usage(gateways, fresh_db):
    a, b = gateways("127.0.0.2"), gateways("127.0.0.3")
    alias = a.create(max_usage=50)["alias"]
    results: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(10):
            gw = (a, b)[(n + i) % 2]
            res = gw.send(alias, subject=f"race {n}.{i}")
            code, msg = res.rcpt[alias]
            outcome = 250 if res.delivered else code
            if code == 550:
                assert msg.startswith(b"5.2.1"), msg
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 200
    assert results.count(250) == 50 and results.count(550) == 150, {c: results.count(c) for c in set(results)}
    assert len(gateways.capture.wait_for(50)) == 50
    time.sleep(0.5)
    assert len(gateways.capture.messages) == 50, "no more than 50 reached the upstream"
    aid = alias.split("@")[0]
    assert fresh_db.psql(f"SELECT uses, pending FROM aliases WHERE id = '{aid}'") == "50|0"
    assert fresh_db.psql("SELECT count(*) FROM alias_holds") == "0", "every hold finished"


def test_an_alias_created_on_one_gateway_works_on_the_other_at_once(gateways):
    a, b = gateways("127.0.0.2"), gateways("127.0.0.3")
    made = a.create()
    res = b.send(made["alias"])
    assert res.delivered, res
    # Disabled through B's API (the manage token works there too): A refuses it at once.
    r = b.http.delete(made["aid"], made["manage_token"])
    assert r.status in (200, 204), r
    res = a.send(made["alias"])
    assert not res.delivered and res.rcpt[made["alias"]][0] == 550, res
    assert res.rcpt[made["alias"]][1].startswith(b"5.2.1"), res


def test_the_alias_creation_limit_holds_across_gateways(gateways, fresh_db):
    a, b = gateways("127.0.0.2", create_interval=30), gateways("127.0.0.3", create_interval=30)
    assert a.http.create().status == 201
    r = b.http.create()  # the same client (127.0.0.1) on the other gateway
    assert r.status == 429 and r.json["error"] == "rate-limited", r
    assert 0 < int(r.headers["retry-after"]) <= 30, r
    # Racing clients of one address on both gateways at once: exactly one alias.
    fresh_db.psql("DELETE FROM alias_creation_turns")
    results: list[int] = []

    def create(g) -> None:
        results.append(g.http.create().status)

    threads = [threading.Thread(target=create, args=(g,)) for g in (a, b) * 5]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [429] * 9, results
    # A refused request spends nothing.
    fresh_db.psql("DELETE FROM alias_creation_turns")
    assert a.http.create(target="not an address").status == 400
    assert b.http.create().status == 201


def test_the_uses_a_killed_gateway_held_come_back_after_the_hold_expires(gateways):
    a = gateways("127.0.0.2", hold_seconds=3)
    b = gateways("127.0.0.3", hold_seconds=3)
    made = a.create(max_usage=1)
    s = smtplib.SMTP(a.host, a.smtp_port, timeout=10)
    s.ehlo("client.test")
    s.mail("sender@sender.test")
    assert s.rcpt(made["alias"])[0] == 250  # held on A
    os.kill(a.mk.pid, signal.SIGKILL)
    a.mk.proc.wait(5)
    s.close()
    res = b.send(made["alias"])
    assert res.rcpt[made["alias"]][0] == 550 and res.rcpt[made["alias"]][1].startswith(b"5.2.1"), res
    time.sleep(3.5)
    res = b.send(made["alias"])
    assert res.delivered, res
    assert len(gateways.capture.wait_for(1)) == 1
    res = b.send(made["alias"])
    assert res.rcpt[made["alias"]][0] == 550, "used up by the one delivery"


def test_postgresql_down_means_451_for_aliases_only_and_recovery_by_itself(gateways, fresh_db):
    a = gateways("127.0.0.2")
    made = a.create(max_usage=10)
    assert a.send(made["alias"]).delivered
    fresh_db.stop()
    try:
        res = a.send(made["alias"])
        assert res.rcpt[made["alias"]][0] == 451, res
        assert res.rcpt[made["alias"]][1].startswith(b"4.3.0"), res
        relay = send(a.smtp_port, ["someone@example.net"], host=a.host)
        assert relay.delivered, "relay mail does not need the store"
    finally:
        fresh_db.start()
    deadline = time.monotonic() + 15
    while True:
        res = a.send(made["alias"])
        if res.delivered or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert res.delivered, res
    assert "alias store failure" in a.mk.log()
    # Committed uses are written in batches every few milliseconds (retried while the store is down).
    deadline = time.monotonic() + 10
    while True:
        uses, pending = map(int, fresh_db.psql(
            f"SELECT uses || ' ' || pending FROM aliases WHERE id = '{made['aid']}'").split())
        if (uses, pending) == (2, 0) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (uses, pending) == (2, 0), "nothing over-counted, nothing left held"


@pytest.mark.release_only  # long; its C++ paths run under ASan in the other cases here
def test_postgresql_restarted_mid_load_loses_nothing_acknowledged_and_counts_every_delivery(gateways, fresh_db):
    """10 clients keep sending to one alias through both gateways while PostgreSQL stops and starts."""
    a, b = gateways("127.0.0.2", max_usage=100_000), gateways("127.0.0.3", max_usage=100_000)
    made = a.create(max_usage=100_000)
    alias, aid = made["alias"], made["aid"]
    stop = threading.Event()
    acked: list[str] = []
    codes: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            subject = f"mid-load {n}.{i}"
            i += 1
            try:
                res = (a, b)[(n + i) % 2].send(alias, subject=subject)
            except (smtplib.SMTPException, OSError):
                continue
            with lock:
                codes.append(res.rcpt[alias][0])
                if res.delivered:
                    acked.append(subject)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        fresh_db.stop()
        time.sleep(1.5)
        fresh_db.start()
        time.sleep(6)  # the pools' backoff is at most 5 s
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    down = [c for c in codes if c != 250]
    assert down and set(down) == {451}, f"4xx (451) while PostgreSQL was down, nothing else: {set(codes)}"
    after = codes[-20:]
    assert after.count(250) == len(after), f"recovered without a restart: {after}"
    # Nothing acknowledged lost: every 250 reached the upstream.
    import email
    got = {email.message_from_bytes(m.data)["Subject"] for m in gateways.capture.wait_for(len(acked), timeout=30)}
    assert set(acked) <= got, f"{len(set(acked) - got)} acknowledged messages missing upstream"
    # Nothing over-counted, nothing left held: uses == deliveries once the batches are written.
    deadline = time.monotonic() + 10
    while True:
        uses, pending = map(int, fresh_db.psql(f"SELECT uses || ' ' || pending FROM aliases WHERE id = '{aid}'").split())
        if (uses, pending) == (len(acked), 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (uses, pending) == (len(acked), 0), (uses, pending, len(acked))
    assert len(acked) > 100, len(acked)


def store_migrate(ini: Path, url: str) -> str:
    """`mailkeep store migrate -c INI --to URL`; its stdout (exit 0 asserted)."""
    r = subprocess.run([str(MAILKEEP_BIN), "store", "migrate", "-c", str(ini), "--to", url],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.release_only  # long; its C++ paths run under ASan in the other cases here
def test_migration_from_sqlite_copies_everything_once_and_a_second_run_changes_nothing(tmp_path, fresh_db, gateways):
    """10,000 aliases (and 100 ids of purged ones) in a gateway's SQLite store, copied twice."""
    import sqlite3
    work = tmp_path / "sqlite-gw"
    work.mkdir()
    ini = work / "mailkeep.ini"
    ini.write_text(f"[store]\npath = {work / 'mailkeep.db'}\n[aliases]\ndomains = alias.localhost\n")
    assert subprocess.run([str(MAILKEEP_BIN), "alias", "list", "-c", str(ini)], capture_output=True).returncode == 0
    db = sqlite3.connect(work / "mailkeep.db")
    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"  # the alias id alphabet (src/aliases/alias_id.h)

    def aid_of(prefix: str, n: int) -> str:
        digits = ""
        for _ in range(13):
            digits = alphabet[n % 31] + digits
            n //= 31
        return prefix + digits

    rows = []
    for i in range(10_000):
        aid = aid_of("m", i)
        target = 'o"dd\\one@example.org' if i == 7 else f"user{i}@example.org"
        rows.append((aid, target, 1_700_000_000 + i, None if i % 3 == 0 else 1_800_000_000 + i,
                     None if i % 4 == 0 else 1 + i % 50, i % 7, f"192.0.2.{i % 250}", 1 if i % 11 == 0 else 0,
                     f"{i:064x}"))
    with db:
        db.executemany("INSERT INTO alias_ids(id) VALUES (?)", [(r[0],) for r in rows] +
                       [(aid_of("p", i),) for i in range(100)])
        db.executemany("INSERT INTO aliases(id,target,created,valid_until,max_usage,uses,creator_ip,disabled,"
                       "token_hash) VALUES (?,?,?,?,?,?,?,?,?)", rows)
    db.close()

    def migrate() -> str:
        return store_migrate(ini, fresh_db.url)

    def dump() -> str:
        return fresh_db.psql("SELECT id, target, created, valid_until, max_usage, uses, creator_ip, disabled, "
                             "token_hash, pending FROM aliases ORDER BY id")

    out = migrate()
    assert "alias_ids 10100 copied 10100 present 10100" in out and "aliases 10000 copied 10000 present 10000" in out, out
    assert "verified yes" in out
    first = dump()
    expected = "\n".join("|".join(["" if v is None else ("t" if j == 7 and v else "f" if j == 7 else str(v))
                                   for j, v in enumerate(r)] + ["0"]) for r in sorted(rows))
    assert first == expected, "PostgreSQL holds what SQLite held"
    assert fresh_db.psql("SELECT count(*) FROM alias_ids") == "10100", "purged ids stay issued"
    out = migrate()
    assert "aliases 10000 copied 0 present 10000" in out and "alias_ids 10100 copied 0" in out, out
    assert dump() == first, "a second run changes nothing"
    # A gateway on PostgreSQL serves a migrated alias.
    g = gateways("127.0.0.2")
    live = next(r for r in rows if r[7] == 0 and (r[4] is None or r[5] < r[4]) and r[3] is None)
    res = g.send(f"{live[0]}@alias.localhost")
    assert res.delivered, res


@pytest.mark.release_only  # long; its C++ paths run under ASan in the other cases here
def test_migration_copies_the_spam_history_and_the_shared_files_once(tmp_path, fresh_db):
    """2,500 verdicts (features kept for most, some labelled, raw 8-bit subjects) in batches of 1,000,
    the model file and the synced account list: copied once, a second run copies nothing."""
    import sqlite3
    work = tmp_path / "sqlite-gw"
    work.mkdir()
    history, model_file = work / "history.db", work / "spam.model"
    ini = work / "mailkeep.ini"
    ini.write_text(f"[store]\npath = {work / 'none.db'}\n[spam]\nenabled = true\nmodel = {model_file}\n"
                   f"history = {history}\n")
    model_file.write_bytes(bytes(range(256)) * 64)
    # The history's schema as mailkeep writes it (src/spam/history.cpp, migrations 1 and 2).
    db = sqlite3.connect(history)
    db.executescript(
        "CREATE TABLE verdicts (signature TEXT PRIMARY KEY, time INTEGER NOT NULL, client TEXT NOT NULL,"
        " sender TEXT NOT NULL, recipients TEXT NOT NULL, subject TEXT NOT NULL, score REAL NOT NULL,"
        " spam INTEGER NOT NULL, action TEXT NOT NULL, reclassified INTEGER);"
        "CREATE TABLE features (signature TEXT PRIMARY KEY REFERENCES verdicts(signature) ON DELETE CASCADE,"
        " time INTEGER NOT NULL, data BLOB NOT NULL);"
        "ALTER TABLE verdicts ADD COLUMN unsure INTEGER NOT NULL DEFAULT 0;"
        "PRAGMA user_version = 2;")
    rows, feats = [], []
    for i in range(2500):
        sig = f"{1_790_000_000 + i:08x}{i * 2654435761 % 2**32:08x}"
        spam, unsure = (1, 0) if i % 3 == 0 else (0, 1) if i % 3 == 1 else (0, 0)
        subject = "caf\xe9 raw" if i == 5 else f"subject {i}"
        rows.append((sig, 1_790_000_000 + i, f"192.0.2.{i % 200}", f"s{i}@example.net", "r@example.org",
                     subject, i / 2500, spam, "relayed", None if i % 5 else i % 2, unsure))
        if i % 4:
            feats.append((sig, 1_790_000_000 + i, bytes([i % 127 + 1, 2, 3])))
    with db:
        db.executemany("INSERT INTO verdicts(signature,time,client,sender,recipients,subject,score,spam,action,"
                       "reclassified,unsure) VALUES (?,?,?,?,?,CAST(? AS TEXT),?,?,?,?,?)", rows)
        db.execute("UPDATE verdicts SET subject = CAST(X'636166E920726177' AS TEXT) WHERE signature = ?", (rows[5][0],))
        db.executemany("INSERT INTO features(signature,time,data) VALUES (?,?,?)", feats)
    db.close()

    def migrate() -> str:
        return store_migrate(ini, fresh_db.url)

    def dump() -> str:
        return fresh_db.psql("SELECT v.signature, v.time, v.call, v.score, v.reclassified, encode(f.data, 'hex') "
                             "FROM spam_verdicts v LEFT JOIN spam_features f USING (signature) ORDER BY signature")

    out = migrate()
    assert "spam_verdicts 2500 copied 2500 present 2500" in out, out
    assert f"spam_features {len(feats)} copied {len(feats)} present {len(feats)}" in out, out
    assert "spam_model copied" in out and "verified yes" in out and "aliases none" in out, out
    first = dump()
    call = {(1, 0): 2, (0, 1): 1, (0, 0): 0}
    by_sig = {f[0]: f[2].hex() for f in feats}
    want = [[r[0], str(r[1]), str(call[(r[7], r[10])]), r[6], "" if r[9] is None else "t" if r[9] else "f",
             by_sig.get(r[0], "")] for r in sorted(rows)]
    got = [line.split("|") for line in first.splitlines()]
    assert len(got) == len(want) == 2500
    for g_row, w_row in zip(got, want):
        assert g_row[:3] + g_row[4:] == w_row[:3] + w_row[4:], (g_row, w_row)
        assert abs(float(g_row[3]) - w_row[3]) < 1e-12, (g_row, w_row)
    subject = fresh_db.psql(f"SELECT subject FROM spam_verdicts WHERE signature = '{rows[5][0]}'")
    assert subject == "caf\ufffd raw", "a raw 8-bit byte becomes U+FFFD, not an error"
    shared = fresh_db.psql("SELECT encode(data, 'hex') FROM shared_files WHERE name = 'spam_model'")
    assert bytes.fromhex(shared) == model_file.read_bytes()
    out = migrate()
    assert "spam_verdicts 2500 copied 0 present 2500" in out and "spam_model already shared" in out, out
    assert dump() == first, "a second run changes nothing"


def test_a_web_login_on_one_gateway_is_good_on_the_other_and_logout_ends_it_on_both(tmp_path, fresh_db):
    """The web view's sessions live in PostgreSQL: a load balancer may send each request elsewhere;
    and [users] passwd, each gateway's own file, is shared: a password or a lock set on one is on all."""
    import http.client
    import json as jsonlib

    from backup_support import DOMAIN, backup_config, write_accounts

    capture = Capture().start()
    archive = tmp_path / "archive"
    archive.mkdir()
    write_accounts(tmp_path / "accounts.txt", ["alice"])
    gws = []
    try:
        for host in ("127.0.0.2", "127.0.0.3"):
            http_port = free_port()
            config = backup_config(free_port(host), capture.address, archive, tmp_path / "accounts.txt",
                                   upstream=capture.address, http={"listen": f"127.0.0.1:{http_port}"},
                                   store={"url": fresh_db.url})
            config["smtp"]["listen"] = f"{host}:{config['smtp']['listen'].rsplit(':', 1)[1]}"
            config["users"] = {"passwd": str(tmp_path / f"users-{host}.passwd")}  # each its own, as on two machines
            mk = Mailkeep(tmp_path / f"gw-{host}", config)
            gws.append((mk, http_port))
        user = f"alice@{DOMAIN}"
        for mk, port in gws:
            mk.start()
            wait_http(port, proc=mk.proc)

        def user_cli(mk, *args: str, password: str | None = None) -> None:
            res = subprocess.run([str(MAILKEEP_BIN), "user", *args, "-c", str(mk.config_path)],
                                 input=password, capture_output=True, text=True, timeout=30)
            assert res.returncode == 0, res.stderr

        # The password set on A's machine reaches B's [users] passwd (and its Dovecot) through PostgreSQL.
        user_cli(gws[0][0], "passwd", user, "--stdin", password="correct horse battery\n")
        b_passwd = tmp_path / "users-127.0.0.3.passwd"
        deadline = time.monotonic() + 3
        while not (b_passwd.exists() and user in b_passwd.read_text()):
            assert time.monotonic() < deadline, gws[1][0].log()[-2000:]
            time.sleep(0.05)

        def call(port: int, method: str, body=None, cookie=None, csrf=None):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            h = {"Content-Type": "application/json"}
            if cookie:
                h["Cookie"] = cookie
            if csrf:
                h["X-CSRF-Token"] = csrf
            c.request(method, "/api/v1/mail/session", body=jsonlib.dumps(body) if body else None, headers=h)
            r = c.getresponse()
            raw = r.read()
            cookies = [v for k, v in r.getheaders() if k.lower() == "set-cookie"]
            c.close()
            return r.status, (jsonlib.loads(raw) if raw else None), cookies

        (_, a), (_, b) = gws
        status, body, cookies = call(a, "POST", {"username": user, "password": "correct horse battery"})
        assert status == 200, body
        cookie, csrf = cookies[0].split(";")[0], body["csrfToken"]
        status, body, _ = call(b, "GET", cookie=cookie)
        assert status == 200 and body == {"username": user, "csrfToken": csrf}, body
        assert call(b, "DELETE", cookie=cookie)[0] == 403, "a state change without the CSRF token"
        assert call(b, "DELETE", cookie=cookie, csrf=csrf)[0] == 204
        for port in (a, b):
            status, body, _ = call(port, "GET", cookie=cookie)
            assert status == 401 and body["error"] == "unauthorized", body
        # B's own copy of the password file lets alice log in there; a lock set on B stops her on A.
        assert call(b, "POST", {"username": user, "password": "correct horse battery"})[0] == 200
        user_cli(gws[1][0], "lock", user)
        deadline = time.monotonic() + 3
        while call(a, "POST", {"username": user, "password": "correct horse battery"})[0] == 200:
            assert time.monotonic() < deadline, "the lock set on B never reached A"
            time.sleep(0.1)
        user_cli(gws[1][0], "unlock", user)
        deadline = time.monotonic() + 3
        while call(a, "POST", {"username": user, "password": "correct horse battery"})[0] != 200:
            assert time.monotonic() < deadline, "the unlock on B never reached A"
            time.sleep(0.1)
        # Only the cookie's hash is stored.
        assert cookie.split("=", 1)[1] not in fresh_db.psql("SELECT encode(key, 'hex') || username || csrf FROM web_sessions")
        # PostgreSQL down: 503 store-unavailable, not a crash or a 401; back by itself.
        status, body, cookies = call(a, "POST", {"username": user, "password": "correct horse battery"})
        cookie = cookies[0].split(";")[0]
        fresh_db.stop()
        try:
            status, body, _ = call(b, "GET", cookie=cookie)
            assert status == 503 and body["error"] == "store-unavailable", body
        finally:
            fresh_db.start()
        deadline = time.monotonic() + 15
        while (status := call(b, "GET", cookie=cookie)[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert status == 200
    finally:
        for mk, _ in gws:
            mk.stop()
            print("\n".join(mk.log().splitlines()[-20:]))
        capture.stop()


def test_filters_made_on_one_gateway_file_mail_on_the_other(tmp_path, fresh_db):
    """An account's filters (in each gateway's own [index] path) are shared: a filter added through A
    files mail that B delivers, and one deleted on B is gone on A."""
    from backup_support import DOMAIN, backup_config, write_accounts

    capture = Capture().start()
    write_accounts(tmp_path / "accounts.txt", ["alice"])
    gws = []
    try:
        for host in ("127.0.0.2", "127.0.0.3"):
            own = tmp_path / host  # each gateway its own archive and index, as on two machines
            (own / "archive").mkdir(parents=True)
            port = free_port(host)
            config = backup_config(port, capture.address, own / "archive", tmp_path / "accounts.txt",
                                   upstream=capture.address, http={"listen": f"127.0.0.1:{free_port()}"},
                                   store={"url": fresh_db.url},
                                   index={"path": str(own / "index"), "enabled": "true", "scan_interval": 5})
            config["smtp"]["listen"] = f"{host}:{port}"
            mk = Mailkeep(own / "mk", config)
            mk.start()
            gws.append((mk, host, port, own))

        def cli(mk, *args: str) -> subprocess.CompletedProcess:
            res = subprocess.run([str(MAILKEEP_BIN), *args, "-c", str(mk.config_path)], capture_output=True,
                                 text=True, timeout=60)
            assert res.returncode == 0, res.stderr
            return res

        (a, _, _, _), (b, b_host, b_port, b_own) = gws
        user = f"alice@{DOMAIN}"
        cli(a, "filter", "add", "--user", user, "--subject", "svn commit", "--skip-inbox", "--label", "Builds")
        b_filters = b_own / "index" / DOMAIN / "alice" / "filters.xml"
        deadline = time.monotonic() + 3
        while not (b_filters.exists() and "svn commit" in b_filters.read_text()):
            assert time.monotonic() < deadline, b.log()[-2000:]
            time.sleep(0.05)
        listed = cli(b, "filter", "list", "--user", user).stdout
        assert "svn commit" in listed and "skip-inbox" in listed, listed

        # Mail through B meets A's filter: out of the Inbox, into Archive.
        with smtplib.SMTP(b_host, b_port, timeout=30) as s:
            s.ehlo("mx.sender.test")
            s.sendmail("dev@remote.test", [user], b"From: dev@remote.test\r\nTo: " + user.encode() +
                       b"\r\nSubject: svn commit r42\r\nMessage-ID: <r42@remote.test>\r\n\r\ncommitted\r\n")
        maildir = b_own / "archive" / DOMAIN / "alice"
        deadline = time.monotonic() + 15
        while not list((maildir / ".Archive").glob("*/*")):
            assert time.monotonic() < deadline, f"not filed: {sorted(p.name for p in maildir.rglob('*'))}\n{b.log()[-2000:]}"
            time.sleep(0.1)
        assert not list((maildir / "new").glob("*")) and not list((maildir / "cur").glob("*")), "left in the Inbox"

        # Deleted on B: gone on A.
        fid = listed.split("\t")[0]
        cli(b, "filter", "delete", "--user", user, fid)
        deadline = time.monotonic() + 3
        while "svn commit" in cli(a, "filter", "list", "--user", user).stdout:
            assert time.monotonic() < deadline, a.log()[-2000:]
            time.sleep(0.1)
    finally:
        for mk, *_ in gws:
            mk.stop()
            print("\n".join(mk.log().splitlines()[-20:]))
        capture.stop()
