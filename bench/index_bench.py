#!/usr/bin/python3
"""mailkeep archive search benchmark: indexing and queries against notmuch, mu and Dovecot.

Everything in one run, on the same machine and the same Maildir files (page cache warm: the
files were just written), each tool as its own subprocess:

  1 corpus     the 6,046 SpamAssassin messages laid out as alice@example.org's Maildir (INBOX,
               .Sent, .Archive), indexed by `mailkeep archive index`, `notmuch new` and
               `mu index`: messages/s (wall time, process start included), index size (du),
               peak RSS (wait4 ru_maxrss), CPU seconds
  2 synthetic  N messages (default 200,000) built from the corpus bodies: 5,000 senders with a
               skewed distribution, Dates over 20 years, unique Message-IDs, ~35 % replies
               (In-Reply-To/References, "Re:"), ~2 % attachments, a .Junk folder; indexed the same way
  3 queries    20 queries, first page of 50 conversations, `mailkeep search` against
               `notmuch search --limit=50` and `mu find --maxnum=50` (translated), one warm-up and
               --repeat timed runs each, wall time of the whole CLI process (process start included)
  4 dovecot    the word queries as IMAP SEARCH TEXT (no FTS plugin) over INBOX, Sent and Archive of
               the same Maildir, through a private Dovecot instance
  5 smtp       relay rate at concurrency 50 (smtp-source -> mailkeep -> smtp-sink), archive on and
               [index] enabled = true against enabled = false, alternating, median of --smtp-repeat

Prints a table per part and the targets with PASS/FAIL; --out FILE writes every figure as JSON.
Exit status 1 if a target failed or a mailkeep step failed, 2 if a tool is missing.

Usage: /usr/bin/python3 bench/index_bench.py [--quick] [--messages N] [--skip-dovecot]
       [--skip-peers-200k] [--out FILE]       (KEEP_BENCH_DIR=1 keeps the work directory)
"""

from __future__ import annotations

import argparse
import base64
import datetime
import imaplib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from email.utils import mktime_tz, parsedate_tz
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))

from harness import (  # noqa: E402
    CORPUS_DIR, CORPUS_SETS, MAILKEEP_BIN, Mailkeep, free_port, normalize_message, render_ini,
)
from backup_support import MAIL_GID, MAIL_UID, Dovecot, backup_config, write_accounts  # noqa: E402
from sink import Sink, smtp_source  # noqa: E402

DOMAIN = "example.org"
LOCAL = "alice"
USER = f"{LOCAL}@{DOMAIN}"
NOW = time.time()
ENV = dict(os.environ, TZ="UTC", LC_ALL="C.UTF-8")
for _k in ("NOTMUCH_PROFILE", "NOTMUCH_DATABASE", "MAILDIR"):
    ENV.pop(_k, None)


def log(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- measuring

@dataclass
class Run:
    rc: int | None
    wall: float
    maxrss_kb: int
    cpu: float
    out: str
    err: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out


def run_measured(cmd: list[str], *, env: dict | None = None, timeout: float | None = None) -> Run:
    """Run cmd as its own process (session); wall time from spawn to exit, peak RSS and CPU
    time of that child from wait4(). On timeout its process group is killed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env or ENV,
                             start_new_session=True)
        state = {"done": False, "timed_out": False}
        lock = threading.Lock()

        def kill() -> None:
            with lock:
                if not state["done"]:
                    state["timed_out"] = True
                    os.killpg(p.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        with lock:
            state["done"] = True
        if timer:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(p.returncode, wall, ru.ru_maxrss, ru.ru_utime + ru.ru_stime,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"), state["timed_out"])


def du_bytes(path: Path) -> int | None:
    res = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True)
    return int(res.stdout.split()[0]) if res.returncode == 0 and res.stdout else None


def p99(xs: list[float]) -> float:
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[98]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


# --------------------------------------------------------------------------- Maildir

FOLDERS = ("INBOX", "Sent", "Archive", "Junk")


class Maildir:
    """An account Maildir: INBOX is the root's cur/, other folders Maildir++ .Name/cur/.
    Files are written straight into cur/ (no tmp/ rename, no fsync: a benchmark fixture)."""

    def __init__(self, root: Path):
        self.root = root
        self.seq = 0
        self.pid = os.getpid()
        self.cur: dict[str, Path] = {}
        self.count: Counter = Counter()
        self.bytes = 0
        for f in FOLDERS:
            d = root if f == "INBOX" else root / f".{f}"
            for sub in ("cur", "new", "tmp"):
                (d / sub).mkdir(parents=True, exist_ok=True)
            self.cur[f] = d / "cur"

    def add(self, folder: str, data: bytes, arrival: int, flags: str) -> str:
        self.seq += 1
        name = f"{arrival}.M{self.seq % 1000000}P{self.pid}Q{self.seq}.bench,S={len(data)}:2,{flags}"
        with open(self.cur[folder] / name, "wb") as f:
            f.write(data)
        self.count[folder] += 1
        self.bytes += len(data)
        return name

    @property
    def total(self) -> int:
        return sum(self.count.values())


def chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, gid)
        for n in filenames:
            os.chown(os.path.join(dirpath, n), uid, gid)


# --------------------------------------------------------------------------- corpus

FIELD = re.compile(rb"^([^:\s]+)[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)\r\n", re.M)
REPLY_PREFIX = re.compile(rb"^\s*((re|fwd?|aw)\s*(\[\d+\])?\s*:\s*)+", re.I)


def split_message(msg: bytes) -> tuple[bytes, bytes]:
    """(header section incl. its last CRLF, body)."""
    if msg.startswith(b"\r\n"):
        return b"", msg[2:]
    i = msg.find(b"\r\n\r\n")
    return (msg + b"\r\n", b"") if i < 0 else (msg[:i + 2], msg[i + 4:])


def fields(head: bytes) -> dict[bytes, bytes]:
    """lower-case name -> the first field with that name, complete (name, value, CRLF)."""
    out: dict[bytes, bytes] = {}
    for m in FIELD.finditer(head):
        out.setdefault(m.group(1).lower(), m.group(0))
    return out


def field_value(f: bytes | None) -> bytes:
    return f.split(b":", 1)[1].strip() if f else b""


def load_corpus() -> list[tuple[str, bytes]]:
    out = []
    for s in CORPUS_SETS:
        for p in sorted((CORPUS_DIR / s).glob("*.txt")):
            out.append((s, normalize_message(p.read_bytes())))
    return out


def header_date(head: bytes) -> int | None:
    m = re.search(rb"^Date:[ \t]*([^\r\n]*)", head, re.I | re.M)
    if not m:
        return None
    try:
        t = parsedate_tz(m.group(1).decode("latin-1"))
        return mktime_tz(t) if t else None
    except (ValueError, OverflowError, TypeError):
        return None


def write_corpus_maildir(corpus: list[tuple[str, bytes]], root: Path) -> Maildir:
    """All corpus messages as they are: 70 % INBOX, 10 % .Sent, 20 % .Archive; flags S (80 %),
    FS (5 %), none (15 %); file name time = Date + 60 s (arrival), or a 2002 time when unparseable."""
    md = Maildir(root)
    rng = random.Random(6046)
    for i, (_, msg) in enumerate(corpus):
        head, _ = split_message(msg)
        d = header_date(head)
        arrival = d + 60 if d and 31536000 < d < NOW else 1030000000 + i
        r = rng.random()
        folder = "INBOX" if r < 0.7 else "Sent" if r < 0.8 else "Archive"
        f = rng.random()
        flags = "S" if f < 0.8 else "FS" if f < 0.85 else ""
        md.add(folder, msg, arrival, flags)
    return md


# --------------------------------------------------------------------------- synthetic archive

FIRST = """James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara Richard
Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Nancy Daniel Lisa Matthew Betty Anthony
Margaret Mark Sandra Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua Michelle Kenneth
Dorothy Kevin Carol Brian Amanda George Melissa Edward Deborah Ronald Stephanie Timothy Rebecca Jason
Sharon Jeffrey Laura Ryan Cynthia Jacob Kathleen Gary Amy Nicholas Shirley Eric Angela Jonathan Helen
Stephen Anna Larry Brenda Justin Pamela Scott Nicole Brandon Emma Benjamin Samantha Samuel Katherine
Gregory Christine Frank Debra Alexander Rachel Raymond Catherine Patrick Carolyn Jack Janet Dennis
Ruth Jerry Maria Tyler Heather Aaron Diane Jose Virginia Henry Julie Adam Joyce Douglas Victoria
Nathan Olivia Peter Kelly Zachary Christina Kyle Lauren Walter Joan Harold Evelyn Jeremy Judith Ethan
Megan Carl Cheryl Keith Andrea Roger Hannah Gerald Martha Christian Jacqueline Terry Frances Sean
Gloria Arthur Ann Austin Teresa Noah Kathryn Lawrence Sara Jesse Janice Joe Jean Bryan Alice Billy
Madison Jordan Doris Albert Abigail Dylan Julia Bruce Judy Willie Grace Gabriel Denise Alan Amber
Juan Marilyn Logan Beverly Wayne Danielle Ralph Theresa Roy Sophia Eugene Marie Randy Diana Vincent
Brittany Russell Natalie Louis Isabella Philip Charlotte Bobby Rose Johnny Alexis Bradley Kayla""".split()
LAST = """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez
Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez
Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams
Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker
Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper
Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett
Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell
Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons
Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes
Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison
Fernandez Mcdonald Woods Washington Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns
Crawford Olson Simpson Porter Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes
Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels
Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce
Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong Hudson Carroll Lane Riley
Andrews Alvarado Ray Delgado Berry Perkins Hoffman Johnston Matthews Pena Richards Willis Carpenter
Lawrence Sandoval Guerrero George Chapman Rios Estrada Ortega Watkins Greene Nunez Wheeler Valdez Harper
Burke Larson Santiago Maldonado Morrison Franklin Carlson Austin Dominguez Carr Lawson Jacobs Obrien
Lynch Singh Vega Bishop Montgomery Oliver Jensen Harvey Williamson Gilbert Dean Sims Espinoza Howell
Li Wong Reid Hanson Le Mccoy Garrett Burton Fuller Wang Weber Welch Rojas Lucas Marquez Fields Park
Yang Little Banks Padilla Day Walsh Bowman Schultz Luna Fowler Mejia Davidson Acosta Brewer May Holland
Juarez Newman Pearson Curtis Cortez Douglas Schneider Joseph Barrett Navarro Figueroa Keller Avila
Wade Molina Stanley Hopkins Campos Barnett Bates Chambers Caldwell Beck Lambert Miranda Byrd Craig
Ayala Lowe Frazier Powers Neal Leonard Gregory Carrillo Sutton Fleming Rhodes Shelton Schwartz Norris
Jennings Watts Duran Walters Cohen Mcdaniel Moran Parks Steele Vaughn Becker Holt Deleon Barker Terry
Hale Leon Hail Benson Haynes Horton Miles Lyons Pham Graves Bush Thornton Wolfe Warner Cabrera Mckinney
Mann Zimmerman Dawson Lara Fletcher Page Mccarthy Love Robles Cervantes Solis Erickson Reeves Chang
Klein Salinas Fuentes Baldwin Daniel Simon Velasquez Hardy Higgins Aguirre Lin Cummings Chandler Sharp
Barber Bowen Ochoa Dennis Robbins Liu Ramsey Francis Griffith Paul Blair Oconnor Cardenas Pacheco
Cross Calderon Quinn Moss Swanson Chan Rivas Khan Rodgers Serrano Fitzgerald Rosales Stevenson
Christensen Manning Gill Curry Mclaughlin Harmon Mcgee Gross Doyle Garner Newton Burgess Reese Walton
Blake Trujillo Adkins Brady Goodman Roman Webster Goodwin Fischer Huang Potter Delacruz Montoya Todd
Wu Hines Mullins Castaneda Malone Cannon Tate Mack Sherman Hubbard Hodges Zhang Guerra Wolf Valencia
Saunders Franco Rowe Gallagher Farmer Hammond Hampton Townsend Ingram Wise Gallegos Clarke Barton
Schroeder Maxwell Waters Logan Camacho Strickland Norman Person Colon Parsons Frank Harrington Glover
Osborne Buchanan Casey Floyd Patton Ibarra Ball Tyler Suarez Bowers Orozco Salas Cobb Gibbs Andrade
Bauer Conner Moody Escobar Mcguire Lloyd Mueller Hartman French Kramer Mcbride Pope Lindsey Velazquez
Norton Mccormick Sparks Flynn Yates Hogan Marsh Macias Villanueva Zamora Pratt Stokes Owen Ballard
Lang Brock Villarreal Charles Drake Barrera Cain Patrick Pineda Burnett Mercado Santana Shepherd
Bautista Ali Shaffer Lamb Trevino Mckenzie Hess Beil Olsen Cochran Morton Nash Wilkins Petersen Briggs
Shah Roth Nicholson Holloway Lozano Rangel Flowers Hoover Short Arias Mora Valenzuela Bryan Meyers
Weiss Underwood Bass Greer Summers Houston Carson Morrow Clayton Whitaker Decker Yoder Collier
Zuniga Carey Wilcox Melendez Poole Roberson Larsen Conley Davenport Copeland Massey Lam Huff Rocha
Cameron Jefferson Hood Monroe Anthony Pittman Huynh Randall Singleton Kirk Combs Mathis Christian""".split()
DOMAIN_WORDS = """acme globex initech umbrella hooli vandelay stark wayne wonka cyberdyne tyrell soylent
oceanic gringotts monarch octan nakatomi virtucon massive dunder mooby prestige sterling aperture
blackmesa zorg bluth pied ollivander duff krusty planet daily wernham lacuna rekall yoyodyne""".split()
TLDS = ("com", "net", "org", "de", "co.uk", "fr", "io")
ATTACHMENTS = (("pdf", "application/pdf"), ("png", "image/png"), ("zip", "application/zip"),
               ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
               ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
               ("jpg", "image/jpeg"), ("txt", "text/plain"))
ATTACHMENT_WORDS = ("report", "invoice", "photo", "slides", "budget", "notes", "contract", "scan", "minutes",
                    "draft")
TZ_OFFSETS = (0, 0, 60, 60, 120, -300, -480, 330, 540, -240, 600)
RARE_WORD = "kumquat"           # put into the subject of one message in RARE_EVERY
RARE_EVERY = 4000
YEARS = 20


@dataclass
class Person:
    first: str
    last: str
    address: str

    @property
    def display(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class Template:
    subject: bytes            # raw value (may hold encoded words)
    root_subject: bytes       # without Re:/Fwd: prefixes
    mime: bytes               # MIME-Version, Content-Type, Content-Transfer-Encoding fields
    content_type: bytes       # the Content-Type field (or b"")
    cte: bytes                # the Content-Transfer-Encoding field (or b"")
    list_id: bytes            # the List-Id field (or b"")
    body: bytes
    spam: bool


@dataclass
class SynthStats:
    messages: int = 0
    bytes: int = 0
    replies: int = 0
    attachments: int = 0
    large: int = 0
    rare: int = 0
    unread: int = 0
    starred: int = 0
    folders: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def make_people(rng: random.Random, n: int = 5000) -> list[Person]:
    domains = [f"{w}.{rng.choice(TLDS)}" for w in DOMAIN_WORDS] + \
              [f"mail{k}.{w}.{rng.choice(TLDS)}" for k in range(1, 8) for w in DOMAIN_WORDS]
    seen, people = set(), []
    while len(people) < n:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        dom = rng.choice(domains)
        style = rng.random()
        local = (f"{first}.{last}" if style < 0.5 else f"{first[0]}{last}" if style < 0.8 else
                 f"{first}{rng.randrange(10, 99)}").lower()
        addr = f"{local}@{dom}"
        if addr in seen or first == "Alice":
            continue
        seen.add(addr)
        people.append(Person(first, last, addr))
    return people


def make_templates(corpus: list[tuple[str, bytes]]) -> list[Template]:
    out = []
    for group, msg in corpus:
        head, body = split_message(msg)
        f = fields(head)
        subject = field_value(f.get(b"subject")) or b"(no subject)"
        root = REPLY_PREFIX.sub(b"", subject) or b"(no subject)"
        mime = b"".join(f.get(k, b"") for k in (b"mime-version", b"content-type", b"content-transfer-encoding"))
        out.append(Template(subject, root, mime, f.get(b"content-type", b""), f.get(b"content-transfer-encoding", b""),
                            f.get(b"list-id", b""), body, group.startswith("spam")))
    return out


def rfc5322_date(t: float, offset_min: int) -> str:
    local = time.gmtime(int(t) + offset_min * 60)
    sign = "+" if offset_min >= 0 else "-"
    off = abs(offset_min)
    return time.strftime("%a, %d %b %Y %H:%M:%S", local) + f" {sign}{off // 60:02d}{off % 60:02d}"


class Synthetic:
    """Deterministic synthetic archive (seed 2026) built from the corpus bodies."""

    def __init__(self, corpus: list[tuple[str, bytes]], seed: int = 2026):
        self.rng = random.Random(seed)
        self.people = make_people(self.rng)
        self.templates = make_templates(corpus)
        blob = random.Random(seed + 1).randbytes(57 * 8000)     # 8000 base64 lines of 76 characters
        enc = base64.b64encode(blob)
        self.b64 = b"".join(enc[i:i + 76] + b"\r\n" for i in range(0, len(enc), 76))
        self.b64_lines = len(enc) // 76
        self.end = int(NOW) - 86400 * 7
        self.start = self.end - int(YEARS * 365.25 * 86400)
        # query parameters: frequent people (the distribution is skewed towards the list's head)
        self.from_addr = self.people[0].address
        self.from_name = self.people[1].last
        self.to_name = self.people[2].last

    def person(self) -> Person:
        return self.people[int(len(self.people) * self.rng.random() ** 3)]

    def generate(self, root: Path, n: int) -> tuple[Maildir, SynthStats]:
        rng = self.rng
        md = Maildir(root)
        st = SynthStats()
        t_start = time.perf_counter()
        order = list(range(len(self.templates)))
        rng.shuffle(order)
        recent: deque = deque(maxlen=3000)    # (message-id, references, root subject)
        span = self.end - self.start
        alice = b"Alice Example <alice@example.org>"
        for i in range(n):
            t = self.start + (i + rng.random()) * span / n
            tpl = self.templates[order[i % len(order)]]
            r = rng.random()
            if tpl.spam and r < 0.15:
                folder = "Junk"
            elif r < 0.25:
                folder = "Sent"
            elif r < 0.40:
                folder = "Archive"
            else:
                folder = "INBOX"
            sender = self.person()
            hdr = []
            if folder == "Sent":
                rcpt = self.person()
                hdr.append(f"Return-Path: <{USER}>\r\n".encode())
                hdr.append(b"From: " + alice + b"\r\n")
                hdr.append(f"To: {rcpt.display} <{rcpt.address}>\r\n".encode())
                msgid_domain = DOMAIN
            else:
                hdr.append(f"Return-Path: <{sender.address}>\r\nDelivered-To: {USER}\r\n".encode())
                hdr.append(f"From: {sender.display} <{sender.address}>\r\n".encode())
                hdr.append(b"To: " + alice + b"\r\n")
                msgid_domain = sender.address.split("@", 1)[1]
            if rng.random() < 0.1:
                cc = self.person()
                hdr.append(f"Cc: {cc.display} <{cc.address}>\r\n".encode())
            parent = None
            if recent and folder != "Junk" and rng.random() < (0.6 if folder == "Sent" else 0.3):
                parent = recent[-1 - int(len(recent) * rng.random() ** 2)]
            if parent:
                subject, root_subject = b"Re: " + parent[2], parent[2]
            else:
                subject, root_subject = tpl.subject, tpl.root_subject
            if i % RARE_EVERY == RARE_EVERY // 2:
                subject += f" {RARE_WORD}".encode()
                st.rare += 1
            hdr.append(b"Subject: " + subject + b"\r\n")
            hdr.append(f"Date: {rfc5322_date(t, rng.choice(TZ_OFFSETS))}\r\n".encode())
            msgid = f"{int(t):x}.{i:x}.{rng.getrandbits(24):06x}@{msgid_domain}"
            hdr.append(f"Message-ID: <{msgid}>\r\n".encode())
            refs: tuple = ()
            if parent:
                refs = (parent[1] + (parent[0],))[-10:]
                hdr.append(f"In-Reply-To: <{parent[0]}>\r\n".encode())
                hdr.append(("References: " + "\r\n ".join(f"<{x}>" for x in refs) + "\r\n").encode())
                st.replies += 1
            recent.append((msgid, refs, root_subject))
            if tpl.list_id and folder != "Sent":
                hdr.append(tpl.list_id)
            if folder != "Junk" and rng.random() < 0.02:
                body = self.attach(hdr, tpl, i)
                st.attachments += 1
            else:
                hdr.append(tpl.mime)
                body = tpl.body
            data = b"".join(hdr) + b"\r\n" + body
            if folder == "Sent":
                flags = "S"
            else:
                f = rng.random()
                unread = f < 0.04 or (i > n * 0.98 and f < 0.5)      # the newest 2 % are half unread
                flags = "" if unread else "FS" if f < 0.06 else "RS" if f < 0.12 else "S"
            st.unread += flags == ""
            st.starred += "F" in flags
            st.large += len(data) > 100 * 1024
            md.add(folder, data, int(t) + rng.randint(2, 900), flags)
        st.messages, st.bytes, st.folders = md.total, md.bytes, Counter(md.count)
        st.seconds = time.perf_counter() - t_start
        return md, st

    def attach(self, hdr: list[bytes], tpl: Template, i: int) -> bytes:
        """multipart/mixed: the template's body, then a base64 attachment (90 %: 2-60 KB, 10 %: 120-400 KB)."""
        rng = self.rng
        size = rng.randint(2, 60) * 1024 if rng.random() < 0.9 else rng.randint(120, 400) * 1024
        lines = min(self.b64_lines, size // 57)
        first = rng.randrange(0, self.b64_lines - lines + 1)
        ext, ctype = rng.choice(ATTACHMENTS)
        name = f"{rng.choice(ATTACHMENT_WORDS)}-{i % 997}.{ext}"
        boundary = f"=_bench_{i:x}_{rng.getrandbits(32):08x}".encode()
        hdr.append(b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"" + boundary + b"\"\r\n")
        first_part = (tpl.content_type or b"Content-Type: text/plain; charset=us-ascii\r\n") + tpl.cte
        return (b"This is a multi-part message in MIME format.\r\n\r\n--" + boundary + b"\r\n" + first_part + b"\r\n"
                + tpl.body + b"\r\n--" + boundary + b"\r\n"
                + f"Content-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n"
                  "Content-Transfer-Encoding: base64\r\n\r\n".encode()
                + self.b64[first * 78:(first + lines) * 78] + b"--" + boundary + b"--\r\n")


# --------------------------------------------------------------------------- the indexers

class Tool:
    name = "?"

    def index(self, timeout: float) -> Run:
        raise NotImplementedError

    def search(self, query: str) -> list[str]:
        raise NotImplementedError

    def index_dir(self) -> Path:
        raise NotImplementedError

    def indexed(self, run: Run) -> int | None:
        return None


class MailkeepTool(Tool):
    name = "mailkeep"

    def __init__(self, base: Path, archive: Path, label: str):
        self.base = base / f"mk-{label}"
        self.base.mkdir(parents=True)
        self.archive = archive
        self.accounts = self.base / "accounts.txt"
        write_accounts(self.accounts, [LOCAL])
        self.idx = self.base / "index"
        config = backup_config(free_port(), "127.0.0.1:9", archive, self.accounts, user="root",
                               index={"path": str(self.idx), "enabled": "false"})
        self.ini = self.base / "mailkeep.ini"
        self.ini.write_text(render_ini(config))

    def reset(self) -> None:
        shutil.rmtree(self.idx, ignore_errors=True)

    def index(self, timeout: float) -> Run:
        return run_measured([str(MAILKEEP_BIN), "archive", "index", "-c", str(self.ini)], timeout=timeout)

    def indexed(self, run: Run) -> int | None:
        m = re.search(r"indexed (\d+) messages", run.out)
        return int(m.group(1)) if m else None

    def index_dir(self) -> Path:
        return self.idx

    def search(self, query: str) -> list[str]:
        return [str(MAILKEEP_BIN), "search", "-c", str(self.ini), "--user", USER, "--limit", "50", query]

    invalid_utf8: set = set()      # queries whose --json output was not valid UTF-8

    def count(self, query: str) -> tuple[int | None, int | None, int | None]:
        """Untimed: (matching conversations, matching messages) counted in a complete --json
        listing, and the `total` that the first page (--limit 50) reports."""
        out = []
        for extra in (["--limit", "50"], ["--limit", "1000000"], ["--limit", "1000000", "--messages"]):
            res = subprocess.run([str(MAILKEEP_BIN), "search", "-c", str(self.ini), "--user", USER, "--json", *extra,
                                  query], capture_output=True, env=ENV, timeout=600)
            try:
                text = res.stdout.decode()
            except UnicodeDecodeError:
                MailkeepTool.invalid_utf8.add(query)
                text = res.stdout.decode(errors="replace")
            try:
                d = json.loads(text) if res.returncode == 0 else None
            except ValueError:
                d = None
            out.append(d)
        page, convs, msgs = out
        return (len(convs["conversations"]) if convs else None, len(msgs["messages"]) if msgs else None,
                page["total"] if page else None)


class NotmuchTool(Tool):
    name = "notmuch"

    def __init__(self, base: Path, maildir: Path, label: str):
        self.cfg = base / f"notmuch-{label}.config"
        self.db = base / f"notmuch-{label}"
        self.maildir = maildir
        self.env = dict(ENV, NOTMUCH_CONFIG=str(self.cfg))
        self.cfg.write_text(f"""[database]
path={self.db}
mail_root={maildir}
[user]
name=Alice Example
primary_email={USER}
[new]
tags=unread;inbox
ignore=
[search]
exclude_tags=
[maildir]
synchronize_flags=true
""")

    def reset(self) -> None:
        shutil.rmtree(self.db, ignore_errors=True)
        self.db.mkdir()

    def index(self, timeout: float) -> Run:
        return run_measured(["notmuch", "new", "--quiet"], env=self.env, timeout=timeout)

    def indexed(self, run: Run) -> int | None:
        res = subprocess.run(["notmuch", "count", "*"], capture_output=True, text=True, env=self.env)
        return int(res.stdout) if res.returncode == 0 and res.stdout.strip().isdigit() else None

    def index_dir(self) -> Path:
        return self.db

    def search(self, query: str) -> list[str]:
        return ["notmuch", "search", "--limit=50", query]

    def count(self, query: str) -> tuple[int | None, int | None]:
        out = []
        for kind in ("threads", "messages"):
            res = subprocess.run(["notmuch", "count", f"--output={kind}", query], capture_output=True, text=True,
                                 env=self.env, timeout=600)
            out.append(int(res.stdout) if res.returncode == 0 and res.stdout.strip().isdigit() else None)
        return out[0], out[1], None


class MuTool(Tool):
    name = "mu"

    def __init__(self, base: Path, maildir: Path, label: str):
        self.home = base / f"mu-{label}"
        self.maildir = maildir

    def reset(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        res = subprocess.run(["mu", "init", f"--muhome={self.home}", f"--maildir={self.maildir}",
                              f"--my-address={USER}"], capture_output=True, text=True, env=ENV)
        if res.returncode != 0:
            raise RuntimeError(f"mu init failed: {res.stdout}{res.stderr}")

    def index(self, timeout: float) -> Run:
        return run_measured(["mu", "index", f"--muhome={self.home}"], timeout=timeout)

    def indexed(self, run: Run) -> int | None:
        found = re.findall(r"updated/new: (\d+)", run.out + run.err)
        return int(found[-1]) if found else None

    def index_dir(self) -> Path:
        return self.home

    def search(self, query: str) -> list[str]:
        return ["mu", "find", f"--muhome={self.home}", "--maxnum=50", "--sortfield=date", "--reverse", query]

    def count(self, query: str) -> tuple[int | None, int | None]:
        res = subprocess.run(["mu", "find", f"--muhome={self.home}", "--fields=i", query], capture_output=True,
                             text=True, env=ENV, timeout=600)
        if res.returncode == 4:
            return None, 0, None
        return None, (len(res.stdout.splitlines()) if res.returncode == 0 else None), None


@dataclass
class IndexResult:
    tool: str
    messages: int                  # files in the Maildir
    runs: list[float]              # wall seconds
    indexed: int | None
    size: int | None               # du of the index, bytes
    maxrss_kb: int
    cpu: float
    ok: bool
    note: str = ""

    @property
    def rate(self) -> float | None:
        return self.messages / median(self.runs) if self.ok and self.runs else None

    def as_dict(self) -> dict:
        return {"tool": self.tool, "messages": self.messages, "wall_s": self.runs, "rate": self.rate,
                "indexed": self.indexed, "index_bytes": self.size, "peak_rss_kb": self.maxrss_kb,
                "cpu_s": self.cpu, "ok": self.ok, "note": self.note}


def measure_index(tool: Tool, messages: int, repeat: int, timeout: float) -> IndexResult:
    runs, rss, cpu, indexed, note, ok = [], 0, 0.0, None, "", True
    for k in range(repeat):
        tool.reset()
        r = tool.index(timeout)
        if not r.ok:
            ok = False
            note = (f"timed out after {r.wall:.0f}s" if r.timed_out else
                    f"exit {r.rc}: {' '.join((r.err or r.out).split())[-300:]}")
            log(f"  {tool.name:8s} run {k + 1}: FAILED {note}")
            break
        runs.append(r.wall)
        rss, cpu = max(rss, r.maxrss_kb), r.cpu
        indexed = tool.indexed(r)
        log(f"  {tool.name:8s} run {k + 1}: {messages} files in {r.wall:7.2f}s = {messages / r.wall:8.0f} msg/s, "
            f"cpu {r.cpu:6.2f}s, peak RSS {r.maxrss_kb / 1024:6.1f} MiB, indexed {indexed}")
    size = du_bytes(tool.index_dir()) if runs or not ok else None
    if ok and indexed is not None and indexed != messages:
        note = f"indexed {indexed} of {messages}"
    return IndexResult(tool.name, messages, runs, indexed, size, rss, cpu, ok, note)


def print_index_table(title: str, results: list[IndexResult]) -> None:
    log()
    log(title)
    header = (f"{'tool':>9} | {'msg/s':>8} | {'wall s':>8} | {'cpu s':>7} | {'index MiB':>9} | {'B/msg':>6} | "
              f"{'peak RSS MiB':>12} | {'indexed':>8} | note")
    log(header)
    log("-" * len(header))
    for r in results:
        wall = median(r.runs)
        log(f"{r.tool:>9} | {fmt(r.rate, '8.0f')} | {fmt(wall, '8.2f')} | {r.cpu:7.2f} | "
            f"{fmt(r.size / 2**20 if r.size else None, '9.1f')} | "
            f"{fmt(r.size / r.messages if r.size else None, '6.0f')} | {r.maxrss_kb / 1024:12.1f} | "
            f"{r.indexed if r.indexed is not None else '-':>8} | {r.note}")


def fmt(v, spec: str) -> str:
    width = int(re.match(r"\d+", spec).group()) if re.match(r"\d+", spec) else 0
    return format(v, spec) if v is not None else "-".rjust(width)


# --------------------------------------------------------------------------- queries

@dataclass
class Query:
    mk: str
    nm: str | None
    mu: str | None
    imap: list[str] | None = None      # IMAP SEARCH criteria (word queries only)


def build_queries(g: Synthetic) -> list[Query]:
    """20 queries in mailkeep syntax with their notmuch and mu translations. mailkeep leaves
    .Junk out unless the query says in:anywhere, so the translations leave it out too."""
    def nm(q: str, anywhere: bool = False) -> str:
        return q if anywhere else f"({q}) and not folder:.Junk"

    def mu(q: str, anywhere: bool = False) -> str:
        return q if anywhere else f"({q}) and not maildir:/.Junk"

    day = datetime.timedelta(days=1)
    older = datetime.datetime.fromtimestamp(NOW - 15 * 365 * 86400, datetime.timezone.utc).date()
    before = datetime.date(2016, 3, 1)
    fa, fn, tn = g.from_addr, g.from_name.lower(), g.to_name.lower()
    return [
        Query("linux", nm("linux"), mu("linux"), ["TEXT", "linux"]),
        Query("money", nm("money"), mu("money"), ["TEXT", "money"]),
        Query(RARE_WORD, nm(RARE_WORD), mu(RARE_WORD), ["TEXT", RARE_WORD]),
        Query('"mailing list"', nm('"mailing list"'), mu('"mailing list"'), ["TEXT", '"mailing list"']),
        Query(f"from:{fn}", nm(f"from:{fn}"), mu(f"from:{fn}")),
        Query(f"from:{fa}", nm(f"from:{fa}"), mu(f"from:{fa}")),
        Query(f"to:{tn}", nm(f"to:{tn}"), mu(f"(to:{tn} or cc:{tn})")),
        Query("subject:razor", nm("subject:razor"), mu("subject:razor")),
        Query("has:attachment", nm("tag:attachment"), mu("flag:attach")),
        Query(f"after:2016/01/01 before:{before:%Y/%m/%d}", nm(f"date:2016-01-01..{before - day}"),
              mu(f"date:20160101..{before - day:%Y%m%d}")),
        Query("older_than:15y", nm(f"date:..{older - day}"), mu(f"date:..{older - day:%Y%m%d}")),
        Query("larger:100K", None, mu(f"size:{100 * 1024 + 1}..")),
        Query("linux OR windows", nm("linux or windows"), mu("linux or windows"),
              ["OR", "TEXT", "linux", "TEXT", "windows"]),
        Query("linux -windows", nm("linux and not windows"), mu("linux and not windows"),
              ["TEXT", "linux", "NOT", "TEXT", "windows"]),
        Query("{perl python}", nm("perl or python"), mu("perl or python"), ["OR", "TEXT", "perl", "TEXT", "python"]),
        Query(f"(linux OR debian) from:{fn}", nm(f"(linux or debian) and from:{fn}"),
              mu(f"(linux or debian) and from:{fn}")),
        Query("in:anywhere money", nm("money", True), mu("money", True)),
        Query("is:unread", nm("tag:unread"), mu("flag:unread")),
        Query("is:starred has:attachment", nm("tag:flagged and tag:attachment"), mu("flag:flagged and flag:attach")),
        Query("in:sent razor", nm("folder:.Sent and razor"), mu("maildir:/.Sent and razor")),
    ]


def time_cli(cmd: list[str], env: dict, ok_codes: tuple[int, ...] = (0,)) -> tuple[float, bool, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         timeout=300)
    dt = time.perf_counter() - t0
    return dt, res.returncode in ok_codes, (res.stderr or res.stdout).decode(errors="replace").strip()[-300:]


def run_queries(queries: list[Query], tools: dict[str, Tool], repeat: int) -> dict:
    """Per query and tool: one warm-up, then `repeat` timed runs (wall time of the CLI process)."""
    per_query = []
    samples: dict[str, list[float]] = {name: [] for name in tools}
    failures: dict[str, int] = {name: 0 for name in tools}
    for q in queries:
        row = {"query": q.mk, "notmuch_query": q.nm, "mu_query": q.mu}
        for name, tool in tools.items():
            text = {"mailkeep": q.mk, "notmuch": q.nm, "mu": q.mu}[name]
            if text is None:
                row[name] = None
                continue
            cmd = tool.search(text)
            env = getattr(tool, "env", ENV)
            ok_codes = (0, 4) if name == "mu" else (0,)   # mu find: 4 = no matches
            _, ok, msg = time_cli(cmd, env, ok_codes)
            times = []
            if ok:
                for _ in range(repeat):
                    dt, ok, msg = time_cli(cmd, env, ok_codes)
                    if not ok:
                        break
                    times.append(dt)
            if not ok:
                failures[name] += 1
                log(f"  {name} FAILED on {text!r}: {msg}")
                row[name] = {"error": msg}
                continue
            conv, msgs, total = tool.count(text)
            samples[name].extend(times)
            row[name] = {"median_ms": 1000 * median(times), "max_ms": 1000 * max(times),
                         "runs_ms": [1000 * t for t in times],
                         "conversations": conv, "messages": msgs, "reported_total": total}
        per_query.append(row)
        log("  " + f"{q.mk:38s} " + " ".join(
            f"{n} {row[n]['median_ms']:8.1f} ms" if isinstance(row.get(n), dict) and "median_ms" in row[n]
            else f"{n} {'-':>8}   " for n in tools))
    summary = {name: {"median_ms": 1000 * median(xs) if xs else None, "p99_ms": 1000 * p99(xs) if xs else None,
                      "runs": len(xs), "failed_queries": failures[name]} for name, xs in samples.items()}
    return {"per_query": per_query, "summary": summary}


def print_query_tables(res: dict, tools: list[str], repeat: int) -> None:
    log()
    log(f"Queries on the synthetic archive: first page of 50 (mailkeep, notmuch: conversations; mu: messages), "
        f"median of {repeat} warm runs, ms, process start included (all three are CLIs)")
    header = f"{'query':>38} | " + " | ".join(f"{t + ' ms':>11}" for t in tools) + \
             f" | {'mk conv':>7} | {'nm thr':>7} | {'mk msgs':>7} | {'nm msgs':>7} | {'mu msgs':>7} | {'mk total':>8}"
    log(header)
    log("-" * len(header))
    for row in res["per_query"]:
        def cell(t, key):
            v = row.get(t)
            return v.get(key) if isinstance(v, dict) else None
        log(f"{row['query'][:38]:>38} | " + " | ".join(fmt(cell(t, "median_ms"), "11.1f") for t in tools) +
            f" | {fmt(cell('mailkeep', 'conversations'), '7d')} | {fmt(cell('notmuch', 'conversations'), '7d')}"
            f" | {fmt(cell('mailkeep', 'messages'), '7d')} | {fmt(cell('notmuch', 'messages'), '7d')}"
            f" | {fmt(cell('mu', 'messages'), '7d')} | {fmt(cell('mailkeep', 'reported_total'), '8d')}")
    log("(mk conv, mk msgs: counted in a complete `search --json` listing; nm: `notmuch count`; mu: lines of "
        "`mu find`; mk total: the `total` that mailkeep's first page reports)")
    odd = [row["query"] for row in res["per_query"] if isinstance(row.get("mailkeep"), dict)
           and row["mailkeep"].get("reported_total") != row["mailkeep"].get("conversations")]
    if odd:
        log(f"NOTE: mailkeep's `total` differs from the number of conversations it lists for {len(odd)} queries "
            f"({', '.join(odd[:4])}{', ...' if len(odd) > 4 else ''})")
        res["total_mismatch"] = odd
    if MailkeepTool.invalid_utf8:
        log(f"NOTE: mailkeep search --json wrote invalid UTF-8 for {len(MailkeepTool.invalid_utf8)} queries "
            f"({', '.join(sorted(MailkeepTool.invalid_utf8)[:4])})")
        res["invalid_utf8"] = sorted(MailkeepTool.invalid_utf8)
    log()
    header = f"{'tool':>9} | {'median ms':>9} | {'p99 ms':>8} | {'runs':>5} | failed queries"
    log(header)
    log("-" * len(header))
    for t in tools:
        s = res["summary"][t]
        log(f"{t:>9} | {fmt(s['median_ms'], '9.1f')} | {fmt(s['p99_ms'], '8.1f')} | {s['runs']:>5} | "
            f"{s['failed_queries']}")


# --------------------------------------------------------------------------- Dovecot

class BenchDovecot(Dovecot):
    """backup_support's private Dovecot, with its index and control files outside the Maildir
    (so that the Maildir the other tools read stays as it is)."""

    def __init__(self, base: Path, maildir: Path):
        super().__init__(base, {USER: maildir})
        self.index_root = base / "dovecot-index"
        self.control_root = base / "dovecot-control"

    def _write_config(self) -> None:
        super()._write_config()
        for d in (self.index_root, self.control_root):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, self.uid, self.gid)
        text = self.conf.read_text().replace(
            "mail_location = maildir:~",
            f"mail_location = maildir:~:INDEX={self.index_root}:CONTROL={self.control_root}")
        self.conf.write_text(text + "mail_max_userip_connections = 50\n")


def dovecot_part(maildir: Path, base: Path, queries: list[Query], runs: int, budget: float) -> dict:
    """IMAP SEARCH over INBOX, Sent and Archive (mailkeep leaves Junk out); a query's time is
    EXAMINE + SEARCH of the three folders on one logged-in connection."""
    dbase = base / "dovecot"
    dbase.mkdir()
    dv = BenchDovecot(dbase, maildir).start()
    result: dict = {"per_query": [], "folders": ["INBOX", "Sent", "Archive"]}
    try:
        imap = imaplib.IMAP4("127.0.0.1", dv.port, timeout=1800)
        imap.login(USER, Dovecot.PASSWORD)
        t0 = time.perf_counter()
        total = 0
        for folder in result["folders"]:          # Dovecot builds its index and uidlist once, untimed
            typ, data = imap.status(folder, "(MESSAGES)")
            total += int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
            imap.select(folder, readonly=True)
        result["first_status_s"] = time.perf_counter() - t0
        result["messages"] = total
        log(f"  Dovecot indexed {total} messages of INBOX, Sent, Archive for its first STATUS/EXAMINE in "
            f"{result['first_status_s']:.1f}s")
        deadline = time.monotonic() + budget
        for q in queries:
            times, hits = [], None
            for _ in range(runs):
                if time.monotonic() > deadline:
                    break
                t1 = time.perf_counter()
                hits = 0
                for folder in result["folders"]:
                    imap.select(folder, readonly=True)
                    typ, data = imap.search(None, *q.imap)
                    if typ != "OK":
                        raise RuntimeError(f"SEARCH {q.imap} failed: {data}")
                    hits += len(data[0].split())
                times.append(time.perf_counter() - t1)
            if not times:
                log(f"  {q.mk:38s} skipped: the Dovecot time budget ({budget:.0f}s) is used up")
                continue
            result["per_query"].append({"query": q.mk, "imap": " ".join(q.imap), "runs_ms": [1000 * t for t in times],
                                        "median_ms": 1000 * median(times), "p99_ms": 1000 * p99(times),
                                        "messages": hits})
            log(f"  {q.mk:38s} SEARCH {' '.join(q.imap):34s} {1000 * median(times):10.1f} ms median, "
                f"{hits} messages")
        imap.logout()
    finally:
        dv.stop()
    all_runs = [t for row in result["per_query"] for t in row["runs_ms"]]
    result["median_ms"] = median(all_runs)
    result["p99_ms"] = p99(all_runs) if all_runs else None
    return result


# --------------------------------------------------------------------------- SMTP relay, indexing on/off

def files_in(maildir: Path) -> int:
    n = 0
    for sub in ("new", "cur"):
        d = maildir / sub
        if d.is_dir():
            n += len(os.listdir(d))
    return n


def index_total(ini: Path, user: str) -> int | None:
    """Messages in the account's index, from the `# index` section of `archive stats`
    (`user  messages indexed  files not yet indexed  last change`); None while files are pending."""
    res = subprocess.run([str(MAILKEEP_BIN), "archive", "stats", "-c", str(ini)], capture_output=True, text=True,
                         env=ENV, timeout=60)
    local, _, domain = user.partition("@")
    in_index = False
    for line in res.stdout.splitlines():
        if line.startswith("# index"):
            in_index = True
        elif in_index and line.startswith(f"{domain}/{local}\t"):
            cols = line.split("\t")
            if len(cols) >= 3 and cols[1].isdigit() and cols[2].isdigit():
                return int(cols[1]) if int(cols[2]) == 0 else None
    return None


def smtp_message(corpus: list[tuple[str, bytes]], path: Path) -> Path:
    """A real ~5 KB plain-text ham message for smtp-source -F, LF line ends (smtp-source adds the
    CR), without Message-ID, In-Reply-To and References: every copy is then a conversation of its
    own instead of all of them joining one."""
    for group, msg in corpus:
        head, body = split_message(msg)
        if (group.startswith("easy-ham") and 4500 <= len(msg) <= 6000 and re.search(rb"[^\t\r\n -~]", msg) is None
                and b"text/plain" in fields(head).get(b"content-type", b"text/plain")):
            keep = [m.group(0) for m in FIELD.finditer(head)
                    if m.group(1).lower() not in (b"message-id", b"in-reply-to", b"references")]
            path.write_bytes((b"".join(keep) + b"\r\n" + body).replace(b"\r\n", b"\n"))
            return path
    raise RuntimeError("no suitable corpus message for the SMTP part")


def smtp_part(base: Path, corpus: list[tuple[str, bytes]], messages: int | None, seconds: float, repeat: int,
              timeout: float, generated: bool) -> dict:
    sink = Sink(base)
    message = None if generated else smtp_message(corpus, base / "smtp-message.eml")
    instances: dict[str, tuple[Mailkeep, Path]] = {}
    rcpt_local = "user"
    result: dict = {"runs": {"index-on": [], "index-off": []}, "lag_s": [], "until_indexed": [],
                    "message": ("smtp-source -l 5120" if generated else
                                f"smtp-source -F ({message.stat().st_size} bytes)")}
    try:
        for label, enabled in (("index-on", "true"), ("index-off", "false")):
            d = base / f"smtp-{label}"
            d.mkdir()
            accounts = d / "accounts.txt"
            write_accounts(accounts, [rcpt_local])
            archive = d / "archive"
            config = backup_config(free_port(), sink.address, archive, accounts, user="root",
                                   smtp={"max_connections": 1000, "timeout": 300, "shutdown_timeout": 5},
                                   index={"path": str(d / "index"), "enabled": enabled})
            mk = Mailkeep(d / "mailkeep", config).start()
            instances[label] = (mk, archive / DOMAIN / rcpt_local)

        def run_once(label: str, n: int) -> float | None:
            mk, maildir = instances[label]
            before, archived_before = sink.count(), files_in(maildir)
            t0 = time.monotonic()
            rc, out = smtp_source(mk.port, sessions=50, messages=n, size=None if message else 5120,
                                  message_file=message, sender="sender@client.test", rcpt=f"{rcpt_local}@{DOMAIN}",
                                  timeout=timeout)
            complete = rc == 0 and sink.wait_count(before + n, max(0.0, t0 + timeout - time.monotonic()))
            elapsed = time.monotonic() - t0
            archived = files_in(maildir) - archived_before
            if not complete or archived != n:
                log(f"  {label:9s} FAILED rc={rc}, sink got {sink.count() - before}/{n}, archived {archived} in "
                    f"{elapsed:.1f}s: {out[-300:]}")
                return None
            rate = n / elapsed
            note = ""
            if label == "index-on":
                # wait until the index holds every archived message; the index is not timed in `rate`
                total_files = files_in(maildir)
                t1 = time.monotonic()
                got = None
                while time.monotonic() - t1 < timeout:
                    got = index_total(mk.config_path, f"{rcpt_local}@{DOMAIN}")
                    if got is not None and got >= total_files:
                        break
                    time.sleep(0.2)
                lag = time.monotonic() - t1
                if n >= 1000:          # not the warm-up
                    result["lag_s"].append(lag)
                    result["until_indexed"].append(n / (elapsed + lag))
                note = (f", index holds {got}/{total_files} {lag:.1f}s after the last message "
                        f"({n / (elapsed + lag):.1f} msg/s until indexed)")
            log(f"  {label:9s} s=50 {n} msgs in {elapsed:6.2f}s = {rate:8.1f} msg/s{note}")
            return rate

        for label in instances:                    # warm-up, not measured
            run_once(label, 200)
        if not messages:
            cal = run_once("index-off", 5000)
            messages = max(2000, min(400000, int((cal or 2000) * seconds)))
            log(f"  {messages} messages per run (about {seconds:.0f}s at the index-off rate)")
        result["messages_per_run"] = messages
        for k in range(repeat):
            order = ("index-on", "index-off") if k % 2 == 0 else ("index-off", "index-on")
            for label in order:
                result["runs"][label].append(run_once(label, messages))
        for label in instances:
            rates = result["runs"][label]
            result[label] = None if None in rates or not rates else statistics.median(rates)
        result["on_off"] = ratio(result["index-on"], result["index-off"])
        result["index_lag_s"] = median(result["lag_s"])
        result["index-on-until-indexed"] = median(result["until_indexed"])
    finally:
        for mk, _ in instances.values():
            mk.stop()
        sink.stop()
    return result


# --------------------------------------------------------------------------- main

def mailkeep_search_ready() -> bool:
    if not MAILKEEP_BIN.exists():
        return False
    # CLI11 answers `search --help` with the top-level help (exit 0) while there is no `search`
    search = subprocess.run([str(MAILKEEP_BIN), "search", "--help"], capture_output=True, text=True, env=ENV)
    archive = subprocess.run([str(MAILKEEP_BIN), "archive", "--help"], capture_output=True, text=True, env=ENV)
    return (search.returncode == 0 and "--user" in search.stdout and archive.returncode == 0
            and re.search(r"^\s+index\b", archive.stdout, re.M) is not None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, help="synthetic archive size (default 200000; --quick 5000)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--repeat", type=int, help="timed runs per query and tool (default 5; --quick 2)")
    ap.add_argument("--corpus-repeat", type=int, help="corpus index runs per tool, median (default 3; --quick 1)")
    ap.add_argument("--dovecot-runs", type=int, default=3, help="runs per IMAP SEARCH query (default 3; --quick 1)")
    ap.add_argument("--dovecot-budget", type=float, default=900, help="seconds allowed for the timed IMAP searches")
    ap.add_argument("--peer-timeout", type=float, default=3600, help="seconds allowed per notmuch/mu index run")
    ap.add_argument("--smtp-seconds", type=float, default=30, help="target length of one SMTP run")
    ap.add_argument("--smtp-messages", type=int, help="messages per SMTP run (default: from --smtp-seconds)")
    ap.add_argument("--smtp-repeat", type=int, help="SMTP runs per setting, median (default 3; --quick 1)")
    ap.add_argument("--skip-dovecot", action="store_true")
    ap.add_argument("--skip-peers-200k", action="store_true",
                    help="no notmuch/mu on the synthetic archive (and so no peer query figures)")
    ap.add_argument("--skip-smtp", action="store_true")
    ap.add_argument("--skip-corpus", action="store_true", help="leave out part 1 (corpus indexing)")
    ap.add_argument("--smtp-generated", action="store_true",
                    help="SMTP part with smtp-source's generated 5120-byte messages instead of a real one")
    ap.add_argument("--mailkeep-timeout", type=float, default=7200, help="seconds allowed per mailkeep index run")
    ap.add_argument("--out", type=Path, help="write all figures as JSON")
    args = ap.parse_args()
    q = args.quick
    n = args.messages or (5000 if q else 200000)
    repeat = args.repeat or (2 if q else 5)
    corpus_repeat = args.corpus_repeat or (1 if q else 3)
    dovecot_runs = 1 if q and args.dovecot_runs == 3 else args.dovecot_runs
    smtp_repeat = args.smtp_repeat or (1 if q else 3)
    smtp_messages = args.smtp_messages or (3000 if q else None)

    if not (CORPUS_DIR / "easy-ham-1").is_dir():
        print("the corpus is missing: run tests/data/fetch.sh", file=sys.stderr)
        return 2
    need = ["notmuch", "mu", "du"] + ([] if args.skip_dovecot else ["dovecot", "doveadm"]) + \
           ([] if args.skip_smtp else ["smtp-source", "smtp-sink"])
    missing = [t for t in need if not shutil.which(t)]
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install notmuch maildir-utils dovecot-imapd postfix)",
              file=sys.stderr)
        return 2
    mk_ready = mailkeep_search_ready()
    if not mk_ready:
        log(f"NOTE: {MAILKEEP_BIN} has no `search` command (or is missing): mailkeep figures are skipped")

    base = Path(tempfile.mkdtemp(prefix="mailkeep-index-bench-", dir="/var/tmp"))
    base.chmod(0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": q, "synthetic_messages": n,
                     "versions": {}, "parts_s": {}}
    for tool, cmd in (("notmuch", ["notmuch", "--version"]), ("mu", ["mu", "--version"]),
                      ("dovecot", ["dovecot", "--version"])):
        if shutil.which(tool):
            results["versions"][tool] = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    failed = False
    t_all = time.monotonic()
    try:
        log(f"workdir {base}; {os.cpu_count()} cores")
        # ---------------------------------------------------------------- 1 corpus
        t_part = time.monotonic()
        corpus = load_corpus()
        r1: list[IndexResult] = []
        results["corpus"] = None
        if not args.skip_corpus:
            archive1 = base / "corpus-archive"
            md1 = write_corpus_maildir(corpus, archive1 / DOMAIN / LOCAL)
            log(f"(1) corpus Maildir: {md1.total} messages, {md1.bytes / 2**20:.1f} MiB, "
                f"{dict(md1.count)}; {corpus_repeat} index run(s) per tool")
            tools1: list[Tool] = []
            if mk_ready:
                tools1.append(MailkeepTool(base, archive1, "corpus"))
            tools1 += [NotmuchTool(base, md1.root, "corpus"), MuTool(base, md1.root, "corpus")]
            r1 = [measure_index(t, md1.total, corpus_repeat,
                                args.mailkeep_timeout if t.name == "mailkeep" else args.peer_timeout) for t in tools1]
            failed |= any(r.tool == "mailkeep" and not r.ok for r in r1)
            results["corpus"] = {"maildir_bytes": md1.bytes, "folders": dict(md1.count),
                                 "index": [r.as_dict() for r in r1]}
            print_index_table(f"(1) Corpus indexing: {md1.total} messages ({md1.bytes / 2**20:.1f} MiB), wall time "
                              f"incl. process start, median of {corpus_repeat}", r1)
        results["parts_s"]["corpus"] = time.monotonic() - t_part

        # ---------------------------------------------------------------- 2 synthetic
        t_part = time.monotonic()
        g = Synthetic(corpus)
        archive2 = base / "synthetic-archive"
        md2, st = g.generate(archive2 / DOMAIN / LOCAL, n)
        chown_tree(md2.root, MAIL_UID, MAIL_GID)    # Dovecot reads it as uid 8; the others run as root
        log()
        log(f"(2) synthetic Maildir: {st.messages} messages, {st.bytes / 2**20:.1f} MiB written in {st.seconds:.1f}s "
            f"({st.messages / st.seconds:.0f} msg/s); folders {dict(st.folders)}; {st.replies} replies, "
            f"{st.attachments} with attachment, {st.large} over 100 KiB, {st.unread} unread, {st.starred} starred, "
            f"{st.rare} with {RARE_WORD!r}")
        results["synthetic"] = {"generate_s": st.seconds, "maildir_bytes": st.bytes, "folders": dict(st.folders),
                                "replies": st.replies, "attachments": st.attachments, "large": st.large,
                                "unread": st.unread, "starred": st.starred, "rare": st.rare,
                                "from_addr": g.from_addr, "from_name": g.from_name, "to_name": g.to_name}
        tools2: dict[str, Tool] = {}
        if mk_ready:
            tools2["mailkeep"] = MailkeepTool(base, archive2, "synthetic")
        if not args.skip_peers_200k:
            tools2["notmuch"] = NotmuchTool(base, md2.root, "synthetic")
            tools2["mu"] = MuTool(base, md2.root, "synthetic")
        r2 = [measure_index(t, md2.total, 1, args.mailkeep_timeout if t.name == "mailkeep" else args.peer_timeout)
              for t in tools2.values()]
        failed |= any(r.tool == "mailkeep" and not r.ok for r in r2)
        results["synthetic"]["index"] = [r.as_dict() for r in r2]
        print_index_table(f"(2) Synthetic archive indexing: {md2.total} messages ({st.bytes / 2**20:.1f} MiB), "
                          "one run each", r2)
        for r in r2:       # a peer that did not finish gets no query figures
            if not r.ok:
                tools2.pop(r.tool, None)
        results["parts_s"]["synthetic"] = time.monotonic() - t_part

        # ---------------------------------------------------------------- 3 queries
        t_part = time.monotonic()
        queries = build_queries(g)
        results["queries"] = None
        if tools2:
            log()
            log(f"(3) {len(queries)} queries, 1 warm-up + {repeat} timed runs per tool (median shown):")
            qres = run_queries(queries, tools2, repeat)
            results["queries"] = qres
            failed |= "mailkeep" in qres["summary"] and qres["summary"]["mailkeep"]["failed_queries"] > 0
            print_query_tables(qres, list(tools2), repeat)
        results["parts_s"]["queries"] = time.monotonic() - t_part

        # ---------------------------------------------------------------- 4 dovecot
        results["dovecot"] = None
        if not args.skip_dovecot:
            t_part = time.monotonic()
            log()
            log(f"(4) IMAP SEARCH through Dovecot {results['versions'].get('dovecot', '')} (no FTS plugin), "
                f"{dovecot_runs} run(s) per query, budget {args.dovecot_budget:.0f}s:")
            word = [x for x in queries if x.imap]
            dres = dovecot_part(md2.root, base, word, dovecot_runs, args.dovecot_budget)
            results["dovecot"] = dres
            mk_rows = {row["query"]: row.get("mailkeep") for row in (results["queries"] or {}).get("per_query", [])}
            log()
            log("IMAP SEARCH (Dovecot, INBOX+Sent+Archive) against mailkeep search, ms")
            header = (f"{'query':>20} | {'dovecot med':>11} | {'dovecot p99':>11} | {'mailkeep med':>12} | "
                      f"{'ratio':>7} | {'dovecot msgs':>12} | {'mk msgs':>7}")
            log(header)
            log("-" * len(header))
            mk_runs, dv_runs = [], []
            for row in dres["per_query"]:
                mk = mk_rows.get(row["query"])
                mk_med = mk.get("median_ms") if isinstance(mk, dict) else None
                if mk_med:
                    mk_runs += mk["runs_ms"]
                    dv_runs += row["runs_ms"]
                log(f"{row['query'][:20]:>20} | {row['median_ms']:11.1f} | {row['p99_ms']:11.1f} | "
                    f"{fmt(mk_med, '12.1f')} | {fmt(ratio(row['median_ms'], mk_med), '7.0f')} | "
                    f"{row['messages']:>12} | {fmt(mk.get('messages') if isinstance(mk, dict) else None, '7d')}")
            dres["ratio_median"] = ratio(median(dv_runs), median(mk_runs))
            dres["ratio_p99"] = ratio(p99(dv_runs) if dv_runs else None, p99(mk_runs) if mk_runs else None)
            log(f"all runs: Dovecot median {fmt(dres['median_ms'], '.1f')} ms, p99 {fmt(dres['p99_ms'], '.1f')} ms; "
                f"Dovecot / mailkeep: median {fmt(dres['ratio_median'], '.0f')}x, p99 {fmt(dres['ratio_p99'], '.0f')}x")
            results["parts_s"]["dovecot"] = time.monotonic() - t_part

        # ---------------------------------------------------------------- 5 smtp
        results["smtp"] = None
        if not args.skip_smtp and mk_ready:
            t_part = time.monotonic()
            log()
            log("(5) SMTP relay with archive, [index] enabled = true against false (smtp-source -s 50, "
                f"{'generated 5120-byte messages' if args.smtp_generated else 'one real ~5 KB ham message'}):")
            sres = smtp_part(base, corpus, smtp_messages, args.smtp_seconds, smtp_repeat, 600, args.smtp_generated)
            results["smtp"] = sres
            failed |= sres["index-on"] is None or sres["index-off"] is None
            log()
            log(f"SMTP relay, archive on, {sres['messages_per_run']} messages per run, concurrency 50, median of "
                f"{smtp_repeat}, msg/s end to end ({sres['message']}):")
            log(f"  index on  {fmt(sres['index-on'], '9.1f')}   runs: " +
                ", ".join(fmt(x, '.0f') for x in sres["runs"]["index-on"]))
            log(f"  index off {fmt(sres['index-off'], '9.1f')}   runs: " +
                ", ".join(fmt(x, '.0f') for x in sres["runs"]["index-off"]))
            log(f"  on / off: {fmt(sres['on_off'], '.2f')}; the index held every message "
                f"{fmt(sres['index_lag_s'], '.1f')}s after smtp-source ended (median), "
                f"{fmt(sres['index-on-until-indexed'], '.1f')} msg/s counted until indexed")
            results["parts_s"]["smtp"] = time.monotonic() - t_part

        # ---------------------------------------------------------------- targets
        by = {r.tool: r for r in r1}
        mk1, nm1, mu1 = by.get("mailkeep"), by.get("notmuch"), by.get("mu")
        qs = (results["queries"] or {}).get("summary", {})
        mkq, nmq = qs.get("mailkeep", {}), qs.get("notmuch", {})
        targets = [
            ("corpus index rate mailkeep / mu", ratio(mk1 and mk1.rate, mu1 and mu1.rate), ">=", 3, "x"),
            ("corpus index rate mailkeep / notmuch", ratio(mk1 and mk1.rate, nm1 and nm1.rate), ">=", 10, "x"),
            ("corpus index size mailkeep / notmuch", ratio(mk1 and mk1.size, nm1 and nm1.size), "<=", 1, "x"),
            ("query p99 notmuch / mailkeep", ratio(nmq.get("p99_ms"), mkq.get("p99_ms")), ">=", 5, "x"),
            ("query p99 mailkeep", mkq.get("p99_ms"), "<", 20, "ms"),
            ("IMAP SEARCH Dovecot / mailkeep (median)", (results["dovecot"] or {}).get("ratio_median"), ">=", 100, "x"),
            ("SMTP rate index on / off", (results["smtp"] or {}).get("on_off"), ">=", 0.9, "x"),
        ]
        log()
        log(f"Targets ({'--quick: sizes too small to judge' if q else f'synthetic archive of {n} messages'}):")
        header = f"{'figure':>42} | {'value':>9} | {'target':>9} | result"
        log(header)
        log("-" * len(header))
        results["targets"] = []
        for name, value, op, goal, unit in targets:
            if value is None:
                verdict = "n/a"
            else:
                verdict = "PASS" if {">=": value >= goal, "<=": value <= goal, "<": value < goal}[op] else "FAIL"
            failed |= verdict == "FAIL"
            results["targets"].append({"figure": name, "value": value, "op": op, "target": goal, "unit": unit,
                                       "result": verdict})
            log(f"{name:>42} | {fmt(value, '9.2f')} | {op + ' ' + str(goal) + ' ' + unit:>9} | {verdict}")
        results["parts_s"]["total"] = time.monotonic() - t_all
        log(f"total {results['parts_s']['total']:.0f}s; parts " +
            ", ".join(f"{k} {v:.0f}s" for k, v in results["parts_s"].items() if k != "total"))
    finally:
        if args.out:
            args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
            log(f"figures written to {args.out}")
        if os.environ.get("KEEP_BENCH_DIR") != "1":
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"kept {base}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
