"""`mailkeep alias create|list|show|disable|purge -c FILE`, against the running server's store."""

from __future__ import annotations

import re

import pytest

from alias_support import (  # noqa: F401  (alias_env is a fixture)
    AID_ALPHABET, ALIAS_DOMAIN, TARGET, alias_env, cli, db_execute, parse_kv, parse_list, send,
)

LIST_HEADER = ["aid", "target", "status", "uses", "max_usage", "valid_until", "created"]
CREATE_KEYS = ["alias", "aid", "target", "status", "created", "valid_until", "max_usage", "uses",
               "creator", "manage_token"]


def test_create_output(alias_env):
    env = alias_env()
    out = env.cli("create", "--target", TARGET, "--days", "2", "--max-usage", "3")
    assert out.returncode == 0, out.stderr
    kv = parse_kv(out.stdout)
    assert list(kv) == CREATE_KEYS, out.stdout
    assert kv["alias"] == f"{kv['aid']}@{ALIAS_DOMAIN}"
    assert len(kv["aid"]) == 14 and set(kv["aid"]) <= AID_ALPHABET
    assert (kv["target"], kv["status"], kv["max_usage"], kv["uses"], kv["creator"]) == (TARGET, "live", "3", "0", "cli")
    assert re.fullmatch(r"[0-9a-f]{64}", kv["manage_token"])
    # the token works against the API of the running server
    g = env.http.get(kv["aid"], kv["manage_token"])
    assert g.status == 200 and g.json["max_usage"] == 3 and g.json["valid_until"] == kv["valid_until"], str(g)


def test_create_defaults_unlimited(alias_env):
    env = alias_env()
    kv = parse_kv(env.cli("create", "--target", TARGET).stdout)
    assert kv["max_usage"] in ("unlimited", "-", ""), kv
    assert env.http.get(kv["aid"], kv["manage_token"]).json["max_usage"] is None


@pytest.mark.parametrize("args", [
    ["--target", "not-an-address"],
    ["--target", "x@alias.localhost"],
    ["--target", "x@[127.0.0.1]"],
    ["--target", TARGET, "--days", "0"],
    ["--target", TARGET, "--days", "61"],
    ["--target", TARGET, "--max-usage", "0"],
    ["--target", TARGET, "--max-usage", "101"],
    ["--target", TARGET, "--days", "abc"],
    [],
])
def test_create_invalid(alias_env, args):
    env = alias_env()
    out = env.cli("create", *args)
    assert out.returncode != 0, out
    assert out.stderr.strip(), out
    assert parse_list(env.cli("list").stdout)[1] == []


def test_list(alias_env):
    env = alias_env()
    assert env.cli("list").stdout.splitlines() == ["# " + "\t".join(LIST_HEADER)]
    a = env.create(TARGET, max_usage=2)
    b = env.create("b@example.org")
    c = env.create("c@example.org", max_usage=1)
    assert send(env.smtp_port, [a["alias"]]).delivered
    assert send(env.smtp_port, [c["alias"]]).delivered
    env.http.delete(b["aid"], b["manage_token"])
    out = env.cli("list")
    assert out.returncode == 0, out.stderr
    header, rows = parse_list(out.stdout)
    assert header == LIST_HEADER
    by_aid = {r["aid"]: r for r in rows}
    assert set(by_aid) == {a["aid"], b["aid"], c["aid"]}
    assert (by_aid[a["aid"]]["status"], by_aid[a["aid"]]["uses"], by_aid[a["aid"]]["max_usage"]) == ("live", "1", "2")
    assert (by_aid[b["aid"]]["status"], by_aid[b["aid"]]["target"]) == ("disabled", "b@example.org")
    assert (by_aid[c["aid"]]["status"], by_aid[c["aid"]]["uses"]) == ("used-up", "1")
    assert by_aid[a["aid"]]["valid_until"] == a["valid_until"]


def test_show(alias_env):
    env = alias_env()
    a = env.create(TARGET, days=4, max_usage=9)
    out = env.cli("show", a["aid"])
    assert out.returncode == 0, out.stderr
    kv = parse_kv(out.stdout)
    assert kv["alias"] == a["alias"] and kv["target"] == TARGET and kv["status"] == "live"
    assert kv["valid_until"] == a["valid_until"] and kv["max_usage"] == "9" and kv["uses"] == "0"
    assert kv["creator"] == "127.0.0.1"
    assert "manage_token" not in kv, "show must not reveal anything token-like"
    assert a["manage_token"] not in out.stdout
    # upper-case aid is the same alias (as at RCPT)
    up = env.cli("show", a["aid"].upper())
    assert up.returncode == 0 and parse_kv(up.stdout)["aid"] == a["aid"], up


def test_show_unknown(alias_env):
    env = alias_env()
    out = env.cli("show", "abcdefghjkmnpq")
    assert out.returncode == 1 and out.stderr.strip() and not out.stdout.strip(), out


def test_disable(alias_env):
    env = alias_env()
    a = env.create(TARGET)
    out = env.cli("disable", a["aid"])
    assert (out.returncode, out.stdout) == (0, f"disabled {a['aid']}\n"), out
    assert parse_kv(env.cli("show", a["aid"]).stdout)["status"] == "disabled"
    assert env.http.get(a["aid"], a["manage_token"]).json["status"] == "disabled"
    res = send(env.smtp_port, [a["alias"]])
    assert res.rcpt[a["alias"]][0] == 550 and res.rcpt[a["alias"]][1].startswith(b"5.2.1"), res


def test_disable_unknown(alias_env):
    env = alias_env()
    out = env.cli("disable", "abcdefghjkmnpq")
    assert out.returncode == 1, out
    assert "abcdefghjkmnpq" in out.stderr and out.stdout == "", out


def test_purge(alias_env):
    env = alias_env()
    live = env.create(TARGET, max_usage=3)
    unlimited = env.create(TARGET)
    expired = env.create(TARGET)
    used_up = env.create(TARGET, max_usage=1)
    disabled = env.create(TARGET)
    assert send(env.smtp_port, [live["alias"]]).delivered
    assert send(env.smtp_port, [used_up["alias"]]).delivered
    db_execute(env.db_path, "UPDATE aliases SET valid_until = strftime('%s','now') - 10 WHERE id = ?",
               (expired["aid"],))
    env.http.delete(disabled["aid"], disabled["manage_token"])
    out = env.cli("purge")
    assert (out.returncode, out.stdout) == (0, "purged 3 aliases\n"), out
    rows = parse_list(env.cli("list").stdout)[1]
    assert {r["aid"] for r in rows} == {live["aid"], unlimited["aid"]}
    # purged aliases are unknown now: 5.1.1, and the API says not-found
    for gone in (expired, used_up, disabled):
        res = send(env.smtp_port, [gone["alias"]])
        code, msg = res.rcpt[gone["alias"]]
        assert code == 550 and msg.startswith(b"5.1.1"), (gone["aid"], res)
        assert env.http.get(gone["aid"], gone["manage_token"]).status == 404
    # the live ones keep working and keep their counts
    assert send(env.smtp_port, [live["alias"]]).delivered
    assert env.http.get(live["aid"], live["manage_token"]).json["uses"] == 2
    assert env.cli("purge").stdout == "purged 0 aliases\n"


def test_cli_without_server(tmp_path, mailkeep_bin):
    """The CLI works on the store file alone (no server running)."""
    from alias_support import alias_config
    from harness import render_ini
    ini = tmp_path / "mk.ini"
    ini.write_text(render_ini(alias_config(2525, "127.0.0.1:1", 8080)))
    out = cli(ini, "create", "--target", TARGET, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    aid = parse_kv(out.stdout)["aid"]
    assert (tmp_path / "data" / "mailkeep.db").is_file()
    assert parse_list(cli(ini, "list", cwd=tmp_path).stdout)[1][0]["aid"] == aid
    assert cli(ini, "disable", aid, cwd=tmp_path).returncode == 0
    assert cli(ini, "purge", cwd=tmp_path).stdout == "purged 1 aliases\n"
