"""Directory sync end to end: mail through a running `mailkeep serve` whose accounts come from the
fake Google / Microsoft directory (directory_support.FakeDirectory), [directory] interval = 2 s,
[general] user = mail (the credentials and the cache directory belong to uid 8; the archive under
a public /var/tmp directory, backup_support's gateway).

* a user added in the directory: 550 5.1.1 before the next sync, 250 and a file in its Maildir after
* an alias (google aliases / nonEditableAliases, Graph smtp: proxies, also across the backup
  domains) lands in its account's Maildir with Delivered-To: <account>; no Maildir for the alias;
  a Graph SIP: proxy is no address; a group is an account
* a removed user gets 550 5.1.1 and their Maildir stays
* [backup] accounts is not read with provider = google | microsoft
* mail keeps flowing (250, archived) while syncs fail (500 with retries, the directory down) and the
  list stays; it recovers afterwards
* a cache written by `mailkeep accounts sync --force` beside the server is picked up without a
  restart (the server's own sync held the same change)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from backup_support import (  # noqa: F401,F811  (pytest fixtures)
    MAIL_GID, MAIL_UID, BackupGateway, backup_gateway, make_message, public_tempdir, read_archived, upstreams,
)
from directory_support import (  # noqa: F401,F811  (pytest fixtures)
    DOMAINS, Entry, FakeDirectory, ProviderSetup, directory_config, directory_pki, fake_directory, find_leaks,
    provider_setup, sample_directory, user, wait_until,
)
from harness import RawSMTP, Reply, render_ini, run_mailkeep

SYNC_WAIT = 30          # seconds for a change in the directory to reach the server (interval 2 s)


@dataclass
class DirGateway:
    gw: BackupGateway
    fake: FakeDirectory
    setup: ProviderSetup

    @property
    def log(self) -> str:
        return self.gw.log()


@pytest.fixture
def dir_gateway(backup_gateway, upstreams, fake_directory):
    """Factory: dir_gateway(provider, users=None, groups=None, interval=2, presync=False) -> DirGateway.

    The fake holds sample_directory() unless users/groups are given; [backup] accounts lists only
    `decoy` (never read with a directory provider). presync: `mailkeep accounts sync` writes the
    cache before the server starts. At teardown: no secret in the server's log or the cache."""
    made: list[DirGateway] = []
    bases: list[Path] = []

    def start(provider: str, users: list[Entry] | None = None, groups: list[Entry] | None = None,
              interval: int = 2, presync: bool = False) -> DirGateway:
        base = public_tempdir("mailkeep-dir-mail-")
        bases.append(base)
        setup = provider_setup(fake_directory, provider, base, owner=(MAIL_UID, MAIL_GID), interval=interval)
        sample_users, sample_groups = sample_directory()
        fake_directory.set_directory(sample_users if users is None else users,
                                     sample_groups if groups is None else groups)
        if presync:
            ini = base / "presync.ini"
            ini.write_text(render_ini(directory_config(base, setup)))
            res = run_mailkeep("accounts", "sync", "-c", str(ini), timeout=120)
            assert res.returncode == 0, f"accounts sync: {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["decoy"],
                            user="mail", backup={"domains": ", ".join(DOMAINS)}, directory=setup.section)
        dg = DirGateway(gw, fake_directory, setup)
        made.append(dg)
        return dg

    yield start
    leaks = []
    for dg in made:
        dg.gw.mk.stop()       # before its directory goes (backup_gateway's teardown, later, prints the log)
        cache = Path(dg.setup.section["cache"])
        for where, text in (("the server's log", dg.log), ("the cache", cache.read_text() if cache.exists() else "")):
            leaks += [f"{label} in {where}" for label in find_leaks(text, fake_directory.secrets())]
    for base in bases:
        shutil.rmtree(base, ignore_errors=True)
    assert not leaks, leaks


# --------------------------------------------------------------------------- SMTP helpers

def rcpt(gw: BackupGateway, address: str) -> Reply:
    """A fresh session's reply to RCPT TO:<address> (from an outside client: inbound mail)."""
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo("mx.sender.test")
        assert c.cmd("MAIL FROM:<probe@sender.test>").code == 250
        r = c.cmd(f"RCPT TO:<{address}>")
        c.cmd("QUIT")
        return r


def wait_rcpt(gw: BackupGateway, address: str, code: int, timeout: float = SYNC_WAIT) -> Reply:
    """Polls until RCPT TO:<address> gets `code` (returns the last reply either way)."""
    last: list[Reply] = []

    def probe():
        last[:] = [rcpt(gw, address)]
        return last[0].code == code
    wait_until(probe, timeout=timeout, interval=0.2)
    return last[0]


def deliver(gw: BackupGateway, address: str, tag: str) -> Reply:
    """One inbound message to `address`; the reply to the end of DATA (RCPT must be 250)."""
    with RawSMTP(gw.host, gw.port, timeout=60) as c:
        c.ehlo("mx.sender.test")
        return c.send_message(f"{tag}@sender.test", [address], make_message(tag, to=address))


def archived(gw: BackupGateway, local: str, domain: str) -> list[Path]:
    return gw.delivered(local, domain=domain)


def assert_in_maildir(gw: BackupGateway, account: str, tag: str) -> None:
    local, domain = account.split("@")
    copies = [read_archived(p, inbox=True) for p in archived(gw, local, domain)]
    mine = [c for c in copies if f"Message-ID: <{tag}@client.test>".encode() in c.message]
    assert len(mine) == 1, f"{tag}: {len(mine)} copies in {account}'s Maildir"
    assert mine[0].delivered_to == account, f"{tag}: Delivered-To {mine[0].delivered_to}, expected {account}"


def assert_unknown(reply: Reply, address: str) -> None:
    assert (reply.code, reply.enhanced) == (550, "5.1.1"), f"{address}: {reply}"


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_directory_users_aliases_groups_and_removal(dir_gateway, provider):
    dg = dir_gateway(provider)
    gw = dg.gw
    assert wait_rcpt(gw, "alice@example.org", 250).code == 250, f"the first sync never came:\n{dg.log[-3000:]}"
    assert_unknown(rcpt(gw, "decoy@example.org"), "decoy@example.org ([backup] accounts is not read)")

    # a user added in the directory: unknown until the next sync, then archived
    assert_unknown(rcpt(gw, "nick@example.org"), "nick@example.org before it exists")
    dg.fake.add_user(user("nick@example.org", "nicholas@example.org"))
    assert wait_rcpt(gw, "nick@example.org", 250).code == 250, f"nick never accepted:\n{dg.log[-3000:]}"
    assert deliver(gw, "nick@example.org", "to-nick").code == 250
    assert_in_maildir(gw, "nick@example.org", "to-nick")
    assert " added=1 " in dg.log

    # aliases land in the account's Maildir; none gets one of its own
    for alias, account, tag in [
        ("sales@example.org", "alice@example.org", "to-sales"),          # google alias / smtp:
        ("alice@example.com", "alice@example.org", "to-alice-com"),      # nonEditableAlias, other backup domain
        ("dan@example.org", "dan@example.com", "to-dan-org"),            # an alias across the domains
        ("nicholas@example.org", "nick@example.org", "to-nicholas"),     # the new user's alias
        ("team@example.org", "team@example.org", "to-team"),             # a group is an account
        ("staff@example.org", "team@example.org", "to-staff"),           # ... with aliases
        ("team@example.com", "team@example.org", "to-team-com"),
    ]:
        assert deliver(gw, alias, tag).code == 250, alias
        assert_in_maildir(gw, account, tag)
    archive = gw.archive
    for alias_dir in ("example.org/sales", "example.com/alice", "example.org/dan", "example.org/nicholas",
                      "example.org/staff", "example.com/team"):
        assert not (archive / alias_dir).exists(), f"a Maildir was created for the alias {alias_dir}"
    assert_unknown(rcpt(gw, "alice.sip@example.org"), "alice.sip@example.org (a SIP: proxy is no mail address)")

    # a removed user: 550 after the next sync (1 of 13 accounts: not held), the Maildir stays
    assert deliver(gw, "bob@example.org", "to-bob").code == 250
    bob_files = archived(gw, "bob", "example.org")
    assert len(bob_files) == 1
    dg.fake.remove_users("bob@example.org")
    assert_unknown(wait_rcpt(gw, "bob@example.org", 550), "bob@example.org after the removal")
    assert_unknown(rcpt(gw, "robert@example.org"), "robert@example.org (the removed user's alias)")
    assert archived(gw, "bob", "example.org") == bob_files, "the removed user's Maildir changed"
    assert all(p.exists() for p in bob_files)
    assert rcpt(gw, "alice@example.org").code == 250
    assert " removed=1 " in dg.log


# Mostly waiting (backoff, TTLs, sync intervals): not repeated in the ASan pass, whose
# C++ paths the other tests of this file reach (conftest.py, release_only).
@pytest.mark.release_only
def test_mail_flows_through_failed_syncs(dir_gateway):
    dg = dir_gateway("google")
    gw, fake = dg.gw, dg.fake
    assert wait_rcpt(gw, "alice@example.org", 250).code == 250, dg.log[-3000:]

    fake.inject("server_error", where="users")                 # every users page: 500 (retried, then failed)
    assert fake.wait(lambda: fake.count("users", status=500) >= 2, timeout=SYNC_WAIT)
    assert deliver(gw, "alice@example.org", "during-retries").code == 250
    assert wait_until(lambda: "directory sync failed:" in gw.log(), timeout=60), gw.log()[-3000:]
    assert deliver(gw, "alice@example.org", "after-failure").code == 250
    assert rcpt(gw, "bob@example.org").code == 250, "the last good list was not kept"

    fake.clear_faults()
    fake.down()                                                # connection refused
    failures = gw.log().count("directory sync failed:")
    assert wait_until(lambda: gw.log().count("directory sync failed:") > failures, timeout=60), gw.log()[-3000:]
    assert deliver(gw, "alice@example.org", "directory-down").code == 250
    assert deliver(gw, "team@example.org", "directory-down-team").code == 250
    assert rcpt(gw, "judy@example.org").code == 250

    fake.up()
    fake.add_user(user("peggy@example.org"))
    assert wait_rcpt(gw, "peggy@example.org", 250, timeout=60).code == 250, "no recovery after the directory came back"
    for tag in ("during-retries", "after-failure", "directory-down"):
        assert_in_maildir(gw, "alice@example.org", tag)
    assert_in_maildir(gw, "team@example.org", "directory-down-team")
    assert "keeping the last good list (12 accounts)" in gw.log()


def test_cache_written_by_cli_force_is_picked_up(dir_gateway):
    """interval = 3600: the server does not sync again by itself; whatever it might sync at start is
    held (half the users gone); the change arrives only through `accounts sync --force`'s cache."""
    dg = dir_gateway("google", interval=3600, presync=True)
    gw, fake = dg.gw, dg.fake
    assert wait_rcpt(gw, "erin@example.org", 250, timeout=10).code == 250, "the presynced cache was not read at start"
    pid = gw.mk.pid
    gone = [u.email for u in fake.users[4:10]]                  # erin .. judy: 6 of 12
    fake.remove_users(*gone)
    fake.add_user(user("olga@example.org", "o.h@example.org"))
    config = str(gw.config_path)

    res = run_mailkeep("accounts", "sync", "-c", config, timeout=120)
    assert res.returncode == 3, f"exit {res.returncode}, expected 3 (held)\n{res.stdout}\n{res.stderr}"
    assert "--force" in res.stdout + res.stderr
    assert rcpt(gw, "erin@example.org").code == 250
    assert_unknown(rcpt(gw, "olga@example.org"), "olga@example.org before --force")

    res = run_mailkeep("accounts", "sync", "--force", "-c", config, timeout=120)
    assert res.returncode == 0, f"accounts sync --force: {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "+ olga@example.org" in res.stdout.splitlines()
    assert wait_rcpt(gw, "olga@example.org", 250, timeout=15).code == 250, \
        f"the server did not pick up the cache written beside it:\n{gw.log()[-3000:]}"
    assert rcpt(gw, "o.h@example.org").code == 250
    for address in gone:
        assert_unknown(rcpt(gw, address), address)
    assert gw.mk.pid == pid and gw.mk.proc.poll() is None, "the server restarted or died"
    assert deliver(gw, "o.h@example.org", "to-olga-alias").code == 250
    assert_in_maildir(gw, "olga@example.org", "to-olga-alias")
    assert not (gw.archive / "example.org" / "o.h").exists()


def test_server_holds_a_sync_removing_half(dir_gateway):
    dg = dir_gateway("microsoft")
    gw, fake = dg.gw, dg.fake
    assert wait_rcpt(gw, "alice@example.org", 250).code == 250, dg.log[-3000:]
    gone = [u.email for u in fake.users[:6]]
    fake.remove_users(*gone)
    assert wait_until(lambda: "directory sync held:" in gw.log(), timeout=SYNC_WAIT), gw.log()[-3000:]
    held = [line for line in gw.log().splitlines() if "directory sync held:" in line]
    assert "mailkeep accounts sync --force" in held[0], held[0]
    assert rcpt(gw, "alice@example.org").code == 250, "a held sync changed the list"
    assert deliver(gw, "bob@example.org", "while-held").code == 250
    assert_in_maildir(gw, "bob@example.org", "while-held")

    res = run_mailkeep("accounts", "sync", "--force", "-c", str(gw.config_path), timeout=120)
    assert res.returncode == 0, f"accounts sync --force: {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert_unknown(wait_rcpt(gw, "alice@example.org", 550, timeout=15), "alice@example.org after --force")
    assert rcpt(gw, "grace@example.org").code == 250
    assert (gw.archive / "example.org" / "bob").is_dir(), "a removed account's Maildir went away"
