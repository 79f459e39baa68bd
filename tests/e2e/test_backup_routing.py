"""Backup routing: who is archived where, who is refused, and one upstream per transaction."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from backup_support import (  # noqa: F401,F811  (pytest fixtures)
    DOMAIN, RELAY_DOMAIN, backup_gateway, make_message, read_archived, tree, upstreams,
)
from harness import RawSMTP, dot_stuff

ESCAPE_NAME = f"mailkeep-escape-{uuid.uuid4().hex[:8]}"

# Syntactically valid local parts that must never name a folder.
HOSTILE = [
    '"../../etc"',
    '"../alice"',
    '"alice/../bob"',
    '".hidden"',
    '".."',
    '"."',
    '"a/b"',
    '"a\\/b"',                     # quoted-pair: unquotes to a/b
    f'"../../../../../../../../tmp/{ESCAPE_NAME}"',
    '"alice "',                    # a listed name plus a space
    "x" * 100,
    "x" * 64,                      # not listed (64 is the longest valid account name)
    "mallory",
]
# Control characters. The brief asks for 550 5.1.1 like every other unknown user; RFC 5321's
# grammar makes them a syntax error (mailkeep answers 501 5.1.3). NUL is left out: it makes the
# whole command invalid (500 5.5.2, covered by the smuggling tests).
CONTROL = ['"a\x01b"', "a\x01b", '"a\x7fb"', '"a\x1bb"']


def rcpt(c: RawSMTP, address: str):
    return c.cmd(b"RCPT TO:<" + address.encode("latin-1") + b">")


def test_unlisted_and_hostile_local_parts_refused_nothing_created(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice", "bob"])
    before = tree(gw.base)
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@sender.test>").code == 250
        refused = {}
        for local in HOSTILE:
            r = rcpt(c, f"{local}@{DOMAIN}")
            if (r.code, r.enhanced) != (550, "5.1.1"):
                refused[local] = str(r)
        assert rcpt(c, f"alice@{DOMAIN}").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message("hostile")) + b".\r\n")
        assert c.reply().code == 250
        assert c.cmd("QUIT").code == 221
    assert refused == {}, f"expected 550 5.1.1 for every unknown/hostile local part, got: {refused}"

    # Only alice's Maildir appeared, and only inside the archive; and alice's index (the server
    # indexes each copy: <[index] path>/<domain>/<localpart>/, the same validated name).
    created = tree(gw.base) - before
    index_dir = "mailkeep/data/index/"
    outside = {p for p in created if not p.startswith("archive/example.org/alice/")
               and p not in ("archive/", "archive/example.org/")
               and not p.startswith(index_dir + "example.org/alice/")
               and p not in (index_dir, index_dir + "example.org/")}
    assert outside == set(), f"paths created outside alice's Maildir: {sorted(outside)}"
    assert not Path("/tmp", ESCAPE_NAME).exists()
    assert sorted(p.name for p in (gw.archive / DOMAIN).iterdir()) == ["alice"]
    assert len(gw.files("alice")) == 1
    # The refused recipients never reached the upstream.
    assert upstreams.inbound.rcpt_log == [f"alice@{DOMAIN}"]
    assert upstreams.outbound.rcpt_log == []


@pytest.mark.parametrize("local", CONTROL, ids=repr)
def test_control_characters_in_local_part_refused(backup_gateway, upstreams, local):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"])
    before = tree(gw.base)
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@sender.test>").code == 250
        r = rcpt(c, f"{local}@{DOMAIN}")
        # Control characters are outside RFC 5321's local-part grammar: a syntax error (501 5.1.3)
        # before any lookup, so they can never reach the file system.
        assert (r.code, r.enhanced) == (501, "5.1.3"), f"RCPT TO:<{local!r}@{DOMAIN}> answered {r}"
    assert tree(gw.base) - before == set()
    assert upstreams.inbound.rcpt_log == []


def test_case_variants_land_in_the_same_folder(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["Alice", "bob"])
    variants = ["ALICE@EXAMPLE.ORG", "Alice@Example.Org", "alice@example.org", '"alice"@example.org',
                '"al\\ice"@example.org']
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        for i, address in enumerate(variants):
            assert c.cmd(f"MAIL FROM:<v{i}@sender.test>").code == 250
            r = rcpt(c, address)
            assert r.code == 250, f"{address}: {r}"
            assert c.cmd("DATA").code == 354
            c.send(dot_stuff(make_message(f"case-{i}")) + b".\r\n")
            assert c.reply().code == 250
    assert sorted(p.name for p in (gw.archive / DOMAIN).iterdir()) == ["alice"]
    copies = [read_archived(f, inbox=True) for f in gw.files("alice")]
    assert sorted(c.return_path for c in copies) == [f"v{i}@sender.test" for i in range(len(variants))]
    assert {c.delivered_to for c in copies} == {f"alice@{DOMAIN}"}


def test_mixed_upstreams_in_one_transaction_get_452(backup_gateway, upstreams):
    """[backup] upstream != [delivery] smarthost: the second kind of recipient waits for the next transaction."""
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"])
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        # backup recipient first, relay recipient second
        assert c.cmd("MAIL FROM:<m1@sender.test>").code == 250
        assert rcpt(c, f"alice@{DOMAIN}").code == 250
        r = rcpt(c, f"user@{RELAY_DOMAIN}")
        assert (r.code, r.enhanced) == (452, "4.5.3"), str(r)
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message("mixed-1")) + b".\r\n")
        assert c.reply().code == 250
        # relay recipient first, backup recipient second
        assert c.cmd("MAIL FROM:<m2@sender.test>").code == 250
        assert rcpt(c, f"user@{RELAY_DOMAIN}").code == 250
        r = rcpt(c, f"alice@{DOMAIN}")
        assert (r.code, r.enhanced) == (452, "4.5.3"), str(r)
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message("mixed-2")) + b".\r\n")
        assert c.reply().code == 250
    inbound = upstreams.inbound.wait_for(1)
    outbound = upstreams.outbound.wait_for(1)
    assert [(m.mail_from, m.rcpt_tos) for m in inbound] == [("m1@sender.test", [f"alice@{DOMAIN}"])]
    assert [(m.mail_from, m.rcpt_tos) for m in outbound] == [("m2@sender.test", [f"user@{RELAY_DOMAIN}"])]
    # only the backup transaction was archived
    assert [read_archived(f, inbox=True).return_path for f in gw.files("alice")] == ["m1@sender.test"]
    assert "archived=1" in gw.log() and "archived=0" in gw.log()


def test_same_upstream_mixed_recipients_share_a_transaction(backup_gateway, upstreams):
    """With no [backup] upstream the smarthost serves both: no 452, one message, one archive copy."""
    gw = backup_gateway(upstreams.outbound.address, users=["alice", "bob"])
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        r = c.send_message("both@sender.test", [f"alice@{DOMAIN}", f"user@{RELAY_DOMAIN}", f"BOB@{DOMAIN}"],
                           make_message("shared"))
        assert r.code == 250, str(r)
    [m] = upstreams.outbound.wait_for(1)
    assert sorted(m.rcpt_tos) == sorted([f"alice@{DOMAIN}", f"user@{RELAY_DOMAIN}", f"BOB@{DOMAIN}"])
    assert [read_archived(f, inbox=True).delivered_to for f in gw.files("alice")] == [f"alice@{DOMAIN}"]
    assert [read_archived(f, inbox=True).delivered_to for f in gw.files("bob")] == [f"bob@{DOMAIN}"]
    assert "archived=2" in gw.log()


@pytest.mark.parametrize("sender,sent_copy", [
    (f"alice@{DOMAIN}", True),
    (f"ALICE@{DOMAIN.upper()}", True),
    (f"mallory@{DOMAIN}", False),      # not listed: relayed, not archived
    ("someone@other.test", False),
])
def test_outbound_from_provider_relay(backup_gateway, upstreams, sender, sent_copy):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"])
    msg = make_message("outbound", sender=sender, to="friend@remote.test")
    with RawSMTP(gw.host, gw.port, source_address=("127.0.0.7", 0)) as c:
        c.ehlo()
        assert c.send_message(sender, ["friend@remote.test", f"bob@{DOMAIN}"], msg).code == 250
    [m] = upstreams.outbound.wait_for(1)
    assert m.mail_from == sender and m.rcpt_tos == ["friend@remote.test", f"bob@{DOMAIN}"]
    assert upstreams.inbound.messages == []
    sent = gw.files("alice", "Sent")
    assert len(sent) == (1 if sent_copy else 0)
    if sent_copy:
        copy = read_archived(sent[0], inbox=False)
        assert copy.return_path == sender and copy.message == msg
        assert (gw.folder("alice", "Sent") / "maildirfolder").is_file()
    # outbound mail to an in-domain address is not an inbound archive copy
    assert gw.files("alice") == [] and gw.files("bob") == []


def test_outbound_needs_provider_address(backup_gateway, upstreams):
    """From 127.0.0.1 (not [backup] relay_from) a listed sender may not relay to other domains."""
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"])
    with RawSMTP(gw.host, gw.port) as c:
        c.ehlo()
        assert c.cmd(f"MAIL FROM:<alice@{DOMAIN}>").code == 250
        r = rcpt(c, "friend@remote.test")
        assert (r.code, r.enhanced) == (550, "5.7.1"), str(r)
    assert not gw.folder("alice", "Sent").exists()
