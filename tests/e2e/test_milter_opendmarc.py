"""OpenDMARC (Debian's opendmarc) with its own SPF check as a real milter: a p=reject domain whose
SPF fails (and that has no DKIM) is rejected at DATA with OpenDMARC's reply, an aligned one passes
with OpenDMARC's Authentication-Results in the relayed and the archived copy; and the client
address, HELO and MAIL FROM mailkeep hands over are the ones OpenDMARC's SPF check uses.

DNS: OpenDMARC (libopendmarc, libspf2) resolves through the system resolver (res_query:
/etc/resolv.conf, port 53) and has no option to point it elsewhere. The zone is served by a dnslib
server on 127.0.0.153:53, and opendmarc runs in a mount namespace of its own (`unshare --mount`)
where a private resolv.conf naming that server is bind-mounted over /etc/resolv.conf; the real one
is never touched. Needs root (the tests run as root).

Client address: Debian builds OpenDMARC's SPF check on libspf2, which answers `pass` ("localhost is
always allowed.") for every 127.0.0.0/8 or ::1 client without looking at the record. So the SMTP
client here connects to mailkeep (still listening on 127.0.0.1 only; the traffic stays on this
host) from one of this host's own non-loopback addresses, and the SPF records name that address;
without one the module is skipped."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from backup_support import backup_gateway, make_message  # noqa: F401  (fixture)
from dns_support import DnsServer, _Handler, _Resolver
from dnslib.server import DNSServer
from harness import RawSMTP, free_port, wait_port
from test_milter import archived_bodies, gateway

OPENDMARC = shutil.which("opendmarc") or "/usr/sbin/opendmarc"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
# Release only, as the OpenDKIM tests: the ASan pass repeats the script and hostile milter tests
# (test_milter.py), which take mailkeep's milter code down the same paths (conftest.py).
pytestmark = [pytest.mark.skipif(not Path(OPENDMARC).exists(), reason="opendmarc is not installed (test.sh installs it)"),
              pytest.mark.release_only]

AUTHSERV = "mx.test.example"     # default_config's [smtp] hostname
DNS_HOST = "127.0.0.153"         # port 53 there: the only port res_query knows
RESOLV_CONF = Path("/etc/resolv.conf")
AR = f"Authentication-Results: {AUTHSERV}; "


def local_client_address() -> str | None:
    """One of this host's own IPv4 addresses outside 127.0.0.0/8 from which a TCP connection to
    127.0.0.1 works (the kernel keeps it on the host), or None."""
    try:
        out = subprocess.run(["ip", "-j", "-4", "addr", "show", "scope", "global"], capture_output=True,
                             text=True, timeout=10).stdout
        addrs = [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])
                 if a.get("family") == "inet" and not ipaddress.ip_address(a["local"]).is_loopback]
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return None
    for addr in addrs:
        with socket.socket() as srv, socket.socket() as cli:
            try:
                srv.bind(("127.0.0.1", 0))
                srv.listen(1)
                cli.settimeout(3)
                cli.bind((addr, 0))
                cli.connect(srv.getsockname())
                peer = srv.accept()[0]
                peer.close()
                return addr
            except OSError:
                continue
    return None


class Port53DnsServer(DnsServer):
    """dns_support's DnsServer, but on port 53 of its host (DnsServer picks a free port)."""

    def start(self) -> "Port53DnsServer":
        resolver = _Resolver(self)
        try:
            udp = DNSServer(resolver, port=53, address=self.host, logger=self._quiet, handler=_Handler)
        except OSError as e:
            pytest.skip(f"cannot serve DNS on {self.host}:53 (UDP): {e}")
        try:
            tcp = DNSServer(resolver, port=53, address=self.host, tcp=True, logger=self._quiet, handler=_Handler)
        except OSError as e:
            udp.server.server_close()
            pytest.skip(f"cannot serve DNS on {self.host}:53 (TCP): {e}")
        self._udp, self._tcp, self.port = udp, tcp, 53
        udp.start_thread()
        tcp.start_thread()
        return self

    def names(self, qtype: str) -> list[str]:
        with self.lock:
            return [name for _, name, qt, _ in self.log if qt == qtype]


class OpenDmarc:
    """opendmarc -f on inet:127.0.0.1:PORT, in its own mount namespace with `resolv` over
    /etc/resolv.conf."""

    def __init__(self, tmp: Path, resolv: Path):
        self.port = free_port()
        self.spec = f"inet:127.0.0.1:{self.port}"
        ignore = tmp / "ignore-hosts"
        ignore.write_text("")          # not the default "127.0.0.1": mailkeep connects from there
        conf = tmp / "opendmarc.conf"
        conf.write_text(f"Socket inet:{self.port}@127.0.0.1\nBackground false\nSyslog false\n"
                        f"AuthservID {AUTHSERV}\nPidFile {tmp / 'opendmarc.pid'}\nIgnoreHosts {ignore}\n"
                        "IgnoreAuthenticatedClients false\n"
                        "SPFSelfValidate true\nSPFIgnoreResults true\nRejectFailures true\n")
        self.log_path = tmp / "opendmarc.log"
        self.log = open(self.log_path, "w")
        # unshare execs sh, which execs opendmarc: self.proc is opendmarc itself once it runs.
        self.proc = subprocess.Popen([UNSHARE, "--mount", "--", "/bin/sh", "-c",
                                      'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv),
                                      OPENDMARC, "-f", "-c", str(conf)],
                                     stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", self.port, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"opendmarc did not start: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


class Dmarc:
    def __init__(self, milter: OpenDmarc, dns: Port53DnsServer, client: str):
        self.milter, self.dns, self.client = milter, dns, client


@pytest.fixture(scope="module")
def dmarc(tmp_path_factory):
    """OpenDMARC and its DNS for the module: the zones never change between tests."""
    if os.geteuid() != 0:
        pytest.skip("needs root: opendmarc runs in its own mount namespace with a private resolv.conf")
    if not Path(UNSHARE).exists():
        pytest.skip("unshare (util-linux) is missing")
    client = local_client_address()
    if client is None:
        pytest.skip("no IPv4 address outside 127/8 on this host to send from "
                    "(libspf2 passes every loopback client without checking SPF)")
    tmp = tmp_path_factory.mktemp("opendmarc")
    resolv = tmp / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_HOST}\noptions timeout:2 attempts:2\n")
    probe = subprocess.run([UNSHARE, "--mount", "--", "/bin/sh", "-c",
                            'mount --bind "$0" /etc/resolv.conf && cat /etc/resolv.conf', str(resolv)],
                           capture_output=True, text=True, timeout=10)
    if probe.returncode != 0 or DNS_HOST not in probe.stdout:
        pytest.skip(f"cannot bind-mount a private resolv.conf in a new mount namespace: {probe.stderr.strip()}")
    real_resolv = RESOLV_CONF.read_bytes()
    dns = Port53DnsServer(DNS_HOST).start()
    # reject.test: p=reject, and SPF allows one address that is not ours.
    other = "192.0.2.1" if client != "192.0.2.1" else "198.51.100.1"
    z = dns.zone("reject.test")
    z.txt("_dmarc.reject.test", "v=DMARC1; p=reject")
    z.txt("reject.test", f"v=spf1 ip4:{other} -all")
    # aligned.test: p=reject, and SPF allows our client address only.
    z = dns.zone("aligned.test")
    z.txt("_dmarc.aligned.test", "v=DMARC1; p=reject")
    z.txt("aligned.test", f"v=spf1 ip4:{client} -all")
    # macro.test and helo.test: SPF passes when a name made of the client address (RFC 7208 7,
    # %{i}) and, for helo.test, the HELO name (%{h}) exists, so the names OpenDMARC asks for show
    # what mailkeep handed over. (OpenDMARC gives libspf2 only the domain of MAIL FROM, so the
    # local part never reaches SPF: %{l} would be "postmaster".)
    z = dns.zone("macro.test")
    z.txt("_dmarc.macro.test", "v=DMARC1; p=reject")
    z.txt("macro.test", "v=spf1 exists:%{i}._spf.macro.test -all")
    z.records[f"{client}._spf.macro.test"] = (["127.0.0.2"], 300)
    z = dns.zone("helo.test")
    z.txt("_dmarc.helo.test", "v=DMARC1; p=reject")
    z.txt("helo.test", "v=spf1 exists:%{i}.%{h}._spf.helo.test -all")
    z.records[f"{client}.helo.test._spf.helo.test"] = (["127.0.0.2"], 300)
    o = None
    try:
        o = OpenDmarc(tmp, resolv)
        yield Dmarc(o, dns, client)
    finally:
        if o is not None:
            o.stop()
            print(f"--- opendmarc log ({o.log_path}) ---\n{o.log_path.read_text()[-4000:]}")
        dns.stop()
        assert RESOLV_CONF.read_bytes() == real_resolv, "the real /etc/resolv.conf changed"


@pytest.fixture
def dmarc_gateway(dmarc, backup_gateway, capture):  # noqa: F811
    dmarc.dns.reset_counts()
    return gateway(backup_gateway, capture, [dmarc.milter.spec], content_timeout=20)


def authentication_results(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").replace("\r\n\t", " ").replace("\r\n ", " ")
    return [line for line in head.split("\r\n") if line.lower().startswith("authentication-results:")]


def transaction(gw, dmarc: Dmarc, mail_from: str, msg: bytes, helo: str = "client.test"):
    """One transaction to alice@example.org from the client address, saying EHLO `helo` and
    MAIL FROM:<mail_from>; the reply to the end of DATA."""
    with RawSMTP(gw.host, gw.port, timeout=60, source_address=(dmarc.client, 0)) as c:
        assert c.banner.code == 220, c.banner
        assert c.ehlo(helo).code == 250
        r = c.send_message(mail_from, ["alice@example.org"], msg)
        c.cmd("QUIT")
        return r


def assert_nothing_kept(gw, capture, kept: int = 0):
    time.sleep(0.3)
    assert len(capture.messages) == kept, "a rejected message never goes upstream"
    assert len(archived_bodies(gw)) == kept, "nor into the archive"
    assert archived_bodies(gw, folder="Junk") == [], "nor into the junk folder"


def assert_rejected(r, domain: str):
    assert (r.code, r.enhanced) == (550, "5.7.1") and f"rejected by DMARC policy for {domain}" in r.text, r


def test_p_reject_domain_failing_spf_without_dkim_is_rejected_at_data(dmarc, dmarc_gateway, capture):
    gw = dmarc_gateway
    r = transaction(gw, dmarc, "ceo@reject.test", make_message("spoofed", sender="ceo@reject.test"))
    assert_rejected(r, "reject.test")
    assert_nothing_kept(gw, capture)
    # OpenDMARC checked SPF for the MAIL FROM domain and fetched the From: domain's policy.
    dns = dmarc.dns
    assert dns.count("reject.test", "TXT") >= 1 and dns.count("_dmarc.reject.test", "TXT") >= 1, dns.log
    assert f"milter {dmarc.milter.spec}: reject at end of message" in gw.log()


def test_forged_authentication_results_do_not_get_a_failing_message_through(dmarc, dmarc_gateway, capture):
    """A client's Authentication-Results in our authserv-id claiming dkim=pass for reject.test
    (OpenDMARC trusts those: TrustedAuthservIDs defaults to AuthservID) are removed before the
    milter sees them: the message is still rejected."""
    gw = dmarc_gateway
    forged = (f"{AR}dkim=pass header.d=reject.test header.s=sel\r\n"
              f"authentication-results: {AUTHSERV.upper()};\r\n\tdkim=pass (good signature) header.d=reject.test\r\n"
              ).encode()
    msg = make_message("forged", sender="ceo@reject.test", extra_headers=forged)
    assert_rejected(transaction(gw, dmarc, "ceo@reject.test", msg), "reject.test")
    assert_nothing_kept(gw, capture)


def test_aligned_domain_passing_spf_is_relayed_and_archived_with_dmarc_pass(dmarc, dmarc_gateway, capture):
    gw = dmarc_gateway
    r = transaction(gw, dmarc, "news@aligned.test", make_message("aligned", sender="news@aligned.test"))
    assert r.code == 250, r
    m = capture.wait_for(1, timeout=30)[0]
    assert m.mail_from == "news@aligned.test" and m.rcpt_tos == ["alice@example.org"], m
    ar = authentication_results(m.data)
    # OpenDMARC's two fields, and no other.
    assert sorted(ar) == [f"{AR}dmarc=pass (p=reject dis=none) header.from=aligned.test",
                          f"{AR}spf=pass smtp.mailfrom=aligned.test"], ar
    # The archive copy is the relayed message (after its own Return-Path/Delivered-To lines).
    copies = archived_bodies(gw)
    assert len(copies) == 1 and copies[0].endswith(m.data), (copies[0][:400] if copies else None, m.data[:400])
    dns = dmarc.dns
    assert dns.count("aligned.test", "TXT") >= 1 and dns.count("_dmarc.aligned.test", "TXT") >= 1, dns.log
    log = gw.log()
    assert f"milter {dmarc.milter.spec}: accept at end of message" in log and "status=sent" in log, log


def test_client_address_helo_and_mail_from_reach_opendmarcs_spf_check(dmarc, dmarc_gateway, capture):
    gw, dns, ip = dmarc_gateway, dmarc.dns, dmarc.client
    # Client address: macro.test's SPF expands %{i}, the address mailkeep sent in SMFIC_CONNECT.
    r = transaction(gw, dmarc, "news@macro.test", make_message("mailfrom", sender="news@macro.test"))
    assert r.code == 250, r
    assert set(dns.names("A")) == {f"{ip}._spf.macro.test"}, dns.log
    m = capture.wait_for(1, timeout=30)[0]
    ar = authentication_results(m.data)
    assert f"{AR}spf=pass smtp.mailfrom=macro.test" in ar and any("dmarc=pass" in a for a in ar), ar
    # MAIL FROM: the envelope domain, not the From: one, is SPF-checked. reject.test's SPF fails,
    # so From: aligned.test has no aligned pass.
    dns.reset_counts()
    r = transaction(gw, dmarc, "bounce@reject.test", make_message("env", sender="news@aligned.test"))
    assert_rejected(r, "aligned.test")
    spf_txt = [n for n in dns.names("TXT") if not n.startswith("_dmarc.")]
    assert set(spf_txt) == {"reject.test"}, dns.log
    assert_nothing_kept(gw, capture, kept=1)
    # HELO: with a null sender SPF checks the HELO name (RFC 7208 2.4); helo.test's SPF expands
    # %{h} and %{i}.
    dns.reset_counts()
    r = transaction(gw, dmarc, "", make_message("helo", sender="news@helo.test"), helo="helo.test")
    assert r.code == 250, r
    assert set(dns.names("A")) == {f"{ip}.helo.test._spf.helo.test"}, dns.log
    m = capture.wait_for(2, timeout=30)[1]
    assert m.mail_from == "<>", m     # aiosmtpd writes the null sender so
    ar = authentication_results(m.data)
    assert f"{AR}spf=pass smtp.helo=helo.test" in ar and any("dmarc=pass" in a for a in ar), ar
