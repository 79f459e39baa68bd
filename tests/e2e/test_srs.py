"""SRS for alias forwarding ([aliases] srs_domain): the forwarded sender passes SPF at the next hop,
bounces find the original sender, forged and expired addresses get 550, and the encoding is
postsrsd's (Debian's postsrsd is the real peer: each side decodes what the other made)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import socket
import string
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSRecord

from alias_support import alias_env, message, send  # noqa: F401  (alias_env is a fixture)
from dns_support import dns_server  # noqa: F401  (a fixture)
from harness import MAILKEEP_BIN, RawSMTP, free_port, wait_port

SRS_DOMAIN = "fwd.example.org"
SECRET = "t3st-secret for srs"
POSTSRSD = Path("/usr/sbin/postsrsd")
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


# --------------------------------------------------------------------------- a reference SRS0

def ref_hash(secret: str, *fields: str) -> str:
    data = "".join(f.lower() for f in fields).encode()
    return base64.b64encode(hmac.new(secret.encode(), data, hashlib.sha1).digest())[:4].decode()


def ref_srs0(local: str, domain: str, when: float | None = None, secret: str = SECRET) -> str:
    """The test's own SRS0 encoder (Shevek's format), independent of mailkeep's and postsrsd's."""
    day = int((time.time() if when is None else when) // 86400) % 1024
    stamp = B32[day >> 5] + B32[day & 31]
    return f"SRS0={ref_hash(secret, stamp, domain, local)}={stamp}={domain}={local}@{SRS_DOMAIN}"


# --------------------------------------------------------------------------- the next hop's SPF check

def spf_pass(dns, domain: str, client_ip: str) -> bool:
    """The capture's SPF check: the domain's TXT "v=spf1" record from the dnslib server,
    ip4 mechanisms only (all the zone publishes), -all otherwise."""
    q = DNSRecord.question(domain, "TXT")
    answer = DNSRecord.parse(q.send(dns.host, dns.port, timeout=5))
    records = [b"".join(rr.rdata.data).decode() for rr in answer.rr if rr.rtype == QTYPE.TXT]
    spf = [r for r in records if r.startswith("v=spf1")]
    assert len(spf) == 1, (domain, records)
    for term in spf[0].split()[1:]:
        if term.startswith("ip4:") and ipaddress.ip_address(client_ip) in ipaddress.ip_network(term[4:], strict=False):
            return True
    return False


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def srs_env(alias_env, tmp_path):  # noqa: F811
    key = tmp_path / "srs.key"
    key.write_text(SECRET + "\n")
    key.chmod(0o600)

    def start(**overrides):
        aliases = {"srs_domain": SRS_DOMAIN, "srs_secret_file": str(key), **overrides.pop("aliases", {})}
        return alias_env(aliases=aliases, **overrides)
    start.key = key
    return start


def rcpt(env, address: str, mail_from: str = "") -> tuple[int, str]:
    with RawSMTP("127.0.0.1", env.smtp_port) as c:
        c.ehlo()
        assert c.cmd(f"MAIL FROM:<{mail_from}>").code == 250
        r = c.cmd(f"RCPT TO:<{address}>")
        c.cmd("QUIT")
        return r.code, r.text


# --------------------------------------------------------------------------- forwarding and bounces

def test_forwarded_alias_mail_gets_srs_sender_and_passes_spf(srs_env, dns_server):  # noqa: F811
    zone = dns_server.zone("example.org")
    zone.txt(SRS_DOMAIN, "v=spf1 ip4:127.0.0.0/8 -all")         # our gateway's addresses
    shop = dns_server.zone("shop.example")
    shop.txt("shop.example", "v=spf1 ip4:192.0.2.10 -all")     # the shop's own servers only
    env = srs_env()
    a = env.create("alice@gmail.example")
    res = send(env.smtp_port, [a["alias"]], mail_from="orders@shop.example", body=message(to=a["alias"]))
    assert res.delivered, res
    m = env.capture.wait_for(1)[0]
    assert m.rcpt_tos == ["alice@gmail.example"]
    local, _, domain = m.mail_from.rpartition("@")
    assert domain == SRS_DOMAIN and local.startswith("SRS0="), m.mail_from
    assert m.mail_from == ref_srs0("orders", "shop.example"), "not the SRS0 the reference encoder makes"
    peer_ip = m.peer[0]
    assert spf_pass(dns_server, domain, peer_ip), "the SRS sender must pass SPF at the next hop"
    assert not spf_pass(dns_server, "shop.example", peer_ip), "(the original sender would have failed)"
    # The message itself is unchanged; the log names both senders.
    assert b"From: sender@sender.test" in m.data
    assert f"from=<orders@shop.example>, srs=<{m.mail_from}>" in env.mk.log()


def test_bounce_to_srs_address_reaches_the_original_sender(srs_env):
    env = srs_env()
    a = env.create("alice@gmail.example")
    assert send(env.smtp_port, [a["alias"]], mail_from="Orders.Desk@Shop.Example").delivered
    srs_sender = env.capture.wait_for(1)[0].mail_from
    # The next hop bounces: null sender, to the SRS address.
    bounce = (b"From: MAILER-DAEMON@gmail.example\r\nTo: " + srs_sender.encode() +
              b"\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nThe mail could not be delivered.\r\n")
    res = send(env.smtp_port, [srs_sender], mail_from="", body=bounce)
    assert res.rcpt[srs_sender][0] == 250 and res.delivered, res
    msgs = env.capture.wait_for(2)
    assert msgs[1].rcpt_tos == ["Orders.Desk@shop.example"]
    assert msgs[1].mail_from == "<>"    # aiosmtpd writes the null sender so
    assert b"Undelivered Mail Returned to Sender" in msgs[1].data
    # A hop that changed the case of the whole address: the hash still verifies.
    assert rcpt(env, srs_sender.lower())[0] == 250 and rcpt(env, srs_sender.upper())[0] == 250
    # A reply with a real sender goes back too, and is itself forwarded with an SRS sender.
    res = send(env.smtp_port, [srs_sender], mail_from="postmaster@gmail.example")
    assert res.delivered, res
    m = env.capture.wait_for(3)[2]
    assert m.rcpt_tos == ["Orders.Desk@shop.example"]
    assert m.mail_from == ref_srs0("postmaster", "gmail.example")


def test_forged_expired_and_unknown_srs_addresses_get_550(srs_env):
    env = srs_env()
    good = ref_srs0("bob", "shop.example")
    local = good.split("@")[0]
    flipped = local[:5] + ("A" if local[5].upper() != "A" else "B") + local[6:]
    cases = {
        "forged hash": flipped + "@" + SRS_DOMAIN,
        "other secret": ref_srs0("bob", "shop.example", secret="someone else's"),
        "expired": ref_srs0("bob", "shop.example", when=time.time() - 30 * 86400),
        "redirected": good.replace("=shop.example=", "=evil.example="),
        "malformed": f"SRS0=abcd@{SRS_DOMAIN}",
        "not SRS at all": f"nobody@{SRS_DOMAIN}",
    }
    for name, address in cases.items():
        code, text = rcpt(env, address)
        assert code == 550 and text.startswith("5.1.1"), (name, address, code, text)
    log = env.mk.log()
    for reason in ("SRS: SRS hash does not verify", "SRS: SRS timestamp expired", "SRS: malformed SRS address",
                   "SRS: not an SRS address"):
        assert reason in log, reason
    assert env.capture.rcpt_log == []
    # Twenty days old is still good (srs_max_age = 21), and the reference encoding is accepted.
    assert rcpt(env, ref_srs0("bob", "shop.example", when=time.time() - 20 * 86400))[0] == 250
    assert rcpt(env, good)[0] == 250


def test_max_age_is_configurable_and_old_secrets_still_decode(srs_env):
    old_secret = "the secret before rotation"
    srs_env.key.write_text(f"new secret\n{old_secret}\n")
    env = srs_env(aliases={"srs_max_age": 3})
    assert rcpt(env, ref_srs0("bob", "shop.example", when=time.time() - 2 * 86400, secret=old_secret))[0] == 250
    assert rcpt(env, ref_srs0("bob", "shop.example", when=time.time() - 5 * 86400, secret="new secret"))[0] == 550
    # New addresses are signed with the first secret.
    a = env.create("alice@gmail.example")
    assert send(env.smtp_port, [a["alias"]], mail_from="bob@shop.example").delivered
    assert env.capture.wait_for(1)[0].mail_from == ref_srs0("bob", "shop.example", secret="new secret")


def test_null_and_own_domain_senders_are_left_alone_and_plain_mail_is_not_rewritten(srs_env):
    env = srs_env()
    a = env.create("alice@gmail.example")
    assert send(env.smtp_port, [a["alias"]], mail_from="").delivered
    assert send(env.smtp_port, [a["alias"]], mail_from=f"someone@{SRS_DOMAIN}").delivered
    # Relaying stays refused for an untrusted client, SRS or not.
    with RawSMTP("127.0.0.1", env.smtp_port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@shop.example>").code == 250
        assert c.cmd("RCPT TO:<someone@elsewhere.example>").code == 550     # 127.0.0.1 may not relay
        c.cmd("QUIT")
    msgs = env.capture.wait_for(2)
    assert [m.mail_from for m in msgs] == ["<>", f"someone@{SRS_DOMAIN}"]


def test_forwarded_and_plain_recipients_need_separate_transactions(srs_env):
    env = srs_env(relay={"domains": "example.org", "relay_from": "127.0.0.0/8"})
    a = env.create("alice@gmail.example")
    with RawSMTP("127.0.0.1", env.smtp_port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<bob@shop.example>").code == 250
        assert c.cmd(f"RCPT TO:<{a['alias']}>").code == 250
        r = c.cmd("RCPT TO:<colleague@example.org>")       # relayed, not forwarded: the original sender
        assert (r.code, r.enhanced) == (452, "4.5.3"), r
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: t\r\n\r\nbody\r\n.\r\n")
        assert c.reply().code == 250
        assert c.cmd("MAIL FROM:<bob@shop.example>").code == 250
        assert c.cmd("RCPT TO:<colleague@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: t2\r\n\r\nbody\r\n.\r\n")
        assert c.reply().code == 250
        c.cmd("QUIT")
    msgs = env.capture.wait_for(2)
    assert msgs[0].mail_from.startswith("SRS0=") and msgs[0].rcpt_tos == ["alice@gmail.example"]
    assert msgs[1].mail_from == "bob@shop.example" and msgs[1].rcpt_tos == ["colleague@example.org"]


# --------------------------------------------------------------------------- configuration errors

def test_srs_configuration_errors_are_clear(tmp_path):
    cfg = tmp_path / "m.ini"
    cfg.write_text(f"[aliases]\nsrs_domain = {SRS_DOMAIN}\n")
    r = subprocess.run([str(MAILKEEP_BIN), "check-config", "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and f"{cfg}:2: [aliases] srs_secret_file" in r.stderr, r.stderr
    cfg.write_text(f"[aliases]\nsrs_domain = {SRS_DOMAIN}\nsrs_secret_file = {tmp_path}/missing.key\n")
    r = subprocess.run([str(MAILKEEP_BIN), "srs", "forward", "-c", str(cfg), "a@b.example"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "missing.key: cannot read the SRS secret file" in r.stderr, r.stderr
    cfg.write_text("[aliases]\nsrs_domain = not a domain!\nsrs_secret_file = /x\n")
    r = subprocess.run([str(MAILKEEP_BIN), "check-config", "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "is not a domain name" in r.stderr, r.stderr
    cfg.write_text("[aliases]\n")
    r = subprocess.run([str(MAILKEEP_BIN), "srs", "forward", "-c", str(cfg), "a@b.example"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "srs_domain is not set" in r.stderr


def test_serve_refuses_to_start_without_its_secret(tmp_path):
    from harness import Mailkeep, default_config
    config = default_config(free_port(), "127.0.0.1:9")
    config["aliases"] = {"srs_domain": SRS_DOMAIN, "srs_secret_file": str(tmp_path / "nope.key")}
    mk = Mailkeep(tmp_path / "mk", config)
    with pytest.raises(Exception):
        mk.start(timeout=5)
    assert mk.wait(10) == 1
    assert "nope.key: cannot read the SRS secret file" in mk.log()
    assert SECRET not in mk.log()


# --------------------------------------------------------------------------- postsrsd, the real peer

class Postsrsd:
    """Debian's postsrsd (1.x): Postfix tcp_table lookups, forward and reverse on two ports."""

    def __init__(self, key: Path):
        self.forward_port, self.reverse_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [str(POSTSRSD), "-s", str(key), "-d", SRS_DOMAIN, "-l", "127.0.0.1",
             "-f", str(self.forward_port), "-r", str(self.reverse_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port("127.0.0.1", self.forward_port, proc=self.proc)
        wait_port("127.0.0.1", self.reverse_port, proc=self.proc)

    def lookup_all(self, port: int, addresses: list[str]) -> list[str | None]:
        out: list[str | None] = []
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rwb")
            for a in addresses:
                f.write(b"get " + urllib.parse.quote(a, safe="@=+/").encode() + b"\n")
                f.flush()
                line = f.readline().decode().rstrip("\n")
                out.append(urllib.parse.unquote(line[4:]) if line.startswith("200 ") else None)
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def random_address(rng: random.Random) -> str:
    atext = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
    local = "".join(rng.choice(atext) for _ in range(rng.randint(1, 20)))
    if rng.random() < 0.2:
        local += "." + "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 8)))
    labels = ["".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(1, 12)))
              for _ in range(rng.randint(1, 3))]
    domain = ".".join(labels) + "." + rng.choice(["com", "org", "example", "DE", "Co.Uk"])
    if rng.random() < 0.1:      # an SRS0 sender from another forwarder: both must make the same SRS1
        other = f"hop{rng.randint(1, 9)}.example"
        return ref_srs0(local, domain, secret="elsewhere").replace("@" + SRS_DOMAIN, "@" + other)
    return f"{local}@{domain}"


def mailkeep_srs(config: Path, action: str, addresses: list[str]) -> list[str]:
    r = subprocess.run([str(MAILKEEP_BIN), "srs", action, "-c", str(config)], input="\n".join(addresses) + "\n",
                       capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    assert len(lines) == len(addresses), r.stderr
    return lines


@pytest.mark.release_only  # a CLI cross-check; the SRS code runs under ASan in tests/unit/srs and above
@pytest.mark.skipif(not POSTSRSD.exists(), reason="postsrsd is not installed (test.sh installs it)")
def test_encoding_and_decoding_agree_with_postsrsd_on_1000_addresses(tmp_path):
    key = tmp_path / "srs.key"
    key.write_text(SECRET + "\nan older secret\n")
    config = tmp_path / "m.ini"
    config.write_text(f"[aliases]\nsrs_domain = {SRS_DOMAIN}\nsrs_secret_file = {key}\n")
    rng = random.Random(20261202)
    addresses = [random_address(rng) for _ in range(1000)]
    peer = Postsrsd(key)
    try:
        for attempt in range(2):   # the day may turn between the two encoders: then once more
            ours = mailkeep_srs(config, "forward", addresses)
            theirs = peer.lookup_all(peer.forward_port, addresses)
            if ours == theirs or attempt == 1:
                break
        mismatches = [(a, o, t) for a, o, t in zip(addresses, ours, theirs) if o != t]
        assert not mismatches, mismatches[:5]
        assert sum(1 for o in ours if o.startswith("SRS1=")) > 50
        # Each decodes what the other made, back to the original address.
        back_ours = mailkeep_srs(config, "reverse", theirs)
        back_theirs = peer.lookup_all(peer.reverse_port, ours)
        # (An SRS1 decodes to the first forwarder's SRS0 address, which is what it was made from.)
        wrong = [(a, x, y) for a, x, y in zip(addresses, back_ours, back_theirs) if not x == y == a]
        assert not wrong, wrong[:5]
        # Addresses signed with the older secret decode in both.
        older = [ref_srs0(a.split("@")[0], a.split("@")[1], secret="an older secret")
                 for a in addresses[:50] if not a.startswith("SRS0=")]
        assert all(not x.startswith("error") for x in mailkeep_srs(config, "reverse", older))
        assert all(x is not None for x in peer.lookup_all(peer.reverse_port, older))
        # And a forged one fails in both.
        # (The hash compares case-insensitively, as in libsrs2: the changed character must differ in
        # more than case, or a hash starting with "a" would "forge" into the same one.)
        forged = [o[:5] + ("A" if o[5].upper() != "A" else "B") + o[6:] for o in ours[:20] if o.startswith("SRS0=")]
        assert all(x.startswith("error: SRS hash does not verify") for x in mailkeep_srs(config, "reverse", forged))
        assert all(x is None for x in peer.lookup_all(peer.reverse_port, forged))
    finally:
        peer.stop()
