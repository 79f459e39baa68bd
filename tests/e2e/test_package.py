"""The Debian package, as an administrator meets it: `cmake --build build --target package` makes
mailkeep_VERSION_amd64.deb; lintian reports no error; `dpkg -i` installs the binary, the conffile,
the unit and the man pages and creates the user and the directories; `mailkeep check-config` accepts
the installed configuration; the installed binary, started with that configuration on a test port,
takes a message; `dpkg -r` keeps the configuration; `dpkg --purge` removes it and keeps the archive.

It installs into the machine's real /usr, /etc and /var (CI's machine is fresh and root): skipped
unless root, and when a mailkeep package is already installed from elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from harness import MAILKEEP_BIN, free_port, wait_port

pytestmark = pytest.mark.release_only   # packages the release build

BUILD = MAILKEEP_BIN.parent


def run(*cmd: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def installed_version() -> str | None:
    res = run("dpkg-query", "-W", "-f=${Status} ${Version}", "mailkeep", check=False)
    return res.stdout.split()[-1] if res.returncode == 0 and "install ok installed" in res.stdout else None


@pytest.fixture(scope="module")
def deb() -> Path:
    if os.geteuid() != 0:
        pytest.skip("installs a package: needs root")
    if installed_version():
        pytest.skip("a mailkeep package is installed already; not touching it")
    for tool in ("dpkg-deb", "lintian", "dpkg-shlibdeps"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (test.sh installs lintian and dpkg-dev)")
    run("cmake", "--build", str(BUILD), "--target", "package", timeout=900)
    debs = sorted(BUILD.glob("mailkeep_*_amd64.deb"))
    assert debs, list(BUILD.iterdir())
    return debs[-1]


def test_package_lifecycle(deb: Path, tmp_path: Path):
    assert re.fullmatch(r"mailkeep_\d+\.\d+\.\d+_amd64\.deb", deb.name), deb.name
    lint = run("lintian", "--no-tag-display-limit", str(deb), check=False)
    errors = [l for l in lint.stdout.splitlines() if l.startswith("E:")]
    assert not errors, lint.stdout
    info = run("dpkg-deb", "-I", str(deb)).stdout
    depends = next(l for l in info.splitlines() if l.strip().startswith("Depends:"))
    for lib in ("libxapian30", "libgmime-3.0-0", "libssl3", "libsystemd0", "adduser"):   # from shlibdeps
        assert lib in depends, depends
    contents = run("dpkg-deb", "-c", str(deb)).stdout
    for path in ("./usr/sbin/mailkeep", "./etc/mailkeep/mailkeep.ini", "./lib/systemd/system/mailkeep.service",
                 "./usr/share/man/man8/mailkeep.8.gz", "./usr/share/man/man5/mailkeep.ini.5.gz",
                 "./usr/share/doc/mailkeep/copyright"):
        assert path in contents, f"{path} not in the package:\n{contents}"

    mail_archive = Path("/var/mail/mailkeep")
    try:
        run("dpkg", "-i", str(deb))
        assert installed_version()
        conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "mailkeep").stdout
        assert "/etc/mailkeep/mailkeep.ini" in conffiles, conffiles
        st = os.stat("/etc/mailkeep/mailkeep.ini")
        assert oct(st.st_mode & 0o777) == "0o640", oct(st.st_mode)
        for d in ("/var/lib/mailkeep", "/var/mail/mailkeep"):
            assert Path(d).is_dir(), d
            assert Path(d).owner() == "mailkeep", (d, Path(d).owner())
        check = run("/usr/sbin/mailkeep", "check-config", "-c", "/etc/mailkeep/mailkeep.ini")
        assert "listen = 0.0.0.0:25" in check.stdout and "archive = /var/mail/mailkeep" in check.stdout, check.stdout
        assert run("man", "-w", "mailkeep.ini", check=False).stdout.strip().endswith("mailkeep.ini.5.gz")

        # The installed binary, the installed configuration, a test port instead of 25.
        port = free_port()
        config = Path("/etc/mailkeep/mailkeep.ini").read_text().replace("listen = 0.0.0.0:25", f"listen = 127.0.0.1:{port}")
        config = config.replace("listen = 127.0.0.1:8080", "listen =")
        test_ini = tmp_path / "installed.ini"
        test_ini.write_text(config)
        log = open(tmp_path / "mailkeep.log", "wb")
        proc = subprocess.Popen(["/usr/sbin/mailkeep", "serve", "-c", str(test_ini)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, cwd="/")
        try:
            wait_port("127.0.0.1", port, 15, proc)
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.ehlo("client.test")
                refused = s.sendmail("a@client.test", ["someone@example.net"],
                                     b"From: a@client.test\r\nSubject: from the package\r\n\r\nhello\r\n")
                assert refused == {}
            outbox = Path("/var/lib/mailkeep/outbox/new")
            deadline = time.monotonic() + 10
            while not (outbox.is_dir() and any(outbox.iterdir())) and time.monotonic() < deadline:
                time.sleep(0.1)
            files = list(outbox.iterdir())
            assert len(files) == 1 and b"from the package" in files[0].read_bytes(), files
            assert files[0].owner() == "mailkeep", files[0].owner()
        finally:
            proc.terminate()
            proc.wait(15)
            log.close()
        # a "kept message" in the archive, to see what purge leaves
        keep = mail_archive / "example.org" / "alice" / "cur"
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "1.test:2,S").write_bytes(b"Subject: kept\r\n\r\nnever deleted\r\n")

        run("dpkg", "-r", "mailkeep")
        assert not Path("/usr/sbin/mailkeep").exists()
        assert Path("/etc/mailkeep/mailkeep.ini").exists(), "remove must keep the configuration"
        purge = run("dpkg", "--purge", "mailkeep")
        assert not Path("/etc/mailkeep/mailkeep.ini").exists(), "purge must remove the configuration"
        assert (keep / "1.test:2,S").read_bytes().endswith(b"never deleted\r\n"), "purge deleted mail"
        assert "/var/mail/mailkeep is kept" in purge.stdout + purge.stderr, purge.stdout + purge.stderr
        assert installed_version() is None
    finally:
        if installed_version():
            run("dpkg", "--purge", "mailkeep", check=False)
        shutil.rmtree(mail_archive / "example.org", ignore_errors=True)
        shutil.rmtree("/var/lib/mailkeep/outbox", ignore_errors=True)
