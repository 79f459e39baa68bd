"""Directory sync with several gateways on one PostgreSQL ([store] url): two gateways (each its own
[directory] cache, as on two machines) against the fake provider API (directory_support.py) and a
throwaway PostgreSQL 15:

- one gateway syncs for all, elected by an advisory lock; only it asks the provider; the other gets
  the list through PostgreSQL (NOTIFY) and serves the same accounts;
- a change in the directory reaches the other gateway within a second of the leader's sync;
- kill -9 of the leader: the other takes over (the server dropped the lock with the connection)
  and syncs on;
- `mailkeep accounts sync` by hand publishes its list to every gateway too.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from directory_support import (  # noqa: F401  (pytest fixtures)
    directory_pki, fake_directory, parse_accounts_text, user, wait_until,
)
from postgres_support import pg_bin
from test_directory_sync import SUMMARY_RE, assert_ok, make_site  # noqa: F401  (make_site is a fixture)
from test_store_postgres import fresh_db, postgres  # noqa: F401  (fixtures)
from harness import free_port

pytestmark = [pytest.mark.skipif(pg_bin() is None and os.environ.get("MAILKEEP_REQUIRE_BINARY") != "1",
                                 reason="PostgreSQL 15 not installed"),
              pytest.mark.release_only]  # the election and the listener run under ASan in test_store_postgres.py (filters, passwd)


def syncs(mk) -> int:
    return len(SUMMARY_RE.findall(mk.log()))


def test_one_gateway_syncs_for_all_and_a_killed_leader_is_replaced(make_site, fresh_db):  # noqa: F811
    site = make_site("google")
    expected = site.fake.expected("google")
    gws = []
    for host in ("127.0.0.2", "127.0.0.3"):
        cache = site.d / f"cache-{host}.txt"
        gws.append((site.serve(store={"url": fresh_db.url}, directory={"cache": str(cache)},
                               smtp={"listen": f"{host}:{free_port(host)}"},
                               http={"listen": f"127.0.0.1:{free_port()}"}), cache))

    def cached(cache) -> dict:
        return parse_accounts_text(cache.read_text()) if cache.exists() else {}

    assert wait_until(lambda: all(cached(c) == expected for _, c in gws), timeout=15), \
        [mk.log()[-2000:] for mk, _ in gws]
    leaders = [mk for mk, _ in gws if "directory sync: this gateway leads now" in mk.log()]
    assert len(leaders) == 1, [mk.log()[-1500:] for mk, _ in gws]
    leader = leaders[0]
    (follower, follower_cache), = [(mk, c) for mk, c in gws if mk is not leader]
    time.sleep(4.5)  # two more rounds of the 2 s interval
    assert syncs(leader) >= 2 and syncs(follower) == 0, (syncs(leader), syncs(follower))
    assert site.fake.token_requests("google") == 1, "only the leader talks to the provider"
    assert "accounts: the shared list loaded" in follower.log()

    # A new user: on the follower within a second of the leader's sync.
    users = list(site.fake.users) + [user("newcomer@example.org")]
    site.fake.set_directory(users, list(site.fake.groups))
    assert wait_until(lambda: "newcomer@example.org" in cached(follower_cache), timeout=6), follower.log()[-2000:]

    # kill -9 of the leader: its lock goes with its connection; the follower leads and syncs.
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait(10)
    before = syncs(follower)
    assert wait_until(lambda: syncs(follower) > before, timeout=15), follower.log()[-3000:]
    assert "directory sync: this gateway leads now" in follower.log()
    assert cached(follower_cache) == site.fake.expected("google")


def test_accounts_sync_by_hand_reaches_every_gateway(make_site, fresh_db):  # noqa: F811
    site = make_site("google")
    cache = site.d / "cache-gw.txt"
    mk = site.serve(store={"url": fresh_db.url}, directory={"cache": str(cache), "interval": 3600},
                    smtp={"listen": f"127.0.0.2:{free_port('127.0.0.2')}"}, http={"listen": f"127.0.0.1:{free_port()}"})
    assert wait_until(lambda: cache.exists(), timeout=15), mk.log()[-2000:]
    users = list(site.fake.users) + [user("byhand@example.org")]
    site.fake.set_directory(users, list(site.fake.groups))
    site.write(store={"url": fresh_db.url})  # the CLI's own cache is [directory] cache of site's config
    assert_ok(site.sync())
    assert wait_until(lambda: "byhand@example.org" in parse_accounts_text(cache.read_text()), timeout=3), \
        mk.log()[-2000:]
