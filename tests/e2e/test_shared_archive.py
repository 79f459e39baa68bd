"""Two gateways writing one shared archive, read back through Dovecot (issue 18, must-have 7;
docs/several-gateways.md, choice (a)).

Gateway A listens on 127.0.0.2, gateway B on 127.0.0.3. Both have the SAME `[backup] archive`
(one Maildir root), each its own working directory (its own SQLite store, index, stats), and
both relay to the same two capture upstreams. Both run as `mail` (uid 8), as Dovecot's mail
processes do. 20 concurrent smtplib clients send 400 messages, each client alternating between
the gateways, so that alice, bob and carol's INBOX (and alice and bob's Sent) are written by
both gateways at the same time; dave gets mail through A only, erin through B only; every
tenth message has two archived recipients, every tenth is an outbound copy (Sent).

Maildir names are `time.M<usec>P<pid>Q<seq>.<host>,S=<size>` (src/archive/maildir.cpp): the
host part is gethostname(), which no setting changes ([smtp] hostname names the gateway in
Received only). Two variants:

* one-host: both gateways on this machine's host name; names differ by P<pid>.
* two-hosts: each gateway in a UTS namespace of its own (`unshare --uts`, then `hostname`),
  as two machines mounting one file system would be; names differ by host too.

Then: every message the clients got 250 for is at the upstream once; on disk every Maildir
holds exactly its messages in new/ + cur/, tmp/ is empty, every name is well-formed and unique
and says which gateway wrote it (its P<pid>, its host, and the file's own Received line
agree), both gateways wrote into the shared Maildirs, and each gateway's log (archived=N)
accounts for its files; a private Dovecot serves every account: each message sent appears
exactly once, byte for byte, and nothing else.

Also: Sent dedupe markers live in the shared archive, so copies of one outgoing message that reach
A and then B are kept once, and so are copies that reach both at the same instant (a record lock
beside the markers makes check-publish-mark one step across processes, archive.cpp).
"""

from __future__ import annotations

import imaplib
import random
import re
import shutil
import smtplib
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from backup_support import (
    DOMAIN, MAILDIR_NAME, OUTBOUND_IP, BackupGateway, Dovecot, backup_config, check_maildir_name, imap_folder,
    make_message, message_id, parse_archived, public_tempdir, read_archived, write_accounts,
)
from harness import MAILKEEP_BIN, Capture, Mailkeep, free_port, require_binary, split_received

GATEWAYS = (("127.0.0.2", "gw-a.test"), ("127.0.0.3", "gw-b.test"))
SHARED = ["alice", "bob", "carol"]           # written by both gateways at once
ONLY = ["dave", "erin"]                      # dave through A only, erin through B only
USERS = SHARED + ONLY
SENDERS = ["alice", "bob"]                   # outbound copies (their Sent), through both
N_MESSAGES = 400
N_CLIENTS = 20
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
ARCHIVED = re.compile(r"archived=(\d+), status=sent")


def maildir_host(name: str) -> str:
    """The host part mailkeep puts in a name (maildir.cpp: '/' and ':' escaped)."""
    return name.replace("/", "\\057").replace(":", "\\072") or "localhost"


def own_host_wrapper(base: Path, hostname: str) -> Path:
    """An executable that runs mailkeep in a UTS namespace of its own named `hostname`.
    unshare (no --fork) execs sh, which execs mailkeep: the Popen pid is mailkeep's."""
    wrapper = base / f"mailkeep-on-{hostname}"
    wrapper.write_text("#!/bin/sh\n"
                       f"exec {UNSHARE} --uts /bin/sh -c 'hostname \"$0\" && exec \"$@\"' "
                       f"{hostname} {MAILKEEP_BIN} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def shared_site():
    """Factory: shared_site(own_hosts) -> (base, archive, [gateway A, gateway B], inbound, outbound).

    Everything under one 0755 directory in /var/tmp (uid 8 must traverse it), removed at teardown;
    the gateways' logs are printed at teardown (pytest shows them on failure)."""
    require_binary()
    state: dict = {"gateways": [], "captures": [], "base": None}

    def start(own_hosts: bool):
        base = public_tempdir("mailkeep-shared-")
        state["base"] = base
        archive = base / "archive"
        inbound, outbound = Capture().start(), Capture().start()
        state["captures"] += [inbound, outbound]
        gateways = []
        for ip, name in GATEWAYS:
            gwdir = base / name
            gwdir.mkdir()
            gwdir.chmod(0o755)
            accounts = gwdir / "accounts.txt"
            write_accounts(accounts, USERS)
            port = free_port(ip)
            config = backup_config(port, outbound.address, archive, accounts, inbound.address, "mail",
                                   smtp={"listen": f"{ip}:{port}", "hostname": name, "max_connections": 200})
            binary = own_host_wrapper(base, name) if own_hosts else MAILKEEP_BIN
            gw = BackupGateway(Mailkeep(gwdir / "mailkeep", config, binary=binary), gwdir, archive, accounts)
            gw.mk.workdir.chmod(0o755)
            state["gateways"].append(gw)
            gw.mk.start()
            gateways.append(gw)
        return base, archive, gateways, inbound, outbound

    yield start
    for gw in state["gateways"]:
        code = gw.mk.stop()
        print(f"--- mailkeep {gw.mk.host} log ({gw.mk.stderr_path}, exit {code}) ---")
        print("\n".join(gw.log().splitlines()[-40:]))
    for cap in state["captures"]:
        cap.stop()
    if state["base"]:
        shutil.rmtree(state["base"], ignore_errors=True)


def build_load(run: str) -> list[dict]:
    """400 messages; message i goes through gateway ((i % 20) + (i // 20)) % 2, so that each of the
    20 clients (client k sends i = k, k + 20, ...) alternates between the gateways."""
    rng = random.Random(18)
    load = []
    for i in range(N_MESSAGES):
        g = ((i % N_CLIENTS) + (i // N_CLIENTS)) % 2
        tag = f"shared-{run}-{i:03d}"
        if i % 10 == 9:                                    # an outbound copy: the sender's Sent
            user = SENDERS[(i // 10) % 2]
            sender, rcpts, boxes, outbound = f"{user}@{DOMAIN}", [f"r{i}@remote.test"], [(user, "Sent")], True
        else:
            if i % 10 == 4:                                # two archived recipients, one transaction
                users = [SHARED[i % 3], SHARED[(i + 1) % 3]]
            elif i % 10 == 7:                              # the account only this gateway sees
                users = [ONLY[g]]
            else:
                users = [SHARED[i % 3]]
            sender, rcpts, outbound = f"s{i}@sender.test", [f"{u}@{DOMAIN}" for u in users], False
            boxes = [(u, "INBOX") for u in users]
        body = "".join(f"{tag} line {n} {'y' * rng.randint(0, 90)}\r\n" for n in range(rng.randint(3, 300)))
        msg = make_message(tag, sender=sender, to=rcpts[0], body=body.encode())
        load.append({"i": i, "gw": g, "tag": tag, "id": f"<{tag}@client.test>", "sender": sender, "rcpts": rcpts,
                     "boxes": boxes, "outbound": outbound, "msg": msg})
    return load


def send_all(gateways: list[BackupGateway], load: list[dict]) -> tuple[list[str], float]:
    """N_CLIENTS threads, each with its own sessions (one per gateway and direction), all at once.
    Returns (failures, seconds)."""
    failures: list[str] = []
    lock = threading.Lock()
    go = threading.Barrier(N_CLIENTS)

    def client(k: int) -> None:
        sessions: dict[tuple[int, bool], smtplib.SMTP] = {}
        try:
            go.wait(30)
            for m in load[k::N_CLIENTS]:
                key = (m["gw"], m["outbound"])
                try:
                    s = sessions.get(key)
                    if s is None:
                        gw = gateways[m["gw"]]
                        s = smtplib.SMTP(gw.host, gw.port, timeout=60,
                                         source_address=(OUTBOUND_IP if m["outbound"] else "127.0.0.1", 0))
                        s.ehlo("relay.provider.test" if m["outbound"] else "mx.sender.test")
                        sessions[key] = s
                    refused = s.sendmail(m["sender"], m["rcpts"], m["msg"])
                    if refused:
                        raise smtplib.SMTPException(f"refused {refused}")
                except (smtplib.SMTPException, OSError) as exc:
                    with lock:
                        failures.append(f"{m['tag']} via {gateways[m['gw']].host}: {exc!r}")
                    sessions.pop(key, None)
        finally:
            for s in sessions.values():
                try:
                    s.quit()
                except (smtplib.SMTPException, OSError):
                    pass

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(N_CLIENTS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a client hung"
    return failures, time.monotonic() - started


def imap_session(dovecot: Dovecot, login: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", dovecot.port)
    typ, _ = imap.login(login, Dovecot.PASSWORD)
    assert typ == "OK", login
    return imap


@pytest.mark.parametrize("own_hosts", [False, True], ids=["one-host", "two-hosts"])
def test_two_gateways_one_archive_every_message_once_over_imap(shared_site, own_hosts):
    if own_hosts:
        probe = subprocess.run([UNSHARE, "--uts", "/bin/sh", "-c", "hostname probe.test"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"cannot make a UTS namespace: {probe.stderr.decode(errors='replace').strip()}")
    base, archive, gateways, inbound, outbound = shared_site(own_hosts)
    load = build_load(uuid.uuid4().hex[:8])
    by_id = {m["id"]: m for m in load}
    # What a writer's file name and Received line must say: pid -> (gateway index, host part).
    writers = {gw.mk.pid: (g, maildir_host(GATEWAYS[g][1] if own_hosts else socket.gethostname()))
               for g, gw in enumerate(gateways)}
    assert len(writers) == 2

    failures, seconds = send_all(gateways, load)
    assert not failures, f"{len(failures)} messages not acknowledged, e.g. {failures[:5]}"
    n_out = sum(m["outbound"] for m in load)
    print(f"{N_MESSAGES} messages from {N_CLIENTS} clients through 2 gateways in {seconds:.1f} s "
          f"({N_MESSAGES / seconds:.0f} msg/s)")

    # The upstreams: every message once, on its own side.
    assert len(inbound.wait_for(N_MESSAGES - n_out, 30)) == N_MESSAGES - n_out
    assert len(outbound.wait_for(n_out, 30)) == n_out
    at_upstream = Counter(message_id(split_received(c.data)[1]) for c in inbound.messages + outbound.messages)
    assert at_upstream == Counter(m["id"] for m in load), "the upstreams did not get every message exactly once"

    # The expected archive: (user, folder) -> Counter of Message-IDs.
    expected: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for m in load:
        for box in m["boxes"]:
            expected[box][m["id"]] += 1

    # On disk, before anyone else touched the archive.
    per_writer: Counter = Counter()
    names: Counter = Counter()
    for user in USERS:
        for folder in ("INBOX", "Sent"):
            gw = gateways[0]
            files = gw.delivered(user, folder)
            want = expected.get((user, folder), Counter())
            assert len(files) == sum(want.values()), \
                f"{user}/{folder}: {len(files)} files in new/ + cur/, expected {sum(want.values())}"
            assert gw.files(user, folder, "tmp") == [], f"{user}/{folder}: files left in tmp/"
            got = Counter()
            box_writers = defaultdict(list)  # gateway index -> name times
            for f in files:
                check_maildir_name(f)
                nm = MAILDIR_NAME.match(f.name)
                names[f.name.split(":", 1)[0]] += 1
                pid, host = int(nm.group(3)), nm.group(5)
                assert pid in writers, f"{f}: P{pid} is neither gateway ({sorted(writers)})"
                g, want_host = writers[pid]
                assert host == want_host, f"{f}: host part {host!r}, expected {want_host!r} for {GATEWAYS[g][1]}"
                copy = read_archived(f, inbox=folder == "INBOX")
                assert f"by {GATEWAYS[g][1]} (mailkeep)".encode() in copy.received, \
                    f"{f}: written by P{pid} ({GATEWAYS[g][1]}) but its Received says {copy.received!r}"
                mid = message_id(copy.message)
                assert mid in by_id and copy.message == by_id[mid]["msg"], f"{f}: unknown or altered message {mid}"
                got[mid] += 1
                per_writer[g] += 1
                box_writers[g].append(int(nm.group(1)) + int(nm.group(2)) / 1e6)
            assert got == want, f"{user}/{folder} on disk: missing {want - got}, extra {got - want}"
            if user in SHARED and want:
                assert set(box_writers) == {0, 1}, f"{user}/{folder}: written by gateway(s) {set(box_writers)} only"
                (a0, a1), (b0, b1) = ((min(t), max(t)) for t in (box_writers[0], box_writers[1]))
                assert a0 < b1 and b0 < a1, f"{user}/{folder}: the two gateways' writes did not overlap in time"
    for g, user in enumerate(ONLY):
        ids = {int(MAILDIR_NAME.match(f.name).group(3)) for f in gateways[0].delivered(user)}
        assert ids == {gateways[g].mk.pid}, f"{user}: written by {ids}, expected only {GATEWAYS[g][1]}"
    assert max(names.values()) == 1, f"a Maildir name used twice: {[n for n, c in names.items() if c > 1][:5]}"
    # Every file accounted for by its gateway's own log.
    for g, gw in enumerate(gateways):
        logged = sum(int(n) for n in ARCHIVED.findall(gw.log()))
        assert per_writer[g] > 0, f"{GATEWAYS[g][1]} wrote no file"
        assert logged == per_writer[g], f"{GATEWAYS[g][1]}: its log says archived {logged}, it wrote {per_writer[g]} files"
    print(f"files by gateway: A {per_writer[0]}, B {per_writer[1]}; "
          f"e.g. {gateways[0].delivered('alice')[0].name}")
    # Nothing but the account folders and mailkeep's own .mailkeep (Sent dedupe markers) below the root.
    assert sorted(p.name for p in archive.iterdir()) == [".mailkeep", DOMAIN]
    assert sorted(p.name for p in (archive / DOMAIN).iterdir()) == sorted(USERS)

    # Over IMAP: a private Dovecot over the shared root.
    dovecot = Dovecot(base / "dovecot", {f"{u}@{DOMAIN}": archive / DOMAIN / u for u in USERS})
    try:
        dovecot.start()
        for user in USERS:
            imap = imap_session(dovecot, f"{user}@{DOMAIN}")
            try:
                typ, listing = imap.list()
                assert typ == "OK", listing
                folders = {f.decode().rsplit(" ", 1)[-1].strip('"') for f in listing}
                assert folders == ({"INBOX", "Sent"} if user in SENDERS else {"INBOX"}), f"{user}: {folders}"
                for folder in sorted(folders):
                    got = Counter()
                    for raw in imap_folder(imap, folder):
                        copy = parse_archived(raw, inbox=folder == "INBOX")
                        mid = message_id(copy.message)
                        assert mid in by_id, f"{user}/{folder} over IMAP: a message nobody sent: {raw[:200]!r}"
                        assert copy.message == by_id[mid]["msg"], f"{user}/{folder} over IMAP: {mid} altered"
                        if folder == "INBOX":
                            assert copy.delivered_to == f"{user}@{DOMAIN}", (mid, copy.delivered_to)
                        got[mid] += 1
                    want = expected.get((user, folder), Counter())
                    assert got == want, (f"{user}/{folder} over IMAP: {sum(got.values())} messages, expected "
                                         f"{sum(want.values())}; missing {list((want - got).elements())[:5]}, "
                                         f"extra or doubled {list((got - want).elements())[:5]}")
                imap.logout()
            finally:
                try:
                    imap.shutdown()
                except OSError:
                    pass
        log = dovecot.log()
        for bad in ("Error:", "Panic:", "Fatal:", "Cached message size", "Duplicate file entry"):
            assert bad not in log, f"dovecot logged {bad!r}: {log[-2000:]}"
    finally:
        dovecot.stop()
        print("--- dovecot log ---")
        print("\n".join(dovecot.log().splitlines()[-30:]))

    # After Dovecot: still every message once on disk, nothing in tmp/.
    for (user, folder), want in expected.items():
        assert len(gateways[0].delivered(user, folder)) == sum(want.values()), f"{user}/{folder} after IMAP"
        assert gateways[0].files(user, folder, "tmp") == [], f"{user}/{folder}: tmp/ after IMAP"


def test_sent_dedupe_markers_are_shared_through_the_archive(shared_site):
    """The provider sends one copy of an outgoing message per in-domain recipient; a gateway keeps it
    once in the sender's Sent (markers under <archive>/.mailkeep/sent-seen, archive.h). The markers
    live in the shared archive, so copies that reach A and then B are kept once too, and so are
    copies that reach A and B at the same instant: check-publish-mark holds a record lock on
    <dedupe dir>/.lock as well as the in-process mutex (archive.cpp)."""
    base, archive, (a, b), inbound, outbound = shared_site(False)
    run = uuid.uuid4().hex[:8]

    def send(gw, msg: bytes, rcpt: str, barrier: threading.Barrier | None = None) -> None:
        s = smtplib.SMTP(gw.host, gw.port, timeout=30, source_address=(OUTBOUND_IP, 0))
        try:
            s.ehlo("relay.provider.test")
            if barrier:
                barrier.wait(30)
            assert s.sendmail(f"alice@{DOMAIN}", [rcpt], msg) == {}
        finally:
            s.quit()

    for t in range(10):
        msg = make_message(f"seq-{run}-{t}", sender=f"alice@{DOMAIN}", to=f"bob@{DOMAIN}")
        send(a, msg, f"bob@{DOMAIN}")
        send(b, msg, f"carol@{DOMAIN}")
    sent = Counter(message_id(read_archived(f, inbox=False).message) for f in a.delivered("alice", "Sent"))
    assert sent == Counter({f"<seq-{run}-{t}@client.test>": 1 for t in range(10)}), sent
    assert len(outbound.wait_for(20, 15)) == 20, "every copy still goes to the smarthost"

    n = 30
    for t in range(n):
        msg = make_message(f"conc-{run}-{t}", sender=f"alice@{DOMAIN}", to=f"bob@{DOMAIN}")
        go = threading.Barrier(2)
        threads = [threading.Thread(target=send, args=(gw, msg, rcpt, go))
                   for gw, rcpt in ((a, f"bob@{DOMAIN}"), (b, f"carol@{DOMAIN}"))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    files = a.delivered("alice", "Sent")
    sent = Counter(message_id(read_archived(f, inbox=False).message) for f in files)
    doubled = sum(1 for t in range(n) if sent[f"<conc-{run}-{t}@client.test>"] == 2)
    print(f"simultaneous copies through A and B: {doubled} of {n} kept twice in Sent")
    assert all(sent[f"<conc-{run}-{t}@client.test>"] == 1 for t in range(n)), sent
    assert a.files("alice", "Sent", "tmp") == []
