"""Helpers for the alias end-to-end tests (tests/e2e/test_alias_*.py) and bench/alias_bench.py.

* alias_config(...)        -- default_config plus [store], [aliases] and [http] on free ports
* Http                     -- tiny http.client wrapper (JSON in/out, optional source address)
* AliasEnv                 -- a started capture upstream + mailkeep with the HTTP API
* cli(...)                 -- `mailkeep alias ... -c FILE`, parsed `key: value` output
* send(...)                -- one smtplib transaction, returns (code, message) per step
* db_execute(...)          -- change the live SQLite store (e.g. expire an alias)

Only the standard library and tests/e2e/harness.py are used.
"""

from __future__ import annotations

import http.client
import json
import smtplib
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import MAILKEEP_BIN, Capture, Mailkeep, default_config, free_port

ALIAS_DOMAIN = "alias.localhost"
AID_ALPHABET = set("23456789abcdefghjkmnpqrstuvwxyz")
TARGET = "someone@example.org"


def alias_config(smtp_port: int, smarthost: str, http_port: int, **overrides: dict) -> dict:
    """default_config with an alias domain, a store file and the HTTP API on 127.0.0.1:http_port.

    create_interval defaults to 0 here (tests that check the rate limit set it)."""
    config = default_config(smtp_port, smarthost)
    config["store"] = {"path": "data/mailkeep.db"}
    config["aliases"] = {"domains": ALIAS_DOMAIN, "default_days": 7, "max_days": 60,
                         "max_usage": 100, "create_interval": 0, "purge_interval": 3600}
    config["http"] = {"listen": f"127.0.0.1:{http_port}", "trusted_proxies": "", "max_body": 4096}
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    return config


@dataclass
class Response:
    status: int
    headers: dict[str, str]      # lower-case names
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.headers} {self.body[:600]!r}"


class Http:
    """One request per connection (so each test controls its source address exactly)."""

    def __init__(self, host: str, port: int, source: str | None = None, timeout: float = 10.0):
        self.host, self.port, self.source, self.timeout = host, port, source, timeout

    def request(self, method: str, path: str, body: bytes | str | dict | list | None = None,
                headers: dict[str, str] | None = None, source: str | None = None,
                content_type: str | None = "application/json") -> Response:
        src = source or self.source
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                          source_address=(src, 0) if src else None)
        hdrs = dict(headers or {})
        data: bytes | None
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        if data is not None and content_type is not None and not any(k.lower() == "content-type" for k in hdrs):
            hdrs["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            payload = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, payload)
        finally:
            conn.close()

    # convenience wrappers
    def create(self, target: str = TARGET, source: str | None = None, headers: dict | None = None,
               **fields) -> Response:
        body = {"target": target, **fields}
        return self.request("POST", "/api/v1/aliases", body, headers=headers, source=source)

    def get(self, aid: str, token: str | None) -> Response:
        h = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.request("GET", f"/api/v1/aliases/{aid}", headers=h)

    def delete(self, aid: str, token: str | None) -> Response:
        h = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.request("DELETE", f"/api/v1/aliases/{aid}", headers=h)


def assert_error(resp: Response, status: int, code: str) -> dict:
    """The documented error shape: status, JSON {"error": code, "description": text}."""
    assert resp.status == status, f"expected {status} {code}, got {resp}"
    assert resp.headers.get("content-type", "").startswith("application/json"), str(resp)
    body = resp.json
    assert body.get("error") == code, f"expected error {code!r}, got {resp}"
    assert isinstance(body.get("description"), str) and body["description"], str(resp)
    return body


class AliasEnv:
    """Capture upstream + mailkeep (SMTP + HTTP API) in `workdir`."""

    def __init__(self, workdir: Path, capture: Capture | None = None, smarthost: str | None = None,
                 **overrides: dict):
        self.own_capture = capture is None and smarthost is None
        self.capture = capture if capture is not None else (Capture().start() if smarthost is None else None)
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.config = alias_config(self.smtp_port, smarthost or self.capture.address, self.http_port, **overrides)
        self.mk = Mailkeep(workdir, self.config)
        self.workdir = Path(workdir)
        self.http = Http("127.0.0.1", self.http_port)

    @property
    def db_path(self) -> Path:
        return self.workdir / self.config["store"]["path"]

    @property
    def config_path(self) -> Path:
        return self.mk.config_path

    def start(self) -> "AliasEnv":
        try:
            self.mk.start()
            wait_http(self.http_port, proc=self.mk.proc)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        code = self.mk.stop() if self.mk.proc is not None else None
        if self.own_capture and self.capture is not None:
            self.capture.stop()
            self.own_capture = False
        return code

    def create(self, target: str = TARGET, **fields) -> dict:
        r = self.http.create(target, **fields)
        assert r.status == 201, f"create failed: {r}\n{self.mk.log()[-3000:]}"
        return r.json

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return cli(self.config_path, *args, cwd=self.workdir)


def wait_http(port: int, host: str = "127.0.0.1", timeout: float = 15.0, proc=None) -> None:
    from harness import wait_port
    wait_port(host, port, timeout, proc)


def cli(config_path: Path, *args: str, cwd: Path | None = None, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(MAILKEEP_BIN), "alias", *args, "-c", str(config_path)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def parse_kv(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if ": " in line:
            k, _, v = line.partition(": ")
            out[k.strip()] = v.strip()
    return out


def parse_list(text: str) -> tuple[list[str], list[dict[str, str]]]:
    lines = [l for l in text.splitlines() if l.strip()]
    assert lines and lines[0].startswith("# "), f"no header line in {text!r}"
    header = lines[0][2:].split("\t")
    rows = [dict(zip(header, l.split("\t"))) for l in lines[1:]]
    return header, rows


def message(subject: str = "alias test", to: str = "x@alias.localhost", body: str = "hello") -> bytes:
    return (f"From: sender@sender.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.monotonic_ns()}@sender.test>\r\n\r\n{body}\r\n").encode()


@dataclass
class SendResult:
    rcpt: dict[str, tuple[int, bytes]]
    data: tuple[int, bytes] | None

    @property
    def delivered(self) -> bool:
        return self.data is not None and self.data[0] == 250


def send(port: int, rcpts: list[str], mail_from: str = "sender@sender.test",
         body: bytes | None = None, host: str = "127.0.0.1", timeout: float = 30.0) -> SendResult:
    """MAIL, each RCPT (replies recorded, not raised), DATA if any RCPT got 250, QUIT."""
    rcpt_replies: dict[str, tuple[int, bytes]] = {}
    with smtplib.SMTP(host, port, timeout=timeout) as s:
        s.ehlo("client.test")
        code, msg = s.mail(mail_from)
        assert code == 250, f"MAIL: {code} {msg!r}"
        for r in rcpts:
            rcpt_replies[r] = s.rcpt(r)
        data = None
        if any(c == 250 for c, _ in rcpt_replies.values()):
            data = s.data(body if body is not None else message(to=rcpts[0]))
    return SendResult(rcpt_replies, data)


def db_execute(db_path: Path, sql: str, params: tuple = ()) -> int:
    """Run one statement against the live store (WAL mode; mailkeep keeps running)."""
    con = sqlite3.connect(str(db_path), timeout=10)
    try:
        cur = con.execute(sql, params)
        con.commit()
        return cur.rowcount
    finally:
        con.close()


def enhanced(msg: bytes) -> str:
    """'5.2.1' from b'5.2.1 alias expired'."""
    return msg.decode(errors="replace").split(" ", 1)[0]


# --------------------------------------------------------------------------- pytest fixture
# Imported by the test modules (`from alias_support import alias_env`): pytest then sees it.

import pytest  # noqa: E402


@pytest.fixture
def alias_env(mailkeep_bin, tmp_path):
    """Factory: alias_env(capture=None, aliases={...}, http={...}, ...) -> started AliasEnv.

    Each gets its own workdir, capture upstream (unless one is passed) and free ports;
    all are stopped at teardown and the tail of mailkeep's log is printed."""
    envs: list[AliasEnv] = []

    def start(capture: Capture | None = None, name: str | None = None, **overrides) -> AliasEnv:
        env = AliasEnv(tmp_path / (name or f"mk{len(envs)}"), capture=capture, **overrides)
        envs.append(env)
        return env.start()

    yield start
    for env in envs:
        code = env.stop()
        print(f"--- mailkeep log ({env.mk.stderr_path}, exit {code}) ---")
        print("\n".join(env.mk.log().splitlines()[-60:]))
