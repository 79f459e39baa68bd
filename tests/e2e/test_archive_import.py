"""`mailkeep archive import` of Google Takeout mbox files, end to end
(/work/search_spec.md, "archive import").

The mbox files are built here from SpamAssassin corpus messages: `From ` separator lines, CRLF
lines as Takeout writes them, an `X-GM-THRID` and an `X-Gmail-Labels` header on each message
(Inbox / Sent / Spam / Trash / no header / an empty one / user labels like `Work,Receipts` /
Unread / Starred / Opened / Important / `Category ...` / Draft / Chat and combinations), body
lines `From ...`, `>From ...`, `>>From ...` escaped mboxrd-style (each must come back with
exactly one `>` less), messages already in the archive (delivered through SMTP first: same
Message-ID and body, Takeout's extra headers) and duplicates within and across the mbox files.

Checked: the last output line's counts; each message lands once, in the folder, with the flags
and the labels the spec derives from X-Gmail-Labels, on disk (cur/, `:2,FLAGS`, a Maildir name
whose ,S= is the file's size, the body un-escaped) and in `mailkeep search --messages --json`
(without any `archive index`: imports are indexed); a second import of the same files imports
nothing. An import killed with SIGKILL (twice) and run again ends with the same multiset of
(folder, Message-ID, flags, labels, body bytes) as an uninterrupted import into a fresh archive.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from backup_support import MAIL_UID
from harness import corpus_available, corpus_messages
from mailbox_support import (  # noqa: F401  (archive_env is a fixture)
    IMPORT_LINE, archive_env, build_message, check_name_and_size, header_section, parse_message_id,
    require_subcommand,
)

SEED = int(os.environ.get("MAILKEEP_IMPORT_SEED", "0")) or random.SystemRandom().randrange(1, 10**9)
N_LARGE = int(os.environ.get("MAILKEEP_IMPORT_LARGE", "1500"))
GMAIL_SYSTEM = {"inbox", "sent", "spam", "trash", "unread", "opened", "starred", "important", "draft",
                "drafts", "chat"}

# X-Gmail-Labels values (None: no header at all).
LABEL_CASES = [
    "Inbox", "Inbox,Unread", "Inbox,Starred", "Inbox,Unread,Starred,Important", "Sent", "Sent,Inbox",
    "Spam", "Spam,Unread", "Trash", "Trash,Spam,Inbox,Unread", None, "", "Work,Receipts",
    "Category Updates", "Category Promotions,Unread", "Important,Opened", "Inbox,Work", "Draft", "Chat",
    "Sent,Travel/2019", "Starred,Work", "Unread,Receipts,Category Social", "Opened,Inbox,Category Forums",
    "Drafts,Work", "Spam,Starred,Newsletters",
]


def require_import():
    require_subcommand("archive", "import")
    if not corpus_available():
        pytest.skip("SpamAssassin corpus missing: run tests/data/fetch.sh first")


# --------------------------------------------------------------------------- the spec's mapping

def expected_placement(value: str | None) -> tuple[str, str, tuple[str, ...]]:
    """(folder, flags, labels) of a message whose X-Gmail-Labels is value."""
    labels = [x.strip() for x in value.split(",") if x.strip()] if value else []
    names = set(labels)
    if "Trash" in names:
        folder = "Trash"
    elif "Spam" in names:
        folder = "Junk"
    elif "Inbox" in names:
        folder = "INBOX"
    elif "Sent" in names:
        folder = "Sent"
    else:
        folder = "Archive"
    flags = "".join(sorted(("" if "Unread" in names else "S") + ("F" if "Starred" in names else "")))
    user = tuple(sorted(x for x in labels if x.lower() not in GMAIL_SYSTEM and not x.startswith("Category ")))
    return folder, flags, user


# --------------------------------------------------------------------------- mbox writing

_FROM_LINE = re.compile(rb"^>*From ")


def mboxrd_escape(msg: bytes) -> bytes:
    lines = msg.split(b"\r\n")
    return b"\r\n".join(b">" + line if _FROM_LINE.match(line) else line for line in lines)


def from_line(i: int) -> bytes:
    return f"From 16{i:017d}@xxx Wed May 20 10:{i % 60:02d}:00 +0000 2020\r\n".encode()


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    """Takeout's layout: 'From ' line, the message (CRLF, mboxrd-escaped), an empty line."""
    with open(path, "wb") as f:
        for i, msg in enumerate(messages):
            assert msg.endswith(b"\r\n")
            # The spec's rule: only a 'From ' line at the start or after an empty line starts a
            # message, so this unescaped line (after a non-empty one) belongs to the body.
            body = mboxrd_escape(msg).replace(b"\r\n>From inside a paragraph,", b"\r\nFrom inside a paragraph,")
            f.write(from_line(i) + body + b"\r\n")
    return path


def takeout_headers(msg: bytes, labels: str | None, thrid: int) -> bytes:
    head = f"X-GM-THRID: {1600000000000000000 + thrid}\r\n".encode()
    if labels is not None:
        head += f"X-Gmail-Labels: {labels}\r\n".encode()
    return head + msg


def strip_takeout_headers(msg: bytes) -> bytes:
    return re.sub(rb"\A(?:X-GM-THRID|X-Gmail-Labels):[^\r\n]*\r\n(?:X-Gmail-Labels:[^\r\n]*\r\n)?", b"", msg)


def unique_corpus(count: int, skip_ids: set[str] = frozenset()) -> list[bytes]:
    """count corpus messages with exactly one, unique, Message-ID and no X-Gmail-Labels."""
    out, seen = [], set(skip_ids)
    for _, msg in corpus_messages(max(count * 2, 400), extra_long_lines=False):
        head = header_section(msg)
        if len(re.findall(rb"(?im)^message-id:", head)) != 1 or re.search(rb"(?im)^x-gmail-labels:", head):
            continue
        m = parse_message_id(msg)
        if not m or m in seen or re.search(r"\s", m):
            continue
        seen.add(m)
        out.append(msg)
        if len(out) == count:
            break
    assert len(out) == count, f"only {len(out)} usable corpus messages"
    return out


ESCAPE_BODY = ("This message checks mboxrd escaping.\r\n"
               "\r\n"
               "From here on, a line that starts with From and a space.\r\n"
               ">From a quoted line that was already quoted once.\r\n"
               ">>From a line quoted twice.\r\n"
               "From\r\n"
               " From not at the start of the line\r\n"
               "From inside a paragraph, left unescaped by a sloppy mboxo writer.\r\n"
               "\r\n"
               "From 1234567890@xxx Wed May 20 10:00:00 +0000 2020\r\n"
               "X-Gmail-Labels: Trash\r\n"
               "\r\n"
               "the lines above look like the start of another message and are not.\r\n")


# --------------------------------------------------------------------------- reading the result

def message_body_in(stored: bytes, original: bytes) -> bool:
    """The stored file is the original message, possibly behind prepended header fields."""
    if not stored.endswith(original):
        return False
    prefix = stored[:len(stored) - len(original)]
    return re.fullmatch(rb"(?:[!-9;-~]+:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)*", prefix) is not None


def new_files(before: set[str], env) -> list:
    return [f for f in env.files() if f.rel not in before]


def tmp_files(maildir: Path) -> list[str]:
    return [str(p) for p in maildir.glob("**/tmp/*") if p.is_file()]


def archive_multiset(env) -> Counter:
    """Counter of (folder, Message-ID, flags, labels, sha256 of the body) over the account:
    disk and search joined by the file's path (relative to the Maildir)."""
    by_path = {m["path"]: m for m in env.cli.search("in:anywhere")}
    out = Counter()
    problems = []
    for f in env.files():
        m = by_path.pop(f.rel, None)
        if m is None:
            problems.append(f"{f.rel}: on disk, not in search in:anywhere")
            continue
        data = f.path.read_bytes()
        body = re.split(rb"\r?\n\r?\n", data, 1)[-1]
        out[(f.folder, f.message_id, f.flags, tuple(sorted(m["labels"])),
             hashlib.sha256(body).hexdigest()[:16])] += 1
        # (Message-IDs are not compared: a few corpus headers are broken enough for two parsers to differ.)
        if (m["folder"], m["flags"]) != (f.folder, f.flags):
            problems.append(f"{f.rel}: disk says {(f.folder, f.flags)}, search {(m['folder'], m['flags'])}")
    problems += [f"{p}: in search, no such file" for p in by_path]
    assert not problems, "\n".join(problems[:20])
    return out


# --------------------------------------------------------------------------- the tests

def test_import_takeout_mbox(archive_env, tmp_path):
    require_import()
    env = archive_env(serve=True, index_enabled=False)
    corpus = unique_corpus(len(LABEL_CASES) + 12)
    rng = random.Random(SEED)
    print(f"seed {SEED}")

    # Already in the archive (through SMTP): five that Takeout exports too, one whose Takeout
    # copy has another body under the same Message-ID.
    already = corpus[:6]
    env.deliver(already)
    env.cli.index()
    before = {f.rel for f in env.files()}

    cases: list[tuple[bytes, str | None]] = []        # (original message as stored, labels value)
    for i, labels in enumerate(LABEL_CASES):
        cases.append((takeout_headers(corpus[6 + i], labels, i), labels))
    escape_msg = takeout_headers(build_message("escape-check@mailkeep.test", "mbox escaping",
                                               body=ESCAPE_BODY), "Inbox,Work", 900)
    cases.append((escape_msg, "Inbox,Work"))
    changed_body = corpus[5].replace(b"\r\n\r\n", b"\r\n\r\nA different first line of the body.\r\n", 1)
    cases.append((takeout_headers(changed_body, "Inbox", 901), "Inbox"))
    extra = corpus[6 + len(LABEL_CASES):]
    for j, msg in enumerate(extra):                    # a few more, spread over the two files
        labels = rng.choice(LABEL_CASES)
        cases.append((takeout_headers(msg, labels, 950 + j), labels))

    dups_archive = [takeout_headers(m, "Inbox,Unread", 700 + k) for k, m in enumerate(already[:5])]
    mbox_a = [c[0] for c in cases[: len(cases) // 2]] + dups_archive[:3]
    mbox_b = [c[0] for c in cases[len(cases) // 2:]] + dups_archive[3:]
    # duplicates within a file and across the two files
    mbox_a += [cases[0][0], cases[1][0]]
    mbox_b += [cases[2][0]]
    rng.shuffle(mbox_a)
    rng.shuffle(mbox_b)
    file_a = write_mbox(tmp_path / "All mail Including Spam and Trash.mbox", mbox_a)
    file_b = write_mbox(tmp_path / "Takeout-2.mbox", mbox_b)
    raw = file_a.read_bytes() + file_b.read_bytes()
    assert b"\r\n>>From a quoted line that was already quoted once." in raw
    assert b"\r\n>>>From a line quoted twice." in raw and b"\r\n>From here on" in raw

    r = env.cli.import_(file_a, file_b)
    counts = r.last(IMPORT_LINE)
    want = (len(cases), 5 + 3, 0, 2)
    assert counts == want, \
        f"expected `imported {want[0]} messages ({want[1]} duplicates skipped, 0 errors) from 2 files`: {r}"

    # On disk: each message once, where the spec puts it.
    added = new_files(before, env)
    problems = []
    remaining = list(added)
    expected_rows = []
    for msg, labels in cases:
        folder, flags, user_labels = expected_placement(labels)
        expected_rows.append((msg, folder, flags, user_labels))
        hits = [f for f in remaining if message_body_in(f.path.read_bytes(), msg)]
        if len(hits) != 1:
            problems.append(f"<{parse_message_id(msg)}> (labels {labels!r}): {len(hits)} imported files hold it")
            continue
        f = hits[0]
        remaining.remove(f)
        if (f.folder, f.sub, f.flags) != (folder, "cur", flags):
            problems.append(f"<{parse_message_id(msg)}> (labels {labels!r}): {f.rel}, expected {folder}/cur "
                            f"with :2,{flags}")
        if ":2," not in f.name:
            problems.append(f"{f.rel}: no :2, suffix")
        bad = check_name_and_size(f.path)
        if bad:
            problems.append(bad)
    problems += [f"{f.rel}: imported, matches no message of the mbox files (the separator line, an escape or "
                 f"the trailing empty line kept?) {f.path.read_bytes()[:160]!r}" for f in remaining]
    assert not problems, "\n".join(problems)
    assert tmp_files(env.maildir) == [], f"files left in tmp/: {tmp_files(env.maildir)}"

    # The escaped lines came back with exactly one '>' less.
    esc = next(f for f in added if f.message_id == "escape-check@mailkeep.test").path.read_bytes()
    for line in (b"From here on, a line that starts with From and a space.",
                 b">From a quoted line that was already quoted once.", b">>From a line quoted twice.",
                 b"From", b" From not at the start of the line",
                 b"From inside a paragraph, left unescaped by a sloppy mboxo writer.",
                 b"From 1234567890@xxx Wed May 20 10:00:00 +0000 2020"):
        assert b"\r\n" + line + b"\r\n" in esc, f"line {line!r} not in the imported file: {esc!r}"
    assert b">>>From" not in esc and b"\r\n>From here on" not in esc, f"escapes kept: {esc!r}"

    # In the index, without `archive index`.
    by_path = {m["path"]: m for m in env.cli.search("in:anywhere")}
    for msg, folder, flags, user_labels in expected_rows:
        f = next(f for f in added if message_body_in(f.path.read_bytes(), msg))
        m = by_path.get(f.rel)
        if m is None:
            problems.append(f"{f.rel} (<{f.message_id}>): imported, not found by search in:anywhere "
                            f"(spec: imported files are indexed)")
            continue
        got = (m["folder"], m["flags"], tuple(sorted(m["labels"])), m["size"])
        if got != (folder, flags, user_labels, f.path.stat().st_size):
            problems.append(f"{f.rel} (<{f.message_id}>): search gives folder/flags/labels/size {got}, "
                            f"expected {(folder, flags, user_labels, f.path.stat().st_size)} "
                            f"(X-Gmail-Labels {header_value(msg)!r})")
    assert not problems, "\n".join(problems)
    for label in ("Work", "Receipts", "Travel/2019", "Newsletters"):
        want_ids = {parse_message_id(msg) for msg, _, _, ls in expected_rows if label in ls}
        got_ids = env.cli.search_ids(f"label:{label.lower()} in:anywhere")
        assert got_ids == want_ids, f"label:{label.lower()} in:anywhere: missing {want_ids - got_ids}, " \
                                    f"unexpected {got_ids - want_ids}"
    # Labels survive `archive index --rebuild`.
    env.cli.index(rebuild=True)
    for label in ("Work", "Receipts"):
        want_ids = {parse_message_id(msg) for msg, _, _, ls in expected_rows if label in ls}
        got_ids = env.cli.search_ids(f"label:{label} in:anywhere")
        assert got_ids == want_ids, f"label:{label} in:anywhere after `archive index --rebuild`: missing " \
                                    f"{want_ids - got_ids}, unexpected {got_ids - want_ids}"
    # The archive's own copies are untouched and not relabelled.
    assert {f.rel for f in env.files() if f.rel in before} == before

    # The same files again: everything is a duplicate now.
    r = env.cli.import_(file_a, file_b)
    total = len(mbox_a) + len(mbox_b)
    assert r.last(IMPORT_LINE) == (0, total, 0, 2), \
        f"a second import of the same files: expected `imported 0 messages ({total} duplicates skipped, 0 errors) " \
        f"from 2 files`: {r}"
    assert len(env.files()) == len(before) + len(cases)


def test_imported_mail_is_served_by_dovecot(archive_env, tmp_path):
    """With `[general] user = mail` (serve's user, whose archive Dovecot serves as uid 8), an
    import run as root writes files "as archive copies are": Dovecot lists every folder the
    import created and shows each message there with the flags from X-Gmail-Labels."""
    require_import()
    env = archive_env(folders=("INBOX",))
    assert env.config["general"]["user"] == "mail"
    corpus = unique_corpus(len(LABEL_CASES))
    msgs = [takeout_headers(m, labels, i) for i, (m, labels) in enumerate(zip(corpus, LABEL_CASES))]
    mbox = write_mbox(tmp_path / "takeout.mbox", msgs)
    r = env.cli.import_(mbox)
    assert r.last(IMPORT_LINE)[:3] == (len(msgs), 0, 0), r
    expected = {parse_message_id(m): expected_placement(labels)[:2] for m, labels in zip(msgs, LABEL_CASES)}
    not_mail = sorted(f"{p.relative_to(env.maildir)} (uid {p.stat().st_uid}, mode {oct(p.stat().st_mode & 0o7777)})"
                      for p in env.maildir.rglob("*") if p.stat().st_uid != MAIL_UID)
    errors: list[str] = []
    with env.imap() as imap:
        folders = imap.list_folders()
        snap = imap.snapshot(errors)
    problems = errors + [f"<{m}>: expected {want} over IMAP, found {snap.get(m) or 'nothing'}"
                         for m, want in sorted(expected.items()) if snap.get(m) != [want]]
    assert not problems, "\n".join(problems[:12]) + f"\nIMAP folders: {folders}\n" \
        f"files and directories the import left not owned by the mail user (uid {MAIL_UID}): {not_mail[:10]}"


def test_import_while_serve_indexes_live(archive_env, tmp_path):
    """An import while `mailkeep serve` (as mail, [index] enabled) runs: both write the index;
    the import must finish (exit 0) with every message searchable, and live indexing must go on."""
    require_import()
    env = archive_env(serve=True, index_enabled=True)
    corpus = unique_corpus(len(LABEL_CASES) + 1)
    env.deliver([corpus[-1]])
    msgs = [takeout_headers(m, labels, i) for i, (m, labels) in enumerate(zip(corpus, LABEL_CASES))]
    r = env.cli.import_(write_mbox(tmp_path / "live.mbox", msgs))
    assert r.last(IMPORT_LINE)[:3] == (len(msgs), 0, 0), r
    want = {parse_message_id(m): expected_placement(labels) for m, labels in zip(msgs, LABEL_CASES)}
    got = {m["message_id"]: (m["folder"], m["flags"], tuple(sorted(m["labels"])))
           for m in env.cli.search("in:anywhere")}
    problems = [f"<{k}>: expected {v}, search gives {got.get(k)}" for k, v in sorted(want.items()) if got.get(k) != v]
    assert not problems, "\n".join(problems[:10])
    late = build_message("after-import@mailkeep.test", "delivered after the import")
    env.deliver([late])
    deadline = time.monotonic() + 5
    while not env.cli.search_ids("rfc822msgid:after-import@mailkeep.test") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert env.cli.search_ids("rfc822msgid:after-import@mailkeep.test"), \
        f"live indexing stopped after an import run as root: {env.mk.log()[-1500:]}"


def test_import_errors(archive_env, tmp_path):
    require_import()
    env = archive_env()
    mbox = write_mbox(tmp_path / "one.mbox", [takeout_headers(build_message("e1@mailkeep.test", "one"), "Inbox", 1)])
    other = env.cli.__class__(env.config_path, user="alice@example.com")
    r = other.import_(mbox, check=False)
    assert r.returncode == 1, f"a user outside [backup] domains: expected exit 1: {r}"
    assert env.files() == [], "a refused import wrote files"


def header_value(msg: bytes) -> str | None:
    m = re.search(rb"(?m)^X-Gmail-Labels: ([^\r\n]*)", msg)
    return m.group(1).decode() if m else None


def large_mbox(path: Path, n: int) -> Path:
    """n corpus messages (some without Message-ID, some twice) with labels from LABEL_CASES."""
    rng = random.Random(SEED + 1)
    sample = [m for _, m in corpus_messages(n, extra_long_lines=False)][:n]
    msgs = []
    for i, msg in enumerate(sample):
        if i % 97 == 5:      # no Message-ID at all
            msg = re.sub(rb"(?im)^message-id:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", b"", msg)
        msgs.append(takeout_headers(msg, LABEL_CASES[i % len(LABEL_CASES)], i))
    for i in rng.sample([i for i in range(len(msgs)) if parse_message_id(msgs[i])], 20):
        msgs.append(msgs[i])
    rng.shuffle(msgs)
    return write_mbox(path, msgs)


def count_imported(maildir: Path) -> int:
    n = 0
    for d in [maildir] + [p for p in maildir.glob(".*") if p.is_dir()]:
        try:
            n += sum(1 for _ in os.scandir(d / "cur"))
        except FileNotFoundError:
            pass
    return n


def kill_when(cmd: list[str], maildir: Path, at_least: int, timeout: float = 600) -> tuple[bool, int, str]:
    """Runs cmd; SIGKILL once at least `at_least` files are in the account's cur/ directories.
    Returns (killed while running, files at the kill, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    n = 0
    while proc.poll() is None and time.monotonic() < deadline:
        n = count_imported(maildir)
        if n >= at_least:
            break
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    return killed, n, err.decode("utf-8", "replace") + out.decode("utf-8", "replace")


@pytest.mark.release_only  # 80 s under ASan; the other import tests run there (conftest.py)
def test_interrupted_import_equals_uninterrupted(archive_env, tmp_path):
    require_import()
    mbox = large_mbox(tmp_path / "large.mbox", N_LARGE)
    print(f"seed {SEED}; {N_LARGE} messages (+20 repeated), {mbox.stat().st_size // 1024} KiB")

    clean = archive_env(folders=())
    start = time.monotonic()
    r = clean.cli.import_(mbox)
    print(f"uninterrupted: {r.stdout.strip().splitlines()[-1]!r} ({time.monotonic() - start:.1f}s)")
    imported, dups, errors, files = r.last(IMPORT_LINE)
    assert errors == 0 and files == 1 and dups >= 20, r
    reference = archive_multiset(clean)
    assert sum(reference.values()) == imported == len(clean.files())

    crashed = archive_env(folders=())
    rng = random.Random(SEED + 2)
    # SIGKILL as soon as the first file is in cur/, then at a few random points further on.
    thresholds = [1] + sorted(rng.sample(range(2, max(3, imported - 1)), min(3, max(1, imported - 3))))
    kills = 0
    for i, at in enumerate(thresholds):
        killed, n, err = kill_when(crashed.cli.import_cmd(mbox), crashed.maildir, at)
        print(f"run {i + 1}: SIGKILL once {at} files are in cur/: {n} files, "
              f"{'killed' if killed else 'it had finished'}")
        assert "AddressSanitizer" not in err, err
        kills += killed
        if i == 0:
            assert killed, f"the import finished before the first file appeared: {err[-500:]}"
        sr = crashed.cli.search_run("in:anywhere")
        assert sr.returncode == 0 or (i == 0 and "no index" in sr.stderr), \
            f"the index does not open after SIGKILL of `archive import`: {sr}"
    r = crashed.cli.import_(mbox)
    print(f"final run: {r.stdout.strip().splitlines()[-1]!r}")
    counts = r.last(IMPORT_LINE)
    assert counts[2] == 0, f"errors in the resumed import: {r}"
    for f in crashed.files():
        bad = check_name_and_size(f.path)
        assert bad is None, f"after the interrupted imports: {bad}"
    got = archive_multiset(crashed)
    missing, extra = reference - got, got - reference
    assert not missing and not extra, (
        f"interrupted + resumed import differs from an uninterrupted one: {sum(got.values())} messages vs "
        f"{sum(reference.values())}; missing {sum(missing.values())} e.g. {list(missing.items())[:4]}; "
        f"unexpected {sum(extra.values())} e.g. {list(extra.items())[:4]} "
        f"(tuples: folder, Message-ID, flags, labels, sha256 of the body)")
    assert counts[0] + counts[1] == imported + dups, \
        f"the resumed import saw {counts[0]} + {counts[1]} messages, the mbox has {imported + dups}: {r}"
