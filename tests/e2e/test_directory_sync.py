"""Directory sync (issue 14): `mailkeep accounts sync` / `accounts list` against a fake Google
Workspace and Microsoft Graph directory (directory_support.FakeDirectory, HTTPS with a test CA).

* the first sync adds every account and writes the cache; later syncs print `+` / `-` / `~` lines
  and the summary line; --dry-run prints the same and writes nothing; `accounts list` (also with
  provider = file)
* the token is fetched once for several syncs of a running server, and renewed before it expires
* every failure (token refused, 403, persistent 429, a broken page, a connection cut mid-page, a
  broken token answer, a certificate for a wrong name, a ca_file without the CA, a wrong client
  secret) exits 1 with a message and leaves the cache as it was; 401/403 are not retried
* 429 waits Retry-After; a 500 is retried after ~1 s; a persistent 500 is retried 4 times with
  backoff 1, 2, 4, 8 s and then fails
* a sync removing more than max_removal is held (exit 3, --force applies it); exactly max_removal
  is not held
* hostile addresses are refused and logged, the rest of the list is kept
* no access token, JWT, client secret or private-key line in any output (also check-config, the
  server's log and /metrics)
* the [metrics] directory gauges and counters

Every request mailkeep makes is checked by the fake against /work/specs/directory.md (the
fake_directory fixture fails the test on any violation).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from harness import Mailkeep, free_port, render_ini, run_mailkeep, wait_port
from directory_support import (  # noqa: F401,F811  (pytest fixtures)
    DIFF_LINE, DOMAINS, Diff, Entry, FakeDirectory, ProviderSetup, diff_of, directory_config, directory_pki,
    expected_list, fake_directory, find_leaks, group, numbered_users, parse_accounts_text, parse_list,
    provider_setup, sample_directory, user, wait_until,
)

PROVIDERS = ["google", "microsoft"]
# The summary log line; fields the spec does not name (pages=, requests=) may stand before duration=
# here: test_sync_log_line_has_the_spec_prefix checks the spec's exact prefix on its own.
SUMMARY_RE = re.compile(r"directory sync: provider=(\w+) accounts=(\d+) addresses=(\d+) added=(\d+) removed=(\d+) "
                        r"changed=(\d+) refused=(\d+)(?: [a-z_]+=\S+)* duration=(\S+)")
SPEC_SUMMARY_RE = re.compile(r"directory sync: provider=(google|microsoft) accounts=\d+ addresses=\d+ added=\d+ "
                             r"removed=\d+ changed=\d+ refused=\d+ duration=\S+")
SYNC_TIMEOUT = 120          # one `accounts sync` run, retries included


# --------------------------------------------------------------------------- the site

@dataclass
class Site:
    """A mailkeep config (provider google or microsoft, [backup] domains example.org, example.com)
    pointing at the fake; every command's output is kept for the leak check at teardown."""
    d: Path
    fake: FakeDirectory
    setup: ProviderSetup
    config: dict
    config_path: Path
    outputs: list[tuple[str, str]] = field(default_factory=list)
    servers: list[Mailkeep] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return self.setup.provider

    @property
    def cache(self) -> Path:
        return Path(self.config["directory"]["cache"])

    def write(self, **sections) -> None:
        for name, values in sections.items():
            self.config.setdefault(name, {}).update(values)
        self.config_path.write_text(render_ini(self.config))

    def run(self, *args: str, config: Path | None = None, timeout: float = SYNC_TIMEOUT):
        res = run_mailkeep(*args, "-c", str(config or self.config_path), timeout=timeout)
        self.outputs.append((" ".join(args) + " (stdout)", res.stdout))
        self.outputs.append((" ".join(args) + " (stderr)", res.stderr))
        return res

    def sync(self, *flags: str, timeout: float = SYNC_TIMEOUT):
        return self.run("accounts", "sync", *flags, timeout=timeout)

    def cache_state(self) -> tuple[bytes, int, int] | None:
        try:
            st = self.cache.stat()
        except FileNotFoundError:
            return None
        return self.cache.read_bytes(), st.st_ino, st.st_mtime_ns

    def cached(self) -> dict[str, set[str]]:
        return parse_accounts_text(self.cache.read_text())

    def serve(self, **sections) -> Mailkeep:
        """`mailkeep serve` with this config (plus sections), the directory interval 2 s by default."""
        config = json.loads(json.dumps(self.config))
        config["directory"]["interval"] = 2
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        mk = Mailkeep(self.d / f"serve{len(self.servers)}", config)
        self.servers.append(mk)
        return mk.start()

    def texts(self) -> list[tuple[str, str]]:
        out = list(self.outputs)
        for mk in self.servers:
            out.append((f"log of {mk.workdir.name}", mk.log()))
        if self.cache.exists():
            out.append(("the cache file", self.cache.read_text(errors="replace")))
        return out


@pytest.fixture(params=PROVIDERS)
def provider(request) -> str:
    return request.param


@pytest.fixture
def make_site(mailkeep_bin, fake_directory, tmp_path):
    """Factory: make_site(provider, users=None, groups=None, **[directory] overrides) -> Site, the
    fake holding sample_directory() unless users/groups are given. At teardown: every server
    stopped (its log printed) and no secret in any output."""
    sites: list[Site] = []

    def make(provider: str, users: list[Entry] | None = None, groups: list[Entry] | None = None, **directory) -> Site:
        d = tmp_path / f"site{len(sites)}"
        d.mkdir()
        setup = provider_setup(fake_directory, provider, d, **directory)
        config = directory_config(d, setup)
        sample_users, sample_groups = sample_directory()
        fake_directory.set_directory(sample_users if users is None else users,
                                     sample_groups if groups is None else groups)
        site = Site(d, fake_directory, setup, config, d / "mailkeep.ini")
        site.write()
        sites.append(site)
        return site

    yield make
    leaks = []
    for site in sites:
        for mk in site.servers:
            code = mk.stop()
            print(f"--- mailkeep log ({mk.stderr_path}, exit {code}) ---")
            print("\n".join(mk.log().splitlines()[-60:]))
        for where, text in site.texts():
            leaks += [f"{label} in {where}" for label in find_leaks(text, fake_directory.secrets())]
    assert not leaks, f"secrets in mailkeep's output: {leaks}"


def assert_ok(res, what: str = "accounts sync") -> None:
    assert res.returncode == 0, f"{what}: exit {res.returncode}\nstdout: {res.stdout[-3000:]}\nstderr: {res.stderr[-3000:]}"


def check_diff(res, added=(), removed=(), changed=(), total: int | None = None) -> Diff:
    d = Diff.parse(res.stdout)
    assert d.other == [], f"lines that are neither a change nor the summary: {d.other[:10]}\n{res.stdout[-2000:]}"
    assert not d.trailer or len(d.trailer) <= 2, f"more than a note after the summary: {d.trailer}"
    assert (d.added, d.removed, d.changed) == (set(added), set(removed), set(changed)), res.stdout[-3000:]
    assert d.summary is not None, f"no summary line last: {res.stdout[-1000:]}"
    assert d.summary == (total, len(added), len(removed), len(changed)), d.summary
    return d


def summaries(log: str, provider: str | None = None) -> list[tuple]:
    return [m.groups() for m in SUMMARY_RE.finditer(log) if provider is None or m.group(1) == provider]


def with_extras(provider: str) -> tuple[list[Entry], list[Entry]]:
    """sample_directory() plus a user without a mailbox (Graph: skipped) and a mixed-case one."""
    users, groups = sample_directory()
    users.append(user("nomail@example.org", mailbox=False))
    users.append(user("Kim@Example.ORG", "K.Lee@example.org"))
    return users, groups


# --------------------------------------------------------------------------- diff, cache, list

def test_first_sync_adds_every_account(make_site, provider):
    users, groups = with_extras(provider)
    site = make_site(provider, users, groups)
    expected = site.fake.expected(provider)
    assert "kim@example.org" in expected and expected["kim@example.org"] == {"k.lee@example.org"}
    assert ("nomail@example.org" in expected) == (provider == "google")
    assert site.cache_state() is None

    res = site.sync()
    assert_ok(res)
    check_diff(res, added=expected, total=len(expected))
    assert site.cached() == expected, site.cache.read_text()
    for line in site.cache.read_text().splitlines():
        name = line.split("#", 1)[0].split(":", 1)[0].strip()
        assert not name or "@" in name, f"cache line without a full address: {line!r}"
    # every page fetched exactly once, one token
    assert site.fake.pages_served("users", provider) == -(-len(users) // 2)
    assert site.fake.pages_served("groups", provider) == -(-len(groups) // 2)
    assert site.fake.token_requests(provider) == 1
    # SIP: and X500: proxies are ignored, not refused
    assert "alice.sip" not in res.stderr and "x500" not in res.stderr.lower(), res.stderr


def test_later_sync_prints_the_diff(make_site, provider):
    site = make_site(provider)
    assert_ok(site.sync())
    before = site.cached()
    site.fake.add_user(user("nick@example.org", "nicholas@example.org"))
    site.fake.remove_users("judy@example.org")
    site.fake.update_user("bob@example.org", aliases=["robert@example.org", "bobby@example.org"])
    site.fake.update_user("carol@example.org", aliases=["caroline@example.com"])
    after = site.fake.expected(provider)
    added, removed, changed = diff_of(before, after)
    assert (added, removed, changed) == ({"nick@example.org"}, {"judy@example.org"},
                                         {"bob@example.org", "carol@example.org"})

    res = site.sync()
    assert_ok(res)
    check_diff(res, added, removed, changed, total=len(after))
    assert site.cached() == after

    res = site.sync()                     # nothing changed since
    assert_ok(res)
    check_diff(res, total=len(after))
    assert site.cached() == after


def test_dry_run_writes_nothing(make_site, provider):
    site = make_site(provider)
    expected = site.fake.expected(provider)
    cache_dir_before = sorted(os.listdir(site.cache.parent))
    res = site.sync("--dry-run")
    assert_ok(res, "accounts sync --dry-run")
    check_diff(res, added=expected, total=len(expected))
    assert site.cache_state() is None, "--dry-run wrote the cache"
    assert sorted(os.listdir(site.cache.parent)) == cache_dir_before, "--dry-run left files beside the cache"

    assert_ok(site.sync())
    state = site.cache_state()
    site.fake.remove_users("judy@example.org")
    site.fake.add_user(user("olga@example.com"))
    res = site.sync("--dry-run")
    assert_ok(res, "accounts sync --dry-run")
    check_diff(res, added={"olga@example.com"}, removed={"judy@example.org"}, total=len(expected))
    assert site.cache_state() == state, "--dry-run changed the cache"
    assert sorted(os.listdir(site.cache.parent)) == sorted(cache_dir_before + [site.cache.name])

    res = site.sync()                     # the real run applies what the dry run showed
    assert_ok(res)
    check_diff(res, added={"olga@example.com"}, removed={"judy@example.org"}, total=len(expected))


def test_accounts_list(make_site, provider):
    site = make_site(provider, *with_extras(provider))
    assert_ok(site.sync())
    res = site.run("accounts", "list")
    assert_ok(res, "accounts list")
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert lines == sorted(lines), "accounts list is not sorted"
    pairs = parse_list(res.stdout)
    assert pairs == expected_list(site.fake.expected(provider)), res.stdout
    assert ("sales@example.org", "alice@example.org") in pairs
    assert ("alice@example.org", "alice@example.org") in pairs
    assert ("staff@example.org", "team@example.org") in pairs


def test_accounts_list_provider_file(mailkeep_bin, tmp_path):
    """provider = file: the [backup] accounts file in all three line forms."""
    text = ("# the backup users\n"
            "alice: sales, info\n"
            "bob@example.org: bob@example.com, robert@example.org\n"
            "carol\n")
    accounts = tmp_path / "accounts.txt"
    accounts.write_text(text)
    from backup_support import backup_config
    config = backup_config(free_port(), "127.0.0.1:9", tmp_path / "archive", accounts,
                           backup={"domains": ", ".join(DOMAINS)}, directory={"provider": "file"})
    path = tmp_path / "mailkeep.ini"
    path.write_text(render_ini(config))
    res = run_mailkeep("accounts", "list", "-c", str(path))
    assert_ok(res, "accounts list")
    pairs = parse_list(res.stdout)
    assert pairs == expected_list(parse_accounts_text(text)), res.stdout
    assert ("info@example.com", "alice@example.com") in pairs and ("info@example.org", "alice@example.org") in pairs
    assert ("bob@example.com", "bob@example.org") in pairs and ("carol@example.com", "carol@example.com") in pairs


def test_sync_log_line_has_the_spec_prefix(make_site):
    """The spec: each sync logs one line starting `directory sync: provider=google accounts=N
    addresses=N added=N removed=N changed=N refused=N duration=` (what a log alert would match)."""
    site = make_site("google")
    res = site.sync()
    assert_ok(res)
    lines = [line for line in res.stderr.splitlines() if "directory sync: provider=" in line]
    assert len(lines) == 1, res.stderr[-2000:]
    assert SPEC_SUMMARY_RE.search(lines[0]), f"not the spec's field order: {lines[0]}"
    expected = site.fake.expected("google")
    assert f" accounts={len(expected)} addresses={len(expected_list(expected))} added={len(expected)} " in lines[0]


# --------------------------------------------------------------------------- the token

def test_token_cached_across_syncs_of_a_running_server(make_site, provider):
    site = make_site(provider)
    expected = site.fake.expected(provider)
    mk = site.serve()
    wait_until(lambda: len(summaries(mk.log(), provider)) >= 3, timeout=40)
    lines = summaries(mk.log(), provider)
    assert len(lines) >= 3, f"fewer than 3 syncs in ~40 s with interval 2:\n{mk.log()[-3000:]}"
    assert site.fake.token_requests(provider) == 1, "a new token for a sync while the first was still valid"
    assert site.fake.pages_served("users", provider) >= 3 * -(-len(site.fake.users) // 2)
    first, second = lines[0], lines[1]
    n_addresses = len(expected_list(expected))
    assert first[1:7] == (str(len(expected)), str(n_addresses), str(len(expected)), "0", "0", "0"), first
    assert second[1:7] == (str(len(expected)), str(n_addresses), "0", "0", "0", "0"), second
    assert "directory sync failed" not in mk.log()
    assert site.cached() == expected


def test_revoked_token_replaced_once(make_site, provider):
    """A token revoked before it expires (an administrator reset the key): the API's 401 makes the
    running server take a new token once, and the sync succeeds, instead of failing until expiry."""
    site = make_site(provider)
    mk = site.serve()
    assert wait_until(lambda: len(summaries(mk.log(), provider)) >= 1, timeout=30), mk.log()[-3000:]
    assert site.fake.token_requests(provider) == 1
    site.fake.revoke_tokens()
    before = len(summaries(mk.log(), provider))
    assert wait_until(lambda: len(summaries(mk.log(), provider)) >= before + 2, timeout=40), mk.log()[-3000:]
    assert site.fake.token_requests(provider) == 2, "one new token after the revocation, then reused"
    assert "directory sync failed" not in mk.log(), mk.log()[-3000:]


# Mostly waiting (backoff, TTLs, sync intervals): not repeated in the ASan pass, whose
# C++ paths the other tests of this file reach (conftest.py, release_only).
@pytest.mark.release_only
def test_expiring_token_renewed_before_use(make_site, provider):
    """Tokens that live 4 s: every sync (interval 2 s) must use one that is still valid (the fake
    answers an expired one with 401 and records a violation)."""
    site = make_site(provider)
    site.fake.token_lifetime = 4
    mk = site.serve()
    assert wait_until(lambda: len(summaries(mk.log(), provider)) >= 5, timeout=60), mk.log()[-3000:]
    assert site.fake.token_requests(provider) >= 2, "a token that expires in 4 s was used for 8 s"
    assert "directory sync failed" not in mk.log(), mk.log()[-3000:]


# --------------------------------------------------------------------------- failures

@dataclass
class Failure:
    name: str
    words: tuple[str, ...]                 # the message names at least one (case-insensitive)
    providers: tuple[str, ...] = tuple(PROVIDERS)
    single: str | None = None              # the request kind that must not be retried


FAILURES = [
    Failure("token_401", ("401", "invalid_grant", "invalid_client"), single="token"),
    Failure("forbidden", ("403", "forbidden", "insufficient", "not authorized"), single="users"),
    Failure("rate_limit_forever", ("429", "too many", "rate")),
    Failure("bad_json_page", ("json", "parse", "malformed", "invalid")),
    Failure("cut_mid_page", ("truncat", "closed", "eof", "incomplete", "short", "reset", "connection", "body",
                             "partial", "end of stream")),
    Failure("token_bad_json", ("json", "parse", "malformed", "invalid", "token")),
    Failure("wrong_name_certificate", ("certificate", "verif", "hostname", "name", "tls", "ssl", "x509")),
    Failure("ca_file_without_the_ca", ("certificate", "verif", "issuer", "tls", "ssl", "x509")),
    Failure("wrong_client_secret", ("401", "invalid_client", "AADSTS7000215", "secret"), ("microsoft",), "token"),
]


def apply_failure(site: Site, name: str) -> None:
    fake = site.fake
    if name == "token_401":
        fake.inject("token_401")
    elif name == "forbidden":
        fake.inject("forbidden", where="users", page=0)
    elif name == "rate_limit_forever":
        fake.inject("rate_limit", where="users", page=0, retry_after=1)
    elif name == "bad_json_page":
        fake.inject("bad_json", where="users", page=1)
    elif name == "cut_mid_page":
        fake.inject("cut", where="users", page=1)
        # A cut is retried like any network error; one retry shows it (the backoff has its own test).
        site.write(directory={"retries": 1})
    elif name == "token_bad_json":
        fake.inject("token_bad_json")
    elif name == "wrong_name_certificate":
        fake.set_certificate("wrong")
    elif name == "ca_file_without_the_ca":
        site.write(directory={"ca_file": str(fake.pki.other_ca.cert)})
    elif name == "wrong_client_secret":
        fake.register_microsoft(replace(site.setup.app, secret=site.setup.app.secret[::-1]))
    else:
        raise AssertionError(name)


def undo_failure(site: Site, name: str) -> None:
    site.fake.clear_faults()
    site.config.get("directory", {}).pop("retries", None)
    site.fake.set_certificate("good")
    site.write(directory={"ca_file": str(site.fake.pki.ca.cert)})
    if name == "wrong_client_secret":
        site.fake.register_microsoft(site.setup.app)


@pytest.mark.parametrize("failure", [pytest.param((f, p), id=f"{p}-{f.name}") for f in FAILURES for p in f.providers])
def test_failure_keeps_the_last_good_list(make_site, failure):
    f, provider = failure
    site = make_site(provider)
    assert_ok(site.sync())
    state = site.cache_state()
    good = site.cached()
    site.fake.remove_users("judy@example.org")          # a successful sync would change the cache
    site.fake.add_user(user("zoe@example.org"))
    apply_failure(site, f.name)
    requests_before = len(site.fake.requests)
    tls_before = len(site.fake.tls_failures)
    t0 = time.monotonic()

    res = site.sync()
    elapsed = time.monotonic() - t0
    assert res.returncode == 1, f"exit {res.returncode}, expected 1\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    assert site.cache_state() == state, "a failed sync changed the cache"
    assert not [line for line in res.stdout.splitlines() if DIFF_LINE.match(line)], \
        f"a failed sync printed changes: {res.stdout[-2000:]}"
    err = res.stderr
    assert err.strip(), "no message on stderr"
    assert "directory sync failed:" in err and f"keeping the last good list ({len(good)} accounts)" in err, err[-3000:]
    assert any(w.lower() in err.lower() for w in f.words), f"the message names none of {f.words}: {err[-3000:]}"

    new = site.fake.requests[requests_before:]
    if f.single == "token":
        assert [r.kind for r in new] == ["token"], f"retried or went on after the token was refused: {new}"
    elif f.single:
        assert sum(1 for r in new if r.kind == f.single and r.page == 0) == 1, f"a {f.name} was retried: {new}"
    if f.name in ("wrong_name_certificate", "ca_file_without_the_ca"):
        assert new == [], f"HTTP requests over a connection that should have failed verification: {new}"
        assert len(site.fake.tls_failures) > tls_before, "no refused handshake seen by the fake"
    if f.name == "rate_limit_forever":
        tries = [r.t for r in new if r.kind == "users" and r.page == 0]
        assert len(tries) == 5, f"expected 1 + 4 retries of the 429 page, got {len(tries)}"
        gaps = [b - a for a, b in zip(tries, tries[1:])]
        assert min(gaps) >= 0.95, f"retried sooner than Retry-After: 1: {gaps}"
    assert elapsed < 60, f"the failing sync took {elapsed:.1f} s"

    undo_failure(site, f.name)
    res = site.sync()
    assert_ok(res)
    check_diff(res, added={"zoe@example.org"}, removed={"judy@example.org"}, total=len(good))
    assert site.cached() == site.fake.expected(provider)


@pytest.mark.parametrize("provider,retry_after", [("google", 1), ("google", 2), ("microsoft", 1)])
def test_429_waits_retry_after(make_site, provider, retry_after):
    site = make_site(provider)
    site.fake.inject("rate_limit", where="users", page=0, times=1, retry_after=retry_after)
    t0 = time.monotonic()
    res = site.sync()
    elapsed = time.monotonic() - t0
    assert_ok(res)
    tries = [r for r in site.fake.list_requests("users", provider, page=0)]
    assert [r.status for r in tries] == [429, 200], tries
    gap = tries[1].t - tries[0].t
    assert gap >= retry_after - 0.05, f"retried after {gap:.2f} s, Retry-After was {retry_after}"
    assert elapsed >= retry_after
    assert site.cached() == site.fake.expected(provider)


def test_500_then_success(make_site, provider):
    site = make_site(provider)
    site.fake.inject("server_error", where="users", page=1, times=1)
    res = site.sync()
    assert_ok(res)
    tries = site.fake.list_requests("users", provider, page=1)
    assert [r.status for r in tries] == [500, 200], tries
    assert tries[1].t - tries[0].t >= 0.95, "the first retry came sooner than the 1 s backoff"
    expected = site.fake.expected(provider)
    check_diff(res, added=expected, total=len(expected))
    assert site.cached() == expected


# Mostly waiting (backoff, TTLs, sync intervals): not repeated in the ASan pass, whose
# C++ paths the other tests of this file reach (conftest.py, release_only).
@pytest.mark.release_only
def test_persistent_500_retried_with_backoff_then_fails(make_site):
    site = make_site("google")
    assert_ok(site.sync())
    state = site.cache_state()
    site.fake.remove_users("judy@example.org")
    site.fake.inject("server_error", where="users", page=0, status=503)
    n0 = len(site.fake.list_requests("users", "google", page=0))
    res = site.sync()
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert site.cache_state() == state
    tries = [r.t for r in site.fake.list_requests("users", "google", page=0)][n0:]
    assert len(tries) == 5, f"expected 1 + 4 retries, got {len(tries)}"
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    for want, got in zip((1, 2, 4, 8), gaps):
        assert got >= want * 0.95, f"backoff {gaps}, expected 1, 2, 4, 8 s"
    assert "keeping the last good list" in res.stderr


def test_graph_next_link_to_another_host_gets_no_token(make_site, directory_pki):
    """An @odata.nextLink on another server (same CA, valid certificate): the Bearer token must not
    follow it, and a list that cannot be completed is a failed sync."""
    other = FakeDirectory(directory_pki).start()
    try:
        site = make_site("microsoft")
        assert_ok(site.sync())
        state = site.cache_state()
        site.fake.remove_users("judy@example.org")
        site.fake.next_link_base = other.base_url
        res = site.sync()
        carried = [r for r in other.requests if r.authorization]
        assert carried == [], f"the access token was sent to {other.base_url}: {carried}"
        assert res.returncode == 1, f"exit {res.returncode}: {res.stdout[-1000:]} {res.stderr[-1000:]}"
        assert site.cache_state() == state
    finally:
        other.stop()


# --------------------------------------------------------------------------- held syncs

def test_sync_removing_half_is_held_until_force(make_site, provider):
    site = make_site(provider)
    assert_ok(site.sync())
    state = site.cache_state()
    before = site.cached()
    gone = [u.email for u in site.fake.users[:6]]
    site.fake.remove_users(*gone)
    res = site.sync()
    assert res.returncode == 3, f"exit {res.returncode}, expected 3 (held)\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    out = res.stdout + res.stderr
    assert "held" in out and "--force" in out, out[-3000:]
    assert site.cache_state() == state, "a held sync wrote the cache"

    res = site.sync("--force")
    assert_ok(res, "accounts sync --force")
    check_diff(res, removed=set(gone), total=len(before) - len(gone))
    assert site.cached() == site.fake.expected(provider)
    res = site.sync()
    assert_ok(res)
    check_diff(res, total=len(before) - len(gone))


def test_max_removal_boundary(make_site):
    """Ten accounts: removing one (10%) is applied, removing one of nine (11%) is held; an emptied
    directory is held; max_removal = 50% lets half go."""
    site = make_site("google", numbered_users(10), [])
    assert_ok(site.sync())
    site.fake.remove_users("user000@example.org")
    res = site.sync()
    assert_ok(res)
    check_diff(res, removed={"user000@example.org"}, total=9)
    site.fake.remove_users("user001@example.org")
    res = site.sync()
    assert res.returncode == 3, (res.returncode, res.stdout, res.stderr)
    site.fake.set_directory([], [])
    state = site.cache_state()
    res = site.sync()
    # 100% removed: held (3) by the spec's rule, or refused as a failure (1); either way nothing is written
    assert res.returncode in (1, 3), f"an empty directory was applied: {res.returncode} {res.stdout[-500:]}"
    assert site.cache_state() == state and len(site.cached()) == 9

    site.write(directory={"max_removal": "50%"})
    site.fake.set_directory(numbered_users(10)[1:6], [])
    res = site.sync()            # user001..009 -> user001..005: 4 of 9 removed (44%)
    assert_ok(res)
    check_diff(res, removed={f"user00{i}@example.org" for i in range(6, 10)}, total=5)


# --------------------------------------------------------------------------- hostile addresses

HOSTILE_ALIASES = [
    "../x@example.org",
    "a\x01b@example.org",
    "tab\there@example.org",
    "evil\r\ndirectory sync: provider=google accounts=999 INJECTED@example.org",
    "x" * 10000 + "@example.org",
    "alice@other.test",
    ".hidden@example.org",
    "a..b@example.org",
    "caf\u00e9@example.org",
    "a/b@example.org",
    "sp ace@example.org",
]


def hostile_directory() -> tuple[list[Entry], list[Entry]]:
    users = [
        user("alice@example.org", "sales@example.org", *HOSTILE_ALIASES, "Mixed.Case@Example.ORG"),
        user("../../etc@example.org", "orphan@example.org"),      # refused primary: the account is dropped
        user("zed@other.test", "zed@example.org"),                # primary outside the backup domains
        user("bob@example.org"),
        user("carol@example.com", "c.smith@example.com"),
    ]
    return users, [group("team@example.org", "staff@example.org", "team@evil.test")]


def test_hostile_addresses_refused_rest_kept(make_site, provider):
    """log_level = debug: the spec says every refused address is logged without a level; an
    address of a domain that is not backed up may be logged at debug only (common: secondary
    domains), the others at info or above."""
    site = make_site(provider, *hostile_directory())
    site.write(general={"log_level": "debug"})
    expected = {
        "alice@example.org": {"sales@example.org", "mixed.case@example.org"},
        "bob@example.org": set(),
        "carol@example.com": {"c.smith@example.com"},
        "team@example.org": {"staff@example.org"},
    }
    assert site.fake.expected(provider) == expected        # the model agrees with the spec's rules
    res = site.sync()
    assert_ok(res)
    check_diff(res, added=expected, total=len(expected))
    assert site.cached() == expected, site.cache.read_text()[:2000]
    listed = parse_list(site.run("accounts", "list").stdout)
    assert listed == expected_list(expected)

    out = res.stdout + res.stderr
    refused = [line for line in out.splitlines() if "directory: refused address" in line]
    assert len(refused) >= len(HOSTILE_ALIASES) + 3, f"{len(refused)} refused lines:\n" + "\n".join(refused)[:4000]
    for addr in ("../x@example.org", "alice@other.test", ".hidden@example.org", "a..b@example.org", "a/b@example.org"):
        needle = f'directory: refused address "{addr}" (account alice@example.org): '
        assert needle in out, f"no {needle!r}:\n" + "\n".join(refused)[:4000]
    assert 'directory: refused address "xxxxxxxxxxxxxxxx' in out
    assert 'refused address "team@evil.test" (account team@example.org): ' in out
    for primary in ("../../etc@example.org", "zed@other.test"):
        assert any(primary in line for line in refused), f"the refused primary {primary} is not logged"
    # a control character never starts a line of its own in the output (log injection)
    for line in out.splitlines():
        assert "INJECTED" not in line or "refused address" in line, f"injected log line: {line!r}"
    assert "\x01" not in out, "a control character reached the output unescaped"


# --------------------------------------------------------------------------- secrets

def test_no_secret_in_any_output(make_site, provider):
    """Every output of every command and of the server, with tokens, assertions, the client secret
    and the private key around: none of them (nor a 16-character piece) appears. The make_site
    teardown checks the same over all outputs; this test makes sure the risky paths ran."""
    site = make_site(provider)
    res = site.run("check-config")
    assert_ok(res, "check-config")
    assert_ok(site.sync())
    assert_ok(site.sync("--dry-run"))
    assert_ok(site.run("accounts", "list"), "accounts list")

    site.fake.inject("token_bad_json", times=1)      # a 200 whose truncated body holds a token
    assert site.sync().returncode == 1
    site.fake.inject("token_401", times=1)
    assert site.sync().returncode == 1
    if provider == "microsoft":
        apply_failure(site, "wrong_client_secret")
        assert site.sync().returncode == 1
        undo_failure(site, "wrong_client_secret")
    else:
        broken = site.d / "broken-service-account.json"
        # a syntax error right after the private key: a parser message quoting what it read last
        broken.write_text(site.setup.sa.path.read_text().replace('"client_email"', 'client_email', 1))
        broken.chmod(0o600)
        bad = json.loads(json.dumps(site.config))
        bad["directory"]["credentials"] = str(broken)
        bad_path = site.d / "broken.ini"
        bad_path.write_text(render_ini(bad))
        site.run("check-config", config=bad_path)                   # exit status: either is fine
        assert site.run("accounts", "sync", config=bad_path).returncode == 1

    metrics_port = free_port()
    mk = site.serve(metrics={"listen": f"127.0.0.1:{metrics_port}"})
    wait_port("127.0.0.1", metrics_port, 10, mk.proc)
    assert wait_until(lambda: len(summaries(mk.log(), provider)) >= 2, timeout=40), mk.log()[-3000:]
    site.outputs.append(("/metrics", scrape(metrics_port)))

    texts = site.texts()
    assert len(site.fake.secrets()) >= 3
    leaks = [f"{label} in {where}" for where, text in texts for label in find_leaks(text, site.fake.secrets())]
    assert leaks == []
    for where, text in texts:
        assert "PRIVATE KEY" not in text, f"private key material named in {where}"


# --------------------------------------------------------------------------- metrics

def scrape(port: int) -> str:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, (r.status, body[:300])
        return body
    finally:
        c.close()


def metric(text: str, name: str) -> float:
    """The value of the one sample of `name` (any labels)."""
    values = [float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)]
    assert len(values) == 1, f"{name}: {len(values)} samples\n" + "\n".join(
        line for line in text.splitlines() if "directory" in line)
    return values[0]


def test_metrics(make_site):
    users, groups = sample_directory()
    users[1].aliases.append("bob@elsewhere.test")          # one refused address
    site = make_site("google", users, groups)
    expected = site.fake.expected("google")
    metrics_port = free_port()
    t0 = time.time()
    mk = site.serve(metrics={"listen": f"127.0.0.1:{metrics_port}"})
    wait_port("127.0.0.1", metrics_port, 10, mk.proc)
    assert wait_until(lambda: summaries(mk.log(), "google"), timeout=30), mk.log()[-3000:]
    first = summaries(mk.log(), "google")[0]
    assert first[1] == str(len(expected)) and first[6] == "1", f"summary {first}: accounts, refused=1"

    text = scrape(metrics_port)
    assert metric(text, "mailkeep_directory_accounts") == len(expected)
    assert metric(text, "mailkeep_directory_syncs_total") >= 1
    assert metric(text, "mailkeep_directory_sync_failures_total") == 0
    assert metric(text, "mailkeep_directory_held_syncs_total") == 0
    success = metric(text, "mailkeep_directory_last_success_timestamp_seconds")
    assert t0 - 1 <= success <= time.time() + 1, (t0, success)

    t1 = time.time()
    site.fake.inject("forbidden", where="users")
    assert wait_until(lambda: "directory sync failed:" in mk.log(), timeout=30), mk.log()[-3000:]
    failed = [line for line in mk.log().splitlines() if "directory sync failed:" in line]
    assert f"keeping the last good list ({len(expected)} accounts)" in failed[0], failed[0]
    text = scrape(metrics_port)
    failures = metric(text, "mailkeep_directory_sync_failures_total")
    assert failures >= 1
    assert metric(text, "mailkeep_directory_last_error_timestamp_seconds") >= t1 - 1
    assert metric(text, "mailkeep_directory_accounts") == len(expected)
    success = metric(text, "mailkeep_directory_last_success_timestamp_seconds")
    # one more failed sync: the failure counter moves, the success timestamp does not
    assert wait_until(lambda: metric(scrape(metrics_port), "mailkeep_directory_sync_failures_total") > failures,
                      timeout=30), "a second failed sync was not counted"
    text = scrape(metrics_port)
    assert metric(text, "mailkeep_directory_last_success_timestamp_seconds") == success
    assert metric(text, "mailkeep_directory_accounts") == len(expected)

    site.fake.clear_faults()
    site.fake.remove_users(*[u.email for u in users[:6]])
    assert wait_until(lambda: "directory sync held:" in mk.log(), timeout=30), mk.log()[-3000:]
    held = [line for line in mk.log().splitlines() if "directory sync held:" in line]
    assert "mailkeep accounts sync --force" in held[0], held[0]
    assert wait_until(lambda: metric(scrape(metrics_port), "mailkeep_directory_held_syncs_total") >= 1, timeout=10)
    assert metric(scrape(metrics_port), "mailkeep_directory_accounts") == len(expected)
    assert site.cached() == expected, "a held sync changed the cache"
