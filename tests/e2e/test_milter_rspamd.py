"""rspamd (Debian's rspamd) as a real milter: its proxy worker in milter mode, scanning through a
normal worker, on loopback with a configuration of the test's own (no redis, DNS answered by a
dnslib server on loopback, nothing reaches the network). GTUBE is rejected at DATA with rspamd's
reply, clean mail is relayed and archived with the headers rspamd adds, and while rspamd is
stopped mail follows [milter] default_action."""

from __future__ import annotations

import email.utils
import os
import re
import shutil
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from backup_support import backup_gateway, make_message  # noqa: F401  (fixture)
from dns_support import DnsServer
from harness import free_port, wait_port
from test_milter import send  # (RCPT replies, DATA reply) without raising

RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
# Release only, like the OpenDKIM tests: the ASan pass covers mailkeep's milter paths with the
# script and hostile milters (test_milter.py); this file is about rspamd's side of the protocol.
pytestmark = [pytest.mark.skipif(not Path(RSPAMD).exists(), reason="rspamd is not installed (test.sh installs it)"),
              pytest.mark.release_only]

# The standard GTUBE string (SpamAssassin's; rspamd's rspamd_check_gtube matches it in a text part).
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# What rspamd's proxy sends in milter mode for GTUBE: a reply code with the message of the forced
# reject action (the "Gtube pattern" text of rspamd_check_gtube), not the generic reject_message.
RSPAMD_REJECT = (554, "5.7.1", "Gtube pattern")


class Rspamd:
    """rspamd -f with a normal worker and a milter-mode proxy worker on 127.0.0.1, everything
    (config, db, run, log) under `base`, DNS to `dns`. Start-up takes about a second: the
    public-suffix list is replaced by a five-line one (the real one costs ~10 s to compile),
    hyperscan is off and the fuzzy_check filter (which resolves its servers at load) is left out."""

    def __init__(self, base: Path, dns: DnsServer):
        self.base = base
        for d in ("local/local.d", "db", "run"):
            (base / d).mkdir(parents=True, exist_ok=True)
        self.port, self.normal_port = free_port(), free_port()
        self.spec = f"inet:127.0.0.1:{self.port}"
        self.log_path = base / "rspamd.log"
        (base / "tld.dat").write_text("test\nexample\norg\ncom\nnet\n")
        conf = base / "rspamd.conf"
        conf.write_text(f"""
.include "$CONFDIR/common.conf"
options {{
  pidfile = "$RUNDIR/rspamd.pid";
  filters = "chartable,dkim,regexp";
  cache_file = "$DBDIR/symbols.cache";
  dynamic_conf = "$DBDIR/rspamd_dynamic";
  history_file = "$DBDIR/rspamd.history";
  stats_file = "$DBDIR/stats.ucl";
  control_socket = "$DBDIR/rspamd.sock mode=0600";
  hs_cache_dir = "$DBDIR/";
  tempdir = "$DBDIR";
  url_tld = "{base / 'tld.dat'}";
  disable_hyperscan = true;
  allow_raw_input = true;
  task_timeout = 8s;
  dns {{ nameserver = ["{dns.host}:{dns.port}"]; timeout = 0.5s; retransmits = 1; sockets = 2; }}
}}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "info"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{self.normal_port}"; count = 1; mime = true; }}
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{self.port}";
  milter = yes;
  timeout = 120s;
  count = 1;
  upstream "local" {{ default = yes; hosts = "127.0.0.1:{self.normal_port}"; }}
}}
""")
        # The extended headers on every message, also from loopback (mailkeep passes the client's
        # address, 127.0.0.1 here, which milter_headers would otherwise skip as local).
        (base / "local/local.d/milter_headers.conf").write_text(
            "extended_spam_headers = true;\nskip_local = false;\nskip_authenticated = false;\n")
        self.out = open(base / "rspamd.out", "w")
        self.proc = subprocess.Popen(
            [RSPAMD, "-f", "-u", "root", "-g", "root", "-c", str(conf),
             "--var", f"LOCAL_CONFDIR={base / 'local'}", "--var", f"DBDIR={base / 'db'}",
             "--var", f"RUNDIR={base / 'run'}", "--var", f"LOGDIR={base}"],
            stdout=self.out, stderr=self.out, start_new_session=True)
        try:
            wait_port("127.0.0.1", self.normal_port, timeout=30, proc=self.proc)
            wait_port("127.0.0.1", self.port, timeout=30, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"rspamd did not start: {(base / 'rspamd.out').read_text()}\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the main process (it stops its workers); SIGKILL to its process group if
        it has not gone in 15 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if not self.out.closed:
            self.out.close()


@pytest.fixture(scope="module")
def dns():
    srv = DnsServer().start()
    # Names rspamd looks up for these messages (SPF, DMARC, URL and RBL checks) get NXDOMAIN;
    # anything else is REFUSED by the server. Either way an answer at once, from loopback.
    for zone in ("test", "example", "org", "com", "net", "arpa"):
        srv.zone(zone)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory, dns):
    r = Rspamd(tmp_path_factory.mktemp("rspamd"), dns)
    yield r
    r.stop()


def gateway(backup_gateway, capture, spec: str, **milter):  # noqa: F811
    cfg = {"smtp": spec, "connect_timeout": 3, "command_timeout": 5, "content_timeout": 20, **milter}
    return backup_gateway(capture.address, milter=cfg)


def archived_bodies(gw, user="alice", folder="INBOX"):
    return [p.read_bytes() for p in gw.delivered(user, folder)]


def header_fields(data: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) of each field in the header section, in order."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    out: list[tuple[str, str]] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        else:
            name, _, value = line.partition(":")
            out.append((name, value.strip()))
    return out


def wait_for_log(read, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_gtube_is_rejected_at_data_with_rspamds_reply(backup_gateway, capture, rspamd):  # noqa: F811
    gw = gateway(backup_gateway, capture, rspamd.spec)
    body = f"This is the GTUBE test message.\r\n\r\n{GTUBE}\r\n\r\nNothing else.\r\n".encode()
    rcpt, data = send(gw, ["alice@example.org"], make_message("gtube", body=body))
    assert rcpt["alice@example.org"][0] == 250, rcpt
    code, text = RSPAMD_REJECT[0], f"{RSPAMD_REJECT[1]} {RSPAMD_REJECT[2]}".encode()
    assert data is not None and data[0] == code and text in data[1], data
    # rspamd decided it: the reject action and the GTUBE symbol in its own log line for the scan.
    rlog = wait_for_log(rspamd.log, "id: <gtube@client.test>, qid:")
    assert re.search(r"id: <gtube@client\.test>, qid: <[^>]+>, .*\(reject\): \[[0-9./]+\] \[GTUBE\(", rlog), rlog[-3000:]
    time.sleep(0.3)
    assert capture.messages == [] and capture.handler.data_attempts == 0, "nothing goes upstream"
    assert archived_bodies(gw) == [] and archived_bodies(gw, folder="Junk") == [], "nor into the archive"
    assert f"milter {rspamd.spec}: reject at end of message: {code} {RSPAMD_REJECT[1]} {RSPAMD_REJECT[2]}" \
        in gw.log(), gw.log()[-3000:]
    # The session goes on: a clean message right after on a new connection is accepted.
    assert send(gw, ["alice@example.org"], make_message("after-gtube"))[1][0] == 250
    assert len(capture.wait_for(1)) == 1


def test_clean_mail_is_relayed_and_archived_with_rspamds_headers(backup_gateway, capture, rspamd):  # noqa: F811
    gw = gateway(backup_gateway, capture, rspamd.spec)
    # Dated now: make_message's fixed date scores DATE_IN_PAST or DATE_IN_FUTURE, depending on the clock.
    msg = make_message("clean").replace(b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n",
                                        f"Date: {email.utils.formatdate()}\r\n".encode(), 1)
    assert b"28 Nov 2026" not in msg
    rcpt, data = send(gw, ["alice@example.org"], msg)
    assert data is not None and data[0] == 250, (rcpt, data)
    up = capture.wait_for(1)[0]
    assert up.rcpt_tos == ["alice@example.org"]
    fields = header_fields(up.data)
    names = [n for n, _ in fields]
    # What rspamd's milter mode adds here (milter_headers with extended_spam_headers), each once,
    # appended after the client's fields (in an order of rspamd's own that changes from run to run:
    # it walks a Lua table).
    added = ["X-Rspamd-Action", "X-Rspamd-Queue-Id", "X-Rspamd-Server", "X-Spamd-Result"]
    assert names[:6] == ["Received", "From", "To", "Subject", "Message-ID", "Date"], (names, up.data[:2000])
    assert sorted(names[6:]) == added, (names, up.data[:2000])
    value = dict(fields)
    assert value["X-Spamd-Result"].startswith("default: False ["), up.data[:2000]
    assert value["X-Rspamd-Action"] == "no action", up.data[:2000]
    # Folded as rspamd folds it (one symbol a line), CRLF throughout.
    assert b"X-Spamd-Result: default: False [" in up.data and b"];\r\n\t" in up.data and b"\n\n" not in up.data
    assert up.data.split(b"\r\n\r\n", 1)[1] == msg.split(b"\r\n\r\n", 1)[1], "body untouched"
    # The archive copy is the relayed message byte for byte, rspamd's headers included.
    copies = archived_bodies(gw)
    assert len(copies) == 1 and copies[0].endswith(up.data), (copies[:1], up.data[:500])
    # rspamd scanned it under mailkeep's queue id (the milter's "i" macro).
    assert value["X-Rspamd-Queue-Id"] and f"{value['X-Rspamd-Queue-Id']}: milter {rspamd.spec}: accept" in gw.log()
    # A spam flag set before us: rspamd removes it (milter_headers' remove_upstream_spam_flag, a
    # header change with an empty value) -- gone from the relayed and the archived copy.
    flagged = make_message("flagged", extra_headers=b"X-Spam: Yes\r\n")
    assert send(gw, ["alice@example.org"], flagged)[1][0] == 250
    up2 = capture.wait_for(2)[1]
    names2 = [n for n, _ in header_fields(up2.data)]
    assert "X-Spam" not in names2 and "X-Spamd-Result" in names2, up2.data[:2000]
    assert b"SPAM_FLAG(" in up2.data, "rspamd saw the flag before it removed it"
    copy2 = [c for c in archived_bodies(gw) if b"Subject: flagged\r\n" in c]
    assert len(copy2) == 1 and copy2[0].endswith(up2.data)
    assert "following default_action" not in gw.log(), gw.log()[-2000:]


def test_stopped_rspamd_follows_default_action(backup_gateway, capture, dns, tmp_path):  # noqa: F811
    r = Rspamd(tmp_path / "rspamd", dns)
    try:
        gw = gateway(backup_gateway, capture, r.spec)                      # default_action = tempfail
        assert send(gw, ["alice@example.org"], make_message("while-up"))[1][0] == 250
        assert b"X-Spamd-Result:" in capture.wait_for(1)[0].data
        # A session opened while rspamd runs, rspamd stopped before its MAIL: the transaction gets
        # 451 4.7.1. rspamd negotiates no replies before end of message (SMFIP_NR_CONN..NR_BODY), so
        # the MAIL packet still "goes out" into the closed connection and MAIL may get its 250;
        # the next write finds the connection gone (EPIPE) and RCPT gets the 451.
        with smtplib.SMTP(gw.host, gw.port, timeout=60) as s:
            assert s.ehlo("client.test")[0] == 250
            r.stop()
            mail = s.mail("someone@client.test")
            rcpt = s.rcpt("alice@example.org") if mail[0] == 250 else None
            refusal = rcpt if mail[0] == 250 else mail
            assert (refusal[0], refusal[1][:5]) == (451, b"4.7.1"), (mail, rcpt)
            assert s.docmd("DATA")[0] >= 500, "no DATA without a recipient"
        # A session opened while it is down: refused at the greeting, 421 4.7.1.
        with pytest.raises(smtplib.SMTPConnectError) as e:
            send(gw, ["alice@example.org"], make_message("while-down"))
        assert e.value.smtp_code == 421 and e.value.smtp_error.startswith(b"4.7.1"), e.value
        time.sleep(0.3)
        assert len(capture.messages) == 1 and len(archived_bodies(gw)) == 1, "nothing relayed or archived while down"
        log = gw.log()
        assert re.search(rf"milter {re.escape(r.spec)}: .* at (MAIL|RCPT); following default_action = tempfail", log), log[-3000:]
        assert "at connect; following default_action = tempfail" in log, log[-3000:]
        # default_action = accept: the same stopped rspamd is skipped, the mail goes through unscanned.
        gw2 = gateway(backup_gateway, capture, r.spec, default_action="accept")
        rcpt, data = send(gw2, ["alice@example.org"], make_message("accepted"))
        assert data is not None and data[0] == 250, (rcpt, data)
        up = capture.wait_for(2)[1]
        assert b"Subject: accepted\r\n" in up.data and b"X-Spamd-Result" not in up.data and b"X-Rspamd" not in up.data
        assert len(archived_bodies(gw2)) == 1 and archived_bodies(gw2)[0].endswith(up.data)
        assert f"milter {r.spec}:" in gw2.log() and "following default_action = accept" in gw2.log()
    finally:
        r.stop()
