"""The manual pages the build generates (build/man/, `mailkeep man-page 8|5`): mailkeep.ini(5) has
every key `mailkeep check-config` knows, under its section; mailkeep(8) has every command and
subcommand `--help` lists, with its options; `mandoc -T lint` finds no warning or error in either.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from harness import MAILKEEP_BIN, run_mailkeep


def page(section: int) -> str:
    res = run_mailkeep("man-page", str(section))
    assert res.returncode == 0, res.stderr
    return res.stdout


def unroff(text: str) -> str:
    return text.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")


def test_config_page_has_every_key_under_its_section():
    res = run_mailkeep("check-config")
    assert res.returncode == 0, res.stderr
    keys, section = [], None
    for line in res.stdout.splitlines():
        if m := re.match(r"^\[(\w+)\]$", line):
            section = m.group(1)
        elif m := re.match(r"^(\w+) = ", line):
            keys.append((section, m.group(1)))
    assert len(keys) > 60, keys
    text = unroff(page(5))
    sections = {m.group(1): m.start() for m in re.finditer(r"^\.SH \[(\w+)\]$", text, re.M)}
    order = sorted(sections.items(), key=lambda kv: kv[1])
    bounds = {name: (start, order[i + 1][1] if i + 1 < len(order) else len(text)) for i, (name, start) in enumerate(order)}
    missing = []
    for sec, key in keys:
        if sec not in bounds:
            missing.append(f"[{sec}] (no section)")
            continue
        lo, hi = bounds[sec]
        if not re.search(rf"^\.BR {re.escape(key)} \" = ", text[lo:hi], re.M):
            missing.append(f"[{sec}] {key}")
    assert not missing, f"keys missing from mailkeep.ini(5): {missing}"


def subcommands(path: list[str]) -> list[list[str]]:
    res = subprocess.run([str(MAILKEEP_BIN), *path, "--help"], capture_output=True, text=True, timeout=30)
    out, found, in_subs = res.stdout, [], False
    for line in out.splitlines():
        if line.startswith("Subcommands:"):
            in_subs = True
            continue
        if in_subs:
            m = re.match(r"^  (\S+)\s", line)
            if m:
                found.append(path + [m.group(1)])
            elif line and not line.startswith(" "):
                in_subs = False
    return found


def test_command_page_has_every_command_and_option():
    text = unroff(page(8))
    todo, seen = subcommands([]), []
    while todo:
        cmd = todo.pop(0)
        seen.append(cmd)
        todo.extend(subcommands(cmd))
    assert len(seen) > 30, seen
    missing = [" ".join(c) for c in seen if f".SS mailkeep {' '.join(c)}\n" not in text]
    assert not missing, f"commands missing from mailkeep(8): {missing}"
    # every long option of every command's --help
    for cmd in seen:
        res = subprocess.run([str(MAILKEEP_BIN), *cmd, "--help"], capture_output=True, text=True, timeout=30)
        start = text.index(f".SS mailkeep {' '.join(cmd)}\n")
        end = text.find(".SS ", start + 4)
        block = text[start:end if end > 0 else len(text)]
        options = res.stdout.split("Options:", 1)[1].split("Subcommands:", 1)[0] if "Options:" in res.stdout else ""
        for opt in set(re.findall(r"^\s+(?:-\w,)?(--[a-z][a-z0-9-]+)", options, re.M)) - {"--help", "--version"}:
            assert opt in block, f"mailkeep {' '.join(cmd)}: {opt} not in its section of mailkeep(8)"


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc not installed (test.sh installs it)")
@pytest.mark.parametrize("section", [8, 5])
def test_mandoc_lint_is_clean(tmp_path, section):
    f = tmp_path / f"page.{section}"
    f.write_text(page(section))
    res = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(f)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "", res.stdout
