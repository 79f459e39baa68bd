"""The three verdicts' cutoffs, end to end with the real CLI on a subset of the corpus:

- `spam train` cross-validates (5 folds) and stores cutoffs in the model that give no false
  positive on the folds that chose them (the out-of-fold scores, from `--cv-scores`), and leave at
  most --max-fn-rate of their spam below the unsure cutoff; `spam stats` shows them and what they
  were chosen on;
- `--max-fp-rate` moves the spam cutoff down to exactly that share of the folds' good mail;
- `spam classify` calls ham, unsure and spam at those cutoffs; numbers in [spam] override them;
- too few messages, or `--folds 0`, choose none: the model keeps what it had;
- a bad tag_score is a configuration error naming file, line and key.
"""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from harness import CORPUS_DIR, MAILKEEP_BIN, corpus_available

pytestmark = pytest.mark.skipif(not corpus_available(), reason="run tests/data/fetch.sh for the corpus")


def corpus(group: str, count: int, offset: int = 0) -> list[Path]:
    return sorted((CORPUS_DIR / group).glob("*.txt"))[offset:offset + count]


def cli(ini: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MAILKEEP_BIN), "spam", *args, "-c", str(ini)], capture_output=True, text=True,
                          timeout=300)


def stats(ini: Path) -> dict[str, str]:
    res = cli(ini, "stats")
    assert res.returncode == 0, res.stderr
    return dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)


def cv_scores(path: Path) -> list[tuple[bool, float, str]]:
    rows = []
    for line in path.read_text().splitlines():
        label, score, file = line.split("\t")
        rows.append((label == "spam", float(score), file))
    return rows


SPAM = corpus("spam-1", 200)
HAM = corpus("easy-ham-1", 300) + corpus("hard-ham-1", 100)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("calibration")
    ini = work / "mk.ini"
    ini.write_text(f"[spam]\nmodel = {work / 'spam.model'}\nhistory = {work / 'history.db'}\n")
    scores = work / "cv.tsv"
    res = cli(ini, "train", "--spam", *map(str, SPAM), "--ham", *map(str, HAM), "--cv-scores", str(scores))
    assert res.returncode == 0, res.stderr
    return ini, scores, res.stderr


def test_stored_cutoffs_give_no_false_positive_on_the_folds_that_chose_them(trained):
    ini, scores, log = trained
    rows = cv_scores(scores)
    assert sorted(f for _, _, f in rows) == sorted(map(str, SPAM + HAM)), "every message scored once"
    s = stats(ini)
    assert s["cutoffs.unsure.from"] == "model" and s["cutoffs.spam.from"] == "model", s
    spam_cut, unsure_cut = float(s["cutoffs.spam"]), float(s["cutoffs.unsure"])
    ham_scores = [x for is_spam, x, _ in rows if not is_spam]
    spam_scores = [x for is_spam, x, _ in rows if is_spam]
    assert max(ham_scores) < spam_cut, (max(ham_scores), spam_cut)
    # Not above the next score either: no spam between the worst good message and the cutoff.
    assert not [x for x in spam_scores if max(ham_scores) < x < spam_cut], spam_cut
    below_unsure = sum(1 for x in spam_scores if x < unsure_cut)
    assert below_unsure <= math.floor(0.05 * len(spam_scores)), (below_unsure, unsure_cut)
    assert 0 < unsure_cut <= spam_cut < 1.0 + 1e-9
    # What stats reports is what the folds' scores give.
    missed = sum(1 for x in spam_scores if x < spam_cut)
    assert (int(s["calibration.folds"]), int(s["calibration.spam"]), int(s["calibration.ham"])) == (5, 200, 400), s
    assert int(s["calibration.false_positives"]) == 0 and int(s["calibration.missed_spam"]) == missed, s
    assert int(s["calibration.unsure_ham"]) == sum(1 for x in ham_scores if unsure_cut <= x < spam_cut), s
    assert "cutoffs (5-fold, 200 spam, 400 good)" in log, log


def test_classify_gives_three_verdicts_at_the_stored_cutoffs_and_config_overrides(trained, tmp_path):
    ini, _, _ = trained
    s = stats(ini)
    cut = (float(s["cutoffs.unsure"]), float(s["cutoffs.spam"]))
    files = corpus("spam-2", 150) + corpus("easy-ham-2", 150) + corpus("hard-ham-1", 60, 100)
    out = cli(ini, "classify", *map(str, files))
    assert out.returncode == 0, out.stderr
    calls = {}
    for line in out.stdout.splitlines():
        path, score, call = line.split("\t")
        x = float(score)
        # classify prints six decimals; the cutoff compares the full score.
        if abs(x - cut[0]) > 1e-6 and abs(x - cut[1]) > 1e-6:
            assert call == ("spam" if x >= cut[1] else "unsure" if x >= cut[0] else "ham"), (line, cut)
        calls[call] = calls.get(call, 0) + 1
    assert set(calls) == {"spam", "unsure", "ham"}, calls
    # Numbers in [spam] win over the model's cutoffs.
    over = tmp_path / "over.ini"
    over.write_text(ini.read_text() + "tag_score = 0.2\nreject_score = 0.6\n")
    s2 = stats(over)
    assert (s2["cutoffs.unsure"], s2["cutoffs.unsure.from"], s2["cutoffs.spam"], s2["cutoffs.spam.from"]) == \
        ("0.2", "config", "0.6", "config"), s2
    for line in cli(over, "classify", *map(str, files)).stdout.splitlines():
        _, score, call = line.split("\t")
        x = float(score)
        if abs(x - 0.2) > 1e-6 and abs(x - 0.6) > 1e-6:
            assert call == ("spam" if x >= 0.6 else "unsure" if x >= 0.2 else "ham"), line
    partial = tmp_path / "partial.ini"
    partial.write_text(ini.read_text() + "tag_score = auto\nreject_score = 0.999\n")
    s3 = stats(partial)
    assert (s3["cutoffs.unsure"], s3["cutoffs.unsure.from"], s3["cutoffs.spam"]) == (s["cutoffs.unsure"], "model", "0.999")


def test_max_fp_rate_allows_that_share_of_the_folds_good_mail(tmp_path):
    ini = tmp_path / "mk.ini"
    ini.write_text(f"[spam]\nmodel = {tmp_path / 'spam.model'}\n")
    scores = tmp_path / "cv.tsv"
    res = cli(ini, "train", "--spam", *map(str, SPAM), "--ham", *map(str, HAM), "--cv-scores", str(scores),
              "--max-fp-rate", "0.02")
    assert res.returncode == 0, res.stderr
    s = stats(ini)
    rows = cv_scores(scores)
    ham_scores = sorted(x for is_spam, x, _ in rows if not is_spam)
    above = sum(1 for x in ham_scores if x >= float(s["cutoffs.spam"]))
    assert above == math.floor(0.02 * len(ham_scores)) == int(s["calibration.false_positives"]) == 8, (above, s)
    assert s["calibration.max_fp_rate"] == "0.02"


def test_too_few_messages_or_folds_0_choose_no_cutoffs(tmp_path, trained):
    ini = tmp_path / "mk.ini"
    ini.write_text(f"[spam]\nmodel = {tmp_path / 'spam.model'}\n")
    res = cli(ini, "train", "--spam", *map(str, SPAM[:3]), "--ham", *map(str, HAM[:50]))
    assert res.returncode == 0, res.stderr
    assert "cutoffs: not chosen: 5 folds need at least 5 spam and 5 good messages (have 3 and 50)" in res.stderr
    s = stats(ini)
    assert (s["cutoffs.unsure"], s["cutoffs.unsure.from"], s["cutoffs.spam"], s["cutoffs.spam.from"]) == \
        ("0.5", "default", "0.99", "default"), s
    assert "calibration.folds" not in s
    # More training with --folds 0 keeps the cutoffs a model has.
    trained_ini, _, _ = trained
    before = stats(trained_ini)
    copy = tmp_path / "copy.model"
    copy.write_bytes(Path(before["model"]).read_bytes())
    again = tmp_path / "again.ini"
    again.write_text(f"[spam]\nmodel = {copy}\n")
    res = cli(again, "train", "--folds", "0", "--spam", *map(str, corpus("spam-1", 10, 300)))
    assert res.returncode == 0 and "not chosen; the model keeps the ones it had" in res.stderr, res.stderr
    after = stats(again)
    assert (after["cutoffs.unsure"], after["cutoffs.spam"]) == (before["cutoffs.unsure"], before["cutoffs.spam"])
    assert int(after["learned.spam"]) == int(before["learned.spam"]) + 10


def test_a_bad_tag_score_names_file_line_and_key(tmp_path):
    ini = tmp_path / "mk.ini"
    ini.write_text(f"[spam]\nmodel = {tmp_path / 'spam.model'}\ntag_score = maybe\n")
    res = cli(ini, "stats")
    assert res.returncode != 0
    assert f"{ini}:3" in res.stderr and "tag_score" in res.stderr and "auto or a score between 0 and 1" in res.stderr, \
        res.stderr
