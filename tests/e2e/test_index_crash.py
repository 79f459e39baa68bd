"""kill -9 during `mailkeep archive index`: the index opens afterwards, and running the command
again gives the same index as a clean build (spec: "an interrupted scan (even kill -9) is
resumed by the next one without redoing or losing work").

~3,000 SpamAssassin corpus messages are written as alice's Maildir (INBOX new/ and cur/ with
flags, .Sent, .Archive, .Junk). A clean `archive index` into one index directory is the
reference. A second index directory is built by runs that get SIGKILL partway (the first after
1-3 s, seeded; the second close to where it would finish, which may hit the final commit or the
compaction), then one run to completion. After each kill `mailkeep search` must open the index
(exit 0, JSON); at the end the message count and the answers (sets of message ids, and each
message's folder/flags/path/Message-ID/conversation partition) of ~12 queries must equal the
clean build's. A kill during `--rebuild` of a complete index is checked the same way.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter

import pytest

from harness import corpus_available, corpus_messages
from mailbox_support import (
    Cli, INDEX_LINE, asan_build, mailbox_config, make_env, require_binary, sanitizer_report,
    write_ini, write_message,
)

N_FILES = 3000
SEED = int(os.environ.get("MAILKEEP_CRASH_SEED", "0")) or random.SystemRandom().randrange(1, 10**9)

FIXED_QUERIES = ["in:anywhere", "in:inbox", "in:sent", "in:junk", "in:archive", "is:unread",
                 "is:starred", "has:attachment", "subject:re", "after:2002/09/01", "larger:10K",
                 "money -in:inbox"]



# kill -9 and resume for minutes: a durability check, run once (release_only, conftest.py);
# the indexer's code is under ASan in the unit tests and the other index suites.
pytestmark = pytest.mark.release_only

class World:
    def __init__(self, env, cli_clean: Cli, clean_elapsed: float, queries: list[str]):
        self.env = env
        self.cli_clean = cli_clean
        self.clean_elapsed = clean_elapsed
        self.queries = queries
        self.clean_answers = {q: answer(cli_clean, q) for q in queries}
        self.clean_total = len(self.clean_answers["in:anywhere"])
        self.clean_partition = partition(cli_clean.search("in:anywhere"))


@pytest.fixture(scope="module")
def world():
    require_binary()
    if not corpus_available():
        pytest.skip("SpamAssassin corpus missing: run tests/data/fetch.sh first")
    sample = corpus_messages(N_FILES, extra_long_lines=False)[:N_FILES]
    env = make_env(folders=(), prefix="mailkeep-crash-")
    try:
        for i, (name, msg) in enumerate(sample):
            k = i % 10
            if name.startswith("spam") and k < 3:
                write_message(env.maildir, "Junk", msg, flags="")
            elif k < 5:
                write_message(env.maildir, "INBOX", msg)                 # new/
            elif k == 5:
                write_message(env.maildir, "INBOX", msg, flags="S")
            elif k == 6:
                write_message(env.maildir, "INBOX", msg, flags="FS")
            elif k == 7:
                write_message(env.maildir, "Sent", msg, flags="S")
            else:
                write_message(env.maildir, "Archive", msg, flags="S" if k == 8 else "")
        clean_cfg = write_ini(env.base / "clean.ini", mailbox_config(env.base, index_path=env.base / "index-clean"))
        cli_clean = Cli(clean_cfg)
        start = time.monotonic()
        r = cli_clean.index()
        elapsed = time.monotonic() - start
        print(f"clean build: {r.stdout.strip()!r} ({elapsed:.1f}s)")
        msgs = cli_clean.search("in:anywhere")
        assert len(msgs) == len(sample), f"clean build has {len(msgs)} messages, {len(sample)} files were written"
        # Two data-driven queries: the most common sender address and List-Id.
        queries = list(FIXED_QUERIES)
        common_from = Counter(m["from_address"] for m in msgs if m["from_address"]).most_common(1)
        common_list = Counter(m["list"] for m in msgs if m["list"]).most_common(1)
        if common_from:
            queries.append(f"from:{common_from[0][0]}")
        if common_list:
            queries.append(f"list:{common_list[0][0]}")
        yield World(env, cli_clean, elapsed, queries)
    finally:
        env.stop()
        shutil.rmtree(env.base, ignore_errors=True)


def answer(cli: Cli, query: str) -> dict[str, tuple]:
    """{message id: (folder, flags, path, Message-ID, size)} of search --messages --json query."""
    return {m["id"]: (m["folder"], m["flags"], m["path"], m["message_id"], m["size"]) for m in cli.search(query)}


def partition(msgs: list[dict]) -> set[frozenset[str]]:
    by: dict[str, set[str]] = {}
    for m in msgs:
        by.setdefault(m["conversation"], set()).add(m["id"])
    return {frozenset(v) for v in by.values()}


def killed_run(cmd: list[str], after: float) -> tuple[bool, str, str, int]:
    """Runs cmd, SIGKILLs it `after` seconds in (if still running). Returns (killed, stdout, stderr, rc)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + after
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    return killed, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), proc.returncode


def check_opens(cli: Cli, world: World, when: str) -> int:
    """search must open the index after a kill: exit 0, JSON, never more messages than files."""
    r = cli.search_run("in:anywhere")
    assert r.returncode == 0, f"{when}: the index does not open after kill -9: {r}"
    try:
        n = len(json.loads(r.stdout)["messages"])
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"{when}: search output is not the JSON of the spec ({exc}): {r.stdout[:300]!r}")
    assert n <= world.clean_total, f"{when}: the index holds {n} messages, more than the {world.clean_total} files"
    return n


def compare_with_clean(cli: Cli, world: World, what: str) -> None:
    problems = []
    for q in world.queries:
        got, want = answer(cli, q), world.clean_answers[q]
        if got != want:
            missing = sorted(set(want) - set(got))
            extra = sorted(set(got) - set(want))
            changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
            problems.append(f"query {q!r}: {len(got)} results, the clean build has {len(want)}; "
                            f"missing {missing[:3]}, unexpected {extra[:3]}, "
                            f"different fields {[(k, got[k], want[k]) for k in changed[:2]]}")
    got_part = partition(cli.search("in:anywhere"))
    if got_part != world.clean_partition:
        problems.append(f"conversations: {len(got_part)} after the kill(s), {len(world.clean_partition)} in the clean "
                        f"build; e.g. {sorted(map(sorted, got_part - world.clean_partition))[:2]} vs "
                        f"{sorted(map(sorted, world.clean_partition - got_part))[:2]}")
    assert not problems, f"{what} differs from a clean build:\n" + "\n".join(problems)


def test_kill_during_index_then_resume(world):
    rng = random.Random(SEED)
    print(f"seed {SEED} (MAILKEEP_CRASH_SEED={SEED} repeats it); clean build took {world.clean_elapsed:.1f}s"
          f"{' (ASan)' if asan_build() else ''}")
    env = world.env
    cfg = write_ini(env.base / "crash.ini", mailbox_config(env.base, index_path=env.base / "index-crash"))
    cli = Cli(cfg)
    kills = 0

    # 1: early, 1-3 s in (never later than 60% of a whole clean build, so that it is partway).
    t1 = min(rng.uniform(1.0, 3.0), 0.6 * world.clean_elapsed)
    killed, out, err, rc = killed_run(cli.index_cmd(), t1)
    assert not sanitizer_report(err), err
    print(f"run 1: SIGKILL after {t1:.2f}s: {'killed' if killed else f'finished first (exit {rc})'}")
    kills += killed
    n1 = check_opens(cli, world, f"after SIGKILL at {t1:.2f}s")
    print(f"  index holds {n1} of {world.clean_total} messages")

    # 2: close to where the resumed run would finish (its final commit / compaction).
    left = world.clean_elapsed * max(0.05, (world.clean_total - n1) / world.clean_total)
    t2 = max(0.3, rng.uniform(0.85, 1.0) * left)
    killed, out, err, rc = killed_run(cli.index_cmd(), t2)
    assert not sanitizer_report(err), err
    print(f"run 2: SIGKILL after {t2:.2f}s (expected ~{left:.1f}s to finish): "
          f"{'killed' if killed else f'finished first (exit {rc}): {out.strip()!r}'}")
    kills += killed
    n2 = check_opens(cli, world, f"after the second SIGKILL at {t2:.2f}s")
    print(f"  index holds {n2} of {world.clean_total} messages")
    assert kills >= 1, "no run was still going when it was to be killed: the test proved nothing"

    # 3: to completion.
    r = cli.index()
    print(f"run 3: {r.stdout.strip()!r}")
    # (The line's N counts the messages of the directories it looked at, not the index's total.)
    total = len(cli.search("in:anywhere"))
    assert total == world.clean_total, \
        f"after the resumed `archive index` the index holds {total} messages, the clean build {world.clean_total}: {r}"
    compare_with_clean(cli, world, "the index after kill -9 and a resumed `archive index`")

    # A further run finds nothing to do.
    r = cli.index()
    added, updated, removed = r.last(INDEX_LINE)[1:4]
    assert (added, removed) == (0, 0), f"a second `archive index` after the resume still changes things: {r}"


def test_kill_during_rebuild_then_index(world):
    """A complete index, `archive index --rebuild` killed 1-3 s in, then plain `archive index`."""
    rng = random.Random(SEED + 1)
    env = world.env
    shutil.copytree(env.base / "index-clean", env.base / "index-rebuild")
    cfg = write_ini(env.base / "rebuild.ini", mailbox_config(env.base, index_path=env.base / "index-rebuild"))
    cli = Cli(cfg)
    compare_with_clean(cli, world, "a copy of the clean index")   # the copy is a valid index
    t = min(rng.uniform(1.0, 3.0), 0.6 * world.clean_elapsed)
    killed, out, err, rc = killed_run(cli.index_cmd() + ["--rebuild"], t)
    assert not sanitizer_report(err), err
    print(f"--rebuild: SIGKILL after {t:.2f}s: {'killed' if killed else f'finished first (exit {rc})'}")
    assert killed, "the --rebuild finished before the kill"
    n = check_opens(cli, world, f"after SIGKILL of --rebuild at {t:.2f}s")
    print(f"  index holds {n} of {world.clean_total} messages")
    r = cli.index()
    print(f"then: {r.stdout.strip()!r}")
    total = len(cli.search("in:anywhere"))
    assert total == world.clean_total, \
        f"after the interrupted --rebuild and `archive index` the index holds {total} of {world.clean_total}: {r}"
    compare_with_clean(cli, world, "the index after an interrupted --rebuild and `archive index`")
