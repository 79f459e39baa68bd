"""Failures around the archive copy.

Acknowledgement order: archive copy fsynced in tmp/ -> upstream 250 -> rename into new/ ->
250 to the client. So an archive failure means 451 4.3.0 and nothing upstream; an upstream
failure means its reply passed through and no archive copy anywhere (new/ or tmp/)."""

from __future__ import annotations

import os

import pytest

from backup_support import (  # noqa: F401,F811  (pytest fixtures)
    DOMAIN, OUTBOUND_IP, Tmpfs, backup_gateway, make_message, upstreams,
)
from harness import RawSMTP, ScriptedUpstream, dot_stuff

ALICE = f"alice@{DOMAIN}"


def send(gw, sender: str, rcpts: list[str], msg: bytes, outbound: bool = False):
    with RawSMTP(gw.host, gw.port, source_address=(OUTBOUND_IP, 0) if outbound else None) as c:
        c.ehlo()
        return c.send_message(sender, rcpts, msg)


def data_attempts(capture) -> int:
    with capture.handler.cond:
        return capture.handler.data_attempts


def no_copies(gw, user: str = "alice", folder: str = "INBOX") -> None:
    for sub in ("new", "cur", "tmp"):
        assert gw.files(user, folder, sub) == [], f"{user}/{folder}/{sub} should be empty"


# --------------------------------------------------------------------------- archive failures

@pytest.fixture
def small_archive():
    """A 256 KiB tmpfs as the archive (root only); unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts: list[Tmpfs] = []

    def mount(path) -> Tmpfs:
        fs = Tmpfs(path, size="256k")
        mounts.append(fs)
        return fs

    yield mount
    for fs in mounts:
        fs.close()


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_disk_full_answers_4xx_and_relays_nothing(backup_gateway, upstreams, small_archive, tmp_path, direction):
    archive = tmp_path / "archive"
    fs = small_archive(archive)
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"],
                        archive=archive)
    outbound = direction == "outbound"
    upstream = upstreams.outbound if outbound else upstreams.inbound
    folder = "Sent" if outbound else "INBOX"
    rcpt = "friend@remote.test" if outbound else ALICE
    sender = ALICE if outbound else "someone@sender.test"

    # One message while there is room creates the folders.
    assert send(gw, sender, [rcpt], make_message("fits"), outbound).code == 250
    assert len(gw.files("alice", folder)) == 1
    attempts = data_attempts(upstream)

    filler = fs.fill()
    r = send(gw, sender, [rcpt], make_message("disk-full", body=b"x" * 8000 + b"\r\n"), outbound)
    assert (r.code, r.enhanced) == (451, "4.3.0"), str(r)
    assert data_attempts(upstream) == attempts, "the message went upstream without its archive copy"
    assert len(upstream.messages) == 1
    assert len(gw.files("alice", folder)) == 1
    assert gw.files("alice", folder, "tmp") == [], "a partial copy was left in tmp/"
    assert "archive copy failed" in gw.log()

    # Room again: the client's retry goes through.
    filler.unlink()
    r = send(gw, sender, [rcpt], make_message("disk-full", body=b"x" * 8000 + b"\r\n"), outbound)
    assert r.code == 250, str(r)
    assert len(upstream.wait_for(2)) == 2
    assert len(gw.files("alice", folder)) == 2


def test_unwritable_maildir_answers_4xx_and_relays_nothing(backup_gateway, upstreams):
    """Permissions: mailkeep runs as `mail`; alice's tmp/ is made read-only."""
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice", "bob"],
                        user="mail")
    assert send(gw, "s@sender.test", [ALICE], make_message("first")).code == 250
    tmp = gw.folder("alice") / "tmp"
    tmp.chmod(0o500)
    try:
        r = send(gw, "s@sender.test", [f"bob@{DOMAIN}", ALICE], make_message("denied"))
        assert (r.code, r.enhanced) == (451, "4.3.0"), str(r)
    finally:
        tmp.chmod(0o700)
    assert len(upstreams.inbound.messages) == 1
    assert data_attempts(upstreams.inbound) == 1
    # all or nothing: bob's copy (written before alice's failed) is gone too
    assert gw.files("bob") == [] and gw.files("bob", sub="tmp") == []
    assert len(gw.files("alice")) == 1
    assert "archive copy failed" in gw.log()


# --------------------------------------------------------------------------- upstream failures

@pytest.mark.parametrize("reply", ["451 4.7.1 greylisted, try again later", "452 4.3.1 insufficient storage",
                                   "554 5.7.1 message refused", "552 5.3.4 message too big for me"])
@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_upstream_refusal_at_end_of_data_passed_through(backup_gateway, upstreams, reply, direction):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"])
    outbound = direction == "outbound"
    upstream = upstreams.outbound if outbound else upstreams.inbound
    upstream.set_data_reply(reply)
    if outbound:
        r = send(gw, ALICE, ["friend@remote.test"], make_message("refused"), outbound=True)
    else:
        r = send(gw, "s@sender.test", [ALICE], make_message("refused"))
    code, enhanced = int(reply[:3]), reply.split()[1]
    assert r.code == code, f"upstream said {reply!r}, client got {r}"
    assert r.enhanced == enhanced, f"upstream said {reply!r}, client got {r}"
    assert data_attempts(upstream) == 1
    no_copies(gw, "alice", "Sent" if outbound else "INBOX")
    # and the next message, accepted upstream, is archived normally
    upstream.set_data_reply(None)
    if outbound:
        assert send(gw, ALICE, ["friend@remote.test"], make_message("ok"), outbound=True).code == 250
        assert len(gw.files("alice", "Sent")) == 1
    else:
        assert send(gw, "s@sender.test", [ALICE], make_message("ok")).code == 250
        assert len(gw.files("alice")) == 1


def test_upstream_refuses_recipient(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice", "bob"])
    upstreams.inbound.reject_rcpt(f"bob@{DOMAIN}", "550 5.1.1 <{addr}>: mailbox disabled")
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@sender.test>").code == 250
        r = c.cmd(f"RCPT TO:<bob@{DOMAIN}>")
        assert (r.code, r.enhanced) == (550, "5.1.1"), str(r)
        assert c.cmd(f"RCPT TO:<{ALICE}>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message("partly")) + b".\r\n")
        assert c.reply().code == 250
    assert [m.rcpt_tos for m in upstreams.inbound.wait_for(1)] == [[ALICE]]
    assert len(gw.files("alice")) == 1
    assert not gw.folder("bob").exists() or gw.files("bob") == []


def test_upstream_unreachable(backup_gateway, upstreams):
    broken = ScriptedUpstream().start()
    try:
        gw = backup_gateway(upstreams.outbound.address, upstream=broken.address, users=["alice"])
        with RawSMTP(gw.host, gw.port) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<s@sender.test>").code == 250
            r = c.cmd(f"RCPT TO:<{ALICE}>")
            assert 400 <= r.code < 500, str(r)
    finally:
        broken.stop()
    no_copies(gw)
