"""Mail backup end to end with real mail and a real IMAP server.

A few hundred SpamAssassin corpus messages go inbound (to four listed users, some in one
transaction to two of them, some with the local part in upper case) and outbound (from two
listed users, via the provider's relay address 127.0.0.7). mailkeep runs as `mail` (uid 8);
a private Dovecot then serves the archive, and every user's INBOX and Sent must hold every
message exactly once, byte for byte, behind the prepended Return-Path/Delivered-To/Received.
"""

from __future__ import annotations

import imaplib
import os
from collections import Counter, defaultdict

import pytest

from backup_support import (  # noqa: F401,F811  (pytest fixtures)
    DOMAIN, MAIL_UID, Dovecot, backup_gateway, check_maildir_name, imap_folder, inbound_smtp, mail_options,
    message_id, outbound_smtp, parse_archived, read_archived, upstreams,
)
from harness import corpus_available, corpus_messages

INBOX_USERS = ["alice", "bob", "carol", "dave"]
SENT_USERS = ["alice", "bob"]
N_INBOUND = 260
N_OUTBOUND = 140


@pytest.fixture(scope="module")
def corpus_sample() -> list[tuple[str, bytes]]:
    if not corpus_available():
        pytest.skip("SpamAssassin corpus missing: run tests/data/fetch.sh first")
    sample = corpus_messages(N_INBOUND + N_OUTBOUND, extra_long_lines=False)
    assert len(sample) >= N_INBOUND + N_OUTBOUND
    return sample


def send_inbound(gw, sample):
    """Returns {user: [(return_path, message), ...]} as the archive must hold them."""
    expected = defaultdict(list)
    s = inbound_smtp(gw)
    try:
        for i, (name, msg) in enumerate(sample):
            users = [INBOX_USERS[i % 4]]
            if i % 10 == 0:
                users.append(INBOX_USERS[(i + 1) % 4])      # two archived recipients, one transaction
            rcpts = [(u.upper() if i % 7 == 0 else u) + "@" + DOMAIN for u in users]
            sender = f"s{i}@sender.test"
            refused = s.sendmail(sender, rcpts, msg, mail_options=mail_options(msg))
            assert refused == {}, (name, refused)
            for u in users:
                expected[u].append((sender, msg))
    finally:
        s.quit()
    return expected


def send_outbound(gw, sample):
    """Returns {user: [(return_path, message), ...]} for the Sent folders."""
    expected = defaultdict(list)
    s = outbound_smtp(gw)
    try:
        for j, (name, msg) in enumerate(sample):
            user = SENT_USERS[j % 2]
            rcpts = [f"r{j}@remote.test"] + ([f"x{j}@elsewhere.test"] if j % 5 == 0 else [])
            refused = s.sendmail(f"{user}@{DOMAIN}", rcpts, msg, mail_options=mail_options(msg))
            assert refused == {}, (name, refused)
            expected[user].append((f"{user}@{DOMAIN}", msg))
    finally:
        s.quit()
    return expected


def send_inbound_to(gw, batch, user):
    """Each message to one user, in one session; returns [(return_path, message), ...]."""
    s = inbound_smtp(gw)
    try:
        for i, (name, msg) in enumerate(batch):
            assert s.sendmail(f"d{i}@sender.test", [f"{user}@{DOMAIN}"], msg, mail_options=mail_options(msg)) == {}
    finally:
        s.quit()
    return [(f"d{i}@sender.test", msg) for i, (_, msg) in enumerate(batch)]


def assert_same_messages(where: str, got: list[tuple[str, str | None, bytes]],
                         expected: list[tuple[str, str | None, bytes]]) -> None:
    """Multisets of (return_path, delivered_to, message bytes) must be equal."""
    got_c, exp_c = Counter(got), Counter(expected)
    if got_c == exp_c:
        return
    missing = exp_c - got_c
    extra = got_c - exp_c
    describe = lambda c: [(rp, dt, message_id(m), len(m), n) for (rp, dt, m), n in list(c.items())[:5]]
    raise AssertionError(f"{where}: {len(got)} messages, expected {len(expected)}; "
                         f"missing {sum(missing.values())} e.g. {describe(missing)}; "
                         f"unexpected {sum(extra.values())} e.g. {describe(extra)}")


def test_corpus_inbound_and_sent_readable_over_imap(backup_gateway, upstreams, corpus_sample):
    inbound, outbound = corpus_sample[:N_INBOUND], corpus_sample[N_INBOUND:N_INBOUND + N_OUTBOUND]
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address,
                        users=INBOX_USERS, user="mail")

    exp_inbox = send_inbound(gw, inbound)
    exp_sent = send_outbound(gw, outbound)

    # The upstreams got every message once, each on its own side.
    assert len(upstreams.inbound.wait_for(len(inbound), 30)) == len(inbound)
    assert len(upstreams.outbound.wait_for(len(outbound), 30)) == len(outbound)
    assert Counter(m.mail_from for m in upstreams.inbound.messages) == Counter(f"s{i}@sender.test" for i in range(len(inbound)))
    assert {m.mail_from for m in upstreams.outbound.messages} == {f"{u}@{DOMAIN}" for u in SENT_USERS}

    # On disk: owned by the unprivileged user, well-named, complete.
    for dirpath, dirnames, filenames in os.walk(gw.archive):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            assert st.st_uid == MAIL_UID, f"{dirpath}/{name} owned by uid {st.st_uid}, expected {MAIL_UID}"
    for user in INBOX_USERS:
        for folder, expected in (("INBOX", exp_inbox[user]), ("Sent", exp_sent.get(user, []))):
            files = gw.delivered(user, folder)
            assert len(files) == len(expected), f"{user}/{folder}: {len(files)} files, expected {len(expected)}"
            assert gw.files(user, folder, "tmp") == [], f"{user}/{folder}: files left in tmp/"
            for f in files:
                check_maildir_name(f)
        assert not gw.folder(user.upper()).exists(), f"upper-case RCPT created a folder for {user.upper()}"
    assert (gw.folder("alice", "Sent") / "maildirfolder").is_file()

    # Over IMAP.
    dovecot = Dovecot(gw.base / "dovecot", {f"{u}@{DOMAIN}": gw.archive / DOMAIN / u for u in INBOX_USERS})
    try:
        dovecot.start()
        for user in INBOX_USERS:
            imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
            try:
                typ, _ = imap.login(f"{user}@{DOMAIN}", Dovecot.PASSWORD)
                assert typ == "OK"
                typ, folders = imap.list()
                names = {f.decode().rsplit(" ", 1)[-1].strip('"') for f in folders}
                if user in SENT_USERS:
                    assert "Sent" in names, f"{user}: IMAP folders {names}"
                for folder, expected in (("INBOX", exp_inbox[user]), ("Sent", exp_sent.get(user, []))):
                    if folder not in names:
                        assert not expected
                        continue
                    copies = [parse_archived(raw, inbox=folder == "INBOX") for raw in imap_folder(imap, folder, peek=False)]
                    delivered_to = f"{user}@{DOMAIN}" if folder == "INBOX" else None
                    assert_same_messages(
                        f"{user} {folder} over IMAP",
                        [(c.return_path, c.delivered_to, c.message) for c in copies],
                        [(rp, delivered_to, msg) for rp, msg in expected])
                    for c in copies:
                        assert b"by mx.test.example (mailkeep)" in c.received, c.received
                imap.logout()
            finally:
                try:
                    imap.shutdown()
                except OSError:
                    pass
        assert "Cached message size" not in dovecot.log(), dovecot.log()[-2000:]
    finally:
        dovecot.stop()
        print("--- dovecot log ---")
        print("\n".join(dovecot.log().splitlines()[-40:]))


def test_archive_files_on_disk_are_exact(backup_gateway, upstreams, corpus_sample):
    """The same check on the files themselves (no IMAP in between), for a smaller batch."""
    batch = corpus_sample[::20]
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=["alice"])
    exp = send_inbound_to(gw, batch, "alice")
    copies = [read_archived(f, inbox=True) for f in gw.delivered("alice")]
    assert_same_messages("alice INBOX on disk",
                         [(c.return_path, c.delivered_to, c.message) for c in copies],
                         [(rp, f"alice@{DOMAIN}", msg) for rp, msg in exp])
