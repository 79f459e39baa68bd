"""What an archive copy looks like on disk, `mailkeep archive stats`, and the privilege drop."""

from __future__ import annotations

import os
import re
from pathlib import Path

from backup_support import (  # noqa: F401,F811  (pytest fixtures)
    DOMAIN, MAIL_GID, MAIL_UID, OUTBOUND_IP, backup_gateway, check_maildir_name, make_message,
    read_archived, upstreams,
)
from harness import WELLFORMED_RECEIVED, RawSMTP, split_received


def send(gw, sender: str, rcpts: list[str], msg: bytes, outbound: bool = False) -> None:
    with RawSMTP(gw.host, gw.port, source_address=(OUTBOUND_IP, 0) if outbound else None) as c:
        c.ehlo()
        r = c.send_message(sender, rcpts, msg)
        assert r.code == 250, str(r)


def test_inbox_copy_layout(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"])
    msg = make_message("layout", body=b"..leading dot\r\n.\r\nlast line without much\r\n")
    send(gw, "sender@sender.test", ["ALICE@example.org"], msg)
    [f] = gw.files("alice")
    check_maildir_name(f)
    data = f.read_bytes()
    [up] = upstreams.inbound.wait_for(1)
    received, rest = split_received(up.data)
    assert rest == msg
    # Return-Path, Delivered-To (canonical, lower-case), the same Received as upstream, the bytes as sent
    assert data == (b"Return-Path: <sender@sender.test>\r\n"
                    b"Delivered-To: alice@example.org\r\n" + received + msg)
    assert WELLFORMED_RECEIVED.match(received) and b"\r\n\t" in received, received
    assert b"by mx.test.example (mailkeep)" in received
    assert f.name.endswith(f",S={len(data)}")
    assert gw.files("alice", sub="tmp") == []
    assert all((gw.folder("alice") / sub).is_dir() for sub in ("cur", "new", "tmp"))


def test_sent_copy_layout_and_null_sender(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"])
    msg = make_message("sent-layout", sender="alice@example.org")
    send(gw, "Alice@Example.org", ["friend@remote.test"], msg, outbound=True)
    [f] = gw.files("alice", "Sent")
    check_maildir_name(f)
    [up] = upstreams.outbound.wait_for(1)
    received, _ = split_received(up.data)
    assert f.read_bytes() == b"Return-Path: <Alice@Example.org>\r\n" + received + msg
    assert (gw.folder("alice", "Sent") / "maildirfolder").is_file()

    bounce = make_message("bounce", sender="MAILER-DAEMON@sender.test")
    send(gw, "", ["alice@example.org"], bounce)
    [copy] = [read_archived(p, inbox=True) for p in gw.files("alice")]
    assert copy.return_path == "" and copy.message == bounce


def expected_stats(archive: Path) -> list[tuple[str, str, int, int]]:
    """Computed independently: every <domain>/<user> Maildir and its .Folders; new/ + cur/ only."""
    rows = []
    for domain in sorted(p for p in archive.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for user in sorted(p for p in domain.iterdir() if p.is_dir()):
            folders = [("INBOX", user)] + [(p.name[1:], p) for p in user.iterdir()
                                           if p.is_dir() and p.name.startswith(".")]
            for name, path in folders:
                files = [f for sub in ("new", "cur") for f in (path / sub).iterdir() if f.is_file()]
                rows.append((f"{domain.name}/{user.name}", name, len(files), sum(f.stat().st_size for f in files)))
    rows.sort()
    rows.append(("# total", "", sum(r[2] for r in rows), sum(r[3] for r in rows)))
    return rows


def test_archive_stats_match_the_files(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address,
                        users=["alice", "bob", "carol"])
    assert gw.stats() == [("# total", "", 0, 0)]
    for i in range(3):
        send(gw, f"s{i}@sender.test", ["alice@example.org"], make_message(f"a{i}", body=b"x" * (100 * i) + b"\r\n"))
    send(gw, "s@sender.test", ["bob@example.org", "alice@example.org"], make_message("b0"))
    for i in range(2):
        send(gw, "alice@example.org", ["x@remote.test"], make_message(f"sent{i}"), outbound=True)
    # a message an IMAP client has seen (moved to cur/) still counts; a stray tmp/ file does not
    first = gw.files("alice")[0]
    first.rename(gw.folder("alice") / "cur" / (first.name + ":2,S"))
    (gw.folder("bob") / "tmp" / "1.M1P1Q1.stray,S=3").write_bytes(b"abc")

    stats = gw.stats()
    assert stats == expected_stats(gw.archive)
    counts = {(u, f): n for u, f, n, _ in stats}
    assert counts == {(f"{DOMAIN}/alice", "INBOX"): 4, (f"{DOMAIN}/alice", "Sent"): 2,
                      (f"{DOMAIN}/bob", "INBOX"): 1, ("# total", ""): 7}
    sizes = {(u, f): b for u, f, _, b in stats}
    assert sizes[(f"{DOMAIN}/alice", "Sent")] == sum(p.stat().st_size for p in gw.files("alice", "Sent"))


def test_privilege_drop_to_mail(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"],
                        user="mail")
    status = Path(f"/proc/{gw.mk.pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M).groups()
    gids = re.search(r"^Gid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M).groups()
    groups = re.search(r"^Groups:(.*)$", status, re.M).group(1).split()
    assert [int(u) for u in uids[:3]] == [MAIL_UID] * 3, f"real/effective/saved uid: {uids}"
    assert [int(g) for g in gids[:3]] == [MAIL_GID] * 3, f"real/effective/saved gid: {gids}"
    assert set(groups) <= {str(MAIL_GID)}, f"supplementary groups kept: {groups}"
    # the workers too
    for task in Path(f"/proc/{gw.mk.pid}/task").iterdir():
        line = re.search(r"^Uid:(.*)$", (task / "status").read_text(), re.M).group(1).split()
        assert line[:3] == [str(MAIL_UID)] * 3, f"thread {task.name}: Uid {line}"

    send(gw, "s@sender.test", ["alice@example.org"], make_message("owned"))
    send(gw, "alice@example.org", ["x@remote.test"], make_message("owned-sent"), outbound=True)
    owners = {}
    for dirpath, dirnames, filenames in os.walk(gw.archive):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            owners[os.path.relpath(p, gw.archive)] = os.lstat(p).st_uid
    assert owners, "nothing archived"
    assert {p: u for p, u in owners.items() if u != MAIL_UID} == {}
    assert len(gw.files("alice")) == 1 and len(gw.files("alice", "Sent")) == 1
    assert "running as user mail (uid 8" in gw.log()
