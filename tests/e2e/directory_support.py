"""A fake Google Workspace / Microsoft Entra directory over HTTPS, for the directory-sync tests
(tests/e2e/test_directory_*.py) and bench/directory_bench.py.

One server (http.server.ThreadingHTTPServer + ssl, HTTP/1.1 keep-alive) on 127.0.0.1 plays

  Google     POST <any path ending in /token>           service-account JWT bearer grant (RFC 7523)
             GET  /admin/directory/v1/users | /groups    Admin SDK Directory v1 users.list / groups.list
  Microsoft  POST /<tenant>/oauth2/v2.0/token            client-credentials grant
             GET  /v1.0/users | /v1.0/groups             Graph, @odata.nextLink paging

in their documented JSON shapes (error bodies included), several pages per list (`page_size`,
honouring maxResults / $top up to the documented maxima 500 / 200 / 999).

Every request is checked against /work/specs/directory.md: the JWT's RS256 signature against the
service account's public key (python3-jwt), its header (alg, typ, kid) and claims (iss, scope,
aud = the token URL the request came to, sub, iat = now, exp - iat <= 3600), the form fields, the
Bearer token (issued here, for that provider, not expired), customer / maxResults / fields= /
pageToken, $select (exactly those fields) / $top / $filter / $skiptoken, no unknown or repeated
parameters. A request that fails a check is answered with the provider's error and recorded in
`fake.violations` (the fixture fails the test at teardown if any). Credential failures that are a
test's intent (a wrong client secret, revoked tokens) are answered but are not violations.

Control API (all thread-safe, changeable while mailkeep runs):

  fake = FakeDirectory(pki).start()       fake.base_url = https://127.0.0.1:PORT
  fake.google_token_url / fake.microsoft_token_url(tenant)
  fake.register_google(sa, admin=...)     sa from make_service_account(path, token_uri)
  fake.register_microsoft(app)            app from make_client_secret(path)
  fake.set_directory(users, groups)       Entry objects (user(), group()); add_user / remove_users /
  fake.add_group / remove_groups / update_user; fake.page_size = N or {"users": N, "groups": M}
  fake.token_lifetime = 3599              expires_in of new tokens; fake.revoke_tokens()
  fake.next_link_base = URL               Graph's @odata.nextLink points at another server
  fake.inject(kind, where=..., page=..., times=..., status=..., retry_after=..., seconds=...)
      kinds: token_401 (Google 401 invalid_grant / Microsoft 401 invalid_client), forbidden (403),
             rate_limit (429 + Retry-After), server_error (500, or status=), bad_json (200, broken
             body), cut (headers + half the body, then the TCP connection is closed), token_bad_json
             (200 with a truncated token JSON that contains a fresh access token), delay (seconds)
      where: token | users | groups | api (users or groups) | any; page: 0-based page index or
             None (every page); times: how many requests it hits (None: until clear_faults())
  fake.clear_faults()
  fake.set_certificate("wrong")           a CA-signed certificate for DNS:wrong.test only (no IP SAN);
                                          "good" (IP:127.0.0.1, DNS:directory.test) switches back
  fake.down() / fake.up()                 stop listening (connection refused) / listen again, same port
  fake.requests                           Request records: .provider .kind .page .status .fault .t
  fake.count(kind=, provider=, page=, status=), fake.pages_served(kind), fake.wait(pred, timeout)
  fake.tls_failures                       handshakes that failed (the client refused our certificate)
  fake.secrets()                          {label: value}: issued access tokens, received JWT assertions,
                                          client secrets, the service accounts' private-key PEM lines
  find_leaks(text, fake.secrets())        which of them (or a 16-character piece) text contains

Directory contents are Entry objects rendered for either provider: Google primaryEmail/email,
aliases, nonEditableAliases; Microsoft mail, userPrincipalName, accountEnabled and proxyAddresses
(SMTP:primary, smtp:each alias and non-editable alias, then extra_proxies verbatim, e.g. SIP:).
expected_accounts() is the spec's model of what mailkeep keeps (valid addresses in the backup
domains, lower-cased), parse_accounts_text() / parse_list() / parse_diff() read mailkeep's cache
file and command output.

`/usr/bin/python3 tests/e2e/directory_support.py` runs a self-check of the fake with a pure-Python
client (no mailkeep needed).
"""

from __future__ import annotations

import hmac
import http.client
import json
import os
import re
import secrets as _secrets
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jwt  # noqa: E402  (python3-jwt)
import pytest  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from tls_support import CertPair, make_ca, make_leaf  # noqa: E402

DOMAINS = ("example.org", "example.com")          # [backup] domains of the tests
GOOGLE_SCOPES = ("https://www.googleapis.com/auth/admin.directory.user.readonly",
                 "https://www.googleapis.com/auth/admin.directory.group.readonly")
GOOGLE_FIELDS = {"users": "nextPageToken,users(primaryEmail,aliases,nonEditableAliases)",
                 "groups": "nextPageToken,groups(email,aliases,nonEditableAliases)"}
GOOGLE_MAX = {"users": 500, "groups": 200}        # documented maxResults maxima
GOOGLE_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_ADMIN = "admin@example.org"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GRAPH_SELECT = {"users": ("userPrincipalName", "mail", "proxyAddresses", "accountEnabled"),
                "groups": ("mail", "proxyAddresses")}
GRAPH_GROUP_FILTER = "mailEnabled eq true"
GRAPH_TOP = 999
TOKEN_GRACE = 1.0          # seconds a token is still accepted after its expiry (clock edges)
FRAGMENT = 16              # find_leaks: length of the pieces of a secret searched for


# --------------------------------------------------------------------------- certificates

@dataclass
class DirectoryPKI:
    dir: Path
    ca: CertPair          # the throwaway test CA ([directory] ca_file)
    good: CertPair        # SAN IP:127.0.0.1, DNS:directory.test
    wrong: CertPair       # CA-signed, SAN DNS:wrong.test only (no IP SAN)
    other_ca: CertPair    # an unrelated CA: a ca_file that lacks ours


def make_directory_pki(d: Path | None = None) -> DirectoryPKI:
    """Certificates from the openssl CLI (tls_support's recipe), in a 0755 directory."""
    d = Path(d) if d else Path(tempfile.mkdtemp(prefix="mailkeep-dir-pki-", dir="/var/tmp"))
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    ca = make_ca(d)
    good = make_leaf(d, ca, "directory", "directory.test", "IP:127.0.0.1,DNS:directory.test", 201)
    wrong = make_leaf(d, ca, "wrong-name", "wrong.test", "DNS:wrong.test", 202)
    other = d / "other"
    other.mkdir(exist_ok=True)
    os.chmod(other, 0o755)
    other_ca = make_ca(other)
    for p in (ca.cert, good.cert, wrong.cert, other_ca.cert):
        os.chmod(p, 0o644)
    return DirectoryPKI(d, ca, good, wrong, other_ca)


def _server_context(pair: CertPair) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pair.cert), str(pair.key))
    return ctx


# --------------------------------------------------------------------------- credentials

@dataclass
class ServiceAccount:
    path: Path
    client_email: str
    key_id: str
    client_id: str
    token_uri: str
    private_key_pem: str
    public_key: object

    def pem_lines(self) -> list[str]:
        return [line for line in self.private_key_pem.splitlines() if line and not line.startswith("-----")]


def make_service_account(path: Path, token_uri: str, client_email: str = "mailkeep-sync@mailkeep-test.iam.gserviceaccount.com",
                         project_id: str = "mailkeep-test") -> ServiceAccount:
    """A Google service-account key file (a fresh RSA 2048 key, PKCS#8 PEM as Google issues it), mode 0600."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    key_id = _secrets.token_hex(20)
    client_id = str(_secrets.randbelow(10 ** 21)).rjust(21, "1")
    doc = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": client_email,
        "client_id": client_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                + urllib.parse.quote(client_email),
        "universe_domain": "googleapis.com",
    }
    path = Path(path)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    os.chmod(path, 0o600)
    return ServiceAccount(path, client_email, key_id, client_id, token_uri, pem, key.public_key())


@dataclass
class MicrosoftApp:
    path: Path            # the client secret file
    tenant: str
    client_id: str
    secret: str


def make_client_secret(path: Path, tenant: str | None = None, client_id: str | None = None) -> MicrosoftApp:
    """An Entra app registration: tenant and client ids, and a client-secret file (secret + newline, 0600)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
    secret = ("".join(_secrets.choice(alphabet) for _ in range(3)) + "8Q~"
              + "".join(_secrets.choice(alphabet) for _ in range(34)))
    path = Path(path)
    path.write_text(secret + "\n")
    os.chmod(path, 0o600)
    return MicrosoftApp(path, tenant or str(uuid.uuid4()), client_id or str(uuid.uuid4()), secret)


# --------------------------------------------------------------------------- directory contents

@dataclass
class Entry:
    """A user or a group, rendered for either provider.

    google:    primaryEmail (users) / email (groups) = email; aliases; nonEditableAliases = non_editable
    microsoft: mail = mail or email (None when mailbox is False); userPrincipalName = upn or email;
               proxyAddresses = proxies verbatim if given, else SMTP:email, smtp:<each alias and
               non-editable alias>, then extra_proxies (SIP:..., X500:..., smtp: in other domains)
    """
    email: str
    aliases: list[str] = field(default_factory=list)
    non_editable: list[str] = field(default_factory=list)
    extra_proxies: list[str] = field(default_factory=list)
    proxies: list[str] | None = None
    mail: str | None = None
    mailbox: bool = True
    upn: str | None = None
    enabled: bool = True

    def google(self, kind: str) -> dict:
        out: dict = {("primaryEmail" if kind == "users" else "email"): self.email}
        if self.aliases:
            out["aliases"] = list(self.aliases)
        if self.non_editable:
            out["nonEditableAliases"] = list(self.non_editable)
        return out

    def proxy_addresses(self) -> list[str]:
        if self.proxies is not None:
            return list(self.proxies)
        if not self.mailbox:
            return []
        return (["SMTP:" + self.email] + ["smtp:" + a for a in self.aliases + self.non_editable]
                + list(self.extra_proxies))

    def microsoft(self, kind: str) -> dict:
        out = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, kind + ":" + self.email))}
        mail = (self.mail or self.email) if self.mailbox else None
        if kind == "users":
            out["userPrincipalName"] = self.upn or self.email
        out["mail"] = mail
        out["proxyAddresses"] = self.proxy_addresses()
        if kind == "users":
            out["accountEnabled"] = self.enabled
        return out


def user(email: str, *aliases: str, non_editable=(), **kw) -> Entry:
    return Entry(email, list(aliases), list(non_editable), **kw)


group = user


def numbered_users(count: int, domain: str = "example.org", prefix: str = "user", aliases: int = 0) -> list[Entry]:
    """user000@domain ... with `aliases` aliases each (user000.a0@domain ...)."""
    width = max(3, len(str(count - 1)))
    out = []
    for i in range(count):
        name = f"{prefix}{i:0{width}d}"
        out.append(user(f"{name}@{domain}", *[f"{name}.a{j}@{domain}" for j in range(aliases)]))
    return out


def sample_directory() -> tuple[list[Entry], list[Entry]]:
    """Ten users and two groups across both backup domains, with aliases of every kind.

    Removing one account of these twelve stays under [directory] max_removal = 10%.
    """
    users = [
        user("alice@example.org", "sales@example.org", non_editable=["alice@example.com"],
             extra_proxies=["SIP:alice.sip@example.org", "X500:/o=ExchangeLabs/ou=Exchange/cn=Recipients/cn=alice"]),
        user("bob@example.org", "robert@example.org"),
        user("carol@example.org"),
        user("dan@example.com", "daniel@example.com", "dan@example.org"),
        user("erin@example.org"),
        user("frank@example.org", "f.smith@example.org", "frank+news@example.org"),
        user("grace@example.org"),
        user("heidi@example.com"),
        user("ivan@example.org", "ivan_k@example.org"),
        user("judy@example.org"),
    ]
    groups = [
        group("team@example.org", "staff@example.org", non_editable=["team@example.com"]),
        group("info@example.com", "contact@example.com"),
    ]
    return users, groups


# --------------------------------------------------------------------------- the model

_LOCAL_OK = re.compile(r"[a-z0-9._+-]+")


def address_problem(address: str, domains=DOMAINS) -> str | None:
    """Why mailkeep must refuse `address` (spec: backup domains only; local part of letters, digits
    and . _ + -, no leading dot, no "..", at most 64 octets; lower-cased), or None."""
    a = address.lower()
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in a):
        return "control character"
    local, at, domain = a.rpartition("@")
    if not at:
        return "no @"
    if domain not in domains:
        return "not a backup domain"
    if not local or len(local.encode()) > 64:
        return "length"
    if not _LOCAL_OK.fullmatch(local) or local.startswith(".") or ".." in local:
        return "character"
    return None


def account_of(entry: Entry, provider: str, domains=DOMAINS) -> tuple[str, set[str]] | None:
    """The spec's reading of one directory entry: (primary address, its other addresses), or None."""
    if provider == "google":
        primary, others = entry.email, entry.aliases + entry.non_editable
    else:
        if not entry.mailbox:
            return None
        proxies = entry.proxy_addresses()
        smtp_primary = [p[5:] for p in proxies if p.startswith("SMTP:")]
        primary = smtp_primary[0] if smtp_primary else (entry.mail or entry.email)
        others = [p[5:] for p in proxies if p.startswith("smtp:")]
    if address_problem(primary, domains):
        return None
    p = primary.lower()
    return p, {o.lower() for o in others if not address_problem(o, domains) and o.lower() != p}


def expected_accounts(users: list[Entry], groups: list[Entry], provider: str, domains=DOMAINS) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in list(users) + list(groups):
        acc = account_of(e, provider, domains)
        if acc:
            out[acc[0]] = acc[1]
    return out


def expected_list(accounts: dict[str, set[str]]) -> list[tuple[str, str]]:
    """`mailkeep accounts list`'s pairs (address, account), sorted."""
    pairs = []
    for acc, others in accounts.items():
        pairs.append((acc, acc))
        pairs.extend((o, acc) for o in others)
    return sorted(pairs)


def parse_accounts_text(text: str, domains=DOMAINS) -> dict[str, set[str]]:
    """The accounts-file format -> {account address: {other addresses}} (names without @ expand to
    every backup domain; # comments and blank lines skipped)."""
    out: dict[str, set[str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, rest = line.partition(":")
        name = name.strip().lower()
        aliases = [a.strip().lower() for a in rest.split(",") if a.strip()]
        if "@" in name:
            out[name] = {a if "@" in a else f"{a}@{name.split('@')[1]}" for a in aliases}
        else:
            for d in domains:
                out[f"{name}@{d}"] = {a if "@" in a else f"{a}@{d}" for a in aliases}
    return out


def parse_list(stdout: str) -> list[tuple[str, str]]:
    pairs = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split(" ")
        assert len(parts) == 2, f"`accounts list` line is not 'address account': {line!r}"
        pairs.append((parts[0], parts[1]))
    return pairs


DIFF_LINE = re.compile(r"^([+~-]) (\S+)$")
SUMMARY_LINE = re.compile(r"^accounts: (\d+), added: (\d+), removed: (\d+), changed: (\d+)$")


@dataclass
class Diff:
    """`accounts sync` output: change lines, then the summary line, then (allowed) notes such as
    "dry run: nothing written"."""
    added: set[str]
    removed: set[str]
    changed: set[str]
    summary: tuple[int, int, int, int] | None
    other: list[str]          # lines before the summary that are not changes, or a second summary
    trailer: list[str] = field(default_factory=list)    # lines after the summary

    @classmethod
    def parse(cls, stdout: str) -> "Diff":
        d = cls(set(), set(), set(), None, [])
        lines = [line for line in stdout.splitlines() if line.strip()]
        ends = [i for i, line in enumerate(lines) if SUMMARY_LINE.match(line)]
        end = ends[0] if ends else len(lines)
        if ends:
            d.summary = tuple(int(x) for x in SUMMARY_LINE.match(lines[end]).groups())
        for line in lines[:end]:
            m = DIFF_LINE.match(line)
            if m:
                {"+": d.added, "-": d.removed, "~": d.changed}[m.group(1)].add(m.group(2))
            else:
                d.other.append(line)
        d.trailer = lines[end + 1:]
        d.other += [line for line in d.trailer if SUMMARY_LINE.match(line) or DIFF_LINE.match(line)]
        return d


def diff_of(old: dict[str, set[str]], new: dict[str, set[str]]) -> tuple[set[str], set[str], set[str]]:
    return (set(new) - set(old), set(old) - set(new), {a for a in set(old) & set(new) if old[a] != new[a]})


# --------------------------------------------------------------------------- leaks

def find_leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """Labels of the secrets of which `text` contains the whole value or any piece of FRAGMENT
    characters (pieces start every FRAGMENT/2 characters: a truncated or prefixed print counts)."""
    leaks = []
    for label, value in secrets.items():
        if not value:
            continue
        pieces = {value} if len(value) <= FRAGMENT else {
            value[i:i + FRAGMENT] for i in range(0, len(value) - FRAGMENT + 1, FRAGMENT // 2)} | {value[-FRAGMENT:]}
        if any(p in text for p in pieces):
            leaks.append(label)
    return leaks


# --------------------------------------------------------------------------- the server

@dataclass
class Fault:
    kind: str
    where: str = "api"
    page: int | None = None
    times: int | None = None
    status: int | None = None
    retry_after: str = "1"
    seconds: float = 0.0
    provider: str | None = None
    hits: int = 0

    def matches(self, provider: str, kind: str, page: int | None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.provider and self.provider != provider:
            return False
        if self.where == "any":
            pass
        elif self.where == "api":
            if kind not in ("users", "groups"):
                return False
        elif self.where != kind:
            return False
        if self.page is not None and kind != "token" and page != self.page:
            return False
        return True


@dataclass
class Request:
    t: float                       # time.monotonic() when it arrived
    method: str
    path: str
    query: str
    provider: str | None
    kind: str | None               # token | users | groups | None
    page: int | None = None        # 0-based page index of a list request
    status: int = 0
    fault: str | None = None
    complete: bool = False         # a full 200 page / token was sent
    note: str = ""
    authorization: str | None = None


@dataclass
class _Issued:
    provider: str
    expires: float                 # time.time()
    revoked: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, fake: "FakeDirectory", port: int):
        self.fake = fake
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request, client_address):
        fake = self.fake
        request.settimeout(30)
        # no Nagle: a response written while the client's ACK of the last one is delayed would wait ~40 ms
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = fake._context().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with fake.lock:
                fake.tls_failures.append(str(exc))
                fake.cond.notify_all()
            return
        with fake.lock:
            fake._conns.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            with fake.lock:
                fake._conns.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):   # no tracebacks on stderr for cut connections
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-directory/1.0"
    timeout = 30

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):
        self.server.fake._handle(self, "GET")

    def do_POST(self):
        self.server.fake._handle(self, "POST")

    def do_PUT(self):
        self.server.fake._handle(self, "PUT")

    def do_DELETE(self):
        self.server.fake._handle(self, "DELETE")

    def do_PATCH(self):
        self.server.fake._handle(self, "PATCH")


class _Refuse(Exception):
    """A request failed a check: (status, body) is the answer; violation says whether to record it."""

    def __init__(self, status: int, body: dict, reason: str, violation: bool = True):
        super().__init__(reason)
        self.status, self.body, self.reason, self.violation = status, body, reason, violation


def _google_error(code: int, message: str, reason: str, status: str | None = None) -> dict:
    err = {"code": code, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}]}
    if status:
        err["status"] = status
    return {"error": err}


def _graph_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message,
                      "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                                     "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}}}


def _aad_error(error: str, code: int, text: str) -> dict:
    trace = str(uuid.uuid4())
    return {"error": error, "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {uuid.uuid4()}\r\nTimestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}",
            "error_codes": [code], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": trace, "correlation_id": str(uuid.uuid4()),
            "error_uri": f"https://login.microsoftonline.com/error?code={code}"}


_MS_TOKEN_PATH = re.compile(r"/([^/]+)/oauth2/v2\.0/token")


class FakeDirectory:
    def __init__(self, pki: DirectoryPKI, port: int | None = None, page_size: int | dict = 2):
        from harness import free_port
        self.pki = pki
        self.port = port or free_port()
        self.page_size = page_size
        self.token_lifetime = 3599
        self.strict_page_request = True       # maxResults / $top exactly the spec's 500 / 200 / 999
        self.google_customer = "my_customer"
        self.next_link_base: str | None = None   # Graph @odata.nextLink on another server (None: this one)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.users: list[Entry] = []
        self.groups: list[Entry] = []
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.tls_failures: list[str] = []
        self._google: dict[str, tuple[ServiceAccount, str]] = {}      # client_email -> (sa, admin)
        self._microsoft: dict[str, MicrosoftApp] = {}                 # client_id -> app
        self._tokens: dict[str, _Issued] = {}
        self._assertions: list[str] = []
        self._leak_bait: list[str] = []
        self._page_tokens: dict[str, tuple[str, str, int, int]] = {}  # token -> (provider, kind, offset, index)
        self._conns: set = set()
        self._contexts = {"good": _server_context(pki.good), "wrong": _server_context(pki.wrong)}
        self._cert = "good"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def google_token_url(self) -> str:
        return f"{self.base_url}/token"

    def microsoft_token_url(self, tenant: str) -> str:
        return f"{self.base_url}/{tenant}/oauth2/v2.0/token"

    def start(self) -> "FakeDirectory":
        self.up()
        return self

    def up(self) -> None:
        with self.lock:
            if self._server is not None:
                return
            self._server = _Server(self, self.port)
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            daemon=True, name="fake-directory")
            self._thread.start()

    def down(self) -> None:
        """Stop listening (clients get connection refused) and close open connections."""
        with self.lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread:
            thread.join(5)
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self.down()

    def set_certificate(self, name: str) -> None:
        assert name in self._contexts, name
        with self.lock:
            self._cert = name

    def _context(self) -> ssl.SSLContext:
        with self.lock:
            return self._contexts[self._cert]

    # ---- credentials ----------------------------------------------------------------------------
    def register_google(self, sa: ServiceAccount, admin: str = GOOGLE_ADMIN) -> None:
        with self.lock:
            self._google[sa.client_email] = (sa, admin)

    def register_microsoft(self, app: MicrosoftApp) -> None:
        with self.lock:
            self._microsoft[app.client_id] = app

    def revoke_tokens(self) -> None:
        with self.lock:
            for t in self._tokens.values():
                t.revoked = True

    def secrets(self) -> dict[str, str]:
        with self.lock:
            out: dict[str, str] = {}
            for i, t in enumerate(self._tokens):
                out[f"access token #{i} ({self._tokens[t].provider})"] = t
            for i, t in enumerate(self._leak_bait):
                out[f"access token in a broken token response #{i}"] = t
            for i, a in enumerate(self._assertions):
                out[f"JWT assertion #{i} (signature)"] = a.rsplit(".", 1)[-1]
            for app in self._microsoft.values():
                out[f"client secret of {app.client_id}"] = app.secret
            for sa, _ in self._google.values():
                for n, line in enumerate(sa.pem_lines()):
                    out[f"private key of {sa.client_email}, PEM line {n + 1}"] = line
            return out

    # ---- directory contents ---------------------------------------------------------------------
    def set_directory(self, users: list[Entry] | None = None, groups: list[Entry] | None = None) -> None:
        with self.lock:
            if users is not None:
                self.users = list(users)
            if groups is not None:
                self.groups = list(groups)

    def add_user(self, *entries: Entry) -> None:
        with self.lock:
            self.users.extend(entries)

    def add_group(self, *entries: Entry) -> None:
        with self.lock:
            self.groups.extend(entries)

    def remove_users(self, *emails: str) -> None:
        with self.lock:
            self.users = [u for u in self.users if u.email not in emails]

    def remove_groups(self, *emails: str) -> None:
        with self.lock:
            self.groups = [g for g in self.groups if g.email not in emails]

    def update_user(self, email: str, **changes) -> None:
        with self.lock:
            for u in self.users:
                if u.email == email:
                    for k, v in changes.items():
                        setattr(u, k, v)
                    return
        raise KeyError(email)

    def expected(self, provider: str, domains=DOMAINS) -> dict[str, set[str]]:
        with self.lock:
            return expected_accounts(self.users, self.groups, provider, domains)

    # ---- faults ---------------------------------------------------------------------------------
    def inject(self, kind: str, where: str | None = None, page: int | None = None, times: int | None = None,
               status: int | None = None, retry_after: str | int = 1, seconds: float = 0.0,
               provider: str | None = None) -> Fault:
        kinds = ("token_401", "token_bad_json", "forbidden", "rate_limit", "server_error", "bad_json", "cut", "delay")
        assert kind in kinds, kind
        if where is None:
            where = "token" if kind.startswith("token_") else "api"
        f = Fault(kind, where, page, times, status, str(retry_after), seconds, provider)
        with self.lock:
            self.faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def _fault_for(self, provider: str, kind: str, page: int | None) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.matches(provider, kind, page):
                    f.hits += 1
                    return f
        return None

    # ---- records --------------------------------------------------------------------------------
    def count(self, kind: str | None = None, provider: str | None = None, page: int | None = None,
              status: int | None = None, complete: bool | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests
                       if (kind is None or r.kind == kind) and (provider is None or r.provider == provider)
                       and (page is None or r.page == page) and (status is None or r.status == status)
                       and (complete is None or r.complete == complete))

    def pages_served(self, kind: str, provider: str | None = None) -> int:
        return self.count(kind, provider, status=200, complete=True)

    def token_requests(self, provider: str | None = None) -> int:
        return self.count("token", provider)

    def list_requests(self, kind: str | None = None, provider: str | None = None, page: int | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if (kind is None or r.kind == kind)
                    and (provider is None or r.provider == provider) and (page is None or r.page == page)]

    def wait(self, predicate, timeout: float = 15.0) -> bool:
        """Waits until predicate() (called with the lock held, after every request) is true."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.2))
            return True

    def reset_records(self) -> None:
        with self.lock:
            self.requests.clear()
            self.tls_failures.clear()

    # ---- request handling -----------------------------------------------------------------------
    def _page_size(self, kind: str) -> int:
        ps = self.page_size
        return int(ps.get(kind, 2)) if isinstance(ps, dict) else int(ps)

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += h.rfile.read(size)
                h.rfile.readline()
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""

    def _send(self, h: BaseHTTPRequestHandler, rec: Request, status: int, body: dict | bytes,
              headers: dict | None = None, cut: bool = False, complete: bool = False) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=UTF-8")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        # the header block and the body in one write (one TLS record, no wait between them)
        h._headers_buffer.append(b"\r\n")
        head = b"".join(h._headers_buffer)
        h._headers_buffer = []
        if cut:
            h.wfile.write(head + data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)   # TCP FIN without close_notify: a cut, not an end
            except OSError:
                pass
        else:
            h.wfile.write(head + data)
        with self.cond:
            rec.status = status
            rec.complete = complete and not cut
            self.cond.notify_all()

    def _violation(self, rec: Request, reason: str) -> None:
        with self.lock:
            self.violations.append(f"{rec.method} {rec.path}?{rec.query}: {reason}")

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(h.path)
        path = url.path
        rec = Request(time.monotonic(), method, path, url.query, None, None,
                      authorization=h.headers.get("Authorization"))
        with self.cond:
            self.requests.append(rec)
            self.cond.notify_all()
        try:
            body = self._read_body(h)
        except (ValueError, OSError):
            h.close_connection = True
            self._violation(rec, "unreadable request body")
            return
        m = _MS_TOKEN_PATH.fullmatch(path)
        if m:
            rec.provider, rec.kind = "microsoft", "token"
        elif path.endswith("/token"):
            rec.provider, rec.kind = "google", "token"
        elif path in ("/admin/directory/v1/users", "/admin/directory/v1/groups"):
            rec.provider, rec.kind = "google", path.rsplit("/", 1)[1]
        elif path in ("/v1.0/users", "/v1.0/groups"):
            rec.provider, rec.kind = "microsoft", path.rsplit("/", 1)[1]
        try:
            if rec.kind is None:
                raise _Refuse(404, {"error": {"code": 404, "message": "Not Found"}}, f"unknown path {path}")
            if not h.headers.get("Host"):
                raise self._bad(rec, "no Host header")
            want = "POST" if rec.kind == "token" else "GET"
            if method != want:
                raise _Refuse(405, {"error": {"code": 405, "message": "Method Not Allowed"}},
                              f"{method} instead of {want}")
            if rec.kind == "token":
                if rec.provider == "google":
                    self._google_token(h, rec, body)
                else:
                    self._microsoft_token(h, rec, body, m.group(1))
            else:
                self._list(h, rec, url.query)
        except _Refuse as r:
            if r.violation:
                self._violation(rec, r.reason)
            rec.note = r.reason
            self._send(h, rec, r.status, r.body)

    def _bad(self, rec: Request, reason: str) -> _Refuse:
        if rec.kind == "token":
            if rec.provider == "google":
                return _Refuse(400, {"error": "invalid_request", "error_description": reason}, reason)
            return _Refuse(400, _aad_error("invalid_request", 900144, reason), reason)
        if rec.provider == "google":
            return _Refuse(400, _google_error(400, f"Invalid Input: {reason}", "invalid"), reason)
        return _Refuse(400, _graph_error("BadRequest", reason), reason)

    @staticmethod
    def _form(body: bytes) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)

    def _check_form(self, h, rec: Request, body: bytes, keys: set[str]) -> dict[str, str]:
        ctype = h.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise self._bad(rec, f"Content-Type {ctype!r}, expected application/x-www-form-urlencoded")
        try:
            form = self._form(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._bad(rec, f"malformed form body: {exc}")
        if set(form) != keys:
            raise self._bad(rec, f"form fields {sorted(form)}, expected {sorted(keys)}")
        repeated = [k for k, v in form.items() if len(v) != 1]
        if repeated:
            raise self._bad(rec, f"form fields given twice: {repeated}")
        return {k: v[0] for k, v in form.items()}

    def _google_token(self, h, rec: Request, body: bytes) -> None:
        form = self._check_form(h, rec, body, {"grant_type", "assertion"})
        if form["grant_type"] != GOOGLE_JWT_GRANT:
            raise _Refuse(400, {"error": "unsupported_grant_type",
                                "error_description": f"Invalid grant_type: {form['grant_type']}"},
                          f"grant_type {form['grant_type']!r}")
        assertion = form["assertion"]
        with self.lock:
            self._assertions.append(assertion)

        def invalid(reason: str) -> _Refuse:
            return _Refuse(400, {"error": "invalid_grant", "error_description": reason}, "JWT: " + reason)

        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise invalid(f"Invalid JWT: {exc}")
        with self.lock:
            sa, admin = self._google.get(unverified.get("iss"), (None, None))
        if sa is None:
            raise invalid(f"Invalid JWT: unknown issuer {unverified.get('iss')!r}")
        if header.get("alg") != "RS256" or header.get("typ") != "JWT" or header.get("kid") != sa.key_id:
            raise invalid(f"Invalid JWT header {header} (expected alg RS256, typ JWT, kid {sa.key_id})")
        try:
            claims = jwt.decode(assertion, sa.public_key, algorithms=["RS256"],
                                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                                         "verify_aud": False, "verify_iss": False})
        except jwt.PyJWTError as exc:
            raise invalid(f"Invalid JWT Signature. ({exc})")
        now = time.time()
        aud = f"{self.base_url}{rec.path}"
        problems = []
        for name in ("iss", "scope", "aud", "sub", "iat", "exp"):
            if name not in claims:
                problems.append(f"no {name} claim")
        scope = claims.get("scope")
        if not isinstance(scope, str) or sorted(scope.split(" ")) != sorted(GOOGLE_SCOPES):
            problems.append(f"scope {scope!r}, expected {' '.join(GOOGLE_SCOPES)!r}")
        if claims.get("aud") != aud:
            problems.append(f"aud {claims.get('aud')!r}, expected the token URL {aud!r}")
        if claims.get("sub") != admin:
            problems.append(f"sub {claims.get('sub')!r}, expected {admin!r}")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not (isinstance(iat, int) and not isinstance(iat, bool) and isinstance(exp, int)
                and not isinstance(exp, bool)):
            problems.append(f"iat {iat!r} / exp {exp!r} not integers")
        else:
            if abs(iat - now) > 60:
                problems.append(f"iat {iat} is {iat - now:+.0f} s from now")
            if not 0 < exp - iat <= 3600:
                problems.append(f"exp - iat = {exp - iat} (must be 1..3600)")
            if exp <= now:
                problems.append("exp in the past")
        if problems:
            raise invalid("; ".join(problems))
        self._token_response(h, rec, "google")

    def _microsoft_token(self, h, rec: Request, body: bytes, tenant: str) -> None:
        form = self._check_form(h, rec, body, {"client_id", "client_secret", "scope", "grant_type"})
        if form["grant_type"] != "client_credentials":
            raise _Refuse(400, _aad_error("unsupported_grant_type", 70003, "The app requested an unsupported grant type."),
                          f"grant_type {form['grant_type']!r}")
        if form["scope"] != GRAPH_SCOPE:
            raise _Refuse(400, _aad_error("invalid_scope", 1002012, f"The provided value for scope {form['scope']} "
                                          "is not valid. Client credential flows must have a scope value with "
                                          "/.default suffixed to the resource identifier."),
                          f"scope {form['scope']!r}, expected {GRAPH_SCOPE!r}")
        with self.lock:
            app = self._microsoft.get(form["client_id"])
        if app is None or app.tenant != tenant:
            raise _Refuse(400, _aad_error("unauthorized_client", 700016,
                                          f"Application with identifier '{form['client_id']}' was not found in the "
                                          f"directory '{tenant}'."),
                          f"unknown client_id {form['client_id']!r} in tenant {tenant!r}")
        if not hmac.compare_digest(form["client_secret"].encode(), app.secret.encode()):
            raise _Refuse(401, _aad_error("invalid_client", 7000215,
                                          "Invalid client secret provided. Ensure the secret being sent in the request "
                                          "is the client secret value, not the client secret ID, for a secret added to "
                                          f"app '{app.client_id}'."),
                          "wrong client secret", violation=False)
        self._token_response(h, rec, "microsoft")

    def _token_response(self, h, rec: Request, provider: str) -> None:
        fault = self._fault_for(provider, "token", None)
        if fault and fault.kind == "delay":
            rec.fault = "delay"
            time.sleep(fault.seconds)
            fault = None
        if fault:
            rec.fault = fault.kind
            if fault.kind == "token_401":
                body = ({"error": "invalid_grant", "error_description": "Invalid grant: account not found"}
                        if provider == "google" else
                        _aad_error("invalid_client", 7000215, "Invalid client secret provided."))
                return self._send(h, rec, fault.status or 401, body)
            if fault.kind == "token_bad_json":
                bait = self._new_token(provider)
                with self.lock:
                    self._leak_bait.append(bait)
                    self._tokens.pop(bait, None)
                return self._send(h, rec, 200, ('{"access_token":"' + bait + '","expires_in":3599,"token_type":"Bea')
                                  .encode())
            return self._send_fault(h, rec, fault, provider, b"")
        token = self._new_token(provider)
        body = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        if provider == "microsoft":
            body = {"token_type": "Bearer", "expires_in": self.token_lifetime,
                    "ext_expires_in": self.token_lifetime, "access_token": token}
        self._send(h, rec, 200, body, complete=True)

    def _new_token(self, provider: str) -> str:
        token = ("ya29." + _secrets.token_urlsafe(60)) if provider == "google" else ("eyJ" + _secrets.token_urlsafe(90))
        with self.lock:
            self._tokens[token] = _Issued(provider, time.time() + self.token_lifetime)
        return token

    def _check_bearer(self, h, rec: Request) -> None:
        auth = h.headers.get("Authorization") or ""
        m = re.fullmatch(r"[Bb]earer ([!-~]+)", auth)
        google = rec.provider == "google"
        unauth = (_google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                "token, login cookie or other valid authentication credential.", "authError",
                                "UNAUTHENTICATED") if google else
                  _graph_error("InvalidAuthenticationToken", "Access token validation failure."))
        if not m:
            raise _Refuse(401, unauth, f"Authorization header {'present but malformed' if auth else 'missing'}")
        with self.lock:
            issued = self._tokens.get(m.group(1))
        if issued is None or issued.provider != rec.provider:
            raise _Refuse(401, unauth, "a Bearer token this fake did not issue (for this provider)")
        if issued.revoked:
            raise _Refuse(401, unauth, "revoked token", violation=False)
        late = time.time() - issued.expires
        if late > TOKEN_GRACE:
            if not google:
                unauth = _graph_error("InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
            raise _Refuse(401, unauth, f"token used {late:.1f} s after it expired")

    def _list(self, h, rec: Request, raw_query: str) -> None:
        kind, provider = rec.kind, rec.provider
        try:
            query = urllib.parse.parse_qs(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query))
        except ValueError as exc:
            raise self._bad(rec, f"malformed query: {exc}")
        repeated = [k for k, v in query.items() if len(v) != 1]
        if repeated:
            raise self._bad(rec, f"query parameters given more than once: {repeated}")
        q = {k: v[0] for k, v in query.items()}
        self._check_bearer(h, rec)
        if provider == "google":
            limit, token = self._google_query(rec, kind, q)
        else:
            limit, token = self._graph_query(rec, kind, q)
        offset, index = 0, 0
        if token is not None:
            with self.lock:
                known = self._page_tokens.get(token)
            if known is None or known[:2] != (provider, kind):
                raise self._bad(rec, f"page token {token!r} was not issued for {provider} {kind}")
            offset, index = known[2], known[3]
        rec.page = index
        with self.cond:
            self.cond.notify_all()
        fault = self._fault_for(provider, kind, index)
        if fault and fault.kind == "delay":
            rec.fault = "delay"
            time.sleep(fault.seconds)
            fault = None
        with self.lock:
            items = list(self.users if kind == "users" else self.groups)
        size = min(self._page_size(kind), limit)
        chunk = items[offset:offset + size]
        next_token = None
        if offset + size < len(items):
            next_token = _secrets.token_urlsafe(24)
            with self.lock:
                self._page_tokens[next_token] = (provider, kind, offset + size, index + 1)
        if provider == "google":
            body: dict = {"kind": f"admin#directory#{kind}", "etag": '"' + _secrets.token_urlsafe(12) + '"'}
            if chunk:
                body[kind] = [e.google(kind) for e in chunk]
            if next_token:
                body["nextPageToken"] = next_token
        else:
            sel = ",".join(GRAPH_SELECT[kind])
            body = {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#{kind}({sel})",
                    "value": [e.microsoft(kind) for e in chunk]}
            if next_token:
                keep = [(k, v) for k, v in q.items() if k != "$skiptoken"] + [("$skiptoken", next_token)]
                body["@odata.nextLink"] = (f"{self.next_link_base or self.base_url}{rec.path}?"
                                           + "&".join(f"{k}={urllib.parse.quote(v, safe=',()')}" for k, v in keep))
        data = json.dumps(body).encode()
        if fault:
            rec.fault = fault.kind
            return self._send_fault(h, rec, fault, provider, data)
        self._send(h, rec, 200, data, complete=True)

    def _google_query(self, rec: Request, kind: str, q: dict[str, str]) -> tuple[int, str | None]:
        allowed, need = {"customer", "maxResults", "fields", "pageToken"}, {"customer", "maxResults", "fields"}
        if not need <= set(q) or not set(q) <= allowed:
            raise self._bad(rec, f"query parameters {sorted(q)}, expected {sorted(need)} (+ pageToken)")
        if q["customer"] != self.google_customer:
            raise self._bad(rec, f"customer {q['customer']!r}, expected {self.google_customer!r}")
        if q["fields"] != GOOGLE_FIELDS[kind]:
            raise self._bad(rec, f"fields {q['fields']!r}, expected {GOOGLE_FIELDS[kind]!r}")
        try:
            n = int(q["maxResults"])
        except ValueError:
            raise self._bad(rec, f"maxResults {q['maxResults']!r}")
        if not 1 <= n <= GOOGLE_MAX[kind] or (self.strict_page_request and n != GOOGLE_MAX[kind]):
            raise self._bad(rec, f"maxResults {n} (the spec asks for {GOOGLE_MAX[kind]}, the documented maximum)")
        return n, q.get("pageToken")

    def _graph_query(self, rec: Request, kind: str, q: dict[str, str]) -> tuple[int, str | None]:
        need = {"$select", "$top"} | ({"$filter"} if kind == "groups" else set())
        if not need <= set(q) or not set(q) <= need | {"$skiptoken"}:
            raise self._bad(rec, f"query parameters {sorted(q)}, expected {sorted(need)} (+ $skiptoken)")
        fields = q["$select"].split(",")
        if len(fields) != len(set(fields)) or set(fields) != set(GRAPH_SELECT[kind]):
            raise self._bad(rec, f"$select {q['$select']!r}, expected exactly {','.join(GRAPH_SELECT[kind])}")
        if kind == "groups" and q["$filter"] != GRAPH_GROUP_FILTER:
            raise self._bad(rec, f"$filter {q['$filter']!r}, expected {GRAPH_GROUP_FILTER!r}")
        try:
            n = int(q["$top"])
        except ValueError:
            raise self._bad(rec, f"$top {q['$top']!r}")
        if not 1 <= n <= GRAPH_TOP or (self.strict_page_request and n != GRAPH_TOP):
            raise self._bad(rec, f"$top {n} (the spec asks for {GRAPH_TOP}, the documented maximum)")
        return n, q.get("$skiptoken")

    def _send_fault(self, h, rec: Request, fault: Fault, provider: str, page: bytes) -> None:
        google = provider == "google"
        if fault.kind == "forbidden":
            body = (_google_error(403, "Not Authorized to access this resource/api", "forbidden") if google else
                    _graph_error("Authorization_RequestDenied", "Insufficient privileges to complete the operation."))
            return self._send(h, rec, fault.status or 403, body)
        if fault.kind == "rate_limit":
            body = (_google_error(429, "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per "
                                  "user' of service 'admin.googleapis.com'.", "rateLimitExceeded",
                                  "RESOURCE_EXHAUSTED") if google else
                    _graph_error("TooManyRequests", "Too many requests."))
            return self._send(h, rec, fault.status or 429, body, headers={"Retry-After": fault.retry_after})
        if fault.kind == "server_error":
            status = fault.status or 500
            body = (_google_error(status, "Backend Error", "backendError") if google else
                    _graph_error("generalException", "An unexpected error occurred."))
            return self._send(h, rec, status, body)
        if fault.kind == "bad_json":
            data = page or b'{"access_token": "x", "expires_in": 3599, "token_type": "Bearer"}'
            broken = data[: len(data) // 2] + b'\x00}]"{,' + data[len(data) // 2 + 6:]
            return self._send(h, rec, 200, broken)
        if fault.kind == "cut":
            data = page or json.dumps({"access_token": self._new_token(provider), "expires_in": 3599,
                                       "token_type": "Bearer"}).encode()
            return self._send(h, rec, 200, data, cut=True)
        raise AssertionError(f"fault {fault.kind} at {rec.kind}")


# --------------------------------------------------------------------------- mailkeep side

@dataclass
class ProviderSetup:
    """The credentials of one provider, registered with the fake, and the [directory] section."""
    provider: str
    section: dict
    files: list[Path]
    sa: ServiceAccount | None = None
    app: MicrosoftApp | None = None


def provider_setup(fake: FakeDirectory, provider: str, d: Path, owner: tuple[int, int] | None = None,
                   interval: int = 3600, cache: Path | None = None, **extra) -> ProviderSetup:
    """Writes the credentials into d (chowned to owner if given: `[general] user = mail` reads them),
    registers them with the fake and returns the [directory] section (api_url, token_url, ca_file
    pointing at the fake; cache in d/directory/ unless given). Google's token URL comes from the key
    file's token_uri (no token_url), as a real key file gives it."""
    d = Path(d)
    cache_dir = (Path(cache).parent if cache else d / "directory")
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.chmod(0o755)
    section = {"provider": provider, "interval": interval, "api_url": fake.base_url, "ca_file": str(fake.pki.ca.cert),
               "cache": str(cache or cache_dir / "accounts"), "max_removal": "10%", "timeout": 30}
    if provider == "google":
        sa = make_service_account(d / "service-account.json", fake.google_token_url)
        fake.register_google(sa, GOOGLE_ADMIN)
        section.update(credentials=str(sa.path), admin=GOOGLE_ADMIN, customer="my_customer")
        setup = ProviderSetup(provider, section, [sa.path], sa=sa)
    elif provider == "microsoft":
        app = make_client_secret(d / "client-secret")
        fake.register_microsoft(app)
        section.update(tenant=app.tenant, client_id=app.client_id, client_secret_file=str(app.path),
                       token_url=fake.microsoft_token_url(app.tenant))
        setup = ProviderSetup(provider, section, [app.path], app=app)
    else:
        raise ValueError(provider)
    section.update(extra)
    if owner:
        for p in setup.files + [cache_dir]:
            os.chown(p, *owner)
    return setup


def directory_config(d: Path, setup: ProviderSetup, **overrides) -> dict:
    """A whole mailkeep config for the `accounts` commands (nothing listens): backup_config with
    [backup] domains = example.org, example.com and the [directory] section."""
    from backup_support import backup_config
    from harness import free_port
    backup = {"domains": ", ".join(DOMAINS)}
    backup.update(overrides.pop("backup", {}))
    directory = dict(setup.section)
    directory.update(overrides.pop("directory", {}))
    return backup_config(free_port(), "127.0.0.1:9", Path(d) / "archive", Path(d) / "accounts.txt",
                         backup=backup, directory=directory, **overrides)


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05):
    """Polls predicate() until it returns something true (returned) or timeout (returns the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --------------------------------------------------------------------------- pytest fixtures

@pytest.fixture(scope="session")
def directory_pki():
    pki = make_directory_pki()
    yield pki
    shutil.rmtree(pki.dir, ignore_errors=True)


@pytest.fixture
def fake_directory(directory_pki):
    """A started FakeDirectory (page size 2); the test fails at teardown if mailkeep sent any
    request that broke the spec (fake.violations)."""
    fake = FakeDirectory(directory_pki, page_size=2).start()
    yield fake
    fake.stop()
    if fake.violations:
        pytest.fail("requests that break /work/specs/directory.md:\n  " + "\n  ".join(fake.violations[:20]))


# --------------------------------------------------------------------------- self-check

class _Client:
    """A pure-Python client of the fake (what mailkeep does, in a few lines), for the self-check."""

    def __init__(self, fake: FakeDirectory, ca: Path):
        self.fake = fake
        self.ctx = ssl.create_default_context(cafile=str(ca))

    def request(self, method: str, url: str, body: bytes | None = None, headers: dict | None = None,
                ctx: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
        u = urllib.parse.urlsplit(url)
        c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx or self.ctx, timeout=10)
        try:
            c.request(method, u.path + ("?" + u.query if u.query else ""), body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def google_assertion(self, sa: ServiceAccount, **claims) -> str:
        now = int(time.time())
        payload = {"iss": sa.client_email, "scope": " ".join(GOOGLE_SCOPES), "aud": self.fake.google_token_url,
                   "sub": GOOGLE_ADMIN,
                   "iat": now, "exp": now + 3600}
        payload.update(claims)
        key = serialization.load_pem_private_key(sa.private_key_pem.encode(), password=None)
        return jwt.encode(payload, key, algorithm="RS256", headers={"kid": sa.key_id, "typ": "JWT"})

    def form(self, url: str, fields: dict) -> tuple[int, dict, bytes]:
        return self.request("POST", url, urllib.parse.urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def google_token(self, sa: ServiceAccount, **claims) -> tuple[int, dict]:
        status, _, body = self.form(self.fake.google_token_url, {
            "grant_type": GOOGLE_JWT_GRANT, "assertion": self.google_assertion(sa, **claims)})
        return status, json.loads(body)

    def google_list(self, token: str, kind: str, max_results: int | None = None) -> list[dict]:
        out, page = [], None
        while True:
            q = {"customer": "my_customer", "maxResults": max_results or GOOGLE_MAX[kind], "fields": GOOGLE_FIELDS[kind]}
            if page:
                q["pageToken"] = page
            status, _, body = self.request("GET", f"{self.fake.base_url}/admin/directory/v1/{kind}?"
                                           + urllib.parse.urlencode(q), headers={"Authorization": f"Bearer {token}"})
            if status != 200:
                raise RuntimeError(f"{kind}: HTTP {status} {body[:200]!r}")
            doc = json.loads(body)
            out.extend(doc.get(kind, []))
            page = doc.get("nextPageToken")
            if not page:
                return out

    def graph_list(self, token: str, kind: str) -> list[dict]:
        q = "$select=" + ",".join(GRAPH_SELECT[kind]) + "&$top=999"
        if kind == "groups":
            q = "$filter=" + urllib.parse.quote(GRAPH_GROUP_FILTER) + "&" + q
        url, out = f"{self.fake.base_url}/v1.0/{kind}?{q}", []
        while url:
            status, _, body = self.request("GET", url, headers={"Authorization": f"Bearer {token}"})
            if status != 200:
                raise RuntimeError(f"{kind}: HTTP {status} {body[:200]!r}")
            doc = json.loads(body)
            out.extend(doc["value"])
            url = doc.get("@odata.nextLink")
        return out


def _self_check() -> int:
    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: object = "") -> None:
        results.append((name, bool(ok), str(detail)[:300]))
        print(f"  {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"), flush=True)

    base = Path(tempfile.mkdtemp(prefix="mailkeep-dir-selfcheck-", dir="/var/tmp"))
    try:
        pki = make_directory_pki(base / "pki")
        fake = FakeDirectory(pki, page_size=2).start()
        users, groups = sample_directory()
        users.append(user("nomail@example.org", mailbox=False))
        fake.set_directory(users, groups)
        client = _Client(fake, pki.ca.cert)
        g = provider_setup(fake, "google", base)
        m = provider_setup(fake, "microsoft", base)
        sa, app = g.sa, m.app

        status, doc = client.google_token(sa)
        check("google token", status == 200 and doc["access_token"].startswith("ya29.") and doc["expires_in"] == 3599, doc)
        gtoken = doc.get("access_token", "")
        got = client.google_list(gtoken, "users")
        check("google users: every user over several pages", [u["primaryEmail"] for u in got] == [u.email for u in users]
              and fake.pages_served("users", "google") == 6, (len(got), fake.pages_served("users", "google")))
        check("google users: only the requested fields, aliases as given",
              got[0] == {"primaryEmail": "alice@example.org", "aliases": ["sales@example.org"],
                         "nonEditableAliases": ["alice@example.com"]}, got[0])
        got = client.google_list(gtoken, "groups")
        check("google groups", [x["email"] for x in got] == [x.email for x in groups], got)
        check("no violations so far", not fake.violations, fake.violations)

        fake.page_size = 1000
        got = client.google_list(gtoken, "users")
        check("maxResults honoured as the page size limit (500 > 11 users: one page)",
              len(got) == len(users) and fake.list_requests("users", "google")[-1].page == 0)
        fake.page_size = 2

        n = len(fake.violations)
        try:
            client.google_list(gtoken, "users", max_results=100)
            check("maxResults other than 500 is a violation", False, "accepted")
        except RuntimeError as exc:
            check("maxResults other than 500 is a violation", "HTTP 400" in str(exc) and len(fake.violations) == n + 1,
                  exc)
        status, doc = client.google_token(sa, exp=int(time.time()) + 7200)
        check("JWT exp - iat > 3600 refused", status == 400 and doc["error"] == "invalid_grant", doc)
        status, doc = client.google_token(sa, sub="someone@example.org")
        check("JWT wrong sub refused", status == 400 and "sub" in doc["error_description"], doc)
        status, doc = client.google_token(sa, aud="https://oauth2.googleapis.com/token")
        check("JWT aud other than the token URL refused", status == 400 and "aud" in doc["error_description"], doc)
        other = make_service_account(base / "other.json", fake.google_token_url)
        other.client_email, other.key_id = sa.client_email, sa.key_id    # right name, wrong key
        status, doc = client.google_token(other)
        check("JWT signed with another key refused", status == 400 and "Signature" in doc["error_description"], doc)
        status, _, body = client.request("GET", f"{fake.base_url}/admin/directory/v1/users?customer=my_customer&"
                                         f"maxResults=500&fields={urllib.parse.quote(GOOGLE_FIELDS['users'])}",
                                         headers={"Authorization": "Bearer ya29.forged"})
        check("a token the fake did not issue gets 401", status == 401 and json.loads(body)["error"]["code"] == 401, body)
        fake.token_lifetime = 1
        _, doc = client.google_token(sa)
        short = doc["access_token"]
        fake.token_lifetime = 3599
        time.sleep(1 + TOKEN_GRACE + 0.2)
        try:
            client.google_list(short, "users")
            check("an expired token gets 401", False, "accepted")
        except RuntimeError as exc:
            check("an expired token gets 401", "HTTP 401" in str(exc), exc)
        check("each refusal above recorded as a violation", len(fake.violations) == n + 7, fake.violations[n:])
        fake.violations.clear()

        status, _, body = client.form(fake.microsoft_token_url(app.tenant), {
            "client_id": app.client_id, "client_secret": app.secret, "scope": GRAPH_SCOPE,
            "grant_type": "client_credentials"})
        doc = json.loads(body)
        check("microsoft token", status == 200 and doc["token_type"] == "Bearer" and "ext_expires_in" in doc, doc)
        mtoken = doc.get("access_token", "")
        got = client.graph_list(mtoken, "users")
        check("graph users over nextLink pages", [u["userPrincipalName"] for u in got] == [u.email for u in users]
              and fake.pages_served("users", "microsoft") == 6, len(got))
        check("graph proxyAddresses SMTP:/smtp:/SIP:",
              got[0]["proxyAddresses"][:3] == ["SMTP:alice@example.org", "smtp:sales@example.org",
                                               "smtp:alice@example.com"]
              and got[0]["proxyAddresses"][3].startswith("SIP:") and got[-1]["mail"] is None
              and got[-1]["proxyAddresses"] == [], got[0])
        got = client.graph_list(mtoken, "groups")
        check("graph groups ($filter)", [x["mail"] for x in got] == [x.email for x in groups], got)
        status, _, body = client.request("GET", f"{fake.base_url}/v1.0/users?$select=mail&$top=999",
                                         headers={"Authorization": f"Bearer {mtoken}"})
        check("graph $select not the four fields: 400 + violation", status == 400 and len(fake.violations) == 1, body)
        status, _, body = client.request("GET", f"{fake.base_url}/admin/directory/v1/users?customer=my_customer&"
                                         f"maxResults=500&fields={urllib.parse.quote(GOOGLE_FIELDS['users'])}",
                                         headers={"Authorization": f"Bearer {mtoken}"})
        check("a Graph token is not a Google token", status == 401, body)
        fake.violations.clear()
        status, _, body = client.form(fake.microsoft_token_url(app.tenant), {
            "client_id": app.client_id, "client_secret": "wrong", "scope": GRAPH_SCOPE,
            "grant_type": "client_credentials"})
        check("wrong client secret: 401 invalid_client AADSTS7000215, not a violation",
              status == 401 and json.loads(body)["error"] == "invalid_client"
              and "AADSTS7000215" in json.loads(body)["error_description"] and not fake.violations, body)

        # faults
        fake.inject("token_401", times=1)
        status, doc = client.google_token(sa)
        check("fault token_401 (google)", status == 401 and doc["error"] == "invalid_grant", doc)
        fake.inject("forbidden", times=1)
        try:
            client.google_list(gtoken, "users")
            check("fault forbidden", False, "no error")
        except RuntimeError as exc:
            check("fault forbidden", "HTTP 403" in str(exc), exc)
        fake.inject("rate_limit", page=1, times=1, retry_after=1)
        url = (f"{fake.base_url}/admin/directory/v1/users?customer=my_customer&maxResults=500&fields="
               + urllib.parse.quote(GOOGLE_FIELDS["users"]))
        _, _, body = client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"})
        nxt = url + "&pageToken=" + json.loads(body)["nextPageToken"]
        status, headers, body = client.request("GET", nxt, headers={"Authorization": f"Bearer {gtoken}"})
        check("fault rate_limit on page 1: 429 + Retry-After: 1", status == 429 and headers.get("retry-after") == "1",
              (status, headers))
        status, _, _ = client.request("GET", nxt, headers={"Authorization": f"Bearer {gtoken}"})
        check("after times=1 the same page answers 200", status == 200, status)
        fake.inject("server_error", times=1)
        s1 = client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"})[0]
        s2 = client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"})[0]
        check("fault server_error once, then success", (s1, s2) == (500, 200), (s1, s2))
        fake.inject("bad_json", times=1)
        status, _, body = client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"})
        try:
            json.loads(body)
            check("fault bad_json", False, body[:100])
        except ValueError:
            check("fault bad_json", status == 200)
        fake.inject("cut", times=1)
        try:
            client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"})
            check("fault cut", False, "complete response")
        except (http.client.IncompleteRead, ConnectionError, ssl.SSLError) as exc:
            check("fault cut (short body, connection closed)", True, exc)
        fake.inject("token_bad_json", times=1)
        status, _, body = client.form(fake.google_token_url, {
            "grant_type": GOOGLE_JWT_GRANT, "assertion": client.google_assertion(sa)})
        bait = [v for k, v in fake.secrets().items() if "broken token response" in k]
        check("fault token_bad_json: truncated, its token is a secret", status == 200 and bait and bait[0] in body.decode(),
              body)
        check("find_leaks finds a piece of a token", find_leaks("token=" + gtoken[10:40], fake.secrets()) != [])
        check("find_leaks finds a PEM line", find_leaks(sa.pem_lines()[5], fake.secrets()) != [])
        check("find_leaks: clean text is clean", find_leaks("accounts: 12, added: 12", fake.secrets()) == [])
        check("no violations from the fault checks", not fake.violations, fake.violations)

        fake.set_certificate("wrong")
        try:
            client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"})
            check("wrong-name certificate refused by a verifying client", False, "accepted")
        except ssl.SSLCertVerificationError as exc:
            check("wrong-name certificate refused by a verifying client", "match" in str(exc) or "mismatch" in str(exc),
                  exc)
        loose = ssl.create_default_context(cafile=str(pki.ca.cert))
        loose.check_hostname = False
        status, _, _ = client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"}, ctx=loose)
        check("... while it chains to the CA (only the name is wrong)", status == 200, status)
        check("the refused handshake recorded", len(fake.tls_failures) >= 1, fake.tls_failures)
        fake.set_certificate("good")
        try:
            client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"},
                           ctx=ssl.create_default_context(cafile=str(pki.other_ca.cert)))
            check("a ca_file without the CA refuses the fake", False, "accepted")
        except ssl.SSLCertVerificationError:
            check("a ca_file without the CA refuses the fake", True)
        fake.down()
        try:
            client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"})
            check("down: connection refused", False, "answered")
        except ConnectionRefusedError:
            check("down: connection refused", True)
        fake.up()
        status = client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"})[0]
        check("up again on the same port", status == 200, status)
        fake.revoke_tokens()
        status = client.request("GET", url, headers={"Authorization": f"Bearer {gtoken}"})[0]
        check("revoked token: 401, not a violation", status == 401 and not fake.violations, fake.violations)

        exp = expected_accounts(users, groups, "google")
        check("model: google keeps the valid aliases", exp["alice@example.org"] == {"sales@example.org", "alice@example.com"}
              and "nomail@example.org" in exp, exp.get("alice@example.org"))
        exp = expected_accounts(users, groups, "microsoft")
        check("model: microsoft skips users without mail, ignores SIP:", "nomail@example.org" not in exp
              and exp["alice@example.org"] == {"sales@example.org", "alice@example.com"}, exp.get("alice@example.org"))
        check("model: hostile addresses refused", all(address_problem(a) for a in (
            "../x@example.org", "a\x01b@example.org", "x" * 65 + "@example.org", "a@other.test", ".a@example.org",
            "a..b@example.org", "caf\u00e9@example.org")) and address_problem("Dave@Example.ORG") is None)
        text = "alice@example.org: sales@example.org, alice@example.com\nbob\n# c\ncarol: info\n"
        check("parse_accounts_text", parse_accounts_text(text) == {
            "alice@example.org": {"sales@example.org", "alice@example.com"}, "bob@example.org": set(),
            "bob@example.com": set(), "carol@example.org": {"info@example.org"}, "carol@example.com": {"info@example.com"}})
        d = Diff.parse("+ a@example.org\n- b@example.org\n~ c@example.org\naccounts: 2, added: 1, removed: 1, changed: 1\n"
                       "dry run: nothing written\n")
        check("Diff.parse", (d.added, d.removed, d.changed, d.summary, d.other, d.trailer) ==
              ({"a@example.org"}, {"b@example.org"}, {"c@example.org"}, (2, 1, 1, 1), [],
               ["dry run: nothing written"]), d)
        d = Diff.parse("note\n+ a@example.org\naccounts: 1, added: 1, removed: 0, changed: 0\n+ b@example.org\n")
        check("Diff.parse: stray lines", d.other == ["note", "+ b@example.org"], d)
        fake.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    failed = [r for r in results if not r[1]]
    print(f"self-check: {len(results) - len(failed)} of {len(results)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_self_check())
