"""Browser tests (tests/browser/alias_browser.mjs, Debian chromium + playwright-core), driven from pytest.

This wrapper starts a capture upstream, two mailkeeps sharing it (create_interval 0 and 30), a
third-party sign-up page over http on 127.0.0.2 and over https (self-signed, `openssl req`) on
127.0.0.3, runs the node script, and then sends mail to every alias the browser created and checks
that the capture upstream got it for the target.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from harness import REPO, Capture, free_port
from alias_support import AliasEnv, TARGET, parse_kv, send  # noqa: F401

BROWSER_DIR = REPO / "tests" / "browser"
SCRIPT = BROWSER_DIR / "alias_browser.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 -- keep pytest output clean
        pass


class StaticServer:
    """http.server for tests/browser/fixtures on host:free port, optionally TLS."""

    def __init__(self, host: str, directory: Path, tls: tuple[Path, Path] | None = None):
        self.host = host
        self.port = free_port(host)
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer((host, self.port), handler)
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> "StaticServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed(tmp: Path, ip: str) -> tuple[Path, Path] | None:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    res = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60)
    return (cert, key) if res.returncode == 0 else None


def _require_tools() -> None:
    missing = [what for what, ok in [
        ("node", shutil.which("node")),
        (CHROMIUM, Path(CHROMIUM).exists()),
        ("tests/browser/node_modules/playwright-core (npm ci --prefix tests/browser)",
         (BROWSER_DIR / "node_modules" / "playwright-core").is_dir()),
        ("openssl", shutil.which("openssl")),
    ] if not ok]
    if missing:
        msg = "browser test needs: " + ", ".join(missing)
        if os.environ.get("MAILKEEP_REQUIRE_BINARY") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def test_browser_page_and_bookmarklet(mailkeep_bin, tmp_path):
    _require_tools()
    out_dir = BROWSER_DIR / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "results.json").unlink(missing_ok=True)
    capture = Capture().start()
    open_env = AliasEnv(tmp_path / "open", capture=capture)
    limited_env = AliasEnv(tmp_path / "limited", capture=capture, aliases={"create_interval": 30})
    tls = self_signed(tmp_path, "127.0.0.3")
    assert tls, "openssl req failed"
    plain = StaticServer("127.0.0.2", BROWSER_DIR / "fixtures")
    secure = StaticServer("127.0.0.3", BROWSER_DIR / "fixtures", tls=tls)
    started = []
    try:
        for thing in (open_env, limited_env, plain, secure):
            thing.start()
            started.append(thing)
        env = dict(os.environ,
                   MAILKEEP_URL=f"http://127.0.0.1:{open_env.http_port}",
                   MAILKEEP_LIMITED_URL=f"http://127.0.0.1:{limited_env.http_port}",
                   THIRD_PARTY_URL=f"{plain.url}/signup.html",
                   THIRD_PARTY_HTTPS_URL=f"{secure.url}/signup.html",
                   ALIAS_TARGET=TARGET, ALIAS_DOMAIN="alias.localhost",
                   OUT_DIR=str(out_dir), CHROMIUM=CHROMIUM, DEAD_PORT=str(free_port()))
        proc = subprocess.run(["node", "--test-reporter=spec", str(SCRIPT)], cwd=BROWSER_DIR, env=env,
                              capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
        print(proc.stdout[-8000:])
        print(proc.stderr[-4000:])
        assert proc.returncode == 0, f"browser tests failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        # every scenario ran (none skipped silently)
        assert "# skipped 0" in proc.stdout or "skipped 0" in proc.stdout, proc.stdout[-2000:]
        results = json.loads((out_dir / "results.json").read_text())
        assert set(results) == {"page", "bookmarklet", "link", "https", "limited"}, results

        # mail to every alias the browser made reaches the target
        sent = 0
        for name, info in results.items():
            mk = limited_env if name == "limited" else open_env
            res = send(mk.smtp_port, [info["alias"]])
            assert res.delivered, f"{name}: {res}"
            sent += 1
            msgs = capture.wait_for(sent)
            assert msgs[-1].rcpt_tos == [TARGET], (name, msgs[-1].rcpt_tos)
            shown = parse_kv(mk.cli("show", info["alias"].split("@")[0]).stdout)
            want = "unlimited" if info["max_usage"] is None else str(info["max_usage"])
            assert (shown["uses"], shown["max_usage"]) == ("1", want), (name, shown)
            assert shown["creator"] == "127.0.0.1", shown
        # the rate-limited second use created nothing
        rows = [l for l in limited_env.cli("list").stdout.splitlines()[1:] if l.strip()]
        assert len(rows) == 1, rows
        # the https alias had max_usage 1: it is used up now
        res = send(open_env.smtp_port, [results["https"]["alias"]])
        code, msg = res.rcpt[results["https"]["alias"]]
        assert code == 550 and msg.startswith(b"5.2.1"), res
    finally:
        for thing in reversed(started):
            thing.stop()
        capture.stop()
        for mk in (open_env, limited_env):
            print(f"--- {mk.workdir.name} log ---")
            print("\n".join(mk.mk.log().splitlines()[-30:]))
