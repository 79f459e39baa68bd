"""The accounts file is re-read every reload_interval seconds without a restart; a broken file
is refused as a whole (the last good list stays) and logged; open sessions keep working."""

from __future__ import annotations

import time

from backup_support import (  # noqa: F401,F811  (pytest fixtures)
    DOMAIN, backup_gateway, make_message, upstreams, write_accounts,
)
from harness import RawSMTP, dot_stuff

RELOAD_INTERVAL = 1
SETTLE = RELOAD_INTERVAL + 1


def rcpt_code(c: RawSMTP, local: str) -> int:
    """One transaction probing a recipient (RSET afterwards)."""
    assert c.cmd("MAIL FROM:<probe@sender.test>").code == 250
    r = c.cmd(f"RCPT TO:<{local}@{DOMAIN}>")
    assert c.cmd("RSET").code == 250
    return r.code


def deliver(c: RawSMTP, local: str, tag: str) -> int:
    assert c.cmd(f"MAIL FROM:<{tag}@sender.test>").code == 250
    r = c.cmd(f"RCPT TO:<{local}@{DOMAIN}>")
    if r.code != 250:
        assert c.cmd("RSET").code == 250
        return r.code
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(make_message(tag)) + b".\r\n")
    return c.reply().code


def fresh_code(gw, local: str) -> int:
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        return rcpt_code(c, local)


def test_accounts_reload_without_restart(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"],
                        backup={"reload_interval": RELOAD_INTERVAL})
    pid = gw.mk.pid
    with RawSMTP(gw.host, gw.port, timeout=30) as session:  # stays open through every reload
        session.ehlo()
        assert deliver(session, "carol", "before") == 550

        # add carol (write + rename)
        write_accounts(gw.accounts, ["# the backup users", "alice", "Carol   # mixed case, trailing comment"])
        time.sleep(SETTLE)
        assert deliver(session, "carol", "added") == 250, "carol not accepted in the open session"
        assert fresh_code(gw, "carol") == 250
        assert deliver(session, "alice", "still-alice") == 250
        assert len(gw.files("carol")) == 1

        # a broken file: nothing of it is taken, the last good list stays
        write_accounts(gw.accounts, ["alice", "dave", "bad/name", "carol"])
        time.sleep(SETTLE)
        assert f"accounts file broken: {gw.accounts}:3:" in gw.log(), gw.log()[-2000:]
        assert deliver(session, "dave", "broken-dave") == 550, "a name from a broken file was accepted"
        assert deliver(session, "carol", "broken-carol") == 250, "the last good list was not kept"
        assert fresh_code(gw, "alice") == 250

        # other kinds of broken lines
        for bad in (".hidden", "x" * 65, "a b", "caf\u00e9", "../etc"):
            write_accounts(gw.accounts, ["alice", bad])
            time.sleep(SETTLE)
            assert fresh_code(gw, "carol") == 250, f"line {bad!r} should have broken the file"
        assert gw.log().count("accounts file broken") >= 6

        # fixed again, carol removed: takes effect for the open session too
        write_accounts(gw.accounts, ["alice", "dave"])
        time.sleep(SETTLE)
        assert deliver(session, "carol", "removed") == 550
        assert deliver(session, "dave", "dave") == 250
        assert session.cmd("QUIT").code == 221

    assert gw.mk.pid == pid and gw.mk.proc.poll() is None, "mailkeep restarted or died"
    assert [len(gw.files(u)) for u in ("alice", "carol", "dave")] == [1, 2, 1]


def test_accounts_file_rewritten_in_place(backup_gateway, upstreams):
    """An editor that rewrites the file in place (same inode) is noticed too."""
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"],
                        backup={"reload_interval": RELOAD_INTERVAL})
    assert fresh_code(gw, "erin") == 550
    with open(gw.accounts, "a") as f:
        f.write("erin\n")
    time.sleep(SETTLE)
    assert fresh_code(gw, "erin") == 250


def test_accounts_file_missing_keeps_list(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"],
                        backup={"reload_interval": RELOAD_INTERVAL})
    gw.accounts.unlink()
    time.sleep(SETTLE)
    assert fresh_code(gw, "alice") == 250
    write_accounts(gw.accounts, ["bob"])
    time.sleep(SETTLE)
    assert fresh_code(gw, "bob") == 250
    assert fresh_code(gw, "alice") == 550
