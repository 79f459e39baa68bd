"""Command line: --help, --version, check-config (valid and each kind of error)."""

import re
import subprocess
import time

import pytest

from harness import MAILKEEP_BIN, render_ini, default_config, run_mailkeep


def test_version(mailkeep_bin):
    res = run_mailkeep("--version")
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(r"mailkeep \d+\.\d+\.\d+", res.stdout.strip()), res.stdout


def test_help(mailkeep_bin):
    res = run_mailkeep("--help")
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "serve" in out and "check-config" in out, out
    assert "-c" in out


def test_unknown_command_fails(mailkeep_bin):
    res = run_mailkeep("no-such-command")
    assert res.returncode != 0


def write_config(tmp_path, **overrides):
    path = tmp_path / "mailkeep.ini"
    path.write_text(render_ini(default_config(2525, "127.0.0.1:25", **overrides)))
    return path


def line_of(path, needle):
    """1-based number of the first line of `path` containing `needle`."""
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


def test_check_config_valid(mailkeep_bin, tmp_path):
    path = write_config(tmp_path, smtp={"hostname": "gw.check.example", "max_recipients": 37})
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 0, res.stderr
    # prints the effective settings
    assert "gw.check.example" in res.stdout
    assert "37" in res.stdout
    assert "example.net" in res.stdout


def test_check_config_defaults_for_missing_keys(mailkeep_bin, tmp_path):
    path = tmp_path / "minimal.ini"
    path.write_text("[smtp]\nlisten = 127.0.0.1:2525\n[relay]\ndomains = example.org\n")
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 0, res.stderr
    # documented defaults appear in the effective settings
    assert "52428800" in res.stdout
    assert "100" in res.stdout


BAD_VALUES = [
    # (section, key, bad value)
    ("smtp", "max_recipients", "abc"),
    ("smtp", "max_message_size", "-5"),
    ("smtp", "timeout", "ten"),
    ("smtp", "listen", "not-an-address"),
    ("smtp", "listen", "127.0.0.1:99999"),
    ("general", "log_level", "loud"),
    ("relay", "relay_from", "127.0.0.0/99"),
    ("delivery", "smarthost", "127.0.0.1:notaport"),
]


@pytest.mark.parametrize("section,key,value", BAD_VALUES, ids=[f"{s}.{k}={v}" for s, k, v in BAD_VALUES])
def test_check_config_bad_value(mailkeep_bin, tmp_path, section, key, value):
    path = write_config(tmp_path, **{section: {key: value}})
    lineno = line_of(path, f"{key} = {value}")
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert f"{path}:{lineno}: [{section}] {key}:" in res.stderr, res.stderr


def test_check_config_unknown_key(mailkeep_bin, tmp_path):
    path = write_config(tmp_path, smtp={"frobnicate": "yes"})
    lineno = line_of(path, "frobnicate")
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 1
    assert f"{path}:{lineno}: [smtp] frobnicate:" in res.stderr, res.stderr


def test_check_config_unknown_section(mailkeep_bin, tmp_path):
    path = tmp_path / "mailkeep.ini"
    text = render_ini(default_config(2525, "127.0.0.1:25")) + "\n[bogus]\nx = 1\n"
    path.write_text(text)
    lineno = line_of(path, "[bogus]")
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 1
    assert f"{path}:" in res.stderr and "[bogus]" in res.stderr, res.stderr
    # the error names the line of the section header (or of its first key)
    assert re.search(rf"{re.escape(str(path))}:({lineno}|{lineno + 1}):", res.stderr), res.stderr


def test_check_config_syntax_error(mailkeep_bin, tmp_path):
    path = tmp_path / "mailkeep.ini"
    path.write_text("[smtp]\nlisten = 127.0.0.1:2525\nthis line has no equals sign\n")
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 1
    assert f"{path}:3:" in res.stderr, res.stderr


def test_check_config_reports_first_error_line_not_last(mailkeep_bin, tmp_path):
    path = tmp_path / "mailkeep.ini"
    path.write_text("; comment\n\n[smtp]\nlisten = 127.0.0.1:2525\nmax_connections = many\n"
                    "[relay]\ndomains = example.org\n")
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 1
    assert f"{path}:5: [smtp] max_connections:" in res.stderr, res.stderr


def test_check_config_missing_file(mailkeep_bin, tmp_path):
    path = tmp_path / "does-not-exist.ini"
    res = run_mailkeep("check-config", "-c", str(path))
    assert res.returncode == 1
    assert str(path) in res.stderr, res.stderr


def test_serve_refuses_bad_config(mailkeep_bin, tmp_path):
    path = write_config(tmp_path, smtp={"max_recipients": "abc"})
    start = time.monotonic()
    try:
        res = subprocess.run([str(MAILKEEP_BIN), "serve", "-c", str(path)], capture_output=True,
                             text=True, timeout=10, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("serve kept running with an invalid config")
    assert res.returncode != 0
    assert "max_recipients" in res.stderr
    assert time.monotonic() - start < 10
