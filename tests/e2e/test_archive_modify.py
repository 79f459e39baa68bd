"""State changes between Dovecot (IMAP) and mailkeep's index, both ways, end to end
(/work/search_spec.md, "archive modify").

* IMAP -> index: an IMAP client marks \\Seen / \\Flagged, MOVEs (and COPY + \\Deleted + EXPUNGE)
  to Archive / Trash / Junk and deletes; `mailkeep archive index` (and, in one test, a running
  `mailkeep serve` with [index] enabled and no command at all) then shows the new folders and
  flags (is:read, is:starred, in:archive, in:trash, in:junk) and no deleted message.
* mailkeep -> IMAP: `mailkeep archive modify` --archive / --inbox / --trash / --spam / --read /
  --unread / --star / --unstar / --label / --unlabel, checked with FETCH FLAGS, SELECT, STATUS
  (MESSAGES UNSEEN) in sessions that stay open, on disk and with `mailkeep search`; labels are
  found with label: and survive moves, flag renames (mailkeep's and IMAP's) and `--rebuild`.
* a property test: RANDOM_OPS (1,000) seeded random operations from both sides over 60
  messages, with a model of each message's folder and flags; every 50 operations the Maildir
  on disk, a full IMAP snapshot and `search in:anywhere` must each hold every message exactly
  once, where and as the model says. The mix, per 50: 35 IMAP operations in one session
  (SELECT the model's folder, UID SEARCH the Message-ID; then ~45% STORE +/-FLAGS \\Seen or
  \\Flagged, ~50% MOVE to another of INBOX/Archive/Trash/Junk, ~5% COPY + \\Deleted + EXPUNGE)
  and 15 `archive modify` processes (~88% one message by `rfc822msgid:<id>` -- with `in:anywhere`,
  or bare, which must not match in Trash/Junk -- with a random move and/or flag actions; ~12%
  batch queries such as `in:trash --inbox`, `is:starred --archive`). The `M moved` count of
  every modify is checked against the model too.
* concurrency: an IMAP client toggling \\Flagged in a loop while `archive modify` moves groups
  of messages around and sets \\Seen: nothing lost or doubled, the last command wins; a held
  dovecot-uidlist.lock makes `archive modify` wait.
* ownership: with `[general] user = mail` (the archive's owner, Dovecot's uid 8), folders that
  `archive modify` creates are served by Dovecot; root CLI runs do not stop serve's live index.

Mail arrives through SMTP (`mailkeep serve` as user mail) in the IMAP -> index tests and where
noted, elsewhere it is written into the Maildir directly (owned by uid 8, as Dovecot needs).
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections import Counter

import pytest

from backup_support import MAIL_UID
from mailbox_support import (  # noqa: F401  (archive_env is a fixture)
    INDEX_LINE, MODIFY_LINE, STANDARD_FOLDERS, Imap, archive_env, asan_build, build_message, compare_states,
    require_subcommand, state_from_disk, state_from_search, write_message,
)

# 1,000 operations against Dovecot: once, on the release build (conftest.py, release_only; the
# ASan pass took 2.5 min for it). modify's code stays under ASan through the unit tests
# (mailbox, webreader, filters) and test_archive_import.
pytestmark = pytest.mark.release_only

SEED = int(os.environ.get("MAILKEEP_PROPERTY_SEED", "0")) or random.SystemRandom().randrange(1, 10**9)
RANDOM_OPS = int(os.environ.get("MAILKEEP_PROPERTY_OPS", "1000"))
BATCH = 50                 # operations between two full checks
MAILKEEP_SHARE = 15        # of every BATCH operations, this many are `archive modify` processes
N_PROPERTY_MESSAGES = 60


def mid(tag: str) -> str:
    return f"{tag}@mailkeep.test"


def require_modify():
    require_subcommand("archive", "modify")


# --------------------------------------------------------------------------- the model

class Model:
    """{Message-ID: [folder, set of flag letters]} and what the spec says operations do to it."""

    def __init__(self):
        self.state: dict[str, list] = {}
        self.history: dict[str, list[str]] = {}

    def add(self, m: str, folder: str, flags: str = "") -> None:
        self.state[m] = [folder, set(flags)]
        self.history[m] = [f"start {folder} {flags or '-'}"]

    def expected(self) -> dict[str, tuple[str, str]]:
        return {m: (f, "".join(sorted(fl))) for m, (f, fl) in self.state.items()}

    def note(self, m: str, what: str) -> None:
        self.history.setdefault(m, []).append(what)

    def modify(self, pred, actions: list[str], label: str) -> int:
        """Applies `archive modify` actions to every message matching pred(folder, flags).
        Returns how many messages change folder."""
        moved = 0
        for m, st in self.state.items():
            folder, flags = st
            if not pred(folder, flags):
                continue
            dest = folder
            if "--archive" in actions and folder == "INBOX":
                dest = "Archive"
            if "--inbox" in actions:
                dest = "INBOX"
            if "--trash" in actions:
                dest = "Trash"
            if "--spam" in actions:
                dest = "Junk"
            moved += dest != folder
            st[0] = dest
            if "--read" in actions:
                flags.add("S")
            if "--unread" in actions:
                flags.discard("S")
            if "--star" in actions:
                flags.add("F")
            if "--unstar" in actions:
                flags.discard("F")
            self.note(m, f"{label} -> {dest} {''.join(sorted(flags)) or '-'}")
        return moved

    def modify_one(self, m: str, pred, actions: list[str], label: str) -> int:
        """modify() for a query only message m can match (rfc822msgid:)."""
        folder, flags = self.state[m]
        if not pred(folder, flags):
            self.note(m, f"{label}: no match (in {folder})")
            return 0
        mine = self.state[m][1]          # each message has its own flag set: match by identity
        return self.modify(lambda f, fl: fl is mine, actions, label)


def visible(folder: str) -> bool:
    """Junk and Trash are left out unless the query names them."""
    return folder not in ("Trash", "Junk")


def no_lock_files(maildir) -> list[str]:
    return [str(p) for p in maildir.rglob("dovecot-uidlist.lock")]


def search_problems(env, model: Model, where: str) -> list[str]:
    """search in:anywhere against the model, and every path it gives must be a file."""
    found = env.cli.search("in:anywhere")
    problems = compare_states(f"{where}, in `search --messages --json in:anywhere`", model.expected(),
                              state_from_search(found), model.history)
    problems += [f"{where}: search gives path {m['path']!r} for <{m['message_id']}>, no such file"
                 for m in found if not (env.maildir / m["path"]).is_file()][:5]
    return problems


def check_all(env, imap: Imap, model: Model, where: str, reindex: bool = True, live: float = 0) -> None:
    """Disk, IMAP (LIST + SELECT + FETCH every folder) and search in:anywhere all equal the model.
    reindex: run `archive index` before searching; live: instead poll search for up to this many
    seconds (serve's live index; the SELECTs of the snapshot move new/ files to cur/)."""
    expected = model.expected()
    problems = compare_states(f"{where}, on disk", expected, state_from_disk(env.files()), model.history)
    problems += compare_states(f"{where}, over IMAP", expected, imap.snapshot(), model.history)
    if reindex:
        env.cli.index()
    if live:
        found, _ = poll_until(lambda: search_problems(env, model, where), live)
        problems += found
    else:
        problems += search_problems(env, model, where)
    locks = no_lock_files(env.maildir)
    if locks:
        problems.append(f"{where}: dovecot-uidlist.lock left behind: {locks}")
    assert not problems, "\n".join(problems)


def modify_counts(run) -> tuple[int, int, int, int]:
    counts = run.last(MODIFY_LINE)
    assert counts, f"no `modified N messages (...)` line: {run}"
    return counts


# --------------------------------------------------------------------------- IMAP -> index

def imap_changes(imap: Imap, model: Model, tags: list[str]) -> None:
    """The IMAP side of the IMAP -> index tests, on 12 messages in INBOX."""
    imap.select("INBOX")
    uid = {t: imap.uids_of(mid(t)) for t in tags}
    for t, u in uid.items():
        assert len(u) == 1, f"IMAP: {mid(t)} is {len(u)} times in INBOX"
    u = {t: v[0] for t, v in uid.items()}
    for t in tags[0:4]:
        imap.store(u[t], "+", "S")
        model.state[mid(t)][1].add("S")
    for t in tags[2:6]:
        imap.store(u[t], "+", "F")
        model.state[mid(t)][1].add("F")
    for t, dest in ((tags[6], "Archive"), (tags[7], "Archive"), (tags[3], "Archive"), (tags[8], "Trash"),
                    (tags[9], "Junk")):
        imap.move(u[t], dest)
        model.state[mid(t)][0] = dest
    imap.delete(u[tags[10]])
    del model.state[mid(tags[10])]
    imap.copy_delete_expunge(u[tags[11]], "Archive")
    model.state[mid(tags[11])][0] = "Archive"


def expected_sets(model: Model) -> dict[str, set[str]]:
    st = model.state
    return {
        "is:read": {m for m, (f, fl) in st.items() if "S" in fl and visible(f)},
        "is:unread": {m for m, (f, fl) in st.items() if "S" not in fl and visible(f)},
        "is:starred": {m for m, (f, fl) in st.items() if "F" in fl and visible(f)},
        "in:inbox": {m for m, (f, fl) in st.items() if f == "INBOX"},
        "in:archive": {m for m, (f, fl) in st.items() if f == "Archive"},
        "in:trash": {m for m, (f, fl) in st.items() if f == "Trash"},
        "in:junk": {m for m, (f, fl) in st.items() if f == "Junk"},
        "in:spam": {m for m, (f, fl) in st.items() if f == "Junk"},
        "in:anywhere": set(st),
        "is:read in:anywhere": {m for m, (f, fl) in st.items() if "S" in fl},
    }


def check_search_sets(env, model: Model, where: str) -> list[str]:
    problems = []
    for q, want in expected_sets(model).items():
        try:
            got = env.cli.search_ids(q)
        except AssertionError as exc:
            # The live indexer has not created the account's database yet (a loaded machine runs
            # it late: nice 19): a problem to poll again, not a failure.
            if "no index for" in str(exc) or "Couldn't detect type of database" in str(exc):
                return [f"{where}: the index does not exist yet ({q!r})"]
            raise
        if got != want:
            problems.append(f"{where}: search {q!r}: missing {sorted(want - got)}, unexpected {sorted(got - want)}")
    return problems


def test_imap_changes_reach_archive_index(archive_env):
    env = archive_env(serve=True, index_enabled=False)
    tags = [f"imapidx-{i:02d}" for i in range(12)]
    env.deliver([build_message(mid(t), f"imap to index {t}") for t in tags])
    for f in env.files():
        assert os.stat(f.path).st_uid == MAIL_UID, f"{f.path}: not owned by the mail user"
    r = env.cli.index()
    assert r.last(INDEX_LINE)[1] == 12, f"expected 12 added: {r}"
    model = Model()
    for t in tags:
        model.add(mid(t), "INBOX")
    assert env.cli.search_ids("is:unread") == set(model.state)

    with env.imap() as imap:
        imap_changes(imap, model, tags)
        r = env.cli.index()
        problems = check_search_sets(env, model, "after IMAP changes and `archive index`")
        gone = env.cli.search(f"rfc822msgid:{mid(tags[10])} in:anywhere")
        if gone:
            problems.append(f"the message deleted over IMAP is still found: {gone}")
        for m in env.cli.search("in:anywhere"):
            if not (env.maildir / m["path"]).is_file():
                problems.append(f"search gives path {m['path']!r} for <{m['message_id']}>, no such file")
        assert not problems, "\n".join(problems) + f"\n{r}"
        check_all(env, imap, model, "after IMAP changes")


def poll_until(fn, timeout: float) -> tuple[object, float]:
    """Calls fn() until it returns a falsy value (no problems) or timeout; returns (last, waited)."""
    start = time.monotonic()
    while True:
        last = fn()
        waited = time.monotonic() - start
        if not last or waited > timeout:
            return last, waited
        time.sleep(0.2)


def test_imap_changes_reach_live_index_of_serve(archive_env):
    """serve with [index] enabled, no `archive index` anywhere: within ~2 s (5 s allowed)."""
    env = archive_env(serve=True, index_enabled=True, scan_interval=3600)
    tags = [f"live-{i:02d}" for i in range(12)]
    env.deliver([build_message(mid(t), f"live index {t}") for t in tags])
    model = Model()
    for t in tags:
        model.add(mid(t), "INBOX")
    problems, waited = poll_until(lambda: check_search_sets(env, model, "live indexing of SMTP deliveries"), 30)
    assert not problems, "\n".join(problems)

    with env.imap() as imap:
        imap_changes(imap, model, tags)
        problems, waited = poll_until(lambda: check_search_sets(env, model, "live index, 5 s after IMAP changes"), 5)
        assert not problems, "\n".join(problems)
        print(f"IMAP changes reached the live index in {waited:.1f}s")

        # A folder the IMAP client creates while serve runs.
        imap.create("Projects")
        imap.select("Archive")
        uid = imap.uids_of(mid(tags[6]))
        assert len(uid) == 1
        imap.move(uid[0], "Projects")
        model.state[mid(tags[6])][0] = "Projects"

        def projects():
            got = env.cli.search_ids("in:projects")
            return [] if got == {mid(tags[6])} else [f"search in:projects gives {sorted(got)}, expected {mid(tags[6])}"]
        problems, waited = poll_until(projects, 5)
        assert not problems, "a MOVE into a folder created over IMAP after serve started did not reach the live " \
                             f"index within 5 s (scan_interval 3600): {problems}"
        check_all(env, imap, model, "live index, end", reindex=False, live=5)
    assert env.mk.proc.poll() is None, "serve died"


def test_live_index_keeps_working_after_cli_commands(archive_env):
    """serve (as mail) indexes live; an administrator runs `archive modify` and `archive index`
    as root on the same index meanwhile. IMAP changes and SMTP deliveries afterwards must still
    reach the live index within 5 s (the commands must not leave the index unwritable for serve)."""
    require_modify()
    env = archive_env(serve=True, index_enabled=True, scan_interval=3600)
    tags = [f"admin-{i}" for i in range(4)]
    env.deliver([build_message(mid(t), f"admin {t}") for t in tags])
    model = Model()
    for t in tags:
        model.add(mid(t), "INBOX")
    problems, _ = poll_until(lambda: check_search_sets(env, model, "live indexing"), 30)
    assert not problems, "\n".join(problems)
    env.cli.modify(f"rfc822msgid:{mid(tags[0])}", "--star", "--label", "Admin")
    model.state[mid(tags[0])][1].add("F")
    env.cli.index()
    owners = sorted({(p.relative_to(env.index_dir).as_posix(), p.stat().st_uid) for p in env.index_dir.rglob("*")
                     if p.stat().st_uid != MAIL_UID})
    with env.imap() as imap:
        imap.select("INBOX")
        imap.store(imap.uids_of(mid(tags[1]))[0], "+", "S")
        model.state[mid(tags[1])][1].add("S")
        imap.move(imap.uids_of(mid(tags[2]))[0], "Archive")
        model.state[mid(tags[2])][0] = "Archive"
        problems, waited = poll_until(lambda: check_search_sets(env, model, "live index after root CLI commands"), 5)
        assert not problems, "\n".join(problems) + f"\nindex files not owned by the mail user (uid {MAIL_UID}) " \
            f"after the root CLI commands: {owners[:8]}\nserve log: {env.mk.log()[-1500:]}"
    env.deliver([build_message(mid("admin-late"), "delivered after the CLI commands")])
    model.add(mid("admin-late"), "INBOX")
    problems, waited = poll_until(lambda: check_search_sets(env, model, "live index of a later delivery"), 5)
    assert not problems, "\n".join(problems) + f"\nserve log: {env.mk.log()[-1500:]}"
    assert env.cli.search_ids("label:admin") == {mid(tags[0])}


# --------------------------------------------------------------------------- mailkeep -> IMAP

def test_modify_changes_are_seen_over_imap(archive_env):
    require_modify()
    env = archive_env()
    tags = [f"mod-{i:02d}" for i in range(8)]
    model = Model()
    files = {}
    for t in tags:
        files[t] = write_message(env.maildir, "INBOX", build_message(mid(t), f"modify {t}"))
        model.add(mid(t), "INBOX")
    env.cli.index()
    cli = env.cli

    # A file in new/ that gets a change goes to cur/ with :2,FLAGS, base name unchanged.
    r = cli.modify(f"rfc822msgid:{mid(tags[0])}", "--star")
    assert modify_counts(r) == (1, 0, 1, 0), f"expected `modified 1 messages (0 moved, 1 flag changes, 0 label changes)`: {r}"
    model.state[mid(tags[0])][1].add("F")
    base = files[tags[0]].name
    assert not files[tags[0]].exists(), f"{files[tags[0]]} is still in new/ after --star"
    assert (env.maildir / "cur" / f"{base}:2,F").is_file(), \
        f"expected cur/{base}:2,F, found {[f.rel for f in env.files() if f.base == base]}"
    others = [f for f in env.files() if f.message_id != mid(tags[0])]
    assert all(f.sub == "new" for f in others), "files --star did not match left new/"
    assert state_from_search(cli.search(f"rfc822msgid:{mid(tags[0])}")) == {mid(tags[0]): [("INBOX", "F")]}, \
        "search right after `archive modify --star` (no `archive index`) does not show the F flag"

    dovecot = env.start_dovecot()
    a, b = Imap(dovecot), Imap(dovecot)      # a keeps INBOX selected; b asks STATUS
    try:
        assert a.select("INBOX") == 8
        assert b.status("INBOX") == (8, 8)
        assert a.flags_of(mid(tags[0])) == "F"

        def step(query, *actions, moved=None, where=""):
            r = cli.modify(query, *actions)
            counts = modify_counts(r)
            if moved is not None:
                assert counts[1] == moved, f"{query} {actions}: expected {moved} moved: {r}"
            a.noop()
            check_all(env, b, model, where or f"after modify {query!r} {' '.join(actions)}", reindex=False)
            return counts

        # --read: FETCH FLAGS in the open session after NOOP, STATUS UNSEEN in the other.
        model.state[mid(tags[1])][1].add("S")
        assert step(f"rfc822msgid:{mid(tags[1])}", "--read") == (1, 0, 1, 0)
        assert a.flags_of(mid(tags[1])) == "S", "the selected session does not see --read after NOOP"
        assert b.status("INBOX") == (8, 7)

        # --archive: gone from the selected INBOX, there in Archive.
        model.state[mid(tags[2])][0] = "Archive"
        assert step(f"rfc822msgid:{mid(tags[2])}", "--archive", moved=1) == (1, 1, 0, 0)
        assert len(a.fetch_all()) == 7, "the selected INBOX still shows the archived message after NOOP"
        assert b.status("Archive") == (1, 1)
        assert b.status("INBOX") == (7, 6)
        # --archive of a message that is not in INBOX leaves it where it is.
        step(f"rfc822msgid:{mid(tags[2])}", "--archive", moved=0)

        # --trash, --spam, and back with --inbox.
        model.state[mid(tags[3])][0] = "Trash"
        step(f"rfc822msgid:{mid(tags[3])}", "--trash", moved=1)
        model.state[mid(tags[4])][0] = "Junk"
        step(f"rfc822msgid:<{mid(tags[4])}>", "--spam", moved=1)
        assert b.status("Trash") == (1, 1) and b.status("Junk") == (1, 1)
        # Junk and Trash are left out unless the query names them: this matches nothing.
        r = cli.modify(f"rfc822msgid:{mid(tags[4])}", "--inbox")
        assert modify_counts(r)[:2] == (0, 0), \
            f"rfc822msgid: without in:junk matched a message in Junk (spec: Junk and Trash are left out): {r}"
        model.state[mid(tags[4])][0] = "INBOX"
        step(f"rfc822msgid:{mid(tags[4])} in:junk", "--inbox", moved=1)
        model.state[mid(tags[3])][0] = "INBOX"
        step(f"in:trash rfc822msgid:{mid(tags[3])}", "--inbox", moved=1)
        assert b.status("Trash") == (0, 0) and b.status("Junk") == (0, 0)

        # --unread, --unstar; several actions at once.
        model.state[mid(tags[1])][1].discard("S")
        step(f"rfc822msgid:{mid(tags[1])}", "--unread")
        model.state[mid(tags[0])][1].discard("F")
        step(f"rfc822msgid:{mid(tags[0])}", "--unstar")
        assert a.flags_of(mid(tags[0])) == "" and a.flags_of(mid(tags[1])) == ""
        model.state[mid(tags[5])] = ["Archive", {"S", "F"}]
        assert step(f"rfc822msgid:{mid(tags[5])}", "--archive", "--read", "--star", moved=1)[:2] == (1, 1)

        # Batches: every message the query matches, not only the first page.
        inbox = [m for m, (f, _) in model.state.items() if f == "INBOX"]
        for m in inbox:
            model.state[m][0] = "Archive"
        r = cli.modify("in:inbox", "--archive")
        assert modify_counts(r)[:2] == (len(inbox), len(inbox)), r
        a.noop()
        assert a.fetch_all() == [], "the selected INBOX is not empty after `in:inbox --archive` and NOOP"
        check_all(env, b, model, "after in:inbox --archive", reindex=False)
        unread = [m for m, (f, fl) in model.state.items() if f == "Archive" and "S" not in fl]
        for m in unread:
            model.state[m][1].add("S")
        r = cli.modify("in:archive is:unread", "--read")
        assert modify_counts(r)[0] == len(unread), r
        assert b.status("Archive") == (8, 0)
        check_all(env, b, model, "after in:archive is:unread --read")
    finally:
        a.close()
        b.close()


def test_modify_errors_change_nothing(archive_env):
    require_modify()
    env = archive_env()
    for i in range(3):
        write_message(env.maildir, "INBOX", build_message(mid(f"err-{i}"), f"errors {i}"))
    env.cli.index()
    before = sorted(f.rel for f in env.files())
    r = env.cli.modify("from:(", "--read", check=False)
    assert r.returncode == 2, f"malformed query: expected exit 2: {r}"
    assert "query error at position" in r.stderr, r
    r = env.cli.modify("in:inbox", "--archive", "--trash", check=False)
    assert r.returncode != 0, f"--archive --trash (at most one of these) was accepted: {r}"
    other = env.cli.__class__(env.config_path, user="nobody@example.com")
    r = other.modify("in:inbox", "--read", check=False)
    assert r.returncode == 1, f"a user outside [backup] domains: expected exit 1: {r}"
    assert sorted(f.rel for f in env.files()) == before, "a failed `archive modify` changed the Maildir"


def test_modify_sees_smtp_delivery_and_imap_changes_without_index(archive_env):
    """Before acting, `archive modify` brings the index up to date: a message just delivered
    through SMTP, and one an IMAP client just moved, are found with no `archive index`."""
    require_modify()
    env = archive_env(serve=True, index_enabled=False)
    env.deliver([build_message(mid("smtp-0"), "first")])
    env.cli.index()
    env.deliver([build_message(mid("smtp-1"), "just delivered")])
    r = env.cli.modify(f"rfc822msgid:{mid('smtp-1')}", "--star")
    assert modify_counts(r)[0] == 1, f"a message delivered since the last `archive index` was not found: {r}"
    model = Model()
    model.add(mid("smtp-0"), "INBOX")
    model.add(mid("smtp-1"), "INBOX", "F")
    with env.imap() as imap:
        imap.select("INBOX")
        imap.move(imap.uids_of(mid("smtp-0"))[0], "Archive")
        model.state[mid("smtp-0")][0] = "Archive"
        r = env.cli.modify(f"rfc822msgid:{mid('smtp-0')} in:archive", "--read")
        assert modify_counts(r)[0] == 1, f"a message just moved over IMAP was not found in Archive: {r}"
        model.state[mid("smtp-0")][1].add("S")
        check_all(env, imap, model, "after modify of fresh mail")


def test_modify_into_a_folder_it_creates_is_usable_over_imap(archive_env):
    """--spam / --archive when .Junk / .Archive do not exist yet: the folders mailkeep creates
    are served by Dovecot (whose mail processes run as the archive's owner, uid 8)."""
    require_modify()
    env = archive_env(folders=("INBOX",))
    model = Model()
    for i in range(3):
        write_message(env.maildir, "INBOX", build_message(mid(f"newf-{i}"), f"new folder {i}"))
        model.add(mid(f"newf-{i}"), "INBOX")
    env.cli.index()
    with env.imap() as imap:
        assert imap.select("INBOX") == 3
        env.cli.modify(f"rfc822msgid:{mid('newf-0')}", "--spam")
        model.state[mid("newf-0")][0] = "Junk"
        env.cli.modify(f"rfc822msgid:{mid('newf-1')}", "--archive")
        model.state[mid("newf-1")][0] = "Archive"
        not_mail = sorted(f"{p.relative_to(env.maildir)} (uid {p.stat().st_uid}, mode {oct(p.stat().st_mode & 0o7777)})"
                          for p in env.maildir.rglob("*") if p.stat().st_uid != MAIL_UID
                          and not p.name.startswith("dovecot"))
    # An open Dovecot session does not LIST folders created outside it (its mailbox list index
    # is not refreshed; SELECT would work); a new session, as a client makes, lists them.
    with env.imap() as imap:
        try:
            check_all(env, imap, model, "after moves into folders mailkeep created")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n[general] user = mail; what `archive modify` (run as root) left not owned "
                                 f"by uid {MAIL_UID}: {not_mail[:8]}") from None
        # The IMAP client can change what mailkeep put there.
        imap.select("Junk")
        uid = imap.uids_of(mid("newf-0"))
        imap.store(uid[0], "+", "S")
        imap.move(uid[0], "INBOX")
        model.state[mid("newf-0")] = ["INBOX", {"S"}]
        check_all(env, imap, model, "after IMAP changes in a folder mailkeep created")


def test_modify_waits_for_dovecots_lock(archive_env):
    """While dovecot-uidlist.lock exists (Dovecot holds its dotlock), `archive modify` renames
    nothing in that folder; once it is gone, the command finishes."""
    require_modify()
    env = archive_env()
    f = write_message(env.maildir, "INBOX", build_message(mid("lock-0"), "lock"), flags="")
    env.cli.index()
    lock = env.maildir / "dovecot-uidlist.lock"
    lock.write_text("12345")          # a live-looking dotlock: fresh mtime
    os.chown(lock, MAIL_UID, MAIL_UID)
    proc = subprocess.Popen(env.cli.args("archive", "modify", f"rfc822msgid:{mid('lock-0')}", "--read", "--archive"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        still = f.exists()
        running = proc.poll() is None
        lock.unlink()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert still, f"`archive modify` renamed {f.name} while dovecot-uidlist.lock was held (stdout {out!r})"
    assert running, f"`archive modify` did not wait for the lock: exit {proc.returncode}, {out!r} {err!r}"
    assert proc.returncode == 0, f"after the lock went away: exit {proc.returncode}: {out!r} {err!r}"
    got = state_from_disk(env.files())
    assert got == {mid("lock-0"): [("Archive", "S")]}, got
    assert not no_lock_files(env.maildir), f"lock files left: {no_lock_files(env.maildir)}"


def test_modify_acts_on_every_match_not_one_page(archive_env):
    require_modify()
    env = archive_env()
    for i in range(130):
        write_message(env.maildir, "INBOX", build_message(mid(f"many-{i:03d}"), f"many {i}"))
    env.cli.index()
    r = env.cli.modify("in:inbox", "--archive", "--star")
    assert modify_counts(r)[:2] == (130, 130), f"expected 130 messages modified and moved (not one page): {r}"
    got = Counter(st for sts in state_from_disk(env.files()).values() for st in sts)
    assert got == Counter({("Archive", "F"): 130}), got
    assert len(env.cli.search("in:archive is:starred")) == 130


# --------------------------------------------------------------------------- labels

def test_labels(archive_env):
    require_modify()
    env = archive_env()
    cli = env.cli
    tags = [f"lab-{i}" for i in range(5)]
    for t in tags:
        write_message(env.maildir, "INBOX", build_message(mid(t), f"labels {t}"))
    cli.index()
    m0, m1, m2 = mid(tags[0]), mid(tags[1]), mid(tags[2])

    def labels() -> dict[str, list[str]]:
        return {m["message_id"]: sorted(m["labels"]) for m in cli.search("in:anywhere")}

    def found(q: str) -> set[str]:
        return cli.search_ids(q)

    r = cli.modify(f"rfc822msgid:{m0} OR rfc822msgid:{m1}", "--label", "Work")
    assert modify_counts(r) == (2, 0, 0, 2), f"expected `modified 2 messages (0 moved, 0 flag changes, 2 label changes)`: {r}"
    r = cli.modify(f"rfc822msgid:{m1}", "--label", "Receipts", "--label", "Travel")
    assert modify_counts(r)[3] >= 1, r
    assert found("label:work") == {m0, m1}
    assert found("label:WORK") == {m0, m1}, "label: is case-insensitive"
    assert found("label:receipts") == {m1}
    got = labels()
    assert got[m0] == ["Work"] and got[m1] == ["Receipts", "Travel", "Work"] and got[m2] == [], got
    assert all(f.sub == "new" for f in env.files()), "a label change renamed a file (labels are not IMAP keywords)"

    with env.imap() as imap:
        # moves by mailkeep
        cli.modify(f"rfc822msgid:{m0}", "--archive")
        cli.modify(f"rfc822msgid:{m1}", "--trash")
        assert found("label:work") == {m0}, "label:work (Trash left out) after --archive / --trash"
        assert found("label:work in:anywhere") == {m0, m1}
        assert found("label:work in:trash") == {m1}
        # a flag rename by mailkeep, then by IMAP, a MOVE by IMAP
        cli.modify(f"rfc822msgid:{m0} in:archive", "--read")
        imap.select("Archive")
        imap.store(imap.uids_of(m0)[0], "+", "F")
        imap.select("Trash")
        base_before = next(f.base for f in env.files() if f.message_id == m1)
        imap.move(imap.uids_of(m1)[0], "INBOX")
        base_after = next(f.base for f in env.files() if f.message_id == m1)
        cli.index()
        got = labels()
        renamed = (f" (Dovecot gave the moved file a new name: {base_before} -> {base_after}; it does so when the "
                   f"destination folder has seen the name before)" if base_before != base_after else "")
        assert got[m0] == ["Work"] and got[m1] == ["Receipts", "Travel", "Work"], \
            f"labels after flag renames and an IMAP MOVE + `archive index`{renamed}: {got}"
        assert found("label:work") == {m0, m1}
        # --rebuild
        cli.index(rebuild=True)
        got = labels()
        assert got[m0] == ["Work"] and got[m1] == ["Receipts", "Travel", "Work"], \
            f"labels after `archive index --rebuild`: {got}"
        assert found("label:travel in:inbox") == {m1}
    # --unlabel
    r = cli.modify(f"rfc822msgid:{m1}", "--unlabel", "work")
    assert modify_counts(r)[3] == 1, f"--unlabel work (case-insensitive) of a message labelled Work: {r}"
    r = cli.modify(f"rfc822msgid:{m2}", "--unlabel", "Work")
    assert modify_counts(r)[3] == 0, f"--unlabel of a label the message does not have counted a change: {r}"
    assert found("label:work") == {m0}
    assert labels()[m1] == ["Receipts", "Travel"]
    cli.modify("label:travel", "--label", "Work")
    assert found("label:work") == {m0, m1}, "a label query as the modify query"


# --------------------------------------------------------------------------- the property test

BATCH_QUERIES = [
    # (query, actions, predicate on (folder, flags))
    ("in:trash", ["--inbox"], lambda f, fl: f == "Trash"),
    ("in:junk", ["--trash"], lambda f, fl: f == "Junk"),
    ("is:starred", ["--archive"], lambda f, fl: "F" in fl and visible(f)),
    ("in:archive is:unread", ["--read"], lambda f, fl: f == "Archive" and "S" not in fl),
    ("in:inbox is:read", ["--archive", "--unstar"], lambda f, fl: f == "INBOX" and "S" in fl),
    ("in:anywhere is:starred", ["--unstar"], lambda f, fl: "F" in fl),
    ("is:unread -in:inbox", ["--star"], lambda f, fl: "S" not in fl and visible(f) and f != "INBOX"),
    ("in:junk OR in:trash", ["--inbox", "--unread"], lambda f, fl: f in ("Junk", "Trash")),
]


def single_modify(rng: random.Random, m: str, folder: str) -> tuple[str, list[str], object]:
    form = rng.random()
    if form < 0.6:
        query, pred_any = f"rfc822msgid:{m} in:anywhere", True
    elif form < 0.8:
        query, pred_any = f"rfc822msgid:<{m}>", False
    else:
        query, pred_any = f"rfc822msgid:{m}", False
    actions = []
    move = rng.choice([None, None, "--archive", "--inbox", "--trash", "--spam"])
    if move:
        actions.append(move)
    if rng.random() < 0.5:
        actions.append(rng.choice(["--read", "--unread"]))
    if rng.random() < 0.4 or not actions:
        actions.append(rng.choice(["--star", "--unstar"]))
    pred = (lambda f, fl: True) if pred_any else (lambda f, fl: visible(f))
    return query, actions, pred


def test_random_operations_from_both_sides(archive_env):
    require_modify()
    rng = random.Random(SEED)
    print(f"seed {SEED} (MAILKEEP_PROPERTY_SEED={SEED} repeats it), {RANDOM_OPS} operations"
          f"{' (ASan build)' if asan_build() else ''}")
    env = archive_env()
    model = Model()
    ids = [mid(f"prop-{SEED}-{i:03d}") for i in range(N_PROPERTY_MESSAGES)]
    for i, m in enumerate(ids):
        if i < 30:
            folder, flags = "INBOX", None
        else:
            folder = rng.choice(STANDARD_FOLDERS)
            flags = "".join(x for x in "FS" if rng.random() < 0.5)
        write_message(env.maildir, folder, build_message(m, f"property {i}", body=f"message {i}\r\n"), flags=flags)
        model.add(m, folder, flags or "")
    env.cli.index()
    dovecot = env.start_dovecot()
    imap = Imap(dovecot)
    ops = Counter()
    log: list[str] = []
    start = time.monotonic()
    try:
        check_all(env, imap, model, "at the start")
        done = 0
        while done < RANDOM_OPS:
            n = min(BATCH, RANDOM_OPS - done)
            kinds = ["mk"] * round(n * MAILKEEP_SHARE / BATCH) + ["imap"] * (n - round(n * MAILKEEP_SHARE / BATCH))
            rng.shuffle(kinds)
            for kind in kinds:
                done += 1
                m = rng.choice(ids)
                folder, flags = model.state[m]
                if kind == "mk":
                    if rng.random() < 0.12:
                        query, actions, pred = rng.choice(BATCH_QUERIES)
                        ops["modify batch"] += 1
                        label = f"#{done} modify {query!r} {' '.join(actions)}"
                        moved = model.modify(pred, actions, label)
                    else:
                        query, actions, pred = single_modify(rng, m, folder)
                        ops["modify single"] += 1
                        label = f"#{done} modify {query!r} {' '.join(actions)}"
                        moved = model.modify_one(m, pred, actions, label)
                    log.append(label)
                    r = env.cli.modify(query, *actions)
                    got = modify_counts(r)
                    assert got[1] == moved, \
                        f"op #{done}: {label}: expected {moved} moved, got {got}: {r}\nlast ops: {log[-10:]}"
                    continue
                # IMAP
                imap.select(folder)
                uids = imap.uids_of(m)
                assert len(uids) == 1, \
                    f"op #{done}: IMAP finds <{m}> {len(uids)} times in {folder}, where the model has it " \
                    f"({''.join(sorted(flags)) or '-'}); its history: {model.history[m][-6:]}; last ops: {log[-10:]}"
                uid = uids[0]
                x = rng.random()
                if x < 0.45:
                    letter = "S" if rng.random() < 0.55 else "F"
                    op = "+" if rng.random() < 0.55 else "-"
                    imap.store(uid, op, letter)
                    (flags.add if op == "+" else flags.discard)(letter)
                    what = f"#{done} IMAP STORE {op}FLAGS {letter}"
                    ops["imap store"] += 1
                else:
                    dest = rng.choice([f for f in STANDARD_FOLDERS if f != folder])
                    if x < 0.95:
                        imap.move(uid, dest)
                        what = f"#{done} IMAP MOVE {folder} -> {dest}"
                        ops["imap move"] += 1
                    else:
                        imap.copy_delete_expunge(uid, dest)
                        what = f"#{done} IMAP COPY+EXPUNGE {folder} -> {dest}"
                        ops["imap copy+expunge"] += 1
                    model.state[m][0] = dest
                model.note(m, f"{what} -> {model.state[m][0]} {''.join(sorted(flags)) or '-'}")
                log.append(f"{what} <{m}>")
            check_all(env, imap, model, f"after {done} operations (seed {SEED})")
    finally:
        imap.close()
        print(f"operations: {dict(ops)}; {time.monotonic() - start:.1f}s")
    assert sum(ops.values()) == RANDOM_OPS


# --------------------------------------------------------------------------- concurrency

def test_concurrent_imap_flags_and_modify_moves_lose_nothing(archive_env):
    """An IMAP client toggles \\Flagged on whole folders in a loop while `archive modify` moves
    groups of messages between folders and sets or clears \\Seen. Renames race; nothing may be
    lost or doubled, the three views agree, and the last `archive modify` decides every
    message's folder and \\Seen."""
    require_modify()
    env = archive_env()
    ids = [mid(f"conc-{i:02d}") for i in range(40)]
    for i, m in enumerate(ids):
        write_message(env.maildir, "INBOX", build_message(m, f"concurrent g{i % 4} {i}"))
    env.cli.index()
    dovecot = env.start_dovecot()
    stop = threading.Event()
    errors: list[str] = []
    stores = Counter()

    def imap_loop():
        rng = random.Random(SEED + 7)
        try:
            with Imap(dovecot) as c:
                while not stop.is_set():
                    for folder in STANDARD_FOLDERS:
                        if c.select(folder) == 0:
                            stores["empty"] += 1
                            continue
                        typ, data = c.c.store("1:*", "+FLAGS.SILENT" if rng.random() < 0.5 else "-FLAGS.SILENT",
                                              "(\\Flagged)")
                        stores[typ] += 1     # NO is allowed (a message moved away under the STORE)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    t = threading.Thread(target=imap_loop)
    t.start()
    rng = random.Random(SEED + 8)
    try:
        for i in range(300):      # at least 40 modifies, and on until the IMAP client did 60 STOREs
            if i >= 40 and stores["OK"] + stores["NO"] >= 60:
                break
            group = rng.randrange(4)
            move = rng.choice(["--inbox", "--trash", "--spam", "--archive"])
            env.cli.modify(f"subject:g{group} in:anywhere", move, rng.choice(["--read", "--unread"]))
    finally:
        stop.set()
        t.join(60)
    assert not errors, f"the IMAP client failed: {errors}"
    print(f"IMAP: {dict(stores)} during {i} `archive modify` runs")
    assert stores["OK"] + stores["NO"] >= 60, f"too few IMAP STOREs ran during {i} modifies: {dict(stores)}"
    env.cli.modify("in:anywhere", "--inbox", "--read")

    disk = state_from_disk(env.files())
    problems = [f"on disk: <{m}> {disk.get(m)}" for m in ids if len(disk.get(m, [])) != 1]
    with Imap(dovecot) as c:
        snap = c.snapshot()
    problems += [f"over IMAP: <{m}> {snap.get(m)}" for m in ids if len(snap.get(m, [])) != 1]
    env.cli.index()
    found = state_from_search(env.cli.search("in:anywhere"))
    problems += [f"in search: <{m}> {found.get(m)}" for m in ids if len(found.get(m, [])) != 1]
    assert not problems, "messages lost or doubled:\n" + "\n".join(problems[:20])
    for m in ids:
        folder, flags = disk[m][0]
        if folder != "INBOX" or "S" not in flags:
            problems.append(f"<{m}> is in {folder} with flags {flags!r} after the final `in:anywhere --inbox --read`")
        if snap[m] != disk[m] or found[m] != disk[m]:
            problems.append(f"<{m}>: disk {disk[m]}, IMAP {snap[m]}, search {found[m]} disagree")
    assert not problems, "\n".join(problems[:20])
    assert not no_lock_files(env.maildir), no_lock_files(env.maildir)
