"""Helpers for the archive search end-to-end tests (tests/e2e/test_search_*.py).

The contract is `mailkeep search` / `mailkeep archive index` with an `[index]` section
(Xapian, one database per account). Builds on backup_support.py and harness.py:

* SearchGateway, start_search_gateway, search_gateway fixture
                        -- a backup gateway (mailkeep serve) with [index] path/enabled
* SearchGateway.search  -- runs `mailkeep search --json [--messages] ...`, parses the JSON
* SearchGateway.index   -- runs `mailkeep archive index` and parses its last line
* reference model       -- load_account() reads an account's Maildir with Python's `email`
                           package (policy.default, compat32 when a header is too broken) and
                           computes, independently of mailkeep, what the index should say about
                           each file: date, addresses, subject, words, attachments, List-Id,
                           Message-ID and the threading (`reference_threads`)

Wherever Python and a C++ MIME parser may legitimately read a broken message differently, the
model marks that field *ambiguous* for that message (`RefMessage.ambiguous`), and the tests pick
their query terms so that no ambiguous message could match them, or leave those messages out
of that one comparison (and say so).
"""

from __future__ import annotations

import bisect
import calendar
import email
import email.header
import email.policy
import email.utils
import html
import json
import os
import re
import shutil
import smtplib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backup_support import (
    DOMAIN, OUTBOUND_IP, BackupGateway, backup_config, mail_options, public_tempdir, write_accounts,
)
from harness import MAILKEEP_BIN, Capture, Mailkeep, asan_build, free_port, require_binary, run_mailkeep

QUERY_ERROR = re.compile(r"^mailkeep: query error at position (\d+): expected (.+)$", re.M)
INDEX_LINE = re.compile(
    r"^indexed (\d+) messages \((\d+) added, (\d+) updated, (\d+) removed\) in (\d+\.\d\d)s$")


# --------------------------------------------------------------------------- the binary





def sanitizer_report(text: str) -> bool:
    return "AddressSanitizer" in text or "runtime error:" in text or "LeakSanitizer" in text


# --------------------------------------------------------------------------- the gateway

@dataclass
class SearchResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    bad_utf8: str = ""        # where stdout was not UTF-8 (it is decoded with U+FFFD then)

    @property
    def json(self) -> dict:
        assert self.returncode == 0, f"mailkeep {' '.join(self.args)} -> exit {self.returncode}: {self.stderr}"
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError(f"mailkeep {' '.join(self.args)}: not JSON ({exc}): {self.stdout[:500]!r}")

    @property
    def messages(self) -> list[dict]:
        return self.json["messages"]

    @property
    def paths(self) -> list[str]:
        return [m["path"] for m in self.messages]

    @property
    def conversations(self) -> list[dict]:
        return self.json["conversations"]

    def error_position(self) -> int | None:
        m = QUERY_ERROR.search(self.stderr)
        return int(m.group(1)) if m else None


@dataclass
class IndexRun:
    returncode: int
    stdout: str
    stderr: str
    total: int = -1
    added: int = -1
    updated: int = -1
    removed: int = -1

    def __str__(self) -> str:
        return f"exit {self.returncode}; stdout {self.stdout[-300:]!r}; stderr {self.stderr[-600:]!r}"


@dataclass
class SearchGateway:
    gw: BackupGateway
    index_dir: Path
    inbound: Capture | None = None
    outbound: Capture | None = None

    @property
    def config(self) -> str:
        return str(self.gw.config_path)

    @property
    def mk(self) -> Mailkeep:
        return self.gw.mk

    def maildir(self, user: str = "alice") -> Path:
        return self.gw.archive / DOMAIN / user

    def search(self, user: str, *query: str, messages: bool = True, limit: int | None = 100000,
               offset: int | None = None, timeout: float = 60) -> SearchResult:
        args = ["search", "-c", self.config, "--user", user if "@" in user else f"{user}@{DOMAIN}", "--json"]
        if messages:
            args.append("--messages")
        if limit is not None:
            args += ["--limit", str(limit)]
        if offset is not None:
            args += ["--offset", str(offset)]
        if query:
            args += ["--", *query]     # a query may start with '-' (negation)
        start = time.monotonic()
        res = subprocess.run([str(MAILKEEP_BIN), *args], capture_output=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - start
        bad = ""
        try:
            out = res.stdout.decode("utf-8")
        except UnicodeDecodeError as exc:
            ctx = res.stdout[max(0, exc.start - 120):exc.end + 20]
            rec = res.stdout.rfind(b'{"id":"', 0, exc.start)
            rec_id = res.stdout[rec + 7:res.stdout.find(b'"', rec + 7)].decode("utf-8", "replace") if rec >= 0 else "?"
            key = res.stdout.rfind(b'":"', 0, exc.start)
            key_name = res.stdout[res.stdout.rfind(b'"', 0, key) + 1:key].decode("utf-8", "replace") if key >= 0 else "?"
            bad = f"byte offset {exc.start}, in field {key_name!r} of record {rec_id}: ...{ctx!r}"
            out = res.stdout.decode("utf-8", "replace")
        return SearchResult(args, res.returncode, out, res.stderr.decode("utf-8", "replace"), elapsed, bad)

    def index(self, user: str | None = None, rebuild: bool = False, timeout: float = 300) -> IndexRun:
        args = ["archive", "index", "-c", self.config]
        if user:
            args += ["--user", user]
        if rebuild:
            args.append("--rebuild")
        res = run_mailkeep(*args, timeout=timeout)
        run = IndexRun(res.returncode, res.stdout, res.stderr)
        lines = res.stdout.strip().splitlines()
        m = INDEX_LINE.match(lines[-1]) if lines else None
        if m:
            run.total, run.added, run.updated, run.removed = (int(g) for g in m.groups()[:4])
        return run

    def alive(self) -> bool:
        return self.mk.proc is not None and self.mk.proc.poll() is None


def index_overrides(base: Path, **index: object) -> dict:
    settings = {"path": str(base / "index"), "enabled": "true",
                # rescans are driven by the tests (`archive index`), not by the clock
                "scan_interval": 3600}
    settings.update(index)
    return {"index": settings}


def start_search_gateway(users: list[str] = ("alice", "bob"), smtp: dict | None = None,
                         index: dict | None = None, **overrides) -> tuple[SearchGateway, Path]:
    """A started backup gateway with [index]; returns it and its base directory (the caller
    removes it and stops the gateway: see stop_search_gateway)."""
    inbound, outbound = Capture().start(), Capture().start()
    base = public_tempdir("mailkeep-search-")
    accounts = base / "accounts.txt"
    write_accounts(accounts, list(users))
    archive = base / "archive"
    cfg_over = dict(overrides)
    cfg_over.update(index_overrides(base, **(index or {})))
    if smtp:
        cfg_over["smtp"] = smtp
    config = backup_config(free_port(), outbound.address, archive, accounts, inbound.address, "root", **cfg_over)
    gw = BackupGateway(Mailkeep(base / "mailkeep", config), base, archive, accounts)
    gw.mk.workdir.chmod(0o755)
    sg = SearchGateway(gw, base / "index", inbound, outbound)
    try:
        gw.mk.start()
    except Exception:
        inbound.stop()
        outbound.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return sg, base


def stop_search_gateway(sg: SearchGateway, base: Path) -> None:
    code = sg.mk.stop()
    print(f"--- mailkeep log ({sg.mk.stderr_path}, exit {code}) ---")
    print("\n".join(sg.gw.log().splitlines()[-80:]))
    for cap in (sg.inbound, sg.outbound):
        if cap:
            cap.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def search_gateway(mailkeep_bin):
    """Factory: search_gateway(users=[...], smtp={...}, index={...}, **config) -> SearchGateway."""
    started: list[tuple[SearchGateway, Path]] = []

    def start(**kwargs) -> SearchGateway:
        pair = start_search_gateway(**kwargs)
        started.append(pair)
        return pair[0]

    yield start
    for sg, base in started:
        stop_search_gateway(sg, base)


def send_inbound(sg: SearchGateway, items: list[tuple[str, bytes]], rcpts: list[str], threads: int = 2,
                 sender="corpus@sender.test") -> tuple[list[str], dict[str, str]]:
    """Send each (name, message) to rcpts over `threads` parallel SMTP sessions from 127.0.0.1
    (item i in session i % threads, each session in order). sender: an address, or a function
    of the item's name giving one. Returns (names accepted, {name: refusal})."""
    return _send(sg, items, rcpts, threads, sender, None)


def send_outbound(sg: SearchGateway, items: list[tuple[str, bytes]], rcpts: list[str],
                  sender: str = f"alice@{DOMAIN}") -> tuple[list[str], dict[str, str]]:
    """From the provider's outbound relay address: copies go to the sender's .Sent."""
    return _send(sg, items, rcpts, 1, sender, OUTBOUND_IP)


def _send(sg, items, rcpts, threads, sender, source_ip):
    import threading
    accepted: list[str] = []
    refused: dict[str, str] = {}
    lock = threading.Lock()
    chunks = [items[i::threads] for i in range(threads)]

    def worker(chunk):
        s = None
        for name, msg in chunk:
            for attempt in range(2):
                try:
                    if s is None:
                        s = smtplib.SMTP(sg.gw.host, sg.gw.port, timeout=120,
                                         source_address=(source_ip, 0) if source_ip else None)
                        s.ehlo("mx.sender.test")
                    env_from = sender(name) if callable(sender) else sender
                    bad = s.sendmail(env_from, rcpts, msg, mail_options=mail_options(msg))
                    with lock:
                        if bad:
                            refused[name] = str(bad)
                        else:
                            accepted.append(name)
                    break
                except smtplib.SMTPResponseException as exc:
                    with lock:
                        refused[name] = f"{exc.smtp_code} {exc.smtp_error!r}"
                    try:
                        s.rset()
                    except (smtplib.SMTPException, OSError):
                        s = None
                    break
                except (smtplib.SMTPException, OSError) as exc:
                    s = None
                    if attempt == 1:
                        with lock:
                            refused[name] = f"connection: {exc!r}"
        if s is not None:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass

    ts = [threading.Thread(target=worker, args=(c,)) for c in chunks if c]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return accepted, refused


def wait_for_count(sg: SearchGateway, user: str, want: int, timeout: float = 60.0) -> tuple[int, float, str]:
    """Poll `search --messages in:anywhere` until it returns `want` messages.
    Returns (last count, seconds waited, last error text)."""
    start = time.monotonic()
    count, err = -1, ""
    while True:
        res = sg.search(user, "in:anywhere", limit=want + 1000)
        if res.returncode == 0:
            try:
                count = len(json.loads(res.stdout)["messages"])
                err = ""
            except (ValueError, KeyError) as exc:
                err = f"bad output: {exc}: {res.stdout[:300]!r}"
        else:
            err = f"exit {res.returncode}: {res.stderr[-500:]}"
        waited = time.monotonic() - start
        if count == want or waited > timeout:
            return count, waited, err
        time.sleep(1.0)


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise KeyError("VmHWM")


# --------------------------------------------------------------------------- tokenizers

_T1 = re.compile(r"[^\W_]+")
# Xapian's TermGenerator (1.4) keeps '_' inside words, joins words around an infix ' or &
# ("o'reilly", "at&t") and keeps a trailing + or # ("c++", "c#").
_T2 = re.compile(r"\w+(?:['\u2019&]\w+)*[+#]*")


def words(text: str) -> list[str]:
    """The spec's tokenizer: lower-case, split on everything that is not a letter or digit."""
    return _T1.findall(text.lower())


def xapian_like_words(text: str) -> list[str]:
    return _T2.findall(text.lower())


def sure_sequence(text: str) -> list[str | None]:
    """The words of text in order (spec tokenizer), each replaced by None where another
    reasonable tokenizer could cut differently: next to '_', an apostrophe, '&', '+', '#'
    (Xapian keeps "o'reilly", "at&t", "foo_bar", "c++" whole) or to any non-ASCII character
    (which a different charset decision changes)."""
    t = re.sub(r"[^\x00-\x7f]", "_", text.lower())
    out: list[str | None] = []
    for m in _T1.finditer(t):
        before = t[m.start() - 1] if m.start() > 0 else " "
        after = t[m.end()] if m.end() < len(t) else " "
        out.append(None if before in "_'&+#" or after in "_'&+#" else m.group())
    return out


def sure_words(text: str) -> set[str]:
    """Words a message holding `text` in an indexed field *must* be found by (lower bounds)."""
    return {w for w in sure_sequence(text) if w}


STOPWORDS = set("""a about above after again against all am an and any are as at be because been before
being below between both but by can did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so some
such than that the their theirs them themselves then there these they this those through to too under until
up very was we were what when where which while who whom why will with you your yours yourself yourselves
near adj xor re fw fwd""".split())


_SUFFIXES = ("s", "e", "y", "i", "ed", "ing", "ly", "er", "or", "al", "ic", "ance", "ence", "able",
             "ible", "ant", "ent", "ism", "ate", "iti", "ous", "ive", "ize", "ise", "ion", "ful", "ness",
             "ll", "at", "bl", "iz", "eed", "ment", "ist", "li")


def stem_inert(word: str) -> bool:
    """True when English (Porter/Snowball) stemming leaves `word` as it is: it has none of the
    suffixes the stemmer removes or rewrites. Then a stemmed query for `word` matches exactly the
    words the stemmer maps to `word`, which all start with `word` -- see stem_safe."""
    return word.isascii() and word.isalpha() and not word.endswith(_SUFFIXES)


class Vocabulary:
    """A sorted word list: which words extend a given one (bisect, not a scan)."""

    def __init__(self, vocabulary):
        self.sorted = sorted(set(vocabulary))

    def extended(self, word: str) -> bool:
        i = bisect.bisect_left(self.sorted, word)
        if i < len(self.sorted) and self.sorted[i] == word:
            i += 1
        return i < len(self.sorted) and self.sorted[i].startswith(word)


def stem_safe(word: str, vocabulary) -> bool:
    """stem_inert and no other word of the vocabulary starts with it: stemming cannot widen the
    answer (`reports` finds `report`, so `report` is not safe where `reports` occurs)."""
    if not stem_inert(word):
        return False
    if not isinstance(vocabulary, Vocabulary):
        vocabulary = Vocabulary(vocabulary)
    return not vocabulary.extended(word)


def phrase_in(seq: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return any(seq[i:i + n] == phrase for i in range(len(seq) - n + 1))


# --------------------------------------------------------------------------- dates

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_OBS_ZONES = {"ut": 0, "gmt": 0, "z": 0, "est": -5, "edt": -4, "cst": -6, "cdt": -5, "mst": -7, "mdt": -6,
              "pst": -8, "pdt": -7}
_STRICT_DATE = re.compile(
    r"^\s*(?:(?:mon|tue|wed|thu|fri|sat|sun)\s*,\s*)?(\d{1,2})\s+([a-z]{3})\s+(\d{4})\s+"
    r"(\d{2}):(\d{2})(?::(\d{2}))?\s+([+-]\d{4}|ut|gmt|est|edt|cst|cdt|mst|mdt|pst|pdt)"
    r"(?:\s*\([^()]*\))?\s*$", re.I)
MIN_DATE = 31536000          # 1971-01-01T00:00:00Z


def strict_date(value: str) -> int | None:
    """RFC 5322 date-time (4-digit year, named or numeric zone, an optional trailing comment),
    as a UTC timestamp; None for anything a lenient parser might read differently."""
    m = _STRICT_DATE.match(value)
    if not m:
        return None
    day, mon, year, hh, mm, ss, zone = m.groups()
    mon = _MONTHS.get(mon.lower())
    day, year, hh, mm, ss = int(day), int(year), int(hh), int(mm), int(ss or 0)
    if mon is None or hh > 23 or mm > 59 or ss > 59 or day < 1 or day > calendar.monthrange(year, mon)[1]:
        return None
    if zone[0] in "+-":
        zh, zm = int(zone[1:3]), int(zone[3:5])
        if zh > 23 or zm > 59:
            return None
        offset = (zh * 60 + zm) * 60 * (-1 if zone[0] == "-" else 1)
    else:
        offset = _OBS_ZONES[zone.lower()] * 3600
    return calendar.timegm((year, mon, day, hh, mm, ss)) - offset


def lenient_date(value: str) -> int | None:
    try:
        t = email.utils.parsedate_tz(value)
        return email.utils.mktime_tz(t) if t else None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def effective_date(parsed: int | None, arrival: int) -> int:
    """The spec's rule: the Date header unless missing/unparseable, before 1971 or more than a
    day after arrival; then the arrival time."""
    if parsed is None or parsed < MIN_DATE or parsed > arrival + 86400:
        return arrival
    return parsed


def utc_iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def day_start(y: int, m: int, d: int) -> int:
    return calendar.timegm((y, m, d, 0, 0, 0))


# --------------------------------------------------------------------------- the reference model

SAFE_CHARSETS = {"us-ascii", "ascii", "utf-8", "utf8", "iso-8859-1", "latin1", "latin-1", "iso-8859-15",
                 "windows-1252", "cp1252"}
SAFE_CTES = {"", "7bit", "8bit", "binary", "quoted-printable", "base64"}
_ANGLE = re.compile(r"<([^<>]*)>")
# filename=Two Words.doc: parsers disagree on where an unquoted value ends
_UNQUOTED_SPACE_PARAM = re.compile(rb"(?im)^content-(?:type|disposition):.*?name\*?=[ \t]*[^\"\s;]+[ \t]+[^;\s]")


@dataclass
class RefMessage:
    user: str
    path: str                  # relative to the account's Maildir root
    abspath: Path
    id: str                    # Maildir base name before ":2,"
    folder: str
    flags: str
    size: int
    arrival: int
    timestamp: int             # the reference date (spec rule)
    date_candidates: set[int]  # what a reasonable implementation may have made of an odd Date
    message_id: str            # "" when none
    refs: list[str]
    from_name: str
    from_address: str
    from_text: str             # decoded From header (all occurrences)
    from_raw: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    delivered_to: list[str]
    addr_raw: str              # raw To/Cc/Bcc/Delivered-To text, lower-cased
    addr_text: str             # the same decoded (RFC 2047)
    subject: str               # decoded, whitespace runs collapsed
    subject_raw: str
    list_id: str
    attachments: list[tuple[str, str]]
    sure_body: set[str]        # words certainly in the indexed body text (text/plain parts)
    any_words: set[str]        # every word anything in the file could give (upper bound)
    any_text: str              # lower-cased text behind any_words (for phrase upper bounds)
    sure_body_seq: list[str | None]   # body text/plain words in order (sure_sequence)
    ambiguous: set[str] = field(default_factory=set)   # fields a C++ parser may read differently
    addr_clean: dict[str, list[str]] = field(default_factory=dict)  # to/cc/bcc/delivered-to -> addresses of
    addr_odd: dict[str, str] = field(default_factory=dict)          # its plain values / raw text of its odd ones

    @property
    def has_attachment(self) -> bool:
        return bool(self.attachments)

    @property
    def unread(self) -> bool:
        return "S" not in self.flags

    def header_words_sure(self) -> set[str]:
        out = sure_words(self.subject) if "subject" not in self.ambiguous else set()
        if "from" not in self.ambiguous:
            out |= sure_words(self.from_name + " " + self.from_address)
        if "addresses" not in self.ambiguous:
            out |= sure_words(" ".join(self.to + self.cc))
        if "attachment" not in self.ambiguous:
            out |= sure_words(" ".join(f for f, _ in self.attachments))
        return out


def _raw_headers(msg, name: str) -> list[str]:
    vals = msg.get_all(name) or []
    out = []
    for v in vals:
        if isinstance(v, email.header.Header):
            v = str(v)
        out.append("".join(str(v).splitlines()))
    return out


def decode_header(name: str, raw: str) -> str:
    """RFC 2047 decoding as policy.default does it; compat32's decoder when that raises."""
    if "=?" not in raw and raw.isascii():
        return raw
    try:
        return str(email.policy.default.header_factory(name, raw))
    except Exception:  # noqa: BLE001 -- any parser failure: fall back
        try:
            return str(email.header.make_header(email.header.decode_header(raw)))
        except Exception:  # noqa: BLE001
            return raw


def _collapse(s: str) -> str:
    return " ".join(s.split())


def _odd_header(raw: str) -> bool:
    return "=?" in raw or not raw.isascii() or "\\" in raw


def _address_value(raw: str) -> tuple[list[str], bool]:
    """Addresses (lower-cased) of one address-list header value, and whether it is odd
    (comments, groups, encoded words, 8-bit, entries without @, unbalanced quotes)."""
    odd = "(" in raw or ":" in raw or ";" in raw or _odd_header(raw) or raw.count('"') % 2 == 1
    out = []
    for name, addr in email.utils.getaddresses([raw]):
        if not addr:
            odd = odd or bool(name.strip())
            continue
        local, _, domain = addr.partition("@")
        if not local or not domain or "@" in domain or " " in addr:
            odd = True
        out.append(addr.lower())
    if raw.count("@") != len(out):
        odd = True
    return out, odd


def _addresses(raws: list[str]) -> tuple[list[str], bool, list[str], str]:
    """(all addresses, any value odd, addresses of the values that are not, raw text of the odd
    values lower-cased)."""
    everything, clean, odd_raw, any_odd = [], [], [], False
    for raw in raws:
        addrs, odd = _address_value(raw)
        everything += addrs
        if odd:
            any_odd = True
            odd_raw.append(raw.lower())
        else:
            clean += addrs
    return everything, any_odd, clean, " ".join(odd_raw)


def _leaf_parts(msg, inside_message: bool = False):
    """(part, inside an attached message?) for every non-multipart part, like msg.walk()."""
    if msg.is_multipart():
        ctype = msg.get_content_type()
        for sub in msg.get_payload():
            if isinstance(sub, email.message.Message):
                yield from _leaf_parts(sub, inside_message or ctype.startswith("message/"))
    else:
        yield msg, inside_message


def _attachments(msg) -> list[tuple[str, str]]:
    out = []
    for part, _ in _leaf_parts(msg):
        fname = part.get_filename()
        if part.get_content_disposition() == "attachment" or fname is not None:
            out.append((fname or "", part.get_content_type()))
    return out


_BOUNDARY_DEFECTS = ("StartBoundaryNotFoundDefect", "CloseBoundaryNotFoundDefect", "NoBoundaryInMultipartDefect",
                     "MultipartInvariantViolationDefect", "MisplacedEnvelopeHeaderDefect",
                     "MissingHeaderBodySeparatorDefect", "InvalidMultipartContentTransferEncodingDefect")


def _structure_odd(msg) -> bool:
    for part in msg.walk():
        if any(type(d).__name__ in _BOUNDARY_DEFECTS for d in getattr(part, "defects", [])):
            return True
        if part.get_content_maintype() == "message":
            return True
        if part.get_content_maintype() == "multipart" and not part.is_multipart():
            return True
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if cte not in SAFE_CTES:
            return True
    return False


def _decodings(payload: bytes, charset: str | None) -> list[str]:
    out = [payload.decode("utf-8", "replace"), payload.decode("latin-1")]
    if charset:
        try:
            out.append(payload.decode(charset, "replace"))
        except (LookupError, ValueError):
            pass
    return out


def parse_file(user: str, root: Path, abspath: Path) -> RefMessage:
    data = abspath.read_bytes()
    rel = abspath.relative_to(root).as_posix()
    folder_dir = abspath.parent.parent.name if abspath.parent.parent != root else ""
    folder = folder_dir[1:] if folder_dir.startswith(".") else "INBOX"
    base, _, flags = abspath.name.partition(":2,")
    arrival = int(base.split(".", 1)[0])
    ambiguous: set[str] = set()

    msg = email.message_from_bytes(data, policy=email.policy.compat32)

    # ---- date
    dates = _raw_headers(msg, "Date")
    if not dates:
        timestamp, cands = arrival, {arrival}
    else:
        strict = strict_date(dates[0]) if len(dates) == 1 else None
        if strict is not None:
            timestamp = effective_date(strict, arrival)
            cands = {timestamp}
        else:
            ambiguous.add("date")
            cands = {arrival}
            for v in dates:
                lenient = lenient_date(v)
                if lenient is not None:
                    cands.add(effective_date(lenient, arrival))
            lenient = lenient_date(dates[0])
            timestamp = effective_date(lenient, arrival)

    # ---- message ids and threading
    mids = _raw_headers(msg, "Message-ID")
    message_id = ""
    if mids:
        found = _ANGLE.findall(mids[0])
        if len(mids) > 1 or len(found) != 1 or not found[0].strip() or re.search(r"\s", found[0]):
            ambiguous.add("message_id")
        if found:
            message_id = found[0]
    refs: list[str] = []
    for name in ("References", "In-Reply-To"):
        vals = _raw_headers(msg, name)
        if name == "References" and len(vals) > 1:
            ambiguous.add("thread")
        for v in vals:
            ids = _ANGLE.findall(v)
            if v.count("<") != len(ids) or any(not i.strip() or re.search(r"\s", i) for i in ids):
                ambiguous.add("thread")
            refs += ids
    if "message_id" in ambiguous:
        ambiguous.add("thread")

    # ---- addresses
    froms = _raw_headers(msg, "From")
    from_text = " ".join(decode_header("From", v) for v in froms)
    pairs = email.utils.getaddresses([decode_header("From", v) for v in froms]) if froms else []
    from_name, from_address = (pairs[0][0], pairs[0][1].lower()) if pairs else ("", "")
    if (len(froms) != 1 or len(pairs) != 1 or "@" not in from_address or " " in from_address
            or any(c in froms[0] for c in "():;,\\") or _odd_header(froms[0]) or froms[0].count('"') % 2):
        ambiguous.add("from")
    addr_clean: dict[str, list[str]] = {}
    addr_odd: dict[str, str] = {}
    lists = {}
    for kind in ("To", "Cc", "Bcc", "Delivered-To"):
        k = kind.lower()
        lists[k], odd, addr_clean[k], addr_odd[k] = _addresses(_raw_headers(msg, kind))
        if odd:
            ambiguous |= {"addresses", "addresses:" + k}
    to, cc, bcc, dto = lists["to"], lists["cc"], lists["bcc"], lists["delivered-to"]
    addr_raws = [(n, v) for n in ("To", "Cc", "Bcc", "Delivered-To") for v in _raw_headers(msg, n)]
    addr_raw = " ".join(v for _, v in addr_raws).lower()
    addr_text = " ".join(decode_header(n, v) for n, v in addr_raws)

    # ---- subject, list
    subjects = _raw_headers(msg, "Subject")
    subject_raw = subjects[0] if subjects else ""
    subject = _collapse(decode_header("Subject", subject_raw))
    if len(subjects) > 1 or _odd_header(subject_raw):
        ambiguous.add("subject")
    lists = _raw_headers(msg, "List-Id")
    list_id = ""
    if lists:
        found = _ANGLE.findall(lists[0])
        list_id = found[-1].strip().lower() if found else ""
        if len(lists) > 1 or len(found) != 1 or _odd_header(lists[0]) or not list_id:
            ambiguous.add("list")

    # ---- MIME: attachments, text
    try:
        dmsg = email.message_from_bytes(data, policy=email.policy.default)
        attachments = _attachments(dmsg)
        structure_odd = _structure_odd(dmsg)
    except Exception:  # noqa: BLE001 -- a header policy.default cannot take
        dmsg = msg
        attachments = _attachments(msg)
        structure_odd = True
    if (structure_odd or any("=?" in f or not f.isascii() for f, _ in attachments)
            or _UNQUOTED_SPACE_PARAM.search(data)):
        ambiguous.add("attachment")
    if structure_odd:
        ambiguous.add("body")

    sure_body: set[str] = set()
    sure_seq: list[str | None] = []
    texts = [data.decode("latin-1"), data.decode("utf-8", "replace")]
    for part, inside in _leaf_parts(dmsg):
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:  # noqa: BLE001
            payload = b""
        charset = part.get_content_charset()
        decoded = _decodings(payload, charset)
        ctype = part.get_content_type()
        if ctype.startswith("text/html") or ctype.startswith("text/"):
            for d in decoded:
                texts.append(html.unescape(d))
                texts.append(re.sub(r"<[^>]*>", "", d))
                texts.append(html.unescape(re.sub(r"<[^>]*>", " ", d)))
        elif len(payload) <= 1024 * 1024:        # big binary parts: their raw text above is enough
            texts.extend(decoded)
        is_att = part.get_content_disposition() == "attachment" or part.get_filename() is not None
        if ctype == "text/plain" and not is_att and not inside:
            cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
            cs = (charset or "us-ascii").lower()
            if cte in SAFE_CTES:
                text = payload.decode(cs if cs in SAFE_CHARSETS else "latin-1", "replace")
                seq = sure_sequence(text)
                sure_body |= {w for w in seq if w}
                sure_seq += [None] + seq
    for name in ("Subject", "From", "To", "Cc", "Bcc", "Delivered-To"):
        texts += [decode_header(name, v) for v in _raw_headers(msg, name)]
    texts += [f for f, _ in attachments]
    any_text = "\n".join(texts).lower()
    any_words = set(words(any_text))

    return RefMessage(
        user=user, path=rel, abspath=abspath, id=base, folder=folder, flags="".join(sorted(flags)),
        size=len(data), arrival=arrival, timestamp=timestamp, date_candidates=cands,
        message_id=message_id, refs=refs, from_name=from_name, from_address=from_address,
        from_text=from_text, from_raw=" ".join(froms), to=to, cc=cc, bcc=bcc, delivered_to=dto,
        addr_raw=addr_raw, addr_text=addr_text,
        subject=subject, subject_raw=subject_raw, list_id=list_id, attachments=attachments,
        sure_body=sure_body, any_words=any_words, any_text=any_text, sure_body_seq=sure_seq,
        ambiguous=ambiguous, addr_clean=addr_clean, addr_odd=addr_odd)


def attachments_of(path: Path) -> tuple[list[tuple[str, str]], bool]:
    """(attachments, ambiguous?) of one file, as parse_file finds them, without the text work.
    compat32 (ten times faster on 10,000 parts) finds the same ASCII names, and any other name
    makes the answer ambiguous anyway."""
    data = path.read_bytes()
    try:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        atts, odd = _attachments(msg), _structure_odd(msg)
    except RecursionError:
        return [], True
    odd = odd or any("=?" in f or not f.isascii() for f, _ in atts) or bool(_UNQUOTED_SPACE_PARAM.search(data))
    return atts, odd


def maildir_files(root: Path) -> list[Path]:
    """new/ and cur/ files of the Maildir root and of every Maildir++ folder below it."""
    out = []
    dirs = [root] + sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(".")) if root.is_dir() else []
    for d in dirs:
        for sub in ("new", "cur"):
            if (d / sub).is_dir():
                out += sorted(p for p in (d / sub).iterdir() if p.is_file())
    return out


def load_account(root: Path, user: str = "alice", skip_errors: bool = False) -> list[RefMessage]:
    """The model of every file of the account. skip_errors: leave out files Python's parser
    cannot take at all (RecursionError on absurd nesting) instead of raising."""
    out = []
    for p in maildir_files(root):
        try:
            out.append(parse_file(user, root, p))
        except RecursionError:
            if not skip_errors:
                raise
    return out


# --------------------------------------------------------------------------- threading

class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def reference_threads(msgs: list[RefMessage]) -> dict[str, str]:
    """The spec's reference model: connected components of the graph whose nodes are
    Message-IDs (and the messages) and whose edges go from each message's id to each id of its
    References and In-Reply-To. Returns {path: component key}."""
    uf = _UnionFind()
    for m in msgs:
        node = "file:" + m.path
        uf.find(node)
        if m.message_id:
            uf.union(node, "id:" + m.message_id)
        for r in m.refs:
            if r != m.message_id:
                uf.union(node, "id:" + r)
    return {m.path: uf.find("file:" + m.path) for m in msgs}


def partition(groups: dict[str, str]) -> set[frozenset[str]]:
    """{item: group key} -> the set of groups (as frozensets of items)."""
    by: dict[str, set[str]] = {}
    for item, key in groups.items():
        by.setdefault(key, set()).add(item)
    return {frozenset(v) for v in by.values()}


# --------------------------------------------------------------------------- comparisons

def describe_diff(expected: set[str], got: set[str], by_path: dict[str, RefMessage] | None = None,
                  show: int = 5) -> str:
    missing, extra = sorted(expected - got), sorted(got - expected)

    def fmt(p):
        m = by_path.get(p) if by_path else None
        return f"{p} (subject {m.subject[:60]!r}, from {m.from_address!r})" if m else p

    out = [f"expected {len(expected)}, got {len(got)}; {len(missing)} missing, {len(extra)} unexpected"]
    if missing:
        out.append("  missing: " + "; ".join(fmt(p) for p in missing[:show]))
    if extra:
        out.append("  unexpected: " + "; ".join(fmt(p) for p in extra[:show]))
    return "\n".join(out)
