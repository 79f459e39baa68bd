"""`mailkeep spam train` and `classify` on the inputs an operator has: single files, Maildirs
(cur/ and new/, not their subfolders), directory trees, files with a leading mbox `From ` line,
and file lists; a mistyped path is an error, not a smaller training set.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from harness import CORPUS_DIR, MAILKEEP_BIN, corpus_available

pytestmark = pytest.mark.skipif(not corpus_available(), reason="run tests/data/fetch.sh for the corpus")


def corpus(group: str, count: int, offset: int = 0) -> list[Path]:
    return sorted((CORPUS_DIR / group).glob("*.txt"))[offset:offset + count]


def spam_cli(ini: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(MAILKEEP_BIN), "spam", *args, "-c", str(ini)], input=stdin,
                          capture_output=True, text=True, timeout=120)


def learned(ini: Path) -> dict[str, int]:
    out = spam_cli(ini, "stats").stdout
    return {k: int(v) for k, v in re.findall(r"^(learned\.\w+) (\d+)$", out, re.M)}


@pytest.fixture
def ini(tmp_path) -> Path:
    path = tmp_path / "mk.ini"
    path.write_text(f"[spam]\nmodel = {tmp_path / 'spam.model'}\nhistory = {tmp_path / 'history.db'}\n")
    return path


def fill(directory: Path, messages: list[Path], mbox_from: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for m in messages:
        body = m.read_bytes()
        if mbox_from:
            body = b"From MAILER-DAEMON Tue Aug  6 11:17:56 2002\n" + body
        (directory / m.name).write_bytes(body)


def test_train_from_maildirs_trees_and_mbox_files(ini, tmp_path):
    spam, ham = corpus("spam-1", 40), corpus("easy-ham-1", 60)
    maildir = tmp_path / "Maildir"
    fill(maildir / "cur", ham[:30])
    fill(maildir / "new", ham[30:40])
    (maildir / "tmp").mkdir()
    fill(maildir / ".Junk" / "cur", spam[:20])  # a subfolder: not part of INBOX
    tree = tmp_path / "spam-tree"
    fill(tree / "2002" / "07", spam[20:30], mbox_from=True)
    fill(tree / "2002" / "08", spam[30:40])
    single = tmp_path / "single"
    fill(single, ham[40:60], mbox_from=True)

    res = spam_cli(ini, "train", "--spam", str(maildir / ".Junk"), str(tree),
                   "--ham", str(maildir), *map(str, sorted(single.iterdir())))
    assert res.returncode == 0, res.stderr
    assert "trained on 100 messages" in res.stderr  # not the 20 in .Junk twice
    assert learned(ini) == {"learned.spam": 40, "learned.ham": 60}

    # The leading "From " line is not part of the message: same score with and without it.
    plain, framed = spam[25], tree / "2002" / "07" / spam[25].name
    out = spam_cli(ini, "classify", str(plain), str(framed)).stdout.splitlines()
    assert [line.split("\t")[1] for line in out] == [out[0].split("\t")[1]] * 2

    # Classification: exactly PATH<TAB>SCORE<TAB>spam|ham, from a list file or stdin.
    tests = corpus("spam-2", 5) + corpus("easy-ham-2", 5)
    listing = tmp_path / "list"
    listing.write_text("".join(f"{p}\n" for p in tests))
    by_file = spam_cli(ini, "classify", "--files-from", str(listing))
    by_stdin = spam_cli(ini, "classify", "--files-from", "-", stdin=listing.read_text())
    assert by_file.returncode == 0 and by_file.stdout == by_stdin.stdout
    lines = by_file.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == list(map(str, tests))
    for line in lines:
        path, score, verdict = line.split("\t")
        assert re.fullmatch(r"[01]\.\d{6}", score), line
        assert verdict == ("spam" if float(score) >= 0.5 else "ham"), line


def test_a_missing_path_is_an_error_and_the_model_is_left_alone(ini, tmp_path):
    spam, ham = corpus("spam-1", 10), corpus("easy-ham-1", 10)
    assert spam_cli(ini, "train", "--spam", *map(str, spam), "--ham", *map(str, ham)).returncode == 0
    model = tmp_path / "spam.model"
    before = model.read_bytes()

    missing = tmp_path / "Maildir" / ".Junkk"
    res = spam_cli(ini, "train", "--spam", str(missing), "--ham", *map(str, ham))
    assert res.returncode == 1
    assert f"{missing}: No such file or directory" in res.stderr
    res = spam_cli(ini, "train", "--spam", *map(str, spam), "--ham", "/dev/null")
    assert res.returncode == 1 and "/dev/null: neither a message file nor a directory" in res.stderr
    assert model.read_bytes() == before
    assert learned(ini) == {"learned.spam": 10, "learned.ham": 10}


def test_a_listed_file_that_cannot_be_read_is_left_out(ini, tmp_path):
    """A file named in --labelled (or gone from a Maildir in use since it was listed) is reported
    and not learned; training goes on with the rest."""
    spam, ham = corpus("spam-1", 3), corpus("easy-ham-1", 3)
    gone = tmp_path / "gone.eml"
    labelled = tmp_path / "labelled"
    labelled.write_text("".join(f"spam\t{p}\n" for p in spam) + f"spam\t{gone}\n" +
                        "".join(f"ham\t{p}\n" for p in ham))
    res = spam_cli(ini, "train", "--labelled", str(labelled))
    assert res.returncode == 0, res.stderr
    assert f"cannot read {gone}" in res.stderr and "trained on 6 messages" in res.stderr
    assert learned(ini) == {"learned.spam": 3, "learned.ham": 3}

    labelled.write_text(f"ham\t{gone}\n")
    res = spam_cli(ini, "train", "--labelled", str(labelled))
    assert res.returncode == 1 and "none of the messages could be read" in res.stderr
    assert learned(ini) == {"learned.spam": 3, "learned.ham": 3}


def test_training_past_the_memory_budget_reads_files_again_and_learns_the_same(tmp_path):
    """--memory bounds the features kept between passes; past it each pass tokenizes the files
    again. The model must come out byte for byte the same."""
    spam, ham = corpus("spam-1", 60), corpus("easy-ham-1", 120)
    models = []
    for name, extra in (("kept", []), ("reread", ["--memory", "0"])):
        ini = tmp_path / f"{name}.ini"
        ini.write_text(f"[spam]\nmodel = {tmp_path / name}.model\n")
        res = spam_cli(ini, "train", "--spam", *map(str, spam), "--ham", *map(str, ham), *extra)
        assert res.returncode == 0, res.stderr
        assert ("180 messages past --memory 0 MB are read again" in res.stderr) == bool(extra), res.stderr
        assert "pass 2:" in res.stderr  # more than one pass, or the re-reading was not exercised
        models.append((tmp_path / f"{name}.model").read_bytes())
    assert models[0] == models[1]
