"""Privilege drop: started as root, mailkeep runs as [general] user (real, effective, saved
and filesystem ids), with no supplementary groups, no capabilities, not dumpable and
RLIMIT_CORE 0; its data directories belong to that user. `user = root` keeps root with a
warning; an unknown user is a startup error."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import Mailkeep, RawSMTP, default_config, free_port, wait_port
from tls_support import client_context, make_pki, starttls

MSG = b"From: a@client.test\r\nSubject: unprivileged\r\n\r\nhello\r\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def mailkeep_ids() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("mailkeep")
    except KeyError:
        pytest.skip("user mailkeep does not exist (run setup.sh)")
    return pw.pw_uid, pw.pw_gid


@pytest.fixture
def workdir(mailkeep_bin):
    # pytest's tmp_path is under a 0700 directory the unprivileged user cannot traverse.
    d = Path(tempfile.mkdtemp(prefix="mailkeep-priv-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def run(workdir, capture):
    started: list[Mailkeep] = []

    def start(name: str = "mk", **overrides) -> Mailkeep:
        cfg = default_config(free_port(), capture.address, **overrides)
        mk = Mailkeep(workdir / name, cfg)
        os.chmod(mk.workdir, 0o755)
        started.append(mk)
        return mk.start()

    yield start
    for mk in started:
        code = mk.stop()
        print(f"--- mailkeep log (exit {code}) ---\n{mk.log()[-3000:]}")


def status(pid: int) -> dict[str, list[str]]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.split()
    return out


def assert_unprivileged(pid: int, uid: int, gid: int) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):     # every thread, not just the main one
        st = {}
        for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            st[key] = value.split()
        assert st["Uid"] == [str(uid)] * 4, f"thread {task}: Uid {st['Uid']}"
        assert st["Gid"] == [str(gid)] * 4, f"thread {task}: Gid {st['Gid']}"
        assert st["Groups"] == [], f"thread {task}: supplementary groups {st['Groups']}"
        assert int(st["CapPrm"][0], 16) == 0 and int(st["CapEff"][0], 16) == 0, st["CapEff"]
        assert int(st["CapAmb"][0], 16) == 0


def core_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line.split()[4:6]
            return soft, hard
    raise AssertionError("no core limit line")


def relay_one(mk, capture, sender: str = "a@client.test") -> None:
    before = len(capture.messages)
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        r = c.send_message(sender, ["user@example.org"], MSG)
        assert r.code == 250, str(r)
    assert any(m.mail_from == sender for m in capture.wait_for(before + 1))


def test_drops_to_mailkeep_user(run, capture, workdir):
    uid, gid = mailkeep_ids()
    mk = run(general={"user": "mailkeep", "log_level": "info"})
    assert_unprivileged(mk.pid, uid, gid)
    # Not dumpable: the kernel makes /proc/PID/* owned by root for a non-dumpable process.
    assert os.stat(f"/proc/{mk.pid}/status").st_uid == 0
    assert core_limit(mk.pid)[0] == "0", core_limit(mk.pid)
    assert core_limit(mk.pid)[1] == "0", f"hard core limit {core_limit(mk.pid)[1]}: could be raised again"
    assert "running as user mailkeep" in mk.log()
    assert "user = root" not in mk.log()

    relay_one(mk, capture)
    # Everything mailkeep creates belongs to the unprivileged user.
    data = mk.workdir / "data"
    for path in [data, data / "spool", *data.rglob("*")]:
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (uid, gid), f"{path} owned by {st.st_uid}:{st.st_gid}"
    # Still the same ids after work was done (no thread regained privileges).
    assert_unprivileged(mk.pid, uid, gid)


def test_drop_after_binding_privileged_port(workdir, capture):
    uid, gid = mailkeep_ids()
    port = None
    for candidate in range(587, 1024, 7):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        port = candidate
        break
    if port is None:
        pytest.skip("no free privileged port")
    cfg = default_config(port, capture.address, general={"user": "mailkeep"})
    mk = Mailkeep(workdir / "low", cfg)
    os.chmod(mk.workdir, 0o755)
    mk.start()
    try:
        assert_unprivileged(mk.pid, uid, gid)
        relay_one(mk, capture)
    finally:
        mk.stop()


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry))
    return out


def install_root_only(pair, cert: Path, key: Path) -> None:
    """As certbot leaves them: the key 0600 root, replaced by rename."""
    for src, dst, mode in ((pair.cert, cert, 0o644), (pair.key, key, 0o600)):
        tmp = dst.with_suffix(".new")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, mode)
        tmp.replace(dst)


def presented_cert(mk, pki) -> bytes:
    c = RawSMTP(mk.host, mk.port)
    c.ehlo()
    assert c.cmd("STARTTLS").code == 220
    with starttls(c, client_context(pki.ca)) as t:
        assert t.cmd("EHLO x").code == 250
        return t.sock.getpeercert(binary_form=True)


def presented_https_cert(port: int, pki) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with client_context(pki.ca).wrap_socket(raw, server_hostname="mx.test") as s:
        return s.getpeercert(binary_form=True)


def test_root_only_tls_keys_reloaded_on_sighup_after_drop(workdir, capture):
    """The usual setup: keys readable by root only, in a directory only root may enter, and
    renewed in place. Loaded before the drop; SIGHUP, which arrives when the server runs as
    mailkeep, re-reads them through the privileged reader: new STARTTLS and HTTPS sessions get
    the renewed certificates. The reader is a root process that holds nothing but its socket
    and ends with the server."""
    uid, gid = mailkeep_ids()
    pki = make_pki(workdir / "pki")
    certs = workdir / "certs"
    certs.mkdir(mode=0o700)
    smtp_cert, smtp_key = certs / "smtp.pem", certs / "smtp.key"
    http_cert, http_key = certs / "http.pem", certs / "http.key"
    install_root_only(pki.server, smtp_cert, smtp_key)
    install_root_only(pki.server, http_cert, http_key)
    http_port = free_port()
    cfg = default_config(free_port(), capture.address, general={"user": "mailkeep"},
                         tls={"cert": smtp_cert, "key": smtp_key},
                         http={"listen": f"127.0.0.1:{http_port}", "cert": http_cert, "key": http_key})
    mk = Mailkeep(workdir / "tlsmk", cfg)
    os.chmod(mk.workdir, 0o755)
    mk.start()
    try:
        wait_port("127.0.0.1", http_port)
        assert_unprivileged(mk.pid, uid, gid)
        helpers = children(mk.pid)
        assert len(helpers) == 1, helpers
        helper = helpers[0]
        assert Path(f"/proc/{helper}/cmdline").read_bytes().split(b"\0")[:2] == [b"mailkeep", b"privileged-reader"]
        assert status(helper)["Uid"][0] == "0"
        assert sorted(int(fd) for fd in os.listdir(f"/proc/{helper}/fd")) == [0, 1, 2, 3]
        assert core_limit(helper) == ("0", "0")
        assert presented_cert(mk, pki) == pki.server.der()
        assert presented_https_cert(http_port, pki) == pki.server.der()

        renewed = pki.leaf("server-renewed", "mx.test renewed", "DNS:mx.test")
        install_root_only(renewed, smtp_cert, smtp_key)
        install_root_only(renewed, http_cert, http_key)
        before = mk.log().count("SIGHUP:")
        mk.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while mk.log().count("SIGHUP:") < before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        log = mk.log()
        assert f"SIGHUP: TLS certificate {smtp_cert} reloaded" in log, log
        assert f"SIGHUP: TLS certificate {http_cert} reloaded" in log, log
        assert "reload failed" not in log, log
        assert presented_cert(mk, pki) == renewed.der()
        assert presented_https_cert(http_port, pki) == renewed.der()
        relay_one(mk, capture)

        # A broken renewal is refused and the running certificate stays.
        smtp_key.write_text("not a key\n")
        mk.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "reload failed" not in mk.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"[tls] key {smtp_key}" in mk.log(), mk.log()
        assert presented_cert(mk, pki) == renewed.der()
    finally:
        mk.stop()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{helper}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{helper}").exists(), "the privileged reader outlived the server"


def test_user_root_keeps_root_and_warns(run, capture):
    mk = run(general={"user": "root"})
    st = status(mk.pid)
    assert st["Uid"] == ["0"] * 4
    assert "user = root" in mk.log()
    assert "warning" in [l for l in mk.log().splitlines() if "user = root" in l][0]
    relay_one(mk, capture)


def test_unknown_user_is_fatal(workdir, capture, mailkeep_bin):
    cfg = default_config(free_port(), capture.address, general={"user": "no-such-user-mk"})
    mk = Mailkeep(workdir / "nouser", cfg)
    mk.start_error = None
    with pytest.raises(RuntimeError):
        mk.start(timeout=10)
    assert mk.proc.returncode not in (None, 0)
    assert "no such user" in mk.log().lower(), mk.log()
    assert "no-such-user-mk" in mk.log()


def test_default_user_is_mailkeep(mailkeep_bin, tmp_path):
    """Without [general] user the server drops to the mailkeep system user."""
    cfg = default_config(free_port(), "127.0.0.1:25")
    del cfg["general"]["user"]
    path = tmp_path / "c.ini"
    from harness import render_ini, run_mailkeep
    path.write_text(render_ini(cfg))
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 0, res.stderr
    assert "user = mailkeep" in res.stdout


def test_spam_model_trained_by_root_is_usable_by_the_server(workdir, capture, mailkeep_bin):
    """The operator trains as root in the server's data directory; the server, as mailkeep, reads
    that model and rewrites it when the /spam page reclassifies."""
    import json
    import urllib.request
    uid, gid = mailkeep_ids()
    data = workdir / "spamdata"
    data.mkdir()
    os.chown(data, uid, gid)
    corpus = workdir / "corpus"
    for kind, words in (("spam", "cheap pills viagra winner prize"), ("ham", "meeting minutes agenda review")):
        (corpus / kind).mkdir(parents=True)
        for i in range(5):
            (corpus / kind / f"{i}.eml").write_text(f"Subject: {words} {i}\n\n{words} {words}\n")
    token = "priv-token-0123456789abcdef"
    http_port = free_port()
    cfg = default_config(free_port(), capture.address, general={"user": "mailkeep"},
                         spam={"enabled": "true", "model": str(data / "spam.model"),
                               "history": str(data / "history.db")},
                         http={"listen": f"127.0.0.1:{http_port}", "admin_token": token})
    mk = Mailkeep(workdir / "mk", cfg)
    os.chmod(mk.workdir, 0o755)
    train = subprocess.run([str(mailkeep_bin), "spam", "train", "-c", str(mk.config_path),
                            "--spam", str(corpus / "spam"), "--ham", str(corpus / "ham")],
                           capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    for name in ("spam.model", "spam.model.lock"):
        assert (data / name).stat().st_uid == uid, f"{name} belongs to root"
    mk.start()
    try:
        assert "spam model" in mk.log() and "loaded" in mk.log(), mk.log()
        with RawSMTP(mk.host, mk.port) as c:
            c.ehlo()
            assert c.send_message("s@internet.test", ["user@example.org"],
                                  b"Subject: cheap pills\r\n\r\nwinner prize\r\n").code == 250
        sig = [l.split(":", 1)[1].strip() for l in capture.wait_for(1)[0].data.decode().splitlines()
               if l.startswith("X-Mailkeep-Signature:")][0]
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/spam/reclassify",
                                     data=json.dumps({"signature": sig, "as": "ham"}).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and json.load(r)["as"] == "ham"
        assert (data / "spam.model").stat().st_uid == uid
        assert (data / "history.db").stat().st_uid == uid
    finally:
        mk.stop()
