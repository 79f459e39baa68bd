"""kill -9 in the middle of a load: every message a client got 250 for must be at the upstream
and published in the archive (new/); anything published must be at the upstream too.

500 messages (inbound to three users, every fourth one outbound from alice via the provider's
relay address, so Sent is covered) from 8 concurrent clients; mailkeep gets SIGKILL once 150
of them have been acknowledged. Messages are identified by a unique Message-ID."""

from __future__ import annotations

import os
import random
import signal
import smtplib
import threading
import uuid
from collections import Counter

from backup_support import (  # noqa: F401,F811  (pytest fixtures)
    DOMAIN, OUTBOUND_IP, backup_gateway, check_maildir_name, make_message, message_id, read_archived,
    upstreams,
)
from harness import split_received

N_MESSAGES = 500
N_CLIENTS = 8
KILL_AFTER = 150
USERS = ["alice", "bob", "carol"]


def build_load(run: str) -> list[dict]:
    rng = random.Random(1234)
    load = []
    for i in range(N_MESSAGES):
        tag = f"crash-{run}-{i:03d}"
        body = "".join(f"{tag} line {n} {'x' * rng.randint(10, 70)}\r\n" for n in range(rng.randint(5, 400)))
        if i % 4 == 3:
            sender, rcpts, user, folder = f"alice@{DOMAIN}", [f"r{i}@remote.test"], "alice", "Sent"
        else:
            user = USERS[i % 3]
            sender, rcpts, folder = f"s{i}@sender.test", [f"{user}@{DOMAIN}"], "INBOX"
        msg = make_message(tag, sender=sender, to=rcpts[0], body=body.encode())
        load.append({"tag": tag, "id": f"<{tag}@client.test>", "sender": sender, "rcpts": rcpts,
                     "user": user, "folder": folder, "msg": msg, "outbound": folder == "Sent"})
    return load


class Load:
    """N_CLIENTS threads, each sending its share over its own sessions until the server dies."""

    def __init__(self, gw, load: list[dict]):
        self.gw = gw
        self.load = load
        self.acked: set[int] = set()
        self.errors: Counter = Counter()
        self.lock = threading.Lock()
        self.enough = threading.Event()

    def _session(self, outbound: bool) -> smtplib.SMTP:
        s = smtplib.SMTP(self.gw.host, self.gw.port, timeout=30,
                         source_address=(OUTBOUND_IP, 0) if outbound else None)
        s.ehlo("client.test")
        return s

    def client(self, k: int) -> None:
        sessions: dict[bool, smtplib.SMTP] = {}
        try:
            for i in range(k, len(self.load), N_CLIENTS):
                m = self.load[i]
                try:
                    s = sessions.get(m["outbound"]) or sessions.setdefault(m["outbound"], self._session(m["outbound"]))
                    s.sendmail(m["sender"], m["rcpts"], m["msg"])
                except (smtplib.SMTPException, OSError) as exc:
                    with self.lock:
                        self.errors[type(exc).__name__] += 1
                    return  # the server is gone (or refused): this client stops
                with self.lock:
                    self.acked.add(i)
                    if len(self.acked) >= KILL_AFTER:
                        self.enough.set()
        finally:
            for s in sessions.values():
                try:
                    s.close()
                except OSError:
                    pass

    def run_and_kill(self) -> None:
        threads = [threading.Thread(target=self.client, args=(k,), daemon=True) for k in range(N_CLIENTS)]
        for t in threads:
            t.start()
        assert self.enough.wait(120), f"only {len(self.acked)} messages acknowledged in 120 s"
        os.kill(self.gw.mk.pid, signal.SIGKILL)
        self.gw.mk.proc.wait(10)
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a client hung after the kill"


def test_kill_9_under_load_loses_no_acknowledged_message(backup_gateway, upstreams):
    gw = backup_gateway(upstreams.outbound.address, upstream=upstreams.inbound.address, users=USERS,
                        smtp={"max_connections": 200})
    load = build_load(uuid.uuid4().hex[:8])
    run = Load(gw, load)
    run.run_and_kill()
    by_id = {m["id"]: i for i, m in enumerate(load)}
    print(f"acknowledged {len(run.acked)} of {N_MESSAGES} before/around the kill; client errors {dict(run.errors)}")
    assert len(run.acked) < N_MESSAGES, "the load finished before the kill: nothing was in flight"

    # What the upstreams have: Message-ID -> bytes as the client sent them (Received stripped).
    at_upstream: dict[str, list[bytes]] = {}
    for cap in (upstreams.inbound, upstreams.outbound):
        for m in cap.messages:
            at_upstream.setdefault(message_id(m.data), []).append(split_received(m.data)[1])

    # What the archive has published: (user, folder) -> Message-ID -> bytes.
    published: dict[tuple[str, str], dict[str, list[bytes]]] = {}
    leftovers = 0
    for user in USERS:
        for folder in ("INBOX", "Sent"):
            box = published.setdefault((user, folder), {})
            for f in gw.files(user, folder, "new") + gw.files(user, folder, "cur"):
                check_maildir_name(f)
                copy = read_archived(f, inbox=folder == "INBOX")
                box.setdefault(message_id(copy.message), []).append(copy.message)
            leftovers += len(gw.files(user, folder, "tmp"))
    print(f"published {sum(len(v) for b in published.values() for v in b.values())}, "
          f"tmp/ leftovers {leftovers}, at upstream {sum(len(v) for v in at_upstream.values())}")

    # 1. Every acknowledged message is at the upstream and published in its folder, intact, once.
    problems = []
    for i in sorted(run.acked):
        m = load[i]
        if at_upstream.get(m["id"]) != [m["msg"]]:
            problems.append(f"{m['tag']}: acknowledged but at the upstream {len(at_upstream.get(m['id'], []))} times"
                            " (or altered)")
        if published[(m["user"], m["folder"])].get(m["id"]) != [m["msg"]]:
            problems.append(f"{m['tag']}: acknowledged but not published once in {m['user']}/{m['folder']}/new")
    assert not problems, f"{len(problems)} problems, e.g.: " + "; ".join(problems[:10])

    # 2. Nothing is published that the upstream does not have (new/ only after the upstream's 250),
    #    and nothing is published in the wrong folder.
    for (user, folder), box in published.items():
        for mid, copies in box.items():
            assert mid in by_id, f"{user}/{folder}: unknown message {mid}"
            m = load[by_id[mid]]
            assert (m["user"], m["folder"]) == (user, folder), f"{mid} published in {user}/{folder}"
            assert copies == [m["msg"]], f"{mid}: {len(copies)} copies in {user}/{folder} (or altered)"
            assert mid in at_upstream, f"{mid} published in {user}/{folder} but never reached the upstream"

    # 3. A restarted mailkeep works over the leftovers.
    gw.mk.start()
    with smtplib.SMTP(gw.host, gw.port, timeout=30) as s:
        s.sendmail("after@sender.test", [f"alice@{DOMAIN}"], make_message("after-restart"))
    ids = [message_id(read_archived(f, inbox=True).message) for f in gw.files("alice")]
    assert "<after-restart@client.test>" in ids
