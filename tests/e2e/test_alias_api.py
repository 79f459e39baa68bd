"""HTTP API of the temporary aliases: creation, management, errors, CORS, tempalias routes."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from datetime import datetime, timezone

import pytest

from harness import RawSMTP

from alias_support import (  # noqa: F401  (alias_env is a fixture)
    AID_ALPHABET, ALIAS_DOMAIN, TARGET, Http, alias_env, assert_error, db_execute, parse_kv, send,
)

TOKEN_RE = re.compile(r"^[0-9a-f]{64}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def ts(value: str) -> float:
    assert TS_RE.match(value), f"not YYYY-MM-DDTHH:MM:SSZ: {value!r}"
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def check_cors(resp) -> None:
    assert resp.headers.get("access-control-allow-origin") == "*", f"no CORS header: {resp}"


# --------------------------------------------------------------------------- creation

def test_create_response_shape(alias_env):
    env = alias_env()
    before = time.time()
    r = env.http.create(TARGET, days=3, max_usage=5)
    assert r.status == 201, str(r)
    assert r.headers["content-type"].startswith("application/json")
    check_cors(r)
    a = r.json
    assert set(a) >= {"alias", "aid", "target", "valid_until", "max_usage", "uses", "manage_token"}, a
    assert len(a["aid"]) == 14 and set(a["aid"]) <= AID_ALPHABET, a["aid"]
    assert a["alias"] == f"{a['aid']}@{ALIAS_DOMAIN}"
    assert a["target"] == TARGET
    assert a["max_usage"] == 5 and a["uses"] == 0
    assert TOKEN_RE.match(a["manage_token"]), a["manage_token"]
    assert abs(ts(a["valid_until"]) - (before + 3 * 86400)) < 5, a["valid_until"]


def test_create_defaults_and_numeric_strings(alias_env):
    env = alias_env(aliases={"default_days": 4})
    now = time.time()
    a = env.create(TARGET)                       # no days, no max_usage
    assert a["max_usage"] is None, a
    assert abs(ts(a["valid_until"]) - (now + 4 * 86400)) < 5, a
    b = env.create(TARGET, days="2", max_usage="7")
    assert b["max_usage"] == 7 and abs(ts(b["valid_until"]) - (now + 2 * 86400)) < 5, b
    c = env.create(TARGET, days=60, max_usage=None)   # explicit null = unlimited, max_days allowed
    assert c["max_usage"] is None and abs(ts(c["valid_until"]) - (now + 60 * 86400)) < 5, c
    d = env.create(TARGET, max_usage=100)            # the cap itself is allowed
    assert d["max_usage"] == 100


def test_ids_and_tokens_are_unique(alias_env):
    env = alias_env()
    made = [env.create(TARGET) for _ in range(40)]
    assert len({a["aid"] for a in made}) == 40
    assert len({a["manage_token"] for a in made}) == 40
    for a in made:
        assert set(a["aid"]) <= AID_ALPHABET and len(a["aid"]) == 14


def test_first_alias_domain_is_used(alias_env):
    env = alias_env(aliases={"domains": "tmp.localhost, alias.localhost"})
    a = env.create(TARGET)
    assert a["alias"] == a["aid"] + "@tmp.localhost"


def test_content_type_with_charset_accepted(alias_env):
    env = alias_env()
    r = env.http.request("POST", "/api/v1/aliases", {"target": TARGET},
                         content_type="application/json; charset=utf-8")
    assert r.status == 201, str(r)


# --------------------------------------------------------------------------- invalid data

INVALID_BODIES = [
    ("bad json", b'{"target": '),
    ("not an object", b'["someone@example.org"]'),
    ("empty object", b"{}"),
    ("target missing", json.dumps({"days": 3})),
    ("target null", json.dumps({"target": None})),
    ("target number", json.dumps({"target": 5})),
    ("target no at", json.dumps({"target": "someone.example.org"})),
    ("target empty local", json.dumps({"target": "@example.org"})),
    ("target spaces", json.dumps({"target": "some one@example.org"})),
    ("target address literal", json.dumps({"target": "someone@[127.0.0.1]"})),
    ("target ipv6 literal", json.dumps({"target": "someone@[IPv6:::1]"})),
    ("target crlf", json.dumps({"target": "a@example.org\r\nRCPT TO:<b@example.org>"})),
    ("target is an alias (loop)", json.dumps({"target": "abcdefghjkmnpq@alias.localhost"})),
    ("target in alias domain upper", json.dumps({"target": "Someone@ALIAS.LOCALHOST"})),
    ("target in second alias domain", json.dumps({"target": "x@tmp.localhost"})),
    ("days 0", json.dumps({"target": TARGET, "days": 0})),
    ("days negative", json.dumps({"target": TARGET, "days": -1})),
    ("days above max", json.dumps({"target": TARGET, "days": 61})),
    ("days fraction", json.dumps({"target": TARGET, "days": 1.5})),
    ("days garbage string", json.dumps({"target": TARGET, "days": "three"})),
    ("days bool", json.dumps({"target": TARGET, "days": True})),
    ("max_usage 0", json.dumps({"target": TARGET, "max_usage": 0})),
    ("max_usage above cap", json.dumps({"target": TARGET, "max_usage": 101})),
    ("max_usage negative string", json.dumps({"target": TARGET, "max_usage": "-3"})),
    ("max_usage huge", json.dumps({"target": TARGET, "max_usage": 10 ** 30})),
]


@pytest.mark.parametrize("name,body", INVALID_BODIES, ids=[n for n, _ in INVALID_BODIES])
def test_invalid_data(alias_env, name, body):
    env = alias_env(aliases={"domains": "alias.localhost, tmp.localhost"})
    r = env.http.request("POST", "/api/v1/aliases", body)
    assert_error(r, 400, "invalid-data")
    check_cors(r)
    # nothing was stored
    assert env.cli("list").stdout.strip().splitlines()[1:] == []


def test_alias_of_created_alias_refused(alias_env):
    """Loop: an alias forwarding to another (existing) alias of ours is refused."""
    env = alias_env()
    a = env.create(TARGET)
    for t in (a["alias"], a["alias"].upper()):
        assert_error(env.http.create(t), 400, "invalid-data")


# --------------------------------------------------------------------------- protocol errors

def test_body_too_big(alias_env):
    env = alias_env(http={"max_body": 1024})
    pad = "x" * 1100
    r = env.http.request("POST", "/api/v1/aliases", json.dumps({"target": TARGET, "pad": pad}))
    assert_error(r, 413, "too-much-data")
    # just under the limit is fine (unknown members are ignored or rejected as 400, never 413)
    small = json.dumps({"target": TARGET})
    assert env.http.request("POST", "/api/v1/aliases", small).status == 201


def test_body_too_big_default_limit(alias_env):
    env = alias_env()
    r = env.http.request("POST", "/api/v1/aliases", b'{"target": "' + b"a" * 5000 + b'@example.org"}')
    assert_error(r, 413, "too-much-data")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", None])
def test_bad_content_type(alias_env, ctype):
    env = alias_env()
    body = json.dumps({"target": TARGET}).encode()
    headers = {"Content-Type": ctype} if ctype else {}
    r = env.http.request("POST", "/api/v1/aliases", body, headers=headers, content_type=None)
    assert_error(r, 415, "invalid-request-type")


@pytest.mark.parametrize("method,path", [
    ("PUT", "/api/v1/aliases"), ("DELETE", "/api/v1/aliases"), ("PATCH", "/api/v1/aliases"),
    ("GET", "/api/v1/aliases"),
    ("POST", "/api/v1/aliases/abcdefghjkmnpq"), ("PUT", "/api/v1/aliases/abcdefghjkmnpq"),
])
def test_method_not_allowed(alias_env, method, path):
    env = alias_env()
    r = env.http.request(method, path, {"target": TARGET} if method in ("PUT", "PATCH", "POST") else None)
    assert_error(r, 405, "method-not-allowed")


def test_unknown_path_not_found(alias_env):
    env = alias_env()
    assert_error(env.http.request("GET", "/api/v1/nothing"), 404, "not-found")


def test_cors_preflight(alias_env):
    env = alias_env()
    for path in ("/api/v1/aliases", "/api/v1/aliases/abcdefghjkmnpq"):
        r = env.http.request("OPTIONS", path, headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})
        assert r.status == 204, str(r)
        check_cors(r)
        methods = r.headers.get("access-control-allow-methods", "").upper()
        assert "POST" in methods or "DELETE" in methods, str(r)
        allowed = r.headers.get("access-control-allow-headers", "").lower()
        assert "content-type" in allowed and "authorization" in allowed, str(r)
        assert r.body == b""


def test_cors_on_errors_and_retry_after_exposed(alias_env):
    env = alias_env(aliases={"create_interval": 30})
    assert env.http.create(TARGET).status == 201
    r = env.http.create(TARGET)
    assert_error(r, 429, "rate-limited")
    check_cors(r)
    # the bookmarklet reads Retry-After from a cross-origin response: it must be exposed
    assert "retry-after" in r.headers.get("access-control-expose-headers", "").lower(), str(r)


# --------------------------------------------------------------------------- management

def test_get_alias(alias_env):
    env = alias_env()
    a = env.create(TARGET, days=5, max_usage=3)
    r = env.http.get(a["aid"], a["manage_token"])
    assert r.status == 200, str(r)
    check_cors(r)
    g = r.json
    assert g["aid"] == a["aid"] and g["alias"] == a["alias"] and g["target"] == TARGET
    assert g["status"] == "live"
    assert g["valid_until"] == a["valid_until"]
    assert abs(ts(g["created"]) - time.time()) < 10
    assert g["max_usage"] == 3 and g["uses"] == 0 and g["uses_left"] == 3
    assert "manage_token" not in g and "token_hash" not in json.dumps(g)


def test_get_unlimited_alias(alias_env):
    env = alias_env()
    a = env.create(TARGET)
    g = env.http.get(a["aid"], a["manage_token"]).json
    assert g["max_usage"] is None and g["uses_left"] is None, g


def test_auth_errors(alias_env):
    env = alias_env()
    a = env.create(TARGET)
    b = env.create(TARGET)
    for do in (env.http.get, env.http.delete):
        assert_error(do(a["aid"], None), 401, "unauthorized")
        # wrong token and unknown aid look the same (no oracle for existing ids)
        wrong = assert_error(do(a["aid"], "0" * 64), 404, "not-found")
        other = assert_error(do(a["aid"], b["manage_token"]), 404, "not-found")
        unknown = assert_error(do("abcdefghjkmnpq", a["manage_token"]), 404, "not-found")
        assert wrong == other == unknown
        assert_error(do(a["aid"], a["manage_token"].upper() + "0"), 404, "not-found")
    for header in ("Basic " + a["manage_token"], "Bearer", "Bearer ", a["manage_token"]):
        r = env.http.request("GET", f"/api/v1/aliases/{a['aid']}", headers={"Authorization": header})
        assert r.status in (401, 404), f"{header!r}: {r}"
        assert r.json["error"] in ("unauthorized", "not-found")
    # nothing above disabled anything
    assert env.http.get(a["aid"], a["manage_token"]).json["status"] == "live"


def test_delete_disables(alias_env):
    env = alias_env()
    a = env.create(TARGET, max_usage=4)
    r = env.http.delete(a["aid"], a["manage_token"])
    assert r.status == 200, str(r)
    check_cors(r)
    d = r.json
    assert d["status"] == "disabled" and d["aid"] == a["aid"] and d["target"] == TARGET
    assert set(d) >= {"aid", "alias", "target", "status", "created", "valid_until", "max_usage", "uses", "uses_left"}
    assert env.http.get(a["aid"], a["manage_token"]).json["status"] == "disabled"
    # deleting again is harmless and still says disabled
    again = env.http.delete(a["aid"], a["manage_token"])
    assert again.status == 200 and again.json["status"] == "disabled", str(again)
    # and SMTP refuses it
    res = send(env.smtp_port, [a["alias"]])
    code, msg = res.rcpt[a["alias"]]
    assert code == 550 and msg.startswith(b"5.2.1"), res


def test_status_expired_and_used_up(alias_env):
    env = alias_env()
    a = env.create(TARGET)
    db_execute(env.db_path, "UPDATE aliases SET valid_until = strftime('%s','now') - 10 WHERE id = ?", (a["aid"],))
    assert env.http.get(a["aid"], a["manage_token"]).json["status"] == "expired"
    b = env.create(TARGET, max_usage=1)
    assert send(env.smtp_port, [b["alias"]]).delivered
    g = env.http.get(b["aid"], b["manage_token"]).json
    assert (g["status"], g["uses"], g["uses_left"]) == ("used-up", 1, 0), g


# --------------------------------------------------------------------------- rate limit

def test_rate_limit_and_retry_after(alias_env):
    env = alias_env(aliases={"create_interval": 30})
    first = env.http.create(TARGET)
    assert first.status == 201, str(first)
    r = env.http.create(TARGET)
    assert_error(r, 429, "rate-limited")
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 30, str(r)
    # the tempalias route shares the limit
    assert_error(env.http.request("POST", "/aliases", {"target": TARGET}), 429, "rate-limited")
    # another client address is not affected, and is limited on its own
    assert env.http.create(TARGET, source="127.0.0.5").status == 201
    assert_error(env.http.create(TARGET, source="127.0.0.5"), 429, "rate-limited")
    assert env.cli("list").stdout.count(TARGET) == 2


def test_rate_limit_expires(alias_env):
    env = alias_env(aliases={"create_interval": 2})
    assert env.http.create(TARGET).status == 201
    r = env.http.create(TARGET)
    assert_error(r, 429, "rate-limited")
    assert 1 <= int(r.headers["retry-after"]) <= 2
    time.sleep(2.2)
    r = env.http.create(TARGET)
    assert r.status == 201, str(r)


def test_invalid_requests_do_not_spend_the_rate_limit(alias_env):
    env = alias_env(aliases={"create_interval": 30}, http={"max_body": 512})
    h = env.http
    assert_error(h.request("POST", "/api/v1/aliases", b"{nope"), 400, "invalid-data")
    assert_error(h.create("not-an-address"), 400, "invalid-data")
    assert_error(h.create(TARGET, days=999), 400, "invalid-data")
    assert_error(h.create(TARGET, max_usage=0), 400, "invalid-data")
    assert_error(h.create("x@alias.localhost"), 400, "invalid-data")
    assert_error(h.request("POST", "/api/v1/aliases", json.dumps({"target": TARGET}), content_type="text/plain"),
                 415, "invalid-request-type")
    assert_error(h.request("POST", "/api/v1/aliases", json.dumps({"target": TARGET, "p": "x" * 600})),
                 413, "too-much-data")
    assert h.request("POST", "/aliases", {"target": "bad"}).json["error"] == "invalid-data"
    r = h.create(TARGET)
    assert r.status == 201, f"invalid requests spent the creation allowance: {r}"
    assert_error(h.create(TARGET), 429, "rate-limited")


def test_rate_limited_request_is_not_stored(alias_env):
    env = alias_env(aliases={"create_interval": 30})
    assert env.http.create(TARGET).status == 201
    for _ in range(5):
        assert env.http.create("other@example.org").status == 429
    assert "other@example.org" not in env.cli("list").stdout


# --------------------------------------------------------------------------- client address / X-Forwarded-For

def creator_of(env, aid: str) -> str:
    out = env.cli("show", aid)
    assert out.returncode == 0, out.stderr
    return parse_kv(out.stdout)["creator"]


def test_forwarded_for_from_trusted_proxy(alias_env):
    env = alias_env(aliases={"create_interval": 30}, http={"trusted_proxies": "127.0.0.1/32"})
    h = env.http
    xff = {"X-Forwarded-For": "198.51.100.7"}
    r = h.create(TARGET, headers=xff)
    assert r.status == 201, str(r)
    assert creator_of(env, r.json["aid"]) == "198.51.100.7"
    assert_error(h.create(TARGET, headers=xff), 429, "rate-limited")
    # the rightmost untrusted hop is the client: left-hand entries are ignored
    assert_error(h.create(TARGET, headers={"X-Forwarded-For": "203.0.113.99, 198.51.100.7"}), 429, "rate-limited")
    # trusted hops on the right are skipped
    assert_error(h.create(TARGET, headers={"X-Forwarded-For": "198.51.100.7, 127.0.0.1"}), 429, "rate-limited")
    r = h.create(TARGET, headers={"X-Forwarded-For": "198.51.100.8"})
    assert r.status == 201, str(r)
    assert creator_of(env, r.json["aid"]) == "198.51.100.8"
    r = h.create(TARGET, headers={"X-Forwarded-For": "198.51.100.7, 198.51.100.9"})
    assert r.status == 201 and creator_of(env, r.json["aid"]) == "198.51.100.9", str(r)
    # the proxy's own address (no XFF) has its own allowance
    r = h.create(TARGET)
    assert r.status == 201 and creator_of(env, r.json["aid"]) == "127.0.0.1", str(r)


def test_forwarded_for_from_untrusted_peer_is_ignored(alias_env):
    env = alias_env(aliases={"create_interval": 30}, http={"trusted_proxies": "127.0.0.1/32"})
    h = env.http
    r = h.create(TARGET, source="127.0.0.5", headers={"X-Forwarded-For": "198.51.100.20"})
    assert r.status == 201, str(r)
    assert creator_of(env, r.json["aid"]) == "127.0.0.5"
    # spoofing a new XFF does not dodge the limit
    for fake in ("198.51.100.21", "10.1.2.3", "127.0.0.1", "garbage"):
        assert_error(h.create(TARGET, source="127.0.0.5", headers={"X-Forwarded-For": fake}), 429, "rate-limited")
    # and the address claimed in XFF was not charged
    r = h.create(TARGET, headers={"X-Forwarded-For": "198.51.100.20"})
    assert r.status == 201, str(r)


def test_forwarded_for_ignored_without_trusted_proxies(alias_env):
    env = alias_env(aliases={"create_interval": 30})
    assert env.http.create(TARGET, headers={"X-Forwarded-For": "198.51.100.1"}).status == 201
    assert_error(env.http.create(TARGET, headers={"X-Forwarded-For": "198.51.100.2"}), 429, "rate-limited")


# --------------------------------------------------------------------------- tempalias compatibility

def test_tempalias_post(alias_env):
    env = alias_env()
    now = time.time()
    r = env.http.request("POST", "/aliases", {"target": TARGET, "days": 3, "max-usage": 2})
    assert r.status == 200, str(r)
    a = r.json
    assert set(a) >= {"aid", "valid_from", "valid_until", "max_usage", "target", "days"}, a
    assert a["target"] == TARGET and a["days"] == 3 and a["max_usage"] == 2
    assert len(a["aid"]) == 14 and set(a["aid"]) <= AID_ALPHABET
    assert abs(ts(a["valid_from"]) - now) < 5
    assert abs(ts(a["valid_until"]) - ts(a["valid_from"]) - 3 * 86400) < 2
    # it is a real alias
    res = send(env.smtp_port, [f"{a['aid']}@{ALIAS_DOMAIN}"])
    assert res.delivered, res
    assert env.capture.messages[-1].rcpt_tos == [TARGET]
    show = parse_kv(env.cli("show", a["aid"]).stdout)
    assert (show["uses"], show["max_usage"]) == ("1", "2"), show


def test_tempalias_post_errors(alias_env):
    env = alias_env()
    assert_error(env.http.request("POST", "/aliases", {"target": "nope"}), 400, "invalid-data")
    assert_error(env.http.request("POST", "/aliases", {"target": TARGET, "max-usage": 0}), 400, "invalid-data")
    assert_error(env.http.request("POST", "/aliases", {"target": TARGET}, content_type="text/plain"),
                 415, "invalid-request-type")


def jsonp(body: bytes, callback: str) -> dict:
    text = body.decode()
    m = re.fullmatch(re.escape(callback) + r"\((.*)\);?\s*", text, re.S)
    assert m, f"not a JSONP call of {callback}: {text!r}"
    return json.loads(m.group(1))


def test_tempalias_jsonp(alias_env):
    env = alias_env()
    r = env.http.request("GET", "/aliases?callback=jQuery123_456&target=a%40example.org&days=2&max-usage=3")
    assert r.status == 200, str(r)
    assert r.headers["content-type"].startswith("text/javascript"), str(r)
    a = jsonp(r.body, "jQuery123_456")
    assert a["target"] == "a@example.org" and a["days"] == 2 and a["max_usage"] == 3, a
    res = send(env.smtp_port, [f"{a['aid']}@{ALIAS_DOMAIN}"])
    assert res.delivered and env.capture.messages[-1].rcpt_tos == ["a@example.org"], res


def test_tempalias_jsonp_errors_are_200(alias_env):
    env = alias_env(aliases={"create_interval": 30})
    r = env.http.request("GET", "/aliases?callback=cb&target=bad")
    assert r.status == 200, str(r)
    assert jsonp(r.body, "cb")["error"] == "invalid-data"
    r = env.http.request("GET", "/aliases?callback=cb&target=a%40example.org&days=99")
    assert jsonp(r.body, "cb")["error"] == "invalid-data"
    ok = jsonp(env.http.request("GET", "/aliases?callback=cb&target=a%40example.org").body, "cb")
    assert "aid" in ok, ok
    limited = env.http.request("GET", "/aliases?callback=cb&target=a%40example.org")
    assert limited.status == 200 and jsonp(limited.body, "cb")["error"] == "rate-limited", str(limited)


@pytest.mark.parametrize("callback", ["alert(1)//", "a b", "</script>", "x;y", "a" * 300])
def test_tempalias_jsonp_rejects_unsafe_callback(alias_env, callback):
    """The callback name is echoed into JavaScript: anything but an identifier path is refused."""
    from urllib.parse import quote
    env = alias_env()
    r = env.http.request("GET", f"/aliases?callback={quote(callback)}&target=a%40example.org")
    assert r.status in (200, 400), str(r)
    assert callback.encode() not in r.body, f"unsafe callback echoed: {r}"


# --------------------------------------------------------------------------- store failure

def lock_store(env):
    """Hold SQLite's write lock from another connection (like a long CLI purge or a backup)."""
    con = sqlite3.connect(str(env.db_path), timeout=1, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    return con


def create_in_thread(env, result: dict) -> threading.Thread:
    def create():
        t0 = time.monotonic()
        result["r"] = Http("127.0.0.1", env.http_port, timeout=30).create(TARGET)
        result["seconds"] = time.monotonic() - t0
    t = threading.Thread(target=create)
    t.start()
    return t


def timed(f):
    t0 = time.monotonic()
    value = f()
    return value, time.monotonic() - t0


def test_store_unavailable(alias_env):
    """With the SQLite write lock held elsewhere, creation fails with 503 (after the busy
    timeout), while the server keeps answering everything that does not need the store."""
    env = alias_env()
    a = env.create(TARGET)
    con = lock_store(env)
    result: dict = {}
    try:
        t = create_in_thread(env, result)
        time.sleep(0.5)
        page, secs = timed(lambda: Http("127.0.0.1", env.http_port, timeout=5).request("GET", "/"))
        assert page.status == 200 and secs < 1, f"GET / took {secs:.2f}s while the store was locked"
        with RawSMTP("127.0.0.1", env.smtp_port, timeout=10) as c:
            assert c.ehlo().code == 250
            assert c.cmd("MAIL FROM:<s@sender.test>").code == 250
            r, secs = timed(lambda: c.cmd("RCPT TO:<bob@example.org>"))
            assert r.code == 250 and secs < 1, f"plain RCPT: {r} after {secs:.2f}s"
            assert c.cmd("RSET").code == 250
        t.join(30)
        assert not t.is_alive()
    finally:
        con.execute("ROLLBACK")
        con.close()
    r = result["r"]
    assert_error(r, 503, "store-unavailable")
    check_cors(r)
    # once the lock is gone everything works again
    assert env.http.create(TARGET).status == 201
    assert send(env.smtp_port, [a["alias"]]).delivered


def test_alias_rcpt_not_stalled_by_pending_write(alias_env):
    """A creation blocked on an external write lock must not hold up alias RCPTs (reads; WAL
    allows them). Observed: the RCPT is answered only when the blocked write gives up (~4.5 s)."""
    env = alias_env()
    a = env.create(TARGET)
    con = lock_store(env)
    result: dict = {}
    try:
        t = create_in_thread(env, result)
        time.sleep(0.3)
        with RawSMTP("127.0.0.1", env.smtp_port, timeout=10) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<s@sender.test>").code == 250
            r, secs = timed(lambda: c.cmd(f"RCPT TO:<{a['alias']}>"))
            assert r.code == 250, str(r)
            c.cmd("RSET")
        t.join(30)
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert secs < 1, f"alias RCPT answered after {secs:.2f}s while a creation waited for the store lock"
