"""Browser end-to-end tests of the web view at /mail/ (web/mail.html, web/mail.js) over its JSON API
(src/webreader/api.h), with headless Debian Chromium driven by playwright-core
(tests/browser/mail_browser.mjs, tests/browser/mail_hostile.mjs), plus plain-HTTP checks of the API's
security rules (python http.client).

One environment for the module (`webenv`):
* a capture upstream ([backup] upstream and [delivery] smarthost);
* `mailkeep serve` with [backup] domains = example.org, accounts alice and bob, [general] user = mail
  (uid 8), [index] enabled, [http] listen on 127.0.0.1, [submission] listen on 127.0.0.1 (the page's
  compose and reply), [spam] enabled with a model `mailkeep spam train` made from six messages before
  the start (so inbound mail is scored and `!` retrains), passwords from `mailkeep user passwd --stdin`;
* Dovecot started from exactly `mailkeep dovecot-config` over the same Maildirs (IMAP checks);
* a counting HTTP server on 127.0.0.5 that every remote URL of the attack mail points at;
* an "oracle" HTTP server on 127.0.0.1 through which the node scripts ask Python to look at IMAP
  (imaplib through the Dovecot), to move a message as an IMAP client, to run `mailkeep search`,
  `mailkeep filter list` and `mailkeep spam classify`, to send mail through SMTP, and to read what the
  capture upstream and the counting server got, in the middle of a browser scenario.

The mail (tests/e2e/mail_browser_corpus.py): 39 ordinary messages for alice (conversations threaded by
In-Reply-To/References, HTML newsletters, attachments), 25 HTML/header attack messages, one for bob,
all sent through SMTP to the [smtp] listen port.

Each node script runs once, at its first test here (all its node:test tests in order; every test uses
its own conversations), writes each test's outcome to a JSON file, and each pytest test below reports
one of them; the page's known bugs are xfail(strict=True) with the reproduction in the reason.
About 2 minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import email
import http.client
import http.server
import imaplib
import json
import os
import re
import shutil
import smtplib
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from backup_support import MAIL_GID, MAIL_UID, backup_config, public_tempdir, write_accounts
from harness import MAILKEEP_BIN, REPO, Capture, Mailkeep, free_port, wait_port
from mail_browser_corpus import ALICE, BOB, attacks, bob_messages, ordinary, robot_messages, spam_training
from standalone_support import MkDovecot, close_imap

# Chromium for minutes: once, on the release build (conftest.py, release_only).
pytestmark = pytest.mark.release_only

BROWSER_DIR = REPO / "tests" / "browser"
OUT_DIR = BROWSER_DIR / "out"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PW = {ALICE: "alice-web-Secret-1", BOB: "bob-web-Secret-22"}
BEACON_HOST = "127.0.0.5"
API = "/api/v1/mail/"


def _require_tools() -> None:
    missing = [what for what, ok in [
        ("node", shutil.which("node")),
        (CHROMIUM, Path(CHROMIUM).exists()),
        ("tests/browser/node_modules/playwright-core (npm ci --prefix tests/browser)",
         (BROWSER_DIR / "node_modules" / "playwright-core").is_dir()),
        ("dovecot", shutil.which("dovecot")),
    ] if not ok]
    if missing:
        msg = "browser test needs: " + ", ".join(missing)
        if os.environ.get("MAILKEEP_REQUIRE_BINARY") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


# --------------------------------------------------------------------------- the counting server

class CountingServer:
    """HTTP on 127.0.0.5: answers every request (a 1x1 GIF, or an empty CSS/HTML page) and records
    (method, path, headers)."""

    GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")

    def __init__(self, host: str = BEACON_HOST):
        self.host = host
        self.port = free_port(host)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                with outer.lock:
                    outer.requests.append({"method": self.command, "path": self.path,
                                           "headers": {k.lower(): v for k, v in self.headers.items()}})
                body, ctype = (outer.GIF, "image/gif")
                if self.path.endswith(".css"):
                    body, ctype = b"", "text/css"
                elif self.path.endswith(".html") or "." not in self.path.rsplit("/", 1)[-1]:
                    body, ctype = b"<!doctype html><p>beacon</p>", "text/html"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_PUT = do_OPTIONS = _answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> list[dict]:
        with self.lock:
            return list(self.requests)

    def start(self) -> "CountingServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- the environment

class WebEnv:
    def __init__(self):
        self.base = public_tempdir("mailkeep-webview-")
        self.capture = Capture().start()
        self.beacon = CountingServer().start()
        self.archive = self.base / "archive"
        self.index = self.base / "index"
        for d in (self.archive, self.index):
            d.mkdir()
            os.chown(d, MAIL_UID, MAIL_GID)
        write_accounts(self.base / "accounts.txt", ["alice", "bob"])
        self.http_port = free_port()
        self.submission_port = free_port()
        # the model and the verdict history: the server hands the directory to [general] user (the
        # page's "!" rewrites the model as that user)
        self.spam_dir = self.base / "spam"
        self.spam_dir.mkdir()
        self.model = self.spam_dir / "spam.model"
        config = backup_config(free_port(), self.capture.address, self.archive, self.base / "accounts.txt",
                               upstream=self.capture.address, user="mail",
                               index={"path": str(self.index), "enabled": "true", "scan_interval": 5},
                               http={"listen": f"127.0.0.1:{self.http_port}"},
                               submission={"listen": f"127.0.0.1:{self.submission_port}"},
                               spam={"enabled": "true", "model": str(self.model),
                                     "history": str(self.spam_dir / "history.db")})
        config["users"] = {"passwd": str(self.base / "users.passwd")}
        self.mk = Mailkeep(self.base / "mailkeep", config)
        self.mk.workdir.chmod(0o755)
        self.mk.config_path.chmod(0o644)
        self.config_path = self.mk.config_path
        self.dovecot: MkDovecot | None = None
        self.ordinary = ordinary()
        self.attacks = attacks(self.beacon.url)
        self.bob = bob_messages()
        self.cli_log: list[str] = []
        self._imap: dict[str, imaplib.IMAP4] = {}
        self._imap_lock = threading.Lock()

    # ---- the CLI
    def cli(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        args = list(args)
        at = args.index("--") if "--" in args else len(args)   # -c before "--" (a query may start with -)
        args[at:at] = ["-c", str(self.config_path)]
        res = subprocess.run([str(MAILKEEP_BIN), *args], capture_output=True, text=True,
                             input=input, stdin=None if input is not None else subprocess.DEVNULL, timeout=timeout)
        self.cli_log.append(f"mailkeep {' '.join(args)} -> {res.returncode}: {res.stdout[-300:]!r} {res.stderr[-300:]!r}")
        return res

    def search(self, query: str, limit: int = 500) -> dict:
        res = self.cli("search", "--user", ALICE, "--json", "--limit", str(limit), "--", query)
        assert res.returncode == 0, f"mailkeep search {query!r}: exit {res.returncode}: {res.stdout} {res.stderr}"
        return json.loads(res.stdout)

    # ---- start
    def start(self) -> "WebEnv":
        for user, pw in PW.items():
            res = self.cli("user", "passwd", user, "--stdin", input=pw + "\n")
            assert res.returncode == 0 and res.stdout.strip() == f"password set for {user}", res
        self.train_spam_model()
        self.mk.start()
        wait_port("127.0.0.1", self.http_port, 15, self.mk.proc)
        self.dovecot = MkDovecot(self.config_path, self.base / "dovecot").start()
        # one IMAP login per account creates the special-use folders (auto = subscribe)
        for user in PW:
            c = self.imap(user)
            close_imap(c)
        self.send(self.ordinary + self.attacks, ALICE)
        self.send(self.bob, BOB)
        self.wait_indexed(len(self.ordinary) + len(self.attacks))
        return self

    def train_spam_model(self) -> None:
        """A model from a few made-up messages (mailkeep spam train), before the server loads it."""
        train = self.base / "spam-train"
        train.mkdir()
        groups: dict[str, list[str]] = {"spam": [], "ham": []}
        for group, raws in zip(groups, spam_training()):
            for i, raw in enumerate(raws):
                path = train / f"{group}{i}.eml"
                path.write_bytes(raw)
                groups[group].append(str(path))
        res = self.cli("spam", "train", "--spam", *groups["spam"], "--ham", *groups["ham"])
        assert res.returncode == 0 and self.model.exists(), f"spam train: {res.returncode} {res.stdout} {res.stderr}"

    def send(self, messages: list[dict], rcpt: str) -> None:
        s = smtplib.SMTP("127.0.0.1", self.mk.port, timeout=60)
        try:
            s.ehlo("mx.sender.test")
            for m in messages:
                refused = s.sendmail("sender@remote.test", [rcpt], m["raw"], mail_options=["BODY=8BITMIME"])
                assert refused == {}, refused
        finally:
            s.quit()

    def wait_indexed(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            res = self.cli("search", "--user", ALICE, "--json", "--messages", "--limit", "1000", "--", "in:anywhere")
            n = len(json.loads(res.stdout)["messages"]) if res.returncode == 0 else -1
            if n >= count:
                return
            assert time.monotonic() < deadline, f"only {n} of {count} messages indexed after {timeout}s:\n{self.mk.log()[-3000:]}"
            time.sleep(0.3)

    # ---- the archive's files
    def message_files(self, mid: str, user: str = ALICE) -> list[Path]:
        """Every file of the account's Maildir (INBOX and the Maildir++ folders, cur/ and new/) whose
        header names Message-ID <mid>."""
        local, domain = user.split("@")
        root = self.archive / domain / local
        want = re.compile(rb"^message-id:[ \t]*<" + re.escape(mid.encode()) + rb">[ \t]*\r?$", re.I | re.M)
        found = []
        for folder in [root, *sorted(p for p in root.iterdir() if p.name.startswith(".") and p.is_dir())]:
            for sub in ("cur", "new"):
                d = folder / sub
                if not d.is_dir():
                    continue
                for f in sorted(d.iterdir()):
                    with contextlib.suppress(FileNotFoundError):   # renamed meanwhile (a flag, a move)
                        head = f.read_bytes()[:65536].split(b"\r\n\r\n", 1)[0]
                        if want.search(head):
                            found.append(f)
        return found

    def spam_score(self, mid: str, timeout: float = 5) -> dict:
        """`mailkeep spam classify` of the one file of <mid>: {path, folder, score, verdict}. A rename under our
        feet (Dovecot's flags) is looked up again, for a bounded time."""
        deadline = time.monotonic() + timeout
        while True:
            files = self.message_files(mid)
            if len(files) != 1:
                assert time.monotonic() < deadline, f"<{mid}>: files {files}"
                time.sleep(0.2)
                continue
            res = self.cli("spam", "classify", str(files[0]))
            if res.returncode == 0:
                path, score, verdict = res.stdout.rstrip("\n").split("\t")
                assert path == str(files[0]), res.stdout
                folder = files[0].parent.parent.name   # the Maildir itself (INBOX) or a Maildir++ .Folder
                return {"path": path, "folder": folder[1:] if folder.startswith(".") else "INBOX",
                        "score": float(score), "verdict": verdict}
            assert time.monotonic() < deadline, f"spam classify {files[0]}: {res.returncode} {res.stdout} {res.stderr}"
            time.sleep(0.2)

    # ---- IMAP (one logged-in session per account, kept: Dovecot's Argon2id check takes ~1 s)
    def imap(self, user: str = ALICE) -> imaplib.IMAP4:
        c = self.dovecot.imap()
        typ, data = c.login(user, PW[user])
        assert typ == "OK", data
        return c

    def _session(self, user: str) -> imaplib.IMAP4:
        c = self._imap.get(user)
        if c is not None:
            try:
                if c.noop()[0] == "OK":
                    return c
            except (imaplib.IMAP4.error, OSError):
                pass
            close_imap(c)
        c = self._imap[user] = self.imap(user)
        return c

    def imap_state(self, mids: list[str], user: str = ALICE) -> dict[str, list[list[str]]]:
        """{mid: [[folder, flag...], ...]}: every copy of each <mid> in every folder (EXAMINE each
        folder, which makes Dovecot sync it with the Maildir first)."""
        with self._imap_lock:
            c = self._session(user)
            typ, data = c.list()
            folders = []
            for line in data:
                m = re.match(rb'\(([^)]*)\) (?:"[^"]*"|NIL) "?([^"]+)"?$', line)
                if m and b"\\noselect" not in m.group(1).lower():
                    folders.append(m.group(2).decode())
            out: dict[str, list[list[str]]] = {mid: [] for mid in mids}
            for folder in folders:
                typ, data = c.select(f'"{folder}"', readonly=True)
                assert typ == "OK", (folder, data)
                for mid in mids:
                    typ, data = c.uid("SEARCH", None, "HEADER", "Message-ID", f'"<{mid}>"')
                    assert typ == "OK", data
                    for uid in (data[0] or b"").split():
                        typ, fd = c.uid("FETCH", uid, "(FLAGS)")
                        text = b" ".join(x if isinstance(x, bytes) else x[0] for x in fd if x)
                        flags = re.search(rb"FLAGS \(([^)]*)\)", text)
                        out[mid].append([folder] + sorted(f.decode() for f in flags.group(1).split() if f != b"\\Recent"))
            return {mid: sorted(v) for mid, v in out.items()}

    def imap_move(self, mid: str, src: str, dst: str, user: str = ALICE) -> None:
        """UID MOVE of the one copy of <mid> in src, as an IMAP client does it."""
        with self._imap_lock:
            c = self._session(user)
            typ, data = c.select(f'"{src}"')
            assert typ == "OK", data
            typ, data = c.uid("SEARCH", None, "HEADER", "Message-ID", f'"<{mid}>"')
            uids = (data[0] or b"").split()
            assert len(uids) == 1, f"<{mid}> in {src}: UIDs {uids}"
            typ, data = c.uid("MOVE", uids[0], f'"{dst}"')
            assert typ == "OK", f"UID MOVE: {typ} {data}"
            c.close()

    def stop(self) -> None:
        for c in self._imap.values():
            close_imap(c)
        if self.dovecot:
            print("--- dovecot log ---\n" + "\n".join(self.dovecot.log().splitlines()[-30:]))
            self.dovecot.stop()
        code = self.mk.stop()
        print(f"--- mailkeep log (exit {code}) ---\n" + "\n".join(self.mk.log().splitlines()[-60:]))
        print("--- CLI ---\n" + "\n".join(self.cli_log[-20:]))
        self.capture.stop()
        self.beacon.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------- the oracle

class Oracle:
    """POST /OP with a JSON object -> JSON answer; what the node scripts ask Python to do."""

    def __init__(self, env: WebEnv):
        self.env = env
        self.port = free_port()
        self.calls: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                args = json.loads(self.rfile.read(length) or b"{}")
                op = self.path.strip("/")
                try:
                    result, status = outer.call(op, args), 200
                except Exception as exc:  # noqa: BLE001 -- reported to the script
                    result, status = {"error": f"{type(exc).__name__}: {exc}"}, 500
                outer.calls.append(f"{op} {json.dumps(args)[:200]} -> {status} {json.dumps(result)[:300]}")
                body = json.dumps(result).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def call(self, op: str, a: dict):
        env = self.env
        if op == "imap_state":
            return env.imap_state(a["mids"], a.get("user", ALICE))
        if op == "imap_move":
            env.imap_move(a["mid"], a["from"], a["to"])
            return {"ok": True}
        if op == "search":
            return env.search(a["query"])
        if op == "beacon":
            return env.beacon.log()
        if op == "send":
            # count messages from robot@builds.test through SMTP, each with its own Message-ID
            messages = robot_messages(int(a.get("count", 1)), a.get("tag") or uuid.uuid4().hex[:8])
            env.send(messages, a.get("rcpt", ALICE))
            return [{k: v for k, v in m.items() if k != "raw"} for m in messages]
        if op == "captured":
            # what the capture upstream (the smarthost and [backup] upstream) got, from the since-th on
            got = env.capture.messages
            return {"count": len(got), "messages": [captured_json(m) for m in got[int(a.get("since", 0)):]]}
        if op == "spam_score":
            return env.spam_score(a["mid"])
        if op == "filter_list":
            res = env.cli("filter", "list", "--user", a.get("user", ALICE))
            assert res.returncode == 0, f"filter list: {res.returncode} {res.stdout} {res.stderr}"
            return {"lines": res.stdout.splitlines()}
        raise ValueError(f"unknown op {op}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def captured_json(m) -> dict:
    """A captured message for the scripts: the envelope, the header fields (unfolded, by lower-case
    name, every occurrence) and the text."""
    parsed = email.message_from_bytes(m.data)
    headers: dict[str, list[str]] = {}
    for name, value in parsed.items():
        headers.setdefault(name.lower(), []).append(re.sub(r"\r?\n[ \t]+", " ", str(value)).strip())
    body = parsed.get_payload(decode=True) if not parsed.is_multipart() else b""
    return {"mail_from": m.mail_from, "rcpt_tos": m.rcpt_tos, "headers": headers,
            "text": (body or b"").decode("utf-8", "replace"), "size": len(m.data)}


@pytest.fixture(scope="module")
def webenv():
    from harness import require_binary
    require_binary()
    _require_tools()
    env = WebEnv()
    try:
        env.start()
    except BaseException:
        env.stop()
        raise
    yield env
    env.stop()


@pytest.fixture(scope="module")
def oracle(webenv):
    o = Oracle(webenv)
    yield o
    print("--- oracle calls ---\n" + "\n".join(o.calls[-40:]))
    o.stop()


def write_fixture(webenv: WebEnv, oracle: Oracle, path: Path) -> Path:
    """The JSON file the node scripts read (MAIL_FIXTURE; see tests/browser/mail_lib.mjs)."""
    OUT_DIR.mkdir(exist_ok=True)
    strip = lambda ms: [{k: v for k, v in m.items() if k != "raw"} for m in ms]  # noqa: E731
    path.write_text(json.dumps({
        "url": f"http://127.0.0.1:{webenv.http_port}",
        "oracle": oracle.url,
        "beacon": webenv.beacon.url,
        "outDir": str(OUT_DIR),
        "users": {"alice": {"user": ALICE, "password": PW[ALICE]}, "bob": {"user": BOB, "password": PW[BOB]}},
        "messages": strip(webenv.ordinary + webenv.bob),
        "attacks": strip(webenv.attacks),
    }, indent=1))
    return path


@pytest.fixture(scope="module")
def fixture_file(webenv, oracle):
    return write_fixture(webenv, oracle, webenv.base / "fixture.json")


class BrowserRuns:
    """Runs each node script once (all its tests, in order) and answers for one test at a time: the
    script writes {name: {status, error, ms}} to $MAIL_RESULTS (tests/browser/mail_lib.mjs check())."""

    def __init__(self, fixture_file: Path):
        self.fixture_file = fixture_file
        self.runs: dict[str, tuple[str, dict]] = {}
        self.checked: dict[str, set[str]] = {}

    def _run(self, script: str) -> tuple[str, dict]:
        results_path = self.fixture_file.with_name(script + ".results.json")
        results_path.unlink(missing_ok=True)
        env = dict(os.environ, MAIL_FIXTURE=str(self.fixture_file), MAIL_RESULTS=str(results_path), CHROMIUM=CHROMIUM)
        started = time.monotonic()
        proc = subprocess.run(["node", "--test-reporter=spec", script], cwd=BROWSER_DIR, env=env,
                              capture_output=True, text=True, timeout=420, stdin=subprocess.DEVNULL)
        out = (f"$ node {script}: exit {proc.returncode} in {time.monotonic() - started:.1f}s\n" + proc.stdout
               + ("\n--- stderr ---\n" + proc.stderr if proc.stderr.strip() else ""))
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        return out, results

    def check(self, script: str, name: str) -> None:
        if script not in self.runs:
            self.runs[script] = self._run(script)
        out, results = self.runs[script]
        self.checked.setdefault(script, set()).add(name)
        r = results.get(name)
        assert r is not None, f"{script}: no result for {name!r} (renamed? the script crashed?):\n{out[-6000:]}"
        print(f"{script}: {name!r}: {r['status']} in {r['ms']} ms")
        if r["status"] != "pass":
            print(out[-10000:])
        assert r["status"] == "pass", f"{script}: {name!r} failed:\n{r.get('error', '')[:6000]}"


@pytest.fixture(scope="module")
def browser(fixture_file):
    return BrowserRuns(fixture_file)


BROWSER_TESTS = [
    "login: a wrong password shows an error and no app; the Inbox lists conversations",
    "search: / then a query with operators lists what mailkeep search finds",
    "keys: j k o y archive a conversation (IMAP: in Archive, not in INBOX)",
    "keys: l labels, s stars, Shift+U marks unread, z undoes (IMAP flags follow)",
    "an IMAP client moves a message to Trash: after a reload the Trash shows it",
    "keys: ! moves the conversation to Junk (IMAP: in Junk) and its spam score rises",
    "keys: r sends a reply: at the smarthost with In-Reply-To and References, and in the conversation",
    "filters: a filter made in the editor (skip the Inbox, label Builds) meets 20 matching messages sent through SMTP",
    "focus is visible; at 375 px the list is one column and usable",
    "200 % zoom (640x400 CSS px): the Inbox and a conversation do not scroll sideways; subjects are visible",
]


@pytest.mark.parametrize("name", BROWSER_TESTS)
def test_page(browser, name):
    browser.check("mail_browser.mjs", name)


def test_read_row_not_bold_after_back(browser):
    browser.check("mail_browser.mjs", "read: a conversation read and left with u is no longer bold")


def test_logged_out_shows_no_app(browser):
    browser.check("mail_browser.mjs",
             "logged out: nothing of the app is visible (login screen, failed login, logout)")


def test_toolbar_without_exceptions(browser):
    browser.check("mail_browser.mjs", "toolbar: ←, Label and Move work without an uncaught exception")


def test_label_with_slash(browser):
    browser.check("mail_browser.mjs", "labels with a slash (nested, as Gmail names them) can be opened")


def test_reload_conversation_from_search(browser):
    browser.check("mail_browser.mjs", "reload keeps a conversation opened from a search")


# --------------------------------------------------------------------------- hostile mail in the browser

def test_attacks_in_page(browser):
    browser.check("mail_hostile.mjs", "attacks opened in the page run nothing and fetch nothing")


def test_attacks_sanitised_html(browser):
    browser.check("mail_hostile.mjs",
             "the sanitised HTML, framed as the page frames it and opened on its own, runs and fetches nothing")


def test_show_them(browser):
    browser.check("mail_hostile.mjs", "Show them loads exactly the remote image of that message")


def test_html_bodies_shown(browser):
    browser.check("mail_hostile.mjs", "HTML bodies show in the page and Show original opens the file")


# --------------------------------------------------------------------------- the API over plain HTTP

class Http:
    """http.client against mailkeep's web listener; every response is kept (for the header checks)."""

    def __init__(self, port: int):
        self.port = port
        self.responses: list[tuple[str, int, dict]] = []

    def request(self, method: str, path: str, body=None, cookie: str | None = None, csrf: str | None = None,
                headers: dict | None = None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        if cookie:
            h["Cookie"] = cookie
        if csrf is not None:
            h["X-CSRF-Token"] = csrf
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        set_cookies = [v for k, v in r.getheaders() if k.lower() == "set-cookie"]
        c.close()
        self.responses.append((f"{method} {path}", r.status, hdrs))
        parsed = None
        if hdrs.get("content-type", "").startswith("application/json") and raw:
            parsed = json.loads(raw)
        return r.status, hdrs, parsed if parsed is not None else raw, set_cookies

    def login(self, user: str, password: str) -> tuple[str, str, str]:
        """(cookie header value, csrf token, the raw Set-Cookie)."""
        status, _, body, cookies = self.request("POST", API + "session", {"username": user, "password": password})
        assert status == 200, (status, body)
        assert len(cookies) == 1, cookies
        return cookies[0].split(";")[0], body["csrfToken"], cookies[0]


@pytest.fixture(scope="module")
def web(webenv):
    return Http(webenv.http_port)


@pytest.fixture(scope="module")
def alice_ids(webenv, web):
    """A thread id and a message id of alice's (the conversation of single13)."""
    cookie, csrf, _ = web.login(ALICE, PW[ALICE])
    mid = next(m["mid"] for m in webenv.ordinary if m["key"] == "single13")
    status, _, body, _ = web.request("GET", API + "threads?q=" + urlquote(f"rfc822msgid:{mid}"), cookie=cookie)
    assert status == 200 and len(body["threads"]) == 1, body
    tid = body["threads"][0]["id"]
    status, _, conv, _ = web.request("GET", API + "threads/" + tid, cookie=cookie)
    assert status == 200, conv
    return {"thread": tid, "email": conv["emails"][0]["id"], "mid": mid, "cookie": cookie, "csrf": csrf}


def urlquote(s: str) -> str:
    from urllib.parse import quote
    return quote(s, safe="")


def _routes(ids: dict) -> list[tuple[str, str, object]]:
    t, e = ids["thread"], ids["email"]
    return [
        ("GET", API + "session", None),
        ("DELETE", API + "session", None),
        ("PUT", API + "session", {"username": ALICE}),
        ("GET", API + "mailboxes", None),
        ("GET", API + "threads", None),
        ("GET", API + "threads?mailbox=inbox&position=0&limit=50", None),
        ("GET", API + "threads?q=" + urlquote("from:carol"), None),
        ("GET", API + "threads/" + t, None),
        ("GET", API + "emails/" + e + "/raw", None),
        ("GET", API + "emails/" + e + "/html", None),
        ("GET", API + "emails/" + e + "/html?remote=1", None),
        ("POST", API + "modify", {"threadIds": [t], "flagged": True}),
        ("GET", API + "modify", None),
        ("GET", API + "no-such-route", None),
    ]


def test_api_needs_a_session(webenv, web, alice_ids):
    """No cookie, or a made-up one: 401 unauthorized on every route but POST session."""
    for cookie in (None, "mk_mail=" + "0" * 64, "mk_mail="):
        for method, path, body in _routes(alice_ids):
            status, hdrs, data, cookies = web.request(method, path, body, cookie=cookie)
            assert status == 401, f"{method} {path} with cookie {cookie!r}: {status} {data!r}"
            assert isinstance(data, dict) and data.get("error") == "unauthorized" and data.get("description"), data
            assert not cookies, f"{method} {path} set a cookie: {cookies}"
    # ... and the message was not flagged by any of those
    assert "\\Flagged" not in webenv.imap_state([alice_ids["mid"]])[alice_ids["mid"]][0]
    # POST session is the one route without a session: wrong password 401, right one 200
    status, _, data, cookies = web.request("POST", API + "session", {"username": ALICE, "password": "wrong-password"})
    assert status == 401 and data["error"] == "invalid-credentials" and not cookies, (status, data, cookies)
    status, _, data, cookies = web.request("POST", API + "session", {"username": ALICE, "password": PW[ALICE]})
    assert status == 200 and data["username"] == ALICE and re.fullmatch(r"[0-9a-f]{32,}", data["csrfToken"]), data
    status, _, data, _ = web.request("POST", API + "session", b"not json")
    assert status == 400 and data["error"] == "invalid-data", data


def test_api_state_changes_need_the_csrf_token(webenv, web, alice_ids):
    cookie, csrf = alice_ids["cookie"], alice_ids["csrf"]
    _, bob_csrf, _ = web.login(BOB, PW[BOB])
    change = {"threadIds": [alice_ids["thread"]], "flagged": True}
    for token in (None, "", "0" * 64, csrf[:-1], csrf.upper() if csrf.upper() != csrf else csrf + "0", bob_csrf):
        status, _, data, _ = web.request("POST", API + "modify", change, cookie=cookie, csrf=token)
        assert status == 403 and data["error"] == "csrf", f"X-CSRF-Token {token!r}: {status} {data}"
    # a form post (no custom header possible cross-site) is refused too
    status, _, data, _ = web.request("POST", API + "modify", "threadIds=x", cookie=cookie,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403, (status, data)
    status, _, data, _ = web.request("DELETE", API + "session", cookie=cookie)
    assert status == 403 and data["error"] == "csrf", (status, data)
    mid = alice_ids["mid"]
    assert "\\Flagged" not in webenv.imap_state([mid])[mid][0], "a refused modify changed the message"
    # the session still works (DELETE without the token did not log out), and with the token it changes
    status, _, data, _ = web.request("POST", API + "modify", change, cookie=cookie, csrf=csrf)
    assert status == 200 and data["flagChanges"] >= 1, (status, data)
    assert "\\Flagged" in webenv.imap_state([mid])[mid][0]
    status, _, data, _ = web.request("POST", API + "modify", {**change, "flagged": False}, cookie=cookie, csrf=csrf)
    assert status == 200, data
    assert "\\Flagged" not in webenv.imap_state([mid])[mid][0]


def test_api_other_account_is_not_found(webenv, web, alice_ids):
    bob_cookie, bob_csrf, _ = web.login(BOB, PW[BOB])
    t, e, mid = alice_ids["thread"], alice_ids["email"], alice_ids["mid"]
    for method, path, body in [
        ("GET", API + "threads/" + t, None),
        ("GET", API + "emails/" + e + "/raw", None),
        ("GET", API + "emails/" + e + "/html", None),
        ("POST", API + "modify", {"threadIds": [t], "moveTo": "Trash"}),
    ]:
        status, _, data, _ = web.request(method, path, body, cookie=bob_cookie, csrf=bob_csrf)
        assert status == 404 and data["error"] == "not-found", f"bob: {method} {path}: {status} {data}"
    # bob's own list and searches hold only bob's mail
    status, _, data, _ = web.request("GET", API + "threads?mailbox=all&limit=200", cookie=bob_cookie)
    assert status == 200 and [x["subject"] for x in data["threads"]] == ["Bob's private note"], data
    status, _, data, _ = web.request("GET", API + "threads?q=" + urlquote(f"rfc822msgid:{mid} in:anywhere"), cookie=bob_cookie)
    assert status == 200 and data["threads"] == [], data
    assert [c[0] for c in webenv.imap_state([mid])[mid]] == ["INBOX"], "bob's requests moved alice's message"
    # and alice cannot read bob's
    status, _, data, _ = web.request("GET", API + "threads?mailbox=all&limit=200", cookie=bob_cookie)
    bob_tid = data["threads"][0]["id"]
    status, _, data, _ = web.request("GET", API + "threads/" + bob_tid, cookie=alice_ids["cookie"])
    assert status == 404, (status, data)


def test_api_other_account_email_ids_not_found(webenv, web, alice_ids):
    bob_cookie, bob_csrf, _ = web.login(BOB, PW[BOB])
    status, _, data, _ = web.request("POST", API + "modify", {"emailIds": [alice_ids["email"]], "flagged": True},
                                     cookie=bob_cookie, csrf=bob_csrf)
    mid = alice_ids["mid"]
    assert "\\Flagged" not in webenv.imap_state([mid])[mid][0], "bob flagged alice's message"
    assert status == 404, (status, data)


def test_api_security_headers_and_cookie(webenv, web, alice_ids):
    cookie, csrf, set_cookie = web.login(ALICE, PW[ALICE])
    # the cookie: HttpOnly, SameSite=Strict, Path=/, no Secure on plain HTTP, no lifetime, 256 bits
    parts = [p.strip() for p in set_cookie.split(";")]
    assert re.fullmatch(r"mk_mail=[0-9a-f]{64}", parts[0]), set_cookie
    attrs = {p.split("=")[0].lower(): p for p in parts[1:]}
    assert "httponly" in attrs and attrs.get("samesite", "").lower() == "samesite=strict", set_cookie
    assert attrs.get("path") == "Path=/" and "secure" not in attrs and "domain" not in attrs, set_cookie
    assert "expires" not in attrs and "max-age" not in attrs, set_cookie
    ids = dict(alice_ids, cookie=cookie, csrf=csrf)
    # a request of every kind: pages, JSON, errors (400, 401, 403, 404, 405), raw, html
    for path in ("/mail/", "/mail/mail.js", "/mail/mail.css", "/mail", "/mail/nothing.js", "/mail/../etc/passwd"):
        web.request("GET", path)
    for method, path, body in _routes(ids):
        if method == "DELETE" or (method, path) == ("POST", API + "modify"):
            continue
        web.request(method, path, body, cookie=cookie)
    web.request("GET", API + "threads?q=" + urlquote("from:"), cookie=cookie)
    web.request("POST", API + "modify", {"threadIds": [ids["thread"]], "seen": "yes"}, cookie=cookie, csrf=csrf)
    web.request("POST", API + "modify", {"threadIds": [ids["thread"]]}, cookie=cookie)
    attack = next(m for m in webenv.attacks if m["key"] == "script")
    status, _, data, _ = web.request("GET", API + "threads?q=" + urlquote(f"rfc822msgid:{attack['mid']}"), cookie=cookie)
    status, _, conv, _ = web.request("GET", API + "threads/" + data["threads"][0]["id"], cookie=cookie)
    aid = conv["emails"][0]["id"]
    status, hdrs, raw, _ = web.request("GET", API + "emails/" + aid + "/raw", cookie=cookie)
    assert status == 200 and hdrs["content-type"].startswith("text/plain") and b"<script>" in raw, (status, hdrs)
    status, hdrs, html, _ = web.request("GET", API + "emails/" + aid + "/html", cookie=cookie)
    assert status == 200 and hdrs["content-type"].startswith("text/html") and b"<script" not in html.lower(), html[:300]
    status, _, _, cookies = web.request("DELETE", API + "session", cookie=cookie, csrf=csrf)
    assert status == 204 and cookies and "max-age=0" in cookies[0].lower(), (status, cookies)
    status, _, data, _ = web.request("GET", API + "mailboxes", cookie=cookie)
    assert status == 401, "the cookie still works after logout"

    problems = []
    seen_status = set()
    for what, status, hdrs in web.responses:
        seen_status.add(status)
        csp = hdrs.get("content-security-policy", "")
        if "default-src" not in csp:
            problems.append(f"{what} -> {status}: Content-Security-Policy {csp!r}")
        elif "/html" not in what and csp != "default-src 'self'; frame-ancestors 'none'":
            problems.append(f"{what} -> {status}: Content-Security-Policy {csp!r}")
        elif "/html" in what and status == 200 and not csp.startswith("default-src 'none'"):
            problems.append(f"{what} -> {status}: Content-Security-Policy {csp!r}")
        if hdrs.get("x-content-type-options") != "nosniff":
            problems.append(f"{what} -> {status}: X-Content-Type-Options {hdrs.get('x-content-type-options')!r}")
        if hdrs.get("referrer-policy") != "no-referrer":
            problems.append(f"{what} -> {status}: Referrer-Policy {hdrs.get('referrer-policy')!r}")
        if hdrs.get("cache-control") != "no-store":
            problems.append(f"{what} -> {status}: Cache-Control {hdrs.get('cache-control')!r}")
    assert not problems, "\n".join(problems)
    assert {200, 204, 301, 400, 401, 403, 404, 405} <= seen_status, seen_status
    assert len(web.responses) >= 40, len(web.responses)


def test_every_browser_test_has_a_pytest_test(browser):
    """Each node test of the scripts is reported by exactly one test above (none renamed or forgotten)."""
    for script in ("mail_browser.mjs", "mail_hostile.mjs"):
        if script not in browser.runs:
            pytest.skip(f"{script} did not run (only some tests selected)")
        out, results = browser.runs[script]
        assert set(results) == browser.checked[script], (script, sorted(set(results) ^ browser.checked[script]), out[-3000:])
